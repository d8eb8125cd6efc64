"""One MoE layer alone: its forward and backward time on the busiest expert-parallel rank, as the step plan builds
it, with its token dispatch and combine on the fabric (docs/calibration/round-31.md "Round 31: one MoE layer on 8 H100
against Megatron-Core's moe_perf baseline").

What a layer-level benchmark times (Megatron-Core's ``tests/functional_tests/test_cases/common/moe_perf``: CUDA
events around ``MoELayer.forward`` and ``output.backward``, no attention, no norm, no optimizer) is the MLP block of
an MoE layer and its all-to-alls. The step plan times the same block inside a layer (``plan.busiest_moe_block``,
``plan._phase_stream``: the kernels with their gaps, the host's side, the stall after the host sync), and the engine
runs the dispatch and combine as blocking all-to-alls between the layer's blocks (``plan.expert_parallel_per_layer``:
two forward, two backward) over the EP group with the scenario's algorithm and token routing
(``timing.engine_schedules``; the flex dispatcher's DeepEP routing and intranode rate). Here the two are added: the
all-to-alls timed alone on the scenario's fabric (the engine's network takes the same time on an idle fabric). A
diagnostic of the model as it stands: nothing is fitted.
"""

from __future__ import annotations

from dataclasses import dataclass

from simcluster.collectives import deepep, timing
from simcluster.core.errors import ScenarioError
from simcluster.fabric import topology
from simcluster.network import make as make_network
from simcluster.parallel import plan
from simcluster.parallel.layout import Layout, expert_groups
from simcluster.spec.config import Scenario
from simcluster.workload import host_dispatch, kernels, moe
from simcluster.workload.ops import shard_for


@dataclass(frozen=True)
class MoELayerTime:
    """One MoE layer's block on the busiest EP rank for one microbatch: its kernels per direction
    (``kernels.StreamTime``) and one dispatch (or combine) all-to-all, seconds."""

    forward: kernels.StreamTime
    backward: kernels.StreamTime
    alltoall_s: float
    alltoalls: dict[str, int]  # all-to-alls per direction (plan.expert_parallel_per_layer)

    @property
    def forward_s(self) -> float:
        return self.forward.elapsed_s() + self.alltoalls["forward"] * self.alltoall_s

    @property
    def backward_s(self) -> float:
        return self.backward.elapsed_s() + self.alltoalls["backward"] * self.alltoall_s


def alltoall_s(scenario: Scenario) -> float:
    """One token dispatch (or combine) all-to-all of ``scenario``'s MoE layer alone on its fabric: the bytes the
    plan gives it (``plan.dispatch_bytes``), over rank 0's EP group, with the algorithm and token routing the engine
    runs (``engine.simulation``: ``parallelism.ep_alltoall``; DeepEP's routing and its intranode and internode rates
    with the flex dispatcher); 0 without expert parallelism."""
    m, p = scenario.model, scenario.parallelism
    size = plan.dispatch_bytes(scenario)
    if not size:
        return 0.0
    shard = shard_for(scenario)
    flex = p.moe_dispatcher == "flex"
    routing = moe.token_routing(m.moe, moe.ep_group_tokens(m, shard, p.ep, p.etp),
                                deepep.intranode_ratio(scenario.cluster.gpu) if flex else 0.0,
                                deepep.internode_ratio(scenario.cluster.nic) if flex else 0.0)
    group = expert_groups(Layout.of(p), 0, p.ep, p.etp)[0]
    fabric = topology.from_scenario(scenario)
    steps = timing.engine_schedules(fabric, "alltoall", [tuple(group)], size, p.ep_alltoall, routing)
    return timing.simulate(
        steps, make_network("analytic", timing.calibrated_view(fabric), windows=False, link_bytes=False)
    )


def moe_layer_time(scenario: Scenario) -> MoELayerTime:
    """``scenario``'s MoE block alone (``MoELayerTime``): the plan's block on the busiest EP rank, each direction
    one block the host issues (a Transformer Engine layer's module host time included), and its all-to-alls."""
    if scenario.model.moe is None:
        raise ScenarioError("model.moe", f"{scenario.name} has no MoE layer")
    gpu, precision = scenario.cluster.gpu, scenario.training.precision
    block = plan.busiest_moe_block(scenario, shard_for(scenario))
    ops = {
        "forward": block.forward,
        "recompute": [],
        "backward_input": block.backward_input,
        "backward_weight": block.backward_weight,
    }
    te = host_dispatch.transformer_engine_layers(scenario)
    calls = plan.expert_parallel_per_layer(scenario)
    return MoELayerTime(
        plan._phase_stream(ops, ("forward",), gpu, precision, te),
        plan._phase_stream(ops, plan.BACKWARD_PHASES, gpu, precision, te),
        alltoall_s(scenario),
        {phase: sum(count for _, count in phase_calls) for phase, phase_calls in calls.items()},
    )
