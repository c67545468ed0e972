"""How each picture evolved over training, in one image: ``evolution/<technique>/<layer>`` and PNG files.

While the other callbacks log, this one keeps (PNG-compressed, in memory and in the checkpoint, so a resumed fit
keeps them) the snapshots of chosen epochs: by default epochs 1, 2, 5, 10, 20, 40, 80 (1-based, as in Zeiler &
Fergus's figure 4), plus the last; for a callback that draws every n epochs, the first picture at or after each. At the
end of fit it stacks, for each ``<technique>/<layer>``, the snapshots in the grid that shows them largest within 720 x
1,600 pixels (scaled down where they must be; each snapshot's own title names its epoch, and what all show alike,
such as a colour bar, is shown once), logs the result at the last epoch's step
and saves it as ``<run>/evolution/<technique>/<layer>.png``, for a report, without the slider. For per-class pictures
(``feature_maps/<layer>/<class>``, ``occlusion/<class>`` ...) the first class's is used. The ``epochs`` argument takes
the 1-based numbers people say ("after 5 epochs"); the pictures label each snapshot with the 0-based epoch, as
TensorBoard's step slider and every picture's title do.

The snapshots arrive through the Trainer's coordinator (``callbacks.coordinator``): at ``setup`` the callback adds
``record_snapshot`` as a listener, and every picture logged by ``RenderContext.add_image`` is published to it with
its source's facts (``Source``). The ``techniques`` followed are checked at fit start against those registered.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from . import figures
from .base import legacy_callback
from .capture import Source
from .technique import Technique, check_arg

__all__ = ["evolution_strip", "snapshot_key", "Evolution", "EvolutionCallback"]

DEFAULT_EPOCHS = (1, 2, 5, 10, 20, 40, 80)
# What a representation learns, as Zeiler & Fergus followed it: the analyses (occlusion, invariance, importance, ...)
# have their slider and scalars, and stacking them too would double the event file of a short run.
DEFAULT_TECHNIQUES = ("filters", "feature_maps", "actmax", "deconv", "selectivity", "decision", "confusion_matrix")


def snapshot_key(tag: str, class_tags: bool = False) -> str | None:
    """``technique/layer`` for a tag ``technique/layer[/...]`` (``technique`` for per-class tags
    ``technique/<class>`` and one-part tags), None for the evolution's own tags."""
    parts = tag.split("/")
    if parts[0] == "evolution":
        return None
    return parts[0] if class_tags else "/".join(parts[:2])


def _shared_bands(images: list[Tensor]) -> tuple[int, int]:
    """``(top, bottom)``: how many leading and trailing pixel rows every image has in common (0 unless all are the
    same size): a header or a colour bar that need be shown once, not per snapshot."""
    if len(images) < 2 or any(im.shape != images[0].shape for im in images):
        return 0, 0
    same = torch.stack([(im == images[0]).all(0).all(1) for im in images[1:]]).all(0)  # (H,) rows alike in all
    blank = (images[0] == 255).all(0).all(1)  # (H,) white rows: a band is cut there, not through a label
    h = len(same)
    top = int(same.long().cumprod(0).sum())
    top = max((r for r in range(top + 1) if r == 0 or blank[r - 1]), default=0)
    bottom = int(same.flip(0).long().cumprod(0).sum())
    bottom = max((b for b in range(bottom + 1) if b == 0 or blank[h - b]), default=0)
    return (top, bottom) if top + bottom < h else (0, 0)


def evolution_strip(
    snapshots: dict[int, Tensor], max_width: int = figures.MAX_WIDTH, max_height: int = figures.MAX_HEIGHT - 60
) -> Tensor:
    """Stack ``{epoch (1-based): (3, H, W) uint8 image}`` in epoch order, in the grid of columns that shows them
    largest within ``max_width`` x ``max_height`` pixels (each scaled down as little as that needs, never up). Each
    snapshot keeps its own title, which names its epoch; what every snapshot shows alike at its top or bottom (a
    subtitle, a colour bar) is shown once: above the first and below the last. uint8."""
    if not snapshots:
        raise ValueError("evolution_strip needs at least one snapshot")
    images = [img for _, img in sorted(snapshots.items())]
    top, bottom = _shared_bands(images)
    n = len(images)
    images = [im[:, (top if i else 0) : im.shape[1] - (bottom if i < n - 1 else 0)] for i, im in enumerate(images)]
    w = max(im.shape[2] for im in images)

    def scale(ncol: int) -> float:
        rows = [images[i : i + ncol] for i in range(0, n, ncol)]
        height = sum(max(im.shape[1] for im in row) for row in rows) + 12 * (len(rows) - 1)
        return min(1.0, (max_width - 8 * (ncol - 1)) / (ncol * w), max_height / height)

    ncol = max(range(1, n + 1), key=lambda c: (scale(c), c))  # the largest snapshots; then the most columns
    f = scale(ncol)
    items = [figures.bounded(img, int(img.shape[2] * f), int(img.shape[1] * f)) for img in images]
    rows = [figures.stack(items[i : i + ncol], dim=2, gap=8) for i in range(0, n, ncol)]
    return figures.stack(rows, dim=1, gap=12)


def _unpng(data: bytes) -> Tensor:
    arr = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy()
    return torch.from_numpy(arr).permute(2, 0, 1)


class Evolution(Technique):
    """At the end of fit, log and save one picture per technique and layer that stacks chosen epochs.

    Args:
        epochs: 1-based epochs to keep (default 1, 2, 5, 10, 20, 40, 80); the last epoch is always added.
        techniques: techniques to follow (default ``DEFAULT_TECHNIQUES``: filters, feature maps, activation
            maximization, deconvolution, selectivity, decision pipeline, confusion matrix; ``["all"]``: every
            technique that logs images).
        save_png: also write ``<run>/evolution/<technique>/<layer>.png``.
    """

    technique = "evolution"
    when = "fit_end"  # composed once, when the fit is over
    layer_args = ()  # names no layer

    def __init__(
        self, epochs: list[int] | None = None, techniques: list[str] | None = None, save_png: bool = True, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        ok = epochs is None or (bool(epochs) and all(isinstance(e, int) and e >= 1 for e in epochs))
        check_arg(self, "epochs", epochs, ok, "a non-empty list of 1-based epochs >= 1")
        self.epochs = sorted(set(epochs)) if epochs is not None else list(DEFAULT_EPOCHS)
        self.techniques = techniques
        self.save_png = save_png
        self.snapshots: dict[str, dict[int, bytes]] = {}  # key -> {epoch (1-based): PNG}
        self._tag_of: dict[str, str] = {}  # key -> the tag followed (first class's for per-class pictures)
        self.saved: list[Path] = []

    def check_techniques(self, drawn: list[str]) -> None:
        """``ValueError`` unless every technique followed is one of ``drawn`` (the owner's other enabled techniques)
        or ``all``. Called by the owner at setup, after every technique was configured."""
        if self.techniques is None:
            return
        valid = [t for t in drawn if t != self.technique] + ["all"]
        bad = [t for t in self.techniques if t not in valid]
        if bad or not self.techniques:
            raise ValueError(
                f"Evolution: unknown or empty techniques {bad or self.techniques}; valid (the enabled techniques): "
                f"{', '.join(valid)}"
            )

    def extra_state(self) -> dict[str, Any]:
        return {"snapshots": self.snapshots, "tag_of": self._tag_of}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.snapshots = dict(state.get("snapshots", {}))
        self._tag_of = dict(state.get("tag_of", {}))

    def record_snapshot(self, tag: str, step: int, png: bytes, source: Source, fit_last: int | None) -> None:
        """Every picture the owner logs: the technique that drew it (``source``), its PNG, ``step`` 0-based, and the
        last epoch of the fit (None outside a fit: nothing is kept)."""
        if not self.enabled or fit_last is None or not source.evolves:
            return
        key = snapshot_key(tag, source.class_tags)
        followed = DEFAULT_TECHNIQUES if self.techniques is None else self.techniques
        if key is None or ("all" not in followed and key.split("/")[0] not in followed):
            return
        if self._tag_of.setdefault(key, tag) != tag:
            return  # another class's picture of the same technique and layer
        epoch = step + 1
        snaps = self.snapshots.setdefault(key, {})
        reached = [e for e in self.epochs if e <= epoch]
        # the first picture at or after each chosen epoch (callbacks drawing every n epochs skip some), and the last
        if (reached and not any(e >= reached[-1] for e in snaps)) or step == fit_last:
            snaps[epoch] = png

    def ready(self) -> bool:
        return bool(self.snapshots)

    def render(self, ctx) -> None:
        self.saved = []
        for key, snaps in sorted(self.snapshots.items()):
            if not snaps:
                continue
            strip = evolution_strip({e: _unpng(s) for e, s in snaps.items()})
            strip = figures.titled(
                strip,
                f"{self._tag_of.get(key, key)} over training",
                f"epochs {', '.join(str(e - 1) for e in sorted(snaps))} (TensorBoard steps)",
            )
            png = ctx.add_image(f"{self.technique}/{key}", strip)
            log_dir = ctx.run_dir
            if self.save_png and log_dir:
                path = Path(log_dir) / "evolution" / f"{key}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(png)
                self.saved.append(path)


EvolutionCallback = legacy_callback(Evolution, "EvolutionCallback")
