"""Write the pictures and checkpoint that ``tests/test_golden.py`` compares against.

Made once, at commit b695fd1 (before the single ``Convscope`` owner), with ``python tests/golden/make_golden.py``:
a 2-epoch LeNet-5 fit on the tests' synthetic digits with every technique drawing at both epochs, inline. It keeps
every picture's SHA-256 and the unit browser's files', the last epoch's PNGs and the fit's ``last.ckpt`` (an
old-format checkpoint a fit must still resume from). Run again, it would overwrite them with what the code it runs
on draws, so only do that on purpose.

Changed on purpose since, by hand in ``manifest.json`` (every other entry is still 0.1.0's):
- the unit browser's ``stats.json`` of relu_1 and relu_2 (4 files): a top patch's ``box`` is clipped to the image
  (``methods.top_activations.rf_box``), as its caption shows; only box coordinates differ (d23d3c4).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import write_dataset  # noqa: E402


def golden_args(data_dir: Path, root: Path) -> list[str]:
    """The fit's command line (also what the test runs on today's code)."""
    keys = [
        "filters", "feature_maps", "fc_activations", "actmax", "deconv", "selectivity", "samples",
        "layer_responses", "decision", "top_activations", "importance", "activations", "confusion_matrix",
        "occlusion", "gradcam", "embedding", "invariance", "changes", "units",
    ]  # fmt: skip
    every = [a for key in keys for a in (f"--{key}.every_n_epochs", "1")]
    return [
        "fit", "--config", str(ROOT / "configs" / "lenet5.yaml"),
        "--data.data_dir", str(data_dir), "--data.val_size", "200", "--data.download", "false",
        "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "4",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root),
        "--actmax.steps", "16", "--drawing", "inline", *every,
    ]  # fmt: skip


def pictures(run: Path) -> dict[str, dict[int, bytes]]:
    """``{tag: {step: PNG}}`` of every picture the run's event files hold."""
    ea = EventAccumulator(str(run), size_guidance={"images": 0})
    ea.Reload()
    return {tag: {e.step: e.encoded_image_string for e in ea.Images(tag)} for tag in ea.Tags()["images"]}


def unit_files(run: Path) -> dict[str, bytes]:
    """``{path: bytes}`` of the unit browser's files (``<run>/convscope_units/``), paths relative to the run."""
    return {
        str(f.relative_to(run)): f.read_bytes() for f in sorted((run / "convscope_units").rglob("*")) if f.is_file()
    }


def main() -> None:
    from train import cli_main

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        data = write_dataset(Path(tmp) / "idx")
        cli_main(golden_args(data, Path(tmp) / "out"))
        run = Path(tmp) / "out" / "lightning_logs" / "version_0"
        found = pictures(run)
        out = HERE / "b695fd1"
        shutil.rmtree(out, ignore_errors=True)
        (out / "png").mkdir(parents=True)
        manifest = {}
        for tag, steps in sorted(found.items()):
            for step, png in sorted(steps.items()):
                manifest[f"{tag}@{step}"] = hashlib.sha256(png).hexdigest()
                if step == max(steps):
                    (out / "png" / (tag.replace("/", "__") + f"@{step}.png")).write_bytes(png)
        for rel, data in unit_files(run).items():
            manifest[f"units:{rel}"] = hashlib.sha256(data).hexdigest()
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        shutil.copy(run / "checkpoints" / "last.ckpt", out / "last.ckpt")
        print(f"{len(manifest)} pictures; cpu capability {torch.backends.cpu.get_cpu_capability()}")


if __name__ == "__main__":
    main()
