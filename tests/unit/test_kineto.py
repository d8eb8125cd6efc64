"""Kineto (PyTorch-profiler) import, checked against the raw JSON of real traces read independently here."""

from __future__ import annotations

import gzip
import json
import math
from collections import Counter
from pathlib import Path

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.replay.formats import load_trace, read_kineto
from simcluster.replay.recorded import COLLECTIVE, COMPUTE

DATA = Path(__file__).parents[1] / "data" / "kineto"
TWO_RANK = DATA / "a100-2rank-allreduce.rank0.json.gz"
PP_128 = [DATA / "pp-128rank-sampled.rank0.json.gz", DATA / "pp-128rank-sampled.rank1.json.gz"]
GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")


def raw(path: Path) -> dict:
    return json.loads(gzip.decompress(path.read_bytes()))


@pytest.fixture(scope="module")
def two_rank():
    return read_kineto([TWO_RANK])


@pytest.fixture(scope="module")
def two_rank_raw():
    return raw(TWO_RANK)


def test_rank_world_size_and_gpu_come_from_distributed_info_and_device_properties(two_rank, two_rank_raw):
    assert list(two_rank.ranks) == [two_rank_raw["distributedInfo"]["rank"]]
    assert two_rank.world_size == two_rank_raw["distributedInfo"]["world_size"] == 2
    assert two_rank.gpu_name == two_rank_raw["deviceProperties"][0]["name"]


def test_every_gpu_kernel_is_in_exactly_one_op_and_its_time_is_conserved(two_rank, two_rank_raw):
    gpu = [e for e in two_rank_raw["traceEvents"] if e.get("ph") == "X" and e.get("cat") in GPU_CATEGORIES]
    ops = two_rank.ranks[0]
    assert sum(op.kernels for op in ops) == len(gpu)
    # Segment spans come from absolute timestamps (~4e12 us, resolved to ~1 ns): allow 1 ns per op.
    kernel_s = sum(e["dur"] for e in gpu) * 1e-6
    assert sum(op.kernel_s for op in ops) == pytest.approx(kernel_s, abs=1e-9 * len(ops))
    # Merging into segments keeps far fewer ops than kernels.
    assert len(ops) < len(gpu) / 10


def test_collectives_have_the_nccl_kind_and_bytes_in_msg_nelems_times_dtype_size(two_rank, two_rank_raw):
    nccl = sorted((e for e in two_rank_raw["traceEvents"] if e.get("cat") == "kernel"
                   and e["name"].startswith("ncclKernel_")), key=lambda e: e["ts"])
    element_bytes = {"Float": 4, "Long": 8}  # float32, int64
    expected = [(e["args"]["Collective name"], e["args"]["In msg nelems"] * element_bytes[e["args"]["dtype"]],
                 e["args"]["Group size"]) for e in nccl]
    comm = [op for op in two_rank.ranks[0] if op.is_communication]
    assert [(op.name, op.size_bytes, op.group_size) for op in comm] == expected
    assert all(op.kind == COLLECTIVE and op.group == (0, 1) for op in comm)
    assert Counter(op.name for op in comm) == {"allreduce": 15, "broadcast": 6}


def test_steps_are_the_profiler_step_annotations(two_rank, two_rank_raw):
    annotations = {int(e["name"].split("#")[1]): e["dur"] * 1e-6 for e in two_rank_raw["traceEvents"]
                   if e.get("name", "").startswith("ProfilerStep#")}
    assert two_rank.step_numbers() == sorted(annotations) == [4, 5, 6]
    for step, duration_s in annotations.items():
        assert two_rank.step_time_s(step) == pytest.approx(duration_s, rel=1e-12)
    assert two_rank.step_time_s() == pytest.approx(sum(annotations.values()) / 3, rel=1e-12)
    # Consecutive steps follow each other: the next starts where (about) the previous ended.
    steps = two_rank.steps
    for before, after in zip(steps, steps[1:], strict=False):
        assert after.started_at_s == pytest.approx(before.ended_at_s, abs=1e-3)


def test_every_op_launched_inside_a_step_is_tagged_with_it(two_rank):
    tagged = Counter(op.step for op in two_rank.ranks[0] if op.is_communication)
    # Each of the 3 steps issues 5 allreduces and 2 broadcasts (DDP buckets and buffers).
    assert tagged == {4: 7, 5: 7, 6: 7}


def test_streams_run_one_op_at_a_time_and_waits_agree_with_recorded_times(two_rank):
    ops = two_rank.ranks[0]
    by_stream: dict = {}
    for op in ops:
        by_stream.setdefault(op.stream, []).append(op)
    for stream_ops in by_stream.values():
        for before, after in zip(stream_ops, stream_ops[1:], strict=False):
            assert after.started_at_s >= before.ended_at_s - 1e-9
    waits = [(op, ops[j]) for op in ops for j in op.waits_for]
    assert waits, "the trace has cudaStreamWaitEvent records: cross-stream waits must be found"
    for waiter, source in waits:
        assert waiter.stream != source.stream
        assert source.ended_at_s <= waiter.started_at_s + 1e-9
    # Every allreduce waits for the gradient kernel of the compute stream (DDP's stream sync).
    allreduces = [op for op in ops if op.name == "allreduce"]
    assert all(any(ops[j].kind == COMPUTE for j in op.waits_for) for op in allreduces)


def test_missing_ranks_mirror_recorded_ones_and_say_so(two_rank):
    assert two_rank.mirrored == {1: 0}
    assert any("rank 1 missing" in a and "mirror" in a for a in two_rank.assumptions)
    mirrored = two_rank.ops_of(1)
    assert [op.rank for op in mirrored] == [1] * len(two_rank.ranks[0])
    assert [op.duration_s for op in mirrored] == [op.duration_s for op in two_rank.ranks[0]]


def test_old_traces_take_collective_and_bytes_from_the_nccl_cpu_annotations():
    run = read_kineto(PP_128)
    assert run.world_size == 128 and sorted(run.ranks) == [0, 1]
    assert len(run.mirrored) == 126 and run.mirrored[127] == 1
    assert run.gpu_name is None and any("GPU model unknown" in a for a in run.assumptions)
    for rank, path in enumerate(PP_128):
        events = raw(path)["traceEvents"]
        # nccl:all_reduce annotations list the flattened float32 buffer: bytes = nelems * 4.
        expected = sorted(math.prod(e["args"]["Input Dims"][0]) * 4 for e in events
                          if e.get("cat") == "user_annotation" and e["name"] == "nccl:all_reduce")
        found = sorted(op.size_bytes for op in run.ranks[rank] if op.name == "allreduce")
        assert found == expected and found
        # The NCCL kernels are all SendRecv; the annotations say what they really were.
        kernels = [e for e in events
                   if e.get("cat") == "kernel" and e["name"].startswith("ncclKernel_SendRecv")]
        comm = [op for op in run.ranks[rank] if op.is_communication]
        assert len(comm) == len(kernels)
        assert {op.name for op in comm} == {"allreduce", "alltoall", "allgather"}


def test_allgather_size_is_the_gathered_output_and_group_size_its_ratio_to_the_input():
    run = read_kineto(PP_128[:1])
    events = raw(PP_128[0])["traceEvents"]
    c10d = [e for e in events if e.get("name") == "c10d::_allgather_base_"]
    output_dims, input_dims = c10d[0]["args"]["Input Dims"][:2]
    assert c10d[0]["args"]["Input type"][:2] == ["signed char", "signed char"]  # one byte per element
    gathers = [op for op in run.ranks[0] if op.name == "allgather"]
    assert gathers and all(op.size_bytes == math.prod(output_dims) for op in gathers)
    assert all(op.group_size == math.prod(output_dims) // math.prod(input_dims) for op in gathers)


# --- synthetic traces for missing data -------------------------------------------------------------------

def kernel(name: str, ts: float, dur: float, stream: int = 7, **args) -> dict:
    return {"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": stream, "ts": ts, "dur": dur,
            "args": args}


def write_trace(path: Path, events: list[dict], **top) -> Path:
    path.write_text(json.dumps({"schemaVersion": 1, "traceEvents": events, **top}))
    return path


def test_without_metadata_the_kernel_name_gives_the_collective_and_the_size_is_unknown(tmp_path):
    path = write_trace(tmp_path / "trace.json", [
        kernel("gemm", 100.0, 50.0),
        kernel("ncclDevKernel_AllGather_RING_LL(ncclDevComm*, unsigned long)", 160.0, 30.0, stream=20),
        kernel("ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t(ncclDevComm*)", 200.0, 10.0, stream=20),
    ])
    run = read_kineto([path])
    gather, sendrecv = [op for op in run.ranks[0] if op.is_communication]
    assert (gather.kind, gather.name, gather.size_bytes) == (COLLECTIVE, "allgather", None)
    assert (sendrecv.kind, sendrecv.peer, sendrecv.size_bytes) == ("sendrecv", None, None)
    assert run.world_size == 1
    text = " | ".join(run.assumptions)
    for expected in ("no distributedInfo", "size unknown", "peer rank", "no ProfilerStep", "GPU model"):
        assert expected in text


def test_consecutive_compute_kernels_merge_into_one_segment_spanning_them(tmp_path):
    path = write_trace(tmp_path / "trace.json", [
        kernel("a", 0.0, 10.0), kernel("b", 12.0, 5.0), kernel("c", 20.0, 4.0),
    ], distributedInfo={"rank": 0, "world_size": 1})
    (segment,) = read_kineto([path]).ranks[0]
    assert segment.kernels == 3
    assert segment.duration_s == pytest.approx(24e-6)  # first start to last end, launch gaps included
    assert segment.busy_s == pytest.approx(19e-6)     # 10 + 5 + 4 us of kernels
    (a, b, c) = read_kineto([path], merge_compute=False).ranks[0]
    assert (a.name, b.name, c.name) == ("a", "b", "c")


def test_timing_fallback_makes_a_kernel_after_a_gap_wait_for_the_collective_that_just_ended(tmp_path):
    path = write_trace(tmp_path / "trace.json", [
        kernel("grad", 0.0, 10.0),
        kernel("ncclKernel_AllReduce_RING_LL_Sum_float", 12.0, 100.0, stream=20),
        kernel("optimizer", 115.0, 5.0),  # idle from 10 to 115 us, starts 3 us after the allreduce ends
    ], distributedInfo={"rank": 0, "world_size": 1})
    grad, allreduce, optimizer = read_kineto([path]).ranks[0]
    assert optimizer.waits_for == (1,)
    assert allreduce.waits_for == (0,)  # started 2 us after grad ended, idle before


def test_files_without_rank_info_take_the_rank_from_the_file_name(tmp_path):
    for rank in (0, 1):
        write_trace(tmp_path / f"job.rank{rank}.json", [kernel("k", 0.0, 1.0)])
    run = read_kineto([tmp_path / "job.rank1.json", tmp_path / "job.rank0.json"])
    assert sorted(run.ranks) == [0, 1] and run.world_size == 2
    assert any("from the file name" in a for a in run.assumptions)


# --- unreadable input ------------------------------------------------------------------------------------

def assert_one_line_error(path: Path, *words: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        read_kineto([path])
    assert caught.value.field == str(path)
    assert "\n" not in str(caught.value)
    for word in words:
        assert word in caught.value.message


def test_truncated_gzip_is_a_clear_error(tmp_path):
    data = TWO_RANK.read_bytes()
    path = tmp_path / "cut.json.gz"
    path.write_bytes(data[: len(data) // 2])
    assert_one_line_error(path, "gzip")


def test_truncated_json_is_a_clear_error(tmp_path):
    text = json.dumps({"traceEvents": [kernel("k", 0.0, 1.0)] * 3})
    path = tmp_path / "cut.json"
    path.write_text(text[: len(text) - 7])
    assert_one_line_error(path, "not valid JSON")


def test_foreign_json_is_not_taken_for_a_trace(tmp_path):
    path = write_trace(tmp_path / "other.json", [])
    path.write_text(json.dumps({"name": "a scenario", "cluster": {}}))
    assert_one_line_error(path, "not a Kineto")
    path.write_text("[1, 2, 3]")
    assert_one_line_error(path, "not a Kineto")


def test_binary_garbage_and_cpu_only_traces_are_clear_errors(tmp_path):
    path = tmp_path / "noise.json"
    path.write_bytes(bytes(range(256)))
    assert_one_line_error(path)
    cpu_only = write_trace(tmp_path / "cpu.json", [{"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0,
                                                    "dur": 5, "pid": 1, "tid": 1}])
    assert_one_line_error(cpu_only, "no GPU kernels")


def test_load_trace_picks_the_importer_from_the_extension():
    assert load_trace([TWO_RANK]).source.startswith("kineto")
    with pytest.raises(ScenarioError):
        load_trace([TWO_RANK, Path("x.0.et")])


def runtime(name: str, ts: float, correlation: int) -> dict:
    return {"ph": "X", "cat": "cuda_runtime", "name": name, "pid": 1, "tid": 1, "ts": ts, "dur": 1.0,
            "args": {"correlation": correlation}}


def stream_wait(stream: int, ts: float, correlation: int, on_stream: int, record: int) -> dict:
    return {"ph": "X", "cat": "cuda_sync", "name": "Stream Wait Event", "pid": 0, "tid": stream, "ts": ts, "dur": 0,
            "args": {"stream": stream, "correlation": correlation, "wait_on_stream": on_stream,
                     "wait_on_cuda_event_record_corr_id": record}}


@pytest.mark.parametrize("records_known", [True, False])
def test_cuda_sync_events_name_every_op_waited_for(tmp_path, records_known):
    """C (stream 30) waits for A (stream 7) and B (stream 20) through two CUDA events; D, launched on stream 7 after
    A's event was recorded, is not waited for although it is the last op launched before C. The sync events give
    both waits exactly; without their record ids the reader falls back to the launch order (one wait, on D, which
    the recorded times contradict: dropped)."""
    record_a, record_b = (2, 4) if records_known else (-1, -1)
    events = [
        kernel("A", 0.0, 10.0, stream=7, correlation=1), runtime("cudaLaunchKernel", 0.0, 1),
        runtime("cudaEventRecord", 1.0, 2),
        kernel("B", 0.0, 50.0, stream=20, correlation=3), runtime("cudaLaunchKernel", 2.0, 3),
        runtime("cudaEventRecord", 3.0, 4),
        kernel("D", 10.0, 90.0, stream=7, correlation=5), runtime("cudaLaunchKernel", 4.0, 5),
        runtime("cudaStreamWaitEvent", 5.0, 6), stream_wait(30, 5.0, 6, 7, record_a),
        runtime("cudaStreamWaitEvent", 6.0, 7), stream_wait(30, 6.0, 7, 20, record_b),
        kernel("C", 60.0, 5.0, stream=30, correlation=8), runtime("cudaLaunchKernel", 7.0, 8),
    ]
    run = read_kineto([write_trace(tmp_path / "trace.json", events, distributedInfo={"rank": 0, "world_size": 1})],
                      merge_compute=False)
    a, b, d, c = run.ranks[0]
    assert (a.name, b.name, d.name, c.name) == ("A", "B", "D", "C")
    assert c.waits_for == ((0, 1) if records_known else ())
    text = " | ".join(run.assumptions)
    assert ("CUDA sync events" in text) is records_known
    assert ("source ended after the waiter started" in text) is not records_known
