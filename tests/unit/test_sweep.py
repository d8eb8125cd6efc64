"""simcluster.sweep: grid points built by hand-checkable rules, shards that make a sweep resumable, failures
that are reported without sinking the sweep."""

from __future__ import annotations

import copy
import json

import pytest
from scenario_data import MIXTRAL

from simcluster.core.errors import ScenarioError
from simcluster.outcomes import laws
from simcluster.spec import config
from simcluster.studies import grid, sweep, workers

TINY = {
    "name": "tiny",
    "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1, "nic": "connectx-7", "topology": "rail-fat-tree"},
    "model": "gpt3-1.3b",
    "training": {"seq_len": 2048, "global_batch_size": 16, "micro_batch_size": 1},
    "parallelism": {"tp": 2, "pp": 2, "dp": 2},
    "network": "analytic",
}


@pytest.fixture
def base() -> dict:
    return config.from_dict(copy.deepcopy(TINY)).model_dump(mode="json")


@pytest.fixture
def counted(monkeypatch):
    """Count engine calls (the runs actually simulated) through the module's engine seam."""
    calls = []
    real = sweep._simulate

    def simulate(scenario, network, steps):
        calls.append(scenario.cluster.gpus)
        return real(scenario, network, steps)

    monkeypatch.setattr(sweep, "_simulate", simulate)
    return calls


# ---- parsing ---------------------------------------------------------------------------------------------------
def test_fabric_spec_reads_typed_options_and_lists():
    spec = grid.parse_fabric("leaf-spine:oversubscription=4,spines=8")
    assert spec.name == "leaf-spine" and dict(spec.options) == {"oversubscription": 4, "spines": 8}
    assert spec.label == "leaf-spine:oversubscription=4,spines=8"
    torus = grid.parse_fabric("torus:dims=[4,4,2]")
    assert dict(torus.options) == {"dims": [4, 4, 2]}
    with pytest.raises(ScenarioError, match="not key=value"):
        grid.parse_fabric("leaf-spine:oversubscription")


def test_option_flag_applies_to_the_named_fabric_only(base):
    specs = grid.fabrics(["rail-fat-tree", "leaf-spine"], ["leaf-spine.oversubscription=2"], base)
    assert [s.label for s in specs] == ["rail-fat-tree", "leaf-spine:oversubscription=2"]
    with pytest.raises(ScenarioError, match="no --topology named 'torus'"):
        grid.fabrics(["leaf-spine"], ["torus.dims=[2,2]"], base)


def test_gpu_list_with_ellipsis_doubles_between_its_neighbours():
    assert grid.parse_gpus("64,128,...,1024") == [64, 128, 256, 512, 1024]
    assert grid.parse_gpus("8,...,64") == [8, 16, 32, 64]
    assert grid.parse_gpus("64,96,128") == [64, 96, 128]
    with pytest.raises(ScenarioError, match="repeat"):
        grid.parse_gpus("64,64")


def test_bare_field_names_resolve_to_their_one_section():
    assert grid.parse_vary(["tp=4,8", "training.micro_batch_size=1,2", "schedule=gpipe,1f1b"]) == {
        "parallelism.tp": [4, 8], "training.micro_batch_size": [1, 2], "parallelism.schedule": ["gpipe", "1f1b"]}
    with pytest.raises(ScenarioError, match="--gpus"):
        grid.parse_vary(["gpus=8,16"])
    with pytest.raises(ScenarioError, match="--topology"):
        grid.parse_vary(["cluster.topology=torus"])


def test_vary_keeps_a_text_fields_values_as_written(base):
    """training.mcore_version holds text: 0.10 is the release '0.10', not YAML's number 0.1 (round 25 review)."""
    assert grid.parse_vary(["training.mcore_version=0.8,0.10,'0.9'"]) == {
        "training.mcore_version": ["0.8", "0.10", "0.9"]}
    tasks = grid.grid(copy.deepcopy(base), vary=grid.parse_vary(["training.mcore_version=0.8,0.10"]))
    assert [config.from_dict(task.scenario).training.mcore_version for task in tasks] == ["0.8", "0.10"]
    assert grid.parse_vary(["parallelism.tp=4,8"]) == {"parallelism.tp": [4, 8]}  # numbers stay numbers


# ---- grid points -----------------------------------------------------------------------------------------------
def test_scaling_to_more_gpus_grows_dp_and_keeps_microbatches_per_replica(base):
    # 64 GPUs at tp=2, pp=2, cp=1: dp = 64/4 = 16; 16 sequences over dp=2 is 8 per replica, so 8 * 16 = 128
    scaled = grid.scale_to_gpus(base, 64)
    assert scaled["cluster"]["nodes"] == 8
    assert scaled["parallelism"] == {**base["parallelism"], "dp": 16}
    assert scaled["training"]["global_batch_size"] == 128
    before, after = config.from_dict(base), config.from_dict(scaled)
    assert after.microbatches == before.microbatches == 8


def test_fixed_global_batch_is_kept_and_fixed_dp_is_not_rescaled(base):
    scaled = grid.scale_to_gpus(base, 32, fixed=frozenset({"training.global_batch_size"}))
    assert scaled["parallelism"]["dp"] == 8 and scaled["training"]["global_batch_size"] == 16
    unscaled = grid.scale_to_gpus(base, 32, fixed=frozenset({"parallelism.dp"}))
    assert unscaled["parallelism"]["dp"] == 2  # the layout check then rejects tp*pp*dp = 8 != 32


def test_grid_is_the_product_of_fabrics_values_and_counts(base):
    fabrics = [grid.parse_fabric("rail-fat-tree"), grid.parse_fabric("leaf-spine:oversubscription=2")]
    tasks = grid.grid(base, [8, 16, 32], fabrics, {"parallelism.pp": [1, 2]})
    assert len(tasks) == 2 * 2 * 3
    assert len({t.key for t in tasks}) == len(tasks)
    for task in tasks:
        data = task.scenario
        assert data["cluster"]["nodes"] * data["cluster"]["gpus_per_node"] == task.params["gpus"]
        p = data["parallelism"]
        assert p["tp"] * p["pp"] * p["dp"] * p["cp"] == task.params["gpus"]
        assert p["pp"] == task.params["parallelism.pp"]
        assert data["cluster"]["topology"] == task.params["topology"].split(":")[0]


def test_grid_point_that_cannot_exist_is_a_failed_task_not_an_exception(base):
    odd = grid.grid(base, [6])  # 6 GPUs: not a whole number of 8-GPU nodes
    assert odd[0].scenario is None and "whole number of 8-GPU nodes" in odd[0].error
    wide = grid.grid(base, [8], vary={"parallelism.tp": [8]})  # tp*pp = 16 > 8 GPUs
    assert wide[0].scenario is None and "multiple of tp*pp*cp = 16" in wide[0].error
    assert sweep.run_task(wide[0])["status"] == "failed"


def test_default_target_is_the_loss_of_a_compute_optimal_run():
    law = laws.get("chinchilla")
    scenario = config.from_dict(copy.deepcopy(TINY))
    n = float(scenario.model.params)
    # Hoffmann et al. 2022 approach 3: N_opt = G (C/6)^(beta/(alpha+beta)), D_opt = (C/6)/N_opt; invert for C
    a, b = law.alpha, law.beta
    g = (a * law.A / (b * law.B)) ** (1.0 / (a + b))
    d_opt = (n / g) ** (1.0 / (b / (a + b))) / n
    expected = law.E + law.A / n**a + law.B / d_opt**b
    assert sweep.default_target_loss(scenario, law) == pytest.approx(expected, rel=1e-9)


# ---- running, shards, resume -----------------------------------------------------------------------------------
def _numbers(run: sweep.SweepRun) -> dict:
    return {s["key"]: (s["summary"]["step_time_s"], s["summary"]["tokens_per_s"]) for s in run.summaries}


def test_interrupted_sweep_resumes_computing_only_the_missing_runs(base, tmp_path, counted):
    tasks = grid.grid(base, [8, 16, 32, 64])
    seen = []

    def kill_after_two(shard, reused):
        seen.append(shard["key"])
        if len(seen) == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C after two runs

    with pytest.raises(KeyboardInterrupt):
        sweep.run_grid(tasks, tmp_path, workers.InlineExecutor(), on_done=kill_after_two)
    assert len(counted) == 2
    assert len(list((tmp_path / "shards").glob("*.json"))) == 2
    counted.clear()
    resumed = sweep.run_grid(tasks, tmp_path, workers.InlineExecutor())
    assert sorted(counted) == [32, 64]  # only the two runs without a shard were simulated
    assert len(resumed.reused) == 2 and len(resumed.executed) == 2
    fresh = sweep.run_grid(tasks, tmp_path / "fresh", workers.InlineExecutor())
    assert _numbers(resumed) == _numbers(fresh)


def test_deleting_one_shard_recomputes_exactly_that_run(base, tmp_path, counted):
    tasks = grid.grid(base, [8, 16, 32])
    sweep.run_grid(tasks, tmp_path, workers.InlineExecutor())
    sweep.shard_path(tmp_path, tasks[1].key).unlink()
    (tmp_path / "shards" / f"{tasks[2].key}.json").write_text("{truncated")  # half-written by a crash
    counted.clear()
    again = sweep.run_grid(tasks, tmp_path, workers.InlineExecutor())
    assert sorted(counted) == [16, 32]
    assert sorted(again.executed) == sorted([tasks[1].key, tasks[2].key])


def test_failing_runs_are_reported_with_their_parameters_and_do_not_sink_the_sweep(base, tmp_path, counted):
    # tp=3 divides neither gpt3-1.3b's 32 heads nor the 8 and 16 GPUs (tp*pp = 6)
    tasks = grid.grid(base, [8, 16], vary={"parallelism.tp": [2, 3]})
    run = sweep.run_grid(tasks, tmp_path, workers.InlineExecutor())
    assert [s["params"]["parallelism.tp"] for s in run.summaries] == [2, 2]
    assert {(s["params"]["parallelism.tp"], s["params"]["gpus"]) for s in run.failed} == {(3, 8), (3, 16)}
    assert all(s["status"] == "failed" and s["error"] for s in run.failed)
    counted.clear()
    again = sweep.run_grid(tasks, tmp_path, workers.InlineExecutor())
    assert counted == [] and len(again.failed) == 2  # user errors are deterministic: cached, not retried


def test_unexpected_crash_is_reported_but_retried_next_time(base, tmp_path, monkeypatch):
    tasks = grid.grid(base, [8, 16])
    real = sweep._simulate

    def flaky(scenario, network, steps):
        if scenario.cluster.gpus == 16:
            raise RuntimeError("worker lost")
        return real(scenario, network, steps)

    monkeypatch.setattr(sweep, "_simulate", flaky)
    run = sweep.run_grid(tasks, tmp_path, workers.InlineExecutor())
    assert [(s["params"]["gpus"], s["status"]) for s in run.shards] == [(8, "ok"), (16, "error")]
    assert "RuntimeError: worker lost" in run.failed[0]["error"]
    assert not sweep.shard_path(tmp_path, tasks[1].key).exists()
    monkeypatch.setattr(sweep, "_simulate", real)
    again = sweep.run_grid(tasks, tmp_path, workers.InlineExecutor())
    assert again.executed == [tasks[1].key] and not again.failed


def test_shards_of_another_format_or_key_are_ignored(base, tmp_path):
    tasks = grid.grid(base, [8])
    path = sweep.shard_path(tmp_path, tasks[0].key)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"format": grid.SHARD_FORMAT + 1, "key": tasks[0].key, "status": "ok"}))
    assert sweep.read_shard(tmp_path, tasks[0].key) is None


def test_table_efficiency_is_relative_to_the_smallest_run_of_each_series(base, tmp_path):
    fabrics = [grid.parse_fabric("rail-fat-tree"), grid.parse_fabric("leaf-spine")]
    tasks = grid.grid(base, [8, 16, 32], fabrics)
    run = sweep.run_grid(tasks, tmp_path, workers.InlineExecutor())
    frame, groups = sweep.table(run, tasks, "chinchilla")
    assert len(groups) == 2 and len(frame) == 6
    for _series, rows in frame.groupby("series"):
        rows = rows.sort_values("gpus")
        n0, tps0 = rows["gpus"].iloc[0], rows["tokens_per_s"].iloc[0]
        expected = rows["tokens_per_s"] / (rows["gpus"] / n0 * tps0)
        assert rows["efficiency"].tolist() == pytest.approx(expected.tolist())
        # time to target = tokens needed / (throughput x goodput): the product is the same token count on every
        # row; goodput falls as the cluster grows (failures scale with it)
        tokens = (rows["time_to_target_s"] * rows["goodput_tokens_per_s"]).tolist()
        assert rows["goodput"].is_monotonic_decreasing
        assert tokens == pytest.approx([tokens[0]] * len(tokens), rel=1e-9)
    assert sweep.write_table(frame, tmp_path).name in ("results.csv", "results.parquet")


def test_scheduler_without_dask_installed_is_a_clear_user_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # makes `from dask.distributed import` fail
    with pytest.raises(ScenarioError, match=r"needs Dask: pip install 'simcluster\[distributed\]'"):
        with sweep.executor(scheduler="tcp://127.0.0.1:8786"):
            pass


def test_local_process_pool_gives_the_same_numbers_as_running_inline(base, tmp_path):
    tasks = grid.grid(base, [8, 16], [grid.parse_fabric("leaf-spine:oversubscription=4")])
    inline = sweep.run_grid(tasks, tmp_path / "inline", workers.InlineExecutor())
    with sweep.executor(jobs=2) as (pool, slots):
        assert slots == 2
        pooled = sweep.run_grid(tasks, tmp_path / "pool", pool, slots)
    assert _numbers(pooled) == _numbers(inline)


def test_samples_run_every_seed_and_give_the_scaling_curve_a_band(base, tmp_path, counted):
    base["variability"] = {"gpu_speed_cv": 0.05, "kernel_jitter_cv": 0.02}
    tasks = grid.grid(base, [8, 32], samples=3)
    assert {t.key for t in tasks}.isdisjoint(t.key for t in grid.grid(base, [8, 32]))  # keyed apart
    run = sweep.run_grid(tasks, tmp_path, workers.InlineExecutor())
    assert sorted(counted) == [8, 8, 8, 32, 32, 32]
    frame, groups = sweep.table(run, tasks, "chinchilla")
    for row in groups[0]["rows"]:
        assert row["tokens_per_s_low"] <= row["tokens_per_s"] <= row["tokens_per_s_high"]
    assert (frame["step_time_p10_s"] <= frame["step_time_p90_s"]).all()
    # more GPUs, a slower slowest GPU: the median step grows with the count (max of more draws)
    assert frame.sort_values("gpus")["step_time_p50_s"].is_monotonic_increasing


# A Mixtral preset on 16 H100: NeMo's token drop is its default only with the direct all-to-all
def test_a_varied_all_to_all_shows_the_token_drop_each_point_resolved(tmp_path):
    """Varying ep_alltoall switches NeMo's token drop off on the hierarchical point: the table says so per point and
    the note names the option; a dense sweep has neither."""
    from simcluster.studies import compare

    base = config.rebuildable(config.from_dict(copy.deepcopy(MIXTRAL)))
    tasks = grid.grid(base, vary=grid.parse_vary(["parallelism.ep_alltoall=direct,hierarchical"]))
    frame, _groups = sweep.table(sweep.run_grid(tasks, tmp_path, workers.InlineExecutor()), tasks, "chinchilla")
    by_mode = dict(zip(frame["parallelism.ep_alltoall"], frame[sweep.TOKEN_DROP_COLUMN], strict=True))
    assert by_mode == {"direct": True, "hierarchical": False}
    assert "training.moe_token_drop" in sweep.token_drop_note(frame[sweep.TOKEN_DROP_COLUMN])
    law = laws.resolve("chinchilla")
    rows = [compare.row(compare.run_point(task, str(i), None, law, None)) for i, task in enumerate(tasks)]
    assert [r[sweep.TOKEN_DROP_COLUMN] for r in rows] == [True, False]
    dense = grid.grid(config.from_dict(copy.deepcopy(TINY)).model_dump(mode="json"), [8])
    run = sweep.run_grid(dense, tmp_path / "dense", workers.InlineExecutor())
    frame, _groups = sweep.table(run, dense, "chinchilla")
    assert sweep.TOKEN_DROP_COLUMN not in frame and sweep.token_drop_note([None, float("nan"), True]) is None
