"""The manual's pictures (docs/images/) from real runs, so they can be regenerated after any change.

    python benchmarks/export_images.py [RUN] [TAG ...] [--out docs/images] [--step -1] [--screenshot] [--extra]
    make pictures          # the newest run under lightning_logs/ (make demo makes one), the screenshots, the extras

RUN defaults to the newest ``lightning_logs/version_*``. Pictures are read from its event file with TensorBoard's
own reader; without TAGs, one picture per visualization and analysis is exported, plus the run's evolution PNGs.
``--screenshot`` also serves the run with TensorBoard on 127.0.0.1 (a free port) and photographs its Images and
Time Series dashboards at 1440x900 with headless Chromium (Debian's ``chromium``), as a user would see them; where
the run has unit-browser data (``convscope_units/``), also the convscope tab's layer view (its largest layer, sorted
by selectivity) and unit view (the most selective live unit of its second layer that has an actmax image), as
``browser_layer.png`` and ``browser_unit.png`` (Playwright driving the same Chromium).
``--extra`` also trains the runs of EXTRA_RUNS (a broken run, a ResNet-18) and exports their pictures, named with
their prefix. ``pictures()`` is every file name this writes: tests/test_docs.py checks the manual shows no other.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

DEFAULT_TAGS = [
    "filters/conv_1",
    "feature_maps/conv_1",
    "feature_maps/conv_2",
    "feature_maps/relu_1/class_mean",
    "feature_maps/conv_2/class_mean",
    "fc_activations/fc_2",
    "actmax/conv_1",
    "actmax/conv_2",
    "actmax/fc_3",
    "deconv",
    "selectivity",
    "samples/train",
    "layer_responses",
    "decision",
    "top_activations/relu_2",
    "importance/relu_3",
    "confusion_matrix",
    "occlusion",
    "gradcam/relu_2",
    "invariance/translate",
    "invariance/rotate",
    "invariance/scale",
    "changes/relu_4",
]
EVOLUTION = ["filters/conv_1", "feature_maps/conv_1", "confusion_matrix", "actmax/fc_3"]
SCREENSHOTS = {"tensorboard_images.png": "#images", "tensorboard_timeseries.png": "#timeseries"}
BROWSER_SHOTS = ("browser_layer.png", "browser_unit.png")  # the convscope tab, where the run has unit data
# Pictures of runs of their own, shown beside the demo run's: file prefix -> (train.py fit arguments, tags); the
# runs in BROWSED_RUNS also get the convscope tab's screenshots (``<prefix>__browser_layer.png`` ...).
EXTRA_RUNS = {
    # docs/reading-the-pictures.md: a too-high learning rate (Adam at 50 times the config's 0.001)
    "broken": (
        ["--config", "configs/lenet5.yaml", "--data.dataset", "fashion_mnist", "--trainer.max_epochs", "3"]
        + ["--model.optimizer.init_args.lr", "0.05"],
        ["confusion_matrix", "layer_responses"],
    ),
    # docs/your-own-model.md: ResNet-18 on the colour stand-in after 40 training steps
    "resnet18": (
        ["--config", "configs/resnet18_cifar10.yaml", "--data.dataset", "fashion_mnist_rgb", "--data.val_size", "1000"]
        + [
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "40",
            "--feature_maps.mean_layers",
            "[layer1]",
        ],
        ["feature_maps/layer1/class_mean"],
    ),
    # docs/browser.md: the unit browser on a ResNet-18 at 100 classes (hue x garment), after 2 short epochs
    "resnet18_100": (
        ["--config", "configs/resnet18_cifar10.yaml", "--data.dataset", "fashion_mnist_100", "--model.num_classes"]
        + ["100", "--model.net.init_args.num_classes", "100", "--data.val_size", "1000", "--data.batch_size", "64"]
        + ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "30"],
        [],
    ),
}
BROWSED_RUNS = ("resnet18_100",)


def image_name(tag: str, prefix: str = "") -> str:
    """The file a picture's tag is exported to (``feature_maps/conv_1`` -> ``feature_maps__conv_1.png``)."""
    return (f"{prefix}__" if prefix else "") + tag.replace("/", "__") + ".png"


def pictures() -> set[str]:
    """Every file name ``make pictures`` (no TAGs, ``--screenshot --extra``) writes into the output folder."""
    names = {image_name(tag) for tag in DEFAULT_TAGS} | {image_name(key, "evolution") for key in EVOLUTION}
    names |= {image_name(tag, prefix) for prefix, (_, tags) in EXTRA_RUNS.items() for tag in tags}
    names |= {f"{prefix}__{shot}" for prefix in BROWSED_RUNS for shot in BROWSER_SHOTS}
    return names | set(SCREENSHOTS) | set(BROWSER_SHOTS)


def newest_run(root: Path = Path("lightning_logs")) -> Path:
    runs = sorted(root.glob("version_*"), key=lambda p: p.stat().st_mtime)
    if not runs:
        sys.exit(f"no run under {root}/: train one first (make demo)")
    return runs[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def screenshot(run: Path, out: Path, dashboards: bool = True, prefix: str = "") -> list[Path]:
    """Photograph TensorBoard's Images and Time Series dashboards at 1440x900, as a user first sees them, and the
    convscope tab where the run has unit data (``dashboards=False``: the tab only; ``prefix``: of its files)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("--screenshot needs Chromium: apt-get install chromium")
    port = free_port()
    tb = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir_spec",
            f"{run.name}:{run}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--samples_per_plugin",
            "images=200",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(240):  # until it serves the run's image tags
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/images/tags", timeout=2) as r:
                    if run.name.encode() in r.read():
                        break
                if (run / "convscope_units").is_dir():  # a run with unit data only: the plugin lists it
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/convscope/runs", timeout=2) as r:
                        if run.name.encode() in r.read():
                            break
            except OSError:
                pass
            time.sleep(0.5)
        shots = []
        for name, fragment in SCREENSHOTS.items() if dashboards else ():
            path = out / name
            url = f"http://127.0.0.1:{port}/?darkMode=false{fragment}"
            subprocess.run(
                [
                    chromium,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--hide-scrollbars",
                    "--window-size=1440,900",
                    "--virtual-time-budget=25000",
                    f"--screenshot={path.resolve()}",
                    url,
                ],
                check=True,
                capture_output=True,
                timeout=180,
            )
            shots.append(path)
        if (run / "convscope_units").is_dir():
            shots += browser_screenshots(f"http://127.0.0.1:{port}", run.name, out, chromium, prefix)
        return shots
    finally:
        tb.terminate()
        tb.wait(timeout=30)


def _get(url: str):
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.load(r)


def browser_screenshots(base: str, run_name: str, out: Path, chromium: str, prefix: str = "") -> list[Path]:
    """The convscope tab (the unit browser) inside TensorBoard at 1440x900: its layer view and its unit view."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("skip browser_*.png: playwright is not installed (pip install -r requirements.txt)")
        return []
    try:
        runs = _get(f"{base}/data/plugin/convscope/runs")["runs"]
    except OSError as e:
        print(f"skip browser_*.png: TensorBoard has no convscope plugin ({e}); pip install -e . first")
        return []
    run = next((r for r in runs if r["run"] == run_name and r["layers"]), None)
    if run is None:
        print(f"skip browser_*.png: no unit data for {run_name}")
        return []
    layers = run["layers"]
    big = max(layers, key=lambda la: la["units"] or 0)
    small = layers[1] if len(layers) > 1 else layers[0]
    epoch = small["actmax_epochs"][-1] if small["actmax_epochs"] else small["epochs"][-1]
    q = urllib.parse.urlencode({"run": run_name, "layer": small["layer"], "epoch": epoch})
    grid = _get(f"{base}/data/plugin/convscope/grid?{q}")
    stats, held = grid["stats"], (grid["sprites"]["actmax"] or {}).get("units", grid["meta"]["units"])
    alive = [u for u in range(held) if (stats["dead_fraction"][u] or 0) < 0.5] or list(range(held))
    unit = max(alive, key=lambda u: stats["selectivity"][u] or 0)
    views = {
        BROWSER_SHOTS[0]: {"run": run_name, "layer": big["layer"], "sort": "selectivity"},
        BROWSER_SHOTS[1]: {"run": run_name, "layer": small["layer"], "view": "unit", "unit": unit, "epoch": epoch},
    }
    shots = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(f"{base}/?darkMode=false#convscope", timeout=120_000)
            page.wait_for_selector("iframe", timeout=120_000)
            for name, view in views.items():
                frame = None
                for _ in range(240):
                    frame = next((f for f in page.frames if "plugin_entry.html" in f.url), None)
                    if frame is not None:
                        break
                    page.wait_for_timeout(250)
                frame.evaluate("h => { location.hash = h; }", urllib.parse.urlencode(view))
                frame.wait_for_selector("#grid .cell" if "view" not in view else "#p-top .img", timeout=60_000)
                page.wait_for_load_state("networkidle")
                page.wait_for_timeout(1000)
                path = out / (f"{prefix}__{name}" if prefix else name)
                page.screenshot(path=str(path))
                shots.append(path)
        finally:
            browser.close()
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?")
    parser.add_argument("tags", nargs="*")
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--step", type=int, default=-1, help="epoch to export (-1: the last)")
    parser.add_argument("--screenshot", action="store_true", help="also photograph TensorBoard's Images dashboard")
    parser.add_argument("--extra", action="store_true", help="also train EXTRA_RUNS and export their pictures")
    args = parser.parse_args()
    run = Path(args.run) if args.run else newest_run()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    export(run, args.tags or DEFAULT_TAGS, out, args.step)
    if not args.tags:
        for key in EVOLUTION:
            src = run / "evolution" / f"{key}.png"
            if src.is_file():
                dst = out / image_name(key, "evolution")
                shutil.copyfile(src, dst)
                print(dst)
    if args.screenshot:
        for path in screenshot(run, out):
            print(path)
    if args.extra:
        for prefix, (fit_args, tags) in EXTRA_RUNS.items():
            root = Path("lightning_logs") / "pictures" / prefix
            cmd = [sys.executable, "train.py", "fit", *fit_args, "--trainer.default_root_dir", str(root)]
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
            export(newest_run(root / "lightning_logs"), tags, out, -1, prefix)
            if prefix in BROWSED_RUNS:
                for path in screenshot(newest_run(root / "lightning_logs"), out, dashboards=False, prefix=prefix):
                    print(path)


def export(run: Path, tags: list[str], out: Path, step: int, prefix: str = "") -> None:
    """Write each tag's picture at ``step`` (-1: the last) from the run's event file into ``out``."""
    ea = EventAccumulator(str(run), size_guidance={"images": 0})
    ea.Reload()
    available = set(ea.Tags()["images"])
    for tag in tags:
        if tag not in available:
            print(f"skip {tag}: not in {run}")
            continue
        events = ea.Images(tag)
        event = events[-1] if step < 0 else next(e for e in events if e.step == step)
        path = out / image_name(tag, prefix)
        path.write_bytes(event.encoded_image_string)
        print(f"{path} (epoch {event.step})")


if __name__ == "__main__":
    main()
