"""Chakra import/export and the protobuf wire codec behind it."""

from __future__ import annotations

from pathlib import Path

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.replay.formats import protobuf as pb
from simcluster.replay.formats import read_chakra, read_kineto, write_chakra
from simcluster.replay.formats.synthetic import data_parallel_chakra
from simcluster.replay.recorded import RecordedOp, RecordedRun, RecordedStep

DATA = Path(__file__).parents[1] / "data"
ASTRA_ALLREDUCE = sorted((DATA / "chakra").glob("all_reduce.*.et"))
TWO_RANK = DATA / "kineto" / "a100-2rank-allreduce.rank0.json.gz"


# --- wire format -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "encoded"), [(1, b"\x01"), (150, b"\x96\x01"), (300, b"\xac\x02"),
                                                (-1, b"\xff" * 9 + b"\x01")])
def test_varints_match_the_protobuf_encoding_guide_examples(value, encoded):
    assert pb.encode_varint(value) == encoded
    decoded, end = pb.read_varint(encoded, 0)
    assert pb.as_int64(decoded) == value and end == len(encoded)


def test_zigzag_maps_small_magnitudes_to_small_codes():
    # Encoding guide: 0 -> 0, -1 -> 1, 1 -> 2, -2 -> 3, 2147483647 -> 4294967294.
    for value, code in [(0, 0), (-1, 1), (1, 2), (-2, 3), (2147483647, 4294967294)]:
        assert pb.zigzag(value) == code and pb.as_sint(code) == value


def test_a_message_written_reads_back_field_by_field():
    message = (pb.MessageWriter().varint(1, 2**40).string(2, "héllo").double(3, -2.5).fixed32(4, 7)
               .packed_varints(5, [1, 300, 2**63]))
    fields = pb.parse_message(bytes(message))
    assert [(n, w) for n, w, _ in fields] == [(1, 0), (2, 2), (3, 1), (4, 5), (5, 2)]
    assert fields[0][2] == 2**40 and fields[1][2].decode() == "héllo"
    assert pb.as_double(fields[2][2]) == -2.5 and fields[3][2] == 7
    assert pb.unpack_repeated(fields[4][2], 2, pb.VARINT) == [1, 300, 2**63]


def test_truncated_messages_raise_protobuf_errors():
    data = bytes(pb.MessageWriter().string(1, "a long enough string"))
    with pytest.raises(pb.ProtobufError):
        pb.parse_message(data[:-3])
    with pytest.raises(pb.ProtobufError):
        list(pb.read_delimited(pb.write_delimited([data])[:-1]))


# --- the ASTRA-sim example -------------------------------------------------------------------------------

def test_astra_sim_example_is_one_1_mib_allreduce_on_each_of_8_ranks():
    run = read_chakra(ASTRA_ALLREDUCE)
    assert run.world_size == 8 and sorted(run.ranks) == list(range(8))
    for rank, ops in run.ranks.items():
        (op,) = ops
        # gen_chakra_traces.py in astra-sim writes comm_type ALL_REDUCE and comm_size 1_048_576 on 8 NPUs.
        assert (op.rank, op.kind, op.name, op.size_bytes) == (rank, "collective", "allreduce", 1_048_576.0)
        assert op.group == tuple(range(8))
    text = " | ".join(run.assumptions)
    assert "no start times" in text and "no recorded duration" in text and "ranks 0..7" in text


# --- export and round trip -------------------------------------------------------------------------------

def assert_same_run(back: RecordedRun, run: RecordedRun) -> None:
    assert back.world_size == run.world_size and back.gpu_name == run.gpu_name
    assert back.mirrored == run.mirrored and sorted(back.ranks) == sorted(run.ranks)
    for rank, ops in run.ranks.items():
        assert len(back.ranks[rank]) == len(ops)
        for got, want in zip(back.ranks[rank], ops, strict=True):
            assert (got.stream, got.kind, got.name, got.size_bytes, got.group, got.group_size, got.peer,
                    got.step, got.waits_for, got.kernels) == \
                (want.stream, want.kind, want.name, want.size_bytes, want.group, want.group_size, want.peer,
                 want.step, want.waits_for, want.kernels)
            # Times are stored in integer nanoseconds.
            assert got.started_at_s == pytest.approx(want.started_at_s, abs=1e-9)
            assert got.duration_s == pytest.approx(want.duration_s, abs=1e-9)
            assert got.kernel_s == pytest.approx(want.kernel_s, abs=1e-9)
    assert [(s.step, s.rank) for s in back.steps] == [(s.step, s.rank) for s in run.steps]
    for step in run.step_numbers():
        assert back.step_time_s(step) == pytest.approx(run.step_time_s(step), abs=1e-9)


def test_a_real_trace_exported_to_chakra_reads_back_the_same(tmp_path):
    run = read_kineto([TWO_RANK])
    paths = write_chakra(run, tmp_path, "ddp")
    assert [p.name for p in paths] == ["ddp.0.et", "ddp.1.et"]  # one file per rank of the world
    back = read_chakra(paths)
    assert_same_run(back, run)
    assert back.assumptions[: len(run.assumptions)] == run.assumptions


def test_point_to_point_ops_unknown_sizes_and_named_streams_survive_a_round_trip(tmp_path):
    ops = [
        RecordedOp(0, "compute", "compute", "fwd", 0.0, 1e-3, step=1, kernels=4, busy_s=0.9e-3),
        RecordedOp(0, "pp", "send", "send", 1.0e-3, 2e-4, size_bytes=4096.0, peer=1, step=1, waits_for=(0,)),
        RecordedOp(0, "pp", "recv", "recv", 1.2e-3, 3e-4, size_bytes=None, peer=1, step=1),
        RecordedOp(0, "pp", "sendrecv", "sendrecv", 1.5e-3, 1e-4, size_bytes=None, step=1),
        RecordedOp(0, "dp", "collective", "reduce_scatter", 1.6e-3, 5e-4, size_bytes=1e6, group=(0, 2),
                   group_size=2, step=1, waits_for=(3,)),
    ]
    run = RecordedRun(ranks={0: ops}, world_size=2, gpu_name="H100", mirrored={1: 0},
                      steps=[RecordedStep(1, 0, 0.0, 2.5e-3)], assumptions=["made up"], source="test")
    assert_same_run(read_chakra(write_chakra(run, tmp_path, "p2p")), run)


def test_exported_nodes_carry_the_chakra_types_and_enums_astra_sim_reads(tmp_path):
    ops = [RecordedOp(0, 7, "compute", "gemm", 0.0, 10e-6),
           RecordedOp(0, 20, "collective", "allgather", 10e-6, 20e-6, size_bytes=2048.0, group=(0,),
                      waits_for=(0,))]
    (path,) = write_chakra(RecordedRun(ranks={0: ops}, world_size=1), tmp_path, "t")
    metadata, *nodes = [pb.parse_message(m) for m in pb.read_delimited(path.read_bytes())]
    assert dict((n, v) for n, _w, v in metadata)[1] == b"0.0.4"
    comp, coll = ({n: v for n, _w, v in node if n != 10} for node in nodes)
    assert (comp[3], coll[3]) == (4, 7)          # COMP_NODE, COMM_COLL_NODE
    assert (comp[7], coll[7]) == (10, 20)        # duration_micros
    assert pb.unpack_repeated(coll[5], 2, pb.VARINT) == [0]  # data_deps on the compute node
    attrs = {pb.parse_message(v)[0][2]: pb.parse_message(v)[1][2] for n, _w, v in nodes[1] if n == 10}
    assert attrs[b"comm_type"] == 2 and attrs[b"comm_size"] == 2048  # ALL_GATHER, bytes


def test_chakra_without_times_schedules_nodes_as_soon_as_dependencies_allow(tmp_path):
    def node(node_id, node_type, duration_us, data_deps=(), attrs=()):
        writer = pb.MessageWriter().varint(1, node_id).string(2, f"n{node_id}").varint(3, node_type)
        writer.packed_varints(5, list(data_deps)).varint(7, duration_us)
        for name, value in attrs:
            writer.message(10, pb.MessageWriter().string(1, name).varint(9, value))
        return bytes(writer)

    messages = [bytes(pb.MessageWriter().string(1, "0.0.4")),
                node(1, 4, 10), node(2, 7, 0, data_deps=[1], attrs=[("comm_type", 0), ("comm_size", 64)]),
                node(3, 4, 5), node(4, 4, 7, data_deps=[2])]
    path = tmp_path / "g.0.et"
    path.write_bytes(pb.write_delimited(messages))
    ops = read_chakra([path]).ranks[0]
    start = {op.name: op.started_at_s for op in ops}
    # n1 then n3 on the compute stream (10 us, 5 us); the allreduce waits for n1; n4 for the allreduce and n3.
    assert start["n1"] == 0.0 and start["allreduce"] == pytest.approx(10e-6)
    assert start["n3"] == pytest.approx(10e-6) and start["n4"] == pytest.approx(15e-6)


# --- unreadable input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"", b'{"traceEvents": []}', bytes(range(200)), None])
def test_corrupt_truncated_or_foreign_files_are_clear_errors(tmp_path, content):
    path = tmp_path / "bad.0.et"
    if content is None:  # a real trace cut short
        content = ASTRA_ALLREDUCE[1].read_bytes()[:-5]
    path.write_bytes(content)
    with pytest.raises(ScenarioError) as caught:
        read_chakra([path])
    assert caught.value.field == str(path) and "\n" not in str(caught.value)


# --- timestamp-less traces as ASTRA-sim's generators write them ----------------------------------------------

def test_timestampless_data_parallel_step_is_compute_plus_one_exposed_allreduce(tmp_path):
    """24 layers, 64 ranks (8 A100 nodes, the default fabric): 1 ms per forward, weight- and input-gradient
    compute, one 10 MB all-reduce per layer (~0.85 ms, shorter than the 2 ms of backward compute that follows
    it). Every all-reduce but the first layer's hides behind the backward, so the step is the compute
    (24 x 3 - 1 = 71 ms) plus that one all-reduce alone on the fabric, within 2%. (Measuring gaps from the
    previous op of a stream instead turned the synthesised spacing of the all-reduces into idle time: +35%.)"""
    from simcluster import collectives, network
    from simcluster.collectives.timing import engine_schedule
    from simcluster.studies.replay import replay_traces

    grad_bytes = 10_000_000
    paths = data_parallel_chakra(tmp_path, 64, 24, 1000, 1000, 1000, grad_bytes)
    outcome = replay_traces(paths, gpu_name="a100-80gb-sxm")
    run = outcome.run
    assert not run.timed and run.world_size == 64
    compute_s = sum(op.duration_s for op in run.ranks[0] if op.kind == "compute")
    assert compute_s == pytest.approx(71e-3)
    alone_s = collectives.simulate(engine_schedule(outcome.fabric, "allreduce", tuple(range(64)), grad_bytes),
                                   network.make("flow", collectives.calibrated(outcome.fabric)))
    (step,) = outcome.steps
    assert step["replayed_step_s"] == pytest.approx(compute_s + alone_s, rel=0.02)
    assert step["exposed_comm_s"] == pytest.approx(alone_s, rel=0.02)
    assert outcome.plan.agents == 1  # 64 identical ranks: one agent


def test_world_size_in_the_metadata_is_used_without_a_warning(tmp_path):
    ops = [RecordedOp(0, 7, "compute", "gemm", 0.0, 10e-6)]
    run = read_chakra(write_chakra(RecordedRun(ranks={0: ops}, world_size=4, mirrored={1: 0, 2: 0, 3: 0}),
                                   tmp_path, "w"))
    assert run.world_size == 4
    assert not any("world size" in a for a in run.assumptions)
    astra = read_chakra(ASTRA_ALLREDUCE)  # astra-sim's files have no world size: taken from the files, said
    assert astra.world_size == 8 and any("no world size in the metadata" in a for a in astra.assumptions)


def test_a_mirror_whose_rank_file_is_missing_is_refused_in_one_line(tmp_path):
    ops = [RecordedOp(0, 7, "compute", "gemm", 0.0, 10e-6)]
    paths = write_chakra(RecordedRun(ranks={0: ops}, world_size=2, mirrored={1: 0}), tmp_path, "m")
    with pytest.raises(ScenarioError, match="mirrors rank 0, whose file is not given"):
        read_chakra([p for p in paths if p.name.endswith(".1.et")])


def test_files_with_identical_nodes_are_read_once_and_replay_as_if_each_were_read(tmp_path):
    """16 byte-identical rank files: rank 0 is parsed, ranks 1..15 are its mirrors (said), and the replay equals
    that of the same run with every rank's ops recorded separately."""
    from dataclasses import replace

    from simcluster.engine.replay import replay
    from simcluster.fabric import topology
    from simcluster.replay.plan import build_plan
    from simcluster.replay.report import step_report
    from simcluster.spec import hardware

    run = read_chakra(data_parallel_chakra(tmp_path, 16, 4, 1000, 1000, 1000, 10_000_000))
    assert list(run.ranks) == [0] and run.mirrored == {r: 0 for r in range(1, 16)}
    assert any("ranks 1..15: the same nodes as rank 0's file" in a for a in run.assumptions)
    every = RecordedRun(ranks={r: [replace(op, rank=r) for op in run.ranks[0]] for r in range(16)}, world_size=16,
                        timed=run.timed)
    fabric = topology.build("rail-fat-tree", gpus=16, gpus_per_node=8, gpu=hardware.gpu("a100-80gb-sxm"),
                            nic=hardware.nic("connectx-6"))
    steps = [step_report(r, replay(build_plan(r, expand=True), fabric).events)[0]["replayed_step_s"]
             for r in (run, every)]
    assert steps[0] == pytest.approx(steps[1], rel=1e-12)
