"""Train every config in configs/ with its default hyperparameters and report test accuracy.

    python benchmarks/accuracy.py --dataset fashion_mnist            # all four configs
    python benchmarks/accuracy.py --dataset fashion_mnist lenet5 mlp  # some of them

Each run goes through the real CLI (``train.py fit`` then ``train.py test`` on the last checkpoint) into
``--root`` (default ``lightning_logs/accuracy``), and prints one Markdown row per config.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from train import cli_main  # noqa: E402

CONFIGS = ("mlp", "simple_cnn", "lenet5", "deep_cnn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", default=list(CONFIGS), metavar="CONFIG")
    parser.add_argument("--dataset", default="fashion_mnist", choices=["mnist", "fashion_mnist", "kmnist"])
    parser.add_argument("--root", default=str(ROOT / "lightning_logs" / "accuracy"))
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more CLI arguments for fit")
    args = parser.parse_args()
    rows = []
    for name in args.configs or CONFIGS:
        config = str(ROOT / "configs" / f"{name}.yaml")
        common = ["--config", config, "--data.dataset", args.dataset, "--trainer.enable_progress_bar", "false"]
        root = ["--trainer.default_root_dir", str(Path(args.root) / name)]
        t0 = time.perf_counter()
        fit = cli_main(["fit", *common, *root, *args.extra])
        seconds = time.perf_counter() - t0
        ckpt = fit.trainer.checkpoint_callback.best_model_path
        epochs = fit.trainer.current_epoch
        test = cli_main(["test", *common, "--trainer.logger", "false", "--ckpt_path", ckpt])
        acc = float(test.trainer.callback_metrics["test/acc"])
        rows.append(f"| {name} | {args.dataset} | {epochs} | {acc:.4f} | {seconds:.0f} s | `{ckpt}` |")
        print(rows[-1], flush=True)
    print("\n| config | dataset | epochs | test acc | fit time | checkpoint |\n|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
