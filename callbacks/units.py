"""The unit browser's data: for every unit of the browsed layers, at every drawing, the files that the convscope
TensorBoard plugin reads (format: ``docs/browser.md``), beside the run's event file and out of its image cards:

    <run>/convscope_units/<layer>/epoch_0003/meta.json, stats.json, class_means.f32, top_000.png, ...

Per unit, all from the fixed-set pass the other callbacks share: its top-``k`` patches over the fixed set
(``hooks.RunningTop``), its mean response, class selectivity index, preferred class, dead fraction and class means;
then its profile change since the previous drawn epoch (read back from that epoch's folder, so
it survives a resume without checkpoint state), its accuracy drop when ablated where the importance callback
measured it at the same drawing, its actmax image on its own schedule (``actmax_every``) and, for a first conv
layer, its filter. Each epoch folder is written under a dot-name and renamed into place, so no reader sees half.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from . import figures
from .actmax import STEPS
from .base import legacy_callback
from .hooks import LayerError, NoDefaultLayer, check_layers
from .layers import layer_roles
from .methods.activations import silent_fraction
from .methods.actmax import maximize_activation
from .methods.changes import profile_change, weight_layer
from .methods.filters import first_layer
from .methods.selectivity import class_means, selectivity_index
from .methods.top_activations import ReceptiveField, patches, receptive_field, rf_box
from .technique import FixedSetTechnique, RenderContext, int_at_least, layer_list, positive_int

__all__ = ["Units", "UnitsCallback", "FOLDER", "FORMAT", "write_epoch", "drawn_epochs", "sprite_pngs"]

FORMAT = 1
FOLDER = "convscope_units"  # <run>/convscope_units/<layer>/epoch_NNNN/
CHUNK = 256  # units per sprite PNG
MAX_CLASS_COLUMNS = 100  # class means of every class up to this many classes; above, of the shown classes
TOP_PIXELS = 1_000_000  # pixels of a layer's top sprites at most (one byte each): ~1 MB raw at 512 units x 9 at 14 px
ACTMAX_PIXELS = 300_000  # pixels of a layer's actmax sprites at most: 512 units at 24 px
TILE_BYTES = 2**26  # input-space tiles gathered at once before shrinking (and a few copies on the way)
MIN_CELL = 8  # px: no sprite cell is shrunk below this (2,048 units may then pass the 512-unit budget's share)
EPOCH_RE = re.compile(r"epoch_(\d{4,})")


def cell_side(native: int, count: int, pixels: int) -> int:
    """The side of a sprite cell: ``native`` px, shrunk so that ``count`` cells hold at most ``pixels`` pixels."""
    return max(min(native, MIN_CELL), min(native, math.isqrt(max(1, pixels // max(1, count)))))


def _encode(img: Tensor) -> bytes:
    """``(C, H, W)`` uint8 (C = 1 or 3) -> PNG bytes, one byte per pixel: grey exactly; colour as a 256-colour
    palette (Pillow's median cut, no dithering: deterministic, and thumbnails read well)."""
    arr = np.ascontiguousarray(img.permute(1, 2, 0).numpy())
    pil = Image.fromarray(arr[..., 0], "L") if arr.shape[2] == 1 else Image.fromarray(arr, "RGB")
    if pil.mode == "RGB":
        pil = pil.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    return figures._png_bytes(pil)


def sprite_pngs(tiles: Tensor) -> list[bytes]:
    """Unit sprites (``docs/browser.md``): ``(U, cells, C, s, s)`` uint8 tiles -> one PNG per ``CHUNK`` units, unit
    ``u`` in row ``u % CHUNK``, its cells side by side."""
    u, cells, c, s, _ = tiles.shape
    out = []
    for start in range(0, u, CHUNK):
        part = tiles[start : start + CHUNK]  # (R, cells, C, s, s)
        img = part.permute(2, 0, 3, 1, 4).reshape(c, len(part) * s, cells * s)
        out.append(_encode(img))
    return out


def _display(x: Tensor, lo: float, hi: float, side: int) -> Tensor:
    """Input-space tiles ``(..., C, h, w)`` -> uint8 ``(..., C', side, side)``: ``lo..hi`` to 0..255, one channel
    grey, three colour (other counts: their mean, grey), shrunk (antialiased) to ``side`` px."""
    x = torch.nan_to_num(x.detach().float().cpu(), nan=lo)
    if x.shape[-3] not in (1, 3):
        x = x.mean(-3, keepdim=True)
    x = ((x - lo) / (hi - lo if hi > lo else 1.0)).clamp(0, 1)
    x = figures.shrink(x, side)
    return (x * 255).round().to(torch.uint8)


def _num(v: float) -> float | None:
    """A float rounded to 4 significant digits; None (JSON null) where not finite."""
    v = float(v)
    return float(f"{v:.4g}") if math.isfinite(v) else None


def drawn_epochs(layer_dir: Path) -> list[int]:
    """The epochs with a complete folder (``meta.json`` and ``stats.json``) under ``layer_dir``, ascending."""
    if not layer_dir.is_dir():
        return []
    found = []
    for p in layer_dir.iterdir():
        m = EPOCH_RE.fullmatch(p.name)
        if m and (p / "meta.json").is_file() and (p / "stats.json").is_file():
            found.append(int(m.group(1)))
    return sorted(found)


def write_epoch(layer_dir: Path, epoch: int, files: dict[str, bytes]) -> Path:
    """Write ``files`` as ``layer_dir/epoch_NNNN/`` atomically: into ``.tmp-epoch_NNNN-<pid>/``, then renamed into
    place (an existing folder of that epoch, from before a resume, is removed first)."""
    layer_dir.mkdir(parents=True, exist_ok=True)
    name = f"epoch_{epoch:04d}"
    for stale in layer_dir.glob(f".tmp-{name}-*"):  # left by a writer killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    tmp = layer_dir / f".tmp-{name}-{os.getpid()}"
    tmp.mkdir()
    try:
        for file, data in files.items():
            (tmp / file).write_bytes(data)
        final = layer_dir / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


class Units(FixedSetTechnique):
    """Write the unit browser's data (``docs/browser.md``) for every unit of the browsed layers at every drawing.

    Args:
        layers: layers to browse (default: each stage's feature layer and the hidden fully-connected
            nonlinearities, ``layers.layer_roles``: LeNet-5's relu_1, relu_2, relu_3, relu_4; ResNet-18's stages).
        max_units: units per layer at most (the first ones); a wider layer is cut, and says so in its meta.
        k: top images per unit.
        per_class: samples per class in the fixed set (500: the set the selectivity callback reads, so the
            statistics come from the same shared pass; at most 5,000 images in all).
        actmax_every: actmax of every unit at 0-based epochs ``n - 1, 2n - 1, ...`` and the fit's last (0: never).
        actmax_units: units per layer whose actmax is drawn, at most (the first ones).
        steps: Adam steps of each actmax drawing (``maximize_activation``, as the actmax callback draws it).
    """

    technique = "units"
    evolves = False

    def __init__(
        self,
        layers: list[str] | None = None,
        max_units: int = 2048,
        k: int = 9,
        per_class: int = 500,
        actmax_every: int = 5,
        actmax_units: int = 64,
        steps: int = STEPS,
        **kwargs,
    ) -> None:
        super().__init__(layers=layers, per_class=per_class, **kwargs)
        layer_list(self, layers)
        for arg, value in (("max_units", max_units), ("k", k), ("actmax_units", actmax_units), ("steps", steps)):
            positive_int(self, arg, value)
        int_at_least(self, "actmax_every", actmax_every, 0)
        self.layers = list(layers) if layers is not None else None
        self.max_units, self.k = max_units, k
        self.actmax_every, self.actmax_units, self.steps = actmax_every, actmax_units, steps
        self.layer_names: list[str] = []
        self.units_of: dict[str, int] = {}  # units written per layer
        self.fields: dict[str, ReceptiveField | None] = {}
        self.filters_of: dict[str, str] = {}  # browsed layer -> the first conv that feeds it
        self.actmax_seconds: list[float] = []  # actmax's share of each drawing with it (benchmarks/browser_cost.py)
        self._actmax_time = 0.0
        self._warned = False

    def configure(self, net, shapes):
        if self.layers is None:
            roles = layer_roles(net, shapes)
            names = list(dict.fromkeys(roles.features + roles.hidden))
            if not names:
                raise NoDefaultLayer(
                    f"no default layer (no conv stage, no hidden fully-connected nonlinearity); name some of: "
                    f"{', '.join(shapes)}"
                )
        else:
            names = check_layers(net, self.layers)
        self.layer_names, self.units_of, self.fields, self.filters_of = names, {}, {}, {}
        first = first_layer(net)
        modules = dict(net.named_modules())
        for layer in names:
            shape = shapes.get(layer)
            if shape is None or len(shape) not in (1, 3):
                raise LayerError(
                    f"layer {layer!r} outputs {shape} per image (or is not called exactly once per forward pass); the "
                    "unit browser needs (C, H, W) or (U,)"
                )
            self.units_of[layer] = min(shape[0], self.max_units)
            self.fields[layer] = None
            if len(shape) == 3:
                try:
                    self.fields[layer] = receptive_field(net, layer, self.input_shape)
                except LayerError:
                    pass  # top images without windows
                if weight_layer(net, layer, shape[0]) == first and isinstance(modules[first], nn.Conv2d):
                    self.filters_of[layer] = first
        self.share_layers(self.layer_names, self.per_class, top_k=self.k)

    def config(self):
        return {"layers": self.layers}

    # --------------------------------------------------------------------------------------------- schedule
    def actmax_due(self, step: int, last: int | None) -> bool:
        """Whether this drawing has actmax: every ``actmax_every``-th epoch and the fit's ``last`` (in the training
        process and in a drawing process alike); always outside a fit (``last`` None: a user validates a
        checkpoint)."""
        if self.actmax_every == 0:
            return False
        return last is None or (step + 1) % self.actmax_every == 0 or step == last

    # ------------------------------------------------------------------------------------------------ render
    def render(self, ctx: RenderContext) -> None:
        run = ctx.run_dir
        if run is None:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"{type(self).__name__}: the logger has no run folder, so no unit data is written", stacklevel=2
                )
            return
        if not self.layer_names:  # not set up by the Trainer (a direct call)
            self.configure_for(ctx.net, tuple(ctx.input_shape))
        x, _ = ctx.fixed_set(self.per_class)
        acts, y = ctx.fixed_set_activations(self.layer_names, self.per_class)
        y = y.cpu().long()
        tops = ctx.fixed_set_tops(self.layer_names, self.per_class, self.k)  # from the owner's shared pass
        with_actmax = self.actmax_due(ctx.step, ctx.fit_last_epoch)
        prior = x.float().mean(0) if with_actmax else None  # the mean image: actmax's prior, as the actmax callback's
        self._actmax_time = 0.0
        for layer in self.layer_names:
            files = self.layer_files(ctx, Path(run), layer, x, y, acts[layer], tops[layer], prior)
            write_epoch(Path(run) / FOLDER / layer, ctx.step, files)
        if with_actmax:
            self.actmax_seconds.append(self._actmax_time)

    def layer_files(
        self, ctx: RenderContext, run: Path, layer: str, x: Tensor, y: Tensor, a: Tensor, top, prior: Tensor | None
    ) -> dict[str, bytes]:
        """The files of ``layer``'s epoch folder."""
        n_units = self.units_of[layer]
        a = a[:, :n_units].float().cpu()  # (N, U): conv units spatially averaged
        num_classes = len(ctx.classes)
        columns = list(range(num_classes)) if num_classes <= MAX_CLASS_COLUMNS else list(ctx.shown)
        means = class_means(a, y, num_classes)  # (K, U) over every class
        lo, hi = (float(v) for v in ctx.pixel_range)
        shape = self.shapes[layer]
        kind = "conv" if len(shape) == 3 else "fc"
        files: dict[str, bytes] = {}

        # the top-k sprite and entries
        values, indices = top.values[:n_units].cpu(), top.indices[:n_units].cpu()
        rf = self.fields.get(layer)
        windows = kind == "conv" and rf is not None and top.positions is not None
        crop = windows and rf.size < max(x.shape[-2:])  # a field as large as the image: the whole images
        native = rf.size if crop else max(x.shape[-2:])
        cell = cell_side(native, n_units * indices.shape[1], TOP_PIXELS)

        positions = top.positions[:n_units].cpu() if windows else None

        def source(rows: slice) -> Tensor:  # (R, k, C, P, P) input-space tiles of units ``rows``
            if crop:
                return patches(x, indices[rows], positions[rows], rf, shape[-2:], fill=lo)
            return x[indices[rows].flatten().to(x.device)].view(-1, indices.shape[1], *x.shape[1:])

        per_unit = indices.shape[1] * x.shape[1] * native * native * x.element_size()  # before shrinking
        step = max(1, TILE_BYTES // per_unit)  # 2,048 units x 9 whole 224 px images would be 11 GB at once
        parts = [_display(source(slice(r, r + step)), lo, hi, cell) for r in range(0, n_units, step)]
        tiles = torch.cat(parts)
        pngs = sprite_pngs(tiles)
        files.update({f"top_{c:03d}.png": png for c, png in enumerate(pngs)})
        entries = []
        for u in range(n_units):
            row = []
            for j in range(indices.shape[1]):
                i = int(indices[u, j])
                box = None  # fc units, and a field as large as the image: the patch is the whole image
                if crop:  # the field's window, clipped to the image (the patch shows the padding past an edge)
                    box = list(rf_box(rf, int(positions[u, j, 0]), int(positions[u, j, 1]), x.shape[-2:]))
                row.append({"sample": i, "label": int(y[i]), "value": _num(values[u, j]), "box": box})
            entries.append(row)
        what = f"receptive field {rf.size} px" if crop else "whole image"
        top_meta = {
            "k": int(indices.shape[1]),
            "cell": cell,
            "chunks": len(pngs),
            "scale": f"pixel values {lo:.4g}..{hi:.4g} -> 0..255 (each patch on the data's range)",
            "patch": what + (f", shrunk to {cell} px" if cell < native else ""),
        }

        # actmax, on its own schedule
        actmax_meta = None
        if prior is not None:
            n_act = min(n_units, self.actmax_units)
            t0 = time.perf_counter()
            batch = self.backward_batch(x, n_act)
            imgs = torch.cat(
                [
                    maximize_activation(
                        ctx.net,
                        layer,
                        list(range(start, min(start + batch, n_act))),
                        steps=self.steps,
                        pixel_range=(lo, hi),
                        input_shape=tuple(ctx.input_shape),
                        prior_mean=prior.to(x.device),
                        jitter=0,
                        seed=start,
                    )
                    for start in range(0, n_act, batch)
                ]
            )
            self._actmax_time += time.perf_counter() - t0
            acell = cell_side(max(imgs.shape[-2:]), n_act, ACTMAX_PIXELS)
            pngs = sprite_pngs(_display(imgs, lo, hi, acell).unsqueeze(1))
            files.update({f"actmax_{c:03d}.png": png for c, png in enumerate(pngs)})
            actmax_meta = {
                "cell": acell,
                "chunks": len(pngs),
                "units": n_act,
                "scale": f"pixel values {lo:.4g}..{hi:.4g} -> 0..255",
                "objective": "centre neuron" if kind == "conv" else "unit",
                "steps": self.steps,
            }

        # a first conv layer's filters
        filters_meta = None
        if layer in self.filters_of:
            w = dict(ctx.net.named_modules())[self.filters_of[layer]].weight.detach().float().cpu()[:n_units]
            vmax = figures.abs_max(w) or 1.0
            if w.shape[1] == 3:
                rgb = (w / (2 * vmax) + 0.5).clamp(0, 1)
                scale = f"RGB weights: grey = 0, full colour = +-{vmax:.4g}"
            else:
                rgb = figures.to_rgb(w.mean(1), figures.SIGNED, vmax=vmax).movedim(0, 1)  # (U, 3, kh, kw)
                scale = f"weights (mean over {w.shape[1]} input channels) " * (w.shape[1] > 1) or "weights "
                scale += f"-{vmax:.4g}..{vmax:.4g}: blue < 0 (white) < red ({figures.SIGNED})"
            pngs = sprite_pngs((rgb * 255).round().to(torch.uint8).unsqueeze(1))
            files.update({f"filters_{c:03d}.png": png for c, png in enumerate(pngs)})
            filters_meta = {
                "cell": int(w.shape[-1]),
                "chunks": len(pngs),
                "scale": scale,
                "layer": self.filters_of[layer],
            }

        # statistics
        layer_dir = run / FOLDER / layer
        epochs = [e for e in drawn_epochs(layer_dir) if e < ctx.step]
        now = means[columns].T.contiguous()  # (U, len(columns))
        stats = {
            "mean": [_num(v) for v in a.mean(0)],
            "selectivity": [_num(v) for v in selectivity_index(means)],
            "preferred_class": [int(v) for v in means.argmax(0)],
            "dead_fraction": [_num(v) for v in silent_fraction(a)],
            "importance": self.importance(ctx, layer, n_units),
            "change": self.change(layer_dir, epochs, columns, now),
            "top": entries,
        }
        previous_actmax = [e for e in epochs if self.had_actmax(layer_dir / f"epoch_{e:04d}")]
        meta = {
            "format": FORMAT,
            "layer": layer,
            "epoch": int(ctx.step),
            "units": n_units,
            "of": int(shape[0]),
            "kind": kind,
            "input_shape": list(ctx.input_shape),
            "classes": list(ctx.classes),
            "class_index": columns,
            "top": top_meta,
            "actmax": actmax_meta,
            "filters": filters_meta,
            "actmax_epochs": previous_actmax + ([int(ctx.step)] if actmax_meta is not None else []),
            "fixed_set": len(x),
        }
        files["class_means.f32"] = now.numpy().astype("<f4").tobytes()
        files["stats.json"] = json.dumps(stats, separators=(",", ":")).encode()
        files["meta.json"] = json.dumps(meta, indent=1).encode()
        return files

    @staticmethod
    def had_actmax(folder: Path) -> bool:
        try:
            return json.loads((folder / "meta.json").read_text()).get("actmax") is not None
        except (OSError, ValueError):
            return False

    @staticmethod
    def change(layer_dir: Path, epochs: list[int], columns: list[int], now: Tensor) -> list | None:
        """Each unit's profile change (``methods.changes.profile_change``) since the latest drawn epoch before this
        one, from that epoch's ``class_means.f32``; None at the first drawing, or where the classes or units differ."""
        if not epochs:
            return None
        folder = layer_dir / f"epoch_{epochs[-1]:04d}"
        try:
            meta = json.loads((folder / "meta.json").read_text())
            then = np.frombuffer((folder / "class_means.f32").read_bytes(), dtype="<f4")
        except (OSError, ValueError):
            return None
        if meta.get("class_index") != columns or then.size != now.numel():
            return None
        then = torch.from_numpy(then.copy()).view(now.shape)
        return [_num(v) for v in profile_change(then.T, now.T)]

    @staticmethod
    def importance(ctx: RenderContext, layer: str, n_units: int) -> list | None:
        """The accuracy drop of each unit the importance callback ablated in ``layer`` at this drawing (None for the
        units it did not ablate), or None where it did not measure the layer now."""
        found = ctx.result("importance", layer)
        if found is None:
            return None
        units, drop = found
        out: list[Any] = [None] * n_units
        for u, d in zip(units, drop.tolist(), strict=True):
            if u < n_units:
                out[u] = _num(d)
        return out


UnitsCallback = legacy_callback(Units, "UnitsCallback")
