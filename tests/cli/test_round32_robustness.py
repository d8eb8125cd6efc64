"""Round 32: round 31's additions and every command attacked (docs/calibration/round-32.md, "Round 32: round 31's
additions and the commands attacked"). Each case failed before its fix:

- a command refused after its output folder was chosen (a layout the memory check refuses) into a folder holding
  files printed ``X/ holds other files: writing to X-2/`` before its error: two lines;
- ``simcluster`` (``python -m simcluster``) or ``simcluster laws`` alone said ``error:  (see --help)``, no word;
- ``sweep --gpus 16,17,...,N`` doubled from 17 unsaid (17, 34, 68, ...); ``sweep --samples 10000`` with 101 grid
  points passed the 10,000-point bound and started a million simulations;
- one fabric file given by two paths (``f.yaml``, ``./f.yaml``, a link) ran twice;
- ``hit_probability`` divided exact binomials, minutes at 2^20 experts (a flex-dispatcher run hung), and
  ``consecutive_units`` enumerated E / gcd(E, k) tokens x k experts (a round-robin run at 2^20 experts, odd k, hung);
- the residual scripts read their second validate output after simulating the first's rows (residuals.py then
  failed with a JSONDecodeError traceback), found an unwritable ``--cache`` at its first write, and
  ``step_shares.py --only ''`` simulated every row;
- ``pipeline_terms.py SCENARIO --per-layer`` (or two modes) took the flag for a scenario's name.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
from scripts_loader import load_script

from simcluster.core import token_routing
from simcluster.core.errors import ScenarioError
from simcluster.studies import grid
from tests.cli.scenario_files import SMALL, assert_one_line, write_scenario, write_validate_output


# ---- 1. the "writing to X-2/" note waits for the folder ---------------------------------------------------------
def test_a_refused_run_into_a_taken_folder_is_one_line(cli, tmp_path):
    taken = tmp_path / "o"
    taken.mkdir()
    (taken / "mine.txt").write_text("mine")
    too_big = copy.deepcopy(SMALL)
    too_big["model"] = "gpt3-175b"  # refused by the memory check, after the folder is chosen
    code, _, err = cli("run", write_scenario(tmp_path, too_big), "--network", "analytic", "--out", taken)
    assert_one_line(code, err, 2)
    assert err.startswith("error: parallelism: ") and not (tmp_path / "o-2").exists(), err
    code, out, err = cli("run", write_scenario(tmp_path, copy.deepcopy(SMALL)), "--network", "analytic", "--json",
                         "--out", taken)
    assert code == 0 and err == f"{taken}/ holds other files: writing to {taken}-2/\n", err  # said once, when made
    assert json.loads(out)["out_dir"] == f"{taken}-2" and [p.name for p in taken.iterdir()] == ["mine.txt"]


# ---- 2. a command group without its command ----------------------------------------------------------------------
@pytest.mark.parametrize(("argv", "listed"), [((), "run, compare"), (("laws",), "eval, optimal")])
def test_a_group_without_a_command_names_what_is_missing(cli, argv, listed):
    code, _, err = cli(*argv)
    assert_one_line(code, err, 2)
    assert err.startswith("error: COMMAND: missing; one of ") and listed in err, err


# ---- 3. grid bounds: '...' and samples ---------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["16,17,...,1000000", "64,96,...,1024"])
def test_an_ellipsis_after_no_whole_factor_is_refused(text):
    with pytest.raises(ScenarioError, match=r"--gpus: .*not a whole factor"):
        grid.parse_gpus(text)


def test_an_ellipsis_keeps_its_whole_factor():
    assert grid.parse_gpus("16,64,...,4096") == [16, 64, 256, 1024, 4096]
    assert grid.parse_gpus("8,...,64") == [8, 16, 32, 64]


def test_grid_points_times_samples_are_bounded(cli, tmp_path):
    values = ",".join(str(1024 + 8 * i) for i in range(101))
    code, _, err = cli("sweep", write_scenario(tmp_path, copy.deepcopy(SMALL)), "--gpus", "8", "--samples", "100",
                       "--vary", f"training.seq_len={values}", "--jobs", "1", "--no-plots", "--network", "analytic",
                       "--out", tmp_path / "sw")
    assert_one_line(code, err, 2)
    assert "--samples: 101 grid points x 100 samples are 10,100 simulations" in err, err
    assert not (tmp_path / "sw").exists()


# ---- 4. a fabric file by two paths --------------------------------------------------------------------------------
def test_one_fabric_file_by_two_paths_is_given_twice(tmp_path, monkeypatch):
    (tmp_path / "f.yaml").write_text("name: f\n")
    (tmp_path / "link.yaml").symlink_to(tmp_path / "f.yaml")
    monkeypatch.chdir(tmp_path)
    for other in ("./f.yaml", str(tmp_path / "link.yaml")):
        with pytest.raises(ScenarioError, match="--topology: a fabric is given twice"):
            grid.fabrics(["f.yaml", other], [], copy.deepcopy(SMALL))
    assert len(grid.fabrics(["leaf-spine", "leaf-spine:oversubscription=2"], [], copy.deepcopy(SMALL))) == 2


def test_a_fabric_option_holding_a_list_still_runs(tmp_path, monkeypatch):
    """docs/tutorial.md's ``--topology torus:dims=[8,8,16]``: the check above put the options in a set, and a list
    cannot be in one (a TypeError traceback, round 32's review); two paths to one file with a list option are still
    one fabric given twice."""
    specs = grid.fabrics(["torus:dims=[8,8,16]", "torus:dims=[4,4,4]"], [], copy.deepcopy(SMALL))
    assert [spec.label for spec in specs] == ["torus:dims=[8,8,16]", "torus:dims=[4,4,4]"]
    (tmp_path / "f.yaml").write_text("name: f\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ScenarioError, match="--topology: a fabric is given twice"):
        grid.fabrics(["f.yaml:dims=[2,2]", "./f.yaml:dims=[2,2]"], [], copy.deepcopy(SMALL))


# ---- 5. routing closed forms at the expert bound ------------------------------------------------------------------
# the alarm guard of scripts/recipe_sweep.py (one SIGALRM guard, as test_scenario_key_fuzz uses): fail, not hang
time_limit = load_script("recipe_sweep").time_limit


def test_hit_probability_past_exact_binomials_agrees_with_them():
    for experts, top_k, share in [(4097, 1, 1), (8192, 8, 512), (8192, 4096, 1), (20000, 5000, 5000),
                                  (8192, 100, 8000), (8192, 8, 0)]:
        exact = 1.0 - math.comb(experts - share, top_k) / math.comb(experts, top_k)
        assert token_routing.hit_probability(experts, top_k, share) == pytest.approx(exact, rel=1e-12, abs=1e-300)
    with time_limit(5.0):  # exact binomials: minutes
        assert 0.0 < token_routing.hit_probability(2**20, 2**19, 2**16) <= 1.0


def test_hit_probability_past_exact_binomials_divides_none(monkeypatch):
    """The alarm above cannot interrupt math.comb's C code (a regression would hang for minutes, not fail): past
    ``EXACT_BINOMIAL_EXPERTS`` no binomial is computed at all (round 32's review), on both of its branches."""
    def refuse(*_):
        raise AssertionError("an exact binomial past EXACT_BINOMIAL_EXPERTS")

    monkeypatch.setattr(math, "comb", refuse)
    for top_k, share in [(8, 2**16), (2**19, 2**16)]:  # min(s, k) terms summed; log-gamma
        assert 0.0 < token_routing.hit_probability(2**20, top_k, share) <= 1.0


def test_consecutive_units_counts_what_the_blocks_span():
    for experts in range(1, 41):  # against the enumeration of every token of one period
        for top_k in range(1, experts + 1):
            for units in (u for u in range(1, experts + 1) if experts % u == 0):
                per_unit, period = experts // units, experts // math.gcd(experts, top_k)
                spans = sum(len({(top_k * t + j) % experts // per_unit for j in range(top_k)}) for t in range(period))
                assert token_routing.consecutive_units(experts, top_k, units) == spans / period
    with time_limit(5.0):  # 5 x 10^11 steps enumerated
        spanned = token_routing.consecutive_units(2**20, 2**19 + 1, 16)
    assert spanned == 9.0  # a block of 8 x 2^16 + 1 experts starting anywhere in a unit of 2^16 spans 9 units


# ---- 6. the residual scripts check their inputs and outputs before simulating ---------------------------------
@pytest.fixture(scope="module")
def scripts():
    return {name: load_script(name) for name in ("residuals", "step_shares", "pipeline_terms")}


def _no_simulation(*_args, **_kwargs):
    raise AssertionError("simulated before its inputs and outputs were checked")


@pytest.mark.parametrize("script", ["residuals", "step_shares"])
def test_a_bad_second_validate_output_is_refused_before_simulating(scripts, tmp_path, capsys, monkeypatch, script):
    module = scripts[script]
    monkeypatch.setattr(module, "features" if script == "residuals" else "simulate", _no_simulation)
    bad = tmp_path / "ho.json"
    bad.write_text("{")
    code = module.main([str(write_validate_output(tmp_path)), str(bad), "--cache", str(tmp_path / "c.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "ho.json: not JSON" in err, err
    assert not (tmp_path / "c.json").exists()


@pytest.mark.parametrize("where", ["folder", "under-a-file"])
def test_an_unusable_cache_is_refused_before_simulating(scripts, tmp_path, capsys, monkeypatch, where):
    monkeypatch.setattr(scripts["step_shares"], "simulate", _no_simulation)
    cal = write_validate_output(tmp_path)
    cache = tmp_path if where == "folder" else cal / "c.json"
    code = scripts["step_shares"].main([str(cal), str(cal), "--cache", str(cache)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: --cache: "), err


@pytest.mark.parametrize("only", ["", ",,"])
def test_step_shares_only_without_a_name_is_refused(scripts, tmp_path, capsys, monkeypatch, only):
    monkeypatch.setattr(scripts["step_shares"], "simulate", _no_simulation)
    cal = write_validate_output(tmp_path)
    code = scripts["step_shares"].main([str(cal), str(cal), "--only", only, "--cache", str(tmp_path / "c.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: --only: "), err


def test_pipeline_terms_reads_its_mode_anywhere_and_one_only(scripts, capsys, monkeypatch):
    from simcluster.core import script_entry

    module = scripts["pipeline_terms"]
    seen = []
    monkeypatch.setattr(module, "print_reports", lambda names, report_of: seen.append((names, report_of)) or 0)
    assert module.main(["megatron-1.7b-h100", "--per-layer"]) == 0
    assert seen == [(["megatron-1.7b-h100"], module.layer_report)]
    code = script_entry.call(module.main, ["--per-layer", "--bubble", "megatron-1.7b-h100"])
    err = capsys.readouterr().err
    assert code == 2 and err == "error: --bubble: give one of --bubble, --fitted, --per-layer, not --per-layer and " \
        "--bubble\n", err


# ---- 7. values and files read whole -------------------------------------------------------------------------------
def test_a_vary_flow_mapping_is_one_value():
    varied = grid.parse_vary(["model.moe={experts: 16, top_k: 4, ffn_hidden: 1024},{experts: 32, top_k: 8, "
                              "ffn_hidden: 512, groups: 8, group_topk: 4}"])  # was five strings, each a failed run
    assert varied == {"model.moe": [{"experts": 16, "top_k": 4, "ffn_hidden": 1024},
                                    {"experts": 32, "top_k": 8, "ffn_hidden": 512, "groups": 8, "group_topk": 4}]}


@pytest.mark.parametrize(("text", "said"), [("", "got nothing (an empty file, or only comments)"),
                                            ("# a comment\n", "got nothing"), ("- a\n", "got a list (['a'])")])
def test_a_scenario_file_that_is_no_mapping_says_what_it_holds(cli, tmp_path, text, said):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    code, _, err = cli("run", path, "--network", "analytic", "--out", tmp_path / "o")
    assert_one_line(code, err, 2)
    assert f"s.yaml: expected a mapping of scenario fields, {said}" in err and "NoneType" not in err, err


@pytest.mark.parametrize(("field", "value"), [("step_time_s", -1.0), ("step_time_s", 0.0), ("error", -1.0)])
def test_a_validate_output_with_an_impossible_number_is_refused(tmp_path, field, value):
    accuracy_tables = load_script("accuracy_tables")  # the reader of every residual and pair script
    case = {"scenario": "mpt-7b-8-h100", "family": "f", "precision": "bf16", "error": 0.1, "step_time_s": 1.0}
    path = tmp_path / "ho.json"
    path.write_text(json.dumps({"cases": [{**case, field: value}]}))
    fields = {**accuracy_tables.CASE_FIELDS, "step_time_s": (int, float)}
    with pytest.raises(accuracy_tables.InputError, match=rf"cases\[0\]\.{field}: {value} is not above"):
        accuracy_tables.load_cases(path, fields)  # fsdp_unit_margin.py tabulated -1 s as +inf%
