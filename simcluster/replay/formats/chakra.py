"""Chakra execution traces (MLCommons; ASTRA-sim's workload input): import to and export from ``RecordedRun``.

Format (schema ``et_def.proto`` in mlcommons/chakra): one file ``<prefix>.<rank>.et`` per rank, a stream of
varint-length-prefixed protobuf messages, a ``GlobalMetadata`` (version, attributes) then ``Node`` messages.
Node fields used: id (1), name (2), type (3), ctrl_deps (4), data_deps (5), start_time_micros (6),
duration_micros (7), attr (10). Node types: COMP_NODE 4, COMM_SEND_NODE 5, COMM_RECV_NODE 6, COMM_COLL_NODE 7.
Attributes read: comm_type (CollectiveCommType: ALL_REDUCE 0, REDUCE 1, ALL_GATHER 2, GATHER 3, SCATTER 4,
BROADCAST 5, ALL_TO_ALL 6, REDUCE_SCATTER 7, REDUCE_SCATTER_BLOCK 8, BARRIER 9), comm_size (bytes), comm_src,
comm_dst, is_cpu_op. The wire format is decoded by ``simcluster.replay.formats.protobuf`` (no protobuf
dependency).

Export writes what ASTRA-sim reads (types, comm_type, comm_size, comm_src/comm_dst, durations in
microseconds, ctrl_deps = previous op of the same stream, data_deps = cross-stream waits) plus attributes of
its own that make an export read back exactly: ``stream``, ``step``, ``kernels``, ``start_time_ns``,
``duration_ns``, ``busy_ns``, ``group``, ``group_size``, ``size_unknown``, ``sendrecv``; run-level ones in the
metadata.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import re
from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from pathlib import Path

from simcluster.core import outputs
from simcluster.core.errors import ScenarioError
from simcluster.replay.formats import protobuf as pb
from simcluster.replay.recorded import (
    COLLECTIVE,
    COLLECTIVE_NAMES,
    COMPUTE,
    RECV,
    SEND,
    SENDRECV,
    RecordedOp,
    RecordedRun,
    RecordedStep,
    check_world_size,
    describe_files,
    describe_ranges,
    read_trace_bytes,
    summarize_notes,
)

CHAKRA_VERSION = "0.0.4"  # the schema version ASTRA-sim's examples write

COMP_NODE, COMM_SEND_NODE, COMM_RECV_NODE, COMM_COLL_NODE = 4, 5, 6, 7
_KNOWN_NODE_TYPES = range(0, 11)  # INVALID_NODE 0 .. CHECKPOINT_NODE 10
# CollectiveCommType values, in enum order; REDUCE_SCATTER_BLOCK (8) reads as reduce_scatter.
_COMM_TYPES = {"allreduce": 0, "reduce": 1, "allgather": 2, "gather": 3, "scatter": 4, "broadcast": 5,
               "alltoall": 6, "reduce_scatter": 7, "barrier": 9}
_COMM_NAMES = {v: k for k, v in _COMM_TYPES.items()} | {8: "reduce_scatter"}
assert set(_COMM_TYPES) == set(COLLECTIVE_NAMES)

# AttributeProto value fields: number -> (scalar decoding, element wire type); list fields are number + 1.
_ATTR_SCALARS = {
    3: ("double", pb.FIXED64), 5: ("float", pb.FIXED32), 7: ("int", pb.VARINT), 9: ("int", pb.VARINT),
    11: ("uint", pb.VARINT), 13: ("uint", pb.VARINT), 15: ("sint", pb.VARINT), 17: ("sint", pb.VARINT),
    19: ("uint", pb.FIXED32), 21: ("uint", pb.FIXED64), 23: ("sfixed32", pb.FIXED32),
    25: ("sfixed64", pb.FIXED64), 27: ("bool", pb.VARINT), 29: ("string", pb.LENGTH_DELIMITED),
    31: ("bytes", pb.LENGTH_DELIMITED),
}
_INT64, _INT64_LIST, _BOOL, _STRING, _STRING_LIST = 9, 10, 27, 29, 30
_RANK_IN_NAME = re.compile(r"\.(\d+)\.et$")
UNTIMED = ("no start times in the trace: ops in dependency order, each as soon as its stream and dependencies "
           "allow (no launch gaps)")


def _decode_scalar(kind: str, raw: int | bytes) -> object:
    if kind == "string":
        return raw.decode() if isinstance(raw, bytes) else str(raw)
    if kind == "bytes":
        return raw
    if not isinstance(raw, int):  # a length-delimited value where a number belongs: a corrupt file
        raise pb.ProtobufError(f"a {kind} attribute holds bytes")
    return {"double": pb.as_double, "float": pb.as_float, "int": pb.as_int64, "uint": int,
            "sint": pb.as_sint, "bool": bool, "sfixed32": lambda v: pb.as_sfixed(v, 32),
            "sfixed64": lambda v: pb.as_sfixed(v, 64)}[kind](raw)


def _decode_attr(data: bytes) -> tuple[str, object]:
    name, value = "", None
    for number, _wire_type, raw in pb.parse_message(data):
        if number == 1:
            name = raw.decode() if isinstance(raw, bytes) else ""
        elif number in _ATTR_SCALARS:
            kind, _ = _ATTR_SCALARS[number]
            value = _decode_scalar(kind, raw)
        elif number - 1 in _ATTR_SCALARS and isinstance(raw, bytes):
            kind, element_wire = _ATTR_SCALARS[number - 1]
            items: list = []
            for n, w, item in pb.parse_message(raw):
                if n == 1:
                    items += [_decode_scalar(kind, v) for v in pb.unpack_repeated(item, w, element_wire)]
            value = items
    return name, value


def _attrs(fields: list, number: int) -> dict[str, object]:
    """Attributes of a GlobalMetadata (field 2) or a Node (field 10), by name."""
    return dict(_decode_attr(raw) for n, _w, raw in fields if n == number and isinstance(raw, bytes))


def _ints(fields: list, number: int) -> list[int]:
    values: list[int] = []
    for n, w, raw in fields:
        if n == number:
            values += pb.unpack_repeated(raw, w, pb.VARINT)
    return values


def _scalar(fields: list, number: int, default: object = 0) -> object:
    found = [raw for n, _w, raw in fields if n == number]
    return found[-1] if found else default


def _read_metadata(path: Path) -> tuple[dict[str, object], bytes, bytes]:
    """GlobalMetadata attributes of one .et file, the digest of its nodes' bytes (files whose nodes are
    byte-identical hold the same program: parsed once) and those bytes; ScenarioError if unreadable."""
    data = read_trace_bytes(path)
    try:
        if not data:
            raise pb.ProtobufError("empty file")
        length, pos = pb.read_varint(data, 0)
        if pos + length > len(data):
            raise pb.ProtobufError(f"message claims {length} bytes, {len(data) - pos} left (truncated file?)")
        meta_fields = pb.parse_message(data[pos:pos + length])
        version = _scalar(meta_fields, 1, b"")
        if not isinstance(version, bytes) or any(n not in (1, 2) for n, _w, _r in meta_fields):
            raise pb.ProtobufError("the first message is not a GlobalMetadata")
        version.decode()
        metadata = _attrs(meta_fields, 2)
    except (pb.ProtobufError, UnicodeDecodeError) as err:
        raise ScenarioError(str(path), f"not a readable Chakra execution trace ({err})") from None
    body = data[pos + length:]
    return metadata, hashlib.blake2b(body, digest_size=16).digest(), body


def _read_nodes(path: Path, body: bytes) -> list[dict]:
    """The nodes (as dicts) of one .et file, from the bytes after its metadata; ScenarioError if unreadable."""
    try:
        nodes = []
        for message in pb.read_delimited(body):
            fields = pb.parse_message(message)
            node_type = _scalar(fields, 3)
            name = _scalar(fields, 2, b"")
            is_node = isinstance(node_type, int) and node_type in _KNOWN_NODE_TYPES
            if not is_node or not isinstance(name, bytes):
                raise pb.ProtobufError(f"a message is not a Chakra Node (type {node_type!r})")
            nodes.append({"id": _scalar(fields, 1), "name": name.decode(), "type": node_type,
                          "ctrl_deps": _ints(fields, 4), "data_deps": _ints(fields, 5),
                          "start_us": _scalar(fields, 6), "duration_us": _scalar(fields, 7),
                          "attr": _attrs(fields, 10)})
    except (pb.ProtobufError, UnicodeDecodeError) as err:
        raise ScenarioError(str(path), f"not a readable Chakra execution trace ({err})") from None
    return nodes


def _to_ops(rank: int, nodes: list[dict], world_size: int, notes: Counter,
            groups: dict[tuple[int, ...], tuple[int, ...]]) -> list[RecordedOp]:
    """Chakra nodes of one rank -> RecordedOps in start order, dependencies as indices."""
    by_id: dict[int, dict] = {}
    for node in nodes:
        kind = {COMP_NODE: COMPUTE, COMM_COLL_NODE: COLLECTIVE, COMM_SEND_NODE: SEND,
                COMM_RECV_NODE: RECV}.get(node["type"])
        if kind is None:
            notes[f"nodes of type {node['type']} (not compute or communication) skipped"] += 1
            continue
        attr = node["attr"]
        if kind == SEND and attr.get("sendrecv"):
            kind = SENDRECV
        node["kind"] = kind
        if "stream" in attr:
            node["stream"] = attr["stream"]
        else:
            node["stream"] = "cpu" if attr.get("is_cpu_op") and kind == COMPUTE else \
                ("compute" if kind == COMPUTE else "comm")
            notes["no streams in the trace: compute in order on one stream, communication on another"] += 1
        if "duration_ns" in attr:
            _check_duration(node, attr["duration_ns"], "duration_ns")
            node["duration_s"] = attr["duration_ns"] * 1e-9
        else:
            node["duration_s"] = node["duration_us"] * 1e-6
            if kind != COMPUTE and not node["duration_us"]:
                notes["no recorded duration for communication nodes (0 s: to be simulated)"] += 1
        by_id[node["id"]] = node
    _start_times(by_id, notes)
    ordered = sorted(by_id.values(), key=lambda n: (n["start_s"], n["id"]))
    index = {n["id"]: i for i, n in enumerate(ordered)}
    previous: dict[object, int] = {}
    ops = []
    for i, node in enumerate(ordered):
        attr, kind = node["attr"], node["kind"]
        same_stream = previous.get(node["stream"])
        previous[node["stream"]] = i
        deps = set(node["data_deps"]) | {d for d in node["ctrl_deps"] if index.get(d) != same_stream}
        missing = [d for d in deps if d not in index]
        if missing:
            notes["dependencies on nodes absent from the file ignored"] += len(missing)
        waits = tuple(sorted(index[d] for d in deps if d in index and index[d] != i))
        size: float | None = 0.0
        name = node["name"]
        group: tuple[int, ...] = tuple(attr.get("group", ()))
        group = groups.setdefault(group, group)  # equal groups of all ranks are one object
        group_size = attr.get("group_size")
        peer = None
        if kind != COMPUTE:
            size = None if attr.get("size_unknown") or "comm_size" not in attr else float(attr["comm_size"])
            if size is None and not attr.get("size_unknown"):
                notes["communication nodes without comm_size: size unknown"] += 1
        if kind == COLLECTIVE:
            comm_type = attr.get("comm_type")
            if not isinstance(comm_type, Hashable) or comm_type not in _COMM_NAMES:
                raise ScenarioError("chakra", f"node {node['id']} ({name!r}): bad comm_type {comm_type!r}")
            name = _COMM_NAMES[comm_type]
            if not group:
                group = groups.setdefault(("world",), tuple(range(world_size)))
                notes["process groups not in the trace: collectives assumed to span all ranks"] += 1
            group_size = group_size or len(group)
        elif kind in (SEND, SENDRECV):
            peer = attr.get("comm_dst")
        elif kind == RECV:
            peer = attr.get("comm_src")
        ops.append(RecordedOp(
            rank=rank, stream=node["stream"], kind=kind, name=name, started_at_s=node["start_s"],
            duration_s=node["duration_s"], size_bytes=size, group=group, group_size=group_size,
            peer=peer if isinstance(peer, int) else None, step=attr.get("step"), waits_for=waits,
            kernels=int(attr.get("kernels", 1)),
            busy_s=attr["busy_ns"] * 1e-9 if "busy_ns" in attr else None))
    return ops


def _check_duration(node: dict, value: object, key: str) -> None:
    """A node's recorded duration: a finite number >= 0 (a negative one would replay work as taking no time)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ScenarioError("chakra", f"node {node['id']} ({node['name'][:80]!r}): {key} must be a finite number "
                            f">= 0, got {value!r:.40}")


def _recorded_steps(rank: int, metadata: dict, path: Path) -> list[RecordedStep]:
    """The steps a rank's metadata records (ids, starts and durations in ns, as lists of numbers)."""
    lists = [metadata.get(key, []) for key in ("step_ids", "step_started_at_ns", "step_duration_ns")]
    for key, values in zip(("step_ids", "step_started_at_ns", "step_duration_ns"), lists, strict=True):
        if not isinstance(values, list) or not all(isinstance(v, int | float) for v in values):
            raise ScenarioError(str(path), f"metadata {key}: expected a list of numbers, got {values!r:.60}")
    ids, starts, durations = lists
    if bad := [d for d in [*starts, *durations] if not math.isfinite(d)] + [d for d in durations if d < 0]:
        raise ScenarioError(str(path), f"metadata step_duration_ns/step_started_at_ns: expected finite times and "
                            f"durations >= 0, got {bad[0]!r}")
    return [RecordedStep(n, rank, s * 1e-9, d * 1e-9) for n, s, d in zip(ids, starts, durations, strict=False)]


def _start_times(by_id: dict[int, dict], notes: Counter) -> None:
    """Recorded start times when the file has them, else as soon as dependencies and stream order allow."""
    nodes = list(by_id.values())
    if all("start_time_ns" in n["attr"] for n in nodes):
        for n in nodes:
            n["start_s"] = n["attr"]["start_time_ns"] * 1e-9
        return
    if nodes and any(n["start_us"] for n in nodes):
        for n in nodes:
            n["start_s"] = n["start_us"] * 1e-6
        return
    notes[UNTIMED] += len(nodes)
    deps = {i: {d for d in n["ctrl_deps"] + n["data_deps"] if d in by_id} for i, n in by_id.items()}
    waiting = {i: len(d) for i, d in deps.items()}
    users: dict[int, list[int]] = {i: [] for i in by_id}
    for i, d in deps.items():
        for j in d:
            users[j].append(i)
    ready = [i for i, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    stream_free: dict[object, float] = {}
    done = 0
    while ready:
        i = heapq.heappop(ready)
        node = by_id[i]
        start = max([stream_free.get(node["stream"], 0.0)] +
                    [by_id[j]["start_s"] + by_id[j]["duration_s"] for j in deps[i]])
        node["start_s"] = start
        stream_free[node["stream"]] = start + node["duration_s"]
        done += 1
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if done < len(by_id):
        raise ScenarioError("chakra", "the node dependencies form a cycle")


def read_chakra(paths: Sequence[str | Path]) -> RecordedRun:
    """Import Chakra ``.et`` files (one per rank, ``<name>.<rank>.et``) as a RecordedRun."""
    if not paths:
        raise ScenarioError("trace", "no trace files given")
    assumptions: list[str] = []
    files: dict[int, tuple[Path, dict, bytes]] = {}
    bodies: dict[bytes, tuple[Path, bytes]] = {}  # digest of a node list -> the first file holding it
    for position, p in enumerate(paths):
        path = Path(p)
        metadata, digest, body = _read_metadata(path)
        bodies.setdefault(digest, (path, body))
        rank = metadata.get("rank")
        if not isinstance(rank, int):
            match = _RANK_IN_NAME.search(path.name)
            rank = int(match.group(1)) if match else position
        if rank in files:
            raise ScenarioError(str(path), f"rank {rank} appears twice (also in {files[rank][0].name})")
        files[rank] = (path, metadata, digest)
    sizes = {m.get("world_size") for _p, m, _n in files.values() if isinstance(m.get("world_size"), int)}
    if len(sizes) > 1:
        raise ScenarioError(str(paths[0]), f"the files disagree on the world size ({sorted(sizes)})")
    world_size = check_world_size(next(iter(sizes)) if sizes else max(len(files), max(files) + 1), str(paths[0]))
    if not sizes:
        assumptions.append(f"no world size in the metadata: taken as {world_size} (the rank files given)")
    ranks: dict[int, list[RecordedOp]] = {}
    mirrored: dict[int, int] = {}
    steps: list[RecordedStep] = []
    run_meta: dict[str, object] = {}
    notes_by_rank: dict[int, Counter] = {}
    groups: dict[tuple[int, ...], tuple[int, ...]] = {}
    timed = True
    owner_of: dict[bytes, int] = {}  # digest of a node list -> the recorded rank it was read for
    same: dict[int, list[int]] = defaultdict(list)  # that rank -> the ranks whose files hold the same nodes
    for rank, (path, metadata, digest) in sorted(files.items()):
        run_meta = run_meta or metadata
        if isinstance(metadata.get("mirrors_rank"), int):
            if metadata["mirrors_rank"] not in files:
                raise ScenarioError(str(path), f"mirrors rank {metadata['mirrors_rank']}, whose file is not given")
            mirrored[rank] = metadata["mirrors_rank"]
            continue
        if digest in owner_of:  # the same program as a rank already read: not parsed again
            mirrored[rank] = owner_of[digest]
            same[owner_of[digest]].append(rank)
        else:
            owner_of[digest] = rank
            notes = notes_by_rank[rank] = Counter()
            node_path, body = bodies.pop(digest)
            try:
                ranks[rank] = _to_ops(rank, _read_nodes(node_path, body), world_size, notes, groups)
            except ScenarioError:  # already names the file and what is wrong in it
                raise
            except (TypeError, ValueError, OverflowError) as err:  # an attribute of the wrong shape (a list for
                # a scalar, a string for a number): a corrupt or foreign file, refused in one line
                raise ScenarioError(str(node_path), f"malformed node attribute ({err})") from None
            timed = timed and not notes[UNTIMED]
        steps += _recorded_steps(rank, metadata, path)
    if not ranks:
        raise ScenarioError(str(paths[0]), "every file mirrors another rank: no recorded rank to import")
    mirrored = {rank: mirrored.get(source, source) for rank, source in mirrored.items()}  # to a read rank
    assumptions += summarize_notes(notes_by_rank, "nodes")
    assumptions += [f"ranks {describe_ranges(others)}: the same nodes as rank {rank}'s file (byte for byte): read "
                    "once, the same program" for rank, others in same.items()]
    recorded_assumptions = run_meta.get("assumptions")
    if isinstance(recorded_assumptions, list):
        assumptions = [str(a) for a in recorded_assumptions] + assumptions
    absent = [r for r in range(world_size) if r not in ranks and r not in mirrored]
    if absent:
        raise ScenarioError(str(paths[0]), f"ranks {describe_ranges(absent)} of world size {world_size} "
                                           f"have no .et file")
    steps.sort(key=lambda s: (s.step, s.rank))
    gpu_name = run_meta.get("gpu_name")
    return RecordedRun(ranks=ranks, world_size=world_size,
                       gpu_name=gpu_name if isinstance(gpu_name, str) else None, steps=steps,
                       assumptions=assumptions, mirrored=mirrored, timed=timed,
                       source="chakra: " + describe_files(paths))


# --- export ------------------------------------------------------------------------------------------------

def _attr(name: str, number: int, value: object) -> pb.MessageWriter:
    writer = pb.MessageWriter().string(1, name)
    if number == _STRING:
        writer.string(number, str(value))
    elif number == _STRING_LIST:
        items = pb.MessageWriter()
        for item in value:  # type: ignore[attr-defined]
            items.string(1, str(item))
        writer.message(number, items)
    elif number == _INT64_LIST:
        writer.message(number, pb.MessageWriter().packed_varints(1, [int(v) for v in value]))  # type: ignore
    else:
        writer.varint(number, int(value))  # type: ignore[call-overload]
    return writer


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


def _node(index: int, op: RecordedOp, previous_on_stream: int | None) -> bytes:
    node = pb.MessageWriter().varint(1, index).string(2, op.name)
    node_type = {COMPUTE: COMP_NODE, COLLECTIVE: COMM_COLL_NODE, SEND: COMM_SEND_NODE,
                 SENDRECV: COMM_SEND_NODE, RECV: COMM_RECV_NODE}[op.kind]
    node.varint(3, node_type)
    node.packed_varints(4, [] if previous_on_stream is None else [previous_on_stream])
    node.packed_varints(5, list(op.waits_for))
    node.varint(6, max(round(op.started_at_s * 1e6), 0)).varint(7, round(op.duration_s * 1e6))
    attrs = [_attr("is_cpu_op", _BOOL, op.stream == "cpu"),
             _attr("stream", _STRING if isinstance(op.stream, str) else _INT64, op.stream),
             _attr("start_time_ns", _INT64, _ns(op.started_at_s)),
             _attr("duration_ns", _INT64, _ns(op.duration_s)),
             _attr("kernels", _INT64, op.kernels)]
    if op.step is not None:
        attrs.append(_attr("step", _INT64, op.step))
    if op.busy_s is not None:
        attrs.append(_attr("busy_ns", _INT64, _ns(op.busy_s)))
    if op.kind == COLLECTIVE:
        if op.name not in _COMM_TYPES:
            raise ScenarioError("chakra", f"collective {op.name!r} has no Chakra comm_type "
                                          f"(known: {', '.join(_COMM_TYPES)})")
        attrs.append(_attr("comm_type", _INT64, _COMM_TYPES[op.name]))
    if op.kind != COMPUTE:
        attrs.append(_attr("comm_size", _INT64, round(op.size_bytes or 0.0)))
        if op.size_bytes is None:
            attrs.append(_attr("size_unknown", _BOOL, True))
    if op.kind == SENDRECV:
        attrs.append(_attr("sendrecv", _BOOL, True))
    if op.peer is not None:
        attrs.append(_attr("comm_src" if op.kind == RECV else "comm_dst", _INT64, op.peer))
    if op.group:
        attrs.append(_attr("group", _INT64_LIST, op.group))
    if op.group_size is not None:
        attrs.append(_attr("group_size", _INT64, op.group_size))
    for attr in attrs:
        node.message(10, attr)
    return bytes(node)


def write_chakra(run: RecordedRun, out_dir: str | Path, prefix: str) -> list[Path]:
    """Write ``<out_dir>/<prefix>.<rank>.et`` for every rank of the world; mirrored ranks get their source's
    ops (and a ``mirrors_rank`` metadata attribute, so reading back restores the mirroring)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for rank in range(run.world_size):
        steps = [s for s in run.steps if s.rank == rank]
        meta_attrs = [_attr("rank", _INT64, rank), _attr("world_size", _INT64, run.world_size),
                      _attr("source", _STRING, run.source),
                      _attr("assumptions", _STRING_LIST, run.assumptions),
                      _attr("step_ids", _INT64_LIST, [s.step for s in steps]),
                      _attr("step_started_at_ns", _INT64_LIST, [_ns(s.started_at_s) for s in steps]),
                      _attr("step_duration_ns", _INT64_LIST, [_ns(s.duration_s) for s in steps])]
        if run.gpu_name:
            meta_attrs.append(_attr("gpu_name", _STRING, run.gpu_name))
        if rank in run.mirrored:
            meta_attrs.append(_attr("mirrors_rank", _INT64, run.mirrored[rank]))
        metadata = pb.MessageWriter().string(1, CHAKRA_VERSION)
        for attr in meta_attrs:
            metadata.message(2, attr)
        messages = [bytes(metadata)]
        previous: dict[object, int] = {}
        for index, op in enumerate(run.ops_of(rank)):
            messages.append(_node(index, op, previous.get(op.stream)))
            previous[op.stream] = index
        path = out / f"{prefix}.{rank}.et"
        outputs.write_bytes(path, pb.write_delimited(messages))   # renamed into place whole (round 37 review)
        written.append(path)
    return written
