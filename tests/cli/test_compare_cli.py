"""`simcluster compare` as a user runs it: one column per fabric, the step time split three ways, plots."""

import csv
import json

import pytest


def test_compare_json_has_one_run_per_fabric_and_a_consistent_breakdown(cli, write_scenario, small_scenario,
                                                                        tmp_path):
    out = tmp_path / "cmp"
    code, stdout, _ = cli("compare", write_scenario(small_scenario), "--topology", "rail-fat-tree",
                          "--topology", "leaf-spine:oversubscription=4", "--network", "analytic", "--json",
                          "--out", out)
    assert code == 0
    report = json.loads(stdout)
    assert [run["label"] for run in report["runs"]] == ["rail-fat-tree", "leaf-spine:oversubscription=4"]
    for run in report["runs"]:
        s, e = run["summary"], run["economics"]
        assert s["gpus"] == 16 and s["network_model"] == "analytic"
        # the three parts of a step add up to it (pipeline bubble is the remainder, clipped at zero)
        assert s["compute_s"] + s["exposed_comm_s"] + s["pipeline_bubble_s"] == pytest.approx(s["step_time_s"])
        # time to target = tokens to target / (throughput x the run's goodput); cost = GPU-hours x price
        assert e["goodput"] == s["goodput"]
        assert e["time_to_target_s"] == pytest.approx(e["tokens_to_target"] / (s["tokens_per_s"] * s["goodput"]))
        assert e["cost_usd"] == pytest.approx(s["gpus"] * e["time_to_target_s"] / 3600 * s["cost_per_step_usd"]
                                              / (s["gpus"] * s["step_time_s"] / 3600))
    assert report["runs"][0]["economics"]["target_loss"] == report["runs"][1]["economics"]["target_loss"]
    written = {p.name for p in out.iterdir()}
    assert {"compare.csv", "compare.json", "breakdown.png", "breakdown.pdf", "loss_vs_time.png",
            "links-rail-fat-tree.png", "links-leaf-spine_oversubscription=4.pdf"} <= written
    with (out / "compare.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 2


def test_gpu_counts_scale_data_parallelism_and_the_global_batch(cli, write_scenario, small_scenario, tmp_path):
    code, stdout, _ = cli("compare", write_scenario(small_scenario), "--gpus", "16", "--gpus", "32", "--network",
                          "analytic", "--json", "--out", tmp_path / "c")
    assert code == 0
    small, large = (run["summary"] for run in json.loads(stdout)["runs"])
    assert (small["gpus"], large["gpus"]) == (16, 32)
    assert (small["layout"]["dp"], large["layout"]["dp"]) == (4, 8)
    assert large["tokens_per_step"] == 2 * small["tokens_per_step"]  # same sequences per replica
    assert large["microbatches"] == small["microbatches"]


def test_option_flag_sets_a_builder_option_and_the_table_is_readable(cli, write_scenario, small_scenario, tmp_path):
    code, stdout, _ = cli("compare", write_scenario(small_scenario), "--topology", "leaf-spine",
                          "--option", "leaf-spine.oversubscription=2", "--network", "analytic",
                          "--target-loss", "2.5", "--out", tmp_path / "c")
    assert code == 0
    for label in ("leaf-spine:oversubscription=2", "step time", "exposed comm: fabric", "pipeline bubble",
                  "busiest link", "time to target", "cost to target", "to loss 2.500"):
        assert label in stdout


@pytest.mark.parametrize("args, message", [
    (["--topology", "leaf-spine:oversubscription"], "error: --topology: option 'oversubscription'"),
    (["--option", "oversubscription=4"], "error: --option: expected NAME.key=value"),
    (["--topology", "leaf-spine:colour=blue"], "error: cluster.topology_options.colour: unknown option"),
    (["--law", "moore"], "error: --law"),
])
def test_bad_fabric_arguments_are_one_line_user_errors(cli, write_scenario, small_scenario, tmp_path, args, message):
    code, _, err = cli("compare", write_scenario(small_scenario), *args, "--network", "analytic",
                       "--out", tmp_path / "c")
    assert code == 2
    assert err.startswith(message) and "Traceback" not in err


def test_compare_prints_a_verdict_with_fabric_cost_and_the_nvlink_share_apart(cli, write_scenario, small_scenario,
                                                                             tmp_path):
    code, stdout, _ = cli("compare", write_scenario(small_scenario), "--topology", "leaf-spine:oversubscription=4",
                          "--topology", "rail-fat-tree", "--network", "analytic", "--out", tmp_path / "c")
    assert code == 0
    table = stdout[:stdout.index("Verdict")]
    assert max(len(line) for line in table.splitlines()) <= 80
    assert "exposed comm: NVLink/PCIe" in table and "fabric capex" in table
    assert "e+0" not in stdout   # money and GPU-hours without exponent notation
    verdict = stdout[stdout.index("Verdict"):]
    assert "fabric capex $" in verdict and "cheapest for the same result" in verdict.lower()


def test_compare_json_rows_carry_the_contract_keys_and_the_verdict_names_the_cheapest(cli, write_scenario,
                                                                                     small_scenario, tmp_path):
    code, stdout, _ = cli("compare", write_scenario(small_scenario), "--topology", "leaf-spine:oversubscription=4",
                          "--topology", "rail-fat-tree", "--network", "analytic", "--json", "--out", tmp_path / "c")
    assert code == 0
    report = json.loads(stdout)
    rows = report["runs"]
    for r in rows:
        assert {"topology", "step_time_s", "fabric_capex_usd", "cost_per_step_usd"} <= set(r)
        assert r["fabric_capex_usd"] == r["summary"]["fabric"]["capex_usd"] > 0
        # the network's share is in the step's cost
        price_per_gpu_hour = r["economics"]["gpu_cost_usd"] / r["economics"]["gpu_hours"]
        gpu_only = price_per_gpu_hour * r["gpus"] * r["step_time_s"] / 3600
        assert r["cost_per_step_usd"] == pytest.approx(gpu_only + r["cost_per_step_fabric_usd"])
        assert r["cost_per_step_fabric_usd"] > 0
        assert r["exposed_comm_network_s"] + r["exposed_comm_in_server_s"] == pytest.approx(r["exposed_comm_s"])
    cheapest = min(rows, key=lambda r: r["cost_usd"])
    assert f"Cheapest for the same result: {cheapest['label']}" in report["verdict"]
    # the verdict's ratios are against the first fabric
    second, first = rows[1], rows[0]
    assert f"x{second['time_to_target_s'] / first['time_to_target_s']:.3f} time" in report["verdict"]


def test_several_scenarios_run_side_by_side_each_on_its_own_fabric(cli, write_scenario, small_scenario, tmp_path):
    """Two GPUs, one scenario each: columns named scenario: fabric, each run with its own cluster."""
    h100 = {**small_scenario, "name": "small-h100"}
    b200 = {**small_scenario, "name": "small-b200", "cluster": {**small_scenario["cluster"], "gpu": "b200"}}
    code, stdout, _ = cli("compare", write_scenario(h100, "a.yaml"), write_scenario(b200, "b.yaml"), "--network",
                          "analytic", "--json", "--out", tmp_path / "c")
    assert code == 0
    runs = json.loads(stdout)["runs"]
    topology = small_scenario["cluster"].get("topology", "rail-fat-tree")
    assert [run["label"] for run in runs] == [f"small-h100: {topology}", f"small-b200: {topology}"]
    assert [run["summary"]["gpu"] for run in runs] == ["h100-sxm", "b200"]
    assert runs[1]["summary"]["compute_s"] < runs[0]["summary"]["compute_s"]
    assert all(run["summary"]["exposed_comm_by_parallelism_s"]["ep"] == 0 for run in runs)


def test_table_of_several_scenarios_names_columns_by_what_sets_them_apart(cli, write_scenario, small_scenario,
                                                                          tmp_path):
    h100 = {**small_scenario, "name": "small-h100"}
    b200 = {**small_scenario, "name": "small-b200", "cluster": {**small_scenario["cluster"], "gpu": "b200"}}
    code, stdout, _ = cli("compare", write_scenario(h100, "a.yaml"), write_scenario(b200, "b.yaml"), "--network",
                          "analytic", "--out", tmp_path / "c")
    assert code == 0
    table = stdout[:stdout.index("Verdict")]
    header = next(line for line in table.splitlines() if "quantity" in line)
    assert "1. h100" in header and "2. b200" in header  # not "1. rail-fat-tree" twice, folded over two lines
    assert "expert parallel" not in table  # a dense model has no expert-parallel row
    assert "e-0" not in stdout and "e+0" not in stdout  # no 4.21e-06 ns of rounding noise


def test_short_labels_keep_only_what_differs():
    from simcluster.cli.compare import _distinct_suffixes

    assert _distinct_suffixes(["deepseek-v3-256-h100", "deepseek-v3-256-b200", "deepseek-v3-256-gb200-nvl72"]) == [
        "h100", "b200", "gb200-nvl72"]
    assert _distinct_suffixes(["a", "a"]) == ["a", "a"]
