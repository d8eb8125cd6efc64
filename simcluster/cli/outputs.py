"""Output folders of the commands: never overwritten, checked before any simulation, and left whole or not at all.

- ``unique_dir``: the folder asked for when it is new or empty, else the first free ``NAME-2``, ``NAME-3``, ...:
  a command never writes into a folder holding another run's (or anything else's) files;
- ``output_dir``: both; when the folder is not the one asked for, ``fresh_folder`` says so on stderr as it makes
  it, after the command's inputs were checked and its work done (a command that then fails prints its one error
  line only, round 32);
- ``check_writable``: a folder that can be made and written (not under a file, not read-only, a name the file
  system takes), checked before a simulation that may take hours by making (and removing) a folder there: the
  permission bits alone do not say it (root ignores them, a read-only mount or /proc refuses whatever they say);
- ``fresh_folder``: the folder made for a command's files, claimed (``CLAIM``) while they are written so that a
  second command given the same ``--out`` meanwhile gives way to ``NAME-2``; when the command fails or is
  interrupted, what it wrote there is removed again, so no half-written folder is left behind (each file is also
  written atomically, ``core.outputs``).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from simcluster.cli.app import fail

try:
    import fcntl
except ImportError:  # not POSIX: a claim is never found stale (the folder counts as taken)
    fcntl = None

# What --out does with a folder that holds files, for the commands' help (docs/robustness.md, "Outputs").
NEVER_OVERWRITTEN = "never overwritten: a folder holding files, `.` too, gives way to its sibling NAME-2, NAME-3, ..."

# Bytes of one file or folder name on Linux and macOS file systems (NAME_MAX); the temporary files of
# core.outputs add about 20.
NAME_MAX_BYTES = 255

# The file a command holds in its output folder while it writes there, made with O_EXCL: the folder is then taken
# (not empty) for any other command given the same --out, even before the first output file is there. Round 34:
# two `laws plot --out X` started together both found X new, made it and drew their figures there, the later
# one's over the earlier's (a run's window, between the check and its first file, is microseconds; a plot's the
# drawing of the first figure, about a second). The holder keeps an exclusive flock(2) on it, which the kernel
# releases when the process ends however it ends: a claim nobody holds (SIGKILL, a power cut, the out-of-memory
# killer) is stale, and a folder holding nothing else is free again (round 34 review: it counted as taken for good,
# every later `--out X` went to X-2 with "X/ holds other files" over a folder that `ls` shows empty).
CLAIM = ".simcluster-writing"

# The open claim file of each folder this process holds (its flock lasts as long as the descriptor).
_HELD: dict[Path, int] = {}

# The folder each ``output_dir`` chose in place of the one asked for: the note "X/ holds other files: writing to
# X-2/" waits for ``fresh_folder`` to make it (printed at once, it made a second line before a later refusal).
_ASKED_FOR: dict[Path, Path] = {}


def os_problem(err: OSError) -> str:
    """What went wrong writing, with the file it went wrong on where the system names one: a sweep whose ``shards``
    was a file said only "writing into 'g' failed (File exists)" (round 35)."""
    what = err.strerror or str(err)
    return f"{err.filename}: {what}" if err.filename is not None else what


def folder(text) -> Path:
    """Parser of every ``--out`` option (``typer.Option(..., parser=folder)``): an empty value is refused, where
    ``Path('')`` would read it as ``.``, the working folder, which holding files gave way to its sibling
    ``/abs/cwd-2/``, a folder made outside the working folder by what is usually an unset shell variable
    (``--out "$OUT"``; round 33). A ValueError here is click's one-line usage error naming the option (exit 2)."""
    if isinstance(text, str) and not text:
        raise ValueError("an empty folder name (an unset shell variable?); give a folder, or `.` for this one")
    return Path(text)


def _exists(path: Path, option: str) -> bool:
    try:
        return path.exists()
    except OSError as err:
        fail(option, f"cannot use {str(path)!r}: {err.strerror}")
    return False  # unreachable: fail raises


def check_name(path: Path, option: str = "--out") -> Path:
    """Refuse a path with a NUL byte or a part longer than a file system takes."""
    text = str(path)
    if "\0" in text:
        fail(option, f"{text!r} holds a NUL byte")
    for part in Path(path).parts:
        if len(os.fsencode(part)) > NAME_MAX_BYTES:
            fail(option, f"the name {part[:40]!r}... is {len(os.fsencode(part))} bytes, more than the "
                 f"{NAME_MAX_BYTES} a file system takes")
    return path


def named(path: Path, option: str = "--out") -> Path:
    """``path`` with a last part that ``NAME-2``, ``NAME-3``, ... can number: ``.``, ``..`` and the empty path name
    no folder of their own (``--out .`` is the current folder), so they are made absolute; the root is refused."""
    if path.name in ("", ".."):
        path = Path(os.path.abspath(path))
    if not path.name:
        fail(option, f"{str(path)!r} is the root folder: give a folder of its own, e.g. runs/x")
    return path


def unique_dir(path: Path, option: str = "--out") -> Path:
    """``path`` if it does not exist or is empty, else the first free ``path-2``, ``path-3``, ... (never overwrite)."""
    check_name(path, option)
    if _exists(path, option) and not path.is_dir():
        fail(option, f"{str(path)!r} is a file, not a folder")
    if not _exists(path, option) or _free(path):
        return path
    path, index = named(path, option), 2
    while _exists(candidate := path.with_name(f"{path.name}-{index}"), option):
        index += 1
    return check_name(candidate, option)


def output_dir(path: Path, option: str = "--out") -> Path:
    """The folder a command will write into, checked before its work: ``unique_dir`` of ``path``, then
    ``check_writable``. When it is another folder, ``fresh_folder`` says so as it makes it."""
    chosen = unique_dir(path, option)
    if chosen != path:
        _ASKED_FOR[chosen] = path
    return check_writable(chosen, option)


def check_writable(path: Path, option: str = "--out") -> Path:
    """``path`` when it is, or can be made, a folder this process may write into; else a one-line error."""
    check_name(path, option)
    ancestor = Path(os.path.abspath(path))
    while not _exists(ancestor, option):
        if ancestor.is_symlink():  # dangling or a loop: found only at mkdir, after the simulation
            fail(option, f"cannot make {str(path)!r}: {str(ancestor)!r} is a symbolic link to nothing (dangling, or "
                 "a loop)")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        fail(option, f"cannot make {str(path)!r}: {str(ancestor)!r} is a file, not a folder")
    try:
        probe = tempfile.mkdtemp(prefix=".simcluster-probe-", dir=ancestor)
    except OSError as err:
        fail(option, f"cannot write into {str(ancestor)!r}: {err.strerror or err}")
    os.rmdir(probe)
    return path


@contextlib.contextmanager
def fresh_folder(path: Path, option: str = "--out") -> Iterator[Path]:
    """Make ``path`` (or, if it is no longer new or empty, the next ``unique_dir``) for a command's outputs,
    claimed (``CLAIM``) until the block ends; if the block raises (an error, a full disk, SIGINT), remove what was
    written into it, and the folder itself when this made it; a failed write is the one-line error of ``option``."""
    asked, asked_for = path, _ASKED_FOR.pop(path, None)
    claimed, made = False, []
    try:  # from before the claim: an interrupt right after it (a note being printed) leaves no claim behind
        while not claimed:  # again: another command may have taken it meanwhile; each turn finds one more taken
            path = check_writable(unique_dir(asked, option), option)
            claimed, made = _claim(path, option)
        if path != asked:
            print(f"{asked}/ was taken meanwhile: writing to {path}/", file=sys.stderr)
        elif asked_for is not None:
            print(f"{asked_for}/ {_taken(asked_for)}: writing to {path}/", file=sys.stderr)
        yield path
    except BaseException as err:
        if claimed and made:
            shutil.rmtree(path, ignore_errors=True)
            for parent in made[1:]:  # and the folders made to hold it, while empty (`--out a/new/x` left a/new/)
                with contextlib.suppress(OSError):
                    parent.rmdir()
        elif claimed:  # a folder that was there empty: emptied again
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                elif child.name != CLAIM:  # unlinked, then let go, below
                    child.unlink(missing_ok=True)
        if isinstance(err, OSError):  # a full disk, a file system gone read-only: say which folder, one line
            fail(option, f"writing into {str(path)!r} failed ({os_problem(err)}); nothing was kept there")
        raise
    finally:
        if claimed:
            _release(path)


def _taken(path: Path) -> str:
    """Why ``path`` was not written into, for the note on stderr."""
    with contextlib.suppress(OSError):
        if [child.name for child in path.iterdir()] == [CLAIM]:
            return "is being written by another command"
    return "holds other files"


def _free(path: Path) -> bool:
    """``path`` (a folder) is empty, or holds only a stale claim (its command gone without removing it)."""
    children = [child.name for child in path.iterdir()]
    if children != [CLAIM]:
        return not children
    descriptor = _lock(path / CLAIM)
    if descriptor is None:
        return False
    os.close(descriptor)  # let go at once: ``_claim`` takes it for good
    return True


def _lock(claim: Path, create: bool = False) -> int | None:
    """An open descriptor of ``claim`` holding its exclusive lock, or None when a live command holds it (or, where
    the file system has no locks, when the file was there: then only the command that made it holds it)."""
    # never through a link, never waiting (a FIFO or a device put there under that name)
    flags = os.O_RDWR | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        descriptor = os.open(claim, flags | (os.O_CREAT | os.O_EXCL if create else 0), 0o644)
    except FileExistsError:  # another's (or a stale one: looked at by the caller)
        return None
    except OSError:  # gone meanwhile, not ours to take, a link or a folder of that name: taken
        if create:  # the folder cannot take a file: the caller's one-line error
            raise
        return None
    if fcntl is None:
        if create:
            return descriptor
        os.close(descriptor)
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if create and err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):  # no locks here: the made file holds it
            return descriptor
        os.close(descriptor)
        return None
    try:  # the lock is on the file still named so (not one its holder removed while this opened it)
        same = os.path.samestat(os.stat(claim), os.fstat(descriptor))
    except OSError:
        same = False
    if not same:
        os.close(descriptor)
        return None
    return descriptor


def _release(path: Path) -> None:
    """Remove this command's claim of ``path``, then let go of its lock."""
    with contextlib.suppress(OSError):
        (path / CLAIM).unlink()
    descriptor = _HELD.pop(path, None)
    if descriptor is not None:
        with contextlib.suppress(OSError):
            os.close(descriptor)


def _claim(path: Path, option: str) -> tuple[bool, list[Path]]:
    """Make ``path`` (with its parents) if it is new and claim it for this command: (claimed, the folders made here:
    ``path`` first, then the parents it needed, innermost first; empty when ``path`` was there). Not
    claimed when another command holds it (its ``CLAIM``, locked) or anything else came into it meanwhile; a stale
    claim (its command killed) is taken over."""
    made: list[Path] = []
    try:
        parents = list(itertools.takewhile(lambda folder: not folder.exists(), path.parents))
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()
            made = [path, *parents]
        except FileExistsError:  # there already (empty, as unique_dir found it), or made meanwhile by another
            pass
        descriptor = _lock(path / CLAIM, create=True)
        if descriptor is None and (path / CLAIM).exists():
            descriptor = _lock(path / CLAIM)  # a stale claim: its lock is free
        if descriptor is None:  # another command's claim
            return False, made
    except OSError as err:
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        fail(option, f"cannot make {str(path)!r}: {err.strerror}")
    _HELD[path] = descriptor
    if any(child.name != CLAIM for child in path.iterdir()):
        _release(path)
        return False, made
    return True, made
