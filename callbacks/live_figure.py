"""Charts drawn every epoch at a fraction of matplotlib's cost: the layout is built once, and only what changes is
redrawn over a cached picture of the rest (blitting).

    live = LiveFigure(400, 300)
    with live.rc():                                   # figures.RC while artists are made
        ax = live.fig.add_subplot()
        im = live.animate(ax.imshow(values, cmap=SEQUENTIAL, vmin=0, vmax=1))
        ax.set_xlabel("unit")                         # static: drawn once into the cached background
        note = live.slot(ax.set_title("mean 0.00"))   # a text that changes, drawn by Pillow where matplotlib put it
        live.title("What it shows")                   # static title, left; the epoch, right (a slot)
    ...
    im.set_data(new_values)                           # each epoch: update the animated artists and slots, then
    note.text = "mean 0.42"
    img = live.image(step)                            # (3, H, W) uint8

The first ``image()`` lays the whole figure out once (so margins fit the first values of everything) and freezes the
layout, then draws it without the animated artists and keeps those pixels; each later call restores them, draws the
animated artists and writes the slots' texts with Pillow (DejaVu Sans, as matplotlib; a matplotlib text costs
milliseconds, a Pillow one microseconds). ``refresh()`` redraws the cached part at the next ``image()``: call it
when a static artist changed, e.g. a colour bar after its scale was raised.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw
from torch import Tensor

from .figures import DPI, RC, font

__all__ = ["LiveFigure", "Slot", "draw_texts", "contrast_colours"]

TEXT_PX = 13  # Pillow text size in pixels (figures.RC's smallest text is 9 pt = 12.5 px at 100 dpi)
_H = {"left": "l", "center": "m", "right": "r"}
_V = {"top": "t", "center": "m", "center_baseline": "m", "baseline": "s", "bottom": "b"}


class Slot:
    """A text whose words change: laid out by matplotlib (its placeholder text), written by Pillow."""

    def __init__(self, artist) -> None:
        self.artist = artist
        self.text = ""
        self.colour = tuple(int(round(255 * c)) for c in matplotlib.colors.to_rgb(artist.get_color()))
        self.size = math.ceil(artist.get_fontsize() * DPI / 72)
        self.anchor = _H.get(artist.get_horizontalalignment(), "l") + _V.get(artist.get_verticalalignment(), "m")
        self.xy: tuple[float, float] | None = None  # pixel position of the anchor, once laid out


class LiveFigure:
    """A ``width`` x ``height`` pixel figure on an Agg canvas whose static parts are drawn once (see the module)."""

    def __init__(self, width: int, height: int, layout: str | None = "constrained") -> None:
        with self.rc():
            self.fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout=layout)
        FigureCanvasAgg(self.fig)
        self.animated: list = []
        self.slots: list[Slot] = []
        self._background = None
        self._laid_out = False
        self._epoch: Slot | None = None

    @staticmethod
    def rc():
        """``figures.RC`` in force (fonts and sizes are read when artists and ticks are made)."""
        return matplotlib.rc_context(RC)

    def animate(self, artist):
        """Mark ``artist`` as changing: left out of the cached background, redrawn by every ``image()``."""
        artist.set_animated(True)
        self.animated.append(artist)
        return artist

    def slot(self, artist) -> Slot:
        """Turn the text ``artist`` into a ``Slot``: its placeholder words reserve the room, its colour, size and
        alignment are kept, and ``slot.text`` is written there by each ``image()``."""
        slot = Slot(artist)
        artist.set_color("none")  # laid out, never seen
        self.slots.append(slot)
        return slot

    def title(self, text: str) -> None:
        """A static title, left, and the epoch, right (written by ``image(step)``); call while building. A title
        that would run into the epoch is wrapped at a space onto more lines."""
        self._epoch = self.slot(
            self.fig.text(0.99, 0.995, "epoch 0000", ha="right", va="top", size=RC["figure.titlesize"])
        )
        renderer = self.fig.canvas.get_renderer()
        full = self.fig.bbox.width * 0.98  # px
        room = full - self._epoch.artist.get_window_extent(renderer).width - 8  # the first line: beside the epoch
        sup = self.fig.suptitle(text, x=0.01, ha="left")
        lines = []
        for given in text.split("\n"):
            line = ""
            for word in given.split(" "):
                sup.set_text(f"{line} {word}".strip())
                if line and sup.get_window_extent(renderer).width > (room if not lines else full):
                    lines.append(line)
                    line = word
                else:
                    line = f"{line} {word}".strip()
            lines.append(line)
        sup.set_text("\n".join(lines))

    def refresh(self) -> None:
        """Redraw the cached (static) part at the next ``image()``."""
        self._background = None

    def image(self, step: int | None = None) -> Tensor:
        """The figure's pixels now, ``(3, H, W)`` uint8 (``step``: the epoch written top right by ``title``)."""
        if step is not None and self._epoch is not None:
            self._epoch.text = f"epoch {step}"
        canvas = self.fig.canvas
        with self.rc():
            if not self._laid_out:  # laid out once, with everything in place, then frozen
                for artist in self.animated:
                    artist.set_animated(False)
                engine = self.fig.get_layout_engine()
                if engine is not None:
                    engine.execute(self.fig)
                self.fig.set_layout_engine("none")
                for artist in self.animated:
                    artist.set_animated(True)
                self._laid_out = True
            if self._background is None:
                canvas.draw()
                self._background = canvas.copy_from_bbox(self.fig.bbox)
                renderer = canvas.get_renderer()
                for s in self.slots:
                    s.xy = self._anchor_of(s, renderer)
            else:
                canvas.restore_region(self._background)
            for artist in self.animated:
                self.fig.draw_artist(artist)
            rgba = np.asarray(canvas.buffer_rgba())
        img = torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1)
        if not self.slots:
            return img
        pil = Image.fromarray(img.permute(1, 2, 0).numpy())
        draw = ImageDraw.Draw(pil)
        for s in self.slots:
            if s.text:
                draw.text(s.xy, s.text, font=font(s.size), fill=s.colour, anchor=s.anchor)
        return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)

    def _anchor_of(self, slot: Slot, renderer) -> tuple[float, float]:
        box = slot.artist.get_window_extent(renderer)
        x = {"l": box.x0, "m": (box.x0 + box.x1) / 2, "r": box.x1}[slot.anchor[0]]
        top, bottom = self.fig.bbox.height - box.y1, self.fig.bbox.height - box.y0
        y = {"t": top, "m": (top + bottom) / 2, "b": bottom}.get(slot.anchor[1])
        if y is None:  # baseline: the descent below it is about a fifth of the box
            y = bottom - 0.22 * (bottom - top)
        return float(x), float(y)

    def to_pixels(self, ax, xy: np.ndarray) -> np.ndarray:
        """Data coordinates ``(M, 2)`` of ``ax`` -> pixel ``(column, row)`` positions on ``image()``'s picture."""
        px = ax.transData.transform(np.asarray(xy, dtype=np.float64).reshape(-1, 2))
        return np.stack([px[:, 0], self.fig.bbox.height - px[:, 1]], 1)


def contrast_colours(rgba: np.ndarray) -> list[tuple[int, int, int]]:
    """Black or white, whichever reads better on each ``(..., 4)`` RGBA background colour in [0, 1]."""
    flat = np.asarray(rgba, dtype=np.float64).reshape(-1, 4)
    lum = 0.299 * flat[:, 0] + 0.587 * flat[:, 1] + 0.114 * flat[:, 2]
    return [(0, 0, 0) if v > 0.5 else (255, 255, 255) for v in lum]


def draw_texts(
    img: Tensor,
    positions: np.ndarray,
    texts: Sequence[str],
    colours: Sequence[tuple[int, int, int]],
    size: int = TEXT_PX,
    anchor: str = "mm",
    outline: tuple[int, int, int] | None = None,
) -> Tensor:
    """``img`` ``(3, H, W)`` uint8 with each text at its pixel ``(column, row)`` position (DejaVu Sans; ``anchor``
    as Pillow's, default centred; ``outline``: a 1-px edge of that colour, for text on images)."""
    pil = Image.fromarray(img.permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(pil)
    f = font(size)
    stroke = {"stroke_width": 1, "stroke_fill": tuple(outline)} if outline is not None else {}
    for (x, y), text, colour in zip(np.asarray(positions), texts, colours):
        if text:
            draw.text((float(x), float(y)), text, font=f, fill=tuple(colour), anchor=anchor, **stroke)
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)
