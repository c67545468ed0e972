"""Peak host memory of each technique's drawing at its defaults on a large net: ResNet-50 at 224 px, 1,000 classes.

    python benchmarks/memory.py                                  # every technique, ResNet-50, 224 px, 1,000 images
    python benchmarks/memory.py --model resnet18 --size 64 --images 200 --only filters gradcam

Each technique in a process of its own (memory one drawing freed would otherwise hide the next one's): a ``Scope``
(what techniques share) over ``--images`` synthetic validation images (one class each, round robin), the technique
configured at its defaults, then one drawing (``Scope.draw``, as the owner draws at a validation end), and the
process's peak resident memory above what it held before that drawing (Linux's VmHWM, reset first). The validation
images themselves are held before, and so not counted. Activation maximization's steps (the actmax technique's and
the unit browser's) are cut to ``--actmax-steps`` (its memory does not grow with them).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torchvision  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402

from benchmarks.resources import peak_above  # noqa: E402
from callbacks import TECHNIQUES  # noqa: E402
from callbacks.data import DataFacts  # noqa: E402
from callbacks.scope import Scope  # noqa: E402
from callbacks.technique import once_called_shapes  # noqa: E402

SKIPPED = {"samples", "evolution"}  # training images at fit start; the stacked snapshots at fit end (PNG bytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--actmax-steps", type=int, default=4)
    parser.add_argument("--only", nargs="*", default=None, help="technique keys (default: every one)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.child:
        return drive(args)

    torch.manual_seed(0)
    net = getattr(torchvision.models, args.model)(num_classes=args.classes).eval()
    x = torch.rand(args.images, 3, args.size, args.size)
    y = torch.arange(args.images) % args.classes
    facts = DataFacts(tuple(f"c{i}" for i in range(args.classes)), (3, args.size, args.size), (0.0, 1.0), (x, y))
    shapes = once_called_shapes(net, facts.input_shape)
    keys = [k for k in TECHNIQUES if k not in SKIPPED and (args.only is None or k in args.only)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in keys:
            steps = {"steps": args.actmax_steps} if key in ("actmax", "units") else {}  # (units: its actmax)
            technique = TECHNIQUES[key](strict=True, **steps)
            technique.enabled = True
            technique.configure_for(net, facts.input_shape, shapes)
            if technique.off_reason:
                print(f"{key:18} {'off: ' + technique.off_reason[:60]}")
                continue
            writer = SummaryWriter(f"{tmp}/{key}")
            scope = Scope(facts, writer)
            scope.techniques = [technique]
            t0 = time.perf_counter()
            mb = peak_above(lambda scope=scope, technique=technique: scope.draw(technique, net, 0, run_dir=tmp))
            seconds = time.perf_counter() - t0
            writer.close()
            rows.append((key, mb))
            print(f"{key:18} {mb:16.0f} {seconds:8.1f}", flush=True)


def drive(args: argparse.Namespace) -> None:
    """Run each technique in a child process of this script and print the table."""
    keys = [k for k in TECHNIQUES if k not in SKIPPED and (args.only is None or k in args.only)]
    print(f"{args.model}, {args.size} px, {args.classes} classes, {args.images} validation images")
    print(f"{'technique':18} {'peak above (MB)':>16} {'seconds':>8}", flush=True)
    common = ["--model", args.model, "--size", str(args.size), "--classes", str(args.classes)]
    common += ["--images", str(args.images), "--actmax-steps", str(args.actmax_steps)]
    worst = (None, 0.0)
    for key in keys:
        r = subprocess.run(
            [sys.executable, __file__, "--child", "--only", key, *common], capture_output=True, text=True, check=False
        )
        line = (r.stdout.strip().splitlines() or [f"{key:18} failed: {r.stderr.strip()[-200:]}"])[-1]
        print(line, flush=True)
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit() and float(parts[1]) > worst[1]:
            worst = (key, float(parts[1]))
    print(f"\nlargest: {worst[0]}, {worst[1]:.0f} MB above the process's memory before its drawing")


if __name__ == "__main__":
    main()
