"""The engine turns numpy's transparent-huge-page advice off (engine/pages.py), unless the user chose it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = ("import simcluster.engine\n"
         "try:\n    from numpy._core.multiarray import _get_madvise_hugepage\n"
         "except ImportError:\n    from numpy.core.multiarray import _get_madvise_hugepage\n"
         "print(_get_madvise_hugepage())")


def advice_after_importing_the_engine(**env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    environment["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", PROBE], env={**environment, **env}, capture_output=True, text=True,
                          check=True, cwd=ROOT.parent)
    return done.stdout.strip()


@pytest.mark.parametrize(("env", "expected"), [({}, "False"), ({"NUMPY_MADVISE_HUGEPAGE": "1"}, "True"),
                                               ({"NUMPY_MADVISE_HUGEPAGE": "0"}, "False")])
def test_the_engine_stops_huge_page_advice_unless_the_user_set_it(env, expected):
    assert advice_after_importing_the_engine(**env) == expected
