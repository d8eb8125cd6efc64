"""Hostile trace files (issue 14): the Kineto and Chakra readers either return a run or refuse with one
ScenarioError; never another exception. Fuzzed with hypothesis from small valid traces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simcluster.core.errors import ScenarioError
from simcluster.replay.formats import load_trace
from simcluster.replay.formats import protobuf as pb

CHAKRA = sorted((Path(__file__).parents[1] / "data" / "chakra").glob("all_reduce.*.et"))

# a 2-rank Kineto step: a profiler step, a GEMM, an all-reduce with its CPU-side record and launch, a stream wait
KINETO = {
    "distributedInfo": {"rank": 0, "world_size": 2, "backend": "nccl",
                        "pg_config": [{"pg_name": "0", "ranks": [0, 1]}]},
    "deviceProperties": [{"name": "NVIDIA A100-SXM4-80GB"}],
    "traceEvents": [
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#3", "ts": 0, "dur": 1000, "pid": 1, "tid": 1},
        {"ph": "X", "cat": "kernel", "name": "sm80_gemm", "ts": 10, "dur": 300, "pid": 0, "tid": 7,
         "args": {"device": 0, "stream": 7, "correlation": 1}},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 5, "dur": 2, "pid": 1, "tid": 1,
         "args": {"correlation": 1}},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaStreamWaitEvent", "ts": 8, "dur": 1, "pid": 1, "tid": 1,
         "args": {}},
        {"ph": "X", "cat": "cpu_op", "name": "record_param_comms", "ts": 9, "dur": 5, "pid": 1, "tid": 1,
         "args": {"Collective name": "allreduce", "dtype": "Float", "In msg nelems": 1000, "Out msg nelems": 1000,
                  "Group size": 2}},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 10, "dur": 2, "pid": 1, "tid": 1,
         "args": {"correlation": 2}},
        {"ph": "X", "cat": "kernel", "name": "ncclKernel_AllReduce_RING_LL_Sum_float", "ts": 320, "dur": 100,
         "pid": 0, "tid": 20, "args": {"device": 0, "stream": 20, "correlation": 2}},
    ],
}
# the same step with its cross-stream wait as CUDA sync events (what write_kineto writes): the GEMM's event record,
# the all-reduce's stream wait naming it
KINETO_SYNC = {**KINETO, "traceEvents": [
    *KINETO["traceEvents"],
    {"ph": "X", "cat": "cuda_runtime", "name": "cudaEventRecord", "ts": 6, "dur": 1, "pid": 1, "tid": 1,
     "args": {"correlation": 3}},
    {"ph": "X", "cat": "cuda_runtime", "name": "cudaStreamWaitEvent", "ts": 9.5, "dur": 0.1, "pid": 1, "tid": 1,
     "args": {"correlation": 4}},
    {"ph": "X", "cat": "cuda_sync", "name": "Stream Wait Event", "ts": 9.5, "dur": 0, "pid": 0, "tid": 20,
     "args": {"stream": 20, "correlation": 4, "wait_on_stream": 7, "wait_on_cuda_event_record_corr_id": 3}},
]}
ODD = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                st.text(max_size=8), st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                                             st.integers(), max_size=2))


def _refused_or_read(paths) -> None:
    try:
        run = load_trace(paths)
    except ScenarioError as err:
        assert "\n" not in str(err)
    else:
        assert run.world_size >= 1


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, len(KINETO["traceEvents"]) - 1), st.sampled_from(
    ["ts", "dur", "tid", "pid", "name", "cat", "args", "ph", "args.correlation", "args.stream",
     "args.Collective name", "args.In msg nelems", "args.dtype"]), ODD), min_size=1, max_size=4),
       top=st.one_of(st.none(), st.tuples(st.sampled_from(["distributedInfo", "deviceProperties"]), ODD)))
def test_kineto_fields_of_any_value_are_read_or_refused_in_one_line(tmp_path, edits, top):
    data = json.loads(json.dumps(KINETO))
    for index, key, value in edits:
        event = data["traceEvents"][index]
        if key.startswith("args."):
            event.setdefault("args", {})
            if isinstance(event["args"], dict):
                event["args"][key[5:]] = value
        else:
            event[key] = value
    if top is not None:
        data[top[0]] = top[1]
    path = tmp_path / "fuzz.rank0.json"
    path.write_text(json.dumps(data))
    _refused_or_read([path])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(len(KINETO["traceEvents"]), len(KINETO_SYNC["traceEvents"]) - 1),
                                st.sampled_from(["ts", "tid", "pid", "name", "cat", "args", "args.correlation",
                                                 "args.wait_on_stream", "args.wait_on_cuda_event_record_corr_id"]),
                                ODD), min_size=1, max_size=4))
def test_kineto_sync_events_of_any_value_are_read_or_refused_in_one_line(tmp_path, edits):
    data = json.loads(json.dumps(KINETO_SYNC))
    for index, key, value in edits:
        event = data["traceEvents"][index]
        if key.startswith("args."):
            if isinstance(event["args"], dict):
                event["args"][key[5:]] = value
        else:
            event[key] = value
    path = tmp_path / "fuzz.rank0.json"
    path.write_text(json.dumps(data))
    _refused_or_read([path])


def test_the_unfuzzed_sync_trace_places_its_wait():
    """The base of the fuzzing above is read as meant: the all-reduce waits for the GEMM."""
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sync.rank0.json"
        path.write_text(json.dumps(KINETO_SYNC))
        gemm, allreduce = load_trace([path]).ranks[0]
    assert allreduce.waits_for == (0,)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, len(CHAKRA) - 1), st.integers(0, 10**6), st.integers(0, 255)),
                      min_size=1, max_size=6))
def test_chakra_bytes_of_any_value_are_read_or_refused_in_one_line(tmp_path, flips):
    blobs = [bytearray(p.read_bytes()) for p in CHAKRA]
    for file, offset, byte in flips:
        blobs[file][offset % len(blobs[file])] = byte
    paths = []
    for path, blob in zip(CHAKRA, blobs, strict=True):
        paths.append(tmp_path / path.name)
        paths[-1].write_bytes(bytes(blob))
    _refused_or_read(paths)


def test_a_float_attribute_stored_as_a_wide_varint_is_refused_not_a_traceback():
    # found by the fuzz test above: a corrupt wire type put a 2^40 varint where a 32-bit float belongs

    with pytest.raises(pb.ProtobufError, match="32-bit fixed field"):
        pb.as_float(1 << 40)
    with pytest.raises(pb.ProtobufError, match="64-bit fixed field"):
        pb.as_double(-1)
    assert pb.as_float(0x3F800000) == 1.0
