"""Grids of runs: one scenario over GPU counts, fabrics and varied fields, run on any
``concurrent.futures.Executor`` (local processes, a Dask cluster, or in-process), one shard per run.

How grid points are built and keyed: ``grid``. The driver writes the run's shard, ``shards/<key>.json``, as soon as
the run returns (atomically: temporary file, then rename), so workers need no shared file system and a sweep
interrupted at any point resumes by computing only the keys without a shard. Runs that fail with a user error
(layout does not fit in memory, invalid layout) are deterministic: their shard records the error and they are
not retried. Anything else (a crashed worker, an exception in the engine) is reported but leaves no shard, so the
next run of the sweep retries it.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import glob
import hashlib
import itertools
import json
import os
import shutil
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from simcluster.core import inputs, outputs, units
from simcluster.core.errors import ScenarioError
from simcluster.outcomes import economics, laws, returns
from simcluster.spec import config
from simcluster.studies import workers
from simcluster.studies.grid import SHARD_FORMAT, Task

if TYPE_CHECKING:  # pandas is loaded when a table is built, not by the commands importing this module
    import pandas as pd

SHARD_DIR = "shards"
DEFAULT_LAW = laws.DEFAULT_LAW  # one default law everywhere (outcomes.laws)
# The grid a sweep folder belongs to: written before the first run, so that a sweep of another grid never writes
# its results into the folder (``folder_for``).
GRID_FILE = "grid.json"
# Status of a grid point an interrupted sweep did not finish (``collect``).
PENDING = "pending"

# ---- running one ---------------------------------------------------------------------------------------------
def _simulate(scenario, network, steps):
    """The engine call (a module-level seam: tests count runs through it)."""
    from simcluster.engine import simulate

    return simulate(scenario, network=network, steps=steps)


def run_task(task: Task) -> dict:
    """Run one grid point and return its shard (a JSON-ready dict). Executes in a worker process.

    User errors (ScenarioError) give status 'failed'; the caller decides about other exceptions.
    """
    shard = {"format": SHARD_FORMAT, "key": task.key, "params": task.params, "network": task.network,
             "steps": task.steps}
    if task.error is not None:
        return {**shard, "status": "failed", "error": task.error}
    try:
        scenario = config.from_dict(task.scenario, source="sweep")
        if task.samples > 1:  # several variability seeds: the median run, with step-time percentiles
            from simcluster.studies import samples

            result = samples.run_samples(scenario, task.samples,
                                         lambda seeded: _simulate(seeded, task.network, task.steps))
        else:
            result = _simulate(scenario, task.network, task.steps)
    except ScenarioError as err:
        return {**shard, "status": "failed", "error": str(err)}
    return {**shard, "status": "ok", "summary": result.summary}


def _run_task_safely(task: Task) -> dict:
    """``run_task`` with unexpected exceptions turned into status 'error' (not cached: retried next time)."""
    try:
        return run_task(task)
    except Exception as err:  # noqa: BLE001 - a sweep reports a crashing run and carries on
        last = traceback.format_exception_only(type(err), err)[-1].strip()
        return {"format": SHARD_FORMAT, "key": task.key, "params": task.params, "status": "error", "error": last}


# ---- shards --------------------------------------------------------------------------------------------------
def shard_path(out_dir: Path, key: str) -> Path:
    return Path(out_dir) / SHARD_DIR / f"{key}.json"


def read_shard(out_dir: Path, key: str) -> dict | None:
    """The stored outcome of run ``key``, or None when absent, unreadable (binary, truncated, too deep) or of
    another format: it is then simply run again."""
    path = shard_path(out_dir, key)
    if not path.is_file():
        return None
    try:
        shard = inputs.load_json(path, what="sweep shard")
    except ScenarioError:
        return None
    if not isinstance(shard, dict) or shard.get("format") != SHARD_FORMAT or shard.get("key") != key:
        return None
    if shard.pop(SEAL, None) != _seal(shard):  # edited since it was written, or by another hand
        return None
    return shard if _whole(shard) else None


# A shard's checksum of its own content (``write_shard``): a shard edited after it was written, by hand or by a
# script, with numbers in range (a plausible step time) is run again rather than read as the scenario's result
# (round 30). The key already hashes what a run reads (the scenario, a fabric file's bytes, simcluster's code and
# data: ``grid.run_key``); the seal ties the result to it. It is no signature: whoever can write the folder can
# recompute it, as they can write its results.csv.
SEAL = "seal"


def _seal(body: dict) -> str:
    """sha256 (16 hex digits) of a shard's content as JSON reads it back (canonical: sorted keys, no spaces), its
    ``params`` left out: a reused shard's are the grid point's, whatever the file says (round 29). NaN is let
    through: a file may hold it, what ``write_shard`` seals never does, so such a file's seal differs."""
    read = {name: value for name, value in body.items() if name != "params"}
    return hashlib.sha256(json.dumps(read, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


# A finished run's summary always holds these, each a finite number > 0 (engine/results.summarize).
_SUMMARY_POSITIVE = ("step_time_s", "tokens_per_s", "gpus")


def _finite_throughout(value) -> bool:
    """No NaN or infinity anywhere in a JSON value (the writer stores a non-finite figure as null), and no integer
    past a float's range (``10**400`` in a hand-sealed shard was an OverflowError traceback in the results table,
    round 31)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return units.finite_float(value) is not None
    if isinstance(value, dict):
        return all(_finite_throughout(item) for item in value.values())
    if isinstance(value, list):
        return all(_finite_throughout(item) for item in value)
    return True


def _whole(shard: dict) -> bool:
    """Whether a shard is what ``run_task`` writes: an "ok" run with a summary (finite throughout, its step time,
    throughput and GPU count numbers > 0) or a "failed" one with its error text. A shard edited by hand or damaged
    otherwise (a list for a summary, another status, NaN) is run again rather than read: it was a KeyError or an
    AttributeError traceback after the grid, or a row of nulls (round 29)."""
    if shard.get("status") == "failed":
        return isinstance(shard.get("error"), str)
    summary = shard.get("summary")
    if shard.get("status") != "ok" or not isinstance(summary, dict) or not _finite_throughout(summary):
        return False
    return all(isinstance(summary.get(name), int | float) and not isinstance(summary.get(name), bool)
               and summary[name] > 0 for name in _SUMMARY_POSITIVE)


def write_shard(out_dir: Path, shard: dict) -> Path:
    """Write atomically: a killed sweep leaves whole shards or none, never half a file; sealed (``_seal``) with the
    content as it is written, so that ``read_shard`` reads only what this wrote."""
    path = shard_path(out_dir, shard["key"])
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.loads(outputs.dumps({name: value for name, value in shard.items() if name != SEAL}, default=str))
    return outputs.write_text(path, outputs.dumps({**body, SEAL: _seal(body)}, indent=1) + "\n")


# ---- executors -----------------------------------------------------------------------------------------------
# Address schemes of Dask's communication layer (distributed.comm.registry); anything else cannot connect.
SCHEDULER_SCHEMES = ("tcp", "tls", "inproc", "ucx", "ws", "wss")


def check_scheduler(address: str) -> str:
    """A Dask scheduler address SCHEME://HOST:PORT (or HOST:PORT, tcp implied) with a known scheme."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "tcp", address
    if scheme not in SCHEDULER_SCHEMES or not rest:
        raise ScenarioError("--scheduler", f"expected SCHEME://HOST:PORT with SCHEME one of "
                            f"{', '.join(SCHEDULER_SCHEMES)}, got {address!r}")
    host, colon, port = rest.rpartition(":")
    number = port.lstrip("+-")
    if scheme != "inproc" and colon and host and number.isdigit() and not (
            port == number and len(number) <= 5 and 1 <= int(number) <= 65535):
        # no TCP port outside 1..65535: Dask tried for its 10 s timeout first (round 31)
        raise ScenarioError("--scheduler", f"the port {port[:20]!r} is not one of 1 to 65535, in {address[:80]!r}")
    return address


@contextlib.contextmanager
def executor(jobs: int | None = None, scheduler: str | None = None) -> Iterator[tuple[cf.Executor, int]]:
    """(executor, parallel slots): a Dask cluster's when ``scheduler`` is given, else ``jobs`` local processes
    (``workers.local``: default one per CPU; 1: in this process)."""
    if scheduler is not None:
        try:
            from dask.distributed import Client
        except ImportError:
            raise ScenarioError("--scheduler", "needs Dask: pip install 'simcluster[distributed]'") from None
        check_scheduler(scheduler)
        try:
            client = Client(scheduler, timeout="10s", set_as_default=False)
        except Exception as err:  # noqa: BLE001 - unreachable (OSError, TimeoutError), a bad address (ValueError),
            # or another server's reply read as a Dask frame length (MemoryError: 3 EiB asked for)
            _discard_client(err.__traceback__, Client)
            why = ("the server there does not answer as a Dask scheduler" if isinstance(err, MemoryError) else
                   " ".join(str(err).split())[:200] or type(err).__name__)
            raise ScenarioError("--scheduler", f"cannot reach the Dask scheduler at {scheduler}: {why}") from None
        try:
            slots = max(1, sum(client.nthreads().values()))
            yield client.get_executor(pure=False), slots
        finally:
            client.close()
        return
    with workers.local(jobs) as local:
        yield local


def _discard_client(trace, client_class) -> None:
    """The half-started Client of a failed connection (found in the failure's traceback) marked closed and its
    event loop stopped: else its ``__del__`` waits twice the timeout (20 s) to close a connection never made and
    prints a traceback after the one-line error (distributed 2024-2025)."""
    while trace is not None:
        client = trace.tb_frame.f_locals.get("self")
        if isinstance(client, client_class):
            with contextlib.suppress(Exception):
                client.status = "closed"
                client._loop_runner.stop()  # noqa: SLF001 - no public way to drop a client that never started
            return
        trace = trace.tb_next


# ---- running a grid ------------------------------------------------------------------------------------------
@dataclass
class SweepRun:
    """What a sweep did: every grid point's shard, in grid order, and which were computed now."""

    shards: list[dict]
    executed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[dict]:
        return [shard for shard in self.shards if shard["status"] not in ("ok", PENDING)]

    @property
    def pending(self) -> list[dict]:
        """Grid points not run yet (an interrupted sweep)."""
        return [shard for shard in self.shards if shard["status"] == PENDING]

    @property
    def summaries(self) -> list[dict]:
        return [shard for shard in self.shards if shard["status"] == "ok"]


def run_grid(tasks: list[Task], out_dir: Path, pool: cf.Executor, slots: int = 1, *, resume: bool = True,
             on_done: Callable[[dict, bool], None] | None = None, shard_sources: list[Path] = ()) -> SweepRun:
    """Run every task without a shard in ``out_dir`` on ``pool``; write each shard when it returns.

    ``shard_sources``: other sweep folders (of other grids) whose shards are reused when they hold a task's key
    (keys hash the whole run, so a shard is the same whichever grid computed it); a reused shard is copied into
    ``out_dir``, which stays complete on its own.

    At most ``2 * slots`` runs are in flight, so an interrupted sweep has little queued work to throw away.
    ``on_done(shard, reused)`` is called once per grid point (for progress bars).
    """
    keys = [task.key for task in tasks]
    if len(set(keys)) != len(keys):
        raise ScenarioError("sweep", "two grid points are the same run (a varied value repeats?)")
    done: dict[str, dict] = {}
    reused: list[str] = []
    todo = []
    for task in tasks:
        shard = None
        if resume:
            shard = read_shard(out_dir, task.key)
            for source in shard_sources:
                if shard is not None:
                    break
                shard = read_shard(source, task.key)
                if shard is not None:
                    write_shard(out_dir, shard)
        if shard is not None:
            shard = {**shard, "params": task.params}  # what the grid point is, whatever the file says
            done[task.key] = shard
            reused.append(task.key)
            if on_done:
                on_done(shard, True)
        else:
            todo.append(task)
    executed: list[str] = []
    claimed: set[str] = set()

    def finished_elsewhere(task: Task) -> bool:
        """Whether another sweep of this folder wrote the task's shard since this one looked (then reused)."""
        shard = read_shard(out_dir, task.key) if resume else None
        if shard is None:
            return False
        _release(out_dir, claimed, task.key)
        done[task.key] = {**shard, "params": task.params}
        reused.append(task.key)
        if on_done:
            on_done(done[task.key], True)
        return True

    def queue():
        """The tasks to submit, as slots free: a task another sweep of this folder has claimed (``_claim``) is
        put off to the end; a task whose shard another sweep wrote meanwhile is read, not run."""
        deferred = []
        for task in todo:
            made = _claim(out_dir, task.key)
            if made is False:
                deferred.append(task)
                continue
            if made:
                claimed.add(task.key)
            if not finished_elsewhere(task):
                yield task
        for task in deferred:
            if not finished_elsewhere(task):  # still under way, or a claim left by a sweep killed: run here
                claimed.add(task.key)  # and its claim removed after
                yield task

    def finish(future: cf.Future, task: Task) -> None:
        try:
            shard = future.result()
        except Exception as err:  # noqa: BLE001 - e.g. BrokenProcessPool, a lost Dask worker
            shard = {"format": SHARD_FORMAT, "key": task.key, "params": task.params, "status": "error",
                     "error": f"{type(err).__name__}: {err}"}
        executed.append(task.key)
        if shard["status"] != "error":
            write_shard(out_dir, shard)
        done[task.key] = shard
        _release(out_dir, claimed, task.key)
        if on_done:
            on_done(shard, False)

    try:
        with contextlib.closing(workers.completed(pool, _run_task_safely, queue(), max(1, 2 * slots))) as calls:
            for task, future in calls:
                finish(future, task)
    except cf.BrokenExecutor as err:  # a worker killed (out of memory, kill -9): the pool takes no more runs
        # (round 38: a BrokenProcessPool traceback, exit 1, at the next run submitted); ``validate`` says the same
        kept = sum(done[key]["status"] != "error" for key in executed)
        raise ScenarioError("--jobs", f"a worker process died ({err}); the {kept} run(s) finished are kept as "
                            "shards: run the same command to resume (--jobs 1 runs in this process)") from None
    finally:
        for key in list(claimed):
            _release(out_dir, claimed, key)
    return SweepRun([done[key] for key in keys], executed, reused)


# A run under way in a sweep folder: ``shards/<key>.claim``, made exclusively (O_EXCL) when the run is submitted and
# removed when its shard is written or the sweep stops. Two sweeps of one grid started together into one folder
# both ran every point (round 34's note, round 35 review): each now puts off the points the other has claimed and
# reads their shards at its end. A claim is only an order: one left by a killed sweep, or a point the other is
# still running at the end, is run again (a duplicate, never a wait nor a lost point).
CLAIM_SUFFIX = ".claim"


def _claim(out_dir: Path, key: str) -> bool | None:
    """True when this sweep made the claim of ``key``; False when another sweep holds it; None when no claim can be
    made here (the run goes ahead: a shards folder that cannot be written is refused when its shard is)."""
    path = shard_path(out_dir, key).with_suffix(CLAIM_SUFFIX)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    except OSError:
        return None
    return True


def _release(out_dir: Path, claimed: set[str], key: str) -> None:
    if key in claimed:
        claimed.discard(key)
        with contextlib.suppress(OSError):
            shard_path(out_dir, key).with_suffix(CLAIM_SUFFIX).unlink()


# ---- the folder of a grid, and what an interrupted sweep finished ---------------------------------------------
def grid_key(tasks: list[Task]) -> str:
    """Hash of the grid's run keys (order-independent): two commands with this key compute the same runs."""
    blob = "\n".join(sorted(task.key for task in tasks))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _owner(folder: Path) -> str | None:
    """The grid key a sweep folder belongs to; '' for an empty folder, None for a folder of something else."""
    if not folder.exists():
        return ""
    if not folder.is_dir():
        return None
    if not any(folder.iterdir()):
        return ""
    try:
        data = inputs.load_json(folder / GRID_FILE, what="sweep grid file")
    except ScenarioError:
        return None
    return data.get("grid_key") if isinstance(data, dict) else None


def folder_for(out_dir: Path, tasks: list[Task]) -> tuple[Path, Callable[[], None] | None]:
    """The folder of this grid: ``out_dir`` when it is new, empty, or holds this grid's sweep (resume), else the
    first ``out_dir-2``, ``out_dir-3``, ... that is: a sweep of another grid, or another command's outputs, are
    never overwritten. The grid file is written into it. Returns it and what undoes it (a sweep whose every run
    failed keeps nothing: cli/sweep.py): None when it holds this grid's earlier runs (kept), else ``undo``, which
    removes what this sweep put there: the folder and the parents made for it, or, in a folder that was there
    empty, everything in it (round 33 review: the grid file and the failures' shards stayed in an empty folder the
    user made, and ``--out a/new/x`` left ``a/new/``)."""
    key = grid_key(tasks)
    grid = outputs.dumps({"format": SHARD_FORMAT, "grid_key": key, "runs": len(tasks)}) + "\n"
    while True:  # a folder another sweep claimed meanwhile is looked at again: its grid (resumed) or another's
        candidate, index = Path(out_dir), 2
        while (owner := _owner(candidate)) not in ("", key):
            candidate = Path(out_dir).with_name(f"{Path(out_dir).name}-{index}")
            index += 1
        made = list(itertools.takewhile(lambda folder: not folder.exists(), (candidate, *candidate.parents)))
        candidate.mkdir(parents=True, exist_ok=True)
        if owner == key:  # this grid's earlier runs: resumed, and kept whatever happens
            outputs.write_text(candidate / GRID_FILE, grid)
            return candidate, None
        undo = functools.partial(_undo_folder, candidate, made)
        try:
            # written only where no grid file is (round 34): two sweeps of other grids started together both found
            # the folder new and wrote their grid file there, the later over the earlier, then both their shards
            if outputs.write_new(candidate / GRID_FILE, grid):
                return candidate, undo
        except BaseException:  # a full disk, an interrupt: leave no empty folder behind
            undo()
            raise


def _undo_folder(folder: Path, made: list[Path]) -> None:
    """Remove what a sweep wrote into ``folder`` (new, or empty before it), then the folders in ``made`` (``folder``
    and the parents made for it, innermost first) when empty: a folder another command filled meanwhile is kept."""
    for child in (folder.iterdir() if folder.is_dir() else ()):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                child.unlink()
    for path in made:
        with contextlib.suppress(OSError):
            path.rmdir()


def sibling_folders(requested: Path, out_dir: Path) -> list[Path]:
    """The sweep folders ``requested``, ``requested-2``, ... other than ``out_dir``: other grids of the same
    sweep, whose shards ``run_grid`` may reuse."""
    requested = Path(requested)
    found = []
    for candidate in [requested, *sorted(requested.parent.glob(f"{glob.escape(requested.name)}-*"))]:
        if candidate != Path(out_dir) and (candidate / GRID_FILE).is_file():
            found.append(candidate)
    return found


def collect(tasks: list[Task], out_dir: Path) -> SweepRun:
    """The grid as far as its shards go: every finished point's shard, ``PENDING`` for the others (what an
    interrupted sweep reports and writes)."""
    shards = []
    for task in tasks:
        shard = read_shard(out_dir, task.key)
        shards.append({**shard, "params": task.params} if shard else {
            "format": SHARD_FORMAT, "key": task.key, "params": task.params, "status": PENDING, "error": None})
    return SweepRun(shards)


# ---- tables --------------------------------------------------------------------------------------------------
def default_target_loss(scenario, law: laws.Law) -> float:
    """The loss of a compute-optimal training run of the scenario's model under ``law``: L(N, D_opt(N)), with
    D_opt the tokens of the budget whose optimal model has N parameters (C = 6 N D, Hoffmann et al. 2022)."""
    n_params = economics.plant_of(scenario).params_for(law)
    flop = float(law.flop_for_optimal_params(n_params))
    return float(law.loss(n_params, flop / (laws.FLOP_PER_PARAM_TOKEN * n_params)))


_SCALAR_SUMMARY = ("step_time_s", "tokens_per_s", "mfu", "hfu", "model_tflops_per_gpu", "hardware_tflops_per_gpu",
                   "compute_s", "exposed_comm_s", "pipeline_bubble_s", "busiest_link_utilisation",
                   "peak_memory_per_gpu_bytes", "cost_per_step_usd", "global_batch_size", "microbatches",
                   "network_model", "wall_time_s", "goodput", "interruptions_per_day", "checkpoint_interval_s",
                   "step_time_p10_s", "step_time_p50_s", "step_time_p90_s", "step_time_p99_s", "samples",
                   "deferred_output_wgrads")


def flat_attribution(summary: dict) -> dict:
    """The summary's nested figures a row of a table needs, flat: exposed communication per link tier
    (``exposed_comm_<tier>_s``), peak utilisation per link class (``peak_utilisation_<class>``) and the fabric's
    capital cost, power and share of a step's cost."""
    row = {f"exposed_comm_{tier}_s": seconds
           for tier, seconds in (summary.get("exposed_comm_by_link_class_s") or {}).items()}
    row |= {f"peak_utilisation_{kind}": value
            for kind, value in (summary.get("peak_link_utilisation_by_kind") or {}).items()}
    fabric = summary.get("fabric") or {}
    if fabric:
        row |= {"fabric_capex_usd": fabric["capex_usd"], "fabric_power_w": fabric["power_w"],
                "fabric_usd_per_gpu_hour": fabric["usd_per_gpu_hour"]}
    if "cost_per_step_fabric_usd" in summary:
        row["cost_per_step_fabric_usd"] = summary["cost_per_step_fabric_usd"]
    return row


# The resolved training.moe_token_drop of an MoE point: a varied moe_dispatcher or ep_alltoall turns NeMo's Mixtral
# token drop (capacity 1.0, padded; config.NEMO_TOKEN_DROP_MODELS) on or off without being named, so the tables show
# it per point (``token_drop_note`` says when the points differ).
TOKEN_DROP_COLUMN = "moe_token_drop"


def moe_token_drop(scenario: config.Scenario) -> bool | None:
    """The scenario's resolved training.moe_token_drop; None for a dense model."""
    return None if scenario.model.moe is None else scenario.training.moe_token_drop


def token_drop_note(values) -> str | None:
    """One line when the points' resolved token drop differs (``values``: per point, None or NaN for a dense one),
    else None: such points compare token drop as well as what was varied."""
    seen = {bool(value) for value in values if value is not None and value == value}  # NaN != NaN
    if len(seen) < 2:
        return None
    return ("note: training.moe_token_drop differs between the points (NeMo's token drop, capacity 1.0 padded, "
            "applies only with moe_dispatcher alltoall and ep_alltoall direct): set training.moe_token_drop: false "
            "to compare dropless runs")


def group_label(params: dict) -> str:
    """The series a run belongs to in plots: its fabric plus every varied value except the GPU count."""
    parts = [str(params["topology"])]
    parts += [f"{key.rsplit('.', 1)[-1]}={value}" for key, value in params.items() if key not in ("topology", "gpus")]
    return " ".join(parts)


# What reading a stored summary can raise when its shard was forged or damaged past ``_whole``'s checks (a list
# where a mapping was written, a figure missing, a throughput no hardware reaches).
_UNREADABLE = (ScenarioError, KeyError, TypeError, AttributeError, ValueError)


def _shard_error(err: Exception, key: str, out_dir: Path | None) -> ScenarioError:
    """The one-line error of a stored shard whose summary cannot make a row: named by its file (round 29: an
    impossible throughput named only ``summary.tokens_per_s``; a list for ``layout`` was a traceback)."""
    what = str(err) if isinstance(err, ScenarioError) else f"its summary cannot be read ({type(err).__name__}: {err})"
    where = str(shard_path(out_dir, key)) if out_dir is not None else f"sweep shard {key}"
    return ScenarioError(where, f"{what} (not what a run writes: a damaged or edited shard; remove it, or sweep with "
                         "--fresh, to run that point again)")


def table(run: SweepRun, tasks: list[Task], law: laws.Law | str = DEFAULT_LAW, target_loss: float | None = None,
          threshold: float = returns.DEFAULT_EFFICIENCY_THRESHOLD,
          out_dir: Path | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """(one row per grid point, one entry per series): parameters, summary figures, and per series the scaling
    efficiency, time and cost to the target loss (``returns.sweep_table``) and the knee (``returns.knee``).

    A series is the runs that differ only in GPU count. Prices and the model size come from the series' own
    scenario; ``target_loss`` defaults to ``default_target_loss`` of that scenario's model. A summary that cannot
    make its row, read from a shard, is refused naming that shard (its file in ``out_dir``, the sweep's folder, when
    given).
    """
    law = laws.resolve(law)
    scenario_of = {task.key: task.scenario for task in tasks}
    computed = set(run.executed)  # the others were read from their shards
    rows, series = [], {}
    for shard in run.shards:
        label = group_label(shard["params"])
        row = {"key": shard["key"], **shard["params"], "series": label, "status": shard["status"],
               "error": shard.get("error")}
        summary = shard.get("summary")
        if summary is not None:
            try:
                row |= {key: summary[key] for key in _SCALAR_SUMMARY if key in summary}
                row |= {f"layout_{axis}": value for axis, value in summary.get("layout", {}).items()}
                row |= flat_attribution(summary)
            except _UNREADABLE as err:
                if shard["key"] in computed:
                    raise
                raise _shard_error(err, shard["key"], out_dir) from None
            drop = moe_token_drop(config.from_dict(scenario_of[shard["key"]], source="sweep"))
            if drop is not None:
                row[TOKEN_DROP_COLUMN] = drop
            entry = series.setdefault(label, {"key": shard["key"], "summaries": [], "keys": []})
            entry["summaries"].append(summary)
            entry["keys"].append(shard["key"])
        rows.append(row)
    import pandas as pd

    frame = pd.DataFrame(rows)
    # a grid point's values as given: pandas made `--vary parallelism.tp=2,2.0` (2 ran, 2.0 was refused) one float
    # column and wrote the row of the run at tp 2 as 2.0 (round 36); a column mixing number types keeps each one's
    for column in dict.fromkeys(key for shard in run.shards for key in shard["params"]):
        values = [row.get(column) for row in rows]
        if len({type(value) for value in values if isinstance(value, int | float)}) > 1:
            frame[column] = pd.Series(values, index=frame.index, dtype=object)
    groups = []
    for label, entry in series.items():
        scenario = config.from_dict(scenario_of[entry["key"]], source="sweep")
        target = default_target_loss(scenario, law) if target_loss is None else target_loss
        try:
            by_gpus = returns.sweep_table(entry["summaries"], scenario, law, target)
        except _UNREADABLE:  # which shard: the first whose summary fails alone
            for key, summary in zip(entry["keys"], entry["summaries"], strict=True):
                try:
                    returns.sweep_table([summary], scenario, law, target)
                except _UNREADABLE as alone:
                    if key in computed:
                        raise
                    raise _shard_error(alone, key, out_dir) from None
            raise
        groups.append({"label": label, "rows": by_gpus, "knee": returns.knee(by_gpus, threshold),
                       "law": law.name, "target_loss": target})
        for point in by_gpus:
            mask = (frame["series"] == label) & (frame["gpus"] == point["gpus"]) & (frame["status"] == "ok")
            for key in ("speedup", "efficiency", "goodput_tokens_per_s", "time_to_target_s", "gpu_hours", "cost_usd",
                        "energy_j"):
                frame.loc[mask, key] = point[key]
            frame.loc[mask, "target_loss"] = target
    return frame, groups


def write_table(frame: pd.DataFrame, out_dir: Path, table_format: str = "csv") -> Path:
    """results.csv, or results.parquet with ``table_format`` parquet (``core.outputs.write_table``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return outputs.write_table(frame, out_dir / "results", table_format)
