"""Local worker processes: the pool ``sweep`` runs its grid points on and ``validate`` its cases on
(``--jobs N``), and the loop that keeps a few calls in flight and hands each back as it finishes.

``local(jobs)`` gives (executor, slots): ``jobs`` processes, or this process itself for one (``InlineExecutor``:
debuggers, tests, a machine without ``/dev/shm``). Workers leave SIGINT and SIGHUP to the parent, which stops them on
an interrupt or an error (``_stop_workers``): in-flight calls are abandoned, not waited for.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator

# Upper bound of --jobs (sweep, validate): each worker is a Python process of ~100 MB (numpy, pandas, networkx
# loaded), so 1024 of them is already 100 GB; more is a typo.
MAX_JOBS = 1024
MAX_JOBS_REASON = "worker processes of ~100 MB each"


def default_jobs() -> int:
    """One worker per CPU this process may run on (its affinity mask: ``taskset``, a container's cpuset), else per
    CPU of the machine."""
    with contextlib.suppress(AttributeError, OSError):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class InlineExecutor(cf.Executor):
    """Runs each call at submit time in this process (``--jobs 1``, tests, debuggers). An exception is delivered
    through the future, like other executors; an interrupt (``Interrupted``, a BaseException) is raised at once, so
    that no further call starts after Ctrl-C (round 36: a sweep --jobs 1 ran the next point first)."""

    def submit(self, fn, /, *args, **kwargs):
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as err:  # noqa: BLE001 - delivered through the future, like other executors
            future.set_exception(err)
        return future


@contextlib.contextmanager
def local(jobs: int | None = None) -> Iterator[tuple[cf.Executor, int]]:
    """(executor, parallel slots): ``jobs`` local processes (None: ``default_jobs``; 1: in this process)."""
    jobs = jobs or default_jobs()
    if jobs == 1:
        yield InlineExecutor(), 1
        return
    pool = _Pool(max_workers=jobs, initializer=_worker_init)
    try:
        yield pool, jobs
    except BaseException:
        _stop_workers(pool)  # an error or an interrupt: in-flight runs are abandoned, not waited for
        raise
    pool.shutdown(wait=True)


# The signals a worker leaves to its parent or dies of (``_worker_init``), blocked from its fork to its own handlers.
_INTERRUPTS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class _Pool(cf.ProcessPoolExecutor):
    """A process pool whose workers start with the interrupt signals blocked (they are forked at ``submit``; the
    threads it starts there keep them blocked too, so they reach the main thread): a worker forked with the parent's
    handler ran it on the parent's own ``terminate`` (an interrupt while the workers started), before
    ``_worker_init`` had put its own, and printed a traceback of ``Interrupted`` (round 38: round 24's test of a
    SIGINT during ``validate``, once it signalled as the workers appeared). Pending there, the signal is the
    worker's own once its handlers stand."""

    def submit(self, fn, /, *args, **kwargs):
        with _interrupts_blocked():
            return super().submit(fn, *args, **kwargs)


@contextlib.contextmanager
def _interrupts_blocked() -> Iterator[None]:
    """``_INTERRUPTS`` held pending in this thread for the block (POSIX threads' signal mask; elsewhere nothing),
    delivered at its end."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    # the mask as it is, read first: ``pthread_sigmask`` runs the handlers of signals already received as it returns,
    # so the call that blocks can raise (an interrupt) with the mask changed and the previous one not handed back
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def completed(pool: cf.Executor, fn: Callable, items: Iterable, window: int) -> Iterator[tuple[object, cf.Future]]:
    """``(item, future of fn(item))`` for every item, as the calls finish (those finishing together in the order
    they were submitted). At most ``window`` calls are in flight, so that an interrupted run has little queued work
    to throw away; an item is drawn from ``items`` only when a slot is free (a lazy iterable may decide then). A call
    finished at submit (``InlineExecutor``) is handed back before the next is submitted: its result is the caller's
    before the next call can be interrupted. Calls still pending when the loop is left are cancelled."""
    items = iter(items)
    pending: dict[cf.Future, object] = {}
    more = True
    try:
        while True:
            while more and len(pending) < window:
                try:
                    item = next(items)
                except StopIteration:
                    more = False
                    break
                future = pool.submit(fn, item)
                if future.done():
                    yield item, future
                else:
                    pending[future] = item
            if not pending:
                if more:
                    continue
                return
            finished, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for future in [f for f in pending if f in finished]:  # submission order: a dict keeps it
                yield pending.pop(future), future
    finally:
        for future in pending:
            future.cancel()


# Linux prctl option: the signal a process receives when its parent dies (man 2 prctl).
_PR_SET_PDEATHSIG = 1


def _worker_init() -> None:
    """In each worker process: Ctrl-C and a hangup are the parent's to handle (it stops the workers); SIGTERM ends
    the worker at once (not the parent's handler, inherited through fork); and on Linux the worker gets SIGTERM when its
    parent dies, even by SIGKILL, so that no worker outlives the command."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):  # a hangup too (the parent's handler, inherited, would raise in the task)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):  # blocked since the fork (``_Pool``): what came meanwhile is handled now
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _INTERRUPTS)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


def _stop_workers(pool: cf.ProcessPoolExecutor, timeout_s: float = 5.0) -> None:
    """Terminate a process pool's workers (the executor has no public call for it) and release the pool."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        with contextlib.suppress(OSError, AttributeError):
            process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(OSError, AttributeError, AssertionError):
            process.join(timeout_s)
