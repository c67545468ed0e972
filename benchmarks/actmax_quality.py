"""Do the actmax images show what their units detect? Measured on a LeNet-5 trained on real Fashion-MNIST.

    .venv/bin/python -m benchmarks.actmax_quality        # from the repository root; 2 epochs for each net

Trains LeNet-5 and, separately, a classifier of another architecture (SimpleCNN: the judge) with a plain torch loop
over the in-memory tensors, then, for each option set of ``maximize_activation`` compared (every one starts from
the same seeded noise, as every drawing of ``ActMaxCallback`` does), prints per default actmax layer (as
``ActMaxCallback.configure`` resolves them):

- diagonal dominance: the fraction of units whose own image drives them more than any other unit's image does;
- conv_1 filter cosine: the median over conv_1's units of the cosine between the unit's filter and its centre
  neuron's image over the receptive field, measured from the image the optimization is pulled to (mid-grey, or the
  mean image with ``prior_mean``): a linear unit's maximizer is its filter, so 1.0 is the right answer;
- for the logit images: LeNet-5's own softmax probability of the target class (how many >= 0.9), the judge's
  count of recognised images and mean probability of the target class, how many correlate best with their own
  class's mean training image (and the mean of those own-class correlations);
- seconds for all layers; and, last, ``ActMaxCallback``'s seconds per drawing (optimization and picture) at its
  defaults and at the old defaults (12 steps warm-started from the last epoch's images after the first drawing).

The mean image for ``prior_mean`` is what the callback uses: the mean of the first 100 validation images per class.
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from callbacks.actmax import PRIOR_PER_CLASS, ActMaxCallback
from callbacks.hooks import layer_shapes
from callbacks.methods.actmax import cross_activations, diagonal_dominance, maximize_activation, weight_correlation
from lit_modules.datamodule import MNISTDataModule
from lit_modules.nets import LeNet5, SimpleCNN

STRONG = dict(jitter=2, scale=0.2, rotate=20.0)  # stronger transformation robustness than the defaults


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


def filter_cosine(
    conv: nn.Conv2d, images: torch.Tensor, units: list[int], reference: torch.Tensor | float, out_hw: tuple[int, int]
) -> torch.Tensor:
    """``(len(units),)``: cosine between filter ``units[i]`` of a first conv layer and ``images[i] - reference``
    over the receptive field of its centre neuron (output position ``(H // 2, W // 2)``)."""
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    r0, c0 = (out_hw[0] // 2) * sh - ph, (out_hw[1] // 2) * sw - pw
    diff = (images - reference)[:, :, r0 : r0 + kh, c0 : c0 + kw]
    w = conv.weight.detach()[units]
    return F.cosine_similarity(w.flatten(1).double(), diff.flatten(1).double(), dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--variants", nargs="*", help="names of the option sets to run (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    dm = MNISTDataModule("fashion_mnist", data_dir=args.data_dir, download=False, on_device=False)
    dm.setup("fit")
    x, y = dm.split("train")
    xv, yv = dm.split("val")
    pixel_range = dm.pixel_range
    lo, hi = pixel_range
    t = time.perf_counter()
    lenet = train(LeNet5(), x, y, args.epochs, args.seed)
    t_lenet = time.perf_counter() - t
    t = time.perf_counter()
    judge = train(SimpleCNN(), x, y, args.epochs, args.seed + 1)
    t_judge = time.perf_counter() - t
    print(
        f"Fashion-MNIST, {args.epochs} epochs, seed {args.seed}: LeNet-5 val acc {accuracy(lenet, xv, yv):.3f} "
        f"({t_lenet:.0f} s); judge SimpleCNN val acc {accuracy(judge, xv, yv):.3f} ({t_judge:.0f} s)",
        flush=True,
    )

    shapes = layer_shapes(lenet)
    cb = ActMaxCallback()
    cb.configure(lenet, shapes)
    layers = cb.layer_units
    logits = cb.last_linear
    class_means = torch.stack([x[y == c].mean(0) for c in range(len(dm.classes))])
    prior = torch.cat([xv[yv == c][:PRIOR_PER_CLASS] for c in range(len(dm.classes))]).mean(0)  # as the callback
    nojit = dict(jitter=0)  # zoom and rotation about the centre, no shift: a shift smears a 5x5 filter's pattern
    variants = {
        "old default (64 steps)": dict(steps=64),
        "32 steps": dict(steps=32),
        "128 steps": dict(steps=128),
        "strong transforms": dict(steps=64, **STRONG),
        "no transformations": dict(steps=64, jitter=0, scale=0.0, rotate=0.0),
        "no jitter": dict(steps=64, **nojit),
        "prior_mean": dict(steps=64, prior_mean=prior),
        "prior, no jitter, 32": dict(steps=32, prior_mean=prior, **nojit),
        "prior, no jitter, 48": dict(steps=48, prior_mean=prior, **nojit),  # the callback's default
        "prior, no jitter, 128": dict(steps=128, prior_mean=prior, **nojit),
    }
    if args.variants:
        variants = {k: v for k, v in variants.items() if k in args.variants}
    head = (
        f"{'options':24s} "
        + " ".join(f"{'dom ' + n:>11s}" for n in layers)
        + f" {'conv_1 cos':>10s}"
        + f" {'p>=.9':>6s} {'judge':>6s} {'judge p':>8s} {'own mean':>8s} {'own r':>6s} {'s':>5s}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    target = torch.arange(len(layers[logits]))
    for name, kwargs in variants.items():
        row, seconds, cos = [], 0.0, float("nan")
        for layer, units in layers.items():
            t = time.perf_counter()
            images = maximize_activation(lenet, layer, units, pixel_range=pixel_range, seed=args.seed, **kwargs)
            seconds += time.perf_counter() - t
            row.append(diagonal_dominance(cross_activations(lenet, layer, images, units)))
            if layer == "conv_1":
                ref = kwargs["prior_mean"] if kwargs.get("prior_mean") is not None else (lo + hi) / 2
                cos = float(filter_cosine(lenet.conv_1, images, units, ref, shapes[layer][-2:]).median())
            if layer == logits:
                with torch.no_grad():
                    p = lenet(images).softmax(1)[target, units]
                    q = judge(images).softmax(1)
                n = len(units)
                corr = torch.stack(
                    [
                        weight_correlation(class_means[c].expand(n, *images.shape[1:]), images)
                        for c in range(len(class_means))
                    ],
                    1,
                )  # (image, class)
                own = corr[target, units]
                best = int((corr.argmax(1) == torch.tensor(units)).sum())
                judged = (int((q.argmax(1) == torch.tensor(units)).sum()), float(q[target, units].mean()))
                stats = (int((p >= 0.9).sum()), judged, best, float(own.mean()), n)
        n90, (jacc, jp), best, own, n = stats
        print(
            f"{name:24s} "
            + " ".join(f"{d:11.2f}" for d in row)
            + f" {cos:10.2f}"
            + f" {n90:>3d}/{n:<2d} {jacc:>3d}/{n:<2d} {jp:8.2f} {best:>5d}/{n:<2d} {own:6.2f} {seconds:5.2f}",
            flush=True,
        )

    # The callback's own seconds per drawing (optimization and picture), at its defaults and at the old ones.
    ctx = SimpleNamespace(step=0, classes=dm.classes, pixel_range=pixel_range)
    for label, kwargs in (
        ("defaults", {}),
        ("old defaults", dict(steps=64, warm_steps=12, prior_mean=False, jitter=1)),
    ):
        cbx = ActMaxCallback(**kwargs)
        cbx.configure(lenet, shapes)
        cbx.shapes = shapes
        cost = []
        for epoch in range(4):
            ctx.step = epoch
            t = time.perf_counter()
            for layer, units in cbx.layer_units.items():
                imgs = cbx.images(
                    lenet, layer, pixel_range, tuple(xv.shape[1:]), prior if cbx.prior_mean else None
                ).cpu()
                cbx.picture(ctx, layer, units, imgs)
            cost.append(time.perf_counter() - t)
        print(
            f"ActMaxCallback, {label} ({cbx.steps} steps, warm_steps {cbx.warm_steps}, prior_mean "
            f"{cbx.prior_mean}; {len(cbx.layer_units)} layers, picture included): seconds per drawing "
            + ", ".join(f"{c:.2f}" for c in cost),
            flush=True,
        )


if __name__ == "__main__":
    main()
