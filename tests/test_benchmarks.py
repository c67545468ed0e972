"""The benchmark scripts run, at a tiny size on the CPU, so that they cannot rot: ``benchmarks/gpu.py``'s and
``benchmarks/callback_cost.py``'s tables have their structure and their numbers agree with one another."""

from __future__ import annotations

import re

import pytest

from benchmarks.callback_cost import main as cost_main
from benchmarks.gpu import WAYS, main

MODELS = ("LeNet-5", "ResNet-18, 32 px, 100 classes")
KEYS = ["filters", "feature_maps", "confusion_matrix"]


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_gpu_benchmark_table_at_a_tiny_size_on_the_cpu(capsys):
    rows = main(["--device", "cpu", "--tiny", "--callbacks", *KEYS])
    out = capsys.readouterr().out
    assert [(r["model"], r["way"]) for r in rows] == [(m, w) for m in MODELS for w in WAYS]
    lines = out[out.index("| model | drawing |") :].splitlines()
    header, body = cells(lines[0]), [cells(line) for line in lines[2 : 2 + len(rows)]]
    assert header == [
        "model",
        "drawing",
        "fit",
        "x none",
        "callbacks' own time in training",
        "drawer's own time",
        "peak resident memory",
    ]
    for r, row in zip(rows, body, strict=True):
        assert row[:2] == [r["model"], r["way"]] and len(row) == len(header)
        none = next(n for n in rows if n["model"] == r["model"] and n["way"] == "none")
        assert row[2] == f"{r['fit']:.1f} s" and row[3] == f"{r['fit'] / none['fit']:.2f}"
        assert 0 < r["fit"] and 0 < r["peak"] and re.fullmatch(r"\d+ MB", row[6])
    by = {(r["model"], r["way"]): r for r in rows}
    for model in MODELS:
        none, inline, background = (by[model, w] for w in WAYS)
        assert none["own"] == 0 and none["each"] == {} and none["drawer"] is None
        # inline: every callback drew in training, within the fit's time; its parts add up to the column
        assert set(inline["each"]) == {"filters", "feature_maps", "confusion_matrix"} and all(inline["each"].values())
        assert 0 < inline["own"] <= inline["fit"] and abs(sum(inline["each"].values()) - inline["own"]) < 1e-9
        # background: the drawer drew (its own seconds), training only waited for it, within the fit
        assert background["drawer"] > 0 and 0 <= background["waited"] <= background["fit"]
        assert background["own"] == 0  # the training process's copies drew nothing
    table2 = out[out.index("| callback |") :].splitlines()
    assert cells(table2[0]) == ["callback", *MODELS]
    assert [cells(line)[0] for line in table2[2:5]] == KEYS


def test_callback_cost_prices_every_technique_of_the_owner(capsys, fashion_available):
    """``benchmarks/callback_cost.py`` at a tiny size: one row per enabled technique, every-epoch ones drawn once,
    and the table's group totals are the rows' sums (it printed zeros once, reading callbacks the owner replaced)."""
    if not fashion_available:
        pytest.skip("Fashion-MNIST (Debian's dataset-fashion-mnist) not installed")
    rows = cost_main(["--epochs", "1", "--limit", "3"])
    out = capsys.readouterr().out
    every_epoch = {"filters", "feature_maps", "fc_activations", "actmax", "deconv", "selectivity", "gradcam", "units"}
    assert every_epoch <= {r["technique"] for r in rows}
    drawn = {r["technique"]: r for r in rows}
    for key in every_epoch:
        assert drawn[key]["drawings"] == 1 and drawn[key]["seconds"] > 0, key
    six = {"filters", "feature_maps", "fc_activations", "actmax", "deconv", "selectivity"}
    own = sum(r["seconds"] for r in rows if r["technique"] in six)
    line = next(x for x in out.splitlines() if x.startswith("| the six visualizations"))
    assert cells(line)[1].startswith(f"{own:.3f} s")
    assert all(f"| {r['technique']} |" in out for r in rows)
