"""Where Grad-CAM's evidence lands: the plain stretch (Captum's resize) vs each cell at its receptive field's centre.

    /work/main/.venv/bin/python benchmarks/gradcam_placement.py [--epochs 3] [--per-class 20] [--seed 0]

Trains LeNet-5 on Fashion-MNIST (Debian's files; Adam, lr 1e-3, batch 128, a plain torch loop), then draws relu_2's
Grad-CAM for the predicted class of ``--per-class`` test images of every class both ways
(``methods.gradcam.grad_cam`` without and with ``field``) and prints, for each, the share of the map's mass on the
garment (pixels above 0.1 of white), on the background left and right of the garment's middle column, and how far
(in pixels) the map's centre of mass is from the garment's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from callbacks.methods.gradcam import grad_cam  # noqa: E402
from callbacks.methods.top_activations import receptive_field  # noqa: E402
from lit_modules.datamodule import DATASETS, DEBIAN_FASHION_DIR, read_idx  # noqa: E402
from lit_modules.nets import LeNet5  # noqa: E402


def load(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(DEBIAN_FASHION_DIR / f"{prefix}-images-idx3-ubyte.gz").float().div(255)[:, None]
    y = read_idx(DEBIAN_FASHION_DIR / f"{prefix}-labels-idx1-ubyte.gz").long()
    return x, y


def shares(maps: torch.Tensor, pixels: torch.Tensor) -> dict[str, float]:
    """Mass on the garment, on the background left/right of its middle, and the centroid distance (px)."""
    obj = pixels[:, 0] > 0.1  # (N, H, W)
    cols = torch.arange(maps.shape[-1], dtype=torch.float32)
    mid = (obj.float().sum(1) * cols).sum(1) / obj.float().sum((1, 2))  # (N,) the garment's middle column
    left = cols[None, None, :] < mid[:, None, None]
    mass = maps.sum((1, 2))
    grid = torch.stack(torch.meshgrid(cols, cols, indexing="ij"))  # (2, H, W)
    cm_map = (maps[:, None] * grid).sum((2, 3)) / mass[:, None]
    cm_obj = (obj[:, None] * grid).sum((2, 3)) / obj.sum((1, 2))[:, None]
    return {
        "on garment": float(((maps * obj).sum((1, 2)) / mass).mean()),
        "bg left": float(((maps * (~obj & left)).sum((1, 2)) / mass).mean()),
        "bg right": float(((maps * (~obj & ~left)).sum((1, 2)) / mass).mean()),
        "centroid offset px": float((cm_map - cm_obj).norm(dim=1).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    spec = DATASETS["fashion_mnist"]
    norm = lambda x: (x - spec.mean) / spec.std  # noqa: E731
    xtr, ytr = load("train")
    net = LeNet5()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(args.epochs):
        for idx in torch.randperm(len(xtr)).split(128):
            opt.zero_grad()
            F.cross_entropy(net(norm(xtr[idx])), ytr[idx]).backward()
            opt.step()
    net.eval()
    xte, yte = load("test")
    pick = torch.cat([(yte == k).nonzero()[: args.per_class, 0] for k in range(10)])
    x, y = xte[pick], yte[pick]
    with torch.no_grad():
        pred = net(norm(x)).argmax(1)
    print(f"LeNet-5, {args.epochs} epochs; {len(x)} test images, accuracy {(pred == y).float().mean():.3f}")
    rf = receptive_field(net, "relu_2", (1, 28, 28))
    for name, field in (("stretch (Captum)", None), (f"at rf centres {rf}", rf)):
        maps = grad_cam(net, "relu_2", norm(x), pred, field=field)
        print(f"{name:>60}: " + ", ".join(f"{k} {v:.2f}" for k, v in shares(maps, x).items()))


if __name__ == "__main__":
    main()
