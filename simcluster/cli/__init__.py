"""The ``simcluster`` command. Each subcommand lives in a module of this package named for it; ``app`` holds
the typer application they register on.

User errors (ScenarioError, a bad option, an output that cannot be written) print one line and exit with code 2,
never a traceback; SIGINT, SIGTERM and SIGHUP (unless ignored: nohup) print one line and exit with 130, 143 and
129 (docs/robustness.md).
"""

from __future__ import annotations

import _thread
import contextlib
import gc
import os
import signal
import sys
import threading
import time
import warnings


def _exit_while_importing(signum, _frame):
    """SIGINT/SIGTERM while the command's modules load (a second or more), or in ``console`` before the command's
    handlers: nothing has started, so exit at once with the one line and code of an interrupt, not a
    KeyboardInterrupt traceback or a silent death."""
    os.write(2, f"interrupted by {signal.Signals(signum).name}\n".encode())
    os._exit(128 + signum)


def _handled_signals() -> tuple[signal.Signals, ...]:
    """SIGINT, SIGTERM, and SIGHUP (the terminal closed) unless it is ignored (``nohup``): a hangup killed a command
    mid-write without a word, exit 129, a half-written ``.NAME.PID.tmp`` file and half a folder left (round 29)."""
    hangup = getattr(signal, "SIGHUP", None)   # ``console``'s own handler until the command's stands for the default
    keep_hangup = hangup is not None and signal.getsignal(hangup) in (signal.SIG_DFL, _exit_while_importing)
    return (signal.SIGINT, signal.SIGTERM, *((hangup,) if keep_hangup else ()))


_IMPORTING = threading.current_thread() is threading.main_thread()
if _IMPORTING:  # handlers only for the import below; main() installs its own while a command runs
    _BEFORE_IMPORT = {signum: signal.signal(signum, _exit_while_importing) for signum in _handled_signals()}
# the cycle collector paused while the command's modules load: they make hundreds of thousands of objects that live
# as long as the process, and collecting while they are made (115 passes, 0.045 s of every command) freed nothing
_COLLECTING = gc.isenabled()
gc.disable()
try:
    import typer

    # each subcommand module registers its commands on ``app`` when imported
    from simcluster.cli import collective, compare, explain, laws, replay, run, schema, sweep, validate  # noqa: F401
    from simcluster.cli.app import USER_ERROR_EXIT, Interrupted, app, fail
    from simcluster.cli.terminal import settle_widths
    from simcluster.core import interrupts
    from simcluster.core.errors import ScenarioError, one_line
finally:
    if _COLLECTING:
        gc.enable()
    if _IMPORTING:
        for _signum, _handler in _BEFORE_IMPORT.items():
            signal.signal(_signum, _handler)

__all__ = ["USER_ERROR_EXIT", "app", "console", "fail", "main"]



# Seconds after a swallowed interrupt (below) before it is delivered again: long enough for the weakref callback or
# __del__ that swallowed it to return, short against a person's reaction to Ctrl-C.
REDELIVER_AFTER_S = 0.005


class _Command:
    """The interrupts of the command running in this process's main thread: the signals it received, and a token of
    it (None between commands) so that a swallowed interrupt is delivered again to that command only, never after it
    (the lock keeps a late delivery from landing after its handlers are gone) nor to the next one in this process
    (tests, a library calling ``main``: a timer late under load landed in it, round 29's review)."""

    received: list[int] = []
    running: object | None = None
    raised_at: float | None = None  # time.monotonic() when ``_raise_interrupted`` last raised, while it stands
    lock = threading.Lock()


def _raise_interrupted(signum, _frame):
    """Raise ``Interrupted``; a further signal within ``KEEP_GRACE_S`` of that is recorded, not raised. Python runs
    a pending handler at the next call: a second signal delivered while the first unwound (two within microseconds,
    as a signal sent to the process and to its group, or ``kill -INT`` twice) raised at the first call of the
    ``except`` that keeps the finished work, before ``keeping`` could ignore it: ``run --samples`` lost its finished
    samples, 2 times in 8 (round 30's review). A dropped one (``_unraisable``) lifts this, so that its redelivery
    raises; a library that keeps the first (``except BaseException``) runs on, and the command exits for it at its
    end, as before."""
    _Command.received.append(signum)
    now = time.monotonic()
    if _Command.raised_at is not None and now - _Command.raised_at < sys.modules["simcluster.cli.app"].KEEP_GRACE_S:
        return
    _Command.raised_at = now
    raise Interrupted(signum)


def _redeliver(signum: int, command: object) -> None:
    """``signum`` to the main thread again if ``command`` still runs there: a real signal where there are threads'
    signals (POSIX), which also ends a wait the main thread is blocked in (a sweep's workers awaited: Python's
    ``interrupt_main`` only flags it, run when the wait ends, a whole run later; round 29's review)."""
    with _Command.lock:
        if _Command.running is command:
            if hasattr(signal, "pthread_kill"):
                signal.pthread_kill(threading.main_thread().ident, signum)
            else:
                _thread.interrupt_main(signum)


def _unraisable(default, command: object):
    """``sys.unraisablehook`` while ``command`` runs. Python runs a signal handler between any two bytecodes of the
    main thread, a weakref callback's or a ``__del__``'s included, and an exception raised there is printed as
    "Exception ignored in ..." and dropped: Ctrl-C during a compare's plots ran the command to its end, exit 0
    (round 29). Such an ``Interrupted`` is delivered again from a timer thread once the callback has returned."""

    def hook(unraisable):
        if isinstance(unraisable.exc_value, Interrupted):
            _Command.raised_at = None  # it was dropped: its redelivery (and a further signal) raises
            timer = threading.Timer(REDELIVER_AFTER_S, _redeliver, (unraisable.exc_value.signum, command))
            timer.daemon = True
            timer.start()
            return
        default(unraisable)

    return hook


@contextlib.contextmanager
def _interrupts():
    """SIGINT, SIGTERM and SIGHUP (``_handled_signals``) raise ``Interrupted`` while a command runs, so that
    ``finally`` blocks run (a sweep writes what it finished, worker processes are stopped) and the exit code says
    which signal it was (130, 143, 129). A command that ran to its end after a library kept its interrupt (an
    ``except BaseException``) raises it at the end: what it wrote is whole, and kept. Outside the main thread
    (no signal reaches it) nothing is installed and nothing is raised."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    command = object()
    _Command.received, _Command.running, _Command.raised_at = [], command, None
    previous_hook, sys.unraisablehook = sys.unraisablehook, _unraisable(sys.unraisablehook, command)
    previous = {signum: signal.signal(signum, _raise_interrupted) for signum in _handled_signals()}
    try:
        with interrupts.raising(_raise_received):  # where a library wrapped it, given back there (spec.base)
            yield
    except Exception:
        _raise_received()  # a library turned the interrupt into an error of its own (``script_entry.call``)
        raise
    finally:
        with _Command.lock:
            _Command.running = None
        sys.unraisablehook = previous_hook
        _restore(previous)
    if _Command.received:  # the command ran to its end: an interrupt a library kept
        raise Interrupted(_Command.received[0])


def _raise_received() -> None:
    """Raise the interrupt the running command received, if one came (``core.interrupts``)."""
    if _Command.received:
        raise Interrupted(_Command.received[0]) from None


def _restore(previous: dict) -> None:
    """Put the handlers back. ``signal.signal`` first runs a signal still pending (one delivered again just before
    ``_Command.running`` went None) through the handler in place, ours: it raises once the handlers are back."""
    pending = None
    for signum, handler in previous.items():
        try:
            signal.signal(signum, handler)
        except Interrupted as err:
            pending = err
            signal.signal(signum, handler)
    if pending is not None:
        raise pending


def _error(text: str) -> None:
    print(f"error: {one_line(text)}", file=sys.stderr)


def _missing_command(err: Exception) -> str:
    """The line for a usage error without a message: click's NoArgsIsHelpError (``simcluster`` or ``simcluster laws``
    alone; the help went to stdout) printed ``error:  (see --help)`` (round 32)."""
    ctx = getattr(err, "ctx", None)
    commands = getattr(getattr(ctx, "command", None), "list_commands", None)
    names = ", ".join(commands(ctx)) if callable(commands) else ""
    return f"COMMAND: missing{f'; one of {names}' if names else ''}"


# The line of a command whose stdout's reader left, as the scripts say it (core.script_entry._stdout_closed).
READER_GONE = "stdout: closed by its reader (Broken pipe)"


def _stdout_file() -> tuple[int, int] | None:
    """The file behind descriptor 1 (device and inode), None if there is none."""
    try:
        status = os.fstat(1)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _reader_gone(stream_before: object, before: tuple[int, int] | None) -> bool:
    """Whether a ``SystemExit(1)`` is how click, typer or rich ended a command whose stdout's reader left (``simcluster
    validate | head -1``: EPIPE). click and typer wrap sys.stdout in their ``PacifyFlushWrapper`` first; rich's
    ``Console.on_broken_pipe`` (a table, typer's help) points descriptor 1 at /dev/null first. Either way the exit
    was 1 and said nothing (round 37), where docs/robustness.md's rule for an output that cannot be written is one
    line and 2, as the scripts do (``script_entry._stdout_closed``)."""
    if sys.stdout is not stream_before and type(sys.stdout).__name__ == "PacifyFlushWrapper":
        return True
    try:
        now_null = os.path.samestat(os.fstat(1), os.stat(os.devnull))
    except OSError:
        return False
    return now_null and before is not None and before != _stdout_file()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script: typer app with user errors turned into exit code 2."""
    settle_widths(os.environ)
    stream_before, stdout_before = sys.stdout, _stdout_file()
    try:
        with _interrupts(), warnings.catch_warnings():
            # numpy's overflow and division warnings would add lines to a one-line error; results are checked
            # (inputs bounded, JSON without NaN/Infinity), so the warnings say nothing a user can act on
            warnings.simplefilter("ignore", RuntimeWarning)
            # matplotlib's note on a figure whose legend (a long fabric file name) leaves its axes no room: two lines
            # before the command's own (round 31); the figure is still written
            warnings.filterwarnings("ignore", message="constrained_layout not applied")
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
    except SystemExit as err:
        if err.code == 1 and _reader_gone(stream_before, stdout_before):
            _error(READER_GONE)
            return USER_ERROR_EXIT
        raise
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except MemoryError:
        # numpy's _ArrayMemoryError (a MemoryError) under a memory limit (`ulimit -v`, a container's): a traceback
        # of the routing arrays before (round 36: 16,384 GPUs on the analytic network under a 1.5 GB limit)
        _error("out of memory: the simulation needed more memory than this process may use (fewer GPUs, or another "
               "--network)")
        return USER_ERROR_EXIT
    except BrokenPipeError:  # a write of ours, outside click's handling
        _error(READER_GONE)
        return USER_ERROR_EXIT
    except OSError as err:
        # a file that cannot be written or read (full disk, read-only folder, closed or full stdout)
        where = f"{err.filename}: " if err.filename is not None else "cannot write output: "
        _error(f"{where}{err.strerror or err}")
        return USER_ERROR_EXIT
    except Exception as err:
        # usage errors of the (vendored or not) click layer carry their own exit code (2) and message
        message, code = getattr(err, "format_message", None), getattr(err, "exit_code", None)
        if callable(message) and isinstance(code, int):
            text = " ".join(message().split()).replace("Value error, ", "") or _missing_command(err)
            _error(f"{text} (see --help)")
            return code
        raise
    return 0


def console() -> None:
    # a signal before ``main``'s own handlers (``_interrupts``) is the one line and code too, as while importing:
    # between the two, Python's default made a KeyboardInterrupt traceback or a silent death (round 38: a test's
    # signal timed to a loaded machine's import can fall there); ``leave`` ends the process, nothing to put back
    if threading.current_thread() is threading.main_thread():
        for signum in _handled_signals():
            signal.signal(signum, _exit_while_importing)
    # the command's modules (hundreds of thousands of objects) live as long as the process: kept out of the cycle
    # collector's passes, which otherwise walk them again at every full collection of a run (gc.freeze)
    gc.freeze()
    code = _standard_streams()
    if code is None:
        code = main()
        try:
            sys.stdout.flush()
        except OSError as err:  # stdout on a full device or a closed pipe: one line, and no second error at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            if code == 0:  # else the error was reported already (main caught the failed write)
                _error(READER_GONE if isinstance(err, BrokenPipeError) else
                       f"cannot write to standard output: {err.strerror or err}")
                code = USER_ERROR_EXIT
    leave(code)


def _standard_streams() -> int | None:
    """The process's standard streams made fit for a command; an exit code if it cannot run (round 37):

    - stderr closed by the shell (``2>&-``: Python sets ``sys.stderr`` to None): ``print(file=sys.stderr)`` wrote
      the error line into stdout, and the exit ended in an AttributeError (exit 1). Its lines now go to /dev/null;
      the exit code still says what happened.
    - stdout closed (``>&-``): every line was dropped unsaid, exit 0, then a traceback at the last flush (exit 1).
      Refused before anything runs: one line, exit 2 (docs/robustness.md: stdout closed).
    - stdout in an encoding that cannot hold every character (``LC_ALL=C`` with ``PYTHONCOERCECLOCALE=0``, a
      Latin-1 locale): a scenario named ``smäll`` ended ``run`` in a UnicodeEncodeError traceback after its files
      were written. Such characters are written as backslash escapes (``sm\\xe4ll``), as Python writes them on
      stderr; a UTF-8 stdout is left as it is."""
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (the process's stderr, never closed)
    if sys.stdout is None:
        _error("stdout: closed (>&-); redirect it to a file, or to /dev/null to discard what the command prints")
        return USER_ERROR_EXIT
    import codecs

    encoding = getattr(sys.stdout, "encoding", None)
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if encoding and callable(reconfigure) and codecs.lookup(encoding).name != "utf-8":
        reconfigure(errors="backslashreplace")
    return None


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
        if stream is None:  # closed by the shell (>&-): nothing was written to it
            continue
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or full: nothing more can be said on it
            pass
    os._exit(code)


if __name__ == "__main__":
    console()
