"""One default scaling law everywhere (issue 18: `laws loss-vs-time` and `laws project` used another law than
`compare` and `sweep`): every command that turns tokens into loss uses ``laws.DEFAULT_LAW`` unless given --law."""

import inspect
import json

import typer.core
import typer.main

from simcluster.cli import app
from simcluster.outcomes import economics, laws, projection
from simcluster.studies import sweep
from tests.cli.test_help import COMMANDS


def test_every_law_option_defaults_to_the_one_default_law():
    with_law = {" ".join(path): command for path, command in COMMANDS
                if any(isinstance(p, typer.core.TyperOption) and "--law" in p.opts for p in command.params)}
    assert {"compare", "sweep", "laws loss-vs-time", "laws project", "laws eval", "laws optimal"} <= set(with_law)
    for name, command in with_law.items():
        option = next(p for p in command.params if "--law" in getattr(p, "opts", ()))
        # None: the command reads its default further down (laws project: projection.defaults)
        assert option.default in (laws.DEFAULT_LAW, None), name


def test_library_defaults_are_the_same_law():
    assert sweep.DEFAULT_LAW == laws.DEFAULT_LAW
    assert inspect.signature(economics.time_to_target).parameters["law"].default == laws.DEFAULT_LAW
    assert inspect.signature(sweep.table).parameters["law"].default == laws.DEFAULT_LAW
    assert projection.defaults().law == laws.DEFAULT_LAW


def test_projection_uses_the_default_law_unless_told(cli):
    code, stdout, _ = cli("laws", "project", "--json")
    assert code == 0 and json.loads(stdout)["inputs"]["law"] == laws.DEFAULT_LAW
    code, stdout, _ = cli("laws", "project", "--json", "--law", "kaplan")
    assert code == 0 and json.loads(stdout)["inputs"]["law"] == "kaplan"


def test_loss_vs_time_uses_the_default_law(cli, tmp_path):
    from simcluster import simulate
    from simcluster.spec import config

    summary_file = tmp_path / "summary.json"
    summary_file.write_text(json.dumps(simulate(config.load(None), network="analytic").summary))
    code, stdout, _ = cli("laws", "loss-vs-time", "--summary", summary_file, "--target-loss", "2.0", "--json")
    assert code == 0 and json.loads(stdout)["law"] == laws.DEFAULT_LAW


def test_the_app_is_the_one_the_help_tests_walk():
    assert typer.main.get_command(app).name in (None, "simcluster")
