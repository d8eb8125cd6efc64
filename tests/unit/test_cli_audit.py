"""Round 20's audit of every command as a user runs it: one test per defect found (docs/calibration/round-20.md, "Round
20: every command as a user runs it"). Each fails without its fix; all run in process, in a few seconds in all."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import typer.main

from simcluster.cli import outputs as cli_outputs
from simcluster.cli.app import app as typer_app
from simcluster.core import inputs
from simcluster.core.errors import ScenarioError
from simcluster.studies import grid
from simcluster.studies import replay as replay_study

DATA = Path(__file__).parent.parent / "data"


def _one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


# ---- a key written twice in a scenario -------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["a: 1\na: 2\n", "t: {seq_len: 8192, seq_len: 4096}\n",
                                  "x:\n  y: 1\n  z: 2\n  y: 3\n"])
def test_a_key_written_twice_is_refused_naming_it(text):
    """PyYAML keeps the last of two equal keys unsaid: a scenario with seq_len twice ran at the second."""
    with pytest.raises(ScenarioError, match="written twice"):
        inputs.parse_yaml(text, "scenario.yaml")


def test_keys_merged_in_may_still_be_overridden():
    text = "base: &b {tp: 1, pp: 1}\nx:\n  <<: *b\n  tp: 2\n"
    assert inputs.parse_yaml(text, "s.yaml")["x"] == {"tp": 2, "pp": 1}


def test_run_refuses_a_scenario_with_a_key_twice(cli, write_scenario, small_scenario, tmp_path):
    import yaml

    text = yaml.safe_dump(small_scenario) + "name: other\n"
    code, _, err = cli("run", write_scenario(text), "--out", tmp_path / "out")
    _one_line(code, err, "'name'", "twice")
    assert not (tmp_path / "out").exists()


def test_an_empty_scenario_name_is_refused_as_given(cli):
    """'' was read as Path('.'), the current folder: the error spoke of '.', which the user never wrote."""
    code, _, err = cli("run", "")
    _one_line(code, err, "SCENARIO", "got ''")


# ---- --out naming the current folder, its parent or the root ---------------------------------------------------
def test_out_dot_holding_files_goes_to_a_numbered_sibling(tmp_path, monkeypatch):
    """`--out .` in a folder of the user's files: Path('.').with_name raised ValueError (a traceback, exit 1) in
    run, compare, replay, laws plot and sweep."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.txt").write_text("mine")
    monkeypatch.chdir(work)
    assert cli_outputs.unique_dir(Path(".")) == tmp_path / "work-2"
    assert cli_outputs.unique_dir(Path("..")) == tmp_path.parent / f"{tmp_path.name}-2"  # not './..-2'
    assert cli_outputs.named(Path(".")) == work
    with pytest.raises(ScenarioError, match="root folder"):
        cli_outputs.unique_dir(Path("/"))


def test_output_dir_of_dot_holding_files_keeps_them(tmp_path, monkeypatch, capsys):
    """What run, compare, replay and the laws commands call first: the user's folder is left alone."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.txt").write_text("mine")
    monkeypatch.chdir(work)
    chosen = cli_outputs.output_dir(Path("."))
    assert chosen == tmp_path / "work-2"
    assert capsys.readouterr().err == ""  # said when the folder is made (round 32: not before a later refusal)
    with cli_outputs.fresh_folder(chosen):
        pass
    assert "writing to" in capsys.readouterr().err and [p.name for p in work.iterdir()] == ["mine.txt"]


@pytest.mark.parametrize("target", ["loop", "/nonexistent/x"])
def test_out_a_dangling_link_is_refused_before_the_run(tmp_path, target):
    """`--out` a dangling symbolic link (or a loop) passed the check and failed at mkdir, after the simulation."""
    link = tmp_path / "loop"
    link.symlink_to(target)
    with pytest.raises(ScenarioError, match="symbolic link to nothing"):
        cli_outputs.output_dir(link)


def test_replay_default_folder_of_a_trace_named_with_a_newline_is_one_line():
    """runs/replay-we\\nird/: the folder's name, and the line saying where the files went, split in two."""
    from simcluster.cli import replay as replay_cli

    assert replay_cli._trace_name([Path("we\nird.rank0.json.gz")]) == "we_ird"
    assert len(replay_cli._trace_name([Path("x" * 250 + ".json")])) == replay_cli.MAX_TRACE_NAME


# ---- sweep --vary written wrong ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("item", "needle"), [
    ("parallelism.tp=4,,8", "empty value"), ("parallelism.tp=1,2,", "empty value"),
    ("parallelism.tp=4,4", "repeats the value 4"), ("parallelism.tp=[1,2],[1,2]", "repeats"),
    ("nosuch.field=1", "not a scenario field"), ("parallelism.nosuch=1", "not a scenario field"),
    ("model.nosuch=1", "not a scenario field"), ("reliability.nosuch=1", "not a scenario field"),
    ("parallelism..tp=1", "empty part"),
])
def test_bad_vary_is_refused_naming_vary(item, needle):
    """Before: an empty value was dropped silently, a repeated one failed after the folder was made, an unknown
    field failed every run (exit 2 only after the whole grid, leaving folders of failed shards)."""
    with pytest.raises(ScenarioError, match=needle) as err:
        grid.parse_vary([item])
    assert err.value.field == "--vary"


@pytest.mark.parametrize("text", ["64,...,8", "64,...,64"])
def test_a_doubling_series_must_run_upwards(text):
    """'64,...,8' was the grid [64, 8]; '64,...,64' said the counts repeat."""
    with pytest.raises(ScenarioError, match="runs up from 64"):
        grid.parse_gpus(text)


def test_a_value_of_bytes_that_are_not_utf8_is_a_scenario_error():
    """`--vary tp=$'\\xff'` reached libyaml as a lone surrogate: UnicodeEncodeError, a traceback, exit 1."""
    with pytest.raises(ScenarioError, match="not UTF-8"):
        inputs.parse_yaml("\udcff", "value")
    assert grid.parse_vary(["parallelism.tp=\udcff"]) == {"parallelism.tp": ["\udcff"]}  # then refused as a count


def test_a_fabric_option_given_twice_is_refused():
    """`leaf-spine:oversubscription=2,oversubscription=4` ran one of the two under a label naming both; a repeated
    `--option NAME.key=...` took the last unsaid."""
    with pytest.raises(ScenarioError, match="given twice"):
        grid.parse_fabric("leaf-spine:oversubscription=2,oversubscription=4")
    with pytest.raises(ScenarioError, match="given twice") as err:
        grid.fabrics(["leaf-spine"], ["leaf-spine.oversubscription=2", "leaf-spine.oversubscription=4"], {})
    assert err.value.field == "--option"


@pytest.mark.parametrize("item", ["model.layers=2,4", "model.moe.experts=8,16", "variability=measured",
                                  "reliability.checkpoint_interval=1h", "economics.pue=1.1,1.2", "network=flow",
                                  "cluster.gpu.tdp=700 W"])
def test_vary_keeps_accepting_every_section(item):
    assert grid.parse_vary([item])


def test_vary_accepts_values_that_differ_only_in_type():
    assert grid.parse_vary(["parallelism.sequence_parallel=1,true"]) == {"parallelism.sequence_parallel": [1, True]}


def test_a_refused_vary_leaves_no_folder(cli, write_scenario, small_scenario, tmp_path):
    code, _, err = cli("sweep", write_scenario(small_scenario), "--vary", "parallelism.tp=2,2", "--jobs", "1",
                       "--no-plots", "--out", tmp_path / "sw")
    _one_line(code, err, "--vary")
    assert not (tmp_path / "sw").exists()


def test_a_scheduler_that_cannot_be_reached_leaves_no_folder_and_no_wait(cli, write_scenario, small_scenario,
                                                                          tmp_path):
    """Before: the folder (grid.json) was made before connecting, and the half-started Dask client's __del__
    waited 20 s, then printed a traceback after the error line."""
    pytest.importorskip("dask.distributed")
    start = time.monotonic()
    code, _, err = cli("sweep", write_scenario(small_scenario), "--scheduler", "nohost", "--out", tmp_path / "sw")
    _one_line(code, err, "--scheduler")
    assert not (tmp_path / "sw").exists() and time.monotonic() - start < 10


# ---- options named as the user wrote them, checked before the run ----------------------------------------------
@pytest.mark.parametrize(("args", "option"), [
    (["--start-year", "1"], "--start-year"), (["--years", "0"], "--years"), (["--gamma", "-1"], "--gamma"),
])
def test_laws_project_errors_name_the_option(cli, args, option):
    code, _, err = cli("laws", "project", *args)
    _one_line(code, err, f"error: {option}:")


@pytest.mark.parametrize(("args", "option"), [
    (["--goodput", "0"], "--goodput"), (["--goodput", "1.5"], "--goodput"),
    (["--busy-fraction", "2"], "--busy-fraction"), (["--busy-fraction", "nan"], "--busy-fraction"),
])
def test_loss_vs_time_fractions_are_refused_before_the_run(cli, write_scenario, small_scenario, tmp_path,
                                                           monkeypatch, args, option):
    """They were checked by the economics after the simulation, naming 'goodput' / 'busy_fraction'."""
    from simcluster.cli import laws as laws_cli

    monkeypatch.setattr(laws_cli, "_summary", lambda *a: pytest.fail("simulated before refusing"))
    code, _, err = cli("laws", "loss-vs-time", write_scenario(small_scenario), "--tokens", "1e12", *args,
                       "--out", tmp_path / "o")
    _one_line(code, err, f"error: {option}:")


@pytest.mark.parametrize(("fit", "needle"), [
    ("E=1.69,A=406.4,B=410.7,alpha=0.34,beta=0.28,E=2", "E is given twice"),
    ("E=1e308,A=406.4,B=410.7,alpha=0.34,beta=0.28", "irreducible loss"),
])
def test_laws_custom_fit_is_read_whole(cli, fit, needle):
    """A name given twice took the last value unsaid; E=1e308 printed a loss of 309 digits."""
    code, _, err = cli("laws", "eval", "--law", "custom", "--fit", fit, "--params", "1e9", "--tokens", "1e10")
    _one_line(code, err, "--fit", needle)


def test_collective_topology_option_error_names_it_once(cli):
    """It read `--topology: --topology-option: expected KEY=VALUE, got 'foo'`."""
    code, _, err = cli("collective", "--topology-option", "foo")
    _one_line(code, err)
    assert err.startswith("error: --topology-option: expected KEY=VALUE"), err


def test_validate_variability_key_given_twice_is_refused():
    """`seed=1,seed=2` ran with seed 2 unsaid; 'measured,seed=2' still replaces the measured seed."""
    from simcluster.studies import validation

    with pytest.raises(ScenarioError, match="seed is given twice"):
        validation.parse_variability("seed=1,seed=2")
    assert validation.parse_variability("measured,seed=2").seed == 2


def test_collective_topology_option_given_twice_is_refused(cli):
    code, _, err = cli("collective", "--topology", "leaf-spine", "--topology-option", "oversubscription=2",
                       "--topology-option", "oversubscription=4")
    _one_line(code, err, "--topology-option", "given twice")


def test_validate_only_empty_is_refused(cli):
    """'' is in every name: `--only "$UNSET"` ran the whole set (minutes) instead of saying so."""
    code, _, err = cli("validate", "--only", "")
    _one_line(code, err, "--only")


@pytest.mark.parametrize("rate", ["0 Gb/s", "-5 Gb/s", "1e9 Tb/s"])
def test_replay_nic_rate_is_checked_for_sign_and_range(rate):
    """'0 Gb/s' reached the NIC model: a pydantic ValidationError traceback, exit 1."""
    with pytest.raises(ScenarioError) as err:
        replay_study.nic_from_text(rate, "connectx-7")
    assert err.value.field == "--nic"


@pytest.mark.filterwarnings("error::UserWarning")
def test_replay_of_a_zero_length_trace_draws_without_warnings(cli, tmp_path):
    """One rank of a Chakra allreduce alone replays in 0 s: matplotlib warned twice (identical axis limits),
    four lines of stderr after the report."""
    code, _, err = cli("replay", DATA / "chakra" / "all_reduce.0.et", "--out", tmp_path / "r")
    assert code == 0, err
    assert (tmp_path / "r" / "timeline.png").is_file()


def test_every_option_of_every_command_has_a_help_line():
    """`laws project --start-year` had none."""
    root = typer.main.get_command(typer_app)
    missing = []

    def walk(command, path: str) -> None:
        for param in command.params:  # typer's own click: options and arguments both carry ``help``
            if not getattr(param, "help", None):
                missing.append(f"{path} {param.opts[0]}")
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    import simcluster.cli  # noqa: F401 - registers every command

    walk(root, "simcluster")
    assert missing == []
