"""Results written from a run's record: the Chrome trace, streamed, is the document its definition describes."""

import gzip
import json

import pandas as pd
import pytest

from simcluster.engine.recorder import COLUMNS
from simcluster.engine.results import STREAM_TIDS, write_chrome_trace

ROWS = [  # rank, stream, kind, name, microbatch, start_s, end_s, bytes, group
    (0, "compute", "compute", "forward c0", 0, 0.0, 1.5e-3, 0.0, 8),
    (0, "pp", "comm", 'send "fwd" to c1 \u00e9\n', 0, 1.5e-3, 1.75e-3, 2.5e7, 8),
    (1, "dp", "comm", "reduce-scatter", -1, 2e-3, 1.9e-3, 1e9, 8),   # end before start: dur clipped to 0
    (1, "mystery", "comm", "forward c0", 3, 0.1, 0.2, 3.0, 1),      # unknown stream: tid 9
    (2, "compute", "compute", "late rank", 0, 0.0, 1.0, 0.0, 1),
]


def expected_trace(events: pd.DataFrame, ranks: list[int]) -> dict:
    """The trace by its definition: metadata per rank and stream, then one complete event per row of those ranks."""
    trace = []
    for rank in ranks:
        trace.append({"ph": "M", "name": "process_name", "pid": rank, "tid": 0, "args": {"name": f"rank {rank}"}})
        trace += [{"ph": "M", "name": "thread_name", "pid": rank, "tid": tid, "args": {"name": stream}}
                  for stream, tid in STREAM_TIDS.items()]
    for row in events.itertuples(index=False):
        if row.rank in ranks:
            trace.append({"ph": "X", "name": row.name, "cat": row.kind, "pid": row.rank,
                          "tid": STREAM_TIDS.get(row.stream, 9), "ts": row.start_s * 1e6,
                          "dur": max(0.0, (row.end_s - row.start_s) * 1e6),
                          "args": {"microbatch": row.microbatch, "bytes": row.bytes, "gpus": row.group}})
    return {"traceEvents": trace, "displayTimeUnit": "ms"}


@pytest.mark.parametrize("max_ranks", [2, 3])
def test_streamed_trace_is_the_defined_document(tmp_path, max_ranks, monkeypatch):
    import simcluster.engine.results as results

    monkeypatch.setattr(results, "TRACE_CHUNK_EVENTS", 2)  # several chunks, a partial last one
    events = pd.DataFrame.from_records(ROWS, columns=COLUMNS)
    path = write_chrome_trace(events, tmp_path / "trace.json.gz", max_ranks=max_ranks)
    with gzip.open(path, "rt") as handle:
        assert json.load(handle) == expected_trace(events, list(range(max_ranks)))


def test_trace_refuses_non_finite_times(tmp_path):
    events = pd.DataFrame.from_records([(0, "compute", "compute", "x", 0, 0.0, float("inf"), 0.0, 1)],
                                       columns=COLUMNS)
    with pytest.raises(ValueError):
        write_chrome_trace(events, tmp_path / "trace.json.gz")
    assert not (tmp_path / "trace.json.gz").exists()


def test_trace_of_no_events_is_valid_json(tmp_path):
    events = pd.DataFrame.from_records([], columns=COLUMNS)
    with gzip.open(write_chrome_trace(events, tmp_path / "trace.json.gz"), "rt") as handle:
        assert json.load(handle) == {"traceEvents": [], "displayTimeUnit": "ms"}
