"""The pictures of today's code against those saved from convscope 0.1.0 (``tests/golden``, made before the single
``Convscope`` owner): byte for byte, inline and in a background process; and a 0.1.0 checkpoint resumes."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from train import cli_main

GOLDEN = Path(__file__).parent / "golden" / "b695fd1"
sys.path.insert(0, str(GOLDEN.parent))

from make_golden import golden_args, pictures, unit_files  # noqa: E402

MADE_ON = "AVX512"  # torch.backends.cpu.get_cpu_capability() where the golden pictures were made


def hashes(run: Path) -> dict[str, str]:
    found = {
        f"{tag}@{step}": hashlib.sha256(png).hexdigest() for tag, s in pictures(run).items() for step, png in s.items()
    }
    found.update({f"units:{rel}": hashlib.sha256(data).hexdigest() for rel, data in unit_files(run).items()})
    return found


def fit(idx_dir, root: Path, *extra: str):
    args = golden_args(idx_dir, root)
    return cli_main([*args, *extra])


@pytest.fixture
def same_cpu():
    """The saved bytes come from float arithmetic, which another instruction set may round differently."""
    got = torch.backends.cpu.get_cpu_capability()
    if got != MADE_ON:
        pytest.skip(f"the golden pictures were made on a {MADE_ON} CPU; this one is {got}")


@pytest.mark.parametrize("drawing", ["inline", "background"])
def test_the_pictures_are_those_of_0_1_0_byte_for_byte(idx_dir, tmp_path, drawing, same_cpu):
    fit(idx_dir, tmp_path, "--drawing", drawing)
    got = hashes(tmp_path / "lightning_logs" / "version_0")
    want = json.loads((GOLDEN / "manifest.json").read_text())
    assert sorted(got) == sorted(want)  # every picture and unit file, no more
    changed = sorted(k for k in want if got[k] != want[k])
    assert not changed, f"{len(changed)} pictures differ from 0.1.0's: {changed[:8]}"
    png = next((GOLDEN / "png").glob("gradcam__*.png"))  # the saved PNG is the logged one
    tag, step = png.stem.replace("__", "/").split("@")
    assert hashlib.sha256(png.read_bytes()).hexdigest() == got[f"{tag}@{step}"]


def test_a_0_1_0_checkpoint_resumes_with_its_fixed_images_and_scales(idx_dir, tmp_path):
    old = torch.load(GOLDEN / "last.ckpt", map_location="cpu", weights_only=False)
    states = old["callbacks"]
    assert not any(k.startswith("Convscope") for k in states)  # one entry per 0.1.0 callback
    ckpt = tmp_path / "old.ckpt"
    shutil.copy(GOLDEN / "last.ckpt", ckpt)
    cli = fit(idx_dir, tmp_path / "out", "--ckpt_path", str(ckpt), "--trainer.max_epochs", "3")
    owner = next(cb for cb in cli.trainer.callbacks if type(cb).__name__ == "Convscope")
    techniques = {t.technique: t for t in owner.techniques}
    filters_state = next(v for k, v in states.items() if k.startswith("FiltersCallback"))
    assert filters_state["scales"] and techniques["filters"].scales == filters_state["scales"]  # kept, not re-chosen
    fm_state = next(v for k, v in states.items() if k.startswith("FeatureMapsCallback"))
    assert torch.equal(techniques["feature_maps"].probe_idx, fm_state["probe_idx"])
    evolution_state = next(v for k, v in states.items() if k.startswith("EvolutionCallback"))
    assert set(evolution_state["snapshots"]) <= set(techniques["evolution"].snapshots)  # the old epochs are stacked too
    run = tmp_path / "out" / "lightning_logs" / "version_0"
    steps = {step for s in pictures(run).values() for step in s}
    assert steps == {2}  # the resumed epoch only: 0.1.0 drew epochs 0 and 1
    assert cli.trainer.current_epoch == 3
