"""Flat event records of a simulation: one row per compute block, transfer and collective."""

from __future__ import annotations

from simcluster.core.table import Table

COLUMNS = ["rank", "stream", "kind", "name", "microbatch", "start_s", "end_s", "bytes", "group"]
# numpy dtypes of the numeric columns (the others are strings): those pandas infers from the rows
DTYPES = {"rank": "int64", "microbatch": "int64", "start_s": "float64", "end_s": "float64", "bytes": "float64",
          "group": "int64"}


class Recorder:
    """Collects rows as tuples (cheap on the hot path) and builds the events table once at the end."""

    def __init__(self):
        self.rows: list[tuple] = []

    def compute(self, agent, stream: str, name: str, microbatch: int, start_s: float, end_s: float) -> None:
        kind = "comm" if stream in ("tp", "cp", "ep") else "compute"
        self.rows.append((agent.rank, stream, kind, name, microbatch, start_s, end_s, 0.0, agent.multiplicity))

    def transfer(self, agent, stream: str, name: str, microbatch: int, start_s: float, end_s: float,
                 size_bytes: float) -> None:
        self.rows.append((agent.rank, stream, "comm", name, microbatch, start_s, end_s, size_bytes,
                          agent.multiplicity))

    def table(self) -> Table:
        """Events as columns (``core.table``; ``.frame()`` for a DataFrame); ``group`` is how many GPUs the row
        stands for (1 when expanded)."""
        return Table.of_rows(self.rows, COLUMNS, DTYPES)
