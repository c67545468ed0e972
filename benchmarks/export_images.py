"""Export pictures from a run's TensorBoard event file as PNG (used for README's docs/images/).

    python benchmarks/export_images.py lightning_logs/version_0 [--out docs/images] [--step -1] [TAG ...]

Reads the event file with TensorBoard's own reader; without TAGs, exports one picture per technique.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

DEFAULT_TAGS = [
    "filters/conv_1", "feature_maps/relu_1/9_Ankle-boot", "feature_maps/conv_2/9_Ankle-boot", "fc_activations/fc_2",
    "actmax/fc_3", "actmax/conv_2", "deconv/max_pool_2", "selectivity/relu_4",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("tags", nargs="*")
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--step", type=int, default=-1, help="epoch to export (-1: the last)")
    args = parser.parse_args()
    ea = EventAccumulator(args.run, size_guidance={"images": 0})
    ea.Reload()
    available = set(ea.Tags()["images"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for tag in args.tags or DEFAULT_TAGS:
        if tag not in available:
            print(f"skip {tag}: not in {args.run}")
            continue
        events = ea.Images(tag)
        event = events[-1] if args.step < 0 else next(e for e in events if e.step == args.step)
        path = out / (tag.replace("/", "__") + ".png")
        path.write_bytes(event.encoded_image_string)
        print(f"{path} (epoch {event.step})")


if __name__ == "__main__":
    main()
