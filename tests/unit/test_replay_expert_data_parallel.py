"""Round trip of a run with expert data-parallel collectives (``replay.formats.simulated``): a simulated MoE step
exported (Chakra, Kineto) and replayed on its own fabric gives its step back.

The small MoE model of ``test_dp_communicator_streams`` on 16 H100s, TP 1, EP 2, DP 16: the dense gradients and
parameters go over dp x cp (all 16 ranks), the routed experts' over the expert data-parallel group (16 / (ep x etp)
= 8 ranks: the ranks of rank 0's expert-parallel index, the even ones). Megatron-FSDP (ZeRO-3 on
Megatron-Core) runs the two groups on their own streams at once; ZeRO-1 queues both on one. Fails with the expert
collectives over another group, on the dense stream of a run that had two, or not exported at all.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from simcluster.engine import simulate
from simcluster.engine.replay import replay
from simcluster.fabric import topology
from simcluster.parallel.layout import Layout
from simcluster.parallel.plan import grad_norm_axes
from simcluster.replay.formats.simulated import from_simulation
from simcluster.replay.plan import build_plan
from simcluster.spec import config

sys.path.insert(0, str(Path(__file__).parent))
from test_dp_communicator_streams import MODEL  # noqa: E402
from test_replay_roundtrip import FORMATS, replayed_step_s  # noqa: E402

EVEN_RANKS = tuple(range(0, 16, 2))  # rank 0's expert data-parallel group (its dense one: all 16 ranks)
STEP_REL = 1e-6  # the replay re-runs the engine's own collectives on the same fabric: the same step


def _scenario(zero_stage: int) -> config.Scenario:
    return config.from_dict({
        "name": "edp-roundtrip", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2,
                                             "topology": "rail-fat-tree"},
        "model": MODEL,
        "training": {"seq_len": 2048, "global_batch_size": 32, "micro_batch_size": 1, "steps": 1},
        "parallelism": {"tp": 1, "pp": 1, "dp": 16, "ep": 2, "zero_stage": zero_stage},
    })


def _export(zero_stage: int):
    spec = _scenario(zero_stage)
    result = simulate(spec)
    p = spec.parallelism
    run = from_simulation(result.events, Layout.of(p), "NVIDIA H100 80GB HBM3", grad_norm_axes=grad_norm_axes(p),
                          ep=p.ep, etp=p.etp)
    return spec, result, run


@pytest.mark.parametrize("zero_stage", [3, 1])
def test_expert_collectives_keep_their_group_and_stream(zero_stage):
    """Every expert collective of the step is a collective over the expert data-parallel group (rank 0: the even
    ranks, rank 1: the odd ones; the collapsed run's events are rank 0's, which stands for both), on the expert
    stream where the run had one, else on the dense stream with the dense collectives."""
    _, result, run = _export(zero_stage)
    events = result.events
    expert = events["name"].str.startswith("expert ")
    stream = "dp-experts" if zero_stage == 3 else "dp"
    assert set(events[expert]["stream"]) == {stream}
    on_stream = events[(events["stream"] == stream) & ~events["name"].str.startswith("grad norm")]
    for rank, group in ((0, EVEN_RANKS), (1, tuple(range(1, 16, 2)))):
        ops = [op for op in run.ranks[rank] if op.stream == stream and op.name in ("allgather", "reduce_scatter")]
        assert len(ops) == len(on_stream)
        assert sorted(op.size_bytes for op in ops) == sorted(on_stream["bytes"])
        assert sorted(op.group for op in ops) == sorted(group if row.startswith("expert ") else tuple(range(16))
                                                        for row in on_stream["name"])


@pytest.mark.parametrize("trace_format", FORMATS)
@pytest.mark.parametrize("zero_stage", [3, 1])
def test_replay_of_an_expert_data_parallel_run_gives_its_step_back(zero_stage, trace_format, tmp_path):
    spec, result, run = _export(zero_stage)
    step_s = result.summary["step_time_s"]
    assert run.step_time_s(0) == pytest.approx(step_s, rel=1e-9)
    assert replayed_step_s(run, spec) == pytest.approx(step_s, rel=STEP_REL)
    write, read = FORMATS[trace_format]
    assert replayed_step_s(read(write(run, tmp_path, "sim")), spec) == pytest.approx(step_s, rel=STEP_REL)


def test_replayed_expert_stream_keeps_its_own_lane():
    spec, _, run = _export(3)
    events = replay(build_plan(run), topology.from_scenario(spec)).events
    lanes = events[events["stream"].isin(("dp", "dp-experts"))]
    assert set(lanes["stream"]) == {"dp", "dp-experts"}
    assert (lanes["stream"] == lanes["cuda_stream"]).all()
