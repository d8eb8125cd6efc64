"""scripts/error_features.py on synthetic rows with known answers, and its config-derived features on bundled
scenarios (no simulation).

- a planted linear dependence (error = a + b x exactly) is ranked first (rho 1), its least-squares coefficient is b
  times the standard deviation of x, and its leave-one-family-out residual is 0 while the intercept-only model's is
  not;
- a feature that only separates families (constant inside each) has no within-family rho, and one whose slope inside
  every family is opposite to the slope across families (Simpson's paradox) shows the inside sign in every family;
- quantile bins never split tied values, all-equal values give one bin, NaN features are left out, the bin medians of
  a known series are its closed-form medians;
- the year parser, the GEMM intensity closed form (2n / 3b for a square n GEMM of b-byte operands), and a malformed
  input's one-line error and exit code 2. The stack family rule (simcluster/spec/stack.py): tests/unit/test_stack.py.
"""

import json
import math

import numpy as np
import pytest
from scripts_loader import load_script

from simcluster.spec import config


@pytest.fixture(scope="module")
def ef():
    return load_script("error_features")


def synthetic(n_per_family=8, families=("A", "B", "C", "D"), seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for f_index, family in enumerate(families):
        for i in range(n_per_family):
            x = float(rng.uniform(1, 10))
            rows.append({"stack": family, "set": "cal" if i % 3 == 0 else "ho", "x": x,
                         "noise": float(rng.normal()), "fam_level": float(f_index),
                         "error": 0.01 + 0.02 * x})
    return rows


def test_planted_linear_dependence_recovered(ef):
    rows = synthetic()
    ranked = ef.correlations(rows, ("noise", "x", "fam_level"))
    assert ranked[0]["feature"] == "x" and ranked[0]["all"] == pytest.approx(1.0)
    assert ranked[0]["within"] == pytest.approx(1.0) and ranked[0]["agree"] == ranked[0]["families"] == 4
    result = ef.leave_one_family_out(rows, ("x",))
    x = np.array([r["x"] for r in rows])
    assert result["coef"][1] == pytest.approx(0.02 * x.std())      # error per standard deviation of x
    assert result["coef"][0] == pytest.approx(0.01 + 0.02 * x.mean())
    assert result["lofo"] == pytest.approx(0.0, abs=1e-12)
    assert result["lofo_baseline"] > 0.02
    noise = ef.leave_one_family_out(rows, ("noise",))
    assert noise["lofo"] > 0.5 * noise["lofo_baseline"]             # an unrelated feature does not generalise


def test_log_scaled_feature_fits_a_power_law(ef):
    rows = [{"stack": "AB"[i % 2], "set": "ho", "g": 2.0 ** i, "error": 0.05 * i} for i in range(1, 9)]
    result = ef.leave_one_family_out(rows, ("g",), log={"g"})   # error linear in log10 g
    assert result["lofo"] == pytest.approx(0.0, abs=1e-12)


def test_family_level_confound_has_no_within_family_rho(ef):
    rows = synthetic()
    for r in rows:   # error set by the family only
        r["error"] = [0.0, 0.1, -0.05, 0.03][int(r["fam_level"])]
    rho, families, agree = ef.within_family_rho(rows, "fam_level")
    assert math.isnan(rho) and families == 0 and agree == 0
    assert not math.isnan(ef.spearman(ef.column(rows, "fam_level"), ef.column(rows, "error")))


def test_simpsons_paradox_shows_inside_sign(ef):
    rows = []
    for k, family in enumerate("ABCD"):   # inside: error rises with x; across: later families sit higher in x, lower
        for i in range(5):
            rows.append({"stack": family, "set": "ho", "x": 10.0 * k + i, "error": -0.1 * k + 0.01 * i})
    rho_all = ef.spearman(ef.column(rows, "x"), ef.column(rows, "error"))
    rho_in, families, agree = ef.within_family_rho(rows, "x")
    assert rho_all < -0.5 and rho_in == pytest.approx(1.0) and (families, agree) == (4, 0)


def test_bins_keep_ties_together(ef):
    values = np.array([1.0, 1.0, 1.0, 1.0, 2.0, 3.0])
    edges = ef.bin_edges(values, 4)
    assert list(edges) == [1.0, 2.0, 3.0]   # the 25% and 50% quantiles are both the tied 1: one bin
    rows = [{"v": v, "error": e} for v, e in zip(values, (0.1, 0.2, 0.3, 0.4, -0.5, 0.9), strict=True)]
    bins = ef.bin_medians(rows, "v", 4)
    assert [(label, n) for label, n, _ in bins] == [("1", 4), ("2", 1), ("3", 1)]
    assert bins[0][2] == pytest.approx(0.25) and bins[1][2] == pytest.approx(-0.5)


def test_bins_all_equal_and_nan(ef):
    rows = [{"v": 5.0, "error": 0.01 * i} for i in range(7)] + [{"v": math.nan, "error": 1.0}]
    bins = ef.bin_medians(rows, "v", 4)
    assert bins == [("5", 7, pytest.approx(0.03))]


def test_bin_medians_closed_form(ef):
    rows = [{"v": float(i), "error": float(i)} for i in range(1, 9)]
    bins = ef.bin_medians(rows, "v", 4)
    assert [(label, n, med) for label, n, med in bins] == [("1..2", 2, 1.5), ("3..4", 2, 3.5), ("5..6", 2, 5.5),
                                                            ("7..8", 2, 7.5)]


def test_run_year(ef):
    sources = {"nemo_2407": "NeMo performance summary, container 24.07", "llmfoundry": "MosaicML README",
               "paper": "Someone et al. 2023, arXiv, citing a 2021 method", "nemo_2511": "container 25.11 (2021 ref)"}
    assert ef.run_year("megatron_core_h100_2024", sources) == 2024
    assert ef.run_year("nemo_2407", sources) == 2024
    assert ef.run_year("nemo_2511", sources) == 2025
    assert ef.run_year("paper", sources) == 2023
    assert math.isnan(ef.run_year("llmfoundry", sources))


def test_mlp_intensity_closed_form(ef):
    assert ef.mlp_intensity(4096, 4096, 4096, 2.0) == pytest.approx(2 * 4096 / 6)
    assert ef.mlp_intensity(4096, 4096, 4096, 1.0) == pytest.approx(2 * 4096 / 3)
    # a thin GEMM (m rows much smaller than n = k) approaches m FLOP per byte at 2-byte operands
    assert ef.mlp_intensity(16, 1 << 20, 1 << 20, 2.0) == pytest.approx(16, rel=1e-3)


def test_derived_features_of_a_row(ef):
    s = config.load("nemo2409-gpt3-175b-128-h100-bf16")
    d = ef.derived(s, "nemo_dgx_h100_2024", {})
    p, t, m = s.parallelism, s.training, s.model
    assert d["gpu_gen"] == "Hopper" and d["year"] == 2024
    assert d["gemm_hidden_tp"] == m.hidden / p.tp and d["gemm_ffn_tp"] == m.ffn / p.tp
    assert d["mlp_intensity"] == pytest.approx(ef.mlp_intensity(t.seq_len * t.micro_batch_size / p.cp,
                                                                 m.ffn / p.tp, m.hidden, 2.0))
    assert 170 < d["params_b"] < 180


def test_malformed_input_one_line_exit_2(ef, tmp_path, capsys):
    good = tmp_path / "cal.json"
    good.write_text(json.dumps({"cases": [{"scenario": "x", "source": "y", "family": "z", "step_time_s": 1.0,
                                           "error": 0.1}]}))
    bad = tmp_path / "ho.json"
    bad.write_text(json.dumps({"cases": [{"scenario": "x", "source": "y", "family": "z", "step_time_s": 1.0}]}))
    assert ef.main([str(good), str(bad), "--cache", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cases[0].error" in err
    assert ef.main([str(good), str(tmp_path / "missing.json")]) == 2


def test_coverage_flag_follows_the_calibration_rows(ef):
    rows = [{"stack": "A", "set": "cal"}, {"stack": "A", "set": "ho"}, {"stack": "B", "set": "ho"},
            {"stack": "C", "set": "ho"}, {"stack": "C", "set": "cal"}]
    assert [r["stack_calibrated"] for r in ef.mark_coverage(rows)] == [1.0, 1.0, 0.0, 1.0, 1.0]


def test_report_runs_on_synthetic_rows(ef):
    rows = synthetic()
    for r in rows:   # every feature the report ranks, as noise; x planted
        for key in ef.NUMERIC:
            r.setdefault(key, r["noise"] * (1 + ef.NUMERIC.index(key)) + 100.0)
        r.update(release=r["stack"], gpu_gen="Hopper", precision="bf16", stack_calibrated=float(r["stack"] == "A"))
    text = "\n".join(ef.report(rows))
    assert "stack_calibrated" in text and "lofo" in text and "uncalibrated" in text


def test_host_ratio_is_the_plans_host_over_device_side(ef):
    from simcluster.engine.simulation import Simulation
    s = config.load("nemo2409-llama31-8b-8-h100-bf16")
    plan = Simulation(s, check_memory=False).plan
    ratio = ef.host_ratio(s)
    streams = [st for c in plan.chunks for st in (c.forward_stream, c.backward_stream)]
    assert ratio == pytest.approx(max(st.host_bound_s() / st.device_bound_s() for st in streams))
    assert 0 < ratio < 1   # no calibration block is host-bound (round 17, te_host_margin.py)
