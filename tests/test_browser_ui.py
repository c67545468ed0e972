"""The unit browser in a real browser: real TensorBoard serving a run, Debian's headless Chromium driven by
Playwright. Pick a layer, sort by selectivity, open a unit, move the epoch slider; the pixels shown must be the
logged sprite pixels of that unit at that epoch. Dead units sort last, and a unit that never fired shows no top
patches."""

from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from tests.synthetic_units import box, firing, pixel, write_epoch, write_run
from tests.tb_server import tensorboard

CHROMIUM = "/usr/bin/chromium"


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        pytest.skip(f"playwright is not installed ({e}): pip install -r requirements.txt")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    return sync_playwright


@contextlib.contextmanager
def opened(logdir):
    """A real TensorBoard serving ``logdir`` and a headless Chromium page (1440 x 900) on it: yields the base URL, the
    page and the list of the page's script errors."""
    sync_playwright = _browser_or_skip()
    with tensorboard(logdir) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield base, page, errors
        finally:
            browser.close()


def shown_grey(page, selector: str) -> int:
    """The grey value at the centre of an element as the browser painted it."""
    a = np.asarray(Image.open(io.BytesIO(page.locator(selector).first.screenshot())).convert("L"))
    return int(a[a.shape[0] // 2, a.shape[1] // 2])


def dead_last(stats: dict, key, units: int = 300) -> list[int]:
    """The grid's order for a sort by a measured statistic: live units first, then dead ones (dead fraction >= 0.99),
    each by ``key(u)``, ties by unit number."""
    return sorted(range(units), key=lambda u: (stats["dead_fraction"][u] >= 0.99, key(u), u))


def grid_units(page) -> list[int]:
    return [int(u) for u in page.eval_on_selector_all("#grid .cell", "els => els.map(e => e.dataset.unit)")]


def test_layer_grid_sort_unit_view_and_epoch_slider_show_the_logged_images(tmp_path):
    logdir = tmp_path / "logs"
    run = write_run(logdir / "version_0", {"relu_1": 6, "relu_2": 300}, epochs=(0, 1, 2, 3), side=224)
    stats = json.loads((run / "convscope_units" / "relu_2" / "epoch_0003" / "stats.json").read_text())
    by_selectivity = dead_last(stats, lambda u: -stats["selectivity"][u])

    with opened(logdir) as (base, page, errors):
        page.goto(base + "/data/plugin_entry.html?name=convscope", timeout=60_000)
        page.wait_for_selector("#grid .cell", timeout=30_000)

        page.select_option("#layer", "relu_2")
        page.wait_for_selector("#grid .cell[data-unit='255']", state="attached", timeout=30_000)
        assert page.locator("#grid .cell").count() == 256  # first page of 300 units
        page.select_option("#sort", "selectivity")
        page.wait_for_function(
            f"document.querySelector('#grid .cell')?.dataset.unit === '{by_selectivity[0]}'", timeout=30_000
        )
        assert grid_units(page) == by_selectivity[:256]
        assert "sort=selectivity" in page.url and "layer=relu_2" in page.url

        u = by_selectivity[0]
        page.click(f"#grid .cell[data-unit='{u}']")
        page.wait_for_selector("#life", timeout=30_000)
        assert f"unit={u}" in page.url and "view=unit" in page.url
        patch = "#p-top .img"
        assert page.locator(patch).first.get_attribute("data-epoch") == "3"
        assert shown_grey(page, patch) == pixel(3, u, 0)  # the logged top patch of unit u at epoch 3
        assert "Actmax not drawn at epoch 3" in page.inner_text("#p-actmax")
        # a 224 px image's box ("y 110:222 x 112:224") is wider than a patch column: shown whole, on two lines;
        # no caption runs past its column
        captions = page.eval_on_selector_all(
            "#p-top .patch > div",
            """els => els.map(d => ({text: d.textContent, scroll: d.scrollWidth, width: d.clientWidth,
                height: d.clientHeight,
                clipped: getComputedStyle(d).overflowX !== 'visible', right: d.getBoundingClientRect().right,
                column: d.parentElement.getBoundingClientRect().right}))""",
        )
        y0, x0, y1, x1 = box(224, u, 0)
        _, label, _, where = captions[:4]  # image, class, response, box
        assert where["text"] == f"y {y0}:{y1} x {x0}:{x1}" and where["scroll"] <= where["width"]
        assert where["height"] > 1.5 * label["height"]
        fits = [c["right"] <= c["column"] + 0.5 and (c["scroll"] <= c["width"] or c["clipped"]) for c in captions]
        assert all(fits), captions

        page.focus("#epoch")
        page.keyboard.press("ArrowLeft")  # epoch 3 -> 2
        page.wait_for_selector(f"{patch}[data-epoch='2']", timeout=30_000)
        assert "epoch=2" in page.url
        assert shown_grey(page, patch) == pixel(2, u, 0) != pixel(3, u, 0)
        assert shown_grey(page, "#p-actmax .img") == pixel(2, u, 0)  # epoch 2 has actmax: shown, its pixels
        for cell in range(1, 9):
            assert shown_grey(page, f"#p-top .patch:nth-child({cell + 1}) .img") == pixel(2, u, cell)

        page.reload()  # the URL alone brings the same view back
        page.wait_for_selector(f"{patch}[data-epoch='2']", timeout=30_000)
        assert shown_grey(page, patch) == pixel(2, u, 0)

        write_epoch(run, "relu_2", 4, 300, actmax=True, actmax_epochs=[0, 2, 4])  # training goes on
        page.click("text=reload")
        page.wait_for_selector("#history .col:nth-child(5)", timeout=30_000)
        page.click("#history .col:nth-child(5)")  # the new epoch's column
        page.wait_for_selector(f"{patch}[data-epoch='4']", timeout=30_000)
        assert shown_grey(page, patch) == pixel(4, u, 0)
        assert not errors, errors


def test_a_logdir_without_convscope_data_shows_the_empty_state(tmp_path):
    (tmp_path / "version_0").mkdir()
    (tmp_path / "version_0" / "events.out.tfevents.1.x").write_bytes(b"")
    with opened(tmp_path) as (base, page, errors):
        page.goto(base + "/data/plugin_entry.html?name=convscope", timeout=60_000)
        page.wait_for_selector("#empty", timeout=30_000)
        text = page.inner_text("#empty")
        assert "No convscope unit data" in text and "version_0" in text


def painted_patches(page) -> np.ndarray:
    """The nine top patches as painted, side by side (text excluded)."""
    imgs = page.locator("#p-top .patch .img")
    return np.concatenate([np.asarray(Image.open(io.BytesIO(imgs.nth(j).screenshot())).convert("L")) for j in range(9)])


def painted_is_logged(page, selector: str, sprite: np.ndarray, row: int, col: int, cell: int) -> bool:
    """Whether the element shows cell ``col`` of row ``row`` of a logged sprite: at sample points, the painted grey
    is the sprite's grey there (nearest-neighbour scaling: within one source pixel)."""
    shot = np.asarray(Image.open(io.BytesIO(page.locator(selector).first.screenshot())).convert("L")).astype(int)
    s = shot.shape[0] / cell
    src = sprite[row * cell : (row + 1) * cell, col * cell : (col + 1) * cell].astype(int)
    for sy, sx in ((cell // 4, cell // 4), (cell // 2, cell // 2), (3 * cell // 4, cell // 3)):
        got = shot[int((sy + 0.5) * s), int((sx + 0.5) * s)]
        near = src[max(0, sy - 1) : sy + 2, max(0, sx - 1) : sx + 2]
        if np.abs(near - got).min() > 1:
            return False
    return True


def test_on_a_real_fit_the_unit_view_paints_the_logged_sprites_of_each_epoch(tmp_path):
    _browser_or_skip()  # before the fit
    from callbacks.units import UnitsCallback
    from tests.test_units import CHEAP, HAS_FASHION, fit

    if not HAS_FASHION:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    trainer, _, _ = fit(tmp_path, [UnitsCallback(actmax_every=2, **CHEAP)])
    run = os.path.relpath(trainer.logger.log_dir, tmp_path)
    layer_dir = tmp_path / run / "convscope_units" / "relu_4"
    metas = {e: json.loads((layer_dir / f"epoch_{e:04d}" / "meta.json").read_text()) for e in (0, 1)}

    def sprite(e, kind):
        return np.asarray(Image.open(layer_dir / f"epoch_{e:04d}" / f"{kind}_000.png").convert("L"))

    u = 3
    with opened(tmp_path) as (base, page, errors):
        page.goto(base + "/data/plugin_entry.html?name=convscope", timeout=60_000)
        page.wait_for_selector("#grid .cell", timeout=30_000)
        page.select_option("#layer", "relu_4")
        page.wait_for_selector("#grid .cell[data-unit='83']", state="attached", timeout=30_000)
        page.click(f"#grid .cell[data-unit='{u}']")
        page.wait_for_selector("#p-top .img[data-epoch='1']", timeout=30_000)
        cell = metas[1]["top"]["cell"]
        for j in range(3):
            sel = f"#p-top .patch:nth-child({j + 1}) .img"
            assert painted_is_logged(page, sel, sprite(1, "top"), u, j, cell)
        assert painted_is_logged(page, "#p-actmax .img", sprite(1, "actmax"), u, 0, metas[1]["actmax"]["cell"])
        at_1 = painted_patches(page)

        page.focus("#epoch")
        page.keyboard.press("ArrowLeft")  # epoch 1 -> 0: no actmax then, other top patches
        page.wait_for_selector("#p-top .img[data-epoch='0']", timeout=30_000)
        assert "Actmax not drawn at epoch 0" in page.inner_text("#p-actmax")
        for j in range(3):
            sel = f"#p-top .patch:nth-child({j + 1}) .img"
            assert painted_is_logged(page, sel, sprite(0, "top"), u, j, metas[0]["top"]["cell"])
        rows = [sprite(e, "top")[u * cell : (u + 1) * cell] for e in (0, 1)]
        # the screen changes with the epoch exactly when the logged patches do
        assert np.array_equal(painted_patches(page), at_1) == np.array_equal(*rows)


def test_dead_units_sort_last_and_a_unit_that_never_fired_shows_no_top_patches(tmp_path):
    """A unit that fires on one image of the fixed set has selectivity ~1: it must not lead the selectivity sort (on
    LeNet-5's relu_4 dead units did), nor one that never fires the "mean, smallest first" sort; a sort by dead
    fraction keeps them where their value puts them. A unit whose top responses are all 0 has no top patches (its
    nine would be the tie order), and says so."""
    run = write_run(tmp_path / "version_0", {"relu_2": 300}, epochs=(0, 1, 2))
    stats = json.loads((run / "convscope_units" / "relu_2" / "epoch_0002" / "stats.json").read_text())
    dead = [u for u in range(300) if stats["dead_fraction"][u] >= 0.99]
    assert len(dead) == 60 and max(stats["selectivity"][u] for u in range(300) if u not in dead) < 1
    with opened(tmp_path) as (base, page, errors):
        entry = base + "/data/plugin_entry.html?name=convscope"

        def grid(hash_: str) -> list[int]:
            page.goto(f"{entry}#run=version_0&layer=relu_2&{hash_}", timeout=60_000)
            page.reload()  # a new hash on the same page: rendered from scratch, no earlier grid to wait on
            page.wait_for_selector("#grid .cell", timeout=30_000)
            return grid_units(page)

        for sort, direction, key in (
            ("selectivity", "desc", lambda u: -stats["selectivity"][u]),
            ("selectivity", "asc", lambda u: stats["selectivity"][u]),
            ("mean", "asc", lambda u: stats["mean"][u]),
            ("preferred_class", "desc", lambda u: -stats["preferred_class"][u]),
        ):
            shown = grid(f"sort={sort}&dir={direction}")
            assert shown == dead_last(stats, key)[:256], (sort, direction)
            assert not set(shown[:240]) & set(dead) and set(shown[240:]) <= set(dead), (sort, direction)
            assert "dead units last" in page.inner_text("#legend")
        shown = grid("sort=dead_fraction&dir=desc")  # by the dead fraction itself: the dead ones lead
        want = sorted(range(300), key=lambda u: (-stats["dead_fraction"][u], u))
        assert shown == want[:256] and set(shown[:60]) == set(dead)
        assert "dead units last" not in page.inner_text("#legend")
        assert grid("sort=unit") == list(range(256)) and "dead units last" not in page.inner_text("#legend")
        # at epoch 1 (no actmax drawn) a unit that never fired has no thumbnail patch: its first "top" is a tie
        assert grid("sort=unit&epoch=1") == list(range(256))
        kinds = {
            int(c.get_attribute("data-unit")): c.locator(".thumb").get_attribute("data-kind")
            for c in page.locator("#grid .cell").all()
        }
        assert {u for u, k in kinds.items() if k == "none"} == {u for u in range(256) if firing(1, u) == "never"}
        assert kinds[4] == "top" and kinds[0] == "top"  # fired once / live: their strongest patch

        never, once = 9, 4
        assert firing(2, never) == "never" and firing(2, once) == "once" and firing(0, never) == "live"
        page.goto(f"{entry}#run=version_0&layer=relu_2&view=unit&unit={never}&epoch=2", timeout=60_000)
        page.reload()
        page.wait_for_selector("#p-top", timeout=30_000)
        assert page.inner_text("#no-top") == (
            "This unit did not fire on any fixed-set image at epoch 2 (largest response 0.00): no top patches."
        )
        assert page.locator("#p-top .patch").count() == 0
        history = page.locator("#history .col")
        assert [c.locator(".img").get_attribute("data-kind") for c in history.all()] == ["actmax", "none", "actmax"]
        page.focus("#epoch")
        page.keyboard.press("Home")  # epoch 0: it was alive then, its patches are shown
        page.wait_for_selector("#p-top .img[data-epoch='0']", timeout=30_000)
        assert page.locator("#p-top .patch").count() == 9 and page.locator("#no-top").count() == 0
        # a dead unit that fired once has one real top patch: shown (with the eight ties after it)
        page.goto(f"{entry}#run=version_0&layer=relu_2&view=unit&unit={once}&epoch=2", timeout=60_000)
        page.reload()
        page.wait_for_selector("#p-top .img[data-epoch='2']", timeout=30_000)
        assert page.locator("#p-top .patch").count() == 9 and page.locator("#no-top").count() == 0
        assert not errors, errors
