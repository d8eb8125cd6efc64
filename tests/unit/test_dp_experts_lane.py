"""The expert data-parallel group's own stream is its own lane of the trace and the timeline.

With Megatron-FSDP MoE (``engine.data_parallel.communicator_streams``) a rank's dense and expert data-parallel
collectives run at once, each on its own stream; on one lane their slices would overlap without nesting, which
Perfetto draws wrongly and timeline.png draws on top of each other. So the expert stream's events are recorded as
``dp-experts`` (trace tid ``OPTIONAL_STREAM_TIDS``): on every lane of the trace no two slices overlap (each lane is
one in-order stream: a slice ends before the next starts). Runs whose expert collectives share the dense stream
(ZeRO-1/2) keep them on ``dp`` and their trace names no extra lane.
"""

from __future__ import annotations

import gzip
import json
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from simcluster.analysis import timeline
from simcluster.engine import simulate
from simcluster.engine.results import OPTIONAL_STREAM_TIDS, STREAM_TIDS, write_chrome_trace

sys.path.insert(0, str(Path(__file__).parent))
from test_dp_communicator_streams import _scenario  # noqa: E402  (the small TP 2, EP 2, DP 8 MoE run)

TOLERANCE_US = 1e-6  # the trace's microseconds are the engine's exact times, printed in full


@pytest.fixture(scope="module")
def runs():
    return {stage: simulate(_scenario(stage, steps=1)) for stage in (1, 3)}


def _trace(result, tmp_path: Path) -> dict:
    with gzip.open(write_chrome_trace(result.events, tmp_path / "trace.json.gz"), "rt") as handle:
        return json.load(handle)


def _lanes(trace: dict) -> dict[tuple[int, int], list[tuple[float, float, str]]]:
    lanes = defaultdict(list)
    for event in trace["traceEvents"]:
        if event["ph"] == "X":
            lanes[event["pid"], event["tid"]].append((event["ts"], event["ts"] + event["dur"], event["name"]))
    return lanes


def test_megatron_fsdp_expert_stream_has_its_own_lane(runs, tmp_path):
    trace = _trace(runs[3], tmp_path)
    lanes = _lanes(trace)
    dp, experts = STREAM_TIDS["dp"], OPTIONAL_STREAM_TIDS["dp-experts"]
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    assert names[0, experts] == "dp-experts"
    assert lanes[0, experts] and all(name.startswith("expert ") for *_, name in lanes[0, experts])
    assert not any(name.startswith("expert ") for *_, name in lanes[0, dp])
    for (_pid, tid), slices in lanes.items():
        if tid in (dp, experts):   # one in-order stream a lane: each slice ends before the next starts
            slices.sort()
            ends, starts = [end for _, end, _ in slices[:-1]], [start for start, _, _ in slices[1:]]
            assert all(end <= start + TOLERANCE_US for end, start in zip(ends, starts, strict=True))
    # the two streams do run at once: on one lane these slices would overlap
    assert any(s0 < e1 and s1 < e0 for s0, e0, _ in lanes[0, dp] for s1, e1, _ in lanes[0, experts])
    shown = timeline._lanes(runs[3].events, 1, None)[2]
    assert (0, "dp-experts") in shown and (0, "dp") in shown


def test_one_stream_keeps_one_lane_and_the_trace_heads(runs, tmp_path):
    """ZeRO-1's expert collectives queue on the dense stream: the dp lane, and no dp-experts lane named."""
    trace = _trace(runs[1], tmp_path)
    assert "dp-experts" not in set(runs[1].events["stream"])
    heads = {e["tid"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    assert heads == set(STREAM_TIDS.values())
    assert any(name.startswith("expert ") for *_, name in _lanes(trace)[0, STREAM_TIDS["dp"]])
