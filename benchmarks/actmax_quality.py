"""Do the actmax images show what their units detect? Measured on a LeNet-5 trained on real Fashion-MNIST.

    .venv/bin/python -m benchmarks.actmax_quality        # from the repository root; 2 epochs for each net

Trains LeNet-5 and, separately, a classifier of another architecture (SimpleCNN: the judge) with a plain torch loop
over the in-memory tensors, then, for the default settings of ``maximize_activation`` and the variants compared,
prints per default actmax layer (as ``ActMaxCallback.configure`` resolves them):

- diagonal dominance: the fraction of units whose own image drives them more than any other unit's image does;
- for the logit images: LeNet-5's own softmax probability of the target class (how many >= 0.9, the lowest),
  the judge's accuracy and mean probability of the target class on them, how many correlate best with their own
  class's mean training image (and the mean of those own-class correlations);
- seconds per set of layers (first picture, from noise), and the callback's cost per epoch at its defaults
  (warm-started optimization plus drawing).
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from callbacks.actmax import (
    ActMaxCallback,
    cross_activations,
    diagonal_dominance,
    maximize_activation,
    weight_correlation,
)
from callbacks.hooks import layer_shapes
from lit_modules.datamodule import MNISTDataModule
from lit_modules.nets import LeNet5, SimpleCNN


def train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> nn.Module:
    """Adam 1e-3, batch 128, a fixed shuffling per seed; returns the net in eval mode."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(128):
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((net(x).argmax(1) == y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default="data")
    args = parser.parse_args()

    dm = MNISTDataModule("fashion_mnist", data_dir=args.data_dir, download=False, on_device=False)
    dm.setup("fit")
    x, y = dm.split("train")
    xv, yv = dm.split("val")
    pixel_range = dm.pixel_range
    t = time.perf_counter()
    lenet = train(LeNet5(), x, y, args.epochs, args.seed)
    t_lenet = time.perf_counter() - t
    t = time.perf_counter()
    judge = train(SimpleCNN(), x, y, args.epochs, args.seed + 1)
    t_judge = time.perf_counter() - t
    print(f"Fashion-MNIST, {args.epochs} epochs, seed {args.seed}: LeNet-5 val acc {accuracy(lenet, xv, yv):.3f} "
          f"({t_lenet:.0f} s); judge SimpleCNN val acc {accuracy(judge, xv, yv):.3f} ({t_judge:.0f} s)", flush=True)

    cb = ActMaxCallback()
    cb.configure(lenet, layer_shapes(lenet))
    layers = cb.layer_units
    logits = cb.last_linear
    class_means = torch.stack([x[y == c].mean(0) for c in range(len(dm.classes))])
    train_mean = x.mean(0)
    variants = {
        "default": {},
        "objective=channel": dict(objective="channel"),
        "no zoom/rotation": dict(scale=0.0, rotate=0.0),
        "no transformations": dict(jitter=0, scale=0.0, rotate=0.0),
        "prior_mean=train mean": dict(prior_mean=train_mean),
        "steps=128": dict(steps=128),  # the default was 128 until this measurement showed 64 as good
        "steps=32": dict(steps=32),
    }
    head = (f"{'variant':24s} " + " ".join(f"{'dom ' + n:>11s}" for n in layers)
            + f" {'p>=.9':>6s} {'min p':>6s} {'judge acc':>9s} {'judge p':>8s} {'own mean':>8s} {'own r':>6s} {'s':>5s}")
    print("\n" + head + "\n" + "-" * len(head))
    target = torch.arange(len(layers[logits]))
    for name, kwargs in variants.items():
        objective = kwargs.get("objective", "neuron")
        row, seconds = [], 0.0
        for layer, units in layers.items():
            t = time.perf_counter()
            images = maximize_activation(lenet, layer, units, pixel_range=pixel_range, seed=args.seed, **kwargs)
            seconds += time.perf_counter() - t
            row.append(diagonal_dominance(cross_activations(lenet, layer, images, units, objective)))
            if layer == logits:
                with torch.no_grad():
                    p = lenet(images).softmax(1)[target, units]
                    q = judge(images).softmax(1)
                n = len(units)
                corr = torch.stack([weight_correlation(class_means[c].expand(n, *images.shape[1:]), images)
                                    for c in range(len(class_means))], 1)  # (image, class)
                own = corr[target, units]
                best = int((corr.argmax(1) == torch.tensor(units)).sum())
                judged = (int((q.argmax(1) == torch.tensor(units)).sum()), float(q[target, units].mean()))
                stats = (int((p >= 0.9).sum()), float(p.min()), judged, best, float(own.mean()), n)
        n90, pmin, (jacc, jp), best, own, n = stats
        print(f"{name:24s} " + " ".join(f"{d:11.2f}" for d in row)
              + f" {n90:>3d}/{n:<2d} {pmin:6.2f} {jacc:>6d}/{n:<2d} {jp:8.2f} {best:>5d}/{n:<2d} {own:6.2f} {seconds:5.2f}", flush=True)

    # The callback's own cost per epoch at its defaults: a first picture, then warm-started ones, drawing included.
    x_val_shape = tuple(xv.shape[1:])
    ctx = SimpleNamespace(step=0, classes=dm.classes, pixel_range=pixel_range)
    cost = []
    for epoch in range(4):
        ctx.step = epoch
        t = time.perf_counter()
        for layer, units in layers.items():
            imgs = cb.images(lenet, layer, pixel_range, x_val_shape).cpu()
            cb.picture(ctx, layer, units, imgs)
        cost.append(time.perf_counter() - t)
    print(f"\nActMaxCallback at its defaults ({len(layers)} layers, drawing included): first picture {cost[0]:.2f} s "
          f"({cb.steps} steps), later epochs {sum(cost[1:]) / len(cost[1:]):.2f} s ({cb.warm_steps} warm steps)")


if __name__ == "__main__":
    main()
