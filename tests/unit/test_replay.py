"""Replay of recorded runs: the replay rule, collective matching, GPU rescaling, and "what if" on real traces.

Real traces (tests/data/kineto, HolisticTraceAnalysis, MIT): the 2-rank A100 allreduce run (one rank file, the
other rank mirrored) and the 16-rank A100 run (rank 0 of 16, the others mirrored).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from simcluster import collectives, network
from simcluster.core.errors import ScenarioError
from simcluster.engine.replay import replay as run_replay
from simcluster.fabric import topology
from simcluster.replay.formats import read_chakra, read_kineto, write_chakra
from simcluster.replay.plan import _unknown_group, build_plan
from simcluster.replay.recorded import RecordedOp, RecordedRun
from simcluster.replay.report import RECORDED_PID_OFFSET, chrome_trace, exposed_s, step_report
from simcluster.replay.rescale import busy_rescaled, default_fabric, infer_gpu, kernel_speedup
from simcluster.spec import hardware
from simcluster.workload.kernels import hbm_fraction, roofline_s
from simcluster.workload.ops import Op

DATA = Path(__file__).parent.parent / "data"
TWO_RANKS = DATA / "kineto" / "a100-2rank-allreduce.rank0.json.gz"
SIXTEEN_RANKS = DATA / "kineto" / "a100-16rank-sendrecv.rank0.json.gz"
A100_40 = hardware.gpu("a100-40gb-sxm")
A100_80 = hardware.gpu("a100-80gb-sxm")


def fabric_for(gpus: int, gpu, topology_name="nvswitch-node", nic="connectx-6", gpus_per_node=8, **options):
    nic_spec = hardware.nic(nic) if isinstance(nic, str) else nic
    return topology.build(topology_name, gpus=gpus, gpus_per_node=gpus_per_node, gpu=gpu, nic=nic_spec,
                          options=options or None)


@pytest.fixture(scope="module")
def two_ranks() -> RecordedRun:
    return read_kineto([TWO_RANKS])


@pytest.fixture(scope="module")
def sixteen_ranks() -> RecordedRun:
    return read_kineto([SIXTEEN_RANKS])


def op(rank, stream, kind, start_ms, dur_ms, name="k", **extra) -> RecordedOp:
    return RecordedOp(rank=rank, stream=stream, kind=kind, name=name, started_at_s=start_ms * 1e-3,
                      duration_s=dur_ms * 1e-3, **extra)


# ---- the replay rule ---------------------------------------------------------------------------------------

def test_replay_without_resimulated_communication_reproduces_every_recorded_time():
    """Compute and communication of unknown size keep their durations: the gap/lag rule must put every op back
    exactly where it was recorded, whatever the stream interleaving."""
    ops = [op(0, 7, "compute", 1.0, 2.0),
           op(0, 9, "collective", 3.5, 1.0, name="allreduce", size_bytes=None, group=(0,), waits_for=(0,)),
           op(0, 7, "compute", 3.2, 0.5),
           op(0, 7, "compute", 5.0, 1.0, waits_for=(1,)),
           op(0, 9, "compute", 7.0, 0.2)]
    run = RecordedRun(ranks={0: ops}, world_size=1)
    events = run_replay(build_plan(run), fabric_for(1, A100_80)).events
    for row in events.itertuples():
        assert math.isclose(row.start_s, row.recorded_start_s, abs_tol=1e-12)
        assert math.isclose(row.end_s, row.recorded_end_s, abs_tol=1e-12)


def test_collective_slower_than_recorded_delays_the_op_waiting_for_it_by_the_recorded_lag():
    """A 64 MiB allreduce on 8 A100s recorded as 10 us (impossible on NVLink: at least 2(n-1)/n S / 300 GB/s
    = 0.39 ms) is replayed with the analytic network: the op that waited for it starts at its replayed end +
    the 0.3 ms lag recorded after it."""
    size = 64 * 2**20
    ranks = {r: [op(r, 7, "compute", 0.0, 1.0),
                 op(r, 9, "collective", 1.0, 0.01, name="allreduce", size_bytes=size, group=tuple(range(8)),
                    waits_for=(0,)),
                 op(r, 7, "compute", 1.31, 1.0, waits_for=(1,))] for r in range(8)}
    run = RecordedRun(ranks=ranks, world_size=8)
    events = run_replay(build_plan(run), fabric_for(8, A100_80), "analytic").events
    coll = events[events["op_kind"] == "collective"].iloc[0]
    after = events[(events["index"] == 2) & (events["rank"] == 0)].iloc[0]
    assert coll.simulated and coll.start_s == pytest.approx(1e-3)
    # ring allreduce moves 2(n-1)/n S over each GPU's NVLink (300 GB/s per direction): a lower bound
    assert coll.end_s - coll.start_s >= 2 * 7 / 8 * size / 300e9
    assert after.start_s == pytest.approx(coll.end_s + 0.3e-3, abs=1e-9)


def test_collectives_are_matched_by_order_and_unmatched_ones_keep_their_recorded_duration():
    """Rank 1 recorded one allreduce more than rank 0 (the profile ended between them): the first pair
    meets on the fabric, the orphan keeps its recorded 2 ms instead of waiting forever."""
    pair = (0, 1)
    ranks = {0: [op(0, 9, "collective", 0.0, 1.0, name="allreduce", size_bytes=1e6, group=pair)],
             1: [op(1, 9, "collective", 0.5, 0.5, name="allreduce", size_bytes=1e6, group=pair),
                 op(1, 9, "collective", 3.0, 2.0, name="allreduce", size_bytes=1e6, group=pair)]}
    run = RecordedRun(ranks=ranks, world_size=2)
    plan = build_plan(run)
    events = run_replay(plan, fabric_for(2, A100_80)).events.set_index(["rank", "index"])
    assert events.loc[(0, 0), "simulated"] and events.loc[(1, 0), "simulated"]
    assert events.loc[(0, 0), "end_s"] == events.loc[(1, 0), "end_s"]  # one collective, one completion
    assert not events.loc[(1, 1), "simulated"]
    assert events.loc[(1, 1), "end_s"] - events.loc[(1, 1), "start_s"] == pytest.approx(2e-3)
    assert any("never reaches" in a for a in plan.assumptions)


def test_ranks_disagreeing_on_collective_order_stall_with_a_clear_error():
    """Rank 0 runs (G1, G2) on one stream, rank 1 runs (G2, G1): each waits for the other; the replay must
    say so instead of returning a truncated timeline."""
    g1, g2 = (0, 1), (0, 1, 2)
    ranks = {0: [op(0, 9, "collective", 0, 1, name="allreduce", size_bytes=1e6, group=g1),
                 op(0, 9, "collective", 2, 1, name="allreduce", size_bytes=1e6, group=g2)],
             1: [op(1, 9, "collective", 0, 1, name="allreduce", size_bytes=1e6, group=g2),
                 op(1, 9, "collective", 2, 1, name="allreduce", size_bytes=1e6, group=g1)],
             2: [op(2, 9, "collective", 0, 1, name="allreduce", size_bytes=1e6, group=g2)]}
    with pytest.raises(ScenarioError, match="stalled"):
        run_replay(build_plan(RecordedRun(ranks=ranks, world_size=3)), fabric_for(3, A100_80))


def test_group_known_by_size_only_is_the_block_of_consecutive_ranks():
    assert _unknown_group(5, 4, 16) == (4, 5, 6, 7)
    assert _unknown_group(13, 8, 16) == tuple(range(8, 16))


def test_exposed_communication_is_the_part_not_covered_by_compute():
    # comm 0..10 ms, compute 2..5 and 4..6: covered 2..6 = 4 ms, exposed 6 ms
    assert exposed_s([(0.0, 10.0)], [(2.0, 5.0), (4.0, 6.0)]) == pytest.approx(6.0)
    assert exposed_s([(1.0, 2.0)], [(0.0, 3.0)]) == 0.0


# ---- GPU and fabric inference, rescaling ---------------------------------------------------------------------

@pytest.mark.parametrize(("device", "expected"), [
    ("NVIDIA A100-PG509-200", "a100-40gb-sxm"), ("NVIDIA A100-SXM4-80GB", "a100-80gb-sxm"),
    ("NVIDIA A100-SXM4-40GB", "a100-40gb-sxm"), ("NVIDIA H100 80GB HBM3", "h100-sxm"), (None, "a100-80gb-sxm")])
def test_device_names_map_to_catalog_gpus(device, expected):
    name, sentence = infer_gpu(device)
    assert name == expected and expected in sentence


def test_roofline_rescaling_uses_peak_ratio_for_gemms_and_hbm_ratio_for_the_rest():
    """A100 40 GB -> H100 SXM, datasheet figures: bf16 312 -> 989.4 TFLOP/s, HBM 1.555 -> 3.35 TB/s, the HBM at
    each part's achievable fraction (0.87 and 0.9: efficiency.yaml bandwidth_fraction)."""
    h100 = hardware.gpu("h100-sxm")
    hbm_ratio = 3.35 * hbm_fraction("h100-sxm") / (1.555 * hbm_fraction("a100-40gb-sxm"))   # 2.23
    assert kernel_speedup("cutlass_80_tensorop_s1688gemm", A100_40, h100) == pytest.approx(989.4 / 312)
    assert kernel_speedup("vectorized_elementwise_kernel", A100_40, h100) == pytest.approx(hbm_ratio)
    assert kernel_speedup("vectorized_elementwise_kernel", A100_40, h100, "peak") == \
        pytest.approx(989.4 / 312)
    # the memory roof is the bandwidth the kernel model runs copies at, not the datasheet's: the same 1 GiB copy
    # timed by workload.kernels on each GPU (A100 80GB's bandwidth_fraction differs from H100's)
    a100_80 = hardware.gpu("a100-80gb-sxm")
    copy = Op("copy", "memory", 0.0, 2.0 * 2**30)
    copy_s = {g.name: max(roofline_s(copy, g, "bf16", sustained=False)) for g in (a100_80, h100)}
    assert kernel_speedup("vectorized_elementwise_kernel", a100_80, h100) == \
        pytest.approx(copy_s["a100-80gb-sxm"] / copy_s["h100-sxm"])
    # a merged segment of a 1 ms GEMM and a 1 ms elementwise kernel, 0.5 ms of launch gap between them
    segment = op(0, 7, "compute", 0.0, 2.5, name="gemm +1 kernels", kernels=2, busy_s=2e-3)
    kernels = RecordedRun(ranks={0: [op(0, 7, "compute", 0.0, 1.0, name="sm80_xmma_gemm"),
                                     op(0, 7, "compute", 1.5, 1.0, name="elementwise_kernel")]}, world_size=1)
    run = RecordedRun(ranks={0: [segment]}, world_size=1)
    busy, sentence = busy_rescaled(run, A100_40, h100, "roofline", kernels)
    assert busy[(0, 0)] == pytest.approx(1e-3 * 312 / 989.4 + 1e-3 / hbm_ratio)
    plan = build_plan(run, busy_s=busy)
    assert plan.ops[0][0].duration_s == pytest.approx(0.5e-3 + busy[(0, 0)])  # the launch gap is kept
    assert "kernel by kernel" in sentence


def test_faster_gpu_shortens_compute_of_a_real_trace(two_ranks):
    busy, _ = busy_rescaled(two_ranks, A100_40, hardware.gpu("h100-sxm"))
    fabric = fabric_for(2, hardware.gpu("h100-sxm"))
    base = step_report(two_ranks, run_replay(build_plan(two_ranks), fabric_for(2, A100_40)).events)
    fast = step_report(two_ranks, run_replay(build_plan(two_ranks, busy_s=busy), fabric).events)
    for b, f in zip(base, fast, strict=True):
        # every kernel speeds up by between the achievable HBM ratio (2.23x; the datasheets' 2.15x) and the peak
        # ratio (3.17x)
        assert b["compute_s"] / 3.18 < f["compute_s"] < b["compute_s"] / 2.15
        assert f["replayed_step_s"] < b["replayed_step_s"]


# ---- real traces: "done when" ----------------------------------------------------------------------------------

def recorded_gpu_span_s(run: RecordedRun) -> float:
    """From the first to the last recorded GPU op, over all recorded ranks (straight from the import)."""
    ops = [o for ops in run.ranks.values() for o in ops]
    return max(o.ended_at_s for o in ops) - min(o.started_at_s for o in ops)


@pytest.mark.parametrize("trace", ["two_ranks", "sixteen_ranks"])
def test_replay_on_the_fabric_it_ran_on_reproduces_the_recorded_step_time(trace, request):
    """Within 10% of the profiler's ProfilerStep times, every step.

    What was assumed, and why: the GPU from deviceProperties: 'NVIDIA A100-PG509-200' (totalGlobalMem 42.3e9 B)
    -> a100-40gb-sxm, 'NVIDIA A100-SXM4-80GB' -> a100-80gb-sxm. The fabric is not recorded: both traces list 8
    devices per host, so 8 GPUs per node; 2 ranks then sit in one NVSwitch node (nvswitch-node), 16 ranks on two
    HGX A100 nodes with the DGX A100's ConnectX-6 HDR 200 Gb/s adapters on a non-blocking rail-optimised
    fat-tree (rail-fat-tree). The communication is re-simulated (most ops), not copied: its durations change.
    """
    run = request.getfixturevalue(trace)
    gpu_name, _ = infer_gpu(run.gpu_name)
    topology_name, nic, _ = default_fabric(run.world_size, gpu_name, 8)
    assert (gpu_name, topology_name, nic) == {
        "two_ranks": ("a100-40gb-sxm", "nvswitch-node", "connectx-6"),
        "sixteen_ranks": ("a100-80gb-sxm", "rail-fat-tree", "connectx-6")}[trace]
    fabric = fabric_for(run.world_size, hardware.gpu(gpu_name), topology_name, nic)
    events = run_replay(build_plan(run), fabric).events
    steps = step_report(run, events)
    assert [s["step"] for s in steps] == run.step_numbers()
    for s in steps:
        assert abs(s["replayed_step_s"] / run.step_time_s(s["step"]) - 1) < 0.10
    replayed_span_s = events["end_s"].max() - events["start_s"].min()
    assert abs(replayed_span_s / recorded_gpu_span_s(run) - 1) < 0.10
    comm = events[events["kind"] == "comm"]
    assert comm["simulated"].mean() > 0.9
    changed = (comm["end_s"] - comm["start_s"]) - (comm["recorded_end_s"] - comm["recorded_start_s"])
    assert (changed[comm["simulated"]].abs() > 1e-6).mean() > 0.5


def test_slower_fabric_grows_exposed_communication_and_keeps_compute(two_ranks):
    """The 2-rank run moved to two nodes, one GPU each, behind ConnectX-6 on a 4:1 oversubscribed leaf-spine
    (one host per leaf: every byte crosses a 200/4 = 50 Gb/s uplink)."""
    plan = build_plan(two_ranks)
    base = run_replay(plan, fabric_for(2, A100_40)).events
    slow_fabric = fabric_for(2, A100_40, "leaf-spine", gpus_per_node=1, oversubscription=4, hosts_per_leaf=1)
    slow = run_replay(plan, slow_fabric).events
    before, after = step_report(two_ranks, base), step_report(two_ranks, slow)
    for b, a in zip(before, after, strict=True):
        assert a["compute_s"] == b["compute_s"]
        assert a["exposed_comm_s"] > b["exposed_comm_s"] + 1e-3
        assert a["replayed_step_s"] >= b["replayed_step_s"]
    # each 2-rank allreduce moves S over the 6.25 GB/s uplink at least once: S / 6.25e9 s is a lower bound
    allreduce = slow[(slow["name"] == "allreduce") & slow["simulated"]]
    assert ((allreduce["end_s"] - allreduce["start_s"]) >= allreduce["bytes"] / (200e9 / 8 / 4)).all()


def test_scale_dp_grows_world_spanning_groups_and_explains_it(two_ranks):
    """Rank 1 mirrors rank 0 and --scale-dp 4 repeats both: the 8 ranks run one program, so the collapsed plan
    is one agent standing for all 8 whose world-spanning collectives run over all 8; expanded, 8 agents."""
    plan = build_plan(two_ranks, scale_dp=4)
    assert plan.world_size == 8 and plan.members == {0: tuple(range(8))}
    assert plan.op_count() == 8 * len(two_ranks.ranks[0])
    replicas = tuple((2 * k, 2 * k + 1) for k in range(4))
    groups = {o.name: o.groups for ops in plan.ops.values() for o in ops if o.collective}
    # gradients are reduced over every replica; the broadcast (of the initial parameters) stays in each
    assert groups == {"allreduce": (tuple(range(8)),), "broadcast": replicas}
    assert "weak scaling" in plan.assumptions[0]
    expanded = build_plan(two_ranks, scale_dp=4, expand=True)
    assert set(expanded.ops) == set(range(8)) and expanded.op_count() == plan.op_count()
    assert {o.groups for o in expanded.ops[5] if o.collective} == {(tuple(range(8)),), ((4, 5),)}
    events = run_replay(plan, fabric_for(8, A100_40)).events
    assert events["rank"].nunique() == 1 and (events["group"] == 8).all()


@pytest.mark.parametrize("trace", ["two_ranks", "sixteen_ranks"])
def test_collapsed_replay_equals_one_agent_per_rank(trace, request):
    """The symmetry collapse changes what is simulated, not the result: the same step report as one agent per
    rank (the network sees every rank's traffic either way)."""
    run = request.getfixturevalue(trace)
    fabric = fabric_for(run.world_size * 2, hardware.gpu(infer_gpu(run.gpu_name)[0]), "rail-fat-tree")
    collapsed = step_report(run, run_replay(build_plan(run, scale_dp=2), fabric).events)
    expanded = step_report(run, run_replay(build_plan(run, scale_dp=2, expand=True), fabric).events)
    for a, b in zip(collapsed, expanded, strict=True):
        for key in ("replayed_step_s", "compute_s", "exposed_comm_s"):
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12)


def test_chakra_export_then_import_gives_the_same_replayed_step_time(two_ranks, tmp_path):
    """simcluster's Chakra export keeps times to the nanosecond: the replay of the re-imported run matches."""
    again = read_chakra(write_chakra(two_ranks, tmp_path, "job"))
    fabric = fabric_for(2, A100_40)
    original = step_report(two_ranks, run_replay(build_plan(two_ranks), fabric).events)
    reread = step_report(again, run_replay(build_plan(again), fabric).events)
    assert [s["step"] for s in reread] == [s["step"] for s in original]
    for a, b in zip(original, reread, strict=True):
        assert b["replayed_step_s"] == pytest.approx(a["replayed_step_s"], abs=1e-8)
        assert b["exposed_comm_s"] == pytest.approx(a["exposed_comm_s"], abs=1e-8)


def test_astra_sim_chakra_allreduce_takes_the_time_of_the_collective_alone():
    """The 8-rank 1 MiB allreduce of astra-sim's examples (no steps, no times) is one pseudo-step whose time is
    the collective alone: the same schedule and calibrated network driven by the pure loop
    (``collectives.simulate``) instead of SimPy events; and no faster than the ring's bandwidth term."""
    from simcluster.collectives.timing import engine_schedule

    run = read_chakra(sorted((DATA / "chakra").glob("all_reduce.*.et")))
    fabric = fabric_for(8, A100_80)
    steps = step_report(run, run_replay(build_plan(run), fabric).events)
    group, size = tuple(range(8)), 2**20
    alone_s = collectives.simulate(engine_schedule(fabric, "allreduce", group, size),
                                   network.make("flow", collectives.calibrated(fabric)))
    assert len(steps) == 1 and steps[0]["step"] is None
    assert steps[0]["replayed_step_s"] == pytest.approx(alone_s, rel=1e-6)
    assert steps[0]["exposed_comm_s"] == pytest.approx(alone_s, rel=1e-6)
    assert alone_s >= 2 * 7 / 8 * size / 300e9


def test_perfetto_trace_holds_recorded_and_replayed_copies(two_ranks):
    events = run_replay(build_plan(two_ranks, expand=True), fabric_for(2, A100_40), "analytic").events
    trace = chrome_trace(events, max_ranks=8)["traceEvents"]
    spans = [e for e in trace if e["ph"] == "X"]
    pids = {e["pid"] for e in spans}
    assert pids == {0, 1, RECORDED_PID_OFFSET, RECORDED_PID_OFFSET + 1}
    assert len(spans) == 2 * len(events)


def test_steps_without_annotations_become_one_step():
    ops = [op(0, 7, "compute", 0.0, 1.0), op(0, 7, "compute", 2.0, 1.0)]
    run = RecordedRun(ranks={0: ops}, world_size=1, steps=[])
    steps = step_report(run, run_replay(build_plan(run), fabric_for(1, A100_80)).events)
    assert len(steps) == 1 and steps[0]["recorded_step_s"] == pytest.approx(3e-3)
    assert steps[0]["compute_s"] == pytest.approx(2e-3)


@pytest.mark.parametrize("gpus,holds", [(128, True), (136, False)])
def test_rail_fat_tree_capacity_is_the_builders(gpus, holds):
    """The pods the default fabric's choice counts are the ones the builder wires: radix 8 holds 8^3/4 = 128 GPUs
    of 8 per node in three tiers, and refuses one server more."""
    from simcluster.replay.rescale import rail_fat_tree_pods
    assert (rail_fat_tree_pods(gpus, 8, 8) <= 8) is holds
    if holds:
        assert fabric_for(gpus, A100_80, "rail-fat-tree", radix=8, tiers=3).gpus == gpus
    else:
        with pytest.raises(ScenarioError, match="pods"):
            fabric_for(gpus, A100_80, "rail-fat-tree", radix=8, tiers=3)


def test_default_fabric_beyond_sixteen_thousand_ranks_takes_larger_switches(tmp_path):
    """A100 traces default to a fat-tree of 40-port HDR switches, which holds 16,000 GPUs: a 16,400-rank replay
    (a 16-rank data-parallel Chakra step, --scale-dp 1025) builds on 64-port switches and says so; 16,000 ranks
    keep the default switches."""
    from simcluster.replay.formats.synthetic import data_parallel_chakra
    from simcluster.replay.rescale import default_fabric_options
    from simcluster.studies.replay import replay_traces
    assert default_fabric_options(16_000, 8) == ({}, None)
    files = data_parallel_chakra(tmp_path, 16, 2, 1000, 1000, 1000, 1_000_000)
    outcome = replay_traces(files, gpu_name="a100-80gb-sxm", scale_dp=1025, network_model="analytic")
    assert outcome.plan.world_size == 16_400 and outcome.fabric.gpus == 16_400
    assert any("64-port Quantum-2" in sentence for sentence in outcome.assumptions)
    assert outcome.steps[0]["replayed_step_s"] > 5 * 1e-3  # 2 layers x 3 ms of compute and the all-reduces
