"""scripts/contract_only.py: the contract twin and the one-key variants of --each.

The twin keeps exactly DESIGN.md's core keys; each --each variant differs from the bundled scenario (or the twin) in
the one key it names and nowhere else, so putting every dropped key back into the twin, one variant at a time,
gives the bundled scenario again. Fails if a variant drops or restores a key other than its own.
"""

import copy

import pytest
from scripts_loader import load_script

from simcluster.core import catalog
from simcluster.engine import simulate
from simcluster.spec import config

ROWS = ["nemotron4-340b-1536-h100", "nemo2409-gpt3-175b-128-h100-bf16", "nemo2409-llama31-8b-8-h100-bf16",
        "mpt-13b-8-h100"]


@pytest.fixture(scope="module")
def contract_only():
    return load_script("contract_only")


@pytest.mark.parametrize("name", ROWS)
def test_twin_keeps_only_contract_keys(contract_only, name):
    raw = catalog.load(f"scenarios/{name}")
    twin, dropped = contract_only.contract_only(raw)
    assert set(twin["training"]) <= contract_only.TRAINING_KEYS
    assert set(twin["parallelism"]) <= contract_only.PARALLELISM_KEYS
    model = raw["model"] if isinstance(raw["model"], dict) else {}
    assert sorted(dropped) == sorted(sorted((set(raw["training"]) | set(raw["parallelism"]))
                                            - contract_only.TRAINING_KEYS - contract_only.PARALLELISM_KEYS)
                                     + ["model." + k for k in set(model)
                                        - {"layers", "hidden", "heads", "kv_heads", "ffn_hidden", "vocab"}])
    if model:  # DESIGN.md: an inline model is {layers, hidden, heads, kv_heads, ffn_hidden, vocab}
        assert twin["model"] == {k: v for k, v in model.items()
                                 if k in ("layers", "hidden", "heads", "kv_heads", "ffn_hidden", "vocab")}
    else:  # a preset name stays a name
        assert twin["model"] == raw["model"]
    assert {k: v for k, v in raw.items() if k not in ("training", "parallelism", "model")} == \
        {k: v for k, v in twin.items() if k not in ("training", "parallelism", "model")}


@pytest.mark.parametrize("name", ROWS)
def test_each_variant_differs_in_its_key_only(contract_only, name):
    raw = catalog.load(f"scenarios/{name}")
    twin, dropped = contract_only.contract_only(raw)
    assert dropped, "every listed row states some framework option"
    rebuilt = copy.deepcopy(twin)
    for key in dropped:
        without, with_key = contract_only.one_key(raw, twin, key)
        where, field = contract_only.section(raw, key)
        assert field not in without[where] and with_key[where][field] == raw[where][field]
        assert contract_only.contract_only(without)[1] == [k for k in dropped if k != key]
        assert contract_only.contract_only(with_key)[1] == [key]
        rebuilt[where][field] = with_key[where][field]
    for where in ("training", "parallelism", "model"):  # every key put back: the bundled scenario's options again
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


def twin_step_with(name: str, key: str) -> float:
    """The step time of the row's scenario cut by hand to the contract keys, with ``key`` (training or parallelism)
    put back."""
    raw = catalog.load(f"scenarios/{name}")
    data = copy.deepcopy(raw)
    data["training"] = {k: v for k, v in raw["training"].items()
                        if k in ("seq_len", "global_batch_size", "micro_batch_size", "precision",
                                 "activation_recompute", key)}
    data["parallelism"] = {k: v for k, v in raw["parallelism"].items()
                           if k in ("tp", "pp", "dp", "cp", "ep", "etp", "schedule", "virtual_stages",
                                    "sequence_parallel", "zero_stage", key)}
    return simulate(config.from_dict(data, source=name), check_memory=False).summary["step_time_s"]


def test_attribute_prints_the_twins_step_time_with_each_key_put_back(contract_only, capsys):
    """--attribute on megatron-70b-h100: its defer_embedding_wgrad (the output layer's wgrad not deferred, against
    the default's deferral) moves the step by about +0.6%; the printed time with it put back is an independent
    simulation of the hand-cut twin with that key, the twin's time that twin without it, and the sum line the sum of
    the printed changes. (te_version, the key used before round 17, is now its default on Hopper: +0.0%.)"""
    name = "megatron-70b-h100"
    assert contract_only.main(["--attribute", name]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(i for i, line in enumerate(lines) if line.split()[1:2] == [name])
    keys = lines[row].split("  ")[-1].split(", ")
    twin_line, *key_lines, total_line = lines[row + 1:]
    assert [line.split()[1] for line in key_lines] == keys and "defer_embedding_wgrad" in keys
    twin_s = float(twin_line.split()[4])
    assert twin_s == pytest.approx(twin_step_with(name, "seq_len"), abs=1e-4)
    defer = next(line for line in key_lines if line.split()[1] == "defer_embedding_wgrad")
    defer_s, expected = float(defer.split()[2]), twin_step_with(name, "defer_embedding_wgrad")
    assert defer_s == pytest.approx(expected, abs=1e-4)
    assert 0.002 < expected / twin_s - 1 < 0.02  # the output layer's wgrad back on the critical path: about +0.6%
    changes = [float(line.split("(")[1].split("%")[0]) for line in key_lines if " + " not in line.split("+ ", 1)[1]]
    assert total_line.split()[:5] == ["sum", "of", "the", "one-key", "changes"]
    assert float(total_line.split()[5].rstrip("%")) == pytest.approx(sum(changes), abs=0.1 * len(changes) / 2 + 0.05)


def test_a_key_invalid_alone_goes_back_with_its_partner(contract_only, capsys):
    """megatron-1.2b-a100-node: local_ddp: flattened is valid only with its fp16 optimizer, so --attribute and --each
    put it back (and leave it out) with optimizer instead of failing; with no partner the line says why."""
    name = "megatron-1.2b-a100-node"
    assert contract_only.main(["--attribute", "--each", name]) == 0
    out = capsys.readouterr().out
    assert "+ local_ddp + optimizer " in out and "twin with local_ddp + optimizer" in out
    # the partnered row re-counts optimizer's own change: left out of the sum, and the sum line says so
    lines = out.splitlines()
    total_line = next(line for line in lines if "sum of the one-key changes" in line)
    assert "rows with partners left out: local_ddp + optimizer" in total_line
    solo = [float(line.split("(")[1].split("%")[0]) for line in lines
            if line.strip().startswith("+ ") and " s (" in line and " + " not in line.strip()[2:]]
    assert float(total_line.split()[5].rstrip("%")) == pytest.approx(sum(solo), abs=0.1 * len(solo) / 2 + 0.05)
    raw = catalog.load(f"scenarios/{name}")
    twin, _ = contract_only.contract_only(raw)
    keys, err = contract_only.valid_variant(raw, twin, "local_ddp", ["local_ddp"], name, 1)
    assert keys == ["local_ddp"] and isinstance(err, str) and err.startswith("parallelism.local_ddp: flattened")


