"""scripts/residual_features.py's arithmetic on synthetic rows with known answers (no simulation):

- series weights: every series sums to 1, so a 24-row series weighs what a 1-row series does;
- a planted line inside and across series (error = 2 + 3 z points) comes back as slope 3 per sd across and within,
  with a bootstrap interval that holds it and every leave-one-series-out refit keeping its sign;
- Simpson's paradox: series whose levels run against their common inside slope give a negative across slope and
  the planted positive within slope; a feature constant inside every series has no within slope;
- a one-row series weighs what a 24-row series does (the weighted intercept is the mean of the series means);
  the series-mean variance share is 1 when the error is a function of the series;
- the refit of the fitted gap and pipeline step after a what-if recovers a planted gap, ignores held-out rows and
  keeps every calibration row within the 10% bound; the coverage table counts held-out rows outside the calibration's
  range of a share;
- a malformed input's one-line error and exit code 2.
"""

import json

import numpy as np
import pytest
from scripts_loader import load_script


@pytest.fixture(scope="module")
def rf():
    return load_script("residual_features")


def rows_of(xs, ys, series, key="hbm_share"):
    return [{"scenario": f"r{i}", "series": s, "stack": "mcore", "gpu_gen": "Hopper", "error": y / 100, key: x}
            for i, (x, y, s) in
            enumerate(zip(xs, ys, series, strict=True))]


def test_series_weights_sum_to_one_per_series(rf):
    labels = np.array(["a"] * 24 + ["b"] + ["c"] * 3)
    w = rf.series_weights(labels)
    for name in "abc":
        assert w[labels == name].sum() == pytest.approx(1.0)


def test_planted_line_across_and_within(rf):
    rng = np.random.default_rng(1)
    x = rng.normal(0.1, 0.02, 40)
    series = [f"s{i % 8}" for i in range(40)]
    rows = rows_of(x, 2 + 3 * (x - 0.1) / 0.02, series)
    d = rf.Design(rows, ("hbm_share",))
    slope_per_sd = 3 * d.sd[0] / 0.02
    assert rf.wls(d.z, d.y, d.w)[1] == pytest.approx(slope_per_sd, rel=1e-9)
    assert rf._within(d.z, d.y, d.w, d.labels)[0] == pytest.approx(slope_per_sd, rel=1e-9)
    table = rf.feature_table(rows, ("hbm_share",), draws=50)[0]
    lo, hi = table["across_ci"]
    assert lo == pytest.approx(slope_per_sd, rel=1e-6) and hi == pytest.approx(slope_per_sd, rel=1e-6)
    assert table["group"] == pytest.approx(slope_per_sd, rel=1e-9)   # one stack x GPU group: the across slope
    assert table["within_agree"] == table["within_series"] == 8
    assert table["own_median"] == pytest.approx(slope_per_sd, rel=1e-6)   # every series on the planted line
    assert table["agree"] == table["lofo_series"] == 8
    assert table["lofo"] == pytest.approx(0.0, abs=1e-9)
    assert table["baseline"] > 1.0


def test_simpsons_paradox_within_against_across(rf):
    xs, ys, series = [], [], []
    for level in range(5):   # series shifted right and down: across negative, inside +0.5 per unit
        for dx in (-1.0, 0.0, 1.0):
            xs.append(10.0 * level + dx)
            ys.append(-4.0 * level + 0.5 * dx)
            series.append(f"s{level}")
    d = rf.Design(rows_of(xs, ys, series), ("hbm_share",))
    assert rf.wls(d.z, d.y, d.w)[1] < 0
    assert rf._within(d.z, d.y, d.w, d.labels)[0] / d.sd[0] == pytest.approx(0.5, rel=1e-9)
    flat = rf.Design(rows_of([float(s[1]) for s in series], ys, series), ("hbm_share",))
    assert np.isnan(rf._within(flat.z, flat.y, flat.w, flat.labels)[0])
    assert rf.series_variance_share(np.array([-4.0 * int(s[1]) for s in series]), np.array(series)) == 1.0


def test_one_row_series_weighs_as_one_series(rf):
    # 24 rows at +5 points in one series, one row at -5 in another: the weighted mean is 0, the plain one +4.6
    y = np.array([5.0] * 24 + [-5.0])
    labels = np.array(["big"] * 24 + ["lone"])
    none = np.empty((25, 0))
    assert rf.wls(none, y, rf.series_weights(labels))[0] == pytest.approx(0.0, abs=1e-12)
    assert rf.wls(none, y, np.ones(25))[0] == pytest.approx(115 / 25)


def test_malformed_input_one_line_exit_2(rf, tmp_path, capsys):
    good = tmp_path / "cal.json"
    good.write_text(json.dumps({"cases": [{"scenario": "x", "source": "y", "family": "z", "step_time_s": 1.0,
                                           "error": 0.1}]}))
    bad = tmp_path / "ho.json"
    bad.write_text(json.dumps({"cases": [{"scenario": "x", "source": "y", "step_time_s": 1.0, "error": 0.1}]}))
    assert rf.main([str(good), str(bad), "--csv", str(tmp_path / "c.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "family" in err
    assert rf.main([str(good), str(good), "--boot", "3"]) == 2
    assert "--boot" in capsys.readouterr().err


def _row(**shares):
    row = {f"{k}_share": 0.0 for k in ("tc", "gemm", "attention", "hbm", "gap", "host", "pipe", "bubble")}
    row.update({f"{k}_share": v for k, v in shares.items()})
    return {"error": 0.0, **row}


def test_what_if_closed_forms(rf):
    # a part on the critical path: a 10% gap share doubled is a 10% longer step, so error 1 / 1.1 - 1
    assert rf.what_if(_row(gap=0.1, tc=0.9), {"gap": 2.0}) == pytest.approx(1 / 1.1 - 1)
    # inside the blocks with a bubble half as long as the blocks: the bubble grows with them, 0.2 x 0.5 x 1.5
    row = _row(tc=0.5, gemm=0.4, attention=0.1, bubble=0.25)
    assert rf.what_if(row, {"tc": 1.2}) == pytest.approx(1 / 1.15 - 1)
    assert rf.what_if(row, {"attention": 2.0}) == pytest.approx(1 / 1.15 - 1)
    # the bubble itself, and a factor of 1, which changes nothing
    assert rf.what_if(row, {"bubble": 1.4}) == pytest.approx(1 / 1.1 - 1)
    assert rf.what_if(row, {"gap": 1.0, "hbm": 1.0}) == 0.0


def test_refit_recovers_a_planted_gap_and_ignores_held_out_rows(rf):
    # calibration rows whose published steps are the simulated ones with tensor-core kernels 10% and the gap 20%
    # slower: after tc x1.1 only the gap x1.2 puts every row at 0 (linear, no bubble); the pipeline step has no share,
    # so every factor of it ties and the refit keeps x1; held-out rows, however wrong, move nothing
    cal = []
    for gap in (0.02, 0.05, 0.08, 0.11):
        row = _row(gap=gap, tc=1 - gap)
        row.update(set="cal", error=(0.1 * (1 - gap) + 0.2 * gap))
        cal.append(row)
    held = [{**_row(gap=0.3, tc=0.7), "set": "ho", "error": e} for e in (0.5, -0.4)]
    assert rf.refit(cal + held, {"tc": 1.1}) == (pytest.approx(1.2), pytest.approx(1.0))
    assert all(abs(rf.what_if(r, {"tc": 1.1, "gap": 1.2})) < 1e-12 for r in cal)
    # no change planted: today's fit comes back
    assert rf.refit([{**r, "error": 0.0} for r in cal], {}) == (pytest.approx(1.0), pytest.approx(1.0))
    with pytest.raises(rf.ScenarioError, match="--refit"):
        rf.refit(held, {"tc": 1.1})


def test_refit_keeps_every_calibration_row_within_the_bound(rf):
    # three rows of one gap share: the smallest mean |error| is the median row's gap x1, which leaves the first row 12%
    # fast; the refit must take the smallest mean among the factors with every row within 10%: the first factor of
    # the grid at which 1.12 / (1 + 0.3 (g - 1)) <= 1.10, g >= 1.0606, so x1.08 (x1.06 leaves it at 10.02%)
    rows = [{**_row(gap=0.3, tc=0.7), "set": "cal", "error": e} for e in (0.12, 0.0, 0.0)]
    gap, _ = rf.refit(rows, {})
    assert gap == pytest.approx(1.08)
    assert all(abs(rf.what_if(r, {"gap": gap})) <= rf.CAL_MAX_ERROR for r in rows)
    assert rf.what_if(rows[0], {"gap": 1.06}) > rf.CAL_MAX_ERROR


def test_coverage_counts_rows_outside_the_calibration_range(rf):
    rows = [{"set": "cal", "series": "c", "gap_share": g, "error": 0.0} for g in (0.02, 0.05)]
    rows += [{"set": "ho", "series": s, "gap_share": g, "error": e}
             for s, g, e in (("a", 0.01, 0.10), ("a", 0.03, 0.02), ("b", 0.06, 0.06), ("b", 0.05, 0.04))]
    (entry,), inside = rf.coverage(rows, ("gap_share",))
    assert (entry["low"], entry["high"], entry["outside"]) == (0.02, 0.05, 2)
    assert entry["mean_in"] == pytest.approx(3.0) and entry["mean_out"] == pytest.approx(8.0)
    assert [r["gap_share"] for r in inside] == [0.03, 0.05]   # the calibration's own end counts as inside
    assert rf.coverage([r for r in rows if r["set"] == "ho"], ("gap_share",)) == ([], [])


def test_what_if_bad_input_names_the_option(rf, capsys):
    for text in ("gap", "nope=2", "gap=x", "gap=-1", ","):
        with pytest.raises(rf.ScenarioError, match="--what-if"):
            rf.parse_what_if(text)


# ---- bad input (round 34 review, on main at ef44bb21): each case a traceback, a hang or a silent reuse before ----


def _cases(names_series):
    return {"cases": [{"scenario": n, "source": "s", "family": f, "step_time_s": 1.0, "error": 0.01 * i}
                      for i, (n, f) in enumerate(names_series)]}


def _cache_row(rf, name, **over):
    row = {k: "0.1" for k in rf.CSV_KEYS}
    row.update({k: "x" for k in rf.CATEGORICAL})
    row.update({"scenario": name, "step_s": "1.0", "code": rf.code_key(), **over})
    return row


def _write_cache(rf, path, rows, header=None):
    import csv
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header or rf.CSV_KEYS)
        for row in rows:
            writer.writerow(row if isinstance(row, list) else [row[k] for k in rf.CSV_KEYS])


@pytest.fixture
def inputs_of(rf, tmp_path):
    """(cal.json, ho.json, cache) for rows a, b of series s1, s2, every row cached for this code (no simulation)."""
    cal, ho, cache = tmp_path / "cal.json", tmp_path / "ho.json", tmp_path / "c.csv"
    cal.write_text(json.dumps(_cases([("a", "s1")])))
    ho.write_text(json.dumps(_cases([("b", "s2")])))
    _write_cache(rf, cache, [_cache_row(rf, "a"), _cache_row(rf, "b")])
    return cal, ho, cache


def _one_line_2(rf, capsys, args, *words):
    assert rf.main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and all(w in err for w in words), err
    return err


def test_refit_without_what_if_one_line(rf, inputs_of, capsys):
    cal, ho, cache = inputs_of
    _one_line_2(rf, capsys, [cal, ho, "--csv", cache, "--refit"], "--refit", "--what-if")


def test_too_few_series_one_line(rf, inputs_of, capsys):
    cal, ho, cache = inputs_of   # two series: a ValueError traceback in leave_one_series_out before
    _one_line_2(rf, capsys, [cal, ho, "--csv", cache, "--boot", 10], "2 series", "at least 3")
    _one_line_2(rf, capsys, [cal, ho, "--csv", cache, "--boot", 10, "--only", "a"], "1 series")


def test_fit_without_enough_series_is_skipped_with_its_reason(rf):
    rows = [{**{k: 0.1 * i + 0.01 * j for j, k in enumerate(rf.NUMERIC)}, "scenario": f"r{i}", "set": "cal",
             "series": f"s{i % 4}", "stack": "mcore", "gpu_gen": "Hopper", "error": 0.01 * (i % 3)}
            for i in range(1, 13)]
    for r in rows:   # mean_kernel_us known in series s0 and s1 only: the (kernels_per_ms, mean_kernel_us) fit
        if r["series"] not in ("s0", "s1"):
            r["mean_kernel_us"] = float("nan")
    lines = rf.report(rows, 10, ("r1",))
    assert any(line.strip().startswith("kernels_per_ms, mean_kernel_us: skipped") for line in lines)


@pytest.mark.parametrize("body, words", [
    (b"scenario\na\n", ("no column",)),
    (None, ("fewer fields", "line 3")),          # a short row: ValueError traceback before
    (b"\xff\xfe", ("not UTF-8",)),               # UnicodeDecodeError traceback before
    (b"\0\0", ("binary",)),
])
def test_bad_cache_file_one_line(rf, inputs_of, capsys, body, words):
    cal, ho, cache = inputs_of
    if body is None:
        _write_cache(rf, cache, [_cache_row(rf, "a"), list(_cache_row(rf, "b").values())[:5]])
    else:
        cache.write_bytes(body)
    _one_line_2(rf, capsys, [cal, ho, "--csv", cache], "--csv", *words)


@pytest.mark.parametrize("key, text", [("step_s", "nan"), ("hbm_share", "nan"), ("tp", "inf"), ("gpus", "")])
def test_non_finite_cached_feature_refused(rf, inputs_of, capsys, key, text):
    cal, ho, cache = inputs_of   # nan was read as a number before
    _write_cache(rf, cache, [_cache_row(rf, "a", **{key: text}), _cache_row(rf, "b")])
    _one_line_2(rf, capsys, [cal, ho, "--csv", cache], "--csv", key)
    # NaN where a valid row has it: an MoE row has no GEMM / attention split (residuals.op_shares)
    _write_cache(rf, cache, [_cache_row(rf, "a", gemm_share="nan", attention_share="nan")])
    assert np.isnan(rf.read_csv(cache)["a"]["gemm_share"])


def test_cache_not_a_regular_file_refused_at_once(rf, inputs_of, capsys):
    import os
    import signal
    cal, ho, cache = inputs_of
    fifo = cache.with_name("fifo")
    os.mkfifo(fifo)

    def hung(*_):
        raise TimeoutError("--csv FIFO: still waiting for a writer")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(5)   # the open of a FIFO without a writer waited forever before
    try:
        for path in (fifo, "/dev/zero"):   # /dev/zero: read until the memory ran out before
            _one_line_2(rf, capsys, [cal, ho, "--csv", path], "--csv", "not a regular file")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_cache_keyed_to_the_code(rf, inputs_of, monkeypatch, capsys):
    cal, ho, cache = inputs_of   # rows cached by another tree were reused without simulating before
    assert rf.code_key() in rf.default_csv().name
    _write_cache(rf, cache, [_cache_row(rf, "a", code="0123456789abcdef"), _cache_row(rf, "b")])
    simulated = []
    monkeypatch.setattr(rf, "simulate", lambda name: simulated.append(name) or
                        {k: float(v) for k, v in _cache_row(rf, name).items() if k not in rf.CATEGORICAL + ("code",)})
    rows = rf.load(cal, ho, cache)
    assert simulated == ["a"] and [r["scenario"] for r in rows] == ["a", "b"]
    assert "simulated by other code" in capsys.readouterr().err
    assert set(rf.read_csv(cache)) == {"a", "b"}   # rewritten with this code's key: read back without simulating
    header_without_code = [k for k in rf.CSV_KEYS if k != "code"]   # a cache of before the key: all simulated again
    _write_cache(rf, cache, [[_cache_row(rf, n)[k] for k in header_without_code] for n in "ab"], header_without_code)
    assert rf.read_csv(cache) == {}
