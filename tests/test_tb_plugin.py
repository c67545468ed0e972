"""The unit browser's TensorBoard plugin: every route through TensorBoard's own WSGI app (werkzeug's test client)
against run folders in docs/browser.md's format, path traversal, broken files, the life line, and its imports."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend import application
from tensorboard.plugins import base_plugin
from werkzeug.test import Client

from callbacks.tb_plugin import ConvscopePlugin, life_line
from tests.conftest import ROOT
from tests.synthetic_units import CLASSES, K, class_means, pixel, stat, write_epoch, write_run
from tests.tb_server import get_json, tensorboard

PREFIX = "/data/plugin/convscope"


def make(logdir):
    plugin = ConvscopePlugin(base_plugin.TBContext(logdir=str(logdir)))
    plugin.scan()
    return plugin, Client(application.TensorBoardWSGI([plugin]))


def get(client, route, **args):
    r = client.get(PREFIX + route, query_string=args)
    return r.status_code, (json.loads(r.data) if r.mimetype == "application/json" else r.data)


@pytest.fixture
def logdir(tmp_path):
    root = tmp_path / "logs"
    write_run(root / "version_0", {"conv_1": 6, "relu_2": 300}, epochs=(0, 1, 2, 3), filters_layer="conv_1")
    write_run(root / "version_1", {"relu_2": 300}, epochs=(0, 1))
    (root / "version_2").mkdir()
    (root / "version_2" / "events.out.tfevents.1.x").write_bytes(b"")  # a run without convscope data
    return root


def test_runs_lists_layers_epochs_and_actmax_epochs(logdir):
    plugin, client = make(logdir)
    code, body = get(client, "/runs")
    assert code == 200
    runs = {r["run"]: {la["layer"]: la for la in r["layers"]} for r in body["runs"]}
    assert set(runs) == {"version_0", "version_1"} and body["without_data"] == ["version_2"]
    assert runs["version_0"]["relu_2"]["epochs"] == [0, 1, 2, 3]
    assert runs["version_0"]["relu_2"]["actmax_epochs"] == [0, 2]
    assert runs["version_0"]["relu_2"]["units"] == runs["version_0"]["relu_2"]["of"] == 300
    assert runs["version_0"]["conv_1"]["kind"] == "conv"
    assert runs["version_1"]["relu_2"]["epochs"] == [0, 1]
    assert plugin.is_active()


def test_grid_has_every_unit_with_the_stored_numbers(logdir):
    _, client = make(logdir)
    code, g = get(client, "/grid", run="version_0", layer="relu_2")
    assert code == 200 and g["epoch"] == 3 and g["epochs"] == [0, 1, 2, 3]  # latest epoch by default
    for key in ("selectivity", "preferred_class", "dead_fraction", "importance", "change", "mean"):
        assert g["stats"][key] == [stat(key, 3, u) for u in range(300)], key
    assert g["sprites"]["actmax"] is None  # epoch 3 has no actmax
    assert g["sprites"]["top"] == {"cell": 8, "cells": K, "chunks": 2, "units": 300, "scale": "each patch min..max"}
    code, g0 = get(client, "/grid", run="version_0", layer="relu_2", epoch="0")
    assert g0["stats"]["change"] is None and g0["sprites"]["actmax"]["cell"] == 12
    assert g0["meta"]["classes"] == CLASSES
    code, body = get(client, "/grid", run="version_0", layer="relu_2", epoch="7")
    assert code == 404 and "not drawn at epoch 7" in body["error"]


def test_unit_history_is_the_stored_numbers_across_epochs(logdir):
    _, client = make(logdir)
    code, d = get(client, "/unit", run="version_0", layer="relu_2", unit="257")
    assert code == 200 and [h["epoch"] for h in d["history"]] == [0, 1, 2, 3]
    for h in d["history"]:
        e = h["epoch"]
        assert h["selectivity"] == stat("selectivity", e, 257) and h["preferred_class"] == stat(
            "preferred_class", e, 257
        )
        assert np.allclose(h["class_means"], class_means(e, 300)[257], rtol=1e-6)
        assert [t["sample"] for t in h["top"]] == [(257 * K + j) % 100 for j in range(K)]
        assert (h["sprites"]["actmax"] is not None) == (e % 2 == 0)
    assert d["life"]["settled"] == 2 and d["life"]["preferred_class"] == stat("preferred_class", 3, 257)
    code, body = get(client, "/unit", run="version_0", layer="relu_2", unit="300")
    assert code == 404 and "300 units" in body["error"]
    code, body = get(client, "/unit", run="version_0", layer="relu_2", unit="x")
    assert code == 400 and "whole number" in body["error"]


def test_sprites_are_the_files_and_unit_rows_hold_that_units_pixels(logdir):
    _, client = make(logdir)
    path = logdir / "version_0" / "convscope_units" / "relu_2" / "epoch_0002" / "top_001.png"
    code, data = get(client, "/sprite", run="version_0", layer="relu_2", epoch="2", kind="top", chunk="1")
    assert code == 200 and data == path.read_bytes()
    a = np.asarray(Image.open(io.BytesIO(data)))
    assert a.shape == (44 * 8, K * 8)  # units 256..299
    for u in (256, 270, 299):
        for c in range(K):
            assert a[(u - 256) * 8 + 3, c * 8 + 3] == pixel(2, u, c)
    code, data = get(client, "/sprite", run="version_0", layer="conv_1", epoch="1", kind="filters", chunk="0")
    assert code == 200 and np.asarray(Image.open(io.BytesIO(data)))[5 * 4 + 2, 2] == pixel(1, 4, 0)
    code, body = get(client, "/sprite", run="version_0", layer="relu_2", epoch="3", kind="actmax", chunk="0")
    assert code == 404 and "not drawn then" in body["error"]


def test_static_frontend_is_served(logdir):
    _, client = make(logdir)
    r = client.get(PREFIX + "/index.js")
    assert r.status_code == 200 and r.mimetype == "text/javascript" and b"export async function render" in r.data
    assert client.get(PREFIX + "/static/..%2f..%2fplugin.py").status_code == 404


@pytest.mark.parametrize(
    "args",
    [
        {"run": "../version_0", "layer": "relu_2"},
        {"run": "version_0/..", "layer": "relu_2"},
        {"run": "/etc", "layer": "relu_2"},
        {"run": "version_0", "layer": ".."},
        {"run": "version_0", "layer": "../../version_1/convscope_units/relu_2"},
        {"run": "version_0", "layer": "/etc"},
    ],
)
def test_no_path_leaves_the_logdir(logdir, args):
    _, client = make(logdir)
    for route, extra in (("/grid", {}), ("/unit", {"unit": "0"}), ("/sprite", {"epoch": 0, "kind": "top", "chunk": 0})):
        code, body = get(client, route, **args, **extra)
        assert code in (400, 403, 404) and "error" in body, (route, args)


def test_bad_kind_and_chunk_are_refused(logdir):
    _, client = make(logdir)
    for kind, chunk in (("../meta", "0"), ("top", "-1"), ("top", "0/../../x"), ("stats.json", "0")):
        code, body = get(client, "/sprite", run="version_0", layer="relu_2", epoch="0", kind=kind, chunk=chunk)
        assert code in (400, 404) and "error" in body


def test_symlinks_leaving_the_logdir_are_refused(logdir, tmp_path):
    outside = tmp_path / "outside"
    write_run(outside / "secret", {"relu_2": 4}, epochs=(0,))
    units = logdir / "version_0" / "convscope_units"
    os.symlink(outside / "secret" / "convscope_units" / "relu_2", units / "leak")  # a layer pointing outside
    epoch = units / "conv_1" / "epoch_0000"
    (epoch / "actmax_000.png").unlink()
    os.symlink(
        outside / "secret" / "convscope_units" / "relu_2" / "epoch_0000" / "actmax_000.png", epoch / "actmax_000.png"
    )
    os.symlink(outside / "secret", logdir / "linked_run")  # a run folder pointing outside: never entered
    plugin, client = make(logdir)
    assert "linked_run" not in [r["run"] for r in get(client, "/runs")[1]["runs"]]
    assert get(client, "/grid", run="linked_run", layer="relu_2")[0] == 404
    code, body = get(client, "/grid", run="version_0", layer="leak")
    assert code == 403 and "outside the logdir" in body["error"]
    code, body = get(client, "/sprite", run="version_0", layer="conv_1", epoch="0", kind="actmax", chunk="0")
    assert code == 403 and "outside the logdir" in body["error"]


def test_broken_files_give_a_message_not_a_stack_trace(logdir):
    _, client = make(logdir)
    epoch = logdir / "version_0" / "convscope_units" / "relu_2" / "epoch_0001"
    stats = epoch / "stats.json"
    stats.write_bytes(stats.read_bytes()[:1000])  # truncated
    code, body = get(client, "/grid", run="version_0", layer="relu_2", epoch="1")
    assert code == 500 and "truncated" in body["error"] and "epoch_0001/stats.json" in body["error"]
    code, body = get(client, "/unit", run="version_0", layer="relu_2", unit="3")
    assert code == 500 and "truncated" in body["error"]
    png = epoch / "top_000.png"
    png.write_bytes(png.read_bytes()[:-40])
    code, body = get(client, "/sprite", run="version_0", layer="relu_2", epoch="1", kind="top", chunk="0")
    assert code == 500 and "truncated" in body["error"]
    means = logdir / "version_0" / "convscope_units" / "relu_2" / "epoch_0002" / "class_means.f32"
    means.write_bytes(means.read_bytes()[:-4])
    stats.unlink()  # epoch 1 no longer complete: ignored
    code, body = get(client, "/unit", run="version_0", layer="relu_2", unit="3")
    assert code == 500 and "class_means.f32" in body["error"] and "expected 300 units x 10 classes" in body["error"]
    code, body = get(client, "/runs")
    assert code == 200 and body["runs"][0]["layers"][1]["epochs"] == [0, 2, 3]


def test_half_written_epochs_are_ignored_and_new_epochs_show_on_reload(logdir):
    plugin, client = make(logdir)
    layer = logdir / "version_1" / "convscope_units" / "relu_2"
    (layer / ".tmp-epoch_0002-123").mkdir()
    (layer / ".tmp-epoch_0002-123" / "meta.json").write_text("{")
    (layer / "epoch_0005").mkdir()  # no meta.json / stats.json yet
    assert get(client, "/grid", run="version_1", layer="relu_2")[1]["epochs"] == [0, 1]
    write_epoch(logdir / "version_1", "relu_2", 2, 300, actmax=False, actmax_epochs=[0])
    assert get(client, "/grid", run="version_1", layer="relu_2")[1]["epoch"] == 2
    runs = {r["run"]: r for r in get(client, "/runs")[1]["runs"]}
    assert runs["version_1"]["layers"][0]["epochs"] == [0, 1, 2]
    write_run(logdir / "version_3", {"relu_2": 8}, epochs=(0,))  # a new run: found when asked for
    assert get(client, "/grid", run="version_3", layer="relu_2")[0] == 200


def test_is_active_answers_from_the_cache_without_scanning(tmp_path):
    plugin = ConvscopePlugin(base_plugin.TBContext(logdir=str(tmp_path)))
    deadline = time.monotonic() + 10
    while plugin._scanning and time.monotonic() < deadline:  # the background scan started by the constructor
        time.sleep(0.01)
    assert plugin.is_active() is False
    write_run(tmp_path / "version_0", {"relu_2": 4}, epochs=(0,))
    assert plugin.is_active() is False  # still the cached answer: is_active itself never walks the logdir
    plugin.scan()
    assert plugin.is_active() is True


def test_a_hundred_runs_are_all_listed(tmp_path):
    for i in range(100):
        write_epoch(tmp_path / f"version_{i}", "relu_2", 0, 2, actmax=False)
    _, client = make(tmp_path)
    code, body = get(client, "/runs")
    assert code == 200 and sorted(r["run"] for r in body["runs"]) == sorted(f"version_{i}" for i in range(100))


def test_logdir_spec_names_runs_as_tensorboard_does(logdir):
    spec = f"healthy:{logdir / 'version_0'},other:{logdir / 'version_1'}"
    plugin = ConvscopePlugin(base_plugin.TBContext(logdir="", flags=SimpleNamespace(logdir_spec=spec)))
    plugin.scan()
    client = Client(application.TensorBoardWSGI([plugin]))
    assert [r["run"] for r in get(client, "/runs")[1]["runs"]] == ["healthy", "other"]
    assert get(client, "/grid", run="other", layer="relu_2")[1]["epochs"] == [0, 1]


def test_an_empty_logdir_answers_with_no_runs(tmp_path):
    plugin, client = make(tmp_path)
    assert get(client, "/runs") == (200, {"runs": [], "without_data": [], "logdir": [str(tmp_path.resolve())]})
    assert not plugin.is_active()


def test_life_line_from_hand_made_histories():
    def h(*rows):
        return [dict(zip(("epoch", "preferred_class", "selectivity", "dead_fraction"), r, strict=True)) for r in rows]

    # preferred class wanders, then settles at epoch 4; selectivity dips at 3, selective for good from 4
    life = life_line(h((0, 1, 0.1, 0.0), (2, 4, 0.6, 0.0), (3, 2, 0.3, 0.0), (4, 4, 0.55, 0.0), (6, 4, 0.7, 0.0)))
    assert (life["settled"], life["selective"], life["died"], life["preferred_class"]) == (4, 4, None, 4)
    # unordered input; dies at 5 (0.99 counts as dead), was dead at 2 but came back: died at 5, not 2
    life = life_line(h((5, 3, 0.0, 0.99), (0, 3, 0.2, 0.0), (2, 3, 0.0, 1.0), (3, 3, 0.1, 0.5), (7, 3, 0.0, 1.0)))
    assert (life["settled"], life["selective"], life["died"]) == (0, None, 5)
    # never settles until the last drawing; unknown (None) values break a streak
    life = life_line(h((0, 1, 0.9, None), (1, 2, None, 0.0), (2, 3, 0.9, 0.0)))
    assert (life["settled"], life["selective"], life["died"], life["epochs"]) == (2, 2, None, 3)
    # thresholds are parameters
    life = life_line(h((0, 0, 0.3, 0.9), (1, 0, 0.35, 0.95)), selective=0.25, dead=0.9)
    assert (life["selective"], life["died"]) == (0, 0)
    assert life_line([])["settled"] is None and life_line([])["epochs"] == 0


def test_plugin_module_imports_only_the_standard_library_tensorboard_and_werkzeug():
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import callbacks.tb_plugin\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(' '.join(sorted(new - set(sys.stdlib_module_names))))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert set(r.stdout.split()) <= {"callbacks", "tensorboard", "werkzeug", "markupsafe"}, r.stdout


@pytest.mark.parametrize("load_fast", ["false", "true"])
def test_real_tensorboard_serves_the_plugin_in_both_load_fast_modes(logdir, load_fast):
    with tensorboard(logdir, f"--load_fast={load_fast}") as base:
        code, listing = get_json(base + "/data/plugins_listing")
        assert listing["convscope"]["enabled"] is True
        assert listing["convscope"]["loading_mechanism"]["module_path"] == PREFIX + "/index.js"
        code, runs = get_json(base + PREFIX + "/runs")
        assert code == 200 and [r["run"] for r in runs["runs"]] == ["version_0", "version_1"]
        code, body = get_json(base + PREFIX + "/grid?run=..%2Fversion_0&layer=relu_2")
        assert code == 404 and "error" in body


# --- against a real fit (LeNet-5 on Fashion-MNIST, 2 epochs, UnitsCallback writing the folders) -------------------
@pytest.fixture(scope="module")
def real_fit(tmp_path_factory):
    from tests.test_units import CHEAP, HAS_FASHION, fit

    if not HAS_FASHION:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    from callbacks.units import UnitsCallback

    root = tmp_path_factory.mktemp("real")
    units = UnitsCallback(actmax_every=2, **CHEAP)
    trainer, module, val = fit(root, [units])
    return root, trainer, module, val, units


def test_real_fit_routes_answer_the_files_and_the_methods_tensors(real_fit):
    import torch

    from callbacks.hooks import capture_activations
    from callbacks.methods.selectivity import class_means as method_class_means
    from callbacks.methods.top_activations import top_activations

    root, trainer, module, val, units = real_fit
    run = os.path.relpath(trainer.logger.log_dir, root)
    _, client = make(root)
    code, body = get(client, "/runs")
    assert code == 200 and [r["run"] for r in body["runs"]] == [run]
    layers = {la["layer"]: la for la in body["runs"][0]["layers"]}
    assert sorted(layers) == ["relu_1", "relu_2", "relu_3", "relu_4"]
    assert all(la["epochs"] == [0, 1] and la["actmax_epochs"] == [1] for la in layers.values())

    x, y = val.x[units.fixed_idx], torch.tensor(val.targets)[units.fixed_idx]
    folder = root / run / "convscope_units"
    for layer in ("relu_2", "relu_4"):
        files = folder / layer / "epoch_0001"
        code, g = get(client, "/grid", run=run, layer=layer, epoch="1")
        assert code == 200 and g["meta"] == json.loads((files / "meta.json").read_text())
        stats = json.loads((files / "stats.json").read_text())
        assert g["stats"] == {k: stats[k] for k in g["stats"]}
        n = g["meta"]["units"]
        top = top_activations(module.net, x, layer, list(range(n)), 9)  # the method, on the fit's net
        with torch.no_grad():
            a = capture_activations(module.net.eval(), x, [layer])[layer]
        means = method_class_means(a.flatten(2).mean(2) if a.dim() == 4 else a, y, 10)
        for u in (0, n // 2, n - 1):
            code, d = get(client, "/unit", run=run, layer=layer, unit=str(u))
            last = d["history"][-1]
            assert code == 200 and [h["epoch"] for h in d["history"]] == [0, 1]
            assert [t["sample"] for t in last["top"]] == top.indices[u].tolist()  # unit u's top-k is channel u's
            np.testing.assert_allclose([t["value"] for t in last["top"]], top.values[u].numpy(), rtol=1e-3, atol=1e-6)
            np.testing.assert_allclose(last["class_means"], means[:, u].numpy(), rtol=1e-4, atol=1e-6)
            classes = [h["preferred_class"] for h in d["history"]]
            assert d["life"]["settled"] == (0 if classes[0] == classes[1] else 1)
        for kind in ("top", "actmax"):
            code, data = get(client, "/sprite", run=run, layer=layer, epoch="1", kind=kind, chunk="0")
            assert code == 200 and data == (files / f"{kind}_000.png").read_bytes()
    code, data = get(client, "/sprite", run=run, layer="relu_1", epoch="0", kind="filters", chunk="0")
    assert code == 200 and data == (folder / "relu_1" / "epoch_0000" / "filters_000.png").read_bytes()
