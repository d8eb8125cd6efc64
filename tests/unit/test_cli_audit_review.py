"""Round 20's review of the CLI audit (docs/calibration/round-20.md, "Round 20: review of the CLI audit"): one test per
defect the review found in the audit's fixes; each fails without its fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from simcluster.core import inputs
from simcluster.core.errors import ScenarioError
from simcluster.studies import grid


# ---- keys that differ as written but are one key to the mapping ------------------------------------------------
@pytest.mark.parametrize(("text", "held"), [
    ("m:\n  1: a\n  1.0: b\n", 1), ("m:\n  1: a\n  0x1: b\n", 1), ("m:\n  true: a\n  yes: b\n", True),
    ("m:\n  null: a\n  ~: b\n", None), ("m: {1: a, true: b}\n", 1),
])
def test_keys_equal_once_read_are_one_key_written_twice(text, held):
    """The audit compared keys as written (tag and text): PyYAML reads 1, 1.0 and 0x1 (true and yes; null and ~)
    as one dict key and kept the last value unsaid, as it did for the same key written twice."""
    import yaml

    assert list(yaml.safe_load(text)["m"]) == [held]  # what the parser alone does: one key, the last value
    with pytest.raises(ScenarioError, match=r"written twice in one mapping \(lines? \d.*first as"):
        inputs.parse_yaml(text, "f.yaml")


def test_keys_that_differ_in_type_and_value_are_two():
    assert inputs.parse_yaml("m:\n  1: a\n  '1': b\n  1.5: c\n", "f.yaml")["m"] == {1: "a", "1": "b", 1.5: "c"}


# ---- --vary: every part of a path checked, not only the second --------------------------------------------------
@pytest.mark.parametrize("key", ["model.moe.nosuch", "model.mla.nosuch", "cluster.nic.nosuch", "cluster.gpu.nosuch",
                                 "network.x", "model.layers.x", "variability.stragglers.gpu", "name.x"])
def test_vary_refuses_a_deeper_part_the_scenario_does_not_have(key):
    """The audit checked the first two parts: `model.moe.nosuch` (or `network.x`) still ran every grid point and
    failed each (`nosuch: unknown key`), exit 2 only after the grid, leaving a folder of failed shards."""
    with pytest.raises(ScenarioError, match="not a scenario field") as err:
        grid.parse_vary([f"{key}=1,2"])
    assert err.value.field == "--vary"


@pytest.mark.parametrize("key", ["model.moe.experts", "model.mla.kv_lora_rank", "cluster.nic.rate",
                                 "reliability.failure_rates.gpu", "economics.fabric_prices.leaf-spine",
                                 "variability.seed", "network", "variability", "model"])
def test_vary_accepts_nested_fields_and_free_keys_of_mappings(key):
    assert grid.resolve_key(key) == key


def test_every_key_of_every_bundled_scenario_can_be_varied():
    """No valid path is refused up front: each key, at every depth, of each bundled single-job scenario."""
    from simcluster.spec import config

    refused = []

    def walk(data: dict, prefix: str) -> None:
        for key, value in data.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            try:
                grid.resolve_key(path)
            except ScenarioError as err:
                if "not varied this way" not in err.message and "--gpus" not in err.message:
                    refused.append(f"{path}: {err.message}")
            if isinstance(value, dict):
                walk(value, path)

    for path in sorted(config.bundled_dir().glob("*.yaml")):
        data = inputs.load_yaml(path, inputs.MAX_SCENARIO_BYTES)
        if "jobs" not in data:
            walk(data, "")
    assert refused == []


# ---- validate --variability: a key written replaces the measured one wherever 'measured' stands -----------------
@pytest.mark.parametrize("text", ["gpu_speed_cv=0.03,measured", "measured,gpu_speed_cv=0.03"])
def test_a_written_variability_key_wins_over_measured_in_either_order(text):
    """'gpu_speed_cv=0.03,measured' ran at the measured 0.015: 'measured' after a key replaced it unsaid."""
    from simcluster.studies import validation

    spread = validation.parse_variability(text)
    assert spread.gpu_speed_cv == 0.03
    assert spread.kernel_jitter_cv == validation.measured_variability()["kernel_jitter_cv"]


# ---- --out: every command's help says where a folder holding files (or `.`) goes ---------------------------------
def test_every_out_option_says_where_a_folder_holding_files_goes():
    """The audit sent `--out .` holding files to the sibling NAME-2 and wrote so in docs/robustness.md; the help of
    run, compare, replay, laws project and laws loss-vs-time said only 'never overwritten'."""
    import typer.main

    import simcluster.cli  # noqa: F401 - registers every command
    from simcluster.cli.app import app

    found, silent = [], []

    def walk(command, path: str) -> None:
        for param in command.params:
            if "--out" in getattr(param, "opts", ()):
                found.append(path)
                if "NAME-2" not in (param.help or "") or "`.`" not in (param.help or ""):
                    silent.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "simcluster")
    assert len(found) >= 7 and silent == [], silent


# ---- sweep: workers that cannot start, now that they start before the folder ------------------------------------
def test_workers_that_cannot_start_are_not_reported_as_a_write_into_none(cli, write_scenario, small_scenario, tmp_path,
                                                                         monkeypatch):
    """The audit starts the workers before the folder is made; an OSError there (no /dev/shm for the pool's
    semaphores, too many open files) read `--out: writing into 'None' failed ...; the finished runs' shards are
    kept`, of a folder that was never made."""
    import contextlib
    import errno

    from simcluster.studies import sweep

    @contextlib.contextmanager
    def no_workers(jobs, scheduler):
        raise OSError(errno.EMFILE, "Too many open files")
        yield  # pragma: no cover - a generator, as the executor it stands for

    monkeypatch.setattr(sweep, "executor", no_workers)
    code, _, err = cli("sweep", write_scenario(small_scenario), "--jobs", "2", "--no-plots", "--out", tmp_path / "sw")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: --jobs: ") and "None" not in err, err
    assert "Too many open files" in err and not (tmp_path / "sw").exists()


# ---- replay: the default folder of a trace with a long name of many-byte characters ------------------------------
def test_replay_default_folder_name_is_cut_in_bytes():
    """The audit cut the name at 200 characters: a trace named with 83 CJK characters (249 bytes, a legal file
    name) gave runs/replay-<256 bytes>, refused as `--out: ... is 256 bytes`, an option the user never gave."""
    from simcluster.cli import replay as replay_cli
    from simcluster.cli.outputs import NAME_MAX_BYTES

    name = replay_cli._trace_name([Path("数" * 83 + ".et")])
    assert len(f"replay-{name}-2".encode()) <= NAME_MAX_BYTES and name == "数" * (replay_cli.MAX_TRACE_NAME // 3)
    assert replay_cli._trace_name([Path("é" * 150 + ".json")]) == "é" * 100  # two bytes each: 200 bytes


# ---- --out . end to end: a file of the user's with the very name the command writes stays as it was --------------
def test_out_dot_never_touches_a_user_file_of_the_same_name(cli, tmp_path, monkeypatch):
    """The audit's test of `output_dir(Path('.'))` looked at a folder nothing had written into; here a command
    writes, and the user's relative_loss.png (the name `laws plot` writes) must stay byte for byte."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "relative_loss.png").write_bytes(b"mine")
    monkeypatch.chdir(work)
    code, out, err = cli("laws", "plot", "--out", ".")
    assert code == 0, err
    assert (work / "relative_loss.png").read_bytes() == b"mine" and sorted(p.name for p in work.iterdir()) == [
        "relative_loss.png"]
    assert (tmp_path / "work-2" / "relative_loss.png").stat().st_size > 1000 and "work-2" in out + err
