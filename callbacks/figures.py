"""Pictures drawn with matplotlib's object-oriented API on an Agg canvas, returned as ``(3, H, W)`` uint8 tensors.

    with figure(400, 300) as fig:                   # size in pixels, DejaVu Sans >= 12 px, constrained layout
        ax = fig.add_subplot()
        ax.bar(range(10), values); ax.set_xlabel("unit"); ax.set_ylabel("mean activation")
        img = to_image(fig)                         # (3, 300, 400) uint8, ready for RenderContext.add_image

    with figure(400, 500) as fig:                   # an image grid on one shared, labelled colour scale
        ax = fig.add_subplot()
        im = show_grid(ax, maps, cmap=SIGNED, vmax=abs_max(maps), row_labels=classes)   # maps (R, C, h, w)
        colorbar(fig, im, ax, "activation")

No pyplot: figures are plain ``Figure`` objects (never registered with a GUI or pyplot's figure manager), so they
are freed with their last reference; ``figure`` clears them on exit anyway. Fonts and sizes come from ``RC``,
applied per figure with ``rc_context`` so a user's own matplotlib settings are left alone.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps, font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

__all__ = [
    "DPI",
    "RC",
    "SIGNED",
    "SEQUENTIAL",
    "POSITIVE",
    "GREY",
    "figure",
    "to_image",
    "mosaic",
    "show_grid",
    "colorbar",
    "heatmap",
    "abs_max",
    "to_rgb",
    "to_uint8",
    "font",
    "input_rgb",
    "text",
    "text_width",
    "colorbar_strip",
    "stack",
    "tile_rows",
    "titled",
    "to_png",
    "shrink",
    "bounded",
    "MAX_PALETTE_ERROR",
    "CARD_WIDTH",
    "MAX_WIDTH",
    "MAX_HEIGHT",
]

CARD_WIDTH = 400  # px: what a TensorBoard card shows without scrolling; pictures are composed for it
MAX_WIDTH, MAX_HEIGHT = 720, 1600  # px: no logged picture is larger, whatever the net, class count or image size

DPI = 100
# Sizes in points at 100 dpi: 9 pt is 12.5 px, the smallest text on any picture.
RC = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 11,
    "axes.titlepad": 4,
    "figure.constrained_layout.h_pad": 0.03,
    "figure.constrained_layout.w_pad": 0.03,
    "image.interpolation": "nearest",
    "savefig.dpi": DPI,
    "figure.dpi": DPI,
}
SIGNED = "RdBu_r"  # diverging: blue negative, white zero, red positive
SEQUENTIAL = "viridis"
POSITIVE = "Reds"  # sequential from white at 0: non-negative values (after a ReLU), matching SIGNED's red half
GREY = "gray"


@contextmanager
def figure(width: int, height: int, layout: str | None = "constrained") -> Iterator[Figure]:
    """A ``width`` x ``height`` pixel figure on an Agg canvas, with ``RC`` in force while it is built."""
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout=layout)
        FigureCanvasAgg(fig)
        try:
            yield fig
        finally:
            fig.clear()


def to_image(fig: Figure) -> Tensor:
    """Render ``fig`` and return its pixels as a ``(3, H, W)`` uint8 tensor (no PNG round trip)."""
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    return torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1)


def abs_max(x: Tensor | np.ndarray) -> float:
    """Largest finite ``|x|``; 1.0 for an empty, all-zero or all-NaN input (a colour scale never has width 0)."""
    a = np.abs(np.asarray(x.detach().float().cpu() if isinstance(x, Tensor) else x, dtype=np.float64))
    a = a[np.isfinite(a)]
    m = float(a.max()) if a.size else 0.0
    return m if m > 0 else 1.0


def mosaic(tiles: Tensor | np.ndarray, pad: int = 1) -> np.ndarray:
    """``(R, C, h, w)`` scalar tiles (or ``(R, C, 3, h, w)`` RGB) -> one ``(R*(h+pad)-pad, C*(w+pad)-pad[, 3])``
    float array with NaN between tiles (drawn as the figure's background by ``show_grid``)."""
    t = np.asarray(tiles.detach().float().cpu() if isinstance(tiles, Tensor) else tiles, dtype=np.float32)
    rgb = t.ndim == 5
    if rgb:
        t = np.moveaxis(t, 2, -1)  # (R, C, h, w, 3)
    r, c, h, w = t.shape[:4]
    out = np.full((r * (h + pad) - pad, c * (w + pad) - pad, *t.shape[4:]), np.nan, dtype=np.float32)
    for i in range(r):
        for j in range(c):
            out[i * (h + pad) : i * (h + pad) + h, j * (w + pad) : j * (w + pad) + w] = t[i, j]
    return out


def show_grid(
    ax,
    tiles: Tensor | np.ndarray,
    cmap: str = SIGNED,
    vmin: float | None = None,
    vmax: float | None = None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    pad: int = 1,
    title: str | None = None,
):
    """Draw ``(R, C, h, w)`` tiles as one image on ``ax`` with a tick label per row and column; returns the
    ``AxesImage`` (for ``colorbar``). A signed ``cmap`` is centred on zero: ``vmin`` defaults to ``-vmax``.
    RGB tiles ``(R, C, 3, h, w)`` in [0, 1] are drawn as they are."""
    m = mosaic(tiles, pad)
    r, c, h, w = np.asarray(tiles.shape)[[0, 1, -2, -1]]
    if m.ndim == 3:
        im = ax.imshow(np.nan_to_num(np.clip(m, 0, 1), nan=1.0), interpolation="nearest")
    else:
        if vmax is None:
            vmax = abs_max(m) if cmap == SIGNED else float(np.nanmax(m)) if np.isfinite(m).any() else 1.0
        if vmin is None:
            vmin = -vmax if cmap == SIGNED else float(np.nanmin(m)) if np.isfinite(m).any() else 0.0
        cm = colormaps[cmap].with_extremes(bad="white")
        im = ax.imshow(m, cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([j * (w + pad) + (w - 1) / 2 for j in range(c)] if col_labels is not None else [])
    ax.set_yticks([i * (h + pad) + (h - 1) / 2 for i in range(r)] if row_labels is not None else [])
    if col_labels is not None:
        ax.set_xticklabels([str(s) for s in col_labels])
    if row_labels is not None:
        ax.set_yticklabels([str(s) for s in row_labels])
    ax.tick_params(length=0, pad=2)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title)
    return im


def colorbar(fig: Figure, mappable, ax, label: str, **kwargs):
    """A colour bar beside ``ax`` for ``mappable``, with its numbers and ``label`` saying what it encodes."""
    cb = fig.colorbar(
        mappable,
        ax=ax,
        shrink=kwargs.pop("shrink", 0.9),
        fraction=kwargs.pop("fraction", 0.05),
        pad=kwargs.pop("pad", 0.02),
        **kwargs,
    )
    cb.set_label(label)
    return cb


def heatmap(
    ax,
    values: Tensor | np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    cmap: str = SEQUENTIAL,
    vmin: float | None = None,
    vmax: float | None = None,
    texts: Sequence[Sequence[str]] | None = None,
):
    """A labelled ``(R, C)`` heatmap on ``ax`` (optionally a text in every cell, black or white for contrast);
    returns the ``AxesImage``. A signed ``cmap`` is centred on zero."""
    v = np.asarray(values.detach().float().cpu() if isinstance(values, Tensor) else values, dtype=np.float64)
    if cmap == SIGNED:
        vmax = abs_max(v) if vmax is None else vmax
        vmin = -vmax if vmin is None else vmin
    im = ax.imshow(v, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(v.shape[1]), [str(s) for s in col_labels])
    ax.set_yticks(range(v.shape[0]), [str(s) for s in row_labels])
    ax.tick_params(length=0)
    if texts is not None:
        rgba = im.cmap(im.norm(np.nan_to_num(v)))
        lum = 0.299 * rgba[..., 0] + 0.587 * rgba[..., 1] + 0.114 * rgba[..., 2]
        for i in range(v.shape[0]):
            for j in range(v.shape[1]):
                if texts[i][j]:
                    ax.text(
                        j,
                        i,
                        texts[i][j],
                        ha="center",
                        va="center",
                        color="black" if lum[i, j] > 0.5 else "white",
                        fontsize=RC["xtick.labelsize"],
                    )
    return im


def to_rgb(values: Tensor, cmap: str = SIGNED, vmin: float | None = None, vmax: float | None = None) -> Tensor:
    """Values of shape ``S`` through a matplotlib colour map -> float RGB ``(3, *S)`` in [0, 1] (NaN white), for
    pictures kept as tensors (image grids without axes). A signed ``cmap`` is centred on zero."""
    v = np.nan_to_num(values.detach().float().cpu().numpy(), nan=np.nan, posinf=np.nan, neginf=np.nan)
    if cmap == SIGNED:
        vmax = abs_max(v) if vmax is None or not vmax > 0 else vmax
        vmin = -vmax
    rgba = colormaps[cmap].with_extremes(bad="white")(Normalize(vmin, vmax, clip=True)(np.ma.masked_invalid(v)))
    return torch.from_numpy(np.moveaxis(rgba[..., :3], -1, 0).astype(np.float32))


@functools.cache
def font(size: int = 13, bold: bool = False):
    """matplotlib's DejaVu Sans as a Pillow TrueType font of ``size`` pixels (for labels on tensor pictures)."""
    prop = font_manager.FontProperties(family="DejaVu Sans", weight="bold" if bold else "normal")
    return ImageFont.truetype(font_manager.findfont(prop), size)


def input_rgb(x: Tensor, pixel_range: tuple[float, float]) -> Tensor:
    """Input images ``(N, C, H, W)`` as RGB ``(N, 3, H, W)`` in [0, 1]: ``pixel_range`` maps to black..white; one
    channel is drawn grey, three as colour (any other count: the mean over channels, grey)."""
    lo, hi = (float(v) for v in pixel_range)
    x = torch.nan_to_num(x.detach().float().cpu(), nan=lo)
    x = ((x - lo) / (hi - lo if hi > lo else 1.0)).clamp(0, 1)
    if x.shape[1] == 3:
        return x
    return (x if x.shape[1] == 1 else x.mean(1, keepdim=True)).expand(-1, 3, -1, -1).clone()


# ------------------------------------------------------------------ image grids kept as tensors (no axes needed)
def _pil_to_tensor(im) -> Tensor:
    return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)


@functools.lru_cache(maxsize=512)
def text(s: str, width: int, size: int = 13, align: str = "left", bold: bool = False) -> Tensor:
    """A white ``(3, h, width)`` uint8 strip with ``s`` in DejaVu Sans of ``size`` px (cached: labels repeat)."""
    f = font(size, bold)
    left, top, right, bottom = f.getbbox(s or " ")
    h = size + size // 2 + 2
    im = Image.new("RGB", (max(width, 1), h), "white")
    x = {"left": 2, "center": (width - (right - left)) / 2, "right": width - (right - left) - 2}[align] - left
    ImageDraw.Draw(im).text((x, (h - size) / 2 - 1), s, fill=(0, 0, 0), font=f)
    return _pil_to_tensor(im)


def text_width(s: str, size: int = 13, bold: bool = False) -> int:
    left, _, right, _ = font(size, bold).getbbox(s or " ")
    return int(right - left) + 4


@functools.lru_cache(maxsize=256)
def colorbar_strip(cmap: str, vmin: float, vmax: float, label: str, width: int) -> Tensor:
    """A horizontal matplotlib colour bar ``(3, h, width)`` uint8 with its numbers and ``label`` (cached per scale,
    so a scale kept across epochs is drawn once)."""
    with figure(width, 62, layout=None) as fig:
        cax = fig.add_axes((0.05, 0.68, 0.90, 0.24))
        mappable = ScalarMappable(Normalize(vmin, vmax), colormaps[cmap])
        cb = fig.colorbar(mappable, cax=cax, orientation="horizontal")
        cb.ax.tick_params(labelsize=RC["xtick.labelsize"], length=3, pad=1)
        cb.set_label(label, labelpad=2)
        return to_image(fig)


def stack(parts: Sequence[Tensor], dim: int = 1, gap: int = 0) -> Tensor:
    """uint8 ``(3, h, w)`` pictures stacked vertically (``dim=1``, left-aligned) or side by side (``dim=2``,
    top-aligned), padded white."""
    other = 2 if dim == 1 else 1
    size = max(p.shape[other] for p in parts)
    out = []
    for i, p in enumerate(parts):
        pad = [0, 0, 0, 0]
        pad[1 if other == 2 else 3] = size - p.shape[other]
        out.append(torch.nn.functional.pad(p, pad, value=255))
        if gap and i < len(parts) - 1:
            shape = [3, size, size]
            shape[dim] = gap
            out.append(torch.full(shape, 255, dtype=torch.uint8))
    return torch.cat(out, dim=dim)


def shrink(tiles: Tensor, side: int) -> Tensor:
    """Float tiles ``(..., 3, h, w)`` downscaled (antialiased) so that neither side exceeds ``side`` px; unchanged
    when they fit. A 224 px image in a grid of columns would otherwise make the picture wider than a screen."""
    h, w = tiles.shape[-2:]
    if max(h, w) <= side:
        return tiles
    size = (max(1, round(h * side / max(h, w))), max(1, round(w * side / max(h, w))))
    flat = tiles.reshape(-1, *tiles.shape[-3:]).float()
    out = F.interpolate(flat, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.reshape(*tiles.shape[:-2], *size).to(tiles.dtype)


def bounded(img: Tensor, max_width: int = MAX_WIDTH, max_height: int = MAX_HEIGHT) -> Tensor:
    """A ``(3, H, W)`` uint8 picture scaled down (Lanczos, aspect kept) to fit ``max_width`` x ``max_height``;
    unchanged when it fits. The last guard of the size bound: pictures are composed to fit in the first place."""
    h, w = img.shape[-2:]
    f = min(max_width / w, max_height / h)
    if f >= 1:
        return img
    pil = Image.fromarray(img.permute(1, 2, 0).contiguous().numpy())
    pil = pil.resize((max(1, int(w * f)), max(1, int(h * f))), Image.LANCZOS)
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).contiguous()


def tile_rows(
    tiles: Tensor,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    cell: int = 40,
    gap: int = 2,
    label_size: int = 13,
    max_width: int = MAX_WIDTH,
) -> Tensor:
    """``(R, C, 3, h, w)`` float RGB tiles in [0, 1] -> one uint8 grid: each tile enlarged (nearest neighbour) to
    about ``cell`` px (more where a column label needs it), a label left of every row and above every column;
    tiles too large for ``max_width`` are shrunk first."""
    lw = max(text_width(ln, label_size) for s in row_labels for ln in str(s).split("\n")) + 4 if row_labels else 0
    tiles = shrink(tiles, max(8, (max_width - lw) // tiles.shape[1] - gap))
    r, c, _, h, w = tiles.shape
    fits = max(1, (max_width - lw) // (c * (w + gap)))  # the largest enlargement within max_width
    f = min(max(1, round(cell / max(h, w))), fits)
    if col_labels is not None:  # tiles at least as wide as their column labels, as far as the width allows
        f = max(f, min(math.ceil(max(text_width(str(s), label_size - 1) for s in col_labels) / w), fits))
    t = (tiles.clamp(0, 1) * 255).round().to(torch.uint8)
    t = t.repeat_interleave(f, -2).repeat_interleave(f, -1)  # (R, C, 3, fh, fw)
    th, tw = h * f, w * f
    grid = torch.full((3, r * (th + gap), c * (tw + gap)), 255, dtype=torch.uint8)
    for i in range(r):
        for j in range(c):
            grid[:, i * (th + gap) : i * (th + gap) + th, j * (tw + gap) : j * (tw + gap) + tw] = t[i, j]
    grid = grid[:, : r * (th + gap) - gap, : c * (tw + gap) - gap]
    if col_labels is not None:
        header = stack([text(str(s), tw + gap, label_size - 1, "center") for s in col_labels], dim=2)
        grid = stack([header[:, :, : grid.shape[2]], grid], dim=1)
    if row_labels is not None:  # a label may hold several lines ("\n")
        lw = max(text_width(line, label_size) for s in row_labels for line in str(s).split("\n")) + 4
        rows = [stack([text(line, lw, label_size, "right") for line in str(s).split("\n")]) for s in row_labels]
        hdr = label_size + label_size // 2 + 2 if col_labels is not None else 0
        col = torch.full((3, grid.shape[1], lw), 255, dtype=torch.uint8)
        for i, lab in enumerate(rows):
            y = hdr + i * (th + gap) + (th - lab.shape[1]) // 2
            y0, y1 = max(0, y), min(col.shape[1], y + lab.shape[1])
            col[:, y0:y1] = lab[:, y0 - y : y1 - y]
        grid = stack([col, grid], dim=2)
    return grid


def titled(img: Tensor, title: str, subtitle: str | None = None, size: int = 14) -> Tensor:
    """``img`` (uint8) under a bold title line (and an optional plain subtitle), as wide as the widest part."""
    w = max(img.shape[2], text_width(title, size, True), text_width(subtitle or "", size - 1))
    parts = [text(title, w, size, bold=True)] + ([text(subtitle, w, size - 1)] if subtitle else [])
    return stack([*parts, img], dim=1)


def to_uint8(img: Tensor) -> Tensor:
    """``(3, H, W)`` float in [0, 1] -> uint8 (what TensorBoard stores as PNG); NaN becomes 0."""
    return (torch.nan_to_num(img.detach().float().cpu(), nan=0.0).clamp(0, 1) * 255).round().to(torch.uint8)


MAX_PALETTE_ERROR = 16  # levels of 255: no pixel of a palette PNG moves further from its true colour
MANY_COLOURS = 8192  # more colours than this: a photograph, not a chart's anti-aliasing


def _colour_keys(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` colours -> ``(...)`` int32 keys ``0xRRGGBB``."""
    return (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2].astype(np.int32)


def to_png(img: Tensor) -> bytes:
    """``(3, H, W)`` uint8 -> PNG bytes, as small as stays faithful: a palette PNG (one byte per pixel instead of
    three, so pictures and event files are 2-3x smaller) wherever no pixel moves by more than
    ``MAX_PALETTE_ERROR`` levels, else RGB. Deterministic.

    A picture of at most 256 colours is stored exactly (greyscale images, colour-mapped grids). A chart has a few
    hundred to a few thousand: its colour maps' colours and the anti-aliasing blends of its lines and text. Its
    colours are grouped into cubes of the colour space, as small as leave at most 256 groups (side 3, 5, 9 or 17
    levels), and each group is drawn in its most frequent colour: the background and the commonest colours stay
    exact, and every other colour moves by less than the cube's side. Where even that fails, the 256 most frequent
    colours and then Pillow's maximum-coverage quantizer are tried; a photograph that would band with either stays
    RGB."""
    rgb = np.ascontiguousarray(img.detach().cpu().permute(1, 2, 0).numpy())
    pil = Image.fromarray(rgb)
    counts = pil.getcolors(MANY_COLOURS)  # [(count, (r, g, b))], every colour present; None if more
    if counts is None:  # a photograph: 256 colours cannot stand for it; try the quantizer, else RGB
        return _png_quantized_or_rgb(pil, rgb)
    colours = np.array([c for _, c in counts], dtype=np.int32).reshape(-1, 3)
    n = np.array([k for k, _ in counts], dtype=np.int64)
    for side in (1, 3, 5, 9, MAX_PALETTE_ERROR + 1):
        found = _cube_palette(colours, n, side)
        if found is not None:
            return _indexed_png(rgb, colours, *found)
    palette = colours[np.argsort(-n, kind="stable")[:256]]  # the most frequent colours, each colour to its nearest
    c, p = colours.astype(np.float32), palette.astype(np.float32)
    nearest = ((p * p).sum(1)[None, :] - 2 * c @ p.T).argmin(1)  # squared distance |c|^2 - 2 c.p + |p|^2
    if np.abs(colours - palette[nearest]).max() <= MAX_PALETTE_ERROR:
        return _indexed_png(rgb, colours, palette, nearest)
    return _png_quantized_or_rgb(pil, rgb)


def _cube_palette(colours: np.ndarray, n: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(palette (P, 3), index of every colour)``: the most frequent colour of each occupied ``side``-level cube of
    the colour space stands for the cube (every colour moves by less than ``side``); None if more than 256 cubes."""
    cube = _colour_keys(colours // side)
    order = np.lexsort((-n, cube))  # by cube, its most frequent colour first
    first = np.ones(len(order), dtype=bool)
    first[1:] = cube[order][1:] != cube[order][:-1]
    if first.sum() > 256:
        return None
    index = np.empty(len(colours), dtype=np.int64)
    index[order] = np.cumsum(first) - 1
    return colours[order[first]], index


def _indexed_png(rgb: np.ndarray, colours: np.ndarray, palette: np.ndarray, index: np.ndarray) -> bytes:
    """The palette PNG of ``rgb`` ``(H, W, 3)`` whose every colour ``colours[i]`` is drawn as ``palette[index[i]]``."""
    lut = np.empty(1 << 24, dtype=np.uint8)  # colour -> palette index; only present colours are read
    lut[_colour_keys(colours)] = index
    indexed = Image.fromarray(lut[_colour_keys(rgb)], mode="P")
    indexed.putpalette(palette.astype(np.uint8).tobytes())
    return _png_bytes(indexed)


def _png_quantized_or_rgb(pil: Image.Image, rgb: np.ndarray) -> bytes:
    """Pillow's maximum-coverage 256-colour PNG where no pixel moves by more than ``MAX_PALETTE_ERROR``, else RGB."""
    quantized = pil.quantize(256, method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE)
    if np.abs(np.asarray(quantized.convert("RGB"), dtype=np.int16) - rgb).max() <= MAX_PALETTE_ERROR:
        return _png_bytes(quantized)
    return _png_bytes(pil)


def _png_bytes(pil: Image.Image) -> bytes:
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()
