"""Recorded runs: import PyTorch-profiler (Kineto) and Chakra traces, export both.

``load_trace`` picks the importer from the file names: ``*.et`` are Chakra, ``*.json``/``*.json.gz`` Kineto.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from simcluster.core.errors import ScenarioError
from simcluster.replay.formats.chakra import read_chakra, write_chakra
from simcluster.replay.formats.kineto import read_kineto
from simcluster.replay.formats.kineto_writer import write_kineto
from simcluster.replay.recorded import RecordedOp, RecordedRun, RecordedStep, check_ranks, check_times

__all__ = ["RecordedOp", "RecordedRun", "RecordedStep", "is_chakra", "load_trace", "read_chakra", "read_kineto",
           "write_chakra", "write_kineto"]


def is_chakra(path: str | Path) -> bool:
    """Whether a trace file is Chakra (``*.et``), by its name; anything else is read as Kineto JSON."""
    return Path(path).name.lower().endswith(".et")


def load_trace(paths: Sequence[str | Path]) -> RecordedRun:
    """Import trace files of one run (one per rank), Chakra or Kineto by extension (not both at once)."""
    if not paths:
        raise ScenarioError("trace", "no trace files given")
    chakra = [is_chakra(p) for p in paths]
    if any(chakra) and not all(chakra):
        raise ScenarioError("trace", "mixed Chakra (.et) and Kineto (.json) files: give one run's files")
    run = read_chakra(paths) if all(chakra) else read_kineto(paths)
    check_times(run, str(paths[0]))
    check_ranks(run, str(paths[0]))
    return run
