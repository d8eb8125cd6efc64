"""`simcluster run` as a user runs it: summary on stdout, files written, runs never overwritten."""

import json
import subprocess
import sys


def test_run_json_prints_the_contract_keys_and_writes_outputs(cli, write_scenario, small_scenario, tmp_path):
    out = tmp_path / "run"
    code, stdout, _ = cli("run", write_scenario(small_scenario), "--json", "--out", out)
    assert code == 0
    summary = json.loads(stdout)
    from simcluster.engine.results import SUMMARY_KEYS

    assert set(SUMMARY_KEYS) <= set(summary)
    assert summary["gpus"] == 16 and summary["network_model"] == "flow"
    written = {p.name for p in out.iterdir()}
    assert {"summary.json", "links.csv", "trace.json.gz"} <= written and "timeline.png" not in written
    assert "events.csv" in written or "events.parquet" in written


def test_plot_draws_the_timeline(cli, write_scenario, small_scenario, tmp_path):
    out = tmp_path / "run"
    assert cli("run", write_scenario(small_scenario), "--json", "--plot", "--network", "analytic", "--out", out)[0] == 0
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_second_run_goes_to_a_new_folder(cli, write_scenario, small_scenario, tmp_path):
    out = tmp_path / "run"
    path = write_scenario(small_scenario)
    assert cli("run", path, "--out", out, "--json")[0] == 0
    first = (out / "summary.json").read_text()
    assert cli("run", path, "--out", out, "--json", "--network", "analytic")[0] == 0
    assert (out / "summary.json").read_text() == first  # untouched
    assert json.loads((tmp_path / "run-2" / "summary.json").read_text())["network_model"] == "analytic"


def test_readable_summary_table(cli, write_scenario, small_scenario, tmp_path):
    code, stdout, _ = cli("run", write_scenario(small_scenario), "--out", tmp_path / "o")
    assert code == 0
    for label in ("step time", "exposed communication", "pipeline bubble", "MFU", "memory: activations"):
        assert label in stdout


def test_unknown_network_model_is_a_user_error(cli, write_scenario, small_scenario, tmp_path):
    code, _, err = cli("run", write_scenario(small_scenario), "--network", "psychic", "--out", tmp_path / "o")
    assert code == 2 and err.startswith("error: --network: unknown network model 'psychic'")


def test_layout_that_does_not_fit_fails_before_simulating(cli, write_scenario, small_scenario, tmp_path):
    small_scenario["model"] = "gpt3-175b"
    small_scenario["parallelism"] = {"tp": 1, "pp": 1, "dp": 16}
    small_scenario["training"]["global_batch_size"] = 16
    code, _, err = cli("run", write_scenario(small_scenario), "--out", tmp_path / "o")
    assert code == 2
    assert "error: parallelism:" in err and "weights" in err and "optimizer" in err
    assert not (tmp_path / "o").exists()


def test_option_type_errors_are_one_line_with_exit_2(cli):
    code, _, err = cli("run", "--steps", "0")
    assert code == 2
    assert err.startswith("error: Invalid value for '--steps'") and err.count("\n") == 1


def test_no_memory_check_simulates_an_oversized_layout_and_reports_its_memory(cli, write_scenario, small_scenario,
                                                                              tmp_path):
    small_scenario["model"] = "gpt3-175b"
    small_scenario["parallelism"] = {"tp": 1, "pp": 1, "dp": 16}
    small_scenario["training"]["global_batch_size"] = 16
    path = write_scenario(small_scenario)
    assert cli("run", path, "--out", tmp_path / "refused")[0] == 2
    code, stdout, err = cli("run", path, "--no-memory-check", "--json", "--out", tmp_path / "o")
    assert code == 0 and "warning: the memory model puts this layout at" in err
    assert json.loads(stdout)["peak_memory_per_gpu_bytes"] > 175e9 * (2 + 2)  # 16-bit weights and gradients


def test_trace_ranks_limits_the_processes_in_the_chrome_trace(cli, write_scenario, small_scenario, tmp_path):
    import gzip

    code, _, _ = cli("run", write_scenario(small_scenario), "--expand", "--trace-ranks", "3", "--out", tmp_path / "o")
    assert code == 0
    trace = json.loads(gzip.decompress((tmp_path / "o" / "trace.json.gz").read_bytes()))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    assert len({e["pid"] for e in events}) == 3


def test_samples_report_step_time_percentiles_over_seeds(cli, write_scenario, small_scenario, tmp_path):
    small_scenario["variability"] = {"gpu_speed_cv": 0.05, "kernel_jitter_cv": 0.02, "seed": 4}
    small_scenario["network"] = "analytic"
    code, stdout, _ = cli("run", write_scenario(small_scenario), "--samples", "5", "--json", "--out", tmp_path / "o")
    assert code == 0
    summary = json.loads(stdout)
    times = summary["step_time_samples_s"]
    assert summary["samples"] == 5 and len(set(times)) == 5  # five seeds, five different steps
    assert min(times) <= summary["step_time_p50_s"] <= summary["step_time_p90_s"] <= summary["step_time_p99_s"]
    assert summary["step_time_p99_s"] <= max(times)
    # the files and the headline figures are the median sample's; its seed is the base seed + its index
    assert summary["step_time_s"] == sorted(times)[2]
    assert summary["variability"]["seed"] == 4 + summary["median_sample"]


def test_samples_without_variability_are_identical(cli, write_scenario, small_scenario, tmp_path):
    small_scenario["network"] = "analytic"
    code, stdout, _ = cli("run", write_scenario(small_scenario), "--samples", "3", "--json", "--out", tmp_path / "o")
    summary = json.loads(stdout)
    assert code == 0 and summary["step_time_p50_s"] == summary["step_time_p99_s"] == summary["step_time_s"]


def test_a_run_loads_neither_pandas_nor_matplotlib(write_scenario, small_scenario, tmp_path):
    # the fixed cost of a command (issue 19): pandas (about 0.2 s to import) and matplotlib are loaded where a
    # DataFrame or a plot is asked for, not by `simcluster run` writing its summary, tables and trace
    args = ["run", str(write_scenario(small_scenario)), "--out", str(tmp_path / "o"), "--json"]
    code = (f"import sys; from simcluster.cli import main; code = main({args!r}); "
            "print(code, 'pandas' in sys.modules, 'matplotlib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split()[-3:] == ["0", "False", "False"]
    assert {p.name for p in (tmp_path / "o").iterdir()} >= {"summary.json", "events.csv", "links.csv", "trace.json.gz"}
