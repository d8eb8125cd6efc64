"""Round 36's attack on the commands (docs/calibration/round-36.md, "Round 36: the commands attacked a third time").
Each case failed on main before it (a traceback, a silent exit 0 on a corrupt input, or an input lost):

- a Kineto trace whose NCCL kernel names a process-group rank outside the world (``[0, 5]`` in a world of 2, ``-1``,
  a rank twice, a group without the rank that ran it) or a Chakra send to peer 9 of 8: an IndexError traceback in
  ``replay/plan.py``, or a silent replay (a transfer to rank -1, a group of bools); ``recorded.check_ranks`` refuses
  each in one line, and a trace without ``distributedInfo`` takes the ranks its groups name as its world's;
- ``reliability.failures_per_1000_node_days: 1e-300``: an OverflowError traceback in the checkpoint interval's search;
- a MemoryError (a process memory limit) ended in a traceback; now one line, exit 2;
- ``sweep --vary parallelism.tp=2,2.0``: results.csv wrote the run at tp 2 as ``2.0`` (pandas' float column);
- Kineto traces of many streams or many collectives: two searches of ops x streams and launches x comm calls (a
  trace of 200,000 one-kernel streams ran past 300 s; 8,000 collectives took 8 s), now sweeps over sorted lists.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import pytest

from simcluster.replay.formats import read_chakra, write_chakra
from simcluster.replay.recorded import COMPUTE, SEND
from tests.cli.scenario_files import SMALL, assert_one_line, write_scenario

CHAKRA = sorted((Path(__file__).resolve().parents[1] / "data" / "chakra").glob("all_reduce.*.et"))  # 8 ranks


# ---- 1. process-group ranks of a trace -----------------------------------------------------------------------------
def _allreduce_trace(tmp_path, group, world_size: int | None = 2) -> str:
    """Rank 0's Kineto trace of a GEMM and an all-reduce whose NCCL metadata names ``group`` (a JSON text, as the
    profiler writes it)."""
    meta = {"Collective name": "allreduce", "dtype": "Float", "In msg nelems": 1 << 20, "Out msg nelems": 1 << 20,
            "Group size": 2, "Process Group Ranks": group}
    events = [{"ph": "X", "cat": "kernel", "name": "gemm", "pid": 0, "tid": 7, "ts": 100.0, "dur": 50.0, "args": {}},
              {"ph": "X", "cat": "kernel", "name": "ncclDevKernel_AllReduce_Sum_f32_RING_LL", "pid": 0, "tid": 20,
               "ts": 160.0, "dur": 30.0, "args": meta}]
    data = {"schemaVersion": 1, "traceEvents": events}
    if world_size is not None:
        data["distributedInfo"] = {"rank": 0, "world_size": world_size}
    path = tmp_path / "rank0.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.mark.parametrize(("group", "says"), [
    ("[0, 5]", "process group [0, 5] names a rank outside the world's 0..1"),      # IndexError before
    ("[0, 99999999999]", "process group [0, 99999999999] names a rank outside the world's 0..1"),
    ("[-1, 0]", "process group [-1, 0] names a rank outside the world's 0..1"),    # replayed, exit 0
    ("[0, 0]", "process group [0, 0] lists a rank twice"),
    ("[1]", "process group [1] does not hold the rank that ran it (0)"),           # replayed, exit 0
])
def test_a_process_group_naming_ranks_outside_the_world_is_one_line(cli, tmp_path, group, says):
    trace = _allreduce_trace(tmp_path, group)
    code, out, err = cli("replay", trace, "--network", "analytic", "--out", tmp_path / "o")
    assert_one_line(code, err, 2)
    assert err.startswith(f"error: {trace}: rank 0's collective 'allreduce': {says}"), err
    assert not (tmp_path / "o").exists()


def test_a_trace_without_distributed_info_spans_the_ranks_its_groups_name(cli, tmp_path):
    """Rank 0's file alone of a 2-rank all-reduce, no ``distributedInfo``: the world was taken as the one file (1
    rank) and the group's rank 1 indexed past it (IndexError). Its group names rank 1: a world of 2, rank 1 mirrored;
    the replayed step is the recorded one (nothing rescaled: the same GPU ops, the all-reduce on the assumed fabric)."""
    trace = _allreduce_trace(tmp_path, "[0, 1]", world_size=None)
    code, out, err = cli("replay", trace, "--network", "analytic", "--json")
    assert code == 0, err
    report = json.loads(out)
    assumptions = " ".join(report["assumptions"])
    assert "world size assumed to be 2 (the ranks given and their process groups)" in assumptions
    assert "rank 1 missing (world size 2): assumed to mirror recorded rank 0" in assumptions
    # bools are not ranks: [true, false] was read as the group [1, 0]
    trace = _allreduce_trace(tmp_path, "[true, false]", world_size=None)
    code, out, err = cli("replay", trace, "--network", "analytic", "--json")
    assert code == 0, err
    assert "world size assumed to be 1 (the ranks given)" in " ".join(json.loads(out)["assumptions"])


def test_a_chakra_peer_outside_the_world_is_one_line(cli, tmp_path):
    """A Chakra send to peer 9 in a world of 8 (an IndexError before), to -1 or to itself (replayed, exit 0)."""
    run = read_chakra(CHAKRA)
    for peer in (9, -1, 0):
        ranks = {r: [op if op.kind == COMPUTE else dataclasses.replace(op, kind=SEND, group=(), peer=peer)
                     for op in ops] for r, ops in run.ranks.items()}
        folder = tmp_path / f"peer{peer}"
        folder.mkdir()
        files = write_chakra(dataclasses.replace(run, ranks=ranks), folder, "t")
        code, _, err = cli("replay", *files, "--network", "analytic", "--out", tmp_path / "o")
        assert_one_line(code, err, 2)
        assert f"rank 0's send 'allreduce': peer rank {peer} is not another rank of the world's 0..7" in err, err


# ---- 2. a failure rate whose mean time between failures passes a float's range --------------------------------------
def test_a_failure_rate_near_zero_runs_and_its_goodput_is_one(cli, tmp_path):
    """``reliability.failures_per_1000_node_days: 1e-300`` (valid: positive and finite) made 50 / lambda infinite in
    the checkpoint interval's search, an OverflowError traceback. With no failure to expect in any horizon, the
    expected goodput is 1 less the checkpoint writes per interval, which the optimum makes vanish: 1 to 1e-9."""
    data = copy.deepcopy(SMALL)
    data["reliability"] = {"failures_per_1000_node_days": 1e-300}
    code, _, err = cli("run", write_scenario(tmp_path, data), "--steps", "1", "--network", "analytic",
                       "--out", tmp_path / "r")
    assert code == 0, err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert math.isfinite(summary["checkpoint_interval_s"]) and summary["checkpoint_interval_s"] > 0
    assert summary["goodput"] == pytest.approx(1.0, abs=1e-9)


# ---- 3. out of memory ----------------------------------------------------------------------------------------------
def test_running_out_of_memory_is_one_line(cli, tmp_path, monkeypatch):
    """A run too large for the process's memory limit (16,384 GPUs on the analytic network under `ulimit -v
    1500000`) ended in numpy's _ArrayMemoryError traceback, exit 1: now one line, exit 2, as a full disk is."""
    from simcluster.engine.simulation import Simulation

    def exhausted(self, *args, **kwargs):
        raise MemoryError  # numpy's _ArrayMemoryError is one (np.empty of more than the limit leaves)

    monkeypatch.setattr(Simulation, "run", exhausted)
    code, _, err = cli("run", write_scenario(tmp_path, SMALL), "--steps", "1", "--network", "analytic",
                       "--out", tmp_path / "r")
    assert_one_line(code, err, 2)
    assert err.startswith("error: out of memory: the simulation needed more memory than this process may use"), err


# ---- 4. a sweep's table shows each point's value as given ----------------------------------------------------------
def test_a_varied_column_mixing_int_and_float_keeps_each_value(cli, tmp_path):
    """``--vary parallelism.tp=2,2.0``: 2 runs, 2.0 is refused (a degree is a whole number). pandas read the column
    as floats and results.csv gave the run at tp 2 as ``2.0``, beside the refused ``2.0``: two rows of one value."""
    import csv

    code, _, err = cli("sweep", write_scenario(tmp_path, SMALL), "--vary", "parallelism.tp=2,2.0",
                       "--network", "analytic", "--jobs", "1", "--no-plots", "--out", tmp_path / "g")
    assert code == 0, err
    with open(tmp_path / "g" / "results.csv", newline="") as table:
        rows = [(row["parallelism.tp"], row["status"]) for row in csv.DictReader(table)]
    assert rows == [("2", "ok"), ("2.0", "failed")]


# ---- 5. a trace of many streams ------------------------------------------------------------------------------------
def test_cross_stream_waits_from_timing_are_linear_in_streams():
    """Without launch records an op waits for the latest op of another stream that ended within the match window
    before it. The search went stream by stream for every op: 8,000 one-kernel streams took 17 s, 200,000 did not
    end in 300 s. A chain of 20,000 kernels, each on its own stream and starting 1 us after the previous one ended,
    waits kernel by kernel on the previous one (and the first on none), found in well under a second."""
    import time

    from simcluster.replay.formats.kineto import _GpuOp, _waits_from_timing

    ops = [_GpuOp(10.0 * i, 9.0, i, "gemm", {}) for i in range(20_000)]
    started = time.process_time()
    _waits_from_timing(ops)
    assert time.process_time() - started < 5.0
    assert [op.waits for op in ops] == [set()] + [{i} for i in range(19_999)]


def test_the_comm_calls_around_a_launch_are_those_spanning_it_found_in_one_sweep():
    """``_containing`` against its definition (a CPU comm op of the thread with start <= t <= end, by start, ties in
    list order), on random nested and overlapping calls with shared ends and times on their edges; and 30,000
    consecutive calls asked at each launch (a search of every call for every launch before: 8,000 took 8 s, 30,000
    minutes) in well under a second."""
    import random
    import time

    from simcluster.replay.formats.kineto import _containing

    rng = random.Random(36)
    for _ in range(300):
        calls = {thread: [{"name": "c10d::x", "ts": float(rng.randint(0, 30)), "dur": float(rng.randint(0, 8))}
                          for _ in range(rng.randint(0, 12))] for thread in (1, "t")}
        asked = [(rng.choice([1, "t", 9]), rng.choice([None, float(rng.randint(-2, 40))])) for _ in range(25)]
        expected = [[] if at is None else sorted((e for e in calls.get(thread, ())
                                                  if e["ts"] <= at <= e["ts"] + e["dur"]), key=lambda e: e["ts"])
                    for thread, at in asked]
        assert [[id(e) for e in found] for found in _containing(calls, asked)] == \
            [[id(e) for e in found] for found in expected]
    calls = {5: [{"name": "record_param_comms", "ts": 20.0 * i, "dur": 5.0} for i in range(30_000)]}
    started = time.process_time()
    found = _containing(calls, [(5, 20.0 * i + 1.0) for i in range(30_000)])
    assert time.process_time() - started < 5.0
    assert all(len(one) == 1 and one[0] is calls[5][i] for i, one in enumerate(found))


# ---- 6. a user's text printed as written, not read as rich markup --------------------------------------------------
def test_brackets_in_a_name_or_a_path_are_printed_as_written(cli, tmp_path):
    """rich read a user's text as markup: an output folder ``o[/]5`` raised MarkupError after the run's files were
    written (a traceback, exit 1), a fabric file ``x[/]y.yaml`` in ``compare`` did so in its progress line, and the
    scenario ``x[bold]y`` was printed as ``xy``."""
    data = copy.deepcopy(SMALL)
    data["name"] = "x[bold]y"
    (tmp_path / "o[").mkdir()
    code, out, err = cli("run", write_scenario(tmp_path, data), "--steps", "1", "--network", "analytic",
                         "--out", tmp_path / "o[/]5")
    assert code == 0, err
    assert "x[bold]y: 8 x h100-sxm on nvswitch-node" in out
    assert f"to {tmp_path}/o[/]5/" in " ".join(out.split())
    assert (tmp_path / "o[" / "]5" / "summary.json").exists()
    fabric = tmp_path / "o[" / "]f.yaml"
    fabric.write_text("nodes: 1\n")  # a bad fabric file: its run fails, named, the other fabric's runs
    code, out, err = cli("compare", write_scenario(tmp_path, SMALL, "c.yaml"), "--topology", fabric,
                         "--topology", "nvswitch-node", "--network", "analytic", "--out", tmp_path / "c")
    assert code == 0 and "Traceback" not in err, err
    assert f"failed {fabric}" in " ".join(err.split())
