"""scripts/residual_features.py's arithmetic on synthetic rows with known answers (no simulation):

- series weights: every series sums to 1, so a 24-row series weighs what a 1-row series does;
- a planted line inside and across series (error = 2 + 3 z points) comes back as slope 3 per sd across and within,
  with a bootstrap interval that holds it and every leave-one-series-out refit keeping its sign;
- Simpson's paradox: series whose levels run against their common inside slope give a negative across slope and
  the planted positive within slope; a feature constant inside every series has no within slope;
- a one-row series weighs what a 24-row series does (the weighted intercept is the mean of the series means);
  the series-mean variance share is 1 when the error is a function of the series;
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
