"""``make demo``: pick the data that can be had here, then train LeNet-5 for a few epochs.

MNIST when its files are in ``data/`` or can be downloaded; otherwise Fashion-MNIST from Debian's
``dataset-fashion-mnist`` (installed with apt-get when running as root and it is missing).

    python -m lit_modules.demo [--epochs 3] [extra train.py fit arguments...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from lit_modules.datamodule import DATASETS, DEBIAN_FASHION_DIR, DataNotFoundError, MNISTDataModule

ROOT = Path(__file__).resolve().parents[1]


def _has_files(dataset: str, data_dir: str, download: bool = False) -> bool:
    dm = MNISTDataModule(dataset, data_dir=data_dir, download=download)
    if download:
        try:
            dm.prepare_data()
        except DataNotFoundError:
            return False
    return all(dm.find_files(s) for s in ("train", "test"))


def choose_dataset(data_dir: str = "data", try_download: bool = True, try_apt: bool = True) -> tuple[str, str]:
    """Return ``(dataset, why)`` for the best data available here, installing Fashion-MNIST if it must."""
    if _has_files("mnist", data_dir):
        return "mnist", f"MNIST found in {data_dir}/"
    if try_download:
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(15)
        try:
            if _has_files("mnist", data_dir, download=True):
                return "mnist", f"MNIST downloaded into {data_dir}/MNIST/raw/"
        finally:
            socket.setdefaulttimeout(old)
    if _has_files("fashion_mnist", data_dir):
        return "fashion_mnist", "MNIST is not available offline; using Fashion-MNIST (same format, 10 clothing classes)"
    if try_apt and shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        print("Installing Debian's dataset-fashion-mnist ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], env=env, check=False)
        if not _has_files("fashion_mnist", data_dir):
            subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
            subprocess.run(["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], env=env, check=False)
        if _has_files("fashion_mnist", data_dir):
            return "fashion_mnist", f"MNIST is not available offline; installed Fashion-MNIST in {DEBIAN_FASHION_DIR}"
    raise SystemExit(
        "No data for the demo: MNIST is not in data/ and cannot be downloaded, and Fashion-MNIST is not in "
        f"{DEBIAN_FASHION_DIR}.\nRemedies: put the MNIST IDX files in data/, or run "
        "`sudo apt-get install dataset-fashion-mnist`, then `make demo` again."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--config", default=str(ROOT / "configs" / "lenet5.yaml"))
    parser.add_argument("--data-dir", default="data")
    args, extra = parser.parse_known_args(argv)
    dataset, why = choose_dataset(args.data_dir)
    print(f"convscope demo: training LeNet-5 on {dataset} ({why}) for {args.epochs} epochs.", flush=True)
    print(f"Classes: {', '.join(DATASETS[dataset].classes)}", flush=True)
    from train import cli_main

    cli_main(
        [
            "fit",
            "--config",
            args.config,
            "--data.dataset",
            dataset,
            "--data.data_dir",
            args.data_dir,
            "--trainer.max_epochs",
            str(args.epochs),
            *extra,
        ]
    )


if __name__ == "__main__":
    main(sys.argv[1:])
