"""When Megatron-Core dispatches an interleaved stage's parameter gathers, per release (engine/data_parallel.py
``GatherDuringForward``, ``interleaved_param_gather``; docs/calibration/round-26.md "Round 26: Megatron-Core's
vocabulary padding, interleaved parameter gathers and gradient zeroing").

Sources (the released megatron-core wheels, read file by file):
- 0.9.0 pipeline_parallel/schedules.py l. 685-688: ``param_sync_func[0]`` and ``[1]`` before the first forward;
  l. 733-750 (``forward_step_helper``): chunk ``get_model_chunk_id(microbatch_id + pipeline_parallel_rank) + 1`` when
  that id is a chunk's first microbatch and the chunk is > 1, i.e. chunk c >= 2 at this rank's forward
  ``(c - 1) pp - pp_rank``; the DDP pre-hooks then only wait (``skip_next_bucket_dispatch``).
- 0.8.0 optimizer/distrib_optimizer.py l. 1336-1337 (``zero_grad`` dispatches handle 0), l. 1356-1361 (handles in
  model-chunk order), l. 1454-1475 (``_finish_param_sync_helper``: wait for handle i, dispatch i + 1): chunk c's first
  gather starts when chunk c - 1's last is waited for, in chunk c - 1's first forward.

The model is small and its gathers cross NVLink (dp 2 inside a node), so each gather ends long before the next is
dispatched: a gather's start is its dispatch instant, which the tests compute by hand from the schedule. Four virtual
stages (review, docs/calibration/round-26.md "Round 26: review of the interleaved parameter gathers"): with three, chunk
2 was the only one after the first two, and a trigger blind to the chunk (forward pp - pp_rank) passed.
"""

from __future__ import annotations

import pytest

from simcluster.engine import simulate
from simcluster.engine.data_parallel import interleaved_param_gather
from simcluster.spec import config
from tests.unit.test_mcore_version import _pipeline

PP, VP = 2, 4  # vp 4: chunks 2 and 3 tell (c - 1) pp - rank from a trigger blind to c (review, round 26)


def _data(version: str, **parallelism) -> dict:
    """test_mcore_version's two stages over two nodes (dp 2 inside each node), one layer per model chunk."""
    data = _pipeline(version, VP)
    data["name"] = "interleaved-gathers"
    data["model"]["layers"] = PP * VP
    data["parallelism"].update(parallelism)
    return data


def _stages(version: str):
    result = simulate(config.from_dict(_data(version)))
    events = result.events
    ranks = sorted(events["rank"].unique())
    # one agent per stage: its ranks' lowest is the stage's (collapsed: a rank per stage)
    return result.summary["step_time_s"], [events[events["rank"] == r].sort_values("start_s") for r in ranks]


def _first_gather(stage, chunk: int):
    return stage[stage["name"] == f"param all_gather c{chunk}b0"].iloc[0]


def _forward_start(stage, chunk: int, microbatch: int) -> float:
    rows = stage[stage["name"].str.startswith(f"forward c{chunk}") & (stage["stream"] == "compute")
                 & (stage["microbatch"] == microbatch)]
    return float(rows["start_s"].min())


def _last_gather_end(stage, chunk: int) -> float:
    return float(stage[stage["name"].str.startswith(f"param all_gather c{chunk}b")]["end_s"].max())


@pytest.mark.parametrize("version, mode", [("0.8", "chained"), ("0.9", "aligned"), ("0.15", "aligned")])
def test_the_release_picks_the_dispatch(version, mode):
    assert interleaved_param_gather(config.from_dict(_data(version))) == mode
    assert interleaved_param_gather(config.from_dict(_data(version, virtual_stages=1))) is None
    assert interleaved_param_gather(config.from_dict(_data(version, grad_buckets="apex"))) is None


def test_from_0_9_chunks_after_the_second_start_at_forward_c_minus_1_pp_minus_rank():
    _step, stages = _stages("0.9")
    assert len(stages) == PP
    for rank, stage in enumerate(stages):
        chunks = [rank + PP * v for v in range(VP)]
        # chunks 0 and 1: before the first forward (the step's start), back to back on the data-parallel stream
        assert _first_gather(stage, chunks[0])["start_s"] == 0.0
        assert _first_gather(stage, chunks[1])["start_s"] == pytest.approx(
            _last_gather_end(stage, chunks[0]), abs=1e-12)
        # chunk c >= 2: at this rank's forward k = (c - 1) pp - rank; forwards run in groups of pp microbatches per
        # chunk (schedules.py get_model_chunk_id: (k mod pp vp) // pp, microbatch k mod pp in the first group)
        for c in range(2, VP):
            k = (c - 1) * PP - rank
            chunk_k, microbatch_k = chunks[k // PP], k % PP
            dispatched = _forward_start(stage, chunk_k, microbatch_k)
            assert _last_gather_end(stage, chunks[c - 1]) < dispatched         # the stream is idle then
            assert _first_gather(stage, chunks[c])["start_s"] == pytest.approx(dispatched, abs=1e-12)


def test_before_0_9_each_chunk_starts_when_the_previous_chunks_last_gather_is_waited_for():
    _step, stages = _stages("0.8")
    for rank, stage in enumerate(stages):
        chunks = [rank + PP * v for v in range(VP)]
        assert _first_gather(stage, chunks[0])["start_s"] == 0.0       # zero_grad: the step's start
        for before, chunk in zip(chunks, chunks[1:], strict=False):
            # the wait for chunk - 1's last gather is in its first forward, which then starts computing
            waited = max(_last_gather_end(stage, before), _forward_start(stage, before, 0))
            assert _first_gather(stage, chunk)["start_s"] == pytest.approx(waited, abs=1e-12)
            assert _first_gather(stage, chunk)["start_s"] == pytest.approx(_forward_start(stage, before, 0), abs=1e-12)


# ---- the gradient buffers' zeroing: one kernel per model chunk's buffer ---------------------------------------------
def test_the_zeroing_launches_one_kernel_per_chunk_buffer_and_writes_the_same_bytes():
    """megatron-core 0.9.0 distributed_data_parallel.py l. 429-439: every model chunk's DDP zeroes its own buffers
    (``for buffer in self.buffers + self.expert_parallel_buffers: buffer.reset()``, param_and_grad_buffer.py
    l. 646-650: ``self.grad_data.zero_()``), and Megatron-LM's train_step calls it for each chunk. The same 4 bytes
    per fp32 buffer element in all (device-bound: 8e9 elements), v - 1 more stream gaps for v chunks' buffers."""
    from simcluster.parallel.plan import gradient_buffers, optimizer_time_s
    from simcluster.spec.hardware import gpu
    from simcluster.workload import kernels

    h100 = gpu("h100-sxm")
    shard, buffer, tensors = 1e9, 8e9, 30
    one = optimizer_time_s(shard, h100, "bf16", "fp32", "adam", buffer, tensors, buffers=1)
    eight = optimizer_time_s(shard, h100, "bf16", "fp32", "adam", buffer, tensors, buffers=8)
    assert eight - one == pytest.approx(7 * kernels.host_model().kernel_gap_s, rel=1e-9)
    scenario = config.from_dict(_data("0.8"))
    assert gradient_buffers(scenario, VP) == VP
    assert gradient_buffers(config.from_dict(_data("0.8", grad_buckets="apex")), VP) == 1
