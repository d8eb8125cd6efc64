"""A user's text reaches the terminal as written, on every command: never read as rich markup (``[red]``, ``[/]``)
or as an emoji code (``:smile:``), in tables, lines, spinners and progress bars (``simcluster.cli.terminal``).

Round 36 escaped each print that carried a name or a path; these cases run every command that prints a user's text
with a terminal forced (``FORCE_COLOR``: the spinners and progress bars draw, as on a person's screen). On main
before this change, a scenario named ``x[red]y[bold]z:smile:w`` printed as ``x[red]y[bold]z😄w`` in every table
title, as ``xyz😄w`` in ``run``'s progress bar, and the job spinner of a jobs file, the progress bar of ``sweep``
and validate's read markup unescaped.
"""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml

from tests.cli.scenario_files import SMALL, write_scenario

# a scenario name may not hold '/' (config's name pattern); a path may
NAME = "x[red]y[bold]z:smile:w"
FOLDER = "o[/]5[bold]:smile:"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def terminal_cli(cli, monkeypatch):
    """``cli`` as on a colour terminal 100 columns wide: exit code, stdout and stderr without the terminal's escape
    codes and each run of white space one space (tables wrap long titles), and both as printed."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "100")

    def invoke(*args):
        code, out, err = cli(*args)
        return code, " ".join(ANSI.sub("", out).split()), " ".join(ANSI.sub("", err).split()), out + err

    return invoke


def _named(tmp_path, name: str = NAME, file: str = "s.yaml"):
    data = copy.deepcopy(SMALL)
    data["name"] = name
    return write_scenario(tmp_path, data, file)


def test_run_prints_the_name_and_the_folder_as_written(terminal_cli, tmp_path):
    code, out, err, _ = terminal_cli("run", _named(tmp_path), "--steps", "1", "--network", "analytic",
                                     "--out", tmp_path / FOLDER)
    assert code == 0, err
    assert f"{NAME}: 8 x h100-sxm on nvswitch-node" in out                 # the table's title
    assert f"to {tmp_path}/{FOLDER}/" in out
    assert f"simulating {NAME} (8 GPUs), steps" in out                    # the progress bar (transient)
    assert "😄" not in out + err


def test_run_json_is_plain_json_with_the_name(terminal_cli, cli, tmp_path):
    code, out, err = cli("run", _named(tmp_path), "--steps", "1", "--network", "analytic", "--json",
                         "--out", tmp_path / FOLDER)
    assert code == 0, err
    report = json.loads(out)  # no escape codes, no styling, even on a colour terminal (the bar went to stderr)
    assert f"simulating {NAME} (8 GPUs), steps" in ANSI.sub("", err)
    assert report["name"] == NAME and report["out_dir"] == str(tmp_path / FOLDER)


def test_a_jobs_files_name_as_written(terminal_cli, tmp_path):
    jobs = {"name": NAME, "cluster": SMALL["cluster"] | {"nodes": 2, "topology": "leaf-spine"},
            "jobs": [{"name": f"j{i}", "model": "gpt3-1.3b", "training": SMALL["training"],
                      "parallelism": {"tp": 2, "pp": 1, "dp": 4}, "placement": {"first_node": i}}
                     for i in range(2)]}
    path = tmp_path / "jobs.yaml"
    path.write_text(yaml.safe_dump(jobs, sort_keys=False))
    code, out, err, _ = terminal_cli("run", path, "--steps", "1", "--network", "analytic",
                                     "--out", tmp_path / FOLDER)
    assert code == 0, err
    assert f"{NAME}: 2 jobs on 16 x h100-sxm" in out
    assert f"to {tmp_path}/{FOLDER}/" in out


def test_compare_names_fabric_files_as_written(terminal_cli, tmp_path):
    (tmp_path / "q[").mkdir()
    fabric = tmp_path / "q[" / "]f.yaml"
    fabric.write_text("nodes: 1\n")  # a bad fabric file: its run fails, named in red, the good fabric's runs
    code, out, err, raw = terminal_cli("compare", _named(tmp_path), "--topology", fabric, "--topology",
                                       "nvswitch-node", "--network", "analytic", "--out", tmp_path / FOLDER)
    assert code == 0, err
    assert f"simulating {fabric} ..." in err                                # the spinner
    assert f"failed {fabric}: {fabric}:" in err
    assert "\x1b[31mfailed\x1b[0m" in raw                                  # the CLI's own style still rendered
    assert f"to {tmp_path}/{FOLDER}/" in out


def test_sweep_progress_failures_and_series_as_written(terminal_cli, tmp_path):
    code, out, err, _ = terminal_cli("sweep", _named(tmp_path), "--network", "analytic", "--gpus", "8",
                                     "--vary", "parallelism.tp=2,[red]x[/]", "--out", tmp_path / FOLDER)
    assert code == 0, err
    assert "tp=[red]x[/]" in out and "1 failed run(s)" in out               # the failures table
    assert f"to {tmp_path}/{FOLDER}/" in out


def test_replay_folder_as_written(terminal_cli, tmp_path):
    from tests.cli.test_round36_robustness import CHAKRA

    code, out, err, _ = terminal_cli("replay", *CHAKRA, "--network", "analytic", "--out", tmp_path / FOLDER)
    assert code == 0, err
    assert f"to {tmp_path}/{FOLDER}/" in out


def test_collective_fabric_file_as_written(terminal_cli, tmp_path):
    (tmp_path / "q[").mkdir()
    fabric = tmp_path / "q[" / "]f[bold]:smile:.yaml"
    from pathlib import Path
    bundled = Path(__file__).resolve().parents[2] / "topologies" / "two-servers-one-switch.yaml"
    fabric.write_text(bundled.read_text().replace("name: two-servers-one-switch", "name: 't[red]w:smile:'"))
    code, out, err, _ = terminal_cli("collective", "--topology", fabric, "--gpus", "8", "--gpus-per-node", "4",
                                     "--max-bytes", "1K")
    assert code == 0, err
    assert "t[red]w:smile:" in out


def test_laws_project_folder_as_written(terminal_cli, tmp_path):
    code, out, err, _ = terminal_cli("laws", "project", "--out", tmp_path / FOLDER)
    assert code == 0, err
    assert f"{tmp_path}/{FOLDER}/" in out


def test_laws_loss_vs_time_title_as_written(terminal_cli, tmp_path):
    code, out, err, _ = terminal_cli("laws", "loss-vs-time", _named(tmp_path), "--network", "analytic",
                                     "--target-loss", "3", "--out", tmp_path / FOLDER)
    assert code == 0, err
    assert f"{NAME}: to loss 3.0000" in out
    assert f"to {tmp_path}/{FOLDER}/" in out


@pytest.mark.parametrize("command", ["run", "compare", "sweep", "replay", "laws loss-vs-time"])
def test_a_bad_option_beside_a_bracketed_folder_is_one_plain_line(cli, tmp_path, command):
    """typer's own error path (a value click refuses) with ``[/]`` in another option's value: one line, as
    written, no rich markup error."""
    code, out, err = cli(*command.split(), "--out", tmp_path / FOLDER, "--bogus[/]")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("error: No such option: --bogus[/]"), err


def test_the_cli_builds_its_consoles_in_one_place():
    """Every console of the CLI is a ``terminal.Terminal`` and its styles are ``Text`` styles: a plain ``Console(``,
    rich's ``track`` (its description column reads markup), ``rich.markup`` or a markup string in a module of the
    CLI would bring the hole back wherever it prints a user's text."""
    from pathlib import Path

    import simcluster.cli

    banned = re.compile(r"\bConsole\(|rich\.markup|(?<![.\w])track\(|\"\[/?(bold|red|yellow|green|dim|progress)")
    found = [f"{path.name}:{number}: {line.strip()}"
             for path in sorted(Path(simcluster.cli.__file__).parent.glob("*.py")) if path.name != "terminal.py"
             for number, line in enumerate(path.read_text().splitlines(), start=1) if banned.search(line)]
    assert not found, found
