"""A sweep through a real Dask cluster (a `dask scheduler` and a `dask worker` process on 127.0.0.1) gives the
same numbers as the same sweep on local processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")

START_TIMEOUT_S = 60.0
NUMBERS = ("step_time_s", "tokens_per_s", "mfu", "compute_s", "exposed_comm_s", "pipeline_bubble_s",
           "busiest_link_utilisation", "efficiency", "time_to_target_s", "cost_usd")


def _dask(*args: str, log: Path) -> subprocess.Popen:
    handle = log.open("w")
    return subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=handle, stderr=subprocess.STDOUT,
                            cwd=Path(__file__).resolve().parents[2])


def _wait_for(condition, what: str, processes: list[subprocess.Popen], logs: list[Path]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not condition():
        dead = [p for p in processes if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come up:\n" + "\n".join(log.read_text()[-2000:] for log in logs))
        time.sleep(0.2)


def _address(scheduler_file: Path) -> str | None:
    """The scheduler's address once its file is whole: Dask writes it in place (``open(..., "w")``, then
    ``json.dump``: distributed/scheduler.py), so the file exists empty or cut for a moment, which a loaded machine
    stretches (round 38: it was read as soon as it existed)."""
    try:
        return json.loads(scheduler_file.read_text())["address"]
    except (FileNotFoundError, ValueError, KeyError):
        return None


@pytest.fixture
def dask_cluster(tmp_path):
    """Address of a one-worker Dask cluster; both processes are killed afterwards, whatever happens."""
    scheduler_file = tmp_path / "scheduler.json"
    logs = [tmp_path / "scheduler.log", tmp_path / "worker.log"]
    processes = []
    try:
        processes.append(_dask("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(scheduler_file), log=logs[0]))
        _wait_for(lambda: _address(scheduler_file) is not None, "the Dask scheduler", processes, logs)
        address = _address(scheduler_file)
        processes.append(_dask("worker", address, "--nthreads", "1", "--nworkers", "1", "--no-nanny",
                               "--no-dashboard", "--host", "127.0.0.1", log=logs[1]))
        _wait_for(lambda: "Registered to" in logs[1].read_text(), "the Dask worker", processes, logs)
        yield address
    finally:
        for process in reversed(processes):  # the worker first, while its scheduler can still release it
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _rows(stdout: str) -> dict:
    report = json.loads(stdout)
    return {(row["topology"], row["gpus"]): row for row in report["rows"]}, report


def test_dask_cluster_sweep_matches_local_processes(cli, write_scenario, small_scenario, tmp_path, dask_cluster):
    path = write_scenario(small_scenario)
    common = ("sweep", path, "--gpus", "8,16,32", "--topology", "rail-fat-tree", "--topology",
              "leaf-spine:oversubscription=4", "--network", "analytic", "--json", "--no-plots")
    code, dask_out, err = cli(*common, "--scheduler", dask_cluster, "--out", tmp_path / "dask")
    assert code == 0, err
    code, local_out, err = cli(*common, "--jobs", "2", "--out", tmp_path / "local")
    assert code == 0, err
    on_dask, dask_report = _rows(dask_out)
    on_pool, local_report = _rows(local_out)
    assert dask_report["executed"] == local_report["executed"] == 6
    assert on_dask.keys() == on_pool.keys() and len(on_dask) == 6
    for point, row in on_dask.items():
        assert row["status"] == "ok", point
        for key in NUMBERS:
            assert row[key] == pytest.approx(on_pool[point][key], rel=1e-12), (point, key)
    # the shards are keyed by parameters only: the Dask sweep's shards resume the local sweep's folder
    code, again, _ = cli(*common, "--scheduler", dask_cluster, "--out", tmp_path / "local")
    assert code == 0 and json.loads(again)["reused"] == 6 and json.loads(again)["executed"] == 0
