"""`simcluster validate --json`: every case with its error, and the statistics."""

import json


def test_validate_json_lists_cases_and_error_statistics(cli):
    code, out, _ = cli("validate", "--only", "a100-node", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["case_count"] == len(report["cases"]) == 4
    for case in report["cases"]:
        assert case["error"] == case["simulated_tflops"] / case["published_tflops"] - 1
    assert report["max_abs_error"] == max(abs(c["error"]) for c in report["cases"])


def test_validate_held_out_runs_the_held_out_set_with_memory(cli):
    code, out, _ = cli("validate", "--held-out", "--only", "narayanan2021-1.7b", "--json")
    assert code == 0
    (case,) = json.loads(out)["cases"]
    assert case["scenario"] == "narayanan2021-1.7b-a100" and case["published_tflops"] == 137.0
    assert case["fits"] and 0 < case["memory_bytes"] < 80e9


def test_validate_table_shows_error_per_series_and_precision(cli):
    code, out, _ = cli("validate", "--held-out", "--only", "mpt-7b-8")
    assert code == 0 and "error per series and precision" in out and "llmfoundry/bf16" in out


def test_validate_json_reports_error_per_series(cli):
    code, out, _ = cli("validate", "--only", "a100-node", "--json")
    by_series = json.loads(out)["by_series"]
    assert list(by_series) == ["megatron_a100_2021/fp16"] and by_series["megatron_a100_2021/fp16"]["case_count"] == 4


def test_only_matching_no_case_is_a_one_line_usage_error(cli):
    code, _, err = cli("validate", "--held-out", "--only", "no-such-run")
    assert code == 2 and err.strip() == "error: --only: no held-out case's scenario contains 'no-such-run'"


def test_validate_variability_runs_every_case_with_it_and_default_stays_off(cli):
    # a what-if: every GPU waits for the slowest of its run; a straggler-free spread only slows a synchronous step
    # (megatron-1.2b-a100-dp: 64 GPUs, so the slowest of 64 draws sets the pace, E = 2.34 sigma)
    code, plain, _ = cli("validate", "--only", "megatron-1.2b-a100-dp", "--json")
    assert code == 0
    code, spread, _ = cli("validate", "--only", "megatron-1.2b-a100-dp", "--json",
                          "--variability", "measured,kernel_jitter_cv=0")
    assert code == 0
    plain, spread = json.loads(plain), json.loads(spread)
    assert "variability" not in plain
    assert spread["variability"]["gpu_speed_cv"] == 0.015 and spread["variability"]["kernel_jitter_cv"] == 0
    (before,), (after,) = plain["cases"], spread["cases"]
    assert after["step_time_s"] > before["step_time_s"] * 1.01


def test_validate_variability_bad_value_names_the_field(cli):
    code, _, err = cli("validate", "--only", "a100-node", "--variability", "gpu_speed_cv=2")
    assert code == 2 and err.strip().startswith("error: --variability gpu_speed_cv:")
    code, _, err = cli("validate", "--only", "a100-node", "--variability", "fast")
    assert code == 2 and "error: --variability: expected 'measured', 'off' or key=value pairs" in err


def test_validate_json_adds_trends_and_keeps_every_other_key(cli):
    code, out, _ = cli("validate", "--only", "megatron-1.2b-a100", "--json")
    assert code == 0
    report = json.loads(out)
    assert set(report) == {"cases", "median_abs_error", "max_abs_error", "case_count", "by_series", "partial",
                           "pending", "trends"}
    assert set(report["cases"][0]) == {"scenario", "metric", "published_tflops", "simulated_tflops", "source",
                                       "memory_bytes", "fits", "family", "precision", "step_time_s", "note", "error"}
    assert report["cases"][0]["note"] == ""          # a full simulation (only --steady-state extrapolates)
    (series,) = report["trends"]["series"]
    node, dp = report["cases"]                      # 1 GPU, then 128 GPUs data parallel
    assert [p["scenario"] for p in series["points"]] == [node["scenario"], dp["scenario"]]
    assert [p["gpus"] for p in series["points"]] == [1, 128]
    assert abs(series["end_trend_error"] - ((1 + dp["error"]) / (1 + node["error"]) - 1)) < 1e-12


def test_validate_table_shows_the_trend_series(cli):
    code, out, _ = cli("validate", "--only", "megatron-1.2b-a100")
    assert code == 0 and "scaling trends" in out and "megatron_a100_2021/gpt-1.16b-megatron2021" in out
