"""`simcluster replay` as a user runs it: the JSON contract, files written, stepping through events, and one-line
errors (exit 2) for traces that cannot be read."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent.parent / "data"
TWO_RANKS = DATA / "kineto" / "a100-2rank-allreduce.rank0.json.gz"


def test_json_reports_every_step_and_the_assumptions_and_writes_outputs(cli, tmp_path):
    out = tmp_path / "replay"
    code, stdout, _ = cli("replay", TWO_RANKS, "--json", "--out", out)
    assert code == 0
    report = json.loads(stdout)
    assert [s["step"] for s in report["steps"]] == [4, 5, 6]  # ProfilerStep#4..6 in the trace
    for step in report["steps"]:
        assert {"recorded_step_s", "replayed_step_s", "compute_s", "exposed_comm_s"} <= set(step)
        assert 0 < step["compute_s"] < step["replayed_step_s"]
    text = " ".join(report["assumptions"])
    assert "a100-40gb-sxm" in text and "nvswitch-node" in text and "mirror" in text
    written = {p.name for p in out.iterdir()}
    assert {"events.csv", "replay.json", "trace.json.gz", "timeline.png", "timeline-recorded.png"} <= written
    trace = json.loads(gzip.decompress((out / "trace.json.gz").read_bytes()))
    names = {e["args"]["name"] for e in trace["traceEvents"] if e.get("name") == "process_name"}
    # rank 1 mirrors rank 0: one agent stands for both
    assert {"replayed rank 0 (and 1 rank like it)", "recorded rank 0 (and 1 rank like it)"} == names


def test_slower_custom_nic_grows_exposed_communication(cli, tmp_path):
    """The same run on two single-GPU nodes behind a 10 Gb/s NIC (leaf-spine): compute unchanged, exposed
    communication larger than on the NVSwitch node it ran on."""
    base = json.loads(cli("replay", TWO_RANKS, "--json", "--out", tmp_path / "a")[1])
    slow = json.loads(cli("replay", TWO_RANKS, "--json", "--out", tmp_path / "b", "--topology", "leaf-spine",
                          "--gpus-per-node", "1", "--nic", "10 Gb/s")[1])
    for b, s in zip(base["steps"], slow["steps"], strict=True):
        assert s["compute_s"] == b["compute_s"]
        assert s["exposed_comm_s"] > 10 * b["exposed_comm_s"]
    assert any("10 Gb/s" in a for a in slow["assumptions"])


def test_events_prints_the_first_n_events_in_time_order(cli):
    code, stdout, _ = cli("replay", TWO_RANKS, "--events", "6")
    assert code == 0
    lines = stdout.strip().splitlines()
    assert lines[0].split()[:6] == ["time", "rank", "stream", "kind", "bytes", "name"]
    assert len(lines) == 7
    assert "broadcast" in stdout and "collective" in stdout  # the first NCCL op of the trace
    times_ms = [float(line.split()[0]) for line in lines[1:]]
    assert times_ms == sorted(times_ms) and all(line.split()[1] == "ms" for line in lines[1:])


def test_until_prints_only_events_starting_before_the_time(cli):
    # recorded (= replayed) starts before 9 ms: two compute kernels and one broadcast, once for the agent that
    # stands for both ranks (rank 1 mirrors rank 0), on each of the 2 ranks with --expand
    for args, count in (((), 3), (("--expand",), 6)):
        code, stdout, _ = cli("replay", TWO_RANKS, "--until", "9ms", *args)
        assert code == 0
        rows = stdout.strip().splitlines()[1:]
        assert len(rows) == count
        assert all(float(row.split()[0]) <= 9.0 for row in rows)


@pytest.mark.parametrize(("content", "message"), [
    (b"\x1f\x8b\x08\x00garbage", "gzip"),
    (b'{"traceEvents": [{"ph": "X", "cat": "kernel"', "not valid JSON"),
    (b'{"some": "other tool"}', "not a Kineto"),
    (b"\x00\x01\x02binary", "not a text JSON"),
])
def test_unreadable_kineto_traces_give_one_line_and_exit_2(cli, tmp_path, content, message):
    path = tmp_path / "broken.rank0.json"
    path.write_bytes(content)
    code, stdout, err = cli("replay", path)
    assert code == 2 and stdout == ""
    assert len(err.strip().splitlines()) == 1 and message in err and str(path) in err


def test_truncated_real_trace_gives_one_line_and_exit_2(cli, tmp_path):
    path = tmp_path / "cut.rank0.json.gz"
    path.write_bytes(TWO_RANKS.read_bytes()[:50_000])
    code, _, err = cli("replay", path)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "truncated" in err


def test_corrupt_chakra_trace_gives_one_line_and_exit_2(cli, tmp_path):
    path = tmp_path / "job.0.et"
    path.write_bytes(b"\xff\xff\xff\xff\xff")
    code, _, err = cli("replay", path)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Chakra" in err


@pytest.mark.parametrize("cut", [13, 40, 79])
def test_chakra_rank_cut_inside_a_node_names_its_file_once(cli, tmp_path, cut):
    """A rank's .et cut inside a node message (a copy interrupted): one line naming that file once, saying it is
    truncated (the reader's own error, not re-wrapped as 'malformed node attribute (file: ...)')."""
    for source in sorted((DATA / "chakra").glob("all_reduce.*.et")):
        data = source.read_bytes()
        (tmp_path / source.name).write_bytes(data[:cut] if source.name == "all_reduce.0.et" else data)
    code, _, err = cli("replay", *sorted(tmp_path.glob("*.et")))
    cut_file = str(tmp_path / "all_reduce.0.et")
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.count(cut_file) == 1, err
    assert "truncated" in err and "malformed node attribute" not in err


@pytest.mark.parametrize(("args", "field"), [
    (["--gpu", "tpu-v9"], "--gpu"), (["--until", "12"], "--until"), (["--nic", "fast"], "--nic"),
    (["--network", "psychic"], "--network"), (["--until", "1ms", "--events", "3"], "--until"),
])
def test_bad_options_give_one_line_and_exit_2(cli, args, field):
    code, _, err = cli("replay", TWO_RANKS, *args)
    assert code == 2 and err.startswith(f"error: {field}")


def test_json_without_out_prints_the_report_and_writes_nothing(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = cli("replay", TWO_RANKS, "--json")
    assert code == 0 and json.loads(stdout)["fabric"] == "nvswitch-node"
    assert list(tmp_path.iterdir()) == []


def test_repeated_topology_replays_on_each_fabric_side_by_side(cli, tmp_path):
    """compare's syntax (NAME:key=value, --option NAME.key=value): two fabrics, two reports in the given order,
    one overlay plot and one folder of events per fabric; a 4:1 oversubscribed uplink exposes more."""
    out = tmp_path / "two"
    code, stdout, _ = cli("replay", TWO_RANKS, "--json", "--out", out, "--gpus-per-node", "1",
                          "--topology", "rail-fat-tree", "--topology", "leaf-spine:hosts_per_leaf=1",
                          "--option", "leaf-spine.oversubscription=4")
    assert code == 0
    report = json.loads(stdout)
    assert report["partial"] is False and report["pending"] == 0  # sweep/validate/compare's keys (DESIGN)
    replays = report["replays"]
    assert [r["fabric"] for r in replays] == ["rail-fat-tree", "leaf-spine:hosts_per_leaf=1,oversubscription=4"]
    for fat, slim in zip(replays[0]["steps"], replays[1]["steps"], strict=True):
        assert slim["exposed_comm_s"] > fat["exposed_comm_s"]
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"replay.json", "step_overlay.png", "rail-fat-tree/events.csv",
            "leaf-spine_hosts_per_leaf=1_oversubscription=4/events.csv"} <= written
    code, stdout, _ = cli("replay", TWO_RANKS, "--gpus-per-node", "1", "--out", tmp_path / "text",
                          "--topology", "rail-fat-tree", "--topology", "leaf-spine:oversubscription=4")
    assert code == 0 and "rail-fat-tree" in stdout and "recorded" in stdout


def test_a_topology_given_twice_is_an_error(cli):
    code, _, err = cli("replay", TWO_RANKS, "--topology", "rail-fat-tree", "--topology", "rail-fat-tree")
    assert code == 2 and err.startswith("error: --topology")


def test_algorithm_forces_the_collectives_algorithm_where_it_applies(cli):
    """Two single-GPU nodes behind 10 Gb/s: a forced ring (NCCL's choice for 2 ranks) exposes what NCCL's choice
    does, a forced tree (at most 0.92 of the ring's bandwidth, its own step structure) more; NVLS on an A100 is
    refused in one line."""
    slow = ("--json", "--topology", "leaf-spine", "--gpus-per-node", "1", "--nic", "10 Gb/s")
    auto, ring, tree = (json.loads(cli("replay", TWO_RANKS, *slow, "--algorithm", a)[1]) for a in ("auto", "ring",
                                                                                                   "tree"))
    for a, r, t in zip(auto["steps"], ring["steps"], tree["steps"], strict=True):
        assert r["exposed_comm_s"] == pytest.approx(a["exposed_comm_s"], rel=1e-9)
        assert t["exposed_comm_s"] > 1.2 * a["exposed_comm_s"]
    assert any("forced: tree" in s for s in tree["assumptions"])
    code, _, err = cli("replay", TWO_RANKS, *slow, "--algorithm", "nvls")
    assert code == 2 and err.startswith("error: --algorithm") and err.strip().count("\n") == 0


def _kineto(path: Path, events: list[dict], world_size: int = 2) -> Path:
    path.write_text(json.dumps({"distributedInfo": {"rank": 0, "world_size": world_size, "backend": "nccl"},
                                "traceEvents": events}))
    return path


KERNEL = {"ph": "X", "cat": "kernel", "name": "gemm", "ts": 0, "dur": 10, "pid": 0, "tid": 7,
          "args": {"device": 0, "stream": 7}}


def test_hostile_traces_are_refused_in_one_line_before_allocating(cli, tmp_path):
    """A world size of 10^9 (per-rank state for each), a timestamp of 10^300 us, a gzip bomb of 300 MB of blanks
    and --scale-dp 10^8: each refused in one line naming what, exit 2 (issue 14)."""
    import gzip as gz
    bomb = tmp_path / "bomb.rank0.json.gz"
    with gz.open(bomb, "wb", compresslevel=1) as f:
        f.write(b'{"traceEvents": [')
        for _ in range(300):
            f.write(b" " * 2**20)
        f.write(b"]}")
    cases = [
        ((_kineto(tmp_path / "ws.rank0.json", [KERNEL], world_size=10**9),), "world size"),
        ((_kineto(tmp_path / "ts.rank0.json", [KERNEL, {**KERNEL, "ts": 1e300}]),), "span"),
        ((bomb,), "MiB"),
        ((TWO_RANKS, "--scale-dp", "100000000"), "--scale-dp"),
    ]
    for args, words in cases:
        code, _, err = cli("replay", *args, "--json")
        assert code == 2 and err.strip().count("\n") == 0 and words in err, (args, err)
