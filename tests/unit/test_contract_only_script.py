"""scripts/contract_only.py: the contract twin and the one-key variants of --each.

The twin keeps exactly DESIGN.md's core keys; each --each variant differs from the bundled scenario (or the twin) in
the one key it names and nowhere else, so putting every dropped key back into the twin, one variant at a time,
gives the bundled scenario again. Fails if a variant drops or restores a key other than its own.
"""

import copy

import pytest
from scripts_loader import load_script

from simcluster.core import catalog

ROWS = ["nemotron4-340b-1536-h100", "nemo2409-gpt3-175b-128-h100-bf16", "nemo2409-llama31-8b-8-h100-bf16"]


@pytest.fixture(scope="module")
def contract_only():
    return load_script("contract_only")


@pytest.mark.parametrize("name", ROWS)
def test_twin_keeps_only_contract_keys(contract_only, name):
    raw = catalog.load(f"scenarios/{name}")
    twin, dropped = contract_only.contract_only(raw)
    assert set(twin["training"]) <= contract_only.TRAINING_KEYS
    assert set(twin["parallelism"]) <= contract_only.PARALLELISM_KEYS
    assert sorted(dropped) == sorted((set(raw["training"]) | set(raw["parallelism"]))
                                     - contract_only.TRAINING_KEYS - contract_only.PARALLELISM_KEYS)
    assert {k: v for k, v in raw.items() if k not in ("training", "parallelism")} == \
        {k: v for k, v in twin.items() if k not in ("training", "parallelism")}


@pytest.mark.parametrize("name", ROWS)
def test_each_variant_differs_in_its_key_only(contract_only, name):
    raw = catalog.load(f"scenarios/{name}")
    twin, dropped = contract_only.contract_only(raw)
    assert dropped, "every listed row states some framework option"
    rebuilt = copy.deepcopy(twin)
    for key in dropped:
        without, with_key = contract_only.one_key(raw, twin, key)
        where = contract_only.section(raw, key)
        assert key not in without[where] and with_key[where][key] == raw[where][key]
        assert contract_only.contract_only(without)[1] == [k for k in dropped if k != key]
        assert contract_only.contract_only(with_key)[1] == [key]
        rebuilt[where][key] = with_key[where][key]
    for where in ("training", "parallelism"):  # every key put back: the bundled scenario's options again
        assert rebuilt[where] == raw[where]
    assert catalog.load(f"scenarios/{name}") == raw  # the variants are copies


def test_each_prints_one_line_per_dropped_key(contract_only, capsys):
    assert contract_only.main(["--each", "nemo2409-llama31-8b-8-h100-bf16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.split()[1:2] == ["nemo2409-llama31-8b-8-h100-bf16"])
    keys = row.split("  ")[-1].split(", ")
    assert [line.split()[0] for line in lines[lines.index(row) + 1:]] == keys


def test_no_matching_row_is_refused_before_the_header(contract_only, capsys):
    """A pattern no row's name contains is a usage error (exit 2, one line), not an empty table."""
    with pytest.raises(SystemExit) as exit_:
        contract_only.main(["--each", "nosuchrow"])
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and out == ""
    assert err.strip().splitlines()[-1].endswith("no calibration or held-out row's scenario name contains nosuchrow")


def test_attribute_prints_the_twins_step_time_with_each_key_put_back(contract_only, capsys):
    """--attribute: the twin's and the bundled step time, one line per dropped key (the twin with it alone put back),
    and the sum of the one-key changes. On a row whose every dropped key states its default all changes are zero
    and the bundled step time is the twin's."""
    assert contract_only.main(["--attribute", "nemo2409-llama31-8b-8-h100-bf16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(i for i, line in enumerate(lines) if line.split()[1:2] == ["nemo2409-llama31-8b-8-h100-bf16"])
    keys = lines[row].split("  ")[-1].split(", ")
    twin_line, *key_lines, total_line = lines[row + 1:]
    twin_s, bundled_s = float(twin_line.split()[4]), float(twin_line.split()[7])
    assert twin_s == pytest.approx(bundled_s, rel=1e-12)
    assert [line.split()[1] for line in key_lines] == keys
    assert all(float(line.split()[2]) == pytest.approx(twin_s, rel=1e-12) for line in key_lines)
    assert total_line.split()[:5] == ["sum", "of", "the", "one-key", "changes"]
