"""Round 35's review of the robustness changes (docs/calibration/round-35.md, "Round 35: review of the robustness
changes"). Each case failed on main before it:

- ``cluster.topology_options`` was checked when the fabric was built: ``run`` printed the scenario's notes first,
  and a scenario read without a fabric (``config.from_dict``) took a bad option; the scenario validator
  (``config.Cluster``) now asks ``spec.fabric_options.check``;
- ``laws optimal --flop 6`` printed N_opt = 0.12 params and ``laws eval --tokens 1e6`` a loss, unsaid: a warning
  names what lies below the runs the law was fitted on (Hoffmann et al. 2022's abstract: 70M to 16B parameters, 5
  to 500 billion tokens), the number still printed;
- ``accuracy_tables.py`` tabulated an interrupted validate output (``partial: true``) as the whole set;
- a script option of several values given twice (``--only a --only b``) was refused as if it took one value.
"""

from __future__ import annotations

import copy
import json

import pytest
from scripts_loader import load_script

from simcluster.core import script_entry
from simcluster.core.errors import ScenarioError
from simcluster.outcomes import laws
from simcluster.spec import config
from simcluster.studies import validation
from tests.cli.scenario_files import SMALL, assert_one_line, write_scenario


# ---- topology_options at scenario load -----------------------------------------------------------------------
@pytest.mark.parametrize(("options", "field"), [
    ({"protocol": [1]}, "cluster.topology_options.protocol"),
    ({"oversubscription": 4}, "cluster.topology_options.oversubscription"),  # not an option of rail-fat-tree
    ({"radix": 1}, "cluster.topology_options.radix"),
])
def test_a_bad_fabric_option_is_refused_when_the_scenario_is_read(options, field):
    data = copy.deepcopy(SMALL)
    data["cluster"].update(topology="rail-fat-tree", topology_options=options)
    with pytest.raises(ScenarioError) as refused:
        config.from_dict(data)
    assert refused.value.field == field


def test_a_fabric_file_takes_only_routing_when_the_scenario_is_read(tmp_path):
    data = copy.deepcopy(SMALL)
    data["cluster"].update(topology=str(tmp_path / "none.yaml"), topology_options={"radix": 64})
    with pytest.raises(ScenarioError) as refused:  # the file is not read: the option alone is wrong
        config.from_dict(data)
    assert refused.value.field == "cluster.topology_options.radix"
    data["cluster"]["topology_options"] = {"routing": "ecmp"}
    assert config.from_dict(data).cluster.topology_options == {"routing": "ecmp"}


def test_valid_fabric_options_still_load_and_a_bad_one_stops_run_in_one_line(cli, tmp_path):
    data = copy.deepcopy(SMALL)
    data["cluster"].update(topology="rail-fat-tree", topology_options={"routing": "ecmp", "protocol": "ethernet"})
    assert config.from_dict(data).cluster.topology_options["protocol"] == "ethernet"
    data["cluster"]["topology_options"] = {"protocol": "ib"}
    data["parallelism"].update(pp=2, dp=2)  # a pipeline of Megatron-Core's default version: a note at load
    code, out, err = cli("run", write_scenario(tmp_path, data), "--steps", "1", "--network", "analytic",
                         "--out", tmp_path / "r")
    assert_one_line(code, err, 2)
    assert out == "" and err.startswith("error: cluster.topology_options.protocol: expected one of")
    assert not (tmp_path / "r").exists()


def test_a_sweep_of_a_bad_fabric_option_is_refused_before_any_run(cli, tmp_path):
    """``sweep --topology rail-fat-tree:protocol=ib --topology rail-fat-tree`` ran the second fabric and reported
    the first's points failed, exit 0: the option is refused where it is given (``grid.fabrics``)."""
    data = copy.deepcopy(SMALL)
    data["cluster"]["topology"] = "rail-fat-tree"
    code, _, err = cli("sweep", write_scenario(tmp_path, data), "--topology", "rail-fat-tree:protocol=ib",
                       "--topology", "rail-fat-tree", "--network", "analytic", "--jobs", "1", "--no-plots",
                       "--out", tmp_path / "g")
    assert_one_line(code, err, 2)
    assert err.startswith("error: cluster.topology_options.protocol: expected one of infiniband, ethernet")
    assert not (tmp_path / "g").exists()


# ---- the laws below the runs they were fitted on ------------------------------------------------------------------
def test_below_fit_names_what_is_below_the_fitted_runs():
    chinchilla = laws.get("chinchilla")
    # Hoffmann et al. 2022 (abstract): models of 70M to over 16B parameters, 5 to 500 billion tokens
    assert laws.below_fit(chinchilla, 7e7, 5e9) is None
    assert laws.below_fit(chinchilla, 70e9, 1.4e12) is None  # Chinchilla itself: above the fit, the laws' use
    warning = laws.below_fit(chinchilla, 1e9, 1e6)
    assert warning.startswith("D 1e+06 < 5e+09: below") and "N " not in warning.split(":")[0]
    assert laws.below_fit(laws.get("kaplan"), 768, 2.2e7) is None  # Kaplan et al. 2020's smallest runs
    assert laws.below_fit(laws.get("kaplan"), 100, 2.2e7).startswith("N 100 < 768")
    assert laws.below_fit(laws.custom(1.0, 1.0, 1.0, 0.3, 0.3), 1.0, 1.0) is None  # no runs known


def test_laws_optimal_of_six_flop_warns_and_still_prints_its_json(cli):
    code, out, err = cli("laws", "optimal", "--flop", "6", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["params"] < 1.0  # the closed form: C = 6 N D with D/N ~ 70 gives N below one parameter
    assert err.count("\n") == 1 and err.startswith("warning: N 0.12 < 7e+07, D 8.36 < 5e+09: below the smallest")
    code, out, err = cli("laws", "optimal", "--flop", "1e24", "--json")
    assert code == 0 and err == "" and json.loads(out)["params"] > 7e7


# ---- accuracy_tables.py: an interrupted validate output -----------------------------------------------------------
def test_accuracy_tables_refuses_an_interrupted_validate_output(tmp_path, capsys):
    tables = load_script("accuracy_tables")
    row = {"family": "f", "precision": "bf16", "error": 0.01}
    cal, held = tmp_path / "cal.json", tmp_path / "ho.json"
    cal.write_text(json.dumps({"cases": [{"scenario": validation.cases()[0]["scenario"], **row}],
                               "partial": True, "pending": 26}))
    held.write_text(json.dumps({"cases": [{"scenario": validation.held_out_cases()[0]["scenario"], **row}]}))
    assert tables.main([str(cal), str(held)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {cal}: partial: the validate run was interrupted (1 case(s) finished, 26 pending); run "
                   "it again to the end\n")
    cal.write_text(json.dumps({"cases": [{"scenario": validation.cases()[0]["scenario"], **row}], "partial": False}))
    assert tables.main([str(cal), str(held)]) == 0


# ---- a script option of several values given twice ----------------------------------------------------------------
def test_an_option_of_several_values_given_twice_says_how_to_give_them(capsys):
    parser = script_entry.Parser(prog="x.py")
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--layout", action="append", default=[])
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--only", "a", "--only", "b"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == ("x.py: error: --only: given twice; give all its values after one --only "
                                       "(e.g. --only A B)\n")
    args = parser.parse_args(["--only", "a", "b", "--layout", "x", "--layout", "y"])
    assert (args.only, args.layout) == (["a", "b"], ["x", "y"])


# ---- two sweeps of one grid in one folder --------------------------------------------------------------------------
def test_points_another_sweep_claimed_or_finished_are_read_not_run(tmp_path, monkeypatch):
    """Two sweeps of one grid started together both ran every point (round 34's note): a point another sweep has
    claimed (``shards/KEY.claim``) is put off to the end, and a point whose shard another sweep wrote since this one
    looked is read, not run; a claim nobody finishes (a sweep killed) is run at the end, and its claim removed."""
    from simcluster.studies import grid, sweep, workers

    base = config.rebuildable(config.from_dict(copy.deepcopy(SMALL)))
    tasks = grid.grid(base, None, vary={"training.micro_batch_size": [1, 2, 4], "parallelism.tp": [1, 2]})
    first = sweep.run_grid(tasks, tmp_path / "a", workers.InlineExecutor())  # what the other sweep computes
    other, mine = tmp_path / "a" / "shards", tmp_path / "b" / "shards"
    mine.mkdir(parents=True)
    for task in (tasks[0], tasks[2]):  # claimed by the other sweep; only tasks[0] will it finish
        (mine / f"{task.key}.claim").touch()
    ran, real = [], sweep._simulate

    def simulate(scenario, network, steps):
        ran.append((scenario.training.micro_batch_size, scenario.parallelism.tp))
        if len(ran) == 1:  # meanwhile the other sweep finishes tasks[0] (its claim removed) and tasks[3]
            for task in (tasks[0], tasks[3]):
                (mine / f"{task.key}.json").write_bytes((other / f"{task.key}.json").read_bytes())
            (mine / f"{tasks[0].key}.claim").unlink()
        return real(scenario, network, steps)

    monkeypatch.setattr(sweep, "_simulate", simulate)
    run = sweep.run_grid(tasks, tmp_path / "b", workers.InlineExecutor())
    point = {task.key: (task.params["training.micro_batch_size"], task.params["parallelism.tp"]) for task in tasks}
    assert ran == [point[tasks[i].key] for i in (1, 4, 5, 2)]  # the claim nobody finished last
    assert sorted(run.reused) == sorted([tasks[0].key, tasks[3].key])
    assert [s["summary"]["step_time_s"] for s in run.summaries] == \
        [s["summary"]["step_time_s"] for s in first.summaries]
    assert sorted(path.name for path in mine.iterdir()) == sorted(f"{task.key}.json" for task in tasks)


# ---- a simcluster option taking one value given twice --------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ("laws", "eval", "--params", "1e9", "--params", "2e9", "--tokens", "1e10"),  # evaluated 2e9 unsaid
    ("laws", "eval", "--params", "1e9", "--tokens", "1e10", "--tokens=2e10"),
    ("validate", "--only", "megatron-1.7b", "--only", "fmsfsdp"),
])
def test_a_cli_option_taking_one_value_given_twice_is_refused(cli, argv):
    code, out, err = cli(*argv)
    assert_one_line(code, err, 2)
    assert out == "" and err.endswith(": given twice; which value is meant?\n") and err.startswith("error: --")


def test_cli_options_that_add_up_and_switches_stay_repeatable(cli):
    code, out, _ = cli("laws", "eval", "--params", "1e9", "--tokens", "1e10", "--json", "--json")
    assert code == 0 and json.loads(out)["params"] == 1e9
    code, _, err = cli("sweep", "nonexistent.yaml", "--vary", "parallelism.tp=1,2", "--vary", "training.seq_len=1024")
    # --vary is repeatable: refused for the missing file, not the option (round 37 test audit: "given twice" absent
    # alone passed on any other refusal, or none)
    assert code == 2 and err.startswith("error: SCENARIO: no file 'nonexistent.yaml'") and "given twice" not in err
