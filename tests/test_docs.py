"""The front page and the manual hold together: every relative link and `#anchor` in README.md, CHANGELOG.md and
docs/*.md resolves (anchors by GitHub's heading slugs), every picture they show exists and is one that
`make pictures` regenerates, every manual page is reachable, and the README stays a front page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.export_images import pictures
from tests.conftest import ROOT

PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_SRC = re.compile(r"<(?:img|a)\s[^>]*(?:src|href)=\"([^\"]+)\"")


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    parts = re.split(r"(`[^`]*`)", text)  # HTML tags are dropped outside code spans; `<layer>` in code stays text
    text = "".join(p[1:-1] if p.startswith("`") else re.sub(r"<[^>]+>", "", p) for p in parts).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w keeps letters of any script, digits and _
    return text.replace(" ", "-")


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans (links there are examples, not links)."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.S | re.M)
    return re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", text, flags=re.S)


def anchors(page: Path) -> set[str]:
    """The `#anchors` GitHub gives a page's headings (a repeated slug gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    in_fence = False
    for line in page.read_text().splitlines():
        if line.startswith(("```", "~~~")):
            in_fence = not in_fence
        m = None if in_fence else re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = github_slug(m.group(1))
            found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return found


def links(page: Path) -> list[str]:
    text = _prose(page.read_text())
    return [m.group(1) for m in LINK.finditer(text)] + HTML_SRC.findall(text)


def is_external(target: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*:", target) is not None


def test_slugs_follow_github():
    assert github_slug("Drawing beside training: `drawing: background` and the watcher") == (
        "drawing-beside-training-drawing-background-and-the-watcher"
    )
    assert github_slug("At scale: the model zoo (`benchmarks/scale.py`)") == "at-scale-the-model-zoo-benchmarksscalepy"
    assert github_slug("Filters — `filters/<layer>`") == "filters--filterslayer"
    assert (
        github_slug("Mixed precision, channels-last, `torch.compile`") == "mixed-precision-channels-last-torchcompile"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in links(page):
        if is_external(target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif not dest.resolve().is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
            broken.append(f"{target}: no heading with that anchor in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_picture_shown_exists_and_make_pictures_regenerates_it():
    images = ROOT / "docs" / "images"
    shown = set()
    for page in PAGES:
        for target in links(page):
            path = target.partition("#")[0]
            if path.endswith((".png", ".jpg", ".jpeg", ".gif", ".svg")) and not is_external(path):
                file = (page.parent / path).resolve()
                assert file.is_file(), f"{page.relative_to(ROOT)} shows {target}, which does not exist"
                assert file.parent == images, f"{page.relative_to(ROOT)} shows {target}, outside docs/images/"
                shown.add(file.name)
    assert "tensorboard_images.png" in shown  # the front page's picture
    assert shown <= pictures(), f"make pictures does not regenerate {sorted(shown - pictures())}"
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\npictures:") :].split("\n\n")[0]
    assert "export_images.py" in recipe and "--screenshot" in recipe and "--extra" in recipe


def test_every_manual_page_is_reachable_from_the_front_page():
    reached, todo = set(), [ROOT / "README.md"]
    while todo:
        page = todo.pop()
        if page in reached:
            continue
        reached.add(page)
        for target in links(page):
            path = target.partition("#")[0]
            if path.endswith(".md") and not is_external(path):
                todo.append((page.parent / path).resolve())
    unreached = [p.relative_to(ROOT) for p in PAGES if p.resolve() not in reached]
    assert not unreached, f"no link leads to {unreached}"


def test_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 15_000, f"README.md is {len(readme.encode())} bytes; the manual goes in docs/"
    assert "make demo" in readme and "make test" in readme
    example = re.search(r"```python\n(.*?)```", readme, flags=re.S).group(1)
    assert "self.model = timm.create_model(" in example and "from convscope import" in example
    compile(example, "README.md", "exec")  # the example is valid Python
    last = readme.strip().splitlines()[-1]
    assert "Apache License 2.0" in last and "(LICENSE)" in last


def test_the_pages_import_only_names_convscope_has():
    import callbacks  # the package's source; `convscope` once installed

    for page in PAGES:
        for names in re.findall(r"^from convscope import ([\w, ]+)", page.read_text(), flags=re.M):
            for name in (n.strip() for n in names.split(",")):
                assert name in callbacks.__all__, f"{page.relative_to(ROOT)} imports {name}, which convscope lacks"
