"""Round 29: round 28's inputs and the commands attacked end to end (docs/calibration/round-29.md, "Round 29: round 28's
inputs and the commands attacked"). The cases guarding a fix each failed on main before it (the others guard what
stays accepted):

- a sweep resumed (or reused a sibling folder's shard) for a scenario whose fabric file had been edited since: the
  run key hashed the file's path, not what it holds, so the old fabric's step time came back as the new one's;
- Ctrl-C whose handler Python ran inside a weakref callback or a ``__del__`` (matplotlib's and rich's objects die
  often while a compare or a sweep draws) was printed as "Exception ignored in ..." with a traceback and dropped:
  the command ran on to exit 0;
- Ctrl-C while ``compare`` drew its figures, or ``run`` wrote its files, removed every file of runs that had all
  finished (``fresh_folder`` cleans up after an interrupt), and said nothing of them; a sweep interrupted while it drew
  said only "interrupted";
- ``training.optimizer: adam_precision_aware`` or ``adam_moments_dtype: bf16`` with a stated ``mcore_version`` before
  0.11, the precision-aware optimizer's first release, was simulated;
- a resumed sweep read a damaged or hand-edited shard: tracebacks, null rows, NaN; and a sweep resumed by another
  simcluster (an upgrade, an edited data file) reported the shards of the old one;
- a job named ``summary.json`` was simulated, then its folder collided with the run's summary file.
"""

from __future__ import annotations

import copy
import gc
import json
import signal
import time
import weakref
from pathlib import Path

import pytest
import yaml

from simcluster import cli as cli_module
from simcluster.cli.app import Interrupted
from tests.conftest import SMALL

REPO = Path(__file__).resolve().parents[2]
FABRIC = REPO / "topologies" / "two-servers-one-switch.yaml"


def _fabric_scenario(tmp_path: Path) -> Path:
    fabric = tmp_path / "fabric.yaml"
    fabric.write_text(FABRIC.read_text())
    data = copy.deepcopy(SMALL)
    data["name"] = "filefabric"
    data["cluster"] = {"gpu": "h100-sxm", "gpus_per_node": 4, "nodes": 2, "topology": str(fabric)}
    data["parallelism"] = {"tp": 1, "pp": 1, "dp": 8}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_sweep_does_not_resume_from_shards_of_an_edited_fabric_file(cli, tmp_path):
    scenario = _fabric_scenario(tmp_path)
    sweep = ("sweep", scenario, "--gpus", "8", "--jobs", "1", "--no-plots", "--network", "analytic", "--json")
    code, out, err = cli(*sweep, "--out", tmp_path / "sw")
    assert code == 0, err
    before = json.loads(out)["rows"][0]["step_time_s"]
    fabric = tmp_path / "fabric.yaml"
    # the NICs' switch links 400 times slower: the data-parallel all-reduce crosses them
    fabric.write_text(fabric.read_text().replace("bandwidth: 400 Gb/s", "bandwidth: 1 Gb/s"))
    code, out, err = cli(*sweep, "--out", tmp_path / "sw")
    assert code == 0, err
    report = json.loads(out)
    after = report["rows"][0]["step_time_s"]
    assert report["executed"] == 1 and report["reused"] == 0, report
    code, out, err = cli("run", scenario, "--network", "analytic", "--json", "--out", tmp_path / "run")
    assert code == 0, err
    assert after == pytest.approx(json.loads(out)["step_time_s"], rel=1e-12)
    assert after > 2 * before
    # the first sweep's folder, of the old fabric, is another grid's now: kept as it was
    assert json.loads(next((tmp_path / "sw").glob("shards/**/*.json")).read_text())["summary"]["step_time_s"] \
        == before


def test_an_unchanged_fabric_file_still_resumes(cli, tmp_path):
    scenario = _fabric_scenario(tmp_path)
    sweep = ("sweep", scenario, "--gpus", "8", "--jobs", "1", "--no-plots", "--network", "analytic", "--json",
             "--out", tmp_path / "sw")
    assert cli(*sweep)[0] == 0
    code, out, err = cli(*sweep)
    assert code == 0, err
    assert json.loads(out)["reused"] == 1 and json.loads(out)["executed"] == 0


class _Dying:
    pass


def _spin_until(deadline_s: float) -> None:
    while time.monotonic() < deadline_s:
        time.sleep(0.001)


def test_an_interrupt_dropped_inside_a_weakref_callback_is_delivered_again():
    """The handler raises inside the callback, where Python prints and drops the exception; the command must still
    be interrupted, promptly, after the callback returns."""

    def callback(_ref):
        signal.raise_signal(signal.SIGINT)
        for _ in range(1000):  # bytecodes: the handler runs here, inside the callback
            pass

    with pytest.raises(Interrupted) as stop, cli_module._interrupts():
        gc.collect()
        thing = _Dying()
        ref = weakref.ref(thing, callback)  # noqa: F841 - kept alive so that the callback runs
        del thing
        _spin_until(time.monotonic() + 5.0)
    assert stop.value.signum == signal.SIGINT


def test_main_reports_an_interrupt_a_library_kept_as_130(cli, monkeypatch):
    """An interrupt that never reaches main (caught by a library's ``except BaseException``): the command's output
    is whole, and the exit code still says it was interrupted."""
    from simcluster.cli import schema as schema_cli

    real = schema_cli.config.json_schema

    def swallowing():
        try:
            signal.raise_signal(signal.SIGTERM)
            for _ in range(1000):
                pass
        except BaseException:  # noqa: BLE001 - what a careless library does
            pass
        return real()

    monkeypatch.setattr(schema_cli.config, "json_schema", swallowing)
    code, out, err = cli("schema")
    assert code == 143 and err == "interrupted by SIGTERM\n", (code, err)
    assert json.loads(out)["title"]


def _small(tmp_path: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL, sort_keys=False))
    return path


def test_compare_interrupted_while_drawing_keeps_every_finished_run(cli, tmp_path, monkeypatch):
    from simcluster.analysis import plots

    def interrupted(*_args, **_kwargs):
        raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(plots, "save", interrupted)
    code, _, err = cli("compare", _small(tmp_path), "--topology", "rail-fat-tree", "--topology", "leaf-spine",
                       "--network", "analytic", "--out", tmp_path / "c")
    assert code == 130 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "2 of 2 runs finished; wrote compare.csv, compare.json" in err, err
    report = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert len(report["runs"]) == 2 and report["pending"] == 0
    assert len((tmp_path / "c" / "compare.csv").read_text().splitlines()) == 3


def test_run_interrupted_while_writing_keeps_its_summary(cli, tmp_path, monkeypatch):
    from simcluster.engine import results

    def interrupted(*_args, **_kwargs):
        raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(results, "write_chrome_trace", interrupted)
    code, _, err = cli("run", _small(tmp_path), "--network", "analytic", "--out", tmp_path / "r")
    assert code == 130 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "the simulation had finished; wrote summary.json" in err, err
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["summary.json"]
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["step_time_s"] > 0 and summary["gpus"] == 16


@pytest.mark.parametrize(("release", "training", "field"), [
    ("0.1", {"optimizer": "adam_precision_aware"}, "training.optimizer"),
    ("0.10", {"optimizer": "adam_precision_aware"}, "training.optimizer"),
    ("0.10", {"adam_moments_dtype": "bf16"}, "training.adam_moments_dtype"),
    ("0.9", {"optimizer": "adam_precision_aware", "adam_moments_dtype": "bf16"}, "training.optimizer"),
])
def test_the_precision_aware_optimizer_on_a_stated_release_before_it_is_refused(cli, tmp_path, release, training,
                                                                                  field):
    """OptimizerConfig.use_precision_aware_optimizer and exp_avg_dtype first ship in megatron-core 0.11.0 (absent
    from the 0.10.0 wheel's optimizer_config.py): a run stating an earlier release could not have used them. It was
    simulated, with the moments' and master weights' memory and passes of a later release."""
    data = copy.deepcopy(SMALL)
    data["training"] |= {"mcore_version": release, **training}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    code, _, err = cli("run", path, "--network", "analytic", "--out", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: {field}:"), err
    assert f"mcore_version {release!r}" in err and "0.11" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("training", [
    {"mcore_version": "0.11", "optimizer": "adam_precision_aware", "adam_moments_dtype": "bf16"},
    {"mcore_version": "0.15", "optimizer": "adam", "adam_moments_dtype": "bf16"},
    {"optimizer": "adam_precision_aware"},  # no release stated: not refused for one
    {"mcore_version": "0.10", "optimizer": "adam"},
])
def test_the_precision_aware_optimizer_from_its_release_or_unstated_still_runs(cli, tmp_path, training):
    data = copy.deepcopy(SMALL)
    data["training"] |= training
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    code, out, err = cli("run", path, "--network", "analytic", "--json", "--out", tmp_path / "o")
    assert code == 0, err
    assert json.loads(out)["step_time_s"] > 0


def test_replay_interrupted_while_writing_keeps_its_report(cli, tmp_path, monkeypatch):
    from simcluster.analysis import replay as replay_plots
    from tests.cli.hostile_corpus import KINETO

    def interrupted(*_args, **_kwargs):
        raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(replay_plots, "step_overlay", interrupted)
    trace = tmp_path / "t.rank0.json"
    trace.write_text(json.dumps(KINETO))
    code, _, err = cli("replay", trace, "--topology", "rail-fat-tree", "--topology", "leaf-spine", "--out",
                       tmp_path / "r")
    assert code == 130 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "2 of 2 replays finished; wrote replay.json" in err, err
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["replay.json"]
    report = json.loads((tmp_path / "r" / "replay.json").read_text())
    assert len(report["replays"]) == 2 and report["pending"] == 0


@pytest.mark.parametrize("name", ["summary.json", "Summary.JSON"])
def test_a_job_named_like_the_runs_summary_file_is_refused_before_simulating(cli, tmp_path, name):
    """A job's folder is named after it, beside the run's summary.json: a job named summary.json was simulated, then
    the writing failed ("--out: ... File exists"), naming the output folder, not the job. Summary.JSON is the same
    file on a case-insensitive file system (macOS's default)."""
    job = {"model": "gpt3-1.3b", "training": {"seq_len": 2048, "global_batch_size": 16, "micro_batch_size": 1},
           "parallelism": {"tp": 2, "pp": 1, "dp": 4}, "placement": {"first_node": 0, "stride": 1}}
    data = {"name": "jobs", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2},
            "jobs": [{"name": "a", **job}, {"name": name, **job, "placement": {"first_node": 1, "stride": 1}}]}
    path = tmp_path / "jobs.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    code, _, err = cli("run", path, "--network", "analytic", "--out", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: jobs.1.name:"), err
    assert not (tmp_path / "o").exists()


SHARD_DAMAGE = {
    "summary-a-list": lambda shard: shard.update(summary=[1]),  # AttributeError traceback before
    "unknown-status": lambda shard: shard.update(status="bogus"),  # KeyError 'error' traceback before
    "failed-without-error": lambda shard: shard.update(status="failed", error=None),  # "failed: None", exit 2
    # KeyError 'params' traceback before; the params are the grid point's, the shard stays usable
    "no-params": lambda shard: shard.pop("params"),
    "no-summary": lambda shard: shard.pop("summary"),  # a row of nulls, exit 0, before
    "nan-in-summary": lambda shard: shard["summary"].update(mfu=float("nan")),  # reused with NaN before
    "step-as-text": lambda shard: shard["summary"].update(step_time_s="abc"),  # exit 2 naming no file before
    "gpus-zero": lambda shard: shard["summary"].update(gpus=0),
}


@pytest.mark.parametrize("damage", sorted(SHARD_DAMAGE))
def test_a_damaged_shard_is_run_again_not_read(cli, tmp_path, damage):
    """Shards are a cache: one that is not what a run writes (edited by hand, damaged) is recomputed, and the
    sweep's row is the run's; a shard's params are the grid point's (a shard without them is still read)."""
    scenario = _small(tmp_path)
    sweep = ("sweep", scenario, "--gpus", "16", "--jobs", "1", "--no-plots", "--network", "analytic", "--json",
             "--out", tmp_path / "sw")
    code, out, err = cli(*sweep)
    assert code == 0, err
    fresh = json.loads(out)["rows"][0]
    path = next((tmp_path / "sw").glob("shards/**/*.json"))
    shard = json.loads(path.read_text())
    SHARD_DAMAGE[damage](shard)
    path.write_text(json.dumps(shard))
    code, out, err = cli(*sweep)
    assert code == 0 and "Traceback" not in err, err
    report = json.loads(out)
    rerun = damage != "no-params"
    assert (report["executed"], report["reused"]) == ((1, 0) if rerun else (0, 1)), report
    assert report["rows"][0]["step_time_s"] == fresh["step_time_s"] and report["rows"][0]["gpus"] == 16
    assert report["rows"][0]["topology"] == fresh["topology"]
    if rerun:  # the shard mended
        assert json.loads(path.read_text())["summary"]["step_time_s"] == fresh["step_time_s"]


def test_sweep_interrupted_while_drawing_says_what_it_kept(cli, tmp_path, monkeypatch):
    """Every run finished and the table written, the figures interrupted: the line said only "interrupted by
    SIGINT", as if nothing were kept."""
    from simcluster.cli import sweep as sweep_cli

    def interrupted(*_args, **_kwargs):
        raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(sweep_cli, "_plots", interrupted)
    code, _, err = cli("sweep", _small(tmp_path), "--gpus", "16,32", "--jobs", "1", "--network", "analytic",
                       "--out", tmp_path / "sw")
    assert code == 130 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "2 of 2 runs finished; wrote results.csv, sweep.json" in err and "figures interrupted" in err, err
    assert len((tmp_path / "sw" / "results.csv").read_text().splitlines()) == 3
    assert json.loads((tmp_path / "sw" / "sweep.json").read_text())["pending"] == 0


def test_a_sweep_computed_by_another_simcluster_is_not_resumed(cli, tmp_path, monkeypatch):
    """A shard records what one simcluster computed; after an upgrade (or an edited model, data file) the same
    command resumed and reported the old release's steps as the new one's. The run key hashes simcluster's own
    code and data (grid.code_digest): another simcluster's folder is another grid, kept as it was."""
    from simcluster.studies import grid

    sweep = ("sweep", _small(tmp_path), "--gpus", "16", "--jobs", "1", "--no-plots", "--network", "analytic",
             "--json", "--out", tmp_path / "sw")
    assert cli(*sweep)[0] == 0
    monkeypatch.setattr(grid, "code_digest", lambda: "another-release")
    code, out, err = cli(*sweep)
    assert code == 0, err
    report = json.loads(out)
    assert (report["executed"], report["reused"]) == (1, 0) and report["out_dir"].endswith("sw-2"), report
    assert len(list((tmp_path / "sw").glob("shards/**/*.json"))) == 1


def test_the_code_digest_follows_code_and_data_but_not_bundled_scenarios(tmp_path):
    from simcluster.studies import grid

    for name, text in {"engine/simulation.py": "x = 1\n", "data/efficiency.yaml": "gemm: 0.85\n",
                       "data/scenarios/s.yaml": "name: s\n"}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    first = grid.tree_digest(tmp_path)
    (tmp_path / "data/scenarios/s.yaml").write_text("name: t\n")  # a scenario's content is in the run key already
    (tmp_path / "engine/__pycache__").mkdir()
    (tmp_path / "engine/__pycache__/simulation.pyc").write_bytes(b"\0")
    assert grid.tree_digest(tmp_path) == first
    (tmp_path / "data/efficiency.yaml").write_text("gemm: 0.80\n")
    second = grid.tree_digest(tmp_path)
    assert second != first
    (tmp_path / "engine/simulation.py").rename(tmp_path / "engine/other.py")  # the same bytes under another name
    assert grid.tree_digest(tmp_path) not in (first, second)
    assert len(grid.code_digest()) == 16


def _run_and_hang_up(tmp_path: Path, ignore_hangup: bool, steps: int):
    """``simcluster run`` in a process of its own, SIGHUP after 2 s (the terminal closed); ``ignore_hangup``: as
    ``nohup`` starts it."""
    import os
    import subprocess
    import sys

    scenario = _small(tmp_path)

    def hangup_ignored():
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    proc = subprocess.Popen([sys.executable, "-m", "simcluster.cli", "run", str(scenario), "--steps", str(steps),
                             "--out", str(tmp_path / "o")], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                            preexec_fn=hangup_ignored if ignore_hangup else None)
    try:
        proc.communicate(timeout=2)
        pytest.skip("the run finished before the signal")
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=600)
    return proc.returncode, err


def test_a_hangup_is_one_line_and_129_with_nothing_half_written(tmp_path):
    """The terminal closed (SIGHUP): the process died at once, exit -1 (129 in a shell), no line, and a half-written
    ``.NAME.PID.tmp`` file and half an output folder could stay behind."""
    code, err = _run_and_hang_up(tmp_path, ignore_hangup=False, steps=2000)
    assert code == 129 and err.endswith("interrupted by SIGHUP\n") and "Traceback" not in err, (code, err)
    assert not list(tmp_path.rglob(".*.tmp*"))


def test_a_hangup_under_nohup_is_still_ignored(tmp_path):
    code, err = _run_and_hang_up(tmp_path, ignore_hangup=True, steps=300)  # about 6 s on two busy cores
    assert code == 0, (code, err)
    assert (tmp_path / "o" / "summary.json").is_file()
