"""One MoE layer pair of Megatron-Core's combined 1F1B schedule (``parallelism.ep_overlap``,
``overlap_moe_expert_parallel_comm``) raced against the host, launch by launch (docs/calibration/round-37.md "Round 37:
the host side of Megatron-Core's EP overlap").

    PYTHONPATH=.:scripts python scripts/ep_overlap_host_race.py SCENARIO ... [--node-us X]

In the steady state the schedule issues one microbatch's forward (F) and another's backward (B) layer by layer from
one Python thread, each layer cut into schedule nodes (TransformerLayerSchedulePlan.run, megatron/core/models/common/
model_chunk_schedule_plan.py, read in the megatron-core 0.14.0 / 0.15.0 / 0.16.0 / 0.17.0 wheels):

    combine_B | attn_F | mlp_B | dispatch_F | mlp_B dw | dispatch_B | mlp_F | combine_F | attn_B | attn_B dw

(0.14 / 0.15 cut attention and the router into two nodes, attn and post_attn, 5 nodes a phase; 0.16 / 0.17 into one,
4 a phase). The alltoall dispatcher's host sync on the tokens per expert (token_dispatcher.py ``token_dispatch``:
``_maybe_dtoh_and_synchronize("before_ep_alltoall")``, the counts copied on a side stream that waits for the compute
stream before permutation 1) falls in dispatch_F, after the host has queued mlp_B: the host waits until the compute
stream has run attn_F's router, with mlp_B still queued behind it. Here the compute stream's kernels are raced
against the host in that order, each launch at the plan's host cost (``HostModel.dispatch_s`` at the GPU's host
CPU, the Transformer Engine module excess, ``host_dispatch.module_host_s``) and each kernel at the plan's stream time
(roofline at the sustained clock, the gap before it, fill), as ``kernels.synced_stall_s`` races a plain layer. The
combine nodes run on the communication stream (the unpermute and the residual add too): their launches cost the host,
their kernels are left off the compute stream (so the race, if anything, idles the stream more than it does).
The flex dispatcher's CPU wait (DeepEP) is raced at the plan's ``host_sync``, after the router, the same way; its
permutations run in the mlp node (dispatch_postprocess and combine_preprocess: permute after the dispatch, unpermute
before the combine), so only the residual add leaves the compute stream. The shared experts are raced in the mlp
node, as 0.14 and 0.15 run them (0.17 moves them into the attn node).

Not in the plan's host model and added only as ``--node-us`` (host seconds a node call, forward and backward): what
each node call does beyond its kernels (one cudaStreamWaitEvent and one cudaEventRecord, a stream switch, detaches,
record_stream calls, an fp8 autocast context forward, one autograd engine entry backward). No source prices them; the
script prints the price a node call would need to turn the pair host-bound (``break-even/node``).

Per scenario: the pair's device time on the compute stream, its host time, the raced period (steady state, one layer
pair) and its stall over the device time, and the break-even price. A diagnostic: nothing is fitted or written;
held-out scenarios may be read, never tuned to.
"""

from __future__ import annotations

import argparse
import sys

from moe_layer_terms import busiest_moe_block

from simcluster.core import script_entry
from simcluster.core.errors import ScenarioError
from simcluster.spec import config
from simcluster.workload import host_dispatch, kernels, mla, mxfp8_swizzles
from simcluster.workload.ops import HOST_ONLY_LAUNCH, HOST_SYNC, layer_ops

MARK = "mark"   # the compute stream's position the host sync waits for (the side stream's copy waits for it)
SYNC = "sync"   # the host waits here until the stream has run up to the mark
# Schedule nodes a phase of one MoE layer, by Megatron-Core release (wheels read: 0.14, 0.15: attn, post_attn,
# moe_dispatch, mlp, moe_combine; 0.16, 0.17: attn, moe_dispatch, mlp, moe_combine)
NODES_BEFORE_0_16 = 5
NODES_FROM_0_16 = 4
# the expert side of the layer (the mlp node and its weight gradients) and the combine node's forward
EXPERT_OPS = frozenset({"expert_up", "expert_act", "expert_down", "moe_launch", HOST_ONLY_LAUNCH, "moe_sort_map",
                        "moe_sort_chunks", "shared_expert_up", "shared_expert_act", "shared_expert_down"})
COMBINE_FORWARD_OPS = frozenset({"unpermute", "mlp_residual"})   # the alltoall dispatcher's combine node
FLEX_COMBINE_FORWARD_OPS = frozenset({"mlp_residual"})             # the flex dispatcher's


def nodes_per_phase(mcore_version: str) -> int:
    """Schedule nodes one MoE layer's phase runs through (``NODES_*``)."""
    major, minor = (int(part) for part in mcore_version.split(".")[:2])
    return NODES_BEFORE_0_16 if (major, minor) < (0, 16) else NODES_FROM_0_16


def layer_phases(scenario) -> dict[str, list]:
    """One MoE layer's ops per phase on the busiest EP rank, as the plan builds them (``plan.plan``: the busiest
    block, multi-head latent attention, MXFP8's swizzles)."""
    p = scenario.parallelism
    if p.tp_comm_overlap and p.sequence_parallel and p.tp > 1:
        raise ScenarioError("parallelism.tp_comm_overlap", "userbuffers' chunk GEMMs are not cut into nodes here")
    block, shard = busiest_moe_block(scenario)
    return mxfp8_swizzles.apply_for(scenario, mla.apply(scenario.model, shard, layer_ops(scenario.model, shard,
                                                                                         block)))


def costs(ops: list, phase: str, scenario) -> list[tuple[str, float, float | None]]:
    """(name, host s, stream s or None) per op of one phase: the host's launch and module cost, the kernel's time
    on the stream with the gap before it (None: a launch onto another stream); the sync itself as ``SYNC``."""
    gpu, precision = scenario.cluster.gpu, scenario.training.precision
    host, ratio = kernels.host_model(), kernels.host_cpu_ratio(gpu.name)
    te = host_dispatch.transformer_engine_layers(scenario)
    modules = host_dispatch.module_host_s(ops, phase, precision, ratio) if te else [0.0] * len(ops)
    out = []
    for op, module_s in zip(ops, modules, strict=True):
        if op.name == HOST_SYNC:
            out.append((SYNC, 0.0, None))
            continue
        host_s = host.dispatch_s * ratio + module_s
        if op.name == HOST_ONLY_LAUNCH:
            out.append((op.name, host_s, None))
            continue
        compute_s, memory_s = kernels.roofline_s(op, gpu, precision)
        wave = kernels.wave_s(op, compute_s, gpu.name)
        out.append((op.name, host_s, host.gap_s(op) + max(compute_s, memory_s) + host.fill_waves * wave))
    return out


def pair_sequence(scenario, node_s: float = 0.0) -> list[tuple[str, float, float | None]]:
    """One layer pair in the order the host issues it (module docstring), ``node_s`` host seconds before each node
    call. Forward: the attention side before the pre-MLP norm (with the phase's fp8 quantizes), the router up to the
    sync (the mark), the alltoall dispatcher's permutation 1 (queued before the sync), the expert side, the combine
    (off the compute stream). Backward: the combine's unpermute (off the stream), the expert side, its weight
    gradients (mlp_B dw), the router and attention side with any recompute, their weight gradients (attn_B dw)."""
    phases = layer_phases(scenario)
    nodes = nodes_per_phase(scenario.training.mcore_version)
    node = [("node", node_s, None)]
    forward = costs(phases["forward"], "forward", scenario)
    names = [name for name, _, _ in forward]
    if SYNC not in names:
        raise ScenarioError("model.moe", "the layer has no host sync to race (padded to capacity)")
    sync = names.index(SYNC)
    norm = names.index("mlp_norm")
    flex = scenario.parallelism.moe_dispatcher == "flex"
    combine_ops = FLEX_COMBINE_FORWARD_OPS if flex else COMBINE_FORWARD_OPS
    quantizes = [item for item in forward if item[0].startswith("fp8_")]
    attention_f = quantizes + [item for item in forward[:norm] if not item[0].startswith("fp8_")]
    router_f = forward[norm:sync]
    after = [item for item in forward[sync + 1:] if not item[0].startswith("fp8_")]
    queued_f = after[:1] if not flex and after and after[0][0] == "permute" else []
    rest = after[len(queued_f):]
    mlp_f = [item for item in rest if item[0] not in combine_ops]
    combine_f = [(name, host_s, None) for name, host_s, _ in rest if name in combine_ops]
    backward = (costs(phases.get("recompute", []), "recompute", scenario)
                + costs(phases["backward_input"], "backward_input", scenario))
    expert_b = EXPERT_OPS | {"permute", "unpermute"} if flex else EXPERT_OPS
    off_stream_b = set() if flex else {"unpermute"}
    combine_b = [(name, host_s, None) for name, host_s, _ in backward if name in off_stream_b]
    mlp_b = [item for item in backward if item[0] in expert_b]
    attention_b = [item for item in backward if item[0] not in expert_b and item[0] not in off_stream_b]
    weights = costs(phases["backward_weight"], "backward_weight", scenario)
    mlp_dw = [item for item in weights if item[0] in EXPERT_OPS]
    attention_dw = [item for item in weights if item[0] not in EXPERT_OPS]
    router_node = node if nodes == NODES_BEFORE_0_16 else []   # post_attn, a node of its own before 0.16
    return (node + combine_b + node + attention_f + router_node + router_f + [(MARK, 0.0, None)] + queued_f
            + node + mlp_b + node + [(SYNC, 0.0, None)] + mlp_dw + node + node + mlp_f + node + combine_f
            + router_node + node + attention_b + attention_dw)


def race_period_s(sequence: list[tuple[str, float, float | None]], layers: int = 40) -> float:
    """Steady-state time of one repetition of ``sequence`` (a layer pair) issued by one host thread onto one
    stream: each item costs the host its host seconds, then its kernel (stream seconds, None: no kernel here)
    starts when launched and the stream is free; at ``SYNC`` the host waits until the stream has run everything
    queued before the last ``MARK``. Measured over the second half of ``layers`` repetitions."""
    host_s = free_s = mark_s = 0.0
    ends = []
    for _ in range(layers):
        for name, cost_s, stream_s in sequence:
            if name == MARK:
                mark_s = free_s
            elif name == SYNC:
                host_s = max(host_s, mark_s)
            else:
                host_s += cost_s
                if stream_s is not None:
                    free_s = max(free_s, host_s) + stream_s
        ends.append(max(free_s, host_s))
    half = layers // 2
    return (ends[-1] - ends[half - 1]) / (layers - half)


def device_s(sequence) -> float:
    """The compute stream's busy time of one repetition of ``sequence``."""
    return sum(stream_s for _, _, stream_s in sequence if stream_s is not None)


def host_s(sequence) -> float:
    """The host's time of one repetition of ``sequence``, waits excluded."""
    return sum(cost_s for _, cost_s, _ in sequence)


def break_even_node_s(scenario, limit_s: float = 0.1) -> float:
    """The host seconds a node call would need (beyond the plan's host model) for the raced pair to outlast its
    device time by more than 0.1%, by bisection to 1 us (``limit_s`` if none below it)."""
    device = device_s(pair_sequence(scenario))
    low, high = 0.0, limit_s
    if race_period_s(pair_sequence(scenario, high)) <= device * 1.001:
        return limit_s
    while high - low > 1e-6:
        middle = (low + high) / 2
        if race_period_s(pair_sequence(scenario, middle)) > device * 1.001:
            high = middle
        else:
            low = middle
    return high


def report(name: str, node_s: float = 0.0) -> tuple[float, float, float, float]:
    """(device s, host s, raced period s, break-even s a node call) of one layer pair of scenario ``name``."""
    scenario = config.load(name)
    if not scenario.parallelism.ep_overlap:
        raise ScenarioError("parallelism.ep_overlap", f"{name} does not run the combined 1F1B schedule")
    sequence = pair_sequence(scenario, node_s)
    return device_s(sequence), host_s(sequence), race_period_s(sequence), break_even_node_s(scenario)


def main(argv: list[str] | None = None) -> int:
    parser = script_entry.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="+")
    parser.add_argument("--node-us", type=float, default=0.0,
                        help="host microseconds a node call beyond the plan's host model (default 0)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.node_us < 1e5:
        print("error: --node-us: between 0 and 1e5", file=sys.stderr)
        return 2
    print("scenario | device ms | host ms | raced ms | stall ms | break-even/node ms")
    for name in args.scenarios:
        try:
            device, host, period, even = report(name, args.node_us * 1e-6)
        except ScenarioError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        stall = max(0.0, period - device)
        print(f"{name} | {device * 1e3:.3f} | {host * 1e3:.3f} | {period * 1e3:.3f} | {stall * 1e3:.3f} | "
              f"{even * 1e3:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
