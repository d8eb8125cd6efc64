"""The replay study (simcluster/studies/replay.py): trace files in, events, per-step report and assumptions out,
without the command line. The command's own contract (options, messages, files) is tests/cli/test_replay_cli.py.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.replay.formats import write_chakra
from simcluster.replay.recorded import RecordedOp, RecordedRun
from simcluster.replay.report import step_report
from simcluster.spec import hardware
from simcluster.studies.replay import nic_from_text, replay_traces
from simcluster.workload import kernels
from simcluster.workload.ops import Op

CHAKRA = sorted((Path(__file__).parent.parent / "data" / "chakra").glob("all_reduce.*.et"))


def test_outcome_holds_the_events_their_report_and_every_assumption_in_order():
    """astra-sim's 8-rank allreduce: the importer's sentences first, then the GPU, the default fabric and what
    it was replayed on, the plan's own last; the simulation runs once, inside ``status``."""
    shown = []

    @contextmanager
    def status(message):
        shown.append(message)
        yield

    outcome = replay_traces(CHAKRA, network_model="analytic", status=status)
    assert shown == ["replaying 8 ops on 8 ranks..."]
    assert outcome.steps == step_report(outcome.run, outcome.events)
    report = outcome.report()
    assert report["steps"] == outcome.steps and report["assumptions"] == outcome.assumptions
    assert (report["fabric"], report["gpu"], report["gpu_assumed"]) == ("nvswitch-node", "a100-80gb-sxm", True)
    assert outcome.gpu == "a100-80gb-sxm" and outcome.fabric.name == "nvswitch-node"
    own = outcome.assumptions[len(outcome.run.assumptions):]
    assert own[0].startswith("GPU: the trace does not name its GPU")
    assert own[1].startswith("fabric: the trace does not record it")
    # what was built, read from the fabric: 8 GPUs on one NVSwitch, A100 NVLink 300 GB/s per direction
    assert own[2] == "fabric replayed on: nvswitch-node, 8 GPUs, 8 per node, links nvlink 2400 Gb/s, network " \
                     "model analytic"
    assert own[-1].startswith("replayed 8 ops on 8 ranks: 8 of 8 communication ops re-simulated")


def test_gpu_changes_compute_only_and_a_fabric_file_is_reported_as_built(tmp_path):
    """--gpu h100-sxm on an A100 trace: the fabric keeps the A100's NVLink and ConnectX-6 (the trace's), and
    the links reported are those of the fabric built, not a catalog NIC."""
    paths = comm_bound_trace(tmp_path, 1e-3, "t")
    same = replay_traces(paths, network_model="analytic")
    faster_gpu = replay_traces(paths, network_model="analytic", gpu_name="h100-sxm")
    assert faster_gpu.gpu == "h100-sxm" and not faster_gpu.gpu_assumed
    assert list(faster_gpu.fabric.link_bytes_per_s) == list(same.fabric.link_bytes_per_s)
    allreduce = [o.events.loc[o.events["name"] == "allreduce"] for o in (same, faster_gpu)]
    assert float((allreduce[0]["end_s"] - allreduce[0]["start_s"]).iloc[0]) == \
        pytest.approx(float((allreduce[1]["end_s"] - allreduce[1]["start_s"]).iloc[0]))
    # "backward" and "optimizer" are not GEMM kernel names: rescaled by the ratio of achievable HBM bandwidths,
    # the time of the same 1 GiB copy in the kernel model on each GPU
    hbm_ratio = _copy_s("a100-80gb-sxm") / _copy_s("h100-sxm")
    assert faster_gpu.steps[0]["compute_s"] == pytest.approx(same.steps[0]["compute_s"] / hbm_ratio)
    assert any("links nvlink 2400 Gb/s" in a and "200 Gb/s" in a for a in same.assumptions)


def _copy_s(gpu_name: str) -> float:
    copy = Op("copy", "memory", 0.0, 2.0 * 2**30)
    return max(kernels.roofline_s(copy, hardware.gpu(gpu_name), "bf16", sustained=False))


def test_a_line_rate_nic_is_the_default_nic_at_that_rate():
    custom = nic_from_text("25 Gb/s", "connectx-6")
    base = hardware.nic("connectx-6")
    assert custom.name == "custom 25 Gb/s" and custom.rate == pytest.approx(25e9 / 8)
    assert custom.model_dump(exclude={"name", "rate"}) == base.model_dump(exclude={"name", "rate"})
    assert nic_from_text("connectx-7", "connectx-6") == hardware.nic("connectx-7")
    with pytest.raises(ScenarioError, match="--nic"):
        nic_from_text("fast", "connectx-6")


def comm_bound_trace(tmp_path: Path, allreduce_s: float, name: str) -> list[Path]:
    """16 ranks (2 A100 nodes) of a communication-bound step: 2 ms of compute, a 256 MiB all-reduce of the
    gradients recorded as ``allreduce_s``, then 2 ms of compute that waits for it (launched 5 us after it)."""
    size = 256 * 2**20
    ranks = {}
    for r in range(16):
        ranks[r] = [
            RecordedOp(r, 7, "compute", "backward", 0.0, 2e-3),
            RecordedOp(r, 20, "collective", "allreduce", 2e-3, allreduce_s, size_bytes=size, group=tuple(range(16)),
                       waits_for=(0,)),
            RecordedOp(r, 7, "compute", "optimizer", 2e-3 + allreduce_s + 5e-6, 2e-3, waits_for=(1,))]
    run = RecordedRun(ranks=ranks, world_size=16, gpu_name="NVIDIA A100-SXM4-80GB")
    return write_chakra(run, tmp_path / name, "step")


def test_a_faster_nic_shortens_a_communication_bound_step_and_a_slower_one_lengthens_it(tmp_path):
    """The trace is recorded with the all-reduce taking what the default fabric (rail-optimised fat-tree,
    ConnectX-6 200 Gb/s) gives, so replaying it there changes nothing; 10x the NIC rate must shorten the step,
    a tenth of it lengthen it. The optimizer starts its 5 us lag after the all-reduce wherever that ends (a
    wait on another stream is never a fixed gap). Independent bound: an all-reduce over two nodes must move at
    least S/2 out of each node and S/2 back in, through 8 NICs: S / (8 x NIC rate)."""
    probe = replay_traces(comm_bound_trace(tmp_path, 1e-3, "probe"), network_model="analytic")
    allreduce_s = float(probe.events.loc[probe.events["name"] == "allreduce", "end_s"].iloc[0]) - 2e-3
    paths = comm_bound_trace(tmp_path, allreduce_s, "recorded")
    same = replay_traces(paths, network_model="analytic")
    fast = replay_traces(paths, network_model="analytic", nic="2000 Gb/s")
    slow = replay_traces(paths, network_model="analytic", nic="20 Gb/s")
    recorded_s = 4e-3 + allreduce_s + 5e-6
    (s_same,), (s_fast,), (s_slow,) = same.steps, fast.steps, slow.steps
    assert s_same["recorded_step_s"] == pytest.approx(recorded_s)
    assert s_same["replayed_step_s"] == pytest.approx(recorded_s, rel=1e-9)
    assert 4e-3 < s_fast["replayed_step_s"] < 0.95 * recorded_s
    assert s_slow["replayed_step_s"] > 3 * recorded_s
    assert s_slow["replayed_step_s"] - 4e-3 - 5e-6 >= 256 * 2**20 / (8 * 20e9 / 8)
    for outcome in (fast, slow):
        ev = outcome.events
        optimizer = ev[ev["name"] == "optimizer"].iloc[0]
        allreduce = ev[ev["name"] == "allreduce"].iloc[0]
        assert optimizer.start_s == pytest.approx(allreduce.end_s + 5e-6, abs=1e-12)
