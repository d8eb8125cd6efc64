"""Files written for users: atomically, and JSON that is valid JSON.

- ``atomic_path`` / ``write_text`` / ``write_bytes``: the file is written under a temporary name next to its target
  and renamed into place when complete, so a command that fails, runs out of disk or is interrupted leaves the
  previous file or none, never half of one (a rename within one folder is atomic on POSIX file systems);
- ``write_new``: the same, but only where no file is: a file that claims a folder (a sweep's grid file), which
  two commands started together must not both believe they wrote;
- ``dumps``: JSON has no NaN or Infinity (Python's ``json`` would write the invalid tokens ``NaN`` and
  ``Infinity``); a non-finite float is written as ``null``. Inputs are validated so that results are finite; a
  null marks a figure that has no value (e.g. a ratio over zero).

Text is written as UTF-8 whatever the locale (round 37: under ``LC_ALL=C`` without Python's locale coercion, the
locale's ASCII refused a name such as ``smäll``), as ``core.table.Table.write_csv`` and pandas write CSV.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path next to ``path`` with the same suffix (writers that pick a format by extension still
    work); renamed to ``path`` when the block succeeds, removed when it raises."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        # a full disk's write names no file (a sweep said "cannot write output: No space left on device"; round
        # 30), and a failed rename names the temporary file, which is gone (round 35: a folder named results.csv
        # was "g/.results.6677.tmp.csv: Is a directory"): either way the file meant is ``path``
        if isinstance(err, OSError) and (err.filename is None or err.filename == str(tmp)):
            err.filename, err.filename2 = str(path), None
        raise


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_new(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` whole, only if no file is there: False (nothing written) when one is, another
    process's included. The complete temporary file is hard-linked into place, which fails where the name exists
    (``os.replace`` would replace it); on a file system without hard links, the file is made with ``O_EXCL``."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.new{path.suffix}")
    try:
        tmp.write_text(text, encoding="utf-8")
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # no hard links here (some network or FAT file systems): exclusive creation instead
            try:
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(text)
        return True
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def finite(data: Any) -> Any:
    """``data`` with every non-finite float (nan, inf; numpy's too) replaced by None, and every string that is not
    Unicode text (``unicode_text``) made text, recursively."""
    if isinstance(data, float):  # numpy.float64 is a float
        return data if math.isfinite(data) else None
    if isinstance(data, str):
        return unicode_text(data)
    if isinstance(data, dict):
        return {unicode_text(key) if isinstance(key, str) else key: finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [finite(value) for value in data]
    if hasattr(data, "dtype") and getattr(data, "shape", None) == () and data.dtype.kind == "f":
        value = float(data)
        return value if math.isfinite(value) else None
    return data


def unicode_text(text: str) -> str:
    """``text``, or where it holds lone surrogates (a file name that is not UTF-8 reaches Python so, ``os.fsdecode``)
    its bytes with those that are not UTF-8 written ``\\xff``. Round 34 review: ``run --json --out $'bad\\xff'``
    printed ``"out_dir": "bad\\udcff"``, a lone surrogate escape, which strict JSON readers (serde_json, Go's
    encoding/json replaces it) refuse or alter."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        try:
            raw = text.encode(errors="surrogateescape")
        except UnicodeEncodeError:  # a surrogate that no byte made (a \\ud800 escape read from JSON)
            raw = text.encode(errors="surrogatepass")
        return raw.decode(errors="backslashreplace")
    return text


def dumps(data: Any, **kwargs) -> str:
    """``json.dumps`` of ``finite(data)``: valid JSON always (``allow_nan=False`` guards what ``finite`` missed)."""
    return json.dumps(finite(data), allow_nan=False, **kwargs)


TABLE_FORMATS = ("csv", "parquet")


def check_table_format(table_format: str, field: str = "--format") -> str:
    """``table_format`` if it is one of ``TABLE_FORMATS`` and can be written here (Parquet needs pyarrow)."""
    from simcluster.core.errors import ScenarioError

    if table_format not in TABLE_FORMATS:
        raise ScenarioError(field, f"expected one of {', '.join(TABLE_FORMATS)}, got {table_format!r}")
    if table_format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ScenarioError(field, "parquet needs pyarrow (pip install pyarrow); csv needs nothing") from None
    return table_format


def write_table(table, path: Path, table_format: str = "csv") -> Path:
    """A table (``core.table.Table``, or a pandas DataFrame) as ``path`` with the format's suffix (.csv or
    .parquet), atomically; returns the path. The format is what the caller asks for, never what happens to be
    installed. A ``Table`` is written as CSV without pandas, byte for byte as pandas would write it."""
    path = Path(path).with_suffix(f".{check_table_format(table_format)}")
    frame = table.frame() if table_format == "parquet" and hasattr(table, "frame") else table
    with atomic_path(path) as tmp:
        if table_format == "parquet":
            frame.to_parquet(tmp, index=False)
        elif hasattr(frame, "write_csv"):
            frame.write_csv(tmp)
        else:
            frame.to_csv(tmp, index=False)
    return path
