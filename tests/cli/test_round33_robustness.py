"""Round 33: round 32's additions and every command attacked (docs/calibration/round-33.md, "Round 33: round 32's
additions and the commands attacked"). Each case failed before its fix:

- ``--out ''`` (an unset shell variable: ``--out "$OUT"``) was read as ``.``, and the working folder holding files
  gave way to its sibling ``/abs/cwd-2/``: a folder made outside the working folder;
- a sweep whose every run failed (a fabric name mistyped, a GPU count no fabric holds) left its folder of failure
  shards behind, and into a taken folder said ``X/ holds another grid's sweep ...: writing to X-2/`` before its
  error: two lines, and a refusal that wrote;
- the Kineto readers of ``scripts/`` (``kineto_kernel_gaps.trace_events``, shared by ``kineto_call_launches``,
  ``kineto_launch_intervals`` and ``kineto_host_calls``) took NaN, Infinity and negative durations as times, a
  list as a correlation id (a TypeError traceback), and ``kineto_call_launches`` a CPU op without a name (a
  KeyError traceback);
- a trace (``replay``, the Kineto scripts), ``laws loss-vs-time --summary``, a validate output (``load_cases`` of
  the residual scripts) or an accuracy snapshot (``card_check.py``) that is a FIFO waited for a writer forever, and
  one that is a device (``/dev/zero``) was read without end (``replay /dev/zero``: a MemoryError traceback, or the
  process killed for memory);
- ``training.qkv_bias_add`` on a model without linear biases (``model.bias: false``, an rmsnorm model) was ignored
  unsaid (every step the same with ``separate``, ``epilogue`` or unset), where a setting that means nothing on the
  model is refused (as an MoE router option on a dense model);
- ``accuracy_tables.py CAL.json HO.json --write-data HO.json`` (or ``--trend-plot CAL.json``) replaced a validate
  output it read with the snapshot (or a PNG), and wrote the snapshot and the page by ``Path.write_text`` (an
  interrupt left half a file);
- ``dp_phase_charges.py --stretch inf`` was an AssertionError traceback in the engine (``1e308``: a 10^307 s step),
  ``--stretch`` twice took the second for a row's name, and a row that is no validation row (or is pipelined) was
  refused only after the rows before it were simulated.
"""

from __future__ import annotations

import copy
import json
import os

import pytest
from scripts_loader import load_script, refuse_simulation

from simcluster.core.errors import ScenarioError
from simcluster.spec import config
from tests.cli.scenario_files import SMALL, assert_one_line, write_scenario


# ---- 1. an empty --out -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [("run", "{s}"), ("compare", "{s}", "--topology", "nvswitch-node"),
                                  ("sweep", "{s}", "--gpus", "8", "--jobs", "1"), ("laws", "plot"),
                                  ("laws", "project"), ("laws", "loss-vs-time")])
def test_an_empty_out_is_refused(cli, tmp_path, monkeypatch, argv):
    here = tmp_path / "work"
    here.mkdir()
    (here / "mine.txt").write_text("mine")  # a working folder holding files: '' read as '.' went to work-2/
    monkeypatch.chdir(here)
    scenario = write_scenario(tmp_path, copy.deepcopy(SMALL))
    code, _, err = cli(*(a.format(s=scenario) for a in argv), "--out", "")
    assert_one_line(code, err, 2)
    assert "'--out': an empty folder name" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml", "work"]
    assert [p.name for p in here.iterdir()] == ["mine.txt"]


# ---- 2. a sweep whose every run fails ----------------------------------------------------------------------------
def test_a_sweep_whose_runs_all_fail_is_one_line_and_writes_nothing(cli, tmp_path):
    scenario = write_scenario(tmp_path, copy.deepcopy(SMALL))
    taken = tmp_path / "sw"
    taken.mkdir()
    (taken / "mine.txt").write_text("mine")
    for topology, needle in (("nvswitch-node", "16 GPUs need a scale-out fabric"), ("nosuch", "neither a builtin")):
        code, _, err = cli("sweep", scenario, "--gpus", "16", "--topology", topology, "--jobs", "1", "--no-plots",
                           "--network", "analytic", "--out", taken)
        assert_one_line(code, err, 2)
        assert err.startswith("error: sweep: all 1 runs failed") and needle in err, err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml", "sw"]
    code, _, err = cli("sweep", scenario, "--gpus", "16", "--jobs", "1", "--no-plots", "--network", "analytic",
                       "--out", tmp_path / "new")
    assert_one_line(code, err, 2)
    assert not (tmp_path / "new").exists()


def test_a_sweep_into_a_taken_folder_says_so_once(cli, tmp_path):
    """The note waits for the first finished run (kept behaviour: said once, on stderr)."""
    scenario = write_scenario(tmp_path, copy.deepcopy(SMALL))
    taken = tmp_path / "sw"
    taken.mkdir()
    (taken / "mine.txt").write_text("mine")
    code, _, err = cli("sweep", scenario, "--gpus", "8", "--jobs", "1", "--no-plots", "--network", "analytic",
                       "--json", "--out", taken)
    assert code == 0 and err == f"{taken}/ holds another grid's sweep or other outputs: writing to {taken}-2/\n", err
    assert [p.name for p in taken.iterdir()] == ["mine.txt"] and (tmp_path / "sw-2" / "sweep.json").is_file()


# ---- 3. the Kineto readers of scripts/ ---------------------------------------------------------------------------
kernel_gaps = load_script("kineto_kernel_gaps")
call_launches = load_script("kineto_call_launches")


def _trace(tmp_path, text: str):
    path = tmp_path / "t.json"
    path.write_text('{"traceEvents": [' + text + "]}")
    return str(path)


OP = '{"ph": "X", "cat": "cpu_op", "name": "a", "ts": TS, "dur": DUR, "pid": 1, "tid": 1}'


@pytest.mark.parametrize(("ts", "dur", "needle"), [("NaN", "5", "ts is nan"), ("0", "Infinity", "dur is inf"),
                                                   ("-Infinity", "5", "ts is -inf"), ("0", "-3", "dur is -3")])
def test_a_kineto_event_with_a_time_that_is_none_is_refused(tmp_path, ts, dur, needle):
    path = _trace(tmp_path, OP.replace("TS", ts).replace("DUR", dur))
    with pytest.raises(ScenarioError, match=needle):
        kernel_gaps.trace_events(path)


def test_a_kineto_correlation_that_is_no_id_is_refused(tmp_path):
    launch = ('{"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 1, "dur": 2, "pid": 1, '
              '"tid": 1, "args": {"correlation": [1]}}')
    with pytest.raises(ScenarioError, match=r"args.correlation is \[1\], not an id"):
        kernel_gaps.trace_events(_trace(tmp_path, launch))


def test_a_cpu_op_without_a_name_holds_launches_as_any_op():
    ops = [{"ph": "X", "cat": "cpu_op", "ts": 0, "dur": 100, "pid": 1, "tid": 1}]  # no name: a KeyError before
    launches = [{"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": ts, "dur": 2, "pid": 1,
                 "tid": 1, "args": {"correlation": ts}} for ts in (10, 20)]
    intervals, _ = call_launches.measure(ops + launches)
    assert dict(intervals) == {"one call": [10]}


# ---- 4. dp_phase_charges.py: every row and the stretch checked before simulating ---------------------------------
dp_phase_charges = load_script("dp_phase_charges")
ROW = "flagperf-llama3-8b-440-h100-bf16"  # a pp 1 row (tests/unit/test_dp_phase_charges.py)


@pytest.fixture
def no_simulation(monkeypatch):
    refuse_simulation(monkeypatch, dp_phase_charges)


@pytest.mark.parametrize(("argv", "needle"), [
    ([ROW, "--stretch", "inf"], "--stretch: comma-separated factors from 1 to 100"),
    ([ROW, "--stretch", "1e308"], "--stretch: comma-separated factors from 1 to 100"),
    ([ROW, "--stretch", "nan"], "--stretch: comma-separated factors from 1 to 100"),
    (["--stretch", "2", "--stretch", "3", ROW], "--stretch: given twice"),
    ([ROW, "nosuch-row"], "nosuch-row: not a validation row"),
    ([ROW, "megatron-70b-h100"], "parallelism.pp: megatron-70b-h100: pp"),  # a pipelined row after a good one
])
def test_dp_phase_charges_refuses_before_simulating(no_simulation, argv, needle):
    with pytest.raises(ScenarioError, match=needle.replace(".", r"\.")):
        dp_phase_charges.main(argv)


# ---- 5. a FIFO or a device where a file is read ------------------------------------------------------------------
time_limit = load_script("recipe_sweep").time_limit  # a FIFO's open waits for a writer: fail, not hang
accuracy_tables = load_script("accuracy_tables")


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "f.json"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("argv", [("replay", "{f}"), ("laws", "loss-vs-time", "--summary", "{f}", "--tokens", "1e12")])
def test_a_fifo_is_no_input_file(cli, fifo, argv):
    with time_limit(5.0):
        code, _, err = cli(*(a.format(f=fifo) for a in argv))
    assert_one_line(code, err, 2)
    assert f"{fifo}: is a pipe with nothing written to it" in err, err  # round 33 review: refused by what it holds


def test_a_fifo_or_a_device_is_no_validate_output(fifo):
    with time_limit(5.0), pytest.raises(accuracy_tables.InputError, match="is a pipe with nothing written to it"):
        accuracy_tables.load_cases(fifo)
    with pytest.raises(ScenarioError, match="/dev/zero: is not a regular file"):
        kernel_gaps.trace_events("/dev/zero")  # not read: refused by its mode before a byte


# ---- 6. a QKV bias add without a bias ----------------------------------------------------------------------------
@pytest.mark.parametrize("way", ["separate", "epilogue"])
def test_a_qkv_bias_add_without_biases_is_refused(way):
    data = copy.deepcopy(SMALL)
    data["model"] = {"layers": 4, "hidden": 1024, "heads": 16, "vocab": 32000, "bias": False}
    data["training"]["qkv_bias_add"] = way
    with pytest.raises(ScenarioError, match=r"^training\.qkv_bias_add: .*no linear biases"):
        config.from_dict(data)
    data["model"]["bias"] = True  # kept: with biases either way runs
    assert config.from_dict(data).training.qkv_bias_add == way


# ---- 7. accuracy_tables.py writes none of its inputs -------------------------------------------------------------
@pytest.mark.parametrize("option", ["--write-data", "--trend-plot", "--write"])
def test_accuracy_tables_overwrites_no_input(tmp_path, capsys, option):
    case = {"scenario": "megatron-1.7b-h100", "source": "s", "family": "f", "precision": "bf16", "error": 0.01,
            "step_time_s": 1.0}
    cal, ho = tmp_path / "cal.json", tmp_path / "ho.json"
    for path in (cal, ho):
        path.write_text(json.dumps({"cases": [case]}))
    before = ho.read_text()
    assert accuracy_tables.main([str(cal), str(ho), option, str(ho)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{option}: " in err and "is the input" in err, err
    assert ho.read_text() == before
