"""outcomes/accuracy_card.py: the error a run is told to expect. The selection rule on hand-made tables (the widening
order, the minimum of held-out runs, calibration runs not counted), its statistics against a direct computation,
the traits of bundled scenarios against their hardware and model, the snapshot (data/accuracy.yaml) covering every
run of validation.yaml with today's traits, and the summary key and table line of ``simcluster run``. Whether the
snapshot's errors are today's: tests/validation/test_accuracy_snapshot.py."""

from __future__ import annotations

import json
import statistics

import pytest
from scripts_loader import load_script

from simcluster.outcomes import accuracy_card
from simcluster.spec import config, stack
from simcluster.studies import validation

TARGET = {"model": "m", "gpu": "h100-sxm", "generation": "hopper", "precision": "fp8", "precision_class": "fp8",
          "moe": True, "style": "megatron-3d", "gpus": 256, "gflop_per_token": 100.0}


def run(name: str, error: float, run_set: str = "held-out", **traits) -> dict:
    """A snapshot entry: TARGET's traits unless given."""
    return {**TARGET, "scenario": name, "set": run_set, "error": error, **traits}


def test_the_full_match_is_kept_when_it_has_three_held_out_runs():
    runs = [run("a", 0.01), run("b", -0.02), run("c", 0.03), run("other", 0.5, moe=False)]
    keys, chosen = accuracy_card.select(TARGET, runs)
    assert keys == ("generation", "precision_class", "moe")
    assert [r["scenario"] for r in chosen] == ["a", "b", "c"]


def test_calibration_runs_do_not_count_toward_the_minimum():
    runs = [run("a", 0.01), run("b", -0.02), run("cal", 0.0, "calibration"), run("dense", 0.1, moe=False)]
    keys, chosen = accuracy_card.select(TARGET, runs)
    assert keys == ("generation", "precision_class")  # two held-out MoE runs: MoE dropped
    assert {r["scenario"] for r in chosen} == {"a", "b", "cal", "dense"}


def test_moe_is_dropped_before_precision_and_precision_before_generation():
    # dropping precision first would find 3 (a, b16, c16); dropping MoE first finds a, dense only: precision goes next
    runs = [run("a", 0.01), run("dense", 0.02, moe=False),
            run("b16", 0.03, precision_class="16-bit"), run("c16", 0.04, precision_class="16-bit"),
            run("ampere", 0.05, generation="ampere"), run("ampere2", 0.06, generation="ampere")]
    keys, chosen = accuracy_card.select(TARGET, runs)
    assert keys == ("generation",)
    assert {r["scenario"] for r in chosen} == {"a", "dense", "b16", "c16"}
    keys, chosen = accuracy_card.select(TARGET, runs[:2] + runs[4:])   # two on Hopper: generation dropped too
    assert keys == () and len(chosen) == 4


def test_a_gpu_no_published_run_used_is_matched_with_every_run_and_the_basis_says_none_ran_on_it():
    runs = [run("a", 0.01), run("b", 0.02)]  # fewer than the minimum even with every trait dropped
    custom = {**TARGET, "generation": "unknown"}
    keys, chosen = accuracy_card.select(custom, runs)
    assert keys == () and len(chosen) == 2
    assert accuracy_card.basis_words(custom, keys, chosen) == (
        "every published run (no run on unknown-generation GPUs)")
    amd = {**TARGET, "generation": "amd", "moe": False}
    assert accuracy_card.basis_words(amd, (), runs) == "every published run (no run on AMD GPUs; no dense run)"


def test_basis_in_words_names_what_was_matched_and_what_the_runs_behind_a_dropped_trait_are():
    runs = [run("a", 0.01), run("dense", 0.02, moe=False), run("b16", 0.03, precision_class="16-bit"),
            run("cal32", 0.0, "calibration", precision_class="32-bit")]
    assert accuracy_card.basis_words(TARGET, ("generation", "precision_class", "moe"), runs[:1]) == (
        "Hopper GPUs, fp8, MoE")
    # the held-out runs' kinds (the calibration run's 32-bit is not quoted: its figures are beside, not behind)
    assert accuracy_card.basis_words(TARGET, ("generation",), runs) == "Hopper GPUs, 16-bit and fp8, dense and MoE"


def test_a_dense_run_matched_only_to_moe_runs_is_told_so():
    # as a Blackwell bf16 dense run: the snapshot's held-out Blackwell 16-bit runs are all MoE
    runs = [run(n, e, precision_class="16-bit", generation="blackwell") for n, e in (("a", 0.1), ("b", -0.05),
                                                                                       ("c", 0.02))]
    dense = {**TARGET, "generation": "blackwell", "precision_class": "16-bit", "moe": False}
    c = accuracy_card.card_of(dense, runs)
    assert c["matched_on"] == ["generation", "precision_class"]
    assert c["basis"] == "Blackwell GPUs, 16-bit, MoE (no dense run)"
    assert accuracy_card.line(c)[0] == "expected error (3 held-out runs: Blackwell GPUs, 16-bit, MoE (no dense run))"


def test_figures_are_median_and_max_of_absolute_and_mean_of_signed_errors():
    errors = [0.12, -0.03, 0.05, -0.20, 0.01]
    f = accuracy_card.figures(errors)
    assert f["runs"] == 5
    assert f["median_abs_error"] == pytest.approx(statistics.median(abs(e) for e in errors))  # 0.05
    assert f["max_abs_error"] == pytest.approx(0.20)
    assert f["mean_error"] == pytest.approx(sum(errors) / 5)  # -0.01: slow on average
    assert f["fast_runs"] == 3
    assert accuracy_card.figures([]) == {"runs": 0, "median_abs_error": None, "max_abs_error": None,
                                         "mean_error": None, "fast_runs": 0}


def test_card_splits_held_out_and_calibration_and_names_the_nearest_runs():
    runs = [run("a", 0.10, gpus=2048), run("b", -0.04, gpus=256), run("c", 0.02, gpu="h200-sxm"),
            run("cal", 0.03, "calibration", gpus=512)]
    c = accuracy_card.card_of(TARGET, runs, "main @ test")
    assert c["held_out"]["runs"] == 3 and c["held_out"]["median_abs_error"] == pytest.approx(0.04)
    assert c["held_out"]["mean_error"] == pytest.approx(0.08 / 3)
    assert c["calibration"]["runs"] == 1 and c["calibration"]["max_abs_error"] == pytest.approx(0.03)
    # distances: b 0; cal log(2)/log(8) = 1/3; a log(8)/log(8) = 1; c one other GPU = 1 (ties by name)
    assert [n["scenario"] for n in c["nearest"]] == ["b", "cal", "a"]
    assert c["measured_on"] == "main @ test" and "not a bound" in c["note"]
    label, value = accuracy_card.line(c)
    assert label == "expected error (3 held-out runs: Hopper GPUs, fp8, MoE)"
    assert value == "median 4.0%, max 10.0%, 2 of 3 simulated too fast"
    # one of three fast: the count names what it counts (it read 'mostly slow (1 of 3)', the 1 being the fast one)
    slow = accuracy_card.card_of(TARGET, [run("a", 0.10), run("b", -0.04), run("c", -0.02)])
    assert accuracy_card.line(slow)[1] == "median 4.0%, max 10.0%, 1 of 3 simulated too fast"
    empty = accuracy_card.card_of(TARGET, [run("cal", 0.03, "calibration")])
    assert empty["basis"].startswith("every published run") and empty["held_out"]["runs"] == 0
    assert accuracy_card.line(empty)[1] == "no held-out published run in data/accuracy.yaml"


# --- the stack (round 22) -----------------------------------------------------------------------------------------

STACKED = {**TARGET, "stack": "llm-foundry-fsdp"}


def stacked(name, error, run_set="held-out", stack="llm-foundry-fsdp", **traits):
    return run(name, error, run_set, stack=stack, **traits)


def test_a_stack_with_three_held_out_runs_is_the_basis_even_where_other_stacks_match_closer(monkeypatch):
    monkeypatch.setattr(accuracy_card, "MATCH_STACK", True)   # the stack-first rule (off by default: card_check)
    # three held-out runs on the stack (two on Ampere, one dense): the stack's runs, widened inside it, beat the four
    # held-out runs of another stack that match every other trait
    runs = [stacked("s1", 0.10), stacked("s2", 0.12, generation="ampere"), stacked("s3", 0.14, moe=False),
            stacked("s-cal", 0.0, "calibration"), *(stacked(f"m{i}", -0.01 * i, stack="mcore-te1") for i in range(4)),
            stacked("m-cal", 0.01, "calibration", stack="mcore-te1")]
    keys, chosen = accuracy_card.select(STACKED, runs, by_stack=True)
    assert keys == ("stack",) and {r["scenario"] for r in chosen} == {"s1", "s2", "s3", "s-cal"}
    c = accuracy_card.card_of(STACKED, runs, calibrated=["mcore-te1"])
    assert c["matched_on"] == ["stack"]
    assert c["basis"] == "llm-foundry FSDP, Ampere and Hopper GPUs, fp8, dense and MoE"
    assert c["held_out"]["runs"] == 3 and c["held_out"]["median_abs_error"] == pytest.approx(0.12)
    assert c["stack"] == "llm-foundry-fsdp" and c["stack_calibrated"] is False
    # the stack is the first trait kept, not the last: with one more run on Hopper the match narrows inside it
    keys, _ = accuracy_card.select(STACKED, runs + [stacked("s4", 0.2, moe=False)], by_stack=True)
    assert keys == ("stack", "generation", "precision_class")


def test_too_few_held_out_runs_on_the_stack_widen_as_before_and_the_card_says_so():
    runs = [stacked("s1", 0.10), stacked("s2", 0.12), stacked("s-cal", 0.0, "calibration"),
            *(stacked(f"m{i}", -0.01 * (i + 1), stack="mcore-te1") for i in range(4))]
    keys, chosen = accuracy_card.select(STACKED, runs, by_stack=True)
    assert (keys, chosen) == accuracy_card.select(STACKED, runs)   # the old rule
    assert keys == ("generation", "precision_class", "moe") and len(chosen) == 7
    c = accuracy_card.card_of(STACKED, runs, calibrated=["llm-foundry-fsdp"])
    assert c["basis"] == "Hopper GPUs, fp8, MoE" and c["stack_calibrated"] is True
    cov = c["stack_coverage"]
    assert (cov["calibration_runs"], cov["held_out_runs"], cov["matched"]) == (1, 2, False)
    label, value = accuracy_card.lines(c)[1]
    assert label == "  stack"
    assert value == ("llm-foundry FSDP (1 calibration run on this stack; held-out runs on calibrated stacks: median "
                     "+11.0%, 2 of 2 simulated too fast; the figures above are not only this stack's: it has 2 "
                     "held-out runs, fewer than 3)")


def test_the_card_states_what_held_out_runs_on_uncalibrated_stacks_erred(monkeypatch):
    monkeypatch.setattr(accuracy_card, "MATCH_STACK", True)   # the stack-first rule (off by default: card_check)
    # held-out runs: two stacks without calibration runs (A, B), one with (C); the figures of an uncalibrated
    # stack's card are A's and B's runs, signed: median of (+0.02, +0.04, +0.06, -0.01, +0.08) = +0.04, 4 fast
    runs = [stacked("a1", 0.02, stack="A"), stacked("a2", 0.04, stack="A"), stacked("a3", 0.06, stack="A"),
            stacked("b1", -0.01, stack="B"), stacked("b2", 0.08, stack="B"),
            stacked("c1", -0.03, stack="C"), stacked("c2", 0.01, stack="C"), stacked("c-cal", 0.0, "calibration",
                                                                                      stack="C")]
    calibrated = sorted({r["stack"] for r in runs if r["set"] == "calibration"})
    c = accuracy_card.card_of({**STACKED, "stack": "A"}, runs, calibrated=calibrated)
    alike = c["stack_coverage"]["alike_stacks_held_out"]
    assert alike["runs"] == 5 and alike["median_error"] == pytest.approx(0.04) and alike["fast_runs"] == 4
    assert alike["mean_error"] == pytest.approx(0.19 / 5)
    assert c["matched_on"][0] == "stack" and c["basis"].startswith("A, ")
    assert accuracy_card.stack_words(c) == ("A (no calibration run on this stack; held-out runs on uncalibrated "
                                            "stacks: median +4.0%, 4 of 5 simulated too fast)")
    calibrated_card = accuracy_card.card_of({**STACKED, "stack": "C"}, runs, calibrated=calibrated)
    assert calibrated_card["stack_coverage"]["alike_stacks_held_out"]["median_error"] == pytest.approx(-0.01)
    assert calibrated_card["stack_calibrated"] is True


def test_a_snapshot_without_stacks_gives_the_card_of_before_round_22(monkeypatch):
    from simcluster.core import catalog

    old = {"measured_on": "old", "runs": [{k: v for k, v in r.items() if k != "stack"} for r in SNAPSHOT]}
    load = catalog.load
    monkeypatch.setattr(catalog, "load", lambda name: old if name == "accuracy" else load(name))
    scenario = config.load("mpt-7b-8-h100")
    c = accuracy_card.card(scenario)
    target = accuracy_card.traits(scenario)
    keys, chosen = accuracy_card.select(target, old["runs"])   # the rule of round 20
    assert c["matched_on"] == list(keys) and c["basis"] == accuracy_card.basis_words(target, keys, chosen)
    assert c["stack"] == "llm-foundry-fsdp" and c["stack_calibrated"] is None and c["stack_coverage"] is None
    assert accuracy_card.lines(c) == [accuracy_card.line(c)]
    # a snapshot with calibrated_stacks but an entry without its stack is an old one too
    mixed = {**old, "calibrated_stacks": ["mcore-te1"]}
    monkeypatch.setattr(catalog, "load", lambda name: mixed if name == "accuracy" else load(name))
    assert accuracy_card.card(scenario)["stack_calibrated"] is None


@pytest.mark.parametrize("damage", ["calibrated_stacks not a list", "stack not text"])
def test_a_snapshot_with_malformed_stacks_is_unread(damage, monkeypatch):
    from simcluster.core import catalog

    good = catalog.load("accuracy")
    broken = ({**good, "calibrated_stacks": "mcore-te1"} if damage == "calibrated_stacks not a list"
              else {**good, "runs": [{**good["runs"][0], "stack": 1}] + good["runs"][1:]})
    load = catalog.load
    monkeypatch.setattr(catalog, "load", lambda name: broken if name == "accuracy" else load(name))
    c = accuracy_card.card(config.load("mpt-7b-8-h100"))
    assert c["unavailable"].startswith("data/accuracy.yaml: ") and accuracy_card.lines(c)[0][1].startswith("unknown")
    assert len(accuracy_card.lines(c)) == 1


@pytest.mark.parametrize(("scenario", "generation", "precision_class", "moe", "style"), [
    ("megatron-1.7b-h100", "hopper", "16-bit", False, "megatron-3d"),
    ("megatron-1.2b-a100-node", "ampere", "16-bit", False, "megatron-3d"),
    ("nemo2407-llama3-8b-8-h100-fp8", "hopper", "fp8", False, "megatron-3d"),
    ("nemo2511-deepseek-v3-256-gb200-bf16", "blackwell", "16-bit", True, "megatron-3d"),
    ("mpt-7b-8-h100", "hopper", "16-bit", False, "fsdp"),
    ("smith2022-mtnlg-530b-280-a100", "ampere", "16-bit", False, "deepspeed-3d"),
])
def test_traits_of_bundled_scenarios(scenario, generation, precision_class, moe, style):
    t = accuracy_card.traits(config.load(scenario))
    assert (t["generation"], t["precision_class"], t["moe"], t["style"]) == (generation, precision_class, moe, style)
    assert t["stack"] == stack.family(config.load(scenario))


def test_a_custom_gpu_has_no_generation(small_scenario):
    from simcluster.spec import hardware

    gpu = hardware.gpu("h100-sxm").model_copy(update={"vendor": "custom", "name": "custom-gpu"})
    assert accuracy_card.generation(gpu) == "unknown"
    assert accuracy_card.generation(hardware.gpu("mi300x")) == "amd"


# --- the snapshot -------------------------------------------------------------------------------------------------

SNAPSHOT = accuracy_card.snapshot()["runs"]


def test_every_validated_run_has_one_snapshot_entry_in_its_set():
    expected = {c["scenario"]: "calibration" for c in validation.cases()}
    expected |= {c["scenario"]: "held-out" for c in validation.held_out_cases()}
    names = [r["scenario"] for r in SNAPSHOT]
    assert len(names) == len(set(names)), "a run twice in data/accuracy.yaml"
    assert {r["scenario"]: r["set"] for r in SNAPSHOT} == expected, (
        "data/accuracy.yaml does not hold validation.yaml's runs: regenerate it (python scripts/accuracy_tables.py "
        "CAL.json HELDOUT.json --label 'main @ COMMIT' --write-data simcluster/data/accuracy.yaml)")


def test_snapshot_traits_are_the_scenarios_traits_today():
    for entry in SNAPSHOT:
        now = accuracy_card.traits(config.load(entry["scenario"]))
        assert {k: entry[k] for k in now} == now, entry["scenario"]


def test_snapshot_calibrated_stacks_are_the_calibration_runs_stacks():
    data = accuracy_card.snapshot()
    assert accuracy_card.knows_stacks(data)
    assert data["calibrated_stacks"] == sorted({r["stack"] for r in SNAPSHOT if r["set"] == "calibration"})
    # and, independent of the snapshot, the stack rule on validation.yaml's calibration scenarios
    from simcluster.spec import stack
    assert data["calibrated_stacks"] == sorted({stack.family(config.load(c["scenario"])) for c in validation.cases()})


def test_snapshot_families_are_validation_series():
    series = {c["scenario"]: c.get("series", c["source"]) for c in validation.cases() + validation.held_out_cases()}
    assert all(entry["family"] == series[entry["scenario"]] for entry in SNAPSHOT)


# --- the script that writes it ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tables():
    return load_script("accuracy_tables")


def cases_file(tmp_path, name, cases):
    path = tmp_path / name
    path.write_text(json.dumps({"cases": cases}))
    return str(path)


def test_write_data_writes_one_entry_per_case_with_its_traits(tables, tmp_path):
    cal = cases_file(tmp_path, "cal.json", [{"scenario": "megatron-1.7b-h100", "family": "f", "precision": "bf16",
                                             "error": 0.052658}])
    held = cases_file(tmp_path, "held.json", [{"scenario": "nemo2407-llama3-8b-8-h100-fp8", "family": "g",
                                               "precision": "fp8", "error": -0.1}])
    out = tmp_path / "accuracy.yaml"
    assert tables.main([cal, held, "--label", "main @ x", "--write-data", str(out)]) == 0
    import yaml

    data = yaml.safe_load(out.read_text())
    assert data["measured_on"] == "main @ x"
    first, second = data["runs"]
    assert first == {"scenario": "megatron-1.7b-h100", "set": "calibration", "family": "f", "error": 0.0527,
                     **accuracy_card.traits(config.load("megatron-1.7b-h100"))}
    assert (second["set"], second["precision_class"], second["error"]) == ("held-out", "fp8", -0.1)
    assert first["stack"] == "mcore-te1" and data["calibrated_stacks"] == ["mcore-te1"]   # the calibration run's only


def test_write_data_refuses_a_case_that_is_no_bundled_scenario(tables, tmp_path, capsys):
    cal = cases_file(tmp_path, "cal.json", [{"scenario": "no-such-run", "family": "f", "precision": "bf16",
                                             "error": 0.0}])
    assert tables.main([cal, cal, "--write-data", str(tmp_path / "a.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --write-data: no-such-run: not a bundled scenario") and err.count("\n") == 1
    assert not (tmp_path / "a.yaml").exists()


# --- simcluster run -----------------------------------------------------------------------------------------------

def test_run_reports_the_card_in_its_summary_and_table(cli, write_scenario, small_scenario, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")   # the row unwrapped
    path = write_scenario(small_scenario)
    code, stdout, _ = cli("run", path, "--json", "--network", "analytic", "--out", tmp_path / "a")
    assert code == 0
    summary = json.loads(stdout)
    assert summary["accuracy"] == accuracy_card.card(config.load(path))
    basis = "Hopper GPUs, 16-bit, dense"   # round 20's basis (MATCH_STACK False), the stack in its own row
    assert summary["accuracy"]["basis"] == basis
    assert summary["accuracy"]["stack"] == "mcore-te1" and summary["accuracy"]["stack_calibrated"] is True
    code, stdout, _ = cli("run", path, "--network", "analytic", "--out", tmp_path / "b")
    held = summary["accuracy"]["held_out"]
    assert code == 0 and f"expected error ({held['runs']} held-out runs: {basis})" in stdout
    assert f"{held['fast_runs']} of {held['runs']} simulated too fast" in stdout
    assert "Megatron-Core with TE 1.x (" in stdout and "calibration runs on this stack" in stdout


@pytest.mark.parametrize("damage", ["missing", "not yaml", "no runs", "entry without error", "zero gpus",
                                    "text error", "nan error", "moe as text"])
def test_run_goes_on_with_an_unknown_error_when_the_snapshot_is_missing_or_broken(
        damage, monkeypatch, cli, write_scenario, small_scenario, tmp_path):
    import yaml

    from simcluster.core import catalog

    load = catalog.load
    good = load("accuracy")
    broken = {"missing": FileNotFoundError(2, "No such file or directory"), "not yaml": yaml.YAMLError("bad token"),
              "no runs": {"measured_on": "x"},
              "entry without error": {"runs": [{k: v for k, v in good["runs"][0].items() if k != "error"}]},
              "zero gpus": {"runs": [{**good["runs"][0], "gpus": 0}]},
              "text error": {"runs": [{**good["runs"][0], "error": "+5%"}]},
              "nan error": {"runs": [{**good["runs"][0], "error": float("nan")}]},
              "moe as text": {"runs": [{**r, "moe": "no"} for r in good["runs"][:2]] + good["runs"][2:]}}[damage]

    def damaged(name):
        if name != "accuracy":
            return load(name)
        if isinstance(broken, Exception):
            raise broken
        return broken

    monkeypatch.setattr(catalog, "load", damaged)
    with pytest.raises(accuracy_card.SnapshotError, match=r"^data/accuracy\.yaml: "):
        accuracy_card.snapshot()
    path = write_scenario(small_scenario)
    c = accuracy_card.card(config.load(path))
    assert c["basis"] is None and c["held_out"]["runs"] == 0 and c["unavailable"].startswith("data/accuracy.yaml: ")
    label, value = accuracy_card.line(c)
    assert label == "expected error" and value.startswith("unknown: data/accuracy.yaml: ") and "\n" not in value
    code, stdout, stderr = cli("run", path, "--network", "analytic", "--out", tmp_path / "a")
    assert code == 0, stderr
    assert "unknown: data/accuracy.yaml" in stdout


def test_the_default_scenarios_card_is_the_snapshots_hopper_16_bit_dense_held_out_runs_and_names_its_stack():
    # Hopper: the H100s and (round 26's KempnerForge rows) the H200
    rows = [r for r in SNAPSHOT if r["set"] == "held-out" and r["gpu"].startswith(("h100", "h200"))
            and r["precision"] in ("bf16", "fp16") and not r["moe"]]
    errors = sorted(abs(r["error"]) for r in rows)
    c = accuracy_card.card(config.load(None))  # GPT-3 175B, bf16, 1,024 H100, Megatron-Core with TE 1.x
    assert c["basis"] == "Hopper GPUs, 16-bit, dense" and c["held_out"]["runs"] == len(rows) >= 3
    assert c["held_out"]["median_abs_error"] == pytest.approx(statistics.median(errors))
    assert c["held_out"]["max_abs_error"] == pytest.approx(errors[-1])
    assert c["stack"] == "mcore-te1" and c["stack_calibrated"] is True


def test_without_matching_on_the_stack_the_basis_is_round_20s_and_the_stack_row_stays(monkeypatch):
    runs = [stacked(f"s{i}", 0.1) for i in range(3)] + [stacked(f"m{i}", -0.1, stack="mcore-te1") for i in range(3)]
    monkeypatch.setattr(accuracy_card, "MATCH_STACK", False)
    c = accuracy_card.card_of(STACKED, runs, calibrated=["mcore-te1"])
    assert c["basis"] == "Hopper GPUs, fp8, MoE" and c["held_out"]["runs"] == 6
    assert accuracy_card.stack_words(c).endswith("simulated too fast; the figures above are not only this stack's)")


# --- scripts/card_check.py: the card against the run it leaves out -----------------------------------------------

def test_card_check_leave_one_out_on_two_stacks_of_opposite_sign():
    # stack A (calibrated) held-out runs all +10%, stack B (uncalibrated) all -10%, every other trait equal: the
    # round-20 basis pools both (a run's card: mean +-0.1/7, the wrong sign; miss 0.8/7), the stack basis and the
    # stack row see only the run's own stack (miss 0)
    check = load_script("card_check")
    runs = ([stacked(f"a{i}", 0.1, stack="A") for i in range(4)] + [stacked("a-cal", 0.0, "calibration", stack="A")]
            + [stacked(f"b{i}", -0.1, stack="B") for i in range(4)])
    old = check.leave_one_out(runs, None)
    assert (old["runs"], old["sign_right"], old["within_max"], old["stack_matched"]) == (8, 0, 8, 0)
    assert old["median_spread"] == pytest.approx(0.0) and old["median_signed"] == pytest.approx(0.8 / 7)
    assert old["coverage_median_signed"] is None
    new = check.leave_one_out(runs, ["A"])
    assert (new["sign_right"], new["within_max"], new["stack_matched"]) == (8, 8, 8)
    assert new["median_signed"] == pytest.approx(0.0) and new["coverage_median_signed"] == pytest.approx(0.0)


def test_card_check_refuses_a_snapshot_without_stacks(tmp_path, capsys):
    path = tmp_path / "old.yaml"
    path.write_text("runs: []\n")
    assert load_script("card_check").main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "calibrated_stacks" in err
