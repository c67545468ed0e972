"""The package a stranger installs: `python -m build` makes an sdist and a wheel from the repository's files, and the
wheel, installed with `--no-deps --no-index` into a fresh venv outside the repository (which sees this venv's pinned
stack through a `.pth` file, so torch is not installed again), gives one package, `convscope`, that imports, runs
its watcher's command line and draws a picture in a real fit. The wheel holds the library only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest
import tomllib

import callbacks
from tests.conftest import ROOT

# What the wheel must not carry: the repository's tests, docs and pictures, benchmarks, demo and configs.
FORBIDDEN_PARTS = {"tests", "docs", "benchmarks", "lit_modules", "configs", "images"}
FORBIDDEN_SUFFIXES = (".png", ".jpg", ".ckpt", ".pt", ".md")


def _run(args: list[str], cwd: Path, timeout: int = 300, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert r.returncode == 0, f"{args} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _repo_files() -> list[str]:
    """The files a fresh clone would have (tracked, plus new files git does not ignore)."""
    r = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT)
    return [f for f in r.stdout.split("\0") if f and (ROOT / f).is_file()]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """The sdist and wheel built by `python -m build --no-isolation` from a copy of the repository's files (the
    build writes its egg-info beside the sources, so it runs in the copy, not in the checkout)."""
    tmp = tmp_path_factory.mktemp("package")
    src = tmp / "src"
    for f in _repo_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        (src / f).write_bytes((ROOT / f).read_bytes())
    dist = tmp / "dist"
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)], cwd=tmp)
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    return {"tmp": tmp, "src": src, "wheel": wheel, "sdist": sdist}


@pytest.fixture(scope="module")
def installed(built) -> dict:
    """A fresh venv outside the repository with the wheel installed, no dependencies, no index."""
    env_dir = built["tmp"] / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    purelib = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=env_dir
        ).stdout.strip()
    )
    # The pinned stack: this interpreter's site-packages, added after the venv's own (so the wheel's convscope
    # comes first) and with their own .pth files processed (site.addsitedir).
    stack = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (purelib / "pinned_stack.pth").write_text("".join(f"import site; site.addsitedir({p!r})\n" for p in stack))
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
         str(built["wheel"])],
        cwd=built["tmp"],
    )  # fmt: skip
    work = built["tmp"] / "work"  # a cwd with nothing importable in it
    work.mkdir()
    return {"python": python, "purelib": purelib, "work": work}


def test_wheel_holds_the_library_only(built):
    names = zipfile.ZipFile(built["wheel"]).namelist()
    version = _wheel_version(built["wheel"])
    top = {n.split("/")[0] for n in names}
    assert top == {"convscope", f"convscope-{version}.dist-info"}, top
    for n in names:
        parts = set(Path(n).parts)
        assert not parts & FORBIDDEN_PARTS and not n.endswith(FORBIDDEN_SUFFIXES), f"{n} should not be in the wheel"
    assert "convscope/py.typed" in names  # PEP 561: type checkers use the package's annotations
    assert f"convscope-{version}.dist-info/licenses/LICENSE" in names
    # Every package folder of the library is in the wheel (a package missing from pyproject's list would be
    # silently left out), with every module.
    src = built["src"] / "callbacks"
    for init in src.rglob("__init__.py"):
        package = init.parent.relative_to(src)
        for module in init.parent.glob("*.py"):
            assert str(Path("convscope") / package / module.name) in names, f"{module} is not in the wheel"
    static = src / "tb_plugin" / "static"
    for f in static.rglob("*") if static.is_dir() else []:
        if f.is_file():
            assert str(Path("convscope/tb_plugin/static") / f.relative_to(static)) in names


def test_metadata_says_license_readme_and_version(built):
    with zipfile.ZipFile(built["wheel"]) as z:
        meta = z.read(f"convscope-{_wheel_version(built['wheel'])}.dist-info/METADATA").decode()
    head, _, body = meta.partition("\n\n")
    fields = [line.split(": ", 1) for line in head.splitlines() if ": " in line]
    get = lambda key: [v for k, v in fields if k == key]  # noqa: E731
    assert get("License-Expression") == ["Apache-2.0"]
    assert get("Requires-Python") == [_pyproject()["project"]["requires-python"]]
    assert get("Description-Content-Type") == ["text/markdown"]
    assert body.strip() == (ROOT / "README.md").read_text().strip()  # the front page is the index's description
    urls = dict(v.split(", ", 1) for v in get("Project-URL"))
    assert {"Repository", "Documentation"} <= set(urls)
    assert "Typing :: Typed" in get("Classifier")
    # One version, written once: pyproject reads it from convscope.__version__ (or states the same one).
    project = _pyproject()["project"]
    if "version" in project.get("dynamic", []):
        attr = _pyproject()["tool"]["setuptools"]["dynamic"]["version"]["attr"]
        assert attr == "convscope.__version__"
    else:
        assert project["version"] == get("Version")[0]
    with tarfile.open(built["sdist"]) as t:
        sdist = {Path(n).relative_to(Path(n).parts[0]).as_posix() for n in t.getnames() if len(Path(n).parts) > 1}
    assert {"LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "callbacks/__init__.py"} <= sdist
    assert not any(n.split("/")[0] in FORBIDDEN_PARTS for n in sdist), sorted(sdist)
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {get('Version')[0]}" in changelog, "CHANGELOG.md has no section for this version"


def test_installed_wheel_imports_without_torch_and_runs_the_watcher(built, installed):
    code = (
        "import importlib.metadata as md, json, sys\n"
        "import convscope\n"
        "after_import = sorted(m for m in ('torch', 'lightning') if m in sys.modules)\n"
        "from convscope.methods.actmax import maximize_activation\n"
        "from convscope.methods.gradcam import grad_cam\n"
        "from convscope.methods.invariance import invariance_sweeps\n"
        "methods_import = sorted({m.split('.')[0] for m in sys.modules} & {'lightning', 'pytorch_lightning'})\n"
        "from convscope import TECHNIQUES, VISUALIZATIONS, Convscope, FeatureMaps, FeatureMapsCallback, Drawing\n"
        "eps = [(e.name, e.value, e.dist.name) for e in md.entry_points(group='tensorboard_plugins')]\n"
        "print(json.dumps({'version': convscope.__version__, 'meta': md.version('convscope'),\n"
        "    'file': convscope.__file__, 'after_import': after_import, 'methods_import': methods_import,\n"
        "    'n': len(TECHNIQUES), 'fm': VISUALIZATIONS['feature_maps'] is FeatureMapsCallback,\n"
        "    'technique': TECHNIQUES['feature_maps'] is FeatureMaps and issubclass(FeatureMapsCallback, FeatureMaps),\n"
        "    'owner': len(Convscope().techniques),\n"
        "    'drawing': Drawing('background').mode, 'eps': eps}))\n"
    )
    out = json.loads(_run([str(installed["python"]), "-c", code], cwd=installed["work"]).stdout)
    assert Path(out["file"]).is_relative_to(installed["purelib"]), out["file"]  # the wheel's, not the checkout's
    assert out["version"] == out["meta"] == _wheel_version(built["wheel"])
    assert out["after_import"] == []  # importing convscope imports neither torch nor Lightning
    assert out["methods_import"] == []  # the methods alone do not import Lightning
    assert out["n"] == out["owner"] == len(callbacks._CALLBACKS) and out["fm"] and out["technique"]
    assert out["drawing"] == "background"
    declared = _pyproject()["project"].get("entry-points", {}).get("tensorboard_plugins", {})
    ours = {(name, value) for name, value, dist in out["eps"] if dist == "convscope"}
    assert ours == set(declared.items())  # TensorBoard finds the plugin exactly as pyproject declares it
    if declared:
        load = "import importlib.metadata as md; [e.load() for e in md.entry_points(group='tensorboard_plugins')]"
        _run([str(installed["python"]), "-c", load], cwd=installed["work"])

    r = _run([str(installed["python"]), "-m", "convscope.watch", "--help"], cwd=installed["work"])
    assert r.stdout.startswith("usage: python -m convscope.watch") and "RUN" in r.stdout.upper()


FIT = """
import sys
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from lightning.pytorch import LightningModule, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from convscope import Convscope, Filters

class Tiny(LightningModule):
    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                   nn.Linear(4, 3))
    def forward(self, x):
        return self.model(x)
    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])
    def validation_step(self, batch, batch_idx):
        self.log("val/loss", nn.functional.cross_entropy(self(batch[0]), batch[1]))
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

seed_everything(0)
data = TensorDataset(torch.rand(48, 1, 12, 12), torch.arange(48) % 3)
trainer = Trainer(max_epochs=1, logger=TensorBoardLogger(sys.argv[1], name="run"), callbacks=[Convscope([Filters()])],
                  enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                  num_sanity_val_steps=0, accelerator="cpu", devices=1)
module = Tiny()
trainer.fit(module, DataLoader(data, batch_size=16), DataLoader(data, batch_size=16))
acc = EventAccumulator(trainer.log_dir, size_guidance={"images": 0})
acc.Reload()
tags = acc.Tags()["images"]
(tag,) = [t for t in tags if t.startswith("filters/")]
(image,) = acc.Images(tag)
print(tag, image.step, image.width, image.height, len(image.encoded_image_string))
"""


def test_installed_wheel_draws_a_picture_in_a_real_fit(installed):
    r = _run([str(installed["python"]), "-c", FIT, str(installed["work"] / "logs")], cwd=installed["work"])
    tag, step, width, height, size = r.stdout.strip().splitlines()[-1].split()
    assert tag in ("filters/model.0", "filters/0") and int(step) == 0  # the first conv of self.model, epoch 0
    assert int(width) > 50 and int(height) > 50 and int(size) > 1000  # a real PNG, read back from the event file


def _wheel_version(wheel: Path) -> str:
    return wheel.name.split("-")[1]
