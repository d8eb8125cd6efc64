"""A table as named columns of equal length: what a run's results hold (events, links), written as CSV without
pandas, and turned into a pandas DataFrame only when one is asked for.

pandas takes about 0.2 s to import and formats a 200,000-row table in about half a second; a `simcluster run`
needs neither. ``Table.write_csv`` writes the bytes ``DataFrame.to_csv(path, index=False)`` writes for the same
columns: pandas too hands each row to the standard ``csv`` module (QUOTE_MINIMAL, ``"\\n"`` line ends), having
formatted a float64 column with numpy's ``astype(str)``, which is Python's shortest round-trip ``repr`` of each
value, and a missing value (NaN) as an empty field (pandas ``io/formats/csvs.py``, ``get_values_for_csv``);
``tests/unit/test_table.py`` compares both writers on hostile values.

A column is a numpy array (int, float or bool) or a list (of strings); ``Table.of_rows`` builds the columns of a
list of row tuples with the dtypes given per column.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Rows formatted and written at once: the table's cells as Python strings exist a chunk at a time
CSV_CHUNK_ROWS = 65536


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

        return pd.DataFrame({name: column for name, column in self.columns.items()}, columns=self.names)

    def write_csv(self, path: Path) -> Path:
        """The table as CSV at ``path``, byte for byte what pandas' ``to_csv(path, index=False)`` writes.

        Each column is formatted at once (a float column's distinct values ``repr``-ed once each: a run's links
        carry few distinct figures), then rows are joined with commas, unless a text cell needs the csv module's
        quoting (a comma, quote or line break in it) or the table has a single column (an empty row is quoted)."""
        plain = len(self.columns) > 1 and not any(_needs_quoting(text) for text in
                                                  [self.names, *(c for c in self.columns.values() if
                                                                 not isinstance(c, np.ndarray))])
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(self.names)
            for first in range(0, self._rows, CSV_CHUNK_ROWS):
                last = min(first + CSV_CHUNK_ROWS, self._rows)
                rows = zip(*(_cells(column[first:last]) for column in self.columns.values()), strict=True)
                if plain:
                    handle.write("\n".join(map(",".join, rows)) + "\n")
                else:
                    writer.writerows(rows)
        return Path(path)


# What the csv module's QUOTE_MINIMAL quotes a field for (its delimiter, quote character and line terminators)
_QUOTED = (",", '"', "\r", "\n")


def _needs_quoting(texts: Sequence) -> bool:
    try:
        texts = set(texts)   # each distinct value once (a links table repeats its node names and kinds)
    except TypeError:        # values that cannot be hashed: all of them
        pass
    joined = "\x00".join(map(str, texts))
    return any(char in joined for char in _QUOTED)


def _cells(column: Sequence) -> list[str]:
    """A column's values as text, as pandas writes them: a float as numpy's ``astype(str)`` (Python's shortest
    round-trip ``repr``), a missing float (NaN) or None as an empty field, anything else as ``str``."""
    if not isinstance(column, np.ndarray):
        if isinstance(column, list) and not column.count(None):
            return list(map(str, column))  # str of a string is itself
        return ["" if value is None else str(value) for value in column]
    if column.dtype.kind != "f":
        return list(map(str, column.tolist()))
    if column.dtype != np.float64:  # pandas' own formatting of other widths
        return np.where(np.isnan(column), "", column.astype(str)).tolist()
    # distinct bit patterns (-0.0 is not 0.0), each formatted once
    bits, where = np.unique(column.view(np.int64), return_inverse=True)
    texts = ["" if value != value else repr(value) for value in bits.view(np.float64).tolist()]
    return np.array(texts, dtype=object)[where.reshape(-1)].tolist()
