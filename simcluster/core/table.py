"""A table as named columns of equal length: what a run's results hold (events, links), written as CSV without
pandas, and turned into a pandas DataFrame only when one is asked for.

pandas takes about 0.2 s to import and formats a 200,000-row table in about half a second; a `simcluster run`
needs neither. ``Table.write_csv`` writes the bytes ``DataFrame.to_csv(path, index=False)`` writes for the same
columns: pandas too hands each row to the standard ``csv`` module (QUOTE_MINIMAL, ``"\\n"`` line ends), having
formatted a float64 column with numpy's ``astype(str)``, which is Python's shortest round-trip ``repr`` of each
value, and a missing value (NaN) as an empty field (pandas ``io/formats/csvs.py``, ``get_values_for_csv``);
``tests/unit/test_table.py`` compares both writers on hostile values.

A column is a numpy array (int, float or bool), a list (of strings) or a ``Coded`` column (texts kept as codes into
their distinct values: a links table's node names, kinds and tiers); ``Table.of_rows`` builds the columns of a list
of row tuples with the dtypes given per column.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Rows formatted and written at once: the table's cells as Python strings exist a chunk at a time. 8,192 rows of a
# links table are under a megabyte of text, which the allocator hands out again chunk after chunk; 65,536 rows
# (7 MB of text, 65,536 row strings) went back to the system and were faulted in again at every chunk: 86,000
# page faults writing the links of 131,072 GPUs, 13,500 with 8,192 (0.08 s less system time, user time the same)
CSV_CHUNK_ROWS = 8192


class Coded(Sequence):
    """A text column of few distinct values, kept as each row's code into them: row ``i`` is
    ``labels[codes[i]]``. A links table of 1.5 million rows names 400,000 nodes, five tiers and three technologies:
    a list per column would hold a reference per row and be walked per row (quoting check, formatting), where the
    labels are checked and formatted once each. Reads as the list of its values (``tolist``, iteration, indexing);
    a slice or ``take`` is a ``Coded`` of the same labels."""

    __slots__ = ("codes", "labels")

    def __init__(self, labels: Sequence, codes):
        self.labels = labels if isinstance(labels, list) else list(labels)  # shared, not copied (ends share theirs)
        self.codes = np.asarray(codes, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return Coded(self.labels, self.codes[k])
        return self.labels[self.codes[k]]

    def take(self, index) -> Coded:
        """The rows ``index`` (an integer array), as a ``Coded`` of the same labels."""
        return Coded(self.labels, self.codes[index])

    def tolist(self) -> list:
        return _object_array(self.labels)[self.codes].tolist()

    def __iter__(self):
        return iter(self.tolist())

    def __eq__(self, other) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented

    __hash__ = None  # a column, compared by value (as a list is)


class Table:
    """Named columns of equal length (numpy arrays or lists), in order."""

    def __init__(self, columns: dict[str, Sequence]):
        lengths = {len(column) for column in columns.values()}
        assert len(lengths) <= 1, f"columns of unequal lengths {sorted(lengths)}"
        self.columns = dict(columns)
        self._rows = lengths.pop() if lengths else 0

    @classmethod
    def of_rows(cls, rows: list[tuple], names: Sequence[str], dtypes: dict[str, str]) -> Table:
        """The table of ``rows`` (tuples in the order of ``names``); a column named in ``dtypes`` becomes a numpy
        array of that dtype, the others lists (strings)."""
        assert not rows or len(rows[0]) == len(names), "rows of another width than the names"
        columns = {}
        for i, name in enumerate(names):  # a column at a time: zip(*rows) is several times slower on long tables
            values = [row[i] for row in rows]
            columns[name] = np.array(values, dtype=dtypes[name]) if name in dtypes else values
        return cls(columns)

    def __len__(self) -> int:
        return self._rows

    def __getitem__(self, name: str) -> Sequence:
        return self.columns[name]

    def __contains__(self, name: str) -> bool:
        return name in self.columns

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def frame(self):
        """The pandas DataFrame of these columns (pandas is imported here, not with this module)."""
        import pandas as pd

        return pd.DataFrame({name: column.tolist() if isinstance(column, Coded) else column
                             for name, column in self.columns.items()}, columns=self.names)

    def write_csv(self, path: Path) -> Path:
        """The table as CSV at ``path``, byte for byte what pandas' ``to_csv(path, index=False)`` writes.

        Each column is formatted at once (a float column's distinct values ``repr``-ed once each: a run's links
        carry few distinct figures), then rows are joined with commas, unless a text cell needs the csv module's
        quoting (a comma, quote or line break in it) or the table has a single column (an empty row is quoted).
        Neighbouring columns of few distinct values each (``_coded``: floats, ``Coded`` texts) are joined into one
        when they have few distinct combinations (``_joined``): a links table's last five columns take 71 distinct
        values over 1.5 million rows, so its rows are joined from four cells, not eight."""
        texts = [self.names, *(c for c in self.columns.values() if not isinstance(c, np.ndarray | Coded))]
        labels = {id(c.labels): c.labels for c in self.columns.values() if isinstance(c, Coded)}  # each list once
        plain = len(self.columns) > 1 and not any(map(_needs_quoting, [*texts, *labels.values()]))
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(self.names)
            if plain:
                label_texts = {key: _object_array(_texts(values)) for key, values in labels.items()}
                pieces = _joined([(label_texts[id(column.labels)], column.codes) if isinstance(column, Coded)
                                  else _coded(column) for column in self.columns.values()], self._rows)
            for first in range(0, self._rows, CSV_CHUNK_ROWS):
                last = min(first + CSV_CHUNK_ROWS, self._rows)
                if plain:  # encoded here and written to the binary buffer (the text layer's write is slower)
                    rows = zip(*(_cells(piece[first:last]) if not isinstance(piece, tuple)
                                 else piece[0][piece[1][first:last]].tolist() for piece in pieces), strict=True)
                    handle.flush()
                    handle.buffer.write(("\n".join(map(",".join, rows)) + "\n").encode("utf-8"))
                else:
                    writer.writerows(zip(*(_cells(column[first:last]) for column in self.columns.values()),
                                         strict=True))
        return Path(path)


# What the csv module's QUOTE_MINIMAL quotes a field for (its delimiter, quote character and line terminators)
_QUOTED = (",", '"', "\r", "\n")


def _needs_quoting(texts: Sequence) -> bool:
    if not all(type(text) is str for text in texts):
        try:
            texts = set(texts)   # each distinct value once (a links table repeats its node names and kinds)
        except TypeError:        # values that cannot be hashed: all of them
            pass
        texts = list(map(str, texts))
    joined = "\x00".join(texts)
    return any(char in joined for char in _QUOTED)


def _cells(column: Sequence) -> list[str]:
    """A column's values as text, as pandas writes them: a float as numpy's ``astype(str)`` (Python's shortest
    round-trip ``repr``), a missing float (NaN) or None as an empty field, anything else as ``str``."""
    coded = _coded(column)
    if isinstance(coded, tuple):
        texts, codes = coded
        return texts[codes].tolist()
    if not isinstance(column, np.ndarray):
        if isinstance(column, list) and not column.count(None):
            return list(map(str, column))  # str of a string is itself
        return ["" if value is None else str(value) for value in column]
    if column.dtype.kind != "f":
        return list(map(str, column.tolist()))
    # pandas' own formatting of other float widths
    return np.where(np.isnan(column), "", column.astype(str)).tolist()


def _text(value) -> str:
    return "" if value is None else str(value)


def _texts(values: list) -> list[str]:
    """``values`` as the texts a CSV cell shows (None empty, else ``str``): the list itself when all are strings."""
    return values if all(type(value) is str for value in values) else list(map(_text, values))


def _coded(column: Sequence):
    """(each distinct value's text as an object array, each row's index in it) of a ``Coded`` column or a float64
    one (distinct bit patterns, each formatted once: -0.0 is not 0.0); any other column as it is."""
    if isinstance(column, Coded):
        return _object_array(_texts(column.labels)), column.codes
    if isinstance(column, np.ndarray) and column.dtype == np.float64:
        every = column.view(np.int64)
        # runs of equal values (a links table's links of one tier carry alike: 42,000 runs in 1.5 million rows)
        starts = np.flatnonzero(np.concatenate([[len(every) > 0], every[1:] != every[:-1]]))
        runs = every[starts]
        bits = np.unique(runs)   # sorted: each run's index found by bisection (cheaper than unique's inverse)
        texts = ["" if value != value else repr(value) for value in bits.view(np.float64).tolist()]
        return _object_array(texts), np.repeat(np.searchsorted(bits, runs), np.diff(starts, append=len(every)))
    return column


def _joined(pieces: list, rows: int) -> list:
    """``pieces`` (``_coded``) with each run of neighbouring coded ones joined into one coded piece of their
    comma-joined texts, as long as the combinations a join could make stay few (at most a quarter of the rows, or
    256): their texts are then made once per distinct combination, not once per row."""
    limit = max(rows // 4, 256)
    out: list = []
    for piece in pieces:
        previous = out[-1] if out else None
        if (isinstance(piece, tuple) and isinstance(previous, tuple)
                and len(previous[0]) * len(piece[0]) <= limit):
            (left, left_codes), (right, right_codes) = previous, piece
            combined = left_codes * len(right) + right_codes
            present = np.flatnonzero(np.bincount(combined, minlength=len(left) * len(right)))
            dense = np.zeros(len(left) * len(right), dtype=np.int64)
            dense[present] = np.arange(len(present))
            texts = [f"{left[k // len(right)]},{right[k % len(right)]}" for k in present.tolist()]
            out[-1] = (_object_array(texts), dense[combined])
        else:
            out.append(piece)
    return out


def _object_array(values: Sequence) -> np.ndarray:
    """A one-dimensional object array of ``values`` (``np.array`` would make rows of tuples)."""
    array = np.empty(len(values), dtype=object)
    try:
        array[:] = values
    except ValueError:  # values of equal lengths (tuples) that numpy would spread over a second axis
        for i, value in enumerate(values):
            array[i] = value
    return array
