"""Pictures as tensors: colour scales, tile grids, bar charts and text labels, without matplotlib.

Every function takes and returns float tensors; RGB images are ``(3, H, W)`` in ``[0, 1]``. NaN and infinite
values never reach a pixel: they are drawn as 0 (white on diverging scales, the low end on sequential ones), and a
constant or all-zero input gets a unit scale instead of dividing by zero.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import make_grid

__all__ = [
    "abs_max", "diverging", "sequential", "grey", "tile_grid", "upscale", "bar_chart", "label", "hstack", "vstack", "to_uint8",
    "text_cell", "annotated_heatmap", "scatter",
]

# Diverging scale: blue (negative) - white (zero) - red (positive), as matplotlib's RdBu_r end points.
_NEG = torch.tensor([0.020, 0.188, 0.380])
_POS = torch.tensor([0.404, 0.000, 0.122])
_WHITE = torch.ones(3)
# Sequential scale: a 9-stop approximation of viridis, interpolated linearly.
_VIRIDIS = torch.tensor([
    [0.267, 0.005, 0.329], [0.283, 0.141, 0.458], [0.254, 0.265, 0.530], [0.207, 0.372, 0.553], [0.164, 0.471, 0.558],
    [0.128, 0.567, 0.551], [0.135, 0.659, 0.518], [0.267, 0.749, 0.441], [0.478, 0.821, 0.318], [0.741, 0.873, 0.150],
    [0.993, 0.906, 0.144],
])


def _clean(x: Tensor) -> Tensor:
    return torch.nan_to_num(x.detach().float().cpu(), nan=0.0, posinf=0.0, neginf=0.0)


def abs_max(x: Tensor) -> float:
    """Largest finite ``|x|``; 1.0 for an empty, all-zero or all-NaN tensor (so scales never divide by zero)."""
    x = _clean(x)
    m = float(x.abs().max()) if x.numel() else 0.0
    return m if m > 0 else 1.0


def diverging(x: Tensor, vmax: float | None = None) -> Tensor:
    """Map ``x`` of shape ``S`` to RGB ``(3, *S)`` on a symmetric scale ``[-vmax, vmax]`` (values beyond saturate)."""
    x = _clean(x)
    vmax = abs_max(x) if vmax is None or not vmax > 0 else float(vmax)
    t = (x / vmax).clamp(-1, 1).unsqueeze(0)  # (1, *S)
    shape = (3,) + (1,) * x.dim()
    pos, neg, white = _POS.view(shape), _NEG.view(shape), _WHITE.view(shape)
    return torch.where(t >= 0, white + t * (pos - white), white - t * (neg - white))


def sequential(x: Tensor, lo: float | None = None, hi: float | None = None) -> Tensor:
    """Map ``x`` of shape ``S`` to RGB ``(3, *S)`` on viridis over ``[lo, hi]`` (defaults: the finite min and max)."""
    x = _clean(x)
    lo = float(x.min()) if lo is None and x.numel() else (lo or 0.0)
    hi = float(x.max()) if hi is None and x.numel() else (hi if hi is not None else 1.0)
    span = hi - lo if hi - lo > 0 else 1.0
    t = ((x - lo) / span).clamp(0, 1) * (len(_VIRIDIS) - 1)
    i0 = t.floor().long().clamp(max=len(_VIRIDIS) - 2)
    w = (t - i0).unsqueeze(-1)
    rgb = _VIRIDIS[i0] * (1 - w) + _VIRIDIS[i0 + 1] * w  # (*S, 3)
    return rgb.movedim(-1, 0)


def grey(x: Tensor, lo: float, hi: float) -> Tensor:
    """Map pixel-space values in ``[lo, hi]`` to grey RGB ``(3, *S)``: ``lo`` black, ``hi`` white (NaN black)."""
    x = _clean(x)
    span = hi - lo if hi - lo > 0 else 1.0
    return ((x - lo) / span).clamp(0, 1).unsqueeze(0).expand(3, *x.shape).clone()


def upscale(img: Tensor, factor: int) -> Tensor:
    """Nearest-neighbour enlargement of ``(..., H, W)`` by an integer factor (keeps pixels crisp)."""
    if factor <= 1:
        return img
    return img.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def tile_grid(tiles: Tensor, nrow: int | None = None, padding: int = 1, pad_value: float = 1.0) -> Tensor:
    """``(N, 3, h, w)`` RGB tiles -> one ``(3, H, W)`` grid, ``nrow`` tiles per row (default: near-square)."""
    n = len(tiles)
    nrow = nrow or max(1, int(torch.ceil(torch.sqrt(torch.tensor(float(n)))).item()))
    return make_grid(tiles, nrow=nrow, padding=padding, pad_value=pad_value)


def bar_chart(values: Tensor, vmax: float | None = None, height: int = 48, bar_width: int = 2, gap: int = 0) -> Tensor:
    """Bars for a vector of ``U`` values -> ``(3, height, U * (bar_width + gap))``: red up, blue down, grey axis.

    With any negative value (or ``vmax`` and signed data) the zero line sits in the middle, else at the bottom.
    """
    v = _clean(values).flatten()
    vmax = abs_max(v) if vmax is None or not vmax > 0 else float(vmax)
    signed = bool((v < 0).any())
    zero = height // 2 if signed else height - 1
    half = zero if signed else height - 1
    h = (v / vmax).clamp(-1, 1) * half  # bar length in pixels, signed
    rows = torch.arange(height, dtype=torch.float32).view(-1, 1)  # (H, 1)
    up = (rows < zero) & (rows >= zero - h.clamp(min=0))  # positive bars grow upwards from the zero line
    down = (rows > zero) & (rows <= zero + (-h).clamp(min=0))
    img = torch.ones(3, height, len(v))
    img[:, up] = _POS.view(3, 1)
    img[:, down] = _NEG.view(3, 1)
    img[:, zero, :] = 0.6
    img = img.repeat_interleave(bar_width, dim=-1)
    if gap:
        img = img.view(3, height, len(v), bar_width)
        img = torch.cat([img, torch.ones(3, height, len(v), gap)], dim=-1).flatten(-2)
    return img


def hstack(images: Sequence[Tensor], gap: int = 4, fill: float = 1.0) -> Tensor:
    """Place ``(3, h_i, w_i)`` images side by side (top-aligned, padded to the tallest)."""
    h = max(im.shape[1] for im in images)
    parts = []
    for i, im in enumerate(images):
        parts.append(F.pad(im, (0, 0, 0, h - im.shape[1]), value=fill))
        if gap and i < len(images) - 1:
            parts.append(torch.full((3, h, gap), fill))
    return torch.cat(parts, dim=2)


def vstack(images: Sequence[Tensor], gap: int = 4, fill: float = 1.0) -> Tensor:
    """Stack ``(3, h_i, w_i)`` images vertically (left-aligned, padded to the widest)."""
    w = max(im.shape[2] for im in images)
    parts = []
    for i, im in enumerate(images):
        parts.append(F.pad(im, (0, w - im.shape[2], 0, 0), value=fill))
        if gap and i < len(images) - 1:
            parts.append(torch.full((3, gap, w), fill))
    return torch.cat(parts, dim=1)


_FONT = None


def _font():
    global _FONT
    if _FONT is None:
        from PIL import ImageFont

        try:
            _FONT = ImageFont.load_default(size=11)  # Pillow's bundled scalable font (needs FreeType)
        except (TypeError, ValueError, OSError, ImportError):
            _FONT = ImageFont.load_default()  # the small bitmap font
    return _FONT


def label(img: Tensor, text: str, where: str = "top", size: int = 12) -> Tensor:
    """Add a white band with ``text`` above (``where="top"``) or left of (``"left"``) a ``(3, H, W)`` image."""
    from PIL import Image, ImageDraw

    font = _font()
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    tw, th = right - left + 4, max(size, bottom - top + 4)
    if where == "top":
        band = Image.new("RGB", (max(img.shape[2], tw), th), "white")
    else:
        band = Image.new("RGB", (tw, img.shape[1]), "white")
    ImageDraw.Draw(band).text((2 - left, 2 - top), text, fill=(0, 0, 0), font=font)
    band_t = torch.from_numpy(np.asarray(band).copy()).permute(2, 0, 1).float() / 255.0
    return vstack([band_t, img], gap=0) if where == "top" else hstack([band_t, img], gap=0)


def to_uint8(img: Tensor) -> Tensor:
    """``(3, H, W)`` float in [0, 1] -> uint8 (what TensorBoard stores as PNG); NaN-safe."""
    return (_clean(img).clamp(0, 1) * 255).round().to(torch.uint8)


def text_cell(text: str, width: int, height: int, bg: Tensor | None = None, fg: tuple[int, int, int] | None = None) -> Tensor:
    """A ``(3, height, width)`` cell of background colour ``bg`` (RGB in [0, 1]) with ``text`` centred; the text is
    black on light backgrounds and white on dark ones unless ``fg`` is given."""
    bg = torch.ones(3) if bg is None else _clean(bg).clamp(0, 1).flatten()[:3]
    colour = tuple(int(round(float(v) * 255)) for v in bg)
    return _text_cell(text, width, height, colour, fg).clone()


@functools.lru_cache(maxsize=4096)
def _text_cell(text: str, width: int, height: int, colour: tuple[int, ...], fg: tuple[int, int, int] | None) -> Tensor:
    from PIL import Image, ImageDraw

    bg = torch.tensor(colour, dtype=torch.float32) / 255
    if fg is None:
        fg = (0, 0, 0) if float(0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]) > 0.5 else (255, 255, 255)
    cell = Image.new("RGB", (width, height), colour)
    draw = ImageDraw.Draw(cell)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=_font())
    draw.text(((width - (right - left)) / 2 - left, (height - (bottom - top)) / 2 - top), text, fill=fg, font=_font())
    return torch.from_numpy(np.asarray(cell).copy()).permute(2, 0, 1).float() / 255.0


def annotated_heatmap(
    values: Tensor, row_labels: Sequence[str], col_labels: Sequence[str], texts: Sequence[Sequence[str]] | None = None,
    lo: float | None = None, hi: float | None = None, cell: tuple[int, int] = (18, 34), signed: bool = False,
) -> Tensor:
    """A ``(R, C)`` matrix as a viridis heatmap (``signed``: the diverging scale, symmetric about zero) with row
    labels on the left, column labels on top and, optionally, a text in every cell (e.g. counts); ``(3, H, W)``.
    ``lo``/``hi`` default to the finite min and max (``signed``: ``hi`` is the scale's end, default ``abs_max``)."""
    v = _clean(values)
    rgb = diverging(v, hi) if signed else sequential(v, lo, hi)  # (3, R, C)
    h, w = cell
    rows = []
    header = [text_cell("", 1, h)] + [text_cell(str(c), w, h) for c in col_labels]
    label_w = max(8 * max((len(str(r)) for r in row_labels), default=1), 16)
    rows.append(hstack([text_cell("", label_w, h), *header[1:]], gap=0))
    for i, name in enumerate(row_labels):
        cells = [text_cell(str(name), label_w, h)]
        for j in range(v.shape[1]):
            cells.append(text_cell(texts[i][j] if texts is not None else "", w, h, bg=rgb[:, i, j]))
        rows.append(hstack(cells, gap=0))
    return vstack(rows, gap=0)


def scatter(
    x: Tensor, y: Tensor, colours: Tensor | None = None, size: tuple[int, int] = (200, 280), dot: int = 3,
    x_label: str = "", y_label: str = "",
) -> Tensor:
    """A scatter plot of points ``(x_i, y_i)`` as ``(3, H, W)``: axes from the finite min to max of each coordinate
    (printed at the ends), dots of ``dot`` pixels in ``colours`` (``(N, 3)`` RGB, default dark blue)."""
    xs, ys = _clean(x).flatten(), _clean(y).flatten()
    h, w = size
    img = torch.ones(3, h, w)
    pad = dot
    lo_x, hi_x = (float(xs.min()), float(xs.max())) if xs.numel() else (0.0, 1.0)
    lo_y, hi_y = (float(ys.min()), float(ys.max())) if ys.numel() else (0.0, 1.0)
    span_x = hi_x - lo_x if hi_x > lo_x else 1.0
    span_y = hi_y - lo_y if hi_y > lo_y else 1.0
    img[:, h - 1, :] = 0.6  # axes
    img[:, :, 0] = 0.6
    if colours is None:
        colours = _NEG.expand(len(xs), 3)
    colours = _clean(colours).clamp(0, 1)
    cols = (pad + (xs - lo_x) / span_x * (w - 1 - 2 * pad)).round().long()
    rows = (h - 1 - pad - (ys - lo_y) / span_y * (h - 1 - 2 * pad)).round().long()
    r = dot // 2
    for i in range(len(xs)):
        img[:, max(0, rows[i] - r) : rows[i] + r + 1, max(0, cols[i] - r) : cols[i] + r + 1] = colours[i].view(3, 1, 1)
    plot = label(img, f"{y_label} {lo_y:.3g}..{hi_y:.3g}", where="top")
    return label(plot, f"{x_label} {lo_x:.3g}..{hi_x:.3g}", where="top") if x_label else plot
