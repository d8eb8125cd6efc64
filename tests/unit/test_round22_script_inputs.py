"""The round's new scripts at their edges (the project's rule: ``--help`` works; bad input is one line naming the
file or field, exit code 2, no traceback): a missing file, malformed JSON or YAML, a case without a field this script
reads, a snapshot with a malformed run, an unknown scenario. The validate-JSON loader is accuracy_tables.load_cases
(one checker, each script naming its fields) and a snapshot's check is accuracy_card.checked (the card's own)."""

from __future__ import annotations

import json

import pytest
from scripts_loader import load_script

SCRIPTS = ("card_check", "dp_ring_scaling", "error_features", "mbs_pairs", "prequel_layouts", "stage_passes",
           "accuracy_tables")


@pytest.mark.parametrize("name", SCRIPTS)
def test_help(name, capsys):
    with pytest.raises(SystemExit) as done:
        load_script(name).main(["--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")


def _one_line_exit_2(capsys, code: int, *words: str) -> None:
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert all(w in err for w in words), err
    assert "Traceback" not in err


@pytest.fixture
def files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    typed = tmp_path / "typed.json"   # error as text: no number
    typed.write_text(json.dumps({"cases": [{"scenario": "a-mbs2-b", "source": "s", "family": "f",
                                            "step_time_s": 1.0, "error": "high"}]}))
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"cases": [{"scenario": "no-such-mbs2-run", "error": 0.1, "step_time_s": 1.0}]}))
    return {"missing": tmp_path / "missing.json", "bad": bad, "typed": typed, "unknown": unknown}


def test_mbs_pairs_bad_input(files, capsys):
    pairs = load_script("mbs_pairs")
    _one_line_exit_2(capsys, pairs.main([str(files["missing"])]), "missing.json", "cannot read")
    _one_line_exit_2(capsys, pairs.main([str(files["bad"])]), "bad.json", "not JSON")
    _one_line_exit_2(capsys, pairs.main([str(files["typed"])]), "cases[0].error")
    _one_line_exit_2(capsys, pairs.main([str(files["unknown"])]), "no-such-mbs2-run")


def test_error_features_checks_field_types(files, tmp_path, capsys):
    ef = load_script("error_features")
    _one_line_exit_2(capsys, ef.main([str(files["typed"]), str(files["typed"]), "--cache", str(tmp_path / "c")]),
                     "cases[0].error")
    _one_line_exit_2(capsys, ef.main([str(files["bad"]), str(files["bad"])]), "bad.json", "not JSON")


def test_stage_passes_unknown_scenario_and_attention(capsys):
    sp = load_script("stage_passes")
    _one_line_exit_2(capsys, sp.main(["no-such-scenario"]), "no-such-scenario")
    _one_line_exit_2(capsys, sp.main(["megatron-1.7b-h100", "--attention", "bogus"]), "training.attention")


def test_card_check_bad_snapshots(tmp_path, capsys):
    check = load_script("card_check")
    broken = tmp_path / "broken.yaml"
    broken.write_text("runs: [\n")     # a YAML error spans several lines: reported on one
    _one_line_exit_2(capsys, check.main([str(broken)]), "broken.yaml", "cannot be read")
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("calibrated_stacks: [mcore-te1]\nruns: [1, 2]\n")
    _one_line_exit_2(capsys, check.main([str(malformed)]), "malformed.yaml", "runs[0]")
    _one_line_exit_2(capsys, check.main([str(tmp_path / "missing.yaml")]), "missing.yaml")


def test_card_check_and_the_card_share_one_snapshot_check():
    from simcluster.outcomes import accuracy_card
    with pytest.raises(accuracy_card.SnapshotError, match=r"^x.yaml: runs\[0\]\.stack: not text$"):
        accuracy_card.checked({"runs": [{k: ("s" if k in accuracy_card.TEXT_KEYS else 1)
                                         for k in accuracy_card.ENTRY_KEYS} | {"moe": False, "stack": 3}]}, "x.yaml")
    with pytest.raises(accuracy_card.SnapshotError, match="^data/accuracy.yaml: no list of runs$"):
        accuracy_card.checked({})


def test_error_features_reuses_residuals_csv_and_columns(tmp_path):
    ef = load_script("error_features")
    assert ef.column.__module__ == ef.spearman.__module__ == "residuals"   # one definition, not a twin
    path = tmp_path / "rows.csv"
    ef.write_csv([{"scenario": "a", "error": 0.125, "tp": 8.0}, {"scenario": "b"}], path)
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(ef.CSV_KEYS) and len(lines) == 3
    cells = dict(zip(ef.CSV_KEYS, lines[1].split(","), strict=True))
    assert (cells["scenario"], cells["error"], cells["tp"], cells["stack"]) == ("a", "0.125", "8", "")


def test_dp_ring_scaling_reads_the_published_steps_from_the_held_out_rows():
    from simcluster.studies import validation
    steps = load_script("dp_ring_scaling").PUBLISHED_STEP_S
    # arXiv 2402.16819 Table 2's three batch-ramp stages, 570 / 580 / 640 ms, as validation.yaml states them
    assert steps == {768: 0.57, 1536: 0.58, 2304: 0.64}
    held = {c["scenario"]: c.get("step_time_s") for c in validation.held_out_cases()}
    assert all(held[f"nemotron4-15b-{gpus}-h100"] == s for gpus, s in steps.items())
