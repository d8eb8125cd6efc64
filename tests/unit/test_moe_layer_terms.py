"""scripts/moe_layer_terms.py: the MoE layer's itemisation conserves the plan's ops (docs/calibration/round-16.md,
"Round 16: the MoE zoo's Qwen3 rows itemised")."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import moe_layer_terms  # noqa: E402

from simcluster.parallel.plan import shard_for  # noqa: E402
from simcluster.spec import config  # noqa: E402
from simcluster.workload import kernels, moe  # noqa: E402
from simcluster.workload.ops import layer_ops  # noqa: E402

ROWS = ("moezoo-qwen3-235b-256-h100-a2a", "moezoo-qwen3-235b-256-h100-deepep")


def _ops(scenario):
    p, m, t = scenario.parallelism, scenario.model, scenario.training
    shard = shard_for(scenario)
    block = moe.moe_block(m, shard, p.ep, p.etp, moe.step_load(m, shard, p.ep, p.etp), t.moe_cuda_graphs,
                          p.moe_dispatcher, moe.Router.of(t), moe.step_load_nodes(m, shard, p.ep, p.etp))
    return [op for ops in layer_ops(m, shard, block).values() for op in ops]


@pytest.mark.parametrize("name", ROWS)
def test_the_expert_gemms_are_timed_over_the_loads_spread_as_the_plan_times_them(name):
    # round 19 review: the script built its block without the load's nodes, so its expert GEMM times were the
    # single-point ones while the plan averages them over step_load_nodes
    scenario = config.load(name)
    block, _ = moe_layer_terms.busiest_moe_block(scenario)
    experts = [op for op in block.forward + block.backward_input if op.name in ("expert_up", "expert_down")]
    assert experts and all(len(op.row_nodes) == moe.LOAD_NODES for op in experts)


@pytest.mark.parametrize("name", ROWS)
def test_classes_sum_to_every_op_of_the_layer(name):
    scenario = config.load(name)
    ops = _ops(scenario)
    gpu, precision = scenario.cluster.gpu, scenario.training.precision
    total = sum(max(kernels.roofline_s(op, gpu, precision)) for op in ops)
    terms, count, host_only, _ = moe_layer_terms.layer_terms(scenario)
    assert count + host_only == len(ops)
    assert host_only == sum(op.name == kernels.HOST_ONLY_LAUNCH for op in ops)
    assert sum(terms.values()) == pytest.approx(total, rel=1e-12)


@pytest.mark.parametrize("name", [ROWS[0], "nemo2509-deepseek-v3-1024-h100-fp8"])
def test_gaps_are_the_fitted_gap_a_kernel_but_for_syncs_and_no_work_launches(name):
    """The gaps line, by hand from the layer's ops: the fitted gap before every kernel, none before a host sync
    (the dispatcher's, none of the stream's), the 4 us queued-launch latency before a queued launch with no work
    (current scaling's one-element kernels per expert, DeepSeek-V3's FP8-CS row; round 32). It printed the kernel
    count times the fitted gap: on that row 3.885 ms against 3.150 ms charged."""
    scenario = config.load(name)
    block, shard = moe_layer_terms.busiest_moe_block(scenario)
    ops = [op for ops in layer_ops(scenario.model, shard, block).values() for op in ops]
    _, count, _, gaps_s = moe_layer_terms.layer_terms(scenario)
    host = kernels.host_model()
    syncs = sum(op.name == kernels.HOST_SYNC for op in ops)
    no_work = sum(op.queued and op.no_work and op.name != kernels.HOST_ONLY_LAUNCH for op in ops)
    assert syncs >= 1 and (no_work > 0) == (scenario.training.fp8_recipe == "current")
    expected = (count - syncs - no_work) * host.kernel_gap_s + no_work * kernels.launch_overhead_s()
    assert gaps_s == pytest.approx(expected, rel=1e-12)


def test_grouped_gemms_are_the_experts_flop():
    """Qwen3-235B's routed experts at balanced load: 3 GEMMs (up x2 width for SwiGLU, down) of 2 x rows x h x f a
    forward, dgrad and wgrad the same: 2 x 3 x 3 x T k h f FLOP over the EP rank's tokens (T: 2,048 a TP 2 rank)."""
    scenario = config.load("moezoo-qwen3-235b-256-h100-deepep")
    p, m = scenario.parallelism, scenario.model
    shard = shard_for(scenario)
    load = moe.step_load(m, shard, p.ep, p.etp)
    flop = sum(op.flop for op in _ops(scenario) if moe_layer_terms.op_class(op) == "grouped expert GEMMs")
    tokens = 4096 / p.tp
    expected = 2 * 3 * 3 * tokens * m.moe.top_k * load * m.hidden * m.moe.ffn_hidden
    assert flop == pytest.approx(expected, rel=1e-9)


def test_a_dense_model_is_refused(capsys):
    assert moe_layer_terms.main(["megatron-177b-h100"]) == 2
    assert "model.moe" in capsys.readouterr().err


def test_the_alltoall_dispatchers_sorts_are_permutation_work():
    """The alltoall dispatcher's sort by local expert (16 local experts on the A2A row) is permutation work, which the
    flex dispatcher (DeepEP row) does not run (moe.moe_block: no sorts with flex)."""
    a2a = [op for op in _ops(config.load(ROWS[0])) if "sort" in op.name]
    deepep = [op for op in _ops(config.load(ROWS[1])) if "sort" in op.name]
    assert a2a and not deepep
    assert {moe_layer_terms.op_class(op) for op in a2a} == {"permutation + sort"}


@pytest.mark.parametrize("name", ROWS)
def test_grouped_gemm_rate_is_the_classes_flop_over_its_time(name):
    """The charged rate is the grouped GEMMs' FLOP over the seconds ``layer_terms`` gives them, its fraction that
    over the dense peak; the rows an expert are the busiest rank's load x T k / E (T: 4,096 / tp tokens a rank x ep)."""
    scenario = config.load(name)
    p, m = scenario.parallelism, scenario.model
    experts, rows, rate, fraction = moe_layer_terms.grouped_gemm_rate(scenario)
    terms, _, _, _ = moe_layer_terms.layer_terms(scenario)
    flop = sum(op.flop for op in _ops(scenario) if moe_layer_terms.op_class(op) == "grouped expert GEMMs")
    assert rate == pytest.approx(flop / terms["grouped expert GEMMs"], rel=1e-12)
    assert fraction == pytest.approx(rate / scenario.cluster.gpu.peak_flop_per_s("bf16"), rel=1e-12)
    assert experts == m.moe.experts // p.ep
    load = moe.step_load(m, shard_for(scenario), p.ep, p.etp)
    assert rows == pytest.approx(load * 4096 / p.tp * p.ep * m.moe.top_k / m.moe.experts, rel=1e-9)
