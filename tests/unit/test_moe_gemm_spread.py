"""Expert GEMMs timed as the mean over the busiest rank's load spread (workload/moe.py ``step_load_nodes``,
kernels.py ``spread_gemm_efficiency``), against closed forms."""

from __future__ import annotations

import dataclasses
import math
from statistics import NormalDist

import pytest

from simcluster.core.token_routing import TokenRouting, max_normal_quantiles
from simcluster.spec import hardware, model
from simcluster.workload import kernels, moe
from simcluster.workload.ops import Op, Shard


def test_max_quantiles_are_the_maximums_distribution_and_average_to_its_mean():
    # F(x) = Phi(x)^n at each node's mid-quantile; E[max of 2 standard normals] = 1 / sqrt(pi) exactly, and the
    # midpoint rule over 16 quantiles reaches it within 1% (its error sits in the tails).
    nodes = max_normal_quantiles(2, 16)
    for i, x in enumerate(nodes):
        assert NormalDist().cdf(x) ** 2 == pytest.approx((i + 0.5) / 16, rel=1e-9)
    assert sum(nodes) / 16 == pytest.approx(1.0 / math.sqrt(math.pi), rel=0.01)
    assert max_normal_quantiles(1, 16) == (0.0,)


def test_busiest_load_nodes_average_to_the_busiest_load_and_collapse_without_spread():
    routing = TokenRouting(8, 2, load_cv=0.134, tokens=65536.0)
    nodes = routing.busiest_load_nodes(8, 16)
    assert sum(nodes) / len(nodes) == pytest.approx(routing.busiest_load(8), rel=1e-12)   # no node clamped here
    assert list(nodes) == sorted(nodes) and min(nodes) > 1.0
    # spread: 0.611 standard deviations of the maximum of 8 normals, times CV / sqrt(E / G) (round 19)
    spread = math.sqrt(sum((x - routing.busiest_load(8)) ** 2 for x in nodes) / 16)
    assert spread == pytest.approx(0.611 * routing.total_cv(), rel=0.05)
    assert TokenRouting(8, 2).busiest_load_nodes(8, 16) == (1.0,)          # no CV, no tokens: the mean itself
    assert routing.busiest_load_nodes(1, 16) == (1.0,)                     # one group
    # the cap at the mean itself: every node there (the mean busiest load is at capacity)
    assert dataclasses.replace(routing, capacity_factor=1.1).busiest_load_nodes(8, 16) == (1.1,) * 16


@pytest.mark.parametrize("groups, cv, cap", [(8, 0.134, 1.25), (8, 0.134, 1.3), (2, 0.3, None), (2, 0.3, 1.2)])
def test_clamped_or_capped_nodes_keep_the_busiest_load_as_their_mean(groups, cv, cap):
    # Clamping the low nodes at 1 (two groups: P(max of 2 normals < 0) = 1/4) or capping the high ones at the
    # capacity factor moved the nodes' mean off busiest_load (+1.4% at 2 groups and CV 0.3; -0.9% at a cap of
    # 1.25 over 8 groups and CV 0.3 before round 19's review): the time averaged over the nodes was then that of
    # another load than the FLOP's. The nodes keep the clamp and the cap and average to busiest_load.
    routing = TokenRouting(8, 2, load_cv=cv, tokens=65536.0, capacity_factor=cap)
    nodes = routing.busiest_load_nodes(groups, 16)
    assert sum(nodes) / len(nodes) == pytest.approx(routing.busiest_load(groups), rel=1e-12)
    assert min(nodes) >= 1.0 and max(nodes) <= (cap or math.inf) and list(nodes) == sorted(nodes)
    assert min(nodes) == 1.0 or max(nodes) == cap   # the clamp or the cap binds in each case
    assert max(nodes) > min(nodes)                  # a spread is left


def _gemm(rows: float, nodes: tuple[float, ...]) -> Op:
    return Op("expert_up", "gemm", 2.0 * 8 * rows * 6144 * 4096, 0.0, rows, 6144, 4096, 8, row_nodes=nodes)


def test_spread_efficiency_is_the_mean_time_of_a_step_function_over_the_nodes(monkeypatch):
    # A pure tile-quantised GEMM, f(rows) = rows / (128 ceil(rows / 128)): time = FLOP / f is proportional to whole
    # 128-row blocks. Rows 4,000 at nodes 0.96 and 1.04: 3,840 rows (30 blocks) and 4,160 (33): mean 31.5 blocks,
    # against the 32 blocks of 4,000 rows at the mean: the mean time is BELOW the time at the mean here (a step
    # function is neither convex nor concave, so no Jensen inequality holds either way).
    monkeypatch.setattr(kernels, "gemm_efficiency",
                        lambda m, *args, **kwargs: m / (128 * math.ceil(m / 128)))
    gpu = hardware.gpu("h100-sxm")
    spread = kernels.spread_gemm_efficiency(_gemm(4000.0, (0.96, 1.04)), gpu, "bf16")
    assert spread == pytest.approx(4000.0 / (128 * 31.5), rel=1e-12)
    assert kernels.spread_gemm_efficiency(_gemm(4000.0, (1.0,)), gpu, "bf16") == pytest.approx(4000 / 4096)


def test_without_spread_the_expert_gemm_keeps_its_single_point_time_and_is_bounded_by_its_nodes():
    gpu = hardware.gpu("h100-sxm")
    point = _gemm(4887.0, (1.0,))
    assert kernels.efficiency(point, gpu).flop_fraction == kernels.gemm_efficiency(4887.0, 6144, 4096, gpu.name,
                                                                                   8, "bf16", gpu)
    # time non-decreasing in rows (kernels._best_tile): the mean lies between the lowest and highest node's time
    nodes = (0.93, 0.97, 1.0, 1.03, 1.07)
    times = [kernels.roofline_s(_gemm(4887.0 * r, (1.0,)), gpu, "bf16")[0] for r in nodes]
    mean = kernels.roofline_s(_gemm(4887.0, nodes), gpu, "bf16")[0]
    assert mean == pytest.approx(sum(times) / len(times), rel=1e-12)
    assert times[0] <= mean <= times[-1]


def _mixtral_like(**moe_fields) -> model.TransformerSpec:
    return model.TransformerSpec(layers=4, hidden=6144, heads=48, kv_heads=8, ffn_hidden=16384, vocab=1000,
                                 mlp="swiglu", norm="rmsnorm", position="rope", dropout=False,
                                 tied_embeddings=False, moe={"experts": 8, "top_k": 2, "ffn_hidden": 16384,
                                                             **moe_fields})


def test_step_load_nodes_are_relative_to_step_load_and_reach_only_the_row_gemms():
    spec, shard = _mixtral_like(), Shard(seq_len=4096, micro_batch=1, tp=2)
    nodes = moe.step_load_nodes(spec, shard, ep=8)
    assert len(nodes) == moe.LOAD_NODES and sum(nodes) / len(nodes) == pytest.approx(1.0, rel=1e-12)
    assert moe.step_load_nodes(spec, shard, ep=1) == (1.0,)
    padded = _mixtral_like(capacity_factor=1.0, pad_to_capacity=True)
    assert moe.step_load_nodes(padded, shard, ep=8) == (1.0,)
    block = moe.moe_block(spec, shard, 8, 1, moe.step_load(spec, shard, 8), load_nodes=nodes)
    spread = {op.name: op.row_nodes for op in block.forward + block.backward_input if op.kind == "gemm"}
    assert spread["expert_up"] == spread["expert_down"] == nodes
    assert all(op.row_nodes == (1.0,) for op in block.backward_weight)    # linear in rows: mean time at the mean
