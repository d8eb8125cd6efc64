"""scripts/heldout_residuals.py's arithmetic on synthetic rows with known answers (no simulation):

- a planted line (error = 0.01 + 0.02 x) gives slope 0.02, intercept 0.01, r 1, in the cross-section and within
  series;
- series whose levels run against their common inside slope (Simpson's paradox): the cross-section slope is negative,
  the within-series (fixed-effect) slope is the planted +0.5 with r 1; a feature constant inside every series has no
  within-series slope and no varying series;
- coverage: the calibration rows' range and the held-out rows outside it, with their mean errors by hand;
- the series means' share of the variance: 1 when the error is a function of the series, 0 when every series has the
  same mean;
- quantile groups (rows, median, mean, fast) of a known series, levels held out but never calibrated, log10 with
  non-positive values as NaN, and a malformed input's one-line error with exit code 2.
"""

import json
import math

import numpy as np
import pytest
from scripts_loader import load_script


@pytest.fixture(scope="module")
def hr():
    return load_script("heldout_residuals")


def test_planted_line(hr):
    x = np.arange(1.0, 9.0)
    fit = hr.ols(x, 0.01 + 0.02 * x)
    assert fit["slope"] == pytest.approx(0.02) and fit["intercept"] == pytest.approx(0.01)
    assert fit["r"] == pytest.approx(1.0) and fit["n"] == 8
    within = hr.within_series(x, 0.01 + 0.02 * x, np.array(list("AABBCCDD")))
    assert within["slope"] == pytest.approx(0.02) and within["r"] == pytest.approx(1.0)
    assert within["series_n"] == 4 and within["n"] == 8


def test_ols_degenerate(hr):
    assert math.isnan(hr.ols(np.ones(5), np.arange(5.0))["slope"])           # constant feature
    assert math.isnan(hr.ols(np.array([1.0, 2.0]), np.array([1.0, 2.0]))["r"])   # fewer than 3 rows
    fit = hr.ols(np.array([1.0, 2.0, np.nan, 3.0]), np.array([2.0, 4.0, 5.0, 6.0]))
    assert fit["n"] == 3 and fit["slope"] == pytest.approx(2.0)


def test_fixed_effect_undoes_simpsons_paradox(hr):
    x = np.array([1.0, 2.0, 3.0, 11.0, 12.0, 13.0])
    series = np.array(list("AAABBB"))
    y = np.where(series == "A", 10.0, -10.0) + 0.5 * x
    assert hr.ols(x, y)["slope"] < 0
    within = hr.within_series(x, y, series)
    assert within["slope"] == pytest.approx(0.5) and within["r"] == pytest.approx(1.0)
    assert (within["agree"], within["signed"]) == (2, 2)
    level_only = hr.within_series(np.where(series == "A", 1.0, 2.0), y, series)
    assert math.isnan(level_only["slope"]) and level_only["series_n"] == 0 and level_only["n"] == 0


def test_series_signs_counted(hr):
    x = np.tile([1.0, 2.0, 3.0], 3)
    series = np.repeat(np.array(list("ABC")), 3)
    y = np.concatenate([0.3 * x[:3], 0.3 * x[3:6], -0.1 * x[6:]])   # two series up, one down: pooled slope +1/6
    within = hr.within_series(x, y, series)
    assert within["slope"] == pytest.approx(0.5 / 3) and (within["agree"], within["signed"]) == (2, 3)


def test_single_row_series_is_left_out(hr):
    x = np.array([1.0, 2.0, 3.0, 50.0])
    y = np.array([0.1, 0.2, 0.3, -9.0])          # the lone row of series B would wreck the slope
    within = hr.within_series(x, y, np.array(list("AAAB")))
    assert within["slope"] == pytest.approx(0.1) and within["n"] == 3


def test_coverage_by_hand(hr):
    cal = [{"x": 2.0}, {"x": 5.0}, {"x": 3.0}]
    held = [{"x": 1.0, "error": 0.1}, {"x": 3.0, "error": 0.0}, {"x": 6.0, "error": 0.3},
            {"x": math.nan, "error": 9.0}]
    c = hr.coverage(cal, held, "x")
    assert (c["low"], c["high"], c["outside"]) == (2.0, 5.0, 2)
    assert c["err_out"] == pytest.approx(0.2) and c["err_in"] == pytest.approx(0.0)
    none = hr.coverage([{"x": math.nan}], held, "x")
    assert none["outside"] == 0 and math.isnan(none["low"])


def test_between_series_share(hr):
    by_series = [{"set": "ho", "family": f, "error": e} for f, e in (("A", 0.1), ("A", 0.1), ("B", -0.2))]
    assert hr.between_series_share(by_series) == (pytest.approx(1.0), 2)
    same_means = [{"set": "ho", "family": f, "error": e}
                  for f, e in (("A", 0.1), ("A", -0.1), ("B", 0.2), ("B", -0.2))]
    assert hr.between_series_share(same_means + [{"set": "cal", "family": "C", "error": 5.0}]) == (
        pytest.approx(0.0), 2)


def test_grouped_quantile_bins(hr):
    rows = [{"set": "ho", "x": float(i), "error": e} for i, e in
            enumerate([-0.1, 0.1, 0.2, 0.3, 0.0, 0.4, 0.6, 0.8], start=1)]
    rows.append({"set": "cal", "x": 1.0, "error": 5.0})            # calibration rows are not grouped
    groups = hr.grouped(rows, "x", bins=2)
    assert [g[:2] for g in groups] == [("1..4", 4), ("5..8", 4)]
    assert groups[0][2] == pytest.approx(0.15) and groups[0][3] == pytest.approx(0.125) and groups[0][4] == 3
    assert groups[1][2] == pytest.approx(0.5) and groups[1][3] == pytest.approx(0.45) and groups[1][4] == 3


def test_uncovered_levels(hr):
    rows = [{"set": "cal", "gpu": "a"}, {"set": "ho", "gpu": "a", "error": 1.0},
            {"set": "ho", "gpu": "b", "error": 0.1}, {"set": "ho", "gpu": "b", "error": -0.3},
            {"set": "ho", "gpu": "c", "error": 0.2}]
    levels = hr.uncovered_levels(rows, "gpu")
    assert levels[0][0] == "b" and levels[0][1] == 2 and levels[0][2] == pytest.approx(-0.1)
    assert levels[0][4] == 1 and levels[1][:2] == ("c", 1)


def test_crossed_levels(hr):
    rows = [{"set": "cal", "gpu": "a", "attention": "x", "error": 9.0},
            {"set": "ho", "gpu": "a", "attention": "x", "error": 0.1},
            {"set": "ho", "gpu": "a", "attention": "y", "error": 0.2},
            {"set": "ho", "gpu": "a", "attention": "y", "error": -0.4}]
    levels = hr.crossed_levels(rows)
    assert levels[0][:3] == ("a / y", 0, 2) and levels[0][3] == pytest.approx(-0.1) and levels[0][5] == 1
    assert levels[1][:3] == ("a / x", 1, 1) and levels[1][4] == pytest.approx(0.1)


def test_log_values(hr):
    x = hr.values([{"k": 100.0}, {"k": 0.0}, {"k": -1.0}, {"k": 1.0}], "k", log=True)
    assert x[0] == pytest.approx(2.0) and math.isnan(x[1]) and math.isnan(x[2]) and x[3] == 0.0


def test_report_on_synthetic_rows(hr):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(40):
        row = {"set": "cal" if i % 4 == 0 else "ho", "family": "ABCD"[i % 4 if i % 4 else 1],
               "gpu": "g1" if i % 2 else "g2", "precision": "bf16", "stack": "s", "attention": "flash"}
        for key in hr.FEATURES:
            row[key] = float(rng.uniform(1, 10))
        row["error"] = 0.02 * row["pp"] + 0.01 * rng.normal()
        rows.append(row)
    text = "\n".join(hr.report(rows, top=2))
    assert "series means alone explain" in text and "pp (log)" in text


def test_malformed_input_one_line_exit_2(hr, tmp_path, capsys):
    good = tmp_path / "cal.json"
    good.write_text(json.dumps({"cases": [{"scenario": "x", "source": "y", "family": "z", "step_time_s": 1.0,
                                           "error": 0.1}]}))
    bad = tmp_path / "ho.json"
    bad.write_text(json.dumps({"cases": [{"scenario": "x", "source": "y", "family": "z", "step_time_s": 1.0}]}))
    assert hr.main([str(good), str(bad), "--cache", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cases[0].error" in err
    assert hr.main([str(good), str(tmp_path / "missing.json")]) == 2
