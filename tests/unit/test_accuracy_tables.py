"""scripts/accuracy_tables.py and docs/accuracy.md: the tables are the statistics of the validate JSON (checked on a
synthetic set computed by hand), --write touches only the marked block, bad input is one line and exit 2, and every
link of docs/accuracy.md and of calibration.md's topic map lands on a heading of calibration.md."""

import json
import re
from pathlib import Path

import pytest
from scripts_loader import load_script

from simcluster.studies import validation

DOCS = Path(__file__).resolve().parents[2] / "docs"
GPT3_BF16, GPT3_FP8 = validation.BF16_FP8_PAIRS[0]
LLAMA_BF16, LLAMA_FP8 = validation.BF16_FP8_PAIRS[1]

CALIBRATION = [  # series a/bf16: |error| 2, 4, 9 %; b/fp8: 3 %
    {"scenario": GPT3_BF16, "family": "a", "precision": "bf16", "error": -0.02},
    {"scenario": LLAMA_BF16, "family": "a", "precision": "bf16", "error": -0.04},
    {"scenario": "c3", "family": "a", "precision": "bf16", "error": 0.09},
    {"scenario": "c4", "family": "b", "precision": "fp8", "error": -0.03},
]
HELD_OUT = [
    {"scenario": GPT3_FP8, "family": "x", "precision": "fp8", "error": -0.05},
    {"scenario": LLAMA_FP8, "family": "x", "precision": "fp8", "error": 0.08},
    {"scenario": "h3", "family": "y", "precision": "bf16", "error": 0.20, "published_tflops": 100.0,
     "simulated_tflops": 120.0},
    {"scenario": "h4", "family": "y", "precision": "bf16", "error": -0.12},
    {"scenario": "h5", "family": "y", "precision": "bf16", "error": 0.01},
]
PROSE_HEAD = "# Page\n\nProse before, with | pipes | and `code`, kept as is.\n\n"
PROSE_TAIL = "\n\nProse after; no newline at the end."


@pytest.fixture(scope="module")
def tables():
    return load_script("accuracy_tables")


@pytest.fixture
def inputs(tmp_path):
    cal, held = tmp_path / "cal.json", tmp_path / "held.json"
    cal.write_text(json.dumps({"cases": CALIBRATION, "median_abs_error": 0.0}))
    held.write_text(json.dumps({"cases": HELD_OUT}))
    return str(cal), str(held)


def test_statistics_are_median_and_max_of_absolute_and_mean_of_signed_errors(tables):
    s = tables.stats([-0.02, -0.04, 0.09, -0.03])
    assert s["runs"] == 4
    assert s["median"] == pytest.approx(0.035)       # |e| sorted 0.02 0.03 0.04 0.09: (0.03 + 0.04) / 2
    assert s["max"] == pytest.approx(0.09)
    assert s["mean"] == pytest.approx(0.0)           # signed: -0.02 - 0.04 + 0.09 - 0.03
    assert (s["within_0.05"], s["within_0.1"], s["within_0.15"]) == (3, 4, 4)


def test_groups_are_family_and_precision(tables):
    groups = tables.by_group(CALIBRATION)
    assert list(groups) == ["a/bf16", "b/fp8"]
    assert groups["a/bf16"]["median"] == pytest.approx(0.04)
    assert groups["a/bf16"]["mean"] == pytest.approx(0.01)  # (-0.02 - 0.04 + 0.09) / 3


def test_printed_tables_hold_the_hand_computed_rows(tables, inputs, capsys):
    assert tables.main(list(inputs)) == 0
    out = capsys.readouterr().out
    assert "| a/bf16 | 3 | 4.0% | 9.0% | +1.0% |" in out
    assert "| b/fp8 | 1 | 3.0% | 3.0% | -3.0% |" in out
    assert "| x/fp8 | 2 | 6.5% | 8.0% | +1.5% |" in out
    assert "| y/bf16 | 3 | 12.0% | 20.0% | +3.0% |" in out
    assert "| calibration | 4 | 3.5% | 9.0% | +0.0% | 3 | 4 | 4 |" in out
    assert "| held out | 5 | 8.0% | 20.0% | +2.4% | 2 | 3 | 4 |" in out      # |-0.05| is within 5%
    assert f"| {GPT3_BF16} | {GPT3_FP8} | -2.0% | -5.0% | 3.0 | 5 |" in out
    assert f"| {LLAMA_BF16} | {LLAMA_FP8} | -4.0% | +8.0% | 12.0 | 11 |" in out
    worst = out.split("worst held-out runs**")[1].split("**Issue 15")[0].strip().splitlines()[2:]
    assert worst[0] == "| h3 | y/bf16 | 100.0 | 120.0 | +20.0% |"
    assert [row.split(" | ")[0] for row in worst] == ["| h3", "| h4", f"| {LLAMA_FP8}", f"| {GPT3_FP8}", "| h5"]
    assert "| held out: median \\|error\\| <= 4% | 8.000% | no |" in out
    assert "| calibration: max \\|error\\| <= 10% | 9.000% | yes |" in out
    assert not out.startswith("Measured on")
    assert tables.main([*inputs, "--label", "main @ abc123"]) == 0
    assert capsys.readouterr().out.startswith("Measured on: main @ abc123.\n\n**Calibration per series**")


def test_write_replaces_only_the_marked_block(tables, inputs, tmp_path, capsys):
    page = tmp_path / "accuracy.md"
    old = f"{PROSE_HEAD}{tables.START}\nstale table\n| 1 | 2 |\n{tables.END}{PROSE_TAIL}"
    page.write_bytes(old.encode())
    assert tables.main([*inputs, "--write", str(page)]) == 0
    new = page.read_bytes().decode()
    assert new.startswith(PROSE_HEAD + tables.START + "\n")
    assert new.endswith(tables.END + PROSE_TAIL)
    assert "stale table" not in new
    assert tables.main(list(inputs)) == 0
    assert new == PROSE_HEAD + tables.START + "\n" + capsys.readouterr().out + tables.END + PROSE_TAIL
    assert tables.main([*inputs, "--write", str(page)]) == 0
    assert page.read_bytes().decode() == new            # a second write changes nothing


@pytest.mark.parametrize("broken", ["missing", "not json", "no cases", "case without error", "error not a number",
                                    "error NaN", "error Infinity"])
def test_bad_input_is_one_line_and_exit_2(tables, inputs, tmp_path, capsys, broken):
    cal, held = inputs
    bad = tmp_path / "bad.json"
    texts = {"not json": "{cases: [", "no cases": json.dumps({"median_abs_error": 0.1}),
             "case without error": json.dumps({"cases": [{k: v for k, v in CALIBRATION[0].items() if k != "error"}]}),
             "error not a number": json.dumps({"cases": [{**CALIBRATION[0], "error": "2%"}]}),
             "error NaN": json.dumps({"cases": [{**CALIBRATION[0], "error": float("nan")}]}),
             "error Infinity": json.dumps({"cases": [{**CALIBRATION[0], "error": float("-inf")}]})}
    if broken in texts:
        bad.write_text(texts[broken])
    assert tables.main([cal, str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.json" in err and "Traceback" not in err
    if broken in ("case without error", "error NaN", "error Infinity"):
        assert "cases[0].error" in err


def test_write_to_a_page_without_markers_is_refused_and_leaves_it(tables, inputs, tmp_path, capsys):
    page = tmp_path / "accuracy.md"
    page.write_text(PROSE_HEAD)
    assert tables.main([*inputs, "--write", str(page)]) == 2
    assert "accuracy-tables:start" in capsys.readouterr().err
    assert page.read_text() == PROSE_HEAD


def test_markers_in_reverse_order_are_refused_and_leave_the_page(tables, inputs, tmp_path, capsys):
    from_the_end = f"{PROSE_HEAD}{tables.END}\nmiddle\n{tables.START}\n{PROSE_TAIL}"
    page = tmp_path / "accuracy.md"
    page.write_text(from_the_end)
    assert tables.main([*inputs, "--write", str(page)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "before" in err and "Traceback" not in err
    assert page.read_text() == from_the_end


def test_a_page_that_cannot_be_written_is_one_line_and_exit_2(tables, inputs, tmp_path, capsys, monkeypatch):
    page = tmp_path / "accuracy.md"
    page.write_text(f"{PROSE_HEAD}{tables.START}\nold\n{tables.END}\n{PROSE_TAIL}")

    def read_only(self, *_a, **_k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "write_text", read_only)
    assert tables.main([*inputs, "--write", str(page)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write" in err and "accuracy.md" in err


def headings(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation other than - and _ dropped, spaces to -,
    repeats numbered -1, -2, ...; lines inside code fences are not headings."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"#{1,6} (.+)", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_heading_anchors_follow_github():
    page = "# Round 5: held-out (issue 15)\n```\n# not a heading\n```\n### Before round 3\n## Before round 3\n"
    assert headings(page) == {"round-5-held-out-issue-15", "before-round-3", "before-round-3-1"}


def test_links_into_calibration_md_land_on_its_headings():
    """accuracy.md's and the topic map's links into calibration.md and its history (docs/calibration/) land."""
    calibration = (DOCS / "calibration.md").read_text()
    page = r"(calibration\.md|calibration/[\w.-]+\.md)"
    from_accuracy = re.findall(rf"\({page}#([^)\s]+)\)", (DOCS / "accuracy.md").read_text())
    topic_map = calibration.split("\n## Topic map\n", 1)[1].split("\n## ", 1)[0]
    from_topic_map = [(path or "calibration.md", anchor)
                      for path, anchor in re.findall(rf"\]\((?:{page})?#([^)\s]+)\)", topic_map)]
    assert len(from_accuracy) >= 10 and len(from_topic_map) >= 50
    pages = {path: headings((DOCS / path).read_text()) for path, _ in set(from_accuracy + from_topic_map)
             if (DOCS / path).exists()}
    missing = [f"{path}#{anchor}" for path, anchor in set(from_accuracy + from_topic_map)
               if anchor not in pages.get(path, ())]
    assert sorted(missing) == []


def test_accuracy_page_has_one_table_block_and_fits_a_page(tables):
    text = (DOCS / "accuracy.md").read_text()
    assert text.count(tables.START) == 1 and text.count(tables.END) == 1
    assert len(text.splitlines()) <= 250
