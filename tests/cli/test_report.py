"""`--report` on run, compare, sweep and replay: one self-contained HTML file that opens offline. No headless browser
can be installed from the package index here (Playwright downloads its browsers separately), so the structure is
checked: it parses, every figure the command drew is embedded as data, nothing is fetched from anywhere."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

DATA = Path(__file__).parent.parent / "data"
TWO_RANKS = DATA / "kineto" / "a100-2rank-allreduce.rank0.json.gz"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """Tags, image sources, links and text of a page; fails on unbalanced structure tags."""

    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.urls: list[str] = []
        self.text: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for key in ("src", "href", "action", "data"):
            if key in attrs and tag != "img":
                self.urls.append(attrs[key])
        if tag in ("table", "figure", "pre", "html", "body", "head"):
            self.open.append(tag)

    def handle_endtag(self, tag):
        if tag in ("table", "figure", "pre", "html", "body", "head"):
            assert self.open and self.open.pop() == tag, f"unbalanced </{tag}>"

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text())
    page.close()
    assert not page.open, f"unclosed {page.open}"
    return page


def assert_self_contained(report: Path, figures: list[Path]):
    page = parse(report)
    raw = report.read_text()
    assert "<script" not in raw and "<link" not in raw and "@import" not in raw and "url(" not in raw
    assert "http://" not in raw and "https://" not in raw
    # table cells in positional notation (issue 18: money read 4.056e+06, noise 4.21e-15)
    assert not re.search(r"<td>[^<]*\de[+-]\d", raw), re.search(r"<td>[^<]*\de[+-]\d[^<]*", raw).group(0)
    assert not page.urls
    assert len(page.images) == len(figures) >= 1
    for src, figure in zip(page.images, figures, strict=True):
        assert src.startswith("data:image/png;base64,")
        embedded = base64.b64decode(src.split(",", 1)[1])
        assert embedded.startswith(PNG_MAGIC) and embedded == figure.read_bytes()
    text = " ".join(page.text)
    assert "Assumptions and sources" in text and "lifetime_years" in text   # the price file, with its sources
    return page, text


def test_compare_report_holds_the_verdict_tables_every_figure_and_the_scenario(cli, write_scenario, small_scenario,
                                                                               tmp_path):
    out = tmp_path / "c"
    code, stdout, _ = cli("compare", write_scenario(small_scenario), "--topology", "leaf-spine:oversubscription=4",
                          "--topology", "rail-fat-tree", "--network", "analytic", "--report", "--out", out)
    assert code == 0 and "report.html" in stdout
    figures = sorted(out.glob("*.png"), key=lambda p: p.name)
    page, text = assert_self_contained(out / "report.html", _in_page_order(out / "report.html", figures))
    assert "Verdict" in text and "Cheapest for the same result" in text
    assert page.tags.count("table") >= 3 and "Scenario" in text and "small" in text
    assert "fabric bill of materials" in text


def test_run_report_is_self_contained(cli, write_scenario, small_scenario, tmp_path):
    out = tmp_path / "r"
    code, _, _ = cli("run", write_scenario(small_scenario), "--network", "analytic", "--report", "--out", out)
    assert code == 0
    _, text = assert_self_contained(out / "report.html", [out / "timeline.png"])
    assert "exposed communication" in text and "link tier nvlink" in text


def test_sweep_report_is_self_contained(cli, write_scenario, small_scenario, tmp_path):
    out = tmp_path / "s"
    code, _, _ = cli("sweep", write_scenario(small_scenario), "--gpus", "16,32", "--jobs", "1", "--network",
                     "analytic", "--report", "--out", out)
    assert code == 0
    report = next(out.parent.glob("s*/report.html"))
    figures = _in_page_order(report, list(report.parent.glob("*.png")))
    _, text = assert_self_contained(report, figures)
    assert "efficiency" in text


def test_replay_report_is_self_contained(cli, tmp_path):
    out = tmp_path / "p"
    code, _, _ = cli("replay", TWO_RANKS, "--network", "analytic", "--report", "--out", out)
    assert code == 0
    figures = _in_page_order(out / "report.html", list(out.rglob("*.png")))
    assert_self_contained(out / "report.html", figures)


def _in_page_order(report: Path, figures: list[Path]) -> list[Path]:
    """The figures in the order the page embeds them (the data of each is found in the page)."""
    raw = report.read_text()
    found = [(raw.find(base64.b64encode(f.read_bytes()).decode("ascii")), f) for f in figures]
    assert all(position >= 0 for position, _ in found), "a figure the command drew is missing from the report"
    return [f for _, f in sorted(found, key=lambda item: item[0])]
