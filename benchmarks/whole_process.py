"""Whole-process wall clock of a short LeNet-5 fit on Fashion-MNIST, each run as its own process, from start to exit.

    python -m benchmarks.whole_process [--epochs 2] [--repeats 1]      # from the repository root

Three processes per repeat, one after another, on the same machine:

- ``convscope``: ``python train.py fit --config configs/lenet5.yaml --data.dataset fashion_mnist`` with every
  callback at its defaults (a TensorBoard logger and checkpoints, as always);
- ``convscope, callbacks off``: the same with every callback disabled;
- ``plain script``: what a user would write with Lightning and torchvision (``benchmarks/epoch_time.py``'s
  ``PlainModule``: the same net, loss and optimizer; torchvision ``FashionMNIST`` with ``ToTensor`` + ``Normalize``,
  a seeded 55k/5k ``random_split``, ``DataLoader(shuffle=True)``, a default ``Trainer``: TensorBoard logger and
  checkpoints too). Its files are unpacked where torchvision looks for them before timing (a download, not timed).

Prints the median seconds of each and the ratios to the plain script.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.epoch_time import plain_root
from callbacks import VISUALIZATIONS

ROOT = Path(__file__).resolve().parents[1]

PLAIN = """
import sys
import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, random_split
from torchvision import datasets, transforms
sys.path.insert(0, {root!r})
from benchmarks.epoch_time import SPEC, PlainModule
pl.seed_everything(0, verbose=False)
tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((SPEC.mean,), (SPEC.std,))])
full = datasets.FashionMNIST({data!r}, train=True, download=False, transform=tf)
train, val = random_split(full, [55000, 5000], generator=torch.Generator().manual_seed(42))
trainer = pl.Trainer(max_epochs={epochs}, accelerator="cpu", devices=1, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir={out!r})
trainer.fit(PlainModule(), DataLoader(train, batch_size=128, shuffle=True), DataLoader(val, batch_size=128))
"""


def run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = plain_root(Path(tmp) / "data")
        fit = [
            sys.executable,
            "train.py",
            "fit",
            "--config",
            "configs/lenet5.yaml",
            "--data.dataset",
            "fashion_mnist",
            "--trainer.max_epochs",
            str(args.epochs),
            "--trainer.enable_progress_bar",
            "false",
        ]
        off = [a for key in VISUALIZATIONS for a in (f"--{key}.enabled", "false")]
        times: dict[str, list[float]] = {"plain script": [], "convscope": [], "convscope, callbacks off": []}
        for i in range(args.repeats):
            out = Path(tmp) / f"run{i}"
            script = PLAIN.format(root=str(ROOT), data=str(data), epochs=args.epochs, out=str(out / "plain"))
            times["plain script"].append(run([sys.executable, "-c", script]))
            times["convscope"].append(run([*fit, "--trainer.default_root_dir", str(out / "convscope")]))
            times["convscope, callbacks off"].append(run([*fit, *off, "--trainer.default_root_dir", str(out / "off")]))
            print(", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()), flush=True)
    plain = statistics.median(times["plain script"])
    print(
        f"\nLeNet-5, Fashion-MNIST, {args.epochs} epochs, CPU, median of {args.repeats}: whole process, start to exit"
    )
    print("| | seconds | / plain script |\n|---|---|---|")
    for name, values in times.items():
        t = statistics.median(values)
        print(f"| {name} | {t:.1f} s | {t / plain:.2f}x |")


if __name__ == "__main__":
    main()
