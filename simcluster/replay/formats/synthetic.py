"""Synthetic Chakra workloads, written as ASTRA-sim's generators write them: to test and benchmark the replay on
timestamp-less traces of any size without shipping files."""

from __future__ import annotations

from pathlib import Path

from simcluster.core import outputs
from simcluster.replay.formats import protobuf as pb

# Chakra node types and the comm_type of an all-reduce (mlcommons/chakra et_def.proto)
_COMP_NODE, _COMM_COLL_NODE, _ALL_REDUCE = 4, 7, 0


def _node(node_id: int, name: str, node_type: int, duration_us: int = 0, deps=(), attrs=()) -> bytes:
    """One Chakra node: id, name, type, data dependencies, duration, integer attributes."""
    writer = pb.MessageWriter().varint(1, node_id).string(2, name).varint(3, node_type)
    writer.packed_varints(5, list(deps)).varint(7, duration_us)
    for key, value in attrs:
        writer.message(10, pb.MessageWriter().string(1, key).varint(9, value))
    return bytes(writer)


def data_parallel_chakra(out_dir: str | Path, ranks: int, layers: int, fwd_us: int, ig_us: int, wg_us: int,
                         grad_bytes: int) -> list[Path]:
    """One ``dp.<rank>.et`` per rank laid out as Chakra's text converter writes a DATA-parallel workload
    (mlcommons/chakra src/converter/text_converter.py, ``convert_data_parallel``): no start times, only
    ``data_deps``; forward layers in order; backward in reverse, each layer's weight-gradient compute, its
    all-reduce of ``grad_bytes`` (depending on it), then its input-gradient compute (none for the first layer)."""
    messages = [bytes(pb.MessageWriter().message(2, pb.MessageWriter().string(1, "schema")
                                                 .string(29, "1.0.2-chakra.1.0.0")))]
    ids = iter(range(1_000_000_000))
    fwd: list[int] = []
    for layer in range(layers):
        fwd.append(next(ids))
        messages.append(_node(fwd[-1], f"COMP_NODE_l{layer}_FWD", _COMP_NODE, fwd_us, fwd[-2:-1]))
    previous = fwd[-1]
    for layer in reversed(range(layers)):
        wg = next(ids)
        messages.append(_node(wg, f"COMP_NODE_l{layer}_BWD_WG", _COMP_NODE, wg_us, [previous]))
        messages.append(_node(next(ids), f"COMM_COLL_NODE_l{layer}_ALLREDUCE", _COMM_COLL_NODE, 0, [wg],
                              [("comm_type", _ALL_REDUCE), ("comm_size", grad_bytes)]))
        if layer:
            previous = next(ids)
            messages.append(_node(previous, f"COMP_NODE_l{layer}_BWD_IG", _COMP_NODE, ig_us, [wg]))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    blob = pb.write_delimited(messages)
    paths = [out / f"dp.{rank}.et" for rank in range(ranks)]
    for path in paths:
        outputs.write_bytes(path, blob)   # renamed into place whole (round 37 review)
    return paths


__all__ = ["data_parallel_chakra"]
