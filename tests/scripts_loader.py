"""The repository's scripts (``scripts/NAME.py``) imported as modules by the tests that check them (``tests/`` is on
the path as the conftest's folder)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    """``scripts/<name>.py`` as a module: registered in ``sys.modules`` (its dataclasses look their module up) and
    imported with ``scripts/`` on the path (a script may import its neighbours, as when run from ``scripts/``)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


def refuse_simulation(monkeypatch, dp_phase_charges) -> None:
    """Fail the test if ``dp_phase_charges`` (the loaded script) simulates: its command line is to be checked first
    (rounds 33-34: a bad or repeated row refused before any simulation)."""
    def refuse(*_args, **_kw):
        raise AssertionError("simulated before the command line was checked")

    monkeypatch.setattr(dp_phase_charges, "simulate", refuse)
    monkeypatch.setattr(dp_phase_charges.validation, "run_case", refuse)
