"""The ``simcluster`` command. Each subcommand lives in a module of this package named for it; ``app`` holds
the typer application they register on.

User errors (ScenarioError, a bad option, an output that cannot be written) print one line and exit with code 2,
never a traceback; SIGINT and SIGTERM print one line and exit with 130 and 143 (docs/robustness.md).
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
import warnings


def _exit_while_importing(signum, _frame):
    """SIGINT/SIGTERM while the command's modules load (a second or more): nothing has started, so exit at once
    with the one line and code of an interrupt, not a KeyboardInterrupt traceback or a silent death."""
    os.write(2, f"interrupted by {signal.Signals(signum).name}\n".encode())
    os._exit(128 + signum)


_IMPORTING = threading.current_thread() is threading.main_thread()
if _IMPORTING:  # handlers only for the import below; main() installs its own while a command runs
    _BEFORE_IMPORT = {signum: signal.signal(signum, _exit_while_importing) for signum in (signal.SIGINT,
                                                                                          signal.SIGTERM)}
# the cycle collector paused while the command's modules load: they make hundreds of thousands of objects that live
# as long as the process, and collecting while they are made (115 passes, 0.045 s of every command) freed nothing
_COLLECTING = gc.isenabled()
gc.disable()
try:
    import typer

    # each subcommand module registers its commands on ``app`` when imported
    from simcluster.cli import collective, compare, explain, laws, replay, run, schema, sweep, validate  # noqa: F401
    from simcluster.cli.app import USER_ERROR_EXIT, Interrupted, app, fail
    from simcluster.core.errors import ScenarioError, one_line
finally:
    if _COLLECTING:
        gc.enable()
    if _IMPORTING:
        for _signum, _handler in _BEFORE_IMPORT.items():
            signal.signal(_signum, _handler)

__all__ = ["USER_ERROR_EXIT", "app", "console", "fail", "main"]



def _raise_interrupted(signum, _frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def _interrupts():
    """SIGINT and SIGTERM raise ``Interrupted`` while a command runs, so that ``finally`` blocks run (a sweep
    writes what it finished, worker processes are stopped) and the exit code says which signal it was."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise_interrupted) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _error(text: str) -> None:
    print(f"error: {one_line(text)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script: typer app with user errors turned into exit code 2."""
    try:
        with _interrupts(), warnings.catch_warnings():
            # numpy's overflow and division warnings would add lines to a one-line error; results are checked
            # (inputs bounded, JSON without NaN/Infinity), so the warnings say nothing a user can act on
            warnings.simplefilter("ignore", RuntimeWarning)
            app(args=argv, standalone_mode=False)
    except ScenarioError as err:
        _error(str(err))
        return USER_ERROR_EXIT
    except Interrupted as err:
        name = signal.Signals(err.signum).name
        print(one_line(f"interrupted by {name}" + (f": {err.message}" if err.message else "")), file=sys.stderr)
        return err.exit_code
    except typer.Exit as err:
        return err.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except OSError as err:
        # a file that cannot be written or read (full disk, read-only folder, closed or full stdout)
        where = f"{err.filename}: " if err.filename is not None else "cannot write output: "
        _error(f"{where}{err.strerror or err}")
        return USER_ERROR_EXIT
    except Exception as err:
        # usage errors of the (vendored or not) click layer carry their own exit code (2) and message
        message, code = getattr(err, "format_message", None), getattr(err, "exit_code", None)
        if callable(message) and isinstance(code, int):
            text = " ".join(message().split()).replace("Value error, ", "")
            _error(f"{text} (see --help)")
            return code
        raise
    return 0


def console() -> None:
    # the command's modules (hundreds of thousands of objects) live as long as the process: kept out of the cycle
    # collector's passes, which otherwise walk them again at every full collection of a run (gc.freeze)
    gc.freeze()
    code = main()
    try:
        sys.stdout.flush()
    except OSError as err:  # stdout on a full device or a closed pipe: one line, and no second error at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if code == 0:  # else the error was reported already (main caught the failed write)
            _error(f"cannot write to standard output: {err.strerror or err}")
            code = USER_ERROR_EXIT
    leave(code)


def leave(code: int) -> None:
    """End the process with ``code`` without tearing its heap down object by object: the exit handlers run (logging,
    multiprocessing's children, temporary folders: ``atexit``), the standard streams are flushed, then the process
    ends (``os._exit``) and the system takes its memory back at once. Freeing a run's objects and modules one by
    one cost 0.07 s of CPU at 16,384 GPUs and 0.2 s at 131,072 (millions of objects, 0.3-2 GB of arrays) and
    changes nothing the command wrote: every file is written and closed (atomically renamed) before. With other
    threads still running (a library's), or under a profiler or tracer (``python -m cProfile``, coverage: they
    write their results after the command returns), the interpreter's own exit."""
    if threading.active_count() > 1 or sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or full: nothing more can be said on it
            pass
    os._exit(code)


if __name__ == "__main__":
    console()
