"""Round 35: the commands attacked again (docs/calibration/round-35.md, "Round 35: the commands attacked again"). Each
case failed before its fix:

- a script's option taking a value given twice (``fit_host_overheads.py --structure gap --structure fill``) ran
  the last one unsaid: ``script_entry.Parser`` refuses the second;
- ``accuracy_tables.py HELD_OUT.json CALIBRATION.json`` (swapped, or one file twice) tabulated held-out runs as the
  calibration set: refused, naming the first row of the other set;
- ``collective --gpus 1`` printed 0 ns and an algbw of ``inf EB/s`` (``sendrecv``: an error blaming ``--group``);
- a file that cannot replace its target (``results.csv`` a folder) was named by its temporary name;
- a sweep whose ``shards`` was a file said "failed (File exists)" without the file;
- ``run --list --json`` printed the tables, not JSON (every other option of a run ignored the same way);
- ``compare --law`` / ``sweep --law`` offered "custom E/A/B/alpha/beta" and refused it;
- ``validate --variability measured,measured`` was taken; ``validate --only ROW`` of a held-out row did not say so.
"""

from __future__ import annotations

import copy
import json
import signal

import pytest
from scripts_loader import load_script

from simcluster.core import outputs, script_entry
from simcluster.core.errors import ScenarioError
from simcluster.studies import validation
from tests.cli.scenario_files import SMALL, assert_one_line, write_scenario


# ---- a script's option given twice ------------------------------------------------------------------------------
def test_a_script_option_taking_a_value_is_refused_when_given_twice(capsys):
    parser = script_entry.Parser(prog="x.py")
    parser.add_argument("--structure", choices=["gap", "fill"], default="gap")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--vary", action="append")
    parser.add_argument("row", nargs="*")
    for argv in (["--structure", "gap", "--structure", "fill"], ["--structure=gap", "--struct", "gap"]):
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(argv)
        assert stop.value.code == 2
        assert capsys.readouterr().err == "x.py: error: --structure: given twice; which value is meant?\n"
    # once each, switches and appended options repeated, and a second parse of the same parser: as argparse
    args = parser.parse_args(["--structure", "fill", "--write", "--write", "--vary", "a", "--vary", "b", "r1", "r2"])
    assert (args.structure, args.write, args.vary, args.row) == ("fill", True, ["a", "b"], ["r1", "r2"])
    assert parser.parse_args(["--structure", "fill"]).structure == "fill"
    assert parser.parse_args([]).structure == "gap"


# ---- accuracy_tables.py: the files in the wrong order ---------------------------------------------------------
@pytest.fixture(scope="module")
def tables():
    return load_script("accuracy_tables")


def _validate_output(path, scenario: str):
    path.write_text(json.dumps({"cases": [{"scenario": scenario, "family": "f", "precision": "bf16",
                                           "error": 0.01}]}))
    return str(path)


def test_accuracy_tables_refuses_the_files_swapped_or_one_given_twice(tables, tmp_path, capsys):
    calibration_row = validation.cases()[0]["scenario"]
    held_out_row = validation.held_out_cases()[0]["scenario"]
    cal = _validate_output(tmp_path / "cal.json", calibration_row)
    held = _validate_output(tmp_path / "ho.json", held_out_row)
    older = _validate_output(tmp_path / "old.json", "a-row-since-removed")
    for argv, named in (([held, cal], held), ([cal, cal], cal), ([held, held], held)):
        assert tables.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {named}: cases[0].scenario ") and "wrong order, or one given twice" in err
    assert tables.main([cal, held]) == 0 and tables.main([older, held]) == 0  # a row of neither set passes
    assert "Calibration per series" in capsys.readouterr().out


# ---- collective of one GPU -------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["allreduce", "sendrecv"])
def test_a_collective_of_one_gpu_is_refused(cli, op):
    code, out, err = cli("collective", "--gpus", "1", "--op", op, "--max-bytes", "1K", "--network", "analytic")
    assert_one_line(code, err, 2)
    assert err.startswith("error: --gpus: a collective needs at least 2 GPUs") and out == ""
    code, out, _ = cli("collective", "--gpus", "2", "--op", op, "--max-bytes", "8", "--json", "--network", "analytic")
    row = json.loads(out)[0]
    assert code == 0 and row["time_s"] > 0 and row["algbw_bytes_per_s"] == pytest.approx(8 / row["time_s"])


# ---- files written: the name in an error ------------------------------------------------------------------------
def test_a_file_that_cannot_replace_its_target_is_named_by_the_target(tmp_path):
    target = tmp_path / "results.csv"
    target.mkdir()
    with pytest.raises(OSError) as caught:
        outputs.write_text(target, "a,b\n")
    assert caught.value.filename == str(target) and caught.value.filename2 is None
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]  # the temporary file removed


def test_a_sweep_folder_whose_shards_is_a_file_names_it(cli, tmp_path):
    scenario = write_scenario(tmp_path, copy.deepcopy(SMALL))
    argv = ("sweep", scenario, "--vary", "training.micro_batch_size=1,2", "--jobs", "1", "--network", "analytic",
            "--no-plots", "--out", tmp_path / "g")
    assert cli(*argv)[0] == 0
    shards = tmp_path / "g" / "shards"
    for shard in shards.iterdir():
        shard.unlink()
    shards.rmdir()
    shards.write_text("not a folder\n")
    code, _, err = cli(*argv)
    assert_one_line(code, err, 2)
    assert f"({shards}: File exists)" in err and shards.read_text() == "not a folder\n"


# ---- run --list with an option of a run ------------------------------------------------------------------------
@pytest.mark.parametrize("option", [("--json",), ("--out", "x"), ("--steps", "3"), ("--expand",), ("--plot",),
                                    ("--samples", "2"), ("--network", "flow")])
def test_run_list_refuses_the_options_of_a_run(cli, option, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("run", "--list", *option)
    assert_one_line(code, err, 2)
    assert err.startswith(f"error: {option[0]}: is an option of a run; --list runs nothing") and out == ""
    assert list(tmp_path.iterdir()) == []


# ---- --law: custom offered only where it is taken ---------------------------------------------------------------
def test_law_errors_offer_custom_only_where_it_is_taken(cli, tmp_path):
    scenario = write_scenario(tmp_path, copy.deepcopy(SMALL))
    code, _, err = cli("compare", scenario, "--law", "custom", "--network", "analytic", "--out", tmp_path / "c")
    assert_one_line(code, err, 2)
    assert "known: chinchilla, chinchilla-refit, kaplan)" in err and "custom (" not in err
    code, _, err = cli("laws", "eval", "--law", "chinchila", "--params", "1e9", "--tokens", "1e10")
    assert_one_line(code, err, 2)
    assert "or custom (with --fit" in err
    assert not (tmp_path / "c").exists()


# ---- validate -------------------------------------------------------------------------------------------------
def test_variability_measured_given_twice_is_refused():
    with pytest.raises(ScenarioError, match="measured is given twice") as caught:
        validation.parse_variability("measured,seed=1,measured")
    assert caught.value.field == "--variability"
    assert validation.parse_variability("measured,seed=1").seed == 1


def test_validate_only_of_a_row_of_the_other_set_says_so(cli):
    held_out_row = validation.held_out_cases()[0]["scenario"]
    code, out, err = cli("validate", "--only", held_out_row)
    assert_one_line(code, err, 2)
    assert err.rstrip().endswith("held-out case(s) do: add --held-out") and out == ""
    code, _, err = cli("validate", "--held-out", "--only", validation.cases()[0]["scenario"])
    assert_one_line(code, err, 2)
    assert err.rstrip().endswith("calibration case(s) do: leave out --held-out")
    code, _, err = cli("validate", "--only", "no-such-row-anywhere")
    assert err == "error: --only: no calibration case's scenario contains 'no-such-row-anywhere'\n" and code == 2


def test_validate_json_interrupted_before_any_case_still_prints_its_object(cli, monkeypatch):
    """SIGINT during the first case of ``validate --json``: stdout was empty (a JSON reader failed on it); now the
    object with no case, ``partial`` and every case ``pending``, and exit 130."""
    from simcluster.cli.app import Interrupted

    def interrupted(*_args, **_kwargs):
        raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(validation, "run_case", interrupted)
    code, out, err = cli("validate", "--json", "--only", "megatron", "--jobs", "1")  # run_case patched here
    report = json.loads(out)
    assert code == 130 and err == "interrupted by SIGINT\n"
    assert report["cases"] == [] and report["partial"] is True
    assert report["pending"] == sum("megatron" in c["scenario"] for c in validation.cases()) > 0


# ---- a fabric option of the wrong type ----------------------------------------------------------------------------
@pytest.mark.parametrize("value", [[1], {"a": 1}])
def test_a_fabric_protocol_that_is_not_text_is_refused(cli, tmp_path, value):
    """``topology_options: {protocol: [1]}`` was a TypeError traceback when the fabric was built (``in`` a dict)."""
    data = copy.deepcopy(SMALL)
    data["cluster"].update(topology="rail-fat-tree", topology_options={"protocol": value})
    code, _, err = cli("run", write_scenario(tmp_path, data), "--steps", "1", "--network", "analytic",
                       "--out", tmp_path / "r")
    assert_one_line(code, err, 2)
    assert err.startswith("error: cluster.topology_options.protocol: expected one of infiniband, ethernet")
    code, _, err = cli("collective", "--topology-option", f"protocol={json.dumps(value)}", "--max-bytes", "8")
    assert_one_line(code, err, 2)
    assert err.startswith("error: --topology-option: protocol: expected one of")


# ---- run --expand's progress when a pass is simulated again ------------------------------------------------------
def test_the_progress_of_a_run_simulated_again_stays_within_its_total(cli, tmp_path, monkeypatch):
    """An expanded run whose merged pass is not proven exact is simulated again from step 0 (engine.run_expanded):
    the bar advanced past its total (``2/1``, round 34 review); it now shows the step the run is at."""
    from simcluster.cli import run as run_cli
    from simcluster.engine import simulation
    from simcluster.engine.merge import NO_MERGE

    seen = []

    class Bar:  # rich's Progress, recording where the bar is set
        def __init__(self, *_args, **_kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *_exc):
            return False

        def add_task(self, _description, total):
            seen.append(("total", total))
            return 0

        def update(self, _task, completed):
            seen.append(("at", completed))

    def twice(build, steps=None, on_step=None):  # a merged pass that did not stand, then the reference pass
        build(NO_MERGE).run(steps, on_step)
        return build(NO_MERGE).run(steps, on_step)

    monkeypatch.setattr(run_cli, "Progress", Bar)
    monkeypatch.setattr(simulation, "run_expanded", twice)
    code, _, err = cli("run", write_scenario(tmp_path, copy.deepcopy(SMALL)), "--expand", "--steps", "2",
                       "--samples", "2", "--network", "analytic", "--out", tmp_path / "r")
    assert code == 0, err
    # two samples of two steps, each run twice: 1 2 1 2 for the first sample, then 3 4 3 4; never past 4
    assert seen == [("total", 4), ("at", 1), ("at", 2), ("at", 1), ("at", 2), ("at", 3), ("at", 4), ("at", 3),
                    ("at", 4)]


def test_an_option_of_a_group_given_twice_is_refused_too(capsys):
    parser = script_entry.Parser(prog="x.py")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--gpus")
    which.add_argument("--nodes")
    with pytest.raises(SystemExit):
        parser.parse_args(["--gpus", "8", "--gpus", "16"])
    assert capsys.readouterr().err == "x.py: error: --gpus: given twice; which value is meant?\n"
    assert parser.parse_args(["--nodes", "2"]).nodes == "2"
