"""Round 34's review of the robustness changes (docs/calibration/round-34.md, "Round 34: review of the robustness
changes"). Each case but the guards (named so) failed before its fix:

- a command killed by SIGKILL (or the out-of-memory killer, a power cut) left its claim ``.simcluster-writing`` in
  its output folder, and the folder counted as taken for good: every later ``--out X`` went to ``X-2`` with ``X/
  holds other files`` over a folder ``ls`` shows empty. The holder now keeps an exclusive ``flock`` on its claim,
  which the kernel releases when the process ends however it ends: a claim nobody holds is stale, and a folder
  holding only that is free again;
- ``run --json --out $'bad\\xff'`` printed ``"out_dir": "bad\\udcff"``, a lone surrogate escape strict JSON readers
  refuse: every string ``outputs.dumps`` writes is now Unicode text (the bytes that are not UTF-8 as ``\\xff``);
- ``graphed_rows_gap.py`` (round 34): a published TFLOP/s of 0 was a ZeroDivisionError traceback, a missing or null
  one a KeyError or TypeError, bytes that are not UTF-8 a UnicodeDecodeError, a FIFO waited forever; ``--fixed-us
  nan,inf,-5`` printed nan and -100%; a trace grid ``[2, "a", 1]`` a TypeError; a file given twice its rows twice;
- the scripts started through ``script_entry.run`` (``dp_phase_charges.py`` among them) refused ``--``, the end of
  the options in POSIX utilities, as an unknown option.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simcluster.cli import outputs as cli_outputs
from simcluster.core import outputs, script_entry
from simcluster.core.errors import ScenarioError
from tests.cli.scenario_files import SMALL, write_scenario

ROOT = Path(__file__).resolve().parents[2]
fcntl = pytest.importorskip("fcntl")


# ---- 1. a claim its command no longer holds ---------------------------------------------------------------------
def test_a_claim_left_by_a_killed_command_frees_its_folder(tmp_path, capsys):
    """A real process claims X and is killed by SIGKILL (nothing of it runs after): while it lives X is taken
    (the next command writes into X-2 and says another command is writing X); once it is dead, X is used again."""
    out = tmp_path / "x"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from simcluster.cli.outputs import "
         "fresh_folder\nwith fresh_folder(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)",
         str(out)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with cli_outputs.fresh_folder(cli_outputs.output_dir(out)) as second:  # as a command does
            assert second == tmp_path / "x-2"
        assert f"{out}/ is being written by another command: writing to {out}-2/" in capsys.readouterr().err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        holder.stdout.close()
    assert [child.name for child in out.iterdir()] == [cli_outputs.CLAIM]  # left behind, as SIGKILL leaves it
    with cli_outputs.fresh_folder(cli_outputs.output_dir(out)) as third:
        assert third == out
        (third / "mine.txt").write_text("kept\n")
    assert capsys.readouterr().err == ""  # no note: the folder asked for is the one written
    assert sorted(child.name for child in out.iterdir()) == ["mine.txt"]


def test_a_stale_claim_in_a_folder_with_other_files_still_gives_way(tmp_path):
    """Guard: what a killed command wrote beside its claim is another run's files: X-2, nothing removed."""
    out = tmp_path / "x"
    out.mkdir()
    (out / cli_outputs.CLAIM).touch()
    (out / "summary.json").write_text("{}\n")
    with cli_outputs.fresh_folder(out) as folder:
        assert folder == tmp_path / "x-2"
    assert sorted(child.name for child in out.iterdir()) == [cli_outputs.CLAIM, "summary.json"]


def test_a_claim_whose_lock_is_held_keeps_the_folder_taken(tmp_path):
    """The lock, not the file's age or a PID, says a claim is live (another open file holding it); let go, free."""
    out = tmp_path / "x"
    out.mkdir()
    descriptor = os.open(out / cli_outputs.CLAIM, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert cli_outputs.unique_dir(out) == tmp_path / "x-2"
        with cli_outputs.fresh_folder(out) as folder:
            assert folder == tmp_path / "x-2"
    finally:
        os.close(descriptor)
    assert cli_outputs.unique_dir(out) == out  # let go: free


def test_an_interrupt_in_a_folder_taken_over_leaves_it_empty(tmp_path):
    """A folder holding only a stale claim, taken over and interrupted: emptied, claim and all."""
    out = tmp_path / "x"
    out.mkdir()
    (out / cli_outputs.CLAIM).touch()
    with pytest.raises(KeyboardInterrupt), cli_outputs.fresh_folder(out) as folder:
        assert folder == out
        (folder / "half.csv").write_text("1,2\n")
        raise KeyboardInterrupt
    assert list(out.iterdir()) == []


# ---- 2. the grid file where the file system has no hard links -----------------------------------------------------
def test_write_new_without_hard_links_still_writes_only_where_no_file_is(tmp_path, monkeypatch):
    """Guard of round 34's fallback (a network or FAT file system: link(2) refused with EPERM): O_EXCL instead."""
    def no_links(*_args):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "grid.json"
    assert outputs.write_new(path, "first\n") is True
    assert outputs.write_new(path, "second\n") is False
    assert path.read_text() == "first\n" and os.listdir(tmp_path) == ["grid.json"]


# ---- 3. JSON of a name that is not UTF-8 ------------------------------------------------------------------------
def test_run_json_of_an_out_folder_that_is_not_utf8_is_strict_json(cli, tmp_path):
    scenario = write_scenario(tmp_path, SMALL)
    out = Path(os.fsdecode(bytes(tmp_path) + b"/bad\xff"))
    code, stdout, err = cli("run", scenario, "--network", "analytic", "--json", "--out", out)
    assert code == 0, err
    out_dir = json.loads(stdout)["out_dir"]
    out_dir.encode("utf-8")  # no lone surrogate: strict readers (serde_json) take it
    assert out_dir == str(tmp_path) + "/bad\\xff" and Path(out).is_dir()


def test_dumps_writes_text_for_every_string_and_key():
    text = outputs.dumps({"bad\udcff": ["\ud800", "é", "plain"]})
    assert text == '{"bad\\\\xff": ["\\\\xed\\\\xa0\\\\x80", "\\u00e9", "plain"]}'
    assert json.loads(text) == {"bad\\xff": ["\\xed\\xa0\\x80", "é", "plain"]}


# ---- 4. graphed_rows_gap.py -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def graphed():
    from scripts_loader import load_script

    return load_script("graphed_rows_gap")


CASE = {"scenario": "megatron-1.7b-h100", "step_time_s": 1.0, "simulated_tflops": 100.0, "published_tflops": 90.0}


@pytest.mark.parametrize(("edit", "field"), [
    ({"published_tflops": 0}, "published_tflops: 0 is not above 0"),
    ({"simulated_tflops": None}, "simulated_tflops: missing"),
    ({"published_tflops": float("nan")}, "published_tflops: nan is not a finite number"),
    ({"step_time_s": -1.0}, "step_time_s: -1.0 is not above 0")])
def test_graphed_rows_gap_refuses_a_case_it_cannot_divide_by(graphed, tmp_path, edit, field):
    path = tmp_path / "on.json"
    case = {**CASE, **edit}
    path.write_text(json.dumps({"cases": [{k: v for k, v in case.items() if v is not None}]}))
    with pytest.raises(ScenarioError, match=field):
        graphed.cases_of(str(path))


def test_graphed_rows_gap_reads_its_file_with_the_json_bounds(graphed, tmp_path):
    path = tmp_path / "on.json"
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ScenarioError, match="not UTF-8"):
        graphed.cases_of(str(path))
    with pytest.raises(ScenarioError, match="not a regular file"):
        graphed.cases_of("/dev/zero")


@pytest.mark.parametrize("argv", [["x.json", "--fixed-us", "nan"], ["x.json", "--fixed-us", "inf"],
                                  ["x.json", "--fixed-us", "2,-5"], ["x.json", "--fixed-us", "1e400"],
                                  ["x.json", "x.json"]])
def test_graphed_rows_gap_options_refused_in_one_line(graphed, capsys, argv):
    with pytest.raises(SystemExit) as done:
        graphed.main(argv)
    assert done.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_graphed_rows_gap_counts_whole_block_grids_only(graphed, tmp_path):
    kernel = {"ph": "X", "cat": "kernel", "name": "vectorized_elementwise_kernel", "ts": 1, "pid": 1, "tid": 1}
    events = [{**kernel, "dur": 2, "args": {"grid": [2, "a", 1]}}, {**kernel, "dur": 3, "args": {"grid": [True]}},
              {**kernel, "dur": 4, "args": {"grid": [2, 3, 1]}}, {**kernel, "dur": 6, "args": {"grid": [6]}}]
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"traceEvents": events}))
    assert graphed.trace_floor(str(path)) == {6: (2, 4.0, 5.0)}


# ---- 5. `--` ends the options ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("argv", "given"), [(["--", "ROW"], ["ROW"]), (["--solve", "--", "-odd.json"],
                                                                       ["--solve", "-odd.json"])])
def test_a_double_dash_ends_the_options(argv, given):
    seen = []
    code = script_entry.run(lambda args: seen.append(args) or 0, argv, "doc", options=("--solve",), words=(1, None))
    assert code == 0 and seen == [given]


def test_an_option_name_after_the_double_dash_is_refused(capsys):
    code = script_entry.run(lambda args: pytest.fail("ran"), ["--", "--solve"], "doc", options=("--solve",))
    assert code == 2 and "--solve: after --" in capsys.readouterr().err


def test_the_claims_lock_is_let_go_with_the_claim(tmp_path):
    """No descriptor kept after the block (a long sweep of commands in one process would run out)."""
    before = len(os.listdir("/proc/self/fd")) if Path("/proc/self/fd").is_dir() else None
    for index in range(3):
        with cli_outputs.fresh_folder(tmp_path / f"x{index}"):
            pass
    assert cli_outputs._HELD == {}
    if before is not None:
        time.sleep(0)
        assert len(os.listdir("/proc/self/fd")) == before


# ---- 6. what --expand costs, said before the wait ---------------------------------------------------------------
def test_an_expanded_run_says_what_it_costs_before_it_starts(cli, tmp_path):
    """The 10,752-GPU MLPerf GPT-3 row's expanded run printed nothing in a log for minutes: the note comes first,
    before the summary; without --expand there is none."""
    scenario = write_scenario(tmp_path, SMALL)
    code, stdout, err = cli("run", scenario, "--expand", "--steps", "1", "--out", tmp_path / "e")
    assert code == 0, err
    assert stdout.index("note: --expand simulates every GPU as its own agent") < stdout.index("wrote ")
    code, stdout, err = cli("run", scenario, "--steps", "1", "--out", tmp_path / "c")
    assert code == 0 and "--expand simulates" not in stdout, err


# ---- 7. a fabric's folder never takes the name of replay's own files ---------------------------------------------
def test_a_fabric_named_like_a_file_replay_writes_gets_its_hash():
    """``replay T --topology replay.json --topology rail-fat-tree`` (a YAML fabric file of that name): its folder
    was ``replay.json/``, where the report had been written: `File exists` after the whole replay, nothing kept."""
    from simcluster.cli.compare import slugs
    from simcluster.cli.replay import OVERLAY_STEM, REPORT_FILE

    reserved = (REPORT_FILE, f"{OVERLAY_STEM}.png")
    names = slugs(["replay.json", "Step_Overlay.png", "rail-fat-tree"], reserved)
    assert names[2] == "rail-fat-tree"
    assert not {name.casefold() for name in names} & {name.casefold() for name in reserved}
    assert slugs(["replay.json", "rail-fat-tree"]) == ["replay.json", "rail-fat-tree"]  # elsewhere a plain name


# ---- 8. the folders made to hold an interrupted command's folder ------------------------------------------------
def test_an_interrupted_command_removes_the_parents_it_made(tmp_path):
    """``--out a/new/x`` interrupted left ``a/new/`` (as the sweep did before round 33's review); ``a/`` was there
    and stays, and a parent that another command wrote into meanwhile is kept."""
    (tmp_path / "a").mkdir()
    with pytest.raises(KeyboardInterrupt), cli_outputs.fresh_folder(tmp_path / "a" / "new" / "x") as folder:
        (folder / "half.csv").write_text("1,2\n")
        raise KeyboardInterrupt
    assert list((tmp_path / "a").iterdir()) == []
    with pytest.raises(KeyboardInterrupt), cli_outputs.fresh_folder(tmp_path / "a" / "new" / "x") as folder:
        (folder.parent / "other.txt").write_text("another command's\n")
        raise KeyboardInterrupt
    assert [p.name for p in (tmp_path / "a" / "new").iterdir()] == ["other.txt"]
