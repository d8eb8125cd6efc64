"""Smoke test of scripts/p2p_send_wait.py (a what-if on the schedule alone, docs/calibration.md): it runs from a
folder without the package, derives its per-row inputs from scripts/pipeline_terms.py's terms, and waiting on the
sends never makes a step shorter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_p2p_send_wait_runs_and_the_wait_only_adds_time(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "p2p_send_wait.py"), "megatron-177b-4608-h100"],
                         capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": ""},
                         timeout=300)
    assert run.returncode == 0, run.stderr
    (row,) = [line.split() for line in run.stdout.splitlines() if line.startswith("megatron-177b-4608-h100")]
    f_ms, e_ms, t_ms = map(float, row[1:4])
    free_ms, held_ms = float(row[4]), float(row[6])
    assert f_ms > 0 and e_ms > 0 and 0 < t_ms < f_ms
    # 12 microbatches x 8 chunks x 3F is a floor of the step on one stage; the wait only adds time
    assert free_ms >= 12 * 8 * 3 * f_ms
    assert held_ms >= free_ms
