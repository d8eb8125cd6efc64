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
