"""The README's pictures (docs/images/) from a real run, so they can be regenerated after any change.

    python benchmarks/export_images.py [RUN] [TAG ...] [--out docs/images] [--step -1] [--screenshot]
    make pictures          # the newest run under lightning_logs/ (make demo makes one), with the screenshot

RUN defaults to the newest ``lightning_logs/version_*``. Pictures are read from its event file with TensorBoard's
own reader; without TAGs, one picture per visualization and analysis is exported, plus the run's evolution PNGs.
``--screenshot`` also serves the run with TensorBoard on 127.0.0.1 (a free port) and photographs its Images
dashboard with headless Chromium (Debian's ``chromium``), as a user would see it.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

DEFAULT_TAGS = [
    "filters/conv_1", "feature_maps/relu_1/9_Ankle-boot", "feature_maps/conv_2/9_Ankle-boot", "fc_activations/fc_2",
    "actmax/fc_3", "actmax/conv_2", "deconv/max_pool_2", "selectivity/relu_4",
    "samples/train", "layer_responses", "decision/9_Ankle-boot", "top_activations/relu_2", "importance/relu_3",
    "confusion_matrix", "occlusion/9_Ankle-boot", "occlusion/1_Trouser",
]
EVOLUTION = ["filters/conv_1", "feature_maps/relu_1", "confusion_matrix", "selectivity/relu_3"]


def newest_run(root: Path = Path("lightning_logs")) -> Path:
    runs = sorted(root.glob("version_*"), key=lambda p: p.stat().st_mtime)
    if not runs:
        sys.exit(f"no run under {root}/: train one first (make demo)")
    return runs[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def screenshot(run: Path, out: Path, tag_filter: str = "^(filters|decision/9|deconv/max_pool_2)") -> Path:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("--screenshot needs Chromium: apt-get install chromium")
    port = free_port()
    tb = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(run.parent), "--host", "127.0.0.1",
                           "--port", str(port), "--samples_per_plugin", "images=200"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(240):  # until it serves the run's image tags
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/images/tags", timeout=2) as r:
                    if run.name.encode() in r.read():
                        break
            except OSError:
                pass
            time.sleep(0.5)
        path = out / "tensorboard_images.png"
        url = f"http://127.0.0.1:{port}/?darkMode=false#images&tagFilter={urllib.request.quote(tag_filter)}"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=1400,1000", "--virtual-time-budget=20000", f"--screenshot={path.resolve()}", url],
                       check=True, capture_output=True, timeout=180)
        return path
    finally:
        tb.terminate()
        tb.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?")
    parser.add_argument("tags", nargs="*")
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--step", type=int, default=-1, help="epoch to export (-1: the last)")
    parser.add_argument("--screenshot", action="store_true", help="also photograph TensorBoard's Images dashboard")
    args = parser.parse_args()
    run = Path(args.run) if args.run else newest_run()
    ea = EventAccumulator(str(run), size_guidance={"images": 0})
    ea.Reload()
    available = set(ea.Tags()["images"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for tag in args.tags or DEFAULT_TAGS:
        if tag not in available:
            print(f"skip {tag}: not in {run}")
            continue
        events = ea.Images(tag)
        event = events[-1] if args.step < 0 else next(e for e in events if e.step == args.step)
        path = out / (tag.replace("/", "__") + ".png")
        path.write_bytes(event.encoded_image_string)
        print(f"{path} (epoch {event.step})")
    if not args.tags:
        for key in EVOLUTION:
            src = run / "evolution" / f"{key}.png"
            if src.is_file():
                dst = out / ("evolution__" + key.replace("/", "__") + ".png")
                shutil.copyfile(src, dst)
                print(dst)
    if args.screenshot:
        print(screenshot(run, out))


if __name__ == "__main__":
    main()
