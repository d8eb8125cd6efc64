"""scripts/once_per_step_terms.py (docs/calibration/round-35.md "Round 35: a missing once-per-step cost? (a study)"):
its fits recover a hand-made per-step cost and per-microbatch rate, refuse the forms one m cannot identify, a series is
one recipe's rows (MT-NLG's three node counts, m = 1920 / dp), and unreadable input is one line, exit 2."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))
import once_per_step_terms as terms  # noqa: E402


def _rows(ms, sim_per_mb, c, b):
    """Rows whose simulated step is sim_per_mb x m and whose published step adds c + b x m."""
    return [{"m": m, "sim": sim_per_mb * m, "published": sim_per_mb * m + c + b * m} for m in ms]


def test_c_plus_b_m_recovers_a_hand_made_cost():
    # m 10 / 20 / 40 at 0.1 s a microbatch: simulated 1 / 2 / 4 s; published adds 0.5 s + 10 ms a microbatch:
    # 1.6 / 2.7 / 4.9 s
    rows = _rows((10, 20, 40), 0.1, 0.5, 0.01)
    assert [r["published"] for r in rows] == pytest.approx([1.6, 2.7, 4.9])
    f = terms.fit(rows, "c+b m")
    assert (f["c"], f["b"], f["dof"]) == (pytest.approx(0.5), pytest.approx(0.01), 1)
    assert f["residual"] < 1e-12
    # the same rows as a rate and a constant: published = 1.1 x simulated + 0.5 exactly
    f = terms.fit(rows, "rate+const")
    assert (f["a"], f["c"]) == (pytest.approx(1.1), pytest.approx(0.5))
    # a constant alone: D = 0.6 / 0.7 / 0.9 s, mean 0.7333 s; worst row the first, |0.6 - 0.7333| / 1.6
    f = terms.fit(rows, "const")
    assert f["c"] == pytest.approx(2.2 / 3)
    assert f["residual"] == pytest.approx((2.2 / 3 - 0.6) / 1.6)
    # a rate alone: a = sum(sim x pub) / sum(sim^2) = (1.6 + 5.4 + 19.6) / 21
    assert terms.fit(rows, "rate")["a"] == pytest.approx(26.6 / 21)


def test_one_m_identifies_neither_c_with_b_nor_a_with_c():
    rows = [{"m": 4, "sim": s, "published": s + 0.2} for s in (1.0, 1.01, 1.03)]   # weak scaling: m fixed
    assert terms.fit(rows, "c+b m") is None and terms.fit(rows, "rate+const") is None
    assert terms.fit(rows, "const")["c"] == pytest.approx(0.2)
    assert terms.fit(rows[:1], "const")["dof"] == 0 and terms.fit(rows[:1], "rate+const") is None


def test_spearman_with_ties():
    """residuals.spearman, the one the drivers' rho uses: ranks (0, 1.5, 1.5, 3, 4) against (0, 1, 2, 3, 4),
    deviations (-2, -.5, -.5, 1, 2) and (-2, -1, 0, 1, 2): 9.5 / sqrt(9.5 x 10)."""
    assert terms.spearman([1, 2, 2, 5, 6], [1, 2, 3, 4, 5]) == pytest.approx((9.5 / 10) ** 0.5)
    assert math.isnan(terms.spearman([1, 1, 1, 1, 1], [1, 2, 3, 4, 5]))   # no spread


def test_mtnlg_is_one_series_with_m_from_dp():
    # Smith et al. 2022: tp 8 pp 35 at 280 / 350 / 420 nodes is dp 8 / 10 / 12, global batch 1920 at micro batch 1;
    # the published 113 TFLOP/s on 420 nodes is 44.4 s a step (the paper's)
    cases = [{"scenario": f"smith2022-mtnlg-530b-{n}-a100", "family": "smith2022", "metric": "model",
              "published_tflops": 100.0, "simulated_tflops": 100.0 * (1 + err), "step_time_s": sim}
             for n, sim, err in ((280, 51.0, 0.18), (350, 42.1, 0.19), (420, 36.2, 0.2265))]
    (rows,) = terms.series_of(cases)
    assert [(r["gpus"], r["dp"], r["m"]) for r in rows] == [(2240, 8, 240), (2800, 10, 192), (3360, 12, 160)]
    assert rows[-1]["published"] == pytest.approx(36.2 * 1.2265) and rows[-1]["bubble slots"] == 34
    assert rows[-1]["published"] == pytest.approx(44.4, rel=0.001)
    summary = terms.series_summary(rows)
    assert summary["verdict"].startswith("m varies") and summary["fits"]["c+b m"]["dof"] == 1


GOOD_CASE = {"scenario": "smith2022-mtnlg-530b-420-a100", "family": "smith2022", "published_tflops": 113.0,
             "simulated_tflops": 138.6, "step_time_s": 36.2}


@pytest.mark.parametrize("text, said", [
    (None, "no such file"), ("", "not json"), ("[1, 2", "not json"), ("{\"cases\": 3}", "'cases'"),
    ("{\"cases\": []}", "'cases'"), ("{\"cases\": [{\"error\": 0.1}]}", "cases[0].scenario"),
    # a published 0 TFLOP/s was a ZeroDivisionError traceback before round 35's audit; NaN a silent NaN step
    (json.dumps({"cases": [{**GOOD_CASE, "published_tflops": 0}]}), "cases[0].published_tflops"),
    (json.dumps({"cases": [{**GOOD_CASE, "step_time_s": float("nan")}]}), "cases[0].step_time_s"),
    ("dir", "not a regular file"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, text, said):
    path = tmp_path / "val.json"
    if text == "dir":
        path.mkdir()
    elif text is not None:
        path.write_text(text)
    good = tmp_path / "ho.json"
    good.write_text(json.dumps({"cases": [GOOD_CASE]}))
    result = subprocess.run([sys.executable, str(SCRIPTS / "once_per_step_terms.py"), str(path), str(good)],
                            capture_output=True, text=True, cwd=SCRIPTS.parent, env={"PYTHONPATH": str(SCRIPTS.parent)})
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "error: cal: " in result.stderr and said in result.stderr.lower()


def test_a_recipe_at_two_batches_is_also_two_curves():
    # MegaScale's Megatron-LM baseline (tp 8 pp 8 v 6): batch 768 at 256 / 512 GPUs (dp 4 / 8: m 192 / 96) and
    # batch 6144 at 3072 / 6144 GPUs (dp 48 / 96: m 128 / 64): the recipe, then each batch's curve
    cases = [{"scenario": f"megascale2024-megatron-175b-{g}-a100", "family": "megascale2024_megatron",
              "metric": "model", "published_tflops": 100.0, "simulated_tflops": 101.0, "step_time_s": 1.0}
             for g in (256, 512, 3072, 6144)]
    series = terms.series_of(cases)
    assert [[(r["gpus"], r["m"]) for r in s] for s in series] == [
        [(256, 192), (512, 96), (3072, 128), (6144, 64)], [(256, 192), (512, 96)], [(3072, 128), (6144, 64)]]
    assert series[1][0]["label"].endswith("batch 768") and series[2][0]["label"].endswith("batch 6144")


def test_straggler_trend_is_the_slowest_gpu_closed_form():
    # E[max of 8 standard normals] = 1.4236 (Harter 1961); of 1: 0. At cv 0.015: exp(0.015 x 1.4236) - 1 = 2.16%,
    # within Blom's approximation (1.4338 for 8: +0.7%)
    assert terms.straggler_trend(1, 8, cv=0.015) == pytest.approx(math.exp(0.015 * 1.4236) - 1, rel=0.01)
    assert terms.straggler_trend(64, 64, cv=0.015) == 0.0
    assert terms.straggler_trend(8, 1000) == pytest.approx(math.exp(0.015 * (3.2414 - 1.4236)) - 1, rel=0.02)


def test_csv_onto_an_input_is_refused(tmp_path):
    cal, ho = tmp_path / "cal.json", tmp_path / "ho.json"
    for path in (cal, ho):
        path.write_text(json.dumps({"cases": [GOOD_CASE]}))
    result = subprocess.run([sys.executable, str(SCRIPTS / "once_per_step_terms.py"), str(cal), str(ho),
                             "--csv", str(ho)], capture_output=True, text=True, cwd=SCRIPTS.parent,
                            env={"PYTHONPATH": str(SCRIPTS.parent)})
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--csv" in result.stderr
    assert json.loads(ho.read_text()) == {"cases": [GOOD_CASE]}   # the input kept
