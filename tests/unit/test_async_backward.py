"""Megatron's and Transformer Engine's async backward TP collectives with the overlap off (workload.async_backward)
against closed forms from their source: per column-parallel linear, the input re-gather beside its dgrad GEMM and
the dgrad reduce-scatter beside its wgrad GEMM (all-reduce without sequence parallelism), each hidden behind that
GEMM slowed by the NCCL kernel's SMs and exposed only by what outlasts it; the dY all-gathers stay blocking."""

from __future__ import annotations

import dataclasses
import math

import pytest
from scenario_data import sequence_parallel_grads_s

from simcluster.collectives import timing
from simcluster.engine import Simulation
from simcluster.parallel import plan
from simcluster.spec import config
from simcluster.spec.model import TransformerSpec
from simcluster.workload import async_backward, interference, kernels
from simcluster.workload.ops import layer_ops, shard_for

MODEL = TransformerSpec(layers=4, hidden=8192, heads=64, kv_heads=8, ffn_hidden=28672, vocab=128256, mlp="swiglu",
                        norm="rmsnorm", position="rope", dropout=False)
TP = 8


def _scenario(sequence_parallel: bool = True, overlap: bool = False) -> config.Scenario:
    return config.from_dict({
        "name": "async-backward",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1, "topology": "nvswitch-node"},
        "model": MODEL.model_dump(mode="json"),
        "training": {"seq_len": 8192, "global_batch_size": 2, "micro_batch_size": 2, "precision": "bf16"},
        "parallelism": {"tp": TP, "dp": 1, "sequence_parallel": sequence_parallel, "zero_stage": 1,
                        "tp_comm_overlap": overlap}})


def _gemm_s(scenario, phase: str, name: str) -> float:
    layer = layer_ops(scenario.model, shard_for(scenario))
    (op,) = [op for op in layer[phase] if op.kind == "gemm" and op.name == name]
    return kernels.op_time_s(op, scenario.cluster.gpu, scenario.training.precision)


def _plan(scenario, times: dict[str, float]) -> plan.StepPlan:
    return plan.plan(scenario, lambda op, group, size: times[op])


def _closed_form_factor(scenario) -> float:
    """The column-parallel GEMMs' slowdown beside an NCCL NVLink ring of 24 CTAs (NCCL's NVLink channels,
    interference.yaml ctas.nvlink), the GEMMs compute-bound: each GEMM's c (its compute time alone) takes c q, q its
    waves of its tiles on SMs - 24 over its waves on all SMs, and the layer's pairs share sum(c q) / sum(c)."""
    gpu, precision = scenario.cluster.gpu, scenario.training.precision
    layer = layer_ops(scenario.model, shard_for(scenario))
    sms = kernels.sm_count(gpu.name)
    hbm_bytes_per_s = gpu.hbm_bandwidth * kernels.hbm_fraction()
    ring_hbm_bytes_per_s = interference.constants()["hbm_bytes_per_wire_byte"] * async_backward.wire_bytes_per_s(gpu)
    hbm_factor = hbm_bytes_per_s / (hbm_bytes_per_s - ring_hbm_bytes_per_s)
    slowed = alone = 0.0
    for phase in ("backward_input", "backward_weight"):
        for name in ("qkv", "mlp_up"):
            (op,) = [op for op in layer[phase] if op.kind == "gemm" and op.name == name]
            compute_s, memory_s = kernels.roofline_s(op, gpu, precision)
            assert memory_s * hbm_factor < compute_s  # compute-bound even on the HBM bandwidth the ring leaves
            tiles = kernels._best_tile(op.m, op.n, op.batch, gpu.name)[2]
            slowed += compute_s * math.ceil(tiles / (sms - 24)) / math.ceil(tiles / sms)
            alone += compute_s
    return slowed / alone


def test_collectives_split_into_async_beside_the_column_gemms_and_blocking_dy_gathers():
    chunk = _plan(_scenario(), {"all_gather": 1e-4, "reduce_scatter": 1e-4, "allreduce": 1e-4}).chunks[0]
    layers = MODEL.layers
    assert chunk.tp_async_backward
    assert chunk.tp_collectives["backward"] == (("all_gather", 2 * layers), ("reduce_scatter", 2 * layers))
    assert dict(chunk.tp_blocking["backward"]) == {"reduce_scatter": 0, "all_gather": 2 * layers}
    assert chunk.tp_collectives["forward"] == (("reduce_scatter", 2 * layers), ("all_gather", 2 * layers))
    no_sp = _plan(_scenario(sequence_parallel=False), {"allreduce": 1e-4}).chunks[0]
    assert no_sp.tp_collectives["backward"] == (("allreduce", 2 * layers),)
    assert dict(no_sp.tp_blocking["backward"]) == {"allreduce": 0}
    with_overlap = _plan(_scenario(overlap=True), {"all_gather": 1e-4, "reduce_scatter": 1e-4}).chunks[0]
    assert not with_overlap.tp_async_backward  # userbuffers run them (workload.userbuffers)


def test_collective_shorter_than_its_gemm_exposes_nothing_longer_exposes_the_difference():
    """Per pair: exposed max(0, c / f - g) on top of the block, whose interference c (1 - 1/f) the engine charges;
    together max(c, g f) - g when c > g f (the collective outlasts its slowed GEMM)."""
    scenario = _scenario()
    gpu, precision = scenario.cluster.gpu, scenario.training.precision
    layer = layer_ops(scenario.model, shard_for(scenario))
    f = async_backward.slowdown(layer, 2, True, gpu, precision)
    assert f == pytest.approx(_closed_form_factor(scenario), rel=1e-12)
    wgrad = [_gemm_s(scenario, "backward_weight", name) for name in ("qkv", "mlp_up")]
    dgrad = [_gemm_s(scenario, "backward_input", name) for name in ("qkv", "mlp_up")]
    short = 0.5 * min(wgrad + dgrad)
    baseline = _plan(scenario, {"all_gather": short, "reduce_scatter": short}).chunks[0]
    assert baseline.tp_async_exposed_s == 0.0
    assert async_backward.exposed_s(layer, 2, True, gpu, precision,
                                    {"all_gather": short, "reduce_scatter": short}) == 0.0
    long = 2.0 * f * max(wgrad)  # longer than either wgrad GEMM, slowed; the gathers stay short
    longer = _plan(scenario, {"all_gather": short, "reduce_scatter": long}).chunks[0]
    expected = MODEL.layers * sum(long / f - g for g in wgrad)
    assert longer.tp_async_exposed_s == pytest.approx(expected, rel=1e-9)
    # a wait on communication, not compute: the backward's compute is the same
    assert longer.backward_compute_s == baseline.backward_compute_s


SMALL = TransformerSpec(layers=4, hidden=2048, heads=16, kv_heads=8, ffn_hidden=8192, vocab=32000, mlp="gelu",
                        norm="layernorm", position="rope", dropout=False)


def _small(stragglers: list | None = None) -> config.Scenario:
    # hidden 2048 (8 KV heads) at tp 8: the input re-gather outlasts the QKV dgrad GEMM slowed beside it (c > g f)
    data = _scenario().model_dump(mode="json", exclude_none=True)
    data["model"] = SMALL.model_dump(mode="json")
    if stragglers:
        data["variability"] = {"stragglers": stragglers}
    return config.from_dict(data)


def _run(scenario, exposed: bool) -> tuple[Simulation, dict]:
    sim = Simulation(scenario)
    if not exposed:
        sim.plan.chunks = [dataclasses.replace(c, tp_async_exposed_s=0.0) for c in sim.plan.chunks]
    return sim, sim.run().summary


@pytest.mark.parametrize("slowdown", [None, 1.5])
def test_a_collective_outlasting_its_gemm_is_exposed_tp_communication_and_the_pair_lasts_it(slowdown):
    """Engine, c > g f: the backward waits max(0, c / f - g) per pair after its compute, tallied as exposed TP
    communication, whatever the GPUs' speed (every GPU a straggler of 1.5x: the compute scales, the wait does not);
    with the interference the block charges, the pair lasts c."""
    scenario = _small([{"ranks": list(range(TP)), "slowdown": slowdown}] if slowdown else None)
    sim, on = _run(scenario, True)
    _, off = _run(scenario, False)
    chunk, group = sim.plan.chunks[0], tuple(range(TP))
    comm_s = {op: timing.isolated_time_s(sim.fabric, op, group, chunk.tp_bytes)
              for op in ("all_gather", "reduce_scatter")}
    f = sim.slowdowns.tp["backward"]
    # the engine's factor is the plan's (one physics: the GEMMs' waves on the SMs the ring leaves)
    assert f == pytest.approx(_closed_form_factor(scenario), rel=1e-12)
    pairs = [(comm_s["all_gather"], _gemm_s(scenario, "backward_input", name)) for name in ("qkv", "mlp_up")]
    pairs += [(comm_s["reduce_scatter"], _gemm_s(scenario, "backward_weight", name)) for name in ("qkv", "mlp_up")]
    assert any(c > g * f for c, g in pairs)
    exposed_s = SMALL.layers * sum(max(0.0, c / f - g) for c, g in pairs)
    assert chunk.tp_async_exposed_s == pytest.approx(exposed_s, rel=1e-9)
    waited_s = sim.plan.microbatches * exposed_s
    assert on["exposed_comm_by_parallelism_s"]["tp"] - off["exposed_comm_by_parallelism_s"]["tp"] == pytest.approx(
        waited_s, rel=1e-6)
    assert on["compute_s"] == pytest.approx(off["compute_s"], rel=1e-12)
    assert on["step_time_s"] - off["step_time_s"] == pytest.approx(waited_s, rel=1e-6)
    # per layer, the backward with its pairs (speed 1): each pair max(c, g + c (1 - 1/f)); the rest alone
    if slowdown is None:
        layer_s = chunk.backward_compute_s / SMALL.layers - sum(g for _, g in pairs)
        block_s = interference.overlapped_s(chunk.backward_compute_s, chunk.backward_tp_comm_s, f) + exposed_s
        assert block_s / SMALL.layers == pytest.approx(layer_s + sum(max(c, g + c * (1 - 1 / f)) for c, g in pairs),
                                                       rel=1e-9)


def test_overlap_off_backward_waits_only_on_the_blocking_gathers():
    """Engine: the async collectives start with the backward block and slow it while they run (NCCL's SMs); the
    exposed TP wait is the forward's collectives and the backward's dY gathers only, each alone on the fabric."""
    sim = Simulation(_scenario())
    summary = sim.run().summary
    group = tuple(range(TP))
    extra_s = exposed_s = 0.0
    for chunk in sim.plan.chunks:
        compute_s, async_s = chunk.backward_compute_s, chunk.backward_tp_comm_s
        slowed_s = interference.overlapped_s(compute_s, async_s, sim.slowdowns.tp["backward"])
        assert async_s < compute_s
        extra_s += slowed_s - compute_s
        gathers_s = sum(count * timing.isolated_time_s(sim.fabric, op, group, chunk.tp_bytes)
                        for op, count in chunk.tp_blocking["backward"] if count)
        exposed_s += chunk.forward_tp_comm_s + gathers_s
    assert sim.slowdowns.tp["backward"] > 1.1
    assert summary["comm_interference_s"] == pytest.approx(sim.plan.microbatches * extra_s, rel=1e-9)
    step_s = sequence_parallel_grads_s(sim, group)   # the norms' gradients, once a step (sequence parallelism)
    assert summary["exposed_comm_by_parallelism_s"]["tp"] == pytest.approx(sim.plan.microbatches * exposed_s
                                                                          + step_s, rel=1e-9)
