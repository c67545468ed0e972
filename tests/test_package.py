"""`pip install .` gives one package, `convscope`, with every callback and the methods; a method alone does not
import Lightning."""

import os
import subprocess
import sys

from tests.conftest import ROOT


def test_pip_install_gives_one_convscope_package_and_methods_without_lightning(tmp_path):
    site = tmp_path / "site"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    top = {p.name for p in site.iterdir() if not p.name.endswith(".dist-info") and p.name != "__pycache__"}
    assert top == {"convscope"}  # no generic top-level names (callbacks, lit_modules) in site-packages
    code = (
        "import sys\n"
        "from convscope import maximize_activation, class_mean_maps, deconvnet, capture_activations\n"
        "from convscope.methods.invariance import invariance_sweeps\n"
        "from convscope import grad_cam, receptive_field, sub_confusion\n"
        "assert not any(m.split('.')[0] in ('lightning', 'pytorch_lightning') for m in sys.modules), 'Lightning imported'\n"
        "import convscope\n"
        "from convscope import VISUALIZATIONS, FeatureMapsCallback\n"
        "assert VISUALIZATIONS['feature_maps'] is FeatureMapsCallback and len(VISUALIZATIONS) == 20\n"
        "assert convscope.__file__.startswith(sys.argv[1])\n"
        "from convscope import Drawing\n"
        "import convscope.watch\n"
        "assert Drawing('background').mode == 'background' and convscope.watch.__file__.startswith(sys.argv[1])\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    r = subprocess.run(
        [sys.executable, "-c", code, str(site)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
