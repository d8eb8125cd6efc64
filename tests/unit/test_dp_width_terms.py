"""scripts/dp_width_terms.py (docs/calibration/round-24.md "Round 24: throughput lost to data-parallel width"): its fit
recovers a known rate factor and per-step cost exactly, a row's facts are the layout's (microbatches per pipeline,
bubble share, the published step of Table 2's eq. 3 count), and an unreadable cache is a one-line error, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from simcluster.core.errors import ScenarioError

SCRIPTS = Path(__file__).parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))
import dp_width_terms  # noqa: E402

SUMMARY = {"step_time_s": 78.0, "compute_s": 70.0, "pipeline_bubble_s": 1.0, "comm_interference_s": 0.1,
           "exposed": {"dp": 0.25, "tp": 5.0, "pp": 0.05}}


def _rows(a: float, c: float, shape: str) -> list[dict]:
    rows = []
    for dp, sim, exposed in ((4, 80.0, 0.2), (8, 40.0, 0.25), (16, 20.0, 0.3)):
        row = {"dp": dp, "sim": sim, "dp exposed": exposed, "grad GB": 3.6, "bubble": 0.5 + dp / 100}
        row["published"] = a * sim + c * dp_width_terms.shape_value(shape, row)
        rows.append(row)
    return rows


@pytest.mark.parametrize("shape", dp_width_terms.SHAPES)
def test_fit_recovers_a_known_rate_and_cost(shape):
    a, c, residual = dp_width_terms.fit(_rows(0.97, 1.1, shape), shape)
    assert a == pytest.approx(0.97, rel=1e-9)
    assert c == pytest.approx(1.1, rel=1e-9)
    assert residual < 1e-12


def test_row_facts_of_a_table2_row():
    row = dp_width_terms.row_facts("narayanan2021-t2-174.6b-384-a100", SUMMARY)
    assert (row["dp"], row["m"], row["gpus"], row["nodes"]) == (4, 384, 384, 48)
    assert row["bubble share"] == pytest.approx(11 / (4 * 384))
    # Table 2's 153 TFLOP/s on 384 GPUs in eq. 3's count: 76.78 s (docs/calibration/round-24.md "Round 24: new held-out
    # runs")
    assert row["published"] == pytest.approx(76.78, abs=0.01)
    assert row["dp exposed"] == 0.25 and row["sim"] == 78.0
    # fp16 gradients of the busiest stage's two-layer chunks (4 of them, 8 layers of 174.6B's 96, tp 8): ~3.6 GB
    assert 3.3 < row["grad GB"] < 3.9


def test_unreadable_cache_is_one_line_exit_2(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPTS / "dp_width_terms.py"), "--summaries",
                             str(tmp_path / "missing.jsonl")], capture_output=True, text=True,
                            cwd=SCRIPTS.parent, env={"PYTHONPATH": str(SCRIPTS.parent)})
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "error: --summaries: " in result.stderr
    assert "missing.jsonl: cannot read" in result.stderr


def test_row_facts_of_an_mtnlg_row():
    # Smith et al. 2022: 420 nodes, tp 8 pp 35 dp 12, global batch 1920 at micro batch 1 (160 microbatches a
    # pipeline); its 113 TFLOP/s in Megatron-DeepSpeed's count is the paper's 44.4 s within the rounding of the FLOP/s
    row = dp_width_terms.row_facts("smith2022-mtnlg-530b-420-a100", SUMMARY)
    assert (row["dp"], row["m"], row["gpus"], row["nodes"]) == (12, 160, 3360, 420)
    assert row["bubble share"] == pytest.approx(34 / 160)
    assert row["published"] == pytest.approx(44.4, rel=0.005)
    # the first stage's gradients: 3 layers of 12 h^2 (h = 20480) and the 51,200 x h word embedding over tp 8, the
    # 2048 x h position embedding whole, in the BF16_Optimizer's fp32 (4 B; the wire carries them as bf16, round 24,
    # a scale the fit's c absorbs)
    h = 20480
    assert row["grad GB"] == pytest.approx(((3 * 12 * h ** 2 + 51200 * h) / 8 + 2048 * h) * 4 / 1e9, rel=0.002)


def test_summaries_read_back_as_written(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_text(json.dumps({"a": SUMMARY}) + "\n\n" + json.dumps({"b": {**SUMMARY, "step_time_s": 1}}) + "\n")
    assert dp_width_terms.read_summaries(str(path)) == {"a": SUMMARY, "b": {**SUMMARY, "step_time_s": 1}}


@pytest.mark.parametrize("text, said", [
    ("not json", "line 1: not JSON"),                                   # a traceback before round 35's audit
    ("[1, 2]", "line 1: expected an object"),
    (json.dumps({"a": {"step_time_s": 1.0}}), "line 1: a: expected"),  # a KeyError traceback mid-report before
    ("\n" + json.dumps({"a": {**SUMMARY, "compute_s": float("nan")}}), "line 2: a: expected"),
    (json.dumps({"a": {**SUMMARY, "exposed": {"dp": -1}}}), "line 1: a: expected"),
    (None, "not a regular file"),                                       # a folder
])
def test_bad_summaries_name_the_option_and_the_line(tmp_path, text, said):
    path = tmp_path / "cache.jsonl"
    path.mkdir() if text is None else path.write_text(text)
    with pytest.raises(ScenarioError) as refused:
        dp_width_terms.read_summaries(str(path))
    assert refused.value.field == "--summaries" and said in str(refused.value)


@pytest.mark.parametrize("argv, said", [
    (["--series"], "expected at least one argument"),   # was an empty report, exit 0
    (["--series", "smith2022 MT-NLG 530B", "smith2022 MT-NLG 530B"], "given twice"),
    (["--series", "mtnlg"], "invalid choice"),
])
def test_bad_series_is_one_line_exit_2(argv, said, capsys, monkeypatch):
    monkeypatch.setattr(dp_width_terms, "simulate", lambda *a, **k: pytest.fail("simulated"))
    with pytest.raises(SystemExit) as exited:
        dp_width_terms.main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1 and "--series" in err and said in err
