"""Megatron-Core's defer_embedding_wgrad_compute: the last pipeline stage leaves the output layer's weight-gradient
GEMM of a step's first ``wgrad_deferral_limit`` microbatches to the pipeline flush (parallel/plan.py
deferred_output_wgrads, engine/agents.py Agent._deferred_wgrads). Checked against closed forms: the deferring
backward is the full one less the GEMM; a drain the cool-down hides takes exactly n GEMMs off the step; an exposed one
adds what outlasts the cool-down."""

import pytest

from simcluster.collectives import timing
from simcluster.core.errors import ScenarioError
from simcluster.engine import simulate
from simcluster.engine.simulation import Simulation
from simcluster.parallel.plan import deferred_output_wgrads
from simcluster.spec import config
from simcluster.workload import kernels
from simcluster.workload.ops import output_ops, shard_for

# A pipeline whose last stage is the slowest (its output layer, vocabulary 128K): no data parallelism, so no
# interference, and no tensor parallelism, so no all-gather before each deferred GEMM.
BASE = {
    "name": "defer", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 4, "nodes": 1},
    "model": {"layers": 8, "hidden": 4096, "heads": 32, "vocab": 128000, "tied_embeddings": False},
    "training": {"seq_len": 4096, "global_batch_size": 16, "micro_batch_size": 1, "precision": "bf16"},
    "parallelism": {"tp": 1, "pp": 4, "dp": 1, "cp": 1},
}


def _scenario(training=None, **parallelism):
    data = {**BASE, "training": {**BASE["training"], **(training or {})},
            "parallelism": {**BASE["parallelism"], **parallelism}}
    return config.from_dict(data)


def _drain(result):
    events = result.events if hasattr(result, "events") else result
    return events[(events.stream == "compute") & (events.name == "deferred wgrad")]


def test_on_by_default_where_megatron_core_pipelines():
    assert _scenario().parallelism.defer_embedding_wgrad is True
    assert _scenario().parallelism.wgrad_deferral_limit == 22  # NeMo's recipes (launcher llama3_70b.yaml)
    for preset, limit in (("llama3.1-405b", 50), ("gpt3-175b", 50), ("llama3-70b", 22), ("nemotron4-340b", 22)):
        data = {**BASE, "model": preset, "parallelism": {**BASE["parallelism"], "pp": 2, "dp": 2}}
        assert config.from_dict(data).parallelism.wgrad_deferral_limit == limit, preset
    single = config.from_dict({**BASE, "cluster": {**BASE["cluster"], "gpus_per_node": 1},
                               "parallelism": {**BASE["parallelism"], "pp": 1}})
    assert single.parallelism.defer_embedding_wgrad is False
    assert _scenario(training={"gradient_accumulation_fusion": False}).parallelism.defer_embedding_wgrad is False


def test_refused_where_megatron_core_refuses_it():
    """ModelParallelConfig.__post_init__: 'Cannot defer embedding wgrad compute when pipeline model parallel is not
    used' / 'when gradient accumulation fusion is not used'."""
    with pytest.raises(ScenarioError, match="parallelism.defer_embedding_wgrad"):
        _scenario(training={"gradient_accumulation_fusion": False}, defer_embedding_wgrad=True)


@pytest.mark.parametrize(("limit", "expected"), [(22, 16), (5, 5), (0, 16), (16, 16)])
def test_the_limit_counts_the_first_microbatches(limit, expected):
    """``len(grad_output_buffer) < wgrad_deferral_limit`` (0: no limit) over a step's 16 microbatches."""
    assert deferred_output_wgrads(_scenario(wgrad_deferral_limit=limit)) == expected
    assert deferred_output_wgrads(_scenario(defer_embedding_wgrad=False)) == 0


def test_the_deferring_backward_is_the_full_one_less_the_gemm():
    scenario = _scenario()
    plan = Simulation(scenario).plan
    last = plan.chunks[-1]
    gemm = output_ops(scenario.model, shard_for(scenario))["backward_weight"]
    gemm_s = kernels.stream_time(gemm, scenario.cluster.gpu, "bf16").elapsed_s()
    assert plan.deferred_wgrad_s == pytest.approx(gemm_s, rel=1e-12)
    # 2 * tokens * hidden * vocab FLOP: the output layer's forward GEMM again, at well over 100 TFLOP/s
    assert 2 * 4096 * 4096 * 128000 / gemm_s > 100e12
    assert last.backward_compute_s - last.deferred_backward_compute_s == pytest.approx(gemm_s, rel=1e-9)
    assert all(chunk.deferred_backward_compute_s == 0 for chunk in plan.chunks[:-1])


def test_a_hidden_drain_takes_the_deferred_gemms_off_the_step():
    """Five deferred GEMMs fit in the cool-down (the three earlier stages' last backwards): the last stage, the
    bottleneck, runs each of the five deferring backwards one GEMM shorter, and the step ends one GEMM earlier
    for each."""
    off = simulate(_scenario(defer_embedding_wgrad=False))
    on = simulate(_scenario(wgrad_deferral_limit=5))
    gemm_s = Simulation(_scenario()).plan.deferred_wgrad_s
    drain = _drain(on)
    assert len(drain) == 5 and _drain(off).empty
    assert (drain.end_s - drain.start_s).to_numpy() == pytest.approx([gemm_s] * 5, rel=1e-9)
    assert off.summary["step_time_s"] - on.summary["step_time_s"] == pytest.approx(5 * gemm_s, rel=1e-6)
    # the flush starts after the last stage's last backward and ends before the step's optimizer
    events = on.events
    last_backward = events[(events["rank"] == drain["rank"].iloc[0]) & events.name.str.startswith("backward")]
    assert drain.start_s.min() >= last_backward.end_s.max() - 1e-12
    assert drain.end_s.max() < on.summary["step_time_s"]


def test_the_flush_hides_at_most_the_cool_down():
    """The gain is min(n GEMMs, cool-down): the last stage runs each deferring backward one GEMM shorter, then the
    drain in the time between its last send and the first stage's last backward (the cool-down, measured on the run
    without deferral, where the step's closing all-reduce joins them); beyond it the drain is exposed. All 16
    deferred here, 8 GEMMs' worth longer than the cool-down."""
    off = simulate(_scenario(defer_embedding_wgrad=False))
    events = off.events
    last_rank = events["rank"].max()
    schedule = events[~events.name.isin(["optimizer"]) & (events.stream != "dp")]
    free_s = schedule[schedule["rank"] == last_rank].end_s.max()       # after its last backward's send
    arrived_s = schedule[schedule["rank"] == 0].end_s.max()            # the first stage's last backward
    cool_down_s = arrived_s - free_s
    gemm_s = Simulation(_scenario()).plan.deferred_wgrad_s
    assert 16 * gemm_s > 2 * cool_down_s > 0
    on = simulate(_scenario(wgrad_deferral_limit=0))
    drain = _drain(on)
    assert len(drain) == 16
    assert drain.end_s.max() - drain.start_s.min() == pytest.approx(16 * gemm_s, rel=1e-9)
    assert off.summary["step_time_s"] - on.summary["step_time_s"] == pytest.approx(cool_down_s, rel=1e-6)


def test_sequence_parallel_inputs_are_gathered_ahead_of_each_gemm():
    """drain_embedding_wgrad_compute's double buffer: the first input's all-gather alone (exposed), each next one
    while the previous GEMM runs (hidden when shorter): the flush is one all-gather plus n GEMMs."""
    scenario = config.from_dict({**BASE, "cluster": {**BASE["cluster"], "gpus_per_node": 8},
                                 "parallelism": {**BASE["parallelism"], "tp": 2, "wgrad_deferral_limit": 4}})
    sim = Simulation(scenario)
    plan = sim.plan
    # the sequence-parallel shards of the output layer's input: s x h 16-bit elements gathered
    assert plan.deferred_gather_bytes == 4096 * 4096 * 2
    gather_s = timing.isolated_time_s(sim.fabric, "all_gather", tuple(plan.layout.group(0, "tp")),
                                      plan.deferred_gather_bytes)
    assert 0 < gather_s < plan.deferred_wgrad_s
    events = sim.run().events
    drain = _drain(events)
    assert len(drain) == 4
    rank_events = events[events["rank"] == drain["rank"].iloc[0]]
    before = rank_events[(rank_events.end_s <= drain.start_s.min()) & (rank_events.stream != "tp")]
    sent_s = before.end_s.max()  # its last backward's send
    assert drain.start_s.min() - sent_s == pytest.approx(gather_s, rel=1e-6)
    waits = rank_events[rank_events.name == "tp comm deferred wgrad gather"]  # recorded as exposed TP communication
    assert len(waits) == 1 and (waits.end_s - waits.start_s).sum() == pytest.approx(gather_s, rel=1e-6)
    assert drain.end_s.max() - drain.start_s.min() == pytest.approx(4 * plan.deferred_wgrad_s, rel=1e-9)


def test_the_collapsed_and_the_expanded_engine_agree():
    """Every rank of the last stage drains (one agent per GPU expanded, one per stage collapsed), over two steps."""
    scenario = config.from_dict({**BASE, "cluster": {**BASE["cluster"], "gpus_per_node": 8, "nodes": 2},
                                 "training": {**BASE["training"], "global_batch_size": 32},
                                 "parallelism": {**BASE["parallelism"], "tp": 2, "dp": 2, "wgrad_deferral_limit": 4}})
    collapsed, expanded = simulate(scenario, steps=2), simulate(scenario, steps=2, expand=True)
    assert collapsed.summary["step_time_s"] == pytest.approx(expanded.summary["step_time_s"], rel=1e-12)
    assert len(_drain(collapsed)) == 2 * 4 and len(_drain(expanded)) == 2 * 4 * 4  # steps x GEMMs (x tp x dp)
