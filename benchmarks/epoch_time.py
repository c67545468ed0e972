"""One epoch (train + validation) of LeNet-5 on Fashion-MNIST: convscope vs the plain script vs a raw loop.

    python benchmarks/epoch_time.py                                   # CPU, batch 128, num_workers 0
    python benchmarks/epoch_time.py --accelerator gpu --num-workers 4 --batch-size 128 2048

All three run in this one process, on the same data, net and optimizer (Adam, lr 1e-3), one after another:

- ``convscope``: ``LitClassifier`` + ``MNISTDataModule`` (tensors in memory, on the device) under a Lightning Trainer.
- ``plain``: what a user would write: torchvision ``FashionMNIST`` with ``ToTensor`` + ``Normalize``, a seeded
  55k/5k ``random_split``, ``DataLoader(shuffle=True, num_workers=N)`` and a minimal LightningModule.
- ``raw``: a hand-written PyTorch loop over the same in-memory tensors, no Lightning (the floor).

Each is timed after a short warm-up; the Trainers log nothing, save nothing and show no progress bar, alike.
Prints seconds per epoch and the ratios ``convscope / plain`` and ``convscope / raw``.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lit_modules.classifier import LitClassifier  # noqa: E402
from lit_modules.datamodule import DATASETS, MNISTDataModule  # noqa: E402
from lit_modules.nets import LeNet5  # noqa: E402

SPEC = DATASETS["fashion_mnist"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _trainer(accelerator: str, **kw) -> pl.Trainer:
    return pl.Trainer(
        accelerator=accelerator,
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kw,
    )


def time_convscope(data_dir: str, batch_size: int, accelerator: str) -> float:
    pl.seed_everything(0, verbose=False)
    dm = MNISTDataModule("fashion_mnist", data_dir=data_dir, batch_size=batch_size, download=False)
    model = LitClassifier(LeNet5())
    trainer = _trainer(accelerator)
    t0 = time.perf_counter()
    trainer.fit(model, dm)
    _sync(trainer.strategy.root_device)
    return time.perf_counter() - t0


class PlainModule(pl.LightningModule):
    """The minimal LightningModule a user writes: same net, loss, optimizer and logged metrics."""

    def __init__(self) -> None:
        super().__init__()
        self.net = LeNet5()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def plain_root(tmp: Path) -> Path:
    """torchvision's FashionMNIST wants uncompressed files in <root>/FashionMNIST/raw (else it downloads)."""
    raw = tmp / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    dm = MNISTDataModule("fashion_mnist", download=False)
    for split in ("train", "test"):
        for path in dm.find_files(split):
            dest = raw / path.name.removesuffix(".gz")
            with gzip.open(path) if path.suffix == ".gz" else open(path, "rb") as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
    return tmp


def time_plain(root: Path, batch_size: int, num_workers: int, accelerator: str) -> float:
    from torch.utils.data import DataLoader, random_split
    from torchvision import datasets, transforms

    pl.seed_everything(0, verbose=False)
    t0 = time.perf_counter()
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((SPEC.mean,), (SPEC.std,))])
    full = datasets.FashionMNIST(str(root), train=True, download=False, transform=tf)
    train, val = random_split(full, [55000, 5000], generator=torch.Generator().manual_seed(42))
    kw = dict(num_workers=num_workers, persistent_workers=num_workers > 0, pin_memory=accelerator != "cpu")
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, **kw)
    val_loader = DataLoader(val, batch_size=batch_size, **kw)
    trainer = _trainer(accelerator)
    trainer.fit(PlainModule(), train_loader, val_loader)
    _sync(trainer.strategy.root_device)
    return time.perf_counter() - t0


def time_raw(data_dir: str, batch_size: int, device: torch.device) -> float:
    torch.manual_seed(0)
    dm = MNISTDataModule("fashion_mnist", data_dir=data_dir, download=False)
    dm.setup("fit")
    (xt, yt), (xv, yv) = [tuple(t.to(device) for t in dm.split(s)) for s in ("train", "val")]
    net = LeNet5().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    _sync(device)
    t0 = time.perf_counter()
    net.train()
    perm = torch.randperm(len(xt), device=device)
    for i in range(0, len(xt), batch_size):
        idx = perm[i : i + batch_size]
        loss = F.cross_entropy(net(xt[idx]), yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    correct = torch.zeros((), device=device)
    with torch.inference_mode():
        for i in range(0, len(xv), 1000):
            correct += (net(xv[i : i + 1000]).argmax(1) == yv[i : i + 1000]).sum()
    float(correct)  # one sync, as any loop that reports accuracy has
    _sync(device)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--batch-size", type=int, nargs="+", default=[128])
    parser.add_argument("--num-workers", type=int, default=0, help="for the plain script's DataLoader")
    parser.add_argument("--skip-plain", action="store_true", help="only convscope and the raw floor")
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    args = parser.parse_args()
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}, lightning {pl.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        root = plain_root(Path(tmp)) if not args.skip_plain else None
        # Warm-up: load the data once, build kernels, spawn nothing that is timed.
        time_raw(args.data_dir, args.batch_size[0], device)
        rows = []
        for bs in args.batch_size:
            ours = time_convscope(args.data_dir, bs, args.accelerator)
            raw = time_raw(args.data_dir, bs, device)
            plain = time_plain(root, bs, args.num_workers, args.accelerator) if root else float("nan")
            rows.append((bs, ours, plain, raw))
            print(f"batch {bs}: convscope {ours:.2f} s, plain {plain:.2f} s, raw {raw:.2f} s", flush=True)
    print(
        f"\n| device | batch | plain script (workers={args.num_workers}) | convscope | raw loop"
        " | convscope / plain | convscope / raw |"
    )
    print("|---|---|---|---|---|---|---|")
    for bs, ours, plain, raw in rows:
        print(
            f"| {name} | {bs} | {plain:.2f} s | {ours:.2f} s | {raw:.2f} s | {ours / plain:.2f}x | {ours / raw:.2f}x |"
        )


if __name__ == "__main__":
    main()
