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
