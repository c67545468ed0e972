"""SYNTHETIC unit-browser data: writes docs/browser.md's on-disk format (version 1) with known numbers, so the
plugin's routes can be checked against exact answers (and a real fit's folder is checked separately).

Every value is a function of (layer, epoch, unit), so a test can recompute what the plugin must answer:
sprite pixels encode the epoch and unit (``pixel(epoch, unit, cell)``), stats follow ``stat(...)``. From epoch 1 a
fifth of the units are dead (``firing``), as real ones are: those firing on one image have selectivity 1 and one
positive top response, those never firing selectivity 0, mean 0 and top responses 0 only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
K = 9


def pixel(epoch: int, unit: int, cell: int) -> int:
    """The grey value of cell ``cell`` of unit ``unit``'s sprite row at ``epoch``."""
    return (37 * epoch + 11 * unit + 5 * cell) % 251


def firing(epoch: int, unit: int) -> str:
    """A unit's state at an epoch: live, dead firing "once" (on one image of the fixed set), or dead "never" firing."""
    if epoch >= 1 and unit % 10 == 4:
        return "once"
    if epoch >= 1 and unit % 10 == 9:
        return "never"
    return "live"


def stat(name: str, epoch: int, unit: int):
    fires = firing(epoch, unit)
    if name == "preferred_class":
        return (unit + (epoch >= 2) * 3) % len(CLASSES)
    if name == "selectivity":  # one image's class mean against zeros: selectivity 1; silent: 0
        return {"once": 1.0, "never": 0.0}.get(fires, round(min(1.0, 0.1 * epoch + 0.01 * (unit % 7)), 4))
    if name == "dead_fraction":
        return {"once": 0.998, "never": 1.0}.get(fires, round(0.01 * (unit % 3), 4))
    if name == "mean":
        return {"once": 0.006, "never": 0.0}.get(fires, round(0.5 + 0.1 * unit - 0.01 * epoch, 4))
    if name == "importance":
        return round(0.001 * unit * (epoch + 1), 4)
    if name == "change":
        return round(0.05 * ((unit * 7 + epoch) % 11), 4)
    raise KeyError(name)


def top_value(epoch: int, unit: int, j: int) -> float:
    """The response of unit ``unit``'s ``j``-th top image (descending)."""
    fires = firing(epoch, unit)
    if fires == "live":
        return round(5.0 - 0.1 * j, 4)
    return 3.0 if fires == "once" and j == 0 else 0.0


def box(side: int, unit: int, j: int) -> list[int]:
    """The receptive-field box of unit ``unit``'s ``j``-th top patch: half the image's side, inside it, near the
    bottom-right corner (so a large image's box has long numbers: ``y 109:221 x 110:222``)."""
    f = side // 2
    y0, x0 = side - f - (unit + j) % 4, side - f - (unit + 2 * j) % 4
    return [y0, x0, y0 + f, x0 + f]


def class_means(epoch: int, units: int) -> np.ndarray:
    m = np.zeros((units, len(CLASSES)), np.float32)
    for u in range(units):
        m[u] = 0.1 * np.arange(len(CLASSES)) / (u + 1)
        m[u, stat("preferred_class", epoch, u)] = 2.0 + epoch + 0.01 * u
    return m


def _sprite(path: Path, epoch: int, units: int, cell: int, cells: int, start: int) -> None:
    rows = min(256, units - start)
    a = np.zeros((rows * cell, cells * cell), np.uint8)
    for r in range(rows):
        for c in range(cells):
            a[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = pixel(epoch, start + r, c)
    Image.fromarray(a).save(path)


def write_epoch(
    run: Path,
    layer: str,
    epoch: int,
    units: int,
    *,
    actmax: bool = True,
    filters: bool = False,
    importance: bool = True,
    actmax_epochs: list[int] | None = None,
    kind: str = "conv",
    side: int = 28,
) -> Path:
    """One complete epoch folder, written under a .tmp name and renamed into place (as the writer does)."""
    layer_dir = run / "convscope_units" / layer
    layer_dir.mkdir(parents=True, exist_ok=True)
    tmp = layer_dir / f".tmp-epoch_{epoch:04d}-{os.getpid()}"
    tmp.mkdir()
    chunks = (units + 255) // 256
    for c in range(chunks):
        _sprite(tmp / f"top_{c:03d}.png", epoch, units, 8, K, 256 * c)
        if actmax:
            _sprite(tmp / f"actmax_{c:03d}.png", epoch, units, 12, 1, 256 * c)
        if filters:
            _sprite(tmp / f"filters_{c:03d}.png", epoch, units, 5, 1, 256 * c)
    meta = {
        "format": 1,
        "layer": layer,
        "epoch": epoch,
        "units": units,
        "kind": kind,
        "input_shape": [1, side, side],
        "classes": CLASSES,
        "class_index": list(range(len(CLASSES))),
        "top": {"k": K, "cell": 8, "chunks": chunks, "scale": "each patch min..max"},
        "actmax": {"cell": 12, "chunks": chunks, "scale": "each image min..max"} if actmax else None,
        "filters": {"cell": 5, "chunks": chunks, "scale": "symmetric"} if filters else None,
        "actmax_epochs": actmax_epochs if actmax_epochs is not None else ([epoch] if actmax else []),
        "fixed_set": 100,
    }
    stats = {k: [stat(k, epoch, u) for u in range(units)] for k in ("mean", "selectivity", "preferred_class")}
    stats["dead_fraction"] = [stat("dead_fraction", epoch, u) for u in range(units)]
    stats["importance"] = [stat("importance", epoch, u) for u in range(units)] if importance else None
    stats["change"] = None if epoch == 0 else [stat("change", epoch, u) for u in range(units)]
    stats["top"] = [
        [
            {
                "sample": (u * K + j) % 100,
                "label": (u + j) % 10,
                "value": top_value(epoch, u, j),
                "box": box(side, u, j),
            }
            for j in range(K)
        ]
        for u in range(units)
    ]
    (tmp / "meta.json").write_text(json.dumps(meta))
    (tmp / "stats.json").write_text(json.dumps(stats))
    class_means(epoch, units).astype("<f4").tofile(tmp / "class_means.f32")
    final = layer_dir / f"epoch_{epoch:04d}"
    os.replace(tmp, final)
    return final


def write_run(
    run: Path, layers: dict[str, int], epochs=(0, 1, 2), actmax_every: int = 2, filters_layer=None, side: int = 28
) -> Path:
    """A run folder with an (empty) event file and the given layers ({name: units}) at the given epochs; actmax at
    every ``actmax_every``-th epoch; images of ``side`` px."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "events.out.tfevents.0.synthetic").write_bytes(b"")
    for layer, units in layers.items():
        drawn = []
        for e in epochs:
            am = e % actmax_every == 0
            drawn += [e] if am else []
            write_epoch(
                run, layer, e, units, actmax=am, filters=layer == filters_layer, actmax_epochs=list(drawn), side=side
            )
    return run
