"""Every relative link of README.md, CONTRIBUTING.md, docs/*.md and the calibration history (docs/calibration/*.md)
lands: the file exists and, for `page.md#anchor`, the page has a heading of that anchor (GitHub's slugs,
`test_accuracy_tables.headings`). Links inside code (a quoted README's image in the calibration history) are text,
not links."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
from test_accuracy_tables import headings

ROOT = Path(__file__).resolve().parents[2]
PAGES = [*sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs" / "calibration").glob("*.md")),
         ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")
# Link text quoted from another repository, not a link of this one: the calibration history's round 30 quotes
# Azure/MS-AMP's docs/introduction.md, whose image sits beside that file.
QUOTED = {("round-30.md", "./assets/gpt-performance.png")}


def _prose(markdown: str) -> str:
    """The page without its code fences and code spans, lines kept (so a link's line number stays)."""
    markdown = re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), markdown, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", markdown)


def links(page: Path) -> list[tuple[str, str]]:
    """(page:line, target) of every relative link of ``page``."""
    text = _prose(page.read_text())
    return [(f"{page.name}:{text.count(chr(10), 0, m.start()) + 1}", m.group(1)) for m in LINK.finditer(text)
            if not re.match(r"[a-z][a-z+.-]*:", m.group(1))   # https:, mailto: are not checked offline
            and (page.name, m.group(1)) not in QUOTED]


@functools.cache
def anchors(path: Path) -> frozenset[str]:
    return frozenset(headings(path.read_text()))


def broken(page: Path) -> list[str]:
    """Where each link of ``page`` that does not land points."""
    problems = []
    for where, target in links(page):
        path, _, anchor = target.partition("#")
        landing = (page.parent / path).resolve() if path else page
        if not landing.exists():
            problems.append(f"{where}: no file {path}")
        elif anchor and landing.suffix == ".md" and anchor not in anchors(landing):
            problems.append(f"{where}: {landing.name} has no heading #{anchor}")
    return problems


def test_the_pages_have_links():
    assert sum(len(links(page)) for page in PAGES) >= 500


@pytest.mark.parametrize("page", PAGES, ids=[page.relative_to(ROOT).as_posix() for page in PAGES])
def test_every_relative_link_lands(page):
    assert broken(page) == []


def test_a_broken_anchor_and_a_code_span_are_told_apart(tmp_path):
    page = tmp_path / "a.md"
    page.write_text("# Title\n[ok](#title) [bad](#nope) `[code](missing.png)`\n```\n[fenced](gone.md)\n```\n")
    assert links(page) == [("a.md:2", "#title"), ("a.md:2", "#nope")]
    assert broken(page) == ["a.md:2: a.md has no heading #nope"]
