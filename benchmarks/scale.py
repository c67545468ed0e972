"""convscope on the model zoo at scale: one row per (model, classes, image size).

    python -m benchmarks.scale [--models resnet18 convnext_atto ...] [--classes 10 100] [--size 32]
                               [--val 5000] [--epochs 2] [--steps 20] [--batch 64] [--accelerator cpu]

Each row is one fit of a timm model (no pretrained weights) in a plain LightningModule, with every callback of
``convscope.VISUALIZATIONS`` at its defaults (strict), on real images: Fashion-MNIST coloured by sample so that
hue and garment make the class (10 hues x 10 garments = 100 classes, 100 hues = 1,000; ``hue_classes``), resized to
``--size``. Each epoch trains ``--steps`` steps at batch ``--batch`` and validates ``--val`` test images. Printed:

- ``20 steps``: the time of 20 training steps, measured in the same fit (the median step x 20);
- ``drawing epoch``: the callbacks' own seconds in the last epoch, where every callback draws;
- ``per epoch``: the callbacks' own seconds per epoch at the default schedule (each callback's latest drawing,
  divided by its ``every_n_epochs``; actmax runs its 48 steps from the same noise at every drawing), the steady
  state of a long run;
- the largest picture (width x height); MB of the pictures of a drawing epoch (every callback drawing, without the
  once-per-fit training samples and evolution strips) and of the event file per epoch (all of it, over the fit).

Run it from the repository root (``-m``); compare numbers of one run only (the machine is shared).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from callbacks import VISUALIZATIONS  # noqa: E402
from callbacks.drawing import MODES, Drawing  # noqa: E402
from lit_modules.datamodule import DEBIAN_FASHION_DIR, hue_classes, read_idx  # noqa: E402

MODELS = [
    "resnet18",
    "convnext_atto",
    "efficientnet_b0",
    "mobilenetv3_small_100",
    "regnetx_002",
    "vgg11_bn",
    "densenet121",
]


class Plain(LightningModule):
    """A user's plain classifier around any net."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


class StepTimer(Callback):
    """Wall-clock seconds of every training step (forward, backward, optimizer)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds.append(time.perf_counter() - self._t0)


def dataset(split: str, n: int, classes: int, size: int) -> TensorDataset:
    """``n`` Fashion-MNIST images of ``split`` as ``classes`` classes (hue x garment) at ``size`` px."""
    name = "train" if split == "train" else "t10k"
    images = read_idx(DEBIAN_FASHION_DIR / f"{name}-images-idx3-ubyte.gz", 3)[:n].unsqueeze(1).float() / 255
    garment = read_idx(DEBIAN_FASHION_DIR / f"{name}-labels-idx1-ubyte.gz", 1)[:n].long()
    x, y, names = hue_classes(images, garment, classes // 10, size)
    data = TensorDataset(x, y)
    data.classes, data.targets = list(names), y  # torchvision's conventions, which convscope reads
    return data


def row(model: str, classes: int, args: argparse.Namespace, root: str) -> dict:
    torch.manual_seed(0)
    net = timm.create_model(model, pretrained=False, num_classes=classes)
    cbs = [cls(strict=True) for cls in VISUALIZATIONS.values()]
    drawing = Drawing(args.drawing)
    timer = StepTimer()
    trainer = Trainer(
        max_epochs=args.epochs,
        limit_train_batches=args.steps,
        accelerator=args.accelerator,
        devices=1,
        logger=TensorBoardLogger(root, name=f"{model}-{classes}"),
        callbacks=[timer, *cbs, drawing],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    train = dataset("train", args.steps * args.batch, classes, args.size)
    val = dataset("val", args.val, classes, args.size)
    trainer.fit(
        Plain(net), DataLoader(train, batch_size=args.batch, shuffle=True), DataLoader(val, batch_size=args.batch * 2)
    )
    run = Path(trainer.logger.log_dir)
    ea = EventAccumulator(str(run), size_guidance={"images": 0})
    ea.Reload()
    events_of = {tag: ea.Images(tag) for tag in ea.Tags()["images"]}
    sizes = [Image.open(io.BytesIO(e.encoded_image_string)).size for events in events_of.values() for e in events]
    last = max(e.step for events in events_of.values() for e in events)
    per_epoch = sum(
        len(e.encoded_image_string)
        for tag, events in events_of.items()
        for e in events  # not once per fit
        if e.step == last and tag.split("/")[0] not in ("evolution", "samples")
    )
    widest, tallest = max(w for w, _ in sizes), max(h for _, h in sizes)
    events = sum(p.stat().st_size for p in run.glob("events.out.tfevents.*"))
    steady = sum(
        cb.seconds[-1] / cb.every_n_epochs
        for cb in cbs
        if cb.seconds  # each one's latest drawing
        and cb.technique not in ("samples", "evolution")
    )
    last = sum(cb.seconds[-1] for cb in cbs if cb.seconds)
    if drawing.resolved == "background":  # the callbacks drew in the drawing process: what training paid instead
        waited = drawing.waited
        print(
            f"{model}, {classes} classes, background: training waited "
            + ", ".join(f"{k} {v:.2f} s" for k, v in waited.items())
            + "; the drawing process took (s per job) "
            + ", ".join(f"{v:.1f}" for v in drawing.seconds),
            flush=True,
        )
        steady = (waited["snapshot"] + waited["queue"]) / args.epochs  # per epoch, before the fit's last one
        last = waited["checkpoint"] + waited["end"]
    slowest = sorted(((sum(cb.seconds) / len(cb.seconds), cb.technique) for cb in cbs if cb.seconds), reverse=True)
    print(
        f"{model}, {classes} classes: seconds per drawing: " + ", ".join(f"{t} {v:.1f}" for v, t in slowest), flush=True
    )
    slowest = slowest[:3]
    return dict(
        model=model,
        classes=classes,
        size=args.size,
        steps20=20 * statistics.median(timer.seconds[1:] or timer.seconds),
        last=last,
        steady=steady,
        widest=widest,
        tallest=tallest,
        pictures=len(sizes),
        mb=events / args.epochs / 1e6,
        mb_draw=per_epoch / 1e6,
        slowest=", ".join(f"{t} {s:.1f}" for s, t in slowest),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--classes", nargs="+", type=int, default=[10, 100], help="multiples of 10 (hues x garments)")
    parser.add_argument("--size", type=int, default=32, help="image size in px")
    parser.add_argument(
        "--val", type=int, default=5000, help="validation images (of Fashion-MNIST's 10,000 test images)"
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="training steps per epoch")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--drawing", default="inline", choices=MODES[1:3], help="inline, or a background process")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            for classes in args.classes:
                rows.append(r := row(model, classes, args, tmp))
                print(r, flush=True)
    print(
        f"\n{args.accelerator}, {torch.get_num_threads()} threads, {args.val} validation images, {args.epochs} epochs "
        f"of {args.steps} steps at batch {args.batch}"
    )
    print(
        "| model | classes | px | 20 steps | callbacks, drawing epoch | callbacks per epoch (default schedule) | "
        "per epoch / 20 steps | largest picture | MB: drawing epoch / event file per epoch | slowest (s per drawing) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['classes']} | {r['size']} | {r['steps20']:.1f} s | {r['last']:.1f} s | "
            f"{r['steady']:.1f} s | {r['steady'] / r['steps20']:.2f} | {r['widest']} x {r['tallest']} | "
            f"{r['mb_draw']:.2f} / {r['mb']:.2f} | {r['slowest']} |"
        )


if __name__ == "__main__":
    main()
