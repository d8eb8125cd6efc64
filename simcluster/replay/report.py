"""What a replay measured: per-step figures, and the recorded and replayed timelines side by side.

Everything here reads the events table of ``engine/replay.py`` (one row per replayed op, its recorded times
alongside), so the same measure is taken on both timelines: what the replay changed is the difference.
- ``step_report``: per recorded step, recorded and replayed step time, compute, and exposed communication (the
  time communication runs and no compute does, ``exposed_s``);
- ``chrome_trace``: a Perfetto trace with each rank's replayed and recorded timelines as two processes;
- ``recorded_view``: the events with their recorded times, to draw the recording with the same plotting code;
- ``describe_plan``: the sentence saying how much of the communication the replay re-simulated.
"""

from __future__ import annotations

import pandas as pd

from simcluster.replay.plan import ReplayPlan
from simcluster.replay.recorded import RecordedRun, describe_ranges

# ---- what a replay measured -------------------------------------------------------------------------------

# Start and end columns of the events table for each timeline.
REPLAYED = ("start_s", "end_s")
RECORDED = ("recorded_start_s", "recorded_end_s")


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted disjoint intervals covering the same time as ``intervals`` (touching ones merged)."""
    merged: list[list[float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        elif end > start:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def _length(intervals: list[tuple[float, float]]) -> float:
    return sum(b - a for a, b in intervals)


def _clip(intervals: list[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float]]:
    return [(max(a, lo), min(b, hi)) for a, b in intervals if min(b, hi) > max(a, lo)]


def exposed_s(comm: list[tuple[float, float]], compute: list[tuple[float, float]]) -> float:
    """Time during which communication runs and no compute does: |union(comm) \\ union(compute)|."""
    comm, compute = _union(comm), _union(compute)
    return _length(comm) - _length(_union([(max(a, c), min(b, d)) for a, b in comm for c, d in compute
                                           if min(b, d) > max(a, c)]))


def step_report(run: RecordedRun, events: pd.DataFrame) -> list[dict]:
    """Per recorded step: recorded and replayed step time, compute and exposed communication (means over
    replayed ranks: an agent's rows count once per rank it stands for).

    ``recorded_step_s`` is the profiler's own figure (``RecordedRun.step_time_s``: the ProfilerStep span of the
    slowest rank). The replay moves it by what it changed on the GPU: a step's GPU work ends when the last op
    launched in it ends (on any rank), and ``replayed_step_s = recorded_step_s + shift(end of this step) -
    shift(end of the previous step)``, the shift being replayed minus recorded end (0 before the first step:
    the replay keeps the recorded time origin). A GPU-bound step's ops run after its CPU annotation ends, so
    GPU ends, not CPU annotations, mark what the replay moved. ``compute_s`` is the kernel time of the step's
    compute ops; ``exposed_comm_s`` the time, in the step's GPU window (previous step's end to this one's),
    during which a communication op runs and no compute segment does; ``recorded_exposed_comm_s`` the same
    measure on the recorded times. Without step annotations the whole trace is one step.
    """
    numbers = run.step_numbers()
    whole = not numbers or events["step"].isna().all()
    rows = []
    ranks = _weights(events).sum()
    start_s = recorded_start_s = float(events["recorded_start_s"].min()) if whole else \
        min(s.started_at_s for s in run.steps)
    for number in [None] if whole else numbers:
        mine = events if number is None else events[events["step"] == number]
        if mine.empty:
            continue
        end_s, recorded_end_s = float(mine["end_s"].max()), float(mine["recorded_end_s"].max())
        if number is None:
            recorded_step_s = recorded_end_s - recorded_start_s
        else:
            recorded_step_s = run.step_time_s(number)
        shift_s = (end_s - recorded_end_s) - (start_s - recorded_start_s)
        rows.append({"step": number, "recorded_step_s": recorded_step_s,
                     "replayed_step_s": recorded_step_s + shift_s,
                     "compute_s": float((compute["busy_s"] * compute["group"]).sum()) / ranks
                     if not (compute := mine[mine["kind"] == "compute"]).empty else 0.0,
                     "exposed_comm_s": _mean_exposed_s(events, start_s, end_s, REPLAYED),
                     "recorded_exposed_comm_s": _mean_exposed_s(events, recorded_start_s, recorded_end_s,
                                                                RECORDED)})
        start_s, recorded_start_s = end_s, recorded_end_s
    return rows


def _mean_exposed_s(events: pd.DataFrame, lo_s: float, hi_s: float, timeline: tuple[str, str]) -> float:
    """Exposed communication (``exposed_s``) between ``lo_s`` and ``hi_s`` on one timeline (the start and end
    columns of ``REPLAYED`` or ``RECORDED``), mean over ranks: every op of a rank counts, whatever its step,
    since an op launched in one step may overlap the next one's window."""
    start_col, end_col = timeline
    weights = _weights(events)
    total_s = 0.0
    for rank, of_rank in events.groupby("rank"):
        is_comm = (of_rank["kind"] == "comm").tolist()
        spans = list(zip(of_rank[start_col], of_rank[end_col], strict=True))
        comm = _clip([s for s, c in zip(spans, is_comm, strict=True) if c], lo_s, hi_s)
        compute = _clip([s for s, c in zip(spans, is_comm, strict=True) if not c], lo_s, hi_s)
        total_s += exposed_s(comm, compute) * weights[rank]
    return total_s / weights.sum()


def _weights(events: pd.DataFrame) -> pd.Series:
    """How many replayed ranks each agent's rows stand for (column ``group``), by agent (rank)."""
    return events.groupby("rank")["group"].first()


# ---- which ops the replay does not reproduce -----------------------------------------------------------------

def deviations(events: pd.DataFrame, limit: int = 10) -> list[dict]:
    """The re-simulated ops whose replayed duration differs most from the recorded one (largest first): on the
    fabric a trace ran on these are what the model does not reproduce, and by how much. ``disagree``: the
    members of the collective recorded different types or sizes (matched by order, the largest size used), a
    sign the ranks' traces order their collectives differently."""
    simulated = events[events["simulated"]]
    change_s = (simulated["end_s"] - simulated["start_s"]) - (simulated["recorded_end_s"] -
                                                               simulated["recorded_start_s"])
    top = change_s.abs().sort_values(ascending=False, kind="stable").index[:limit]
    return [{"rank": int(row.rank), "index": int(row.index), "name": row.name, "bytes": float(row.bytes),
             "recorded_s": float(row.recorded_end_s - row.recorded_start_s),
             "replayed_s": float(row.end_s - row.start_s), "change_s": float(change_s[i]),
             "disagree": bool(row.disagree)}
            for i, row in zip(top, simulated.loc[top].itertuples(index=False), strict=True)]


def describe_disagreement(events: pd.DataFrame) -> str | None:
    """One sentence on the collectives whose members disagree: how many, and how much longer they replay."""
    mixed = events[events["simulated"] & events["disagree"]]
    if mixed.empty:
        return None
    weight = mixed["group"]
    change_s = ((mixed["end_s"] - mixed["start_s"]) - (mixed["recorded_end_s"] - mixed["recorded_start_s"]))
    ranks = _weights(events).sum()
    return (f"{int(weight.sum())} collective ops whose members recorded different types or sizes are outside "
            f"the model (the ranks' traces order their collectives differently, so matching by order pairs "
            f"different collectives): they replay {float((change_s * weight).sum()) / ranks * 1e3:+.3g} ms per "
            "rank in total against their recorded durations; see 'deviations'")


# ---- Perfetto: the recorded and the replayed timelines side by side ---------------------------------------

RECORDED_PID_OFFSET = 1_000_000  # recorded rank r is process RECORDED_PID_OFFSET + r in the Perfetto trace


def chrome_trace(events: pd.DataFrame, max_ranks: int) -> dict:
    """Chrome/Perfetto trace: replayed rank r is process r, its recorded twin RECORDED_PID_OFFSET + r; one
    thread per CUDA stream; times in microseconds. Only the first ``max_ranks`` agents are written; an agent
    standing for several ranks is named so."""
    ranks = sorted(events["rank"].unique())[:max_ranks]
    kept = events[events["rank"].isin(ranks)]
    trace: list[dict] = []
    tids: dict[str, int] = {}
    for (rank, stream), rows in kept.groupby(["rank", "cuda_stream"]):
        tid = tids.setdefault(stream, len(tids) + 1)
        alike = int(rows["group"].iloc[0]) - 1
        also = f" (and {alike} rank{'s' if alike > 1 else ''} like it)" if alike else ""
        for pid, label in ((int(rank), "replayed"), (RECORDED_PID_OFFSET + int(rank), "recorded")):
            trace.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                          "args": {"name": f"{label} rank {rank}{also}"}})
            trace.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0,
                          "args": {"sort_index": 2 * int(rank) + (label == "recorded")}})
            trace.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                          "args": {"name": f"stream {stream}"}})
    for row in kept.itertuples(index=False):
        args = {"bytes": float(row.bytes), "step": None if pd.isna(row.step) else int(row.step),
                "simulated": bool(row.simulated)}
        for pid, start, end in ((int(row.rank), row.start_s, row.end_s),
                                (RECORDED_PID_OFFSET + int(row.rank), row.recorded_start_s, row.recorded_end_s)):
            trace.append({"ph": "X", "name": row.name, "cat": row.op_kind, "pid": pid,
                          "tid": tids[row.cuda_stream], "ts": start * 1e6, "dur": max(0.0, (end - start) * 1e6),
                          "args": args})
    return {"traceEvents": trace, "displayTimeUnit": "ms"}


def recorded_view(events: pd.DataFrame) -> pd.DataFrame:
    """The events table with the recorded times in ``start_s``/``end_s`` (to plot the recording)."""
    view = events.copy()
    view["start_s"], view["end_s"] = events["recorded_start_s"], events["recorded_end_s"]
    return view


def describe_plan(plan: ReplayPlan) -> str:
    """One sentence: how many ops are replayed and how many of the communication ops are re-simulated."""
    comm = [op for ops in plan.ops.values() for op in ops if op.is_communication]
    total = sum(plan.multiplicity(op.rank) for op in comm)
    simulated = sum(plan.multiplicity(op.rank) for op in comm if op.collective is not None)
    kept = sorted({r for op in comm if op.collective is None for r in plan.members[op.rank]})
    tail = f"; kept at recorded duration on ranks {describe_ranges(kept)}" if kept else ""
    return (f"replayed {plan.op_count()} ops on {plan.world_size} ranks: {simulated} of {total} "
            f"communication ops re-simulated on the fabric{tail}")


__all__ = ["RECORDED_PID_OFFSET", "chrome_trace", "describe_disagreement", "describe_plan", "deviations",
           "exposed_s", "recorded_view", "step_report"]
