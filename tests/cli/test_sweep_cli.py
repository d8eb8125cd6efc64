"""`simcluster sweep` as a user runs it: one table of results, plots, a rerun that reuses every shard."""

import json

import pandas as pd
import pytest


def _frame(out):
    path = out / "results.parquet"
    return pd.read_parquet(path) if path.exists() else pd.read_csv(out / "results.csv")


def test_sweep_writes_results_plots_and_resumes_from_its_shards(cli, write_scenario, small_scenario, tmp_path):
    out = tmp_path / "sweep"
    args = ("sweep", write_scenario(small_scenario), "--gpus", "8,...,32", "--topology", "rail-fat-tree",
            "--topology", "leaf-spine:oversubscription=4", "--network", "analytic", "--jobs", "1", "--out", out)
    code, stdout, _ = cli(*args)
    assert code == 0
    assert "6 runs: 6 computed, 0 reused from shards, 0 failed" in stdout
    assert "rail-fat-tree" in stdout and "knee" in stdout or "efficiency stays" in stdout
    frame = _frame(out)
    assert len(frame) == 6 and set(frame["gpus"]) == {8, 16, 32}
    assert (frame["layout_tp"] * frame["layout_pp"] * frame["layout_dp"] * frame["layout_cp"] == frame["gpus"]).all()
    smallest = frame[frame["gpus"] == 8]
    assert smallest["efficiency"].tolist() == pytest.approx([1.0, 1.0])
    for name in ("scaling.png", "scaling.pdf", "time_and_cost.png", "time_and_cost.pdf", "sweep.json"):
        assert (out / name).is_file()
    assert len(list((out / "shards").glob("*.json"))) == 6
    code, stdout, _ = cli(*args, "--no-plots")
    assert code == 0 and "6 runs: 0 computed, 6 reused from shards" in stdout
    code, stdout, _ = cli(*args, "--fresh", "--no-plots")
    assert code == 0 and "6 runs: 6 computed, 0 reused" in stdout


def test_sweep_json_reports_series_knees_and_failures(cli, write_scenario, small_scenario, tmp_path):
    code, stdout, _ = cli("sweep", write_scenario(small_scenario), "--gpus", "8,16", "--vary", "tp=2,3",
                          "--network", "analytic", "--jobs", "1", "--json", "--no-plots", "--out", tmp_path / "s")
    assert code == 0
    report = json.loads(stdout)
    assert report["executed"] == 4 and report["reused"] == 0
    assert [group["label"] for group in report["series"]] == ["rail-fat-tree tp=2"]
    assert {(f["params"]["parallelism.tp"], f["params"]["gpus"]) for f in report["failed"]} == {(3, 8), (3, 16)}
    knee = report["series"][0]["knee"]
    assert knee["threshold"] == 0.8 and knee["knee_gpus"] in (8, 16)
    assert len(report["rows"]) == 4


def test_sweep_where_every_run_fails_is_a_user_error(cli, write_scenario, small_scenario, tmp_path):
    code, _, err = cli("sweep", write_scenario(small_scenario), "--gpus", "6,12", "--jobs", "1",
                       "--out", tmp_path / "s")
    assert code == 2
    last = err.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith("error: sweep: all 2 runs failed") and "whole number of 8-GPU nodes" in last


def test_jobs_and_scheduler_together_are_refused(cli, write_scenario, small_scenario, tmp_path):
    code, _, err = cli("sweep", write_scenario(small_scenario), "--jobs", "2", "--scheduler", "tcp://127.0.0.1:1",
                       "--out", tmp_path / "s")
    assert code == 2 and err.startswith("error: --jobs:")


def test_results_table_fits_80_columns_with_long_fabric_labels(cli, write_scenario, small_scenario, tmp_path):
    code, stdout, _ = cli("sweep", write_scenario(small_scenario), "--gpus", "8,16", "--topology",
                          "leaf-spine:oversubscription=4,protocol=ethernet", "--topology", "rail-fat-tree",
                          "--network", "analytic", "--jobs", "1", "--no-plots", "--out", tmp_path / "s")
    assert code == 0
    table = stdout[:stdout.index("runs:")]
    assert max(len(line) for line in table.splitlines()) <= 80
    assert "e+0" not in table and "e-0" not in table  # counts, days and money without exponent notation
    assert "1. leaf-spine:oversubscription=4,protocol=ethernet" in stdout  # the legend gives the full label
