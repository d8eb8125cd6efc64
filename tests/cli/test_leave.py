"""``cli.leave``: the command's process ends without tearing its heap down, yet as ``sys.exit`` would end it: exit
handlers run, buffered output reaches the pipe, the code is the process's, and threads still running are waited for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}, "PYTHONPATH": str(ROOT)}  # buffered
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("code", [0, 3])
def test_handlers_run_buffers_reach_the_pipe_and_the_code_is_kept(code):
    done = run_python("import atexit, sys\nfrom simcluster.cli import leave\n"
                      "atexit.register(lambda: print('handler ran'))\n"
                      f"print('out', end='')\nprint('err', end='', file=sys.stderr)\nleave({code})\n")
    assert done.returncode == code
    assert done.stdout == "outhandler ran\n" and done.stderr == "err"


def test_a_running_thread_is_waited_for():
    done = run_python("import threading, time\nfrom simcluster.cli import leave\n"
                      "def late():\n    time.sleep(0.2)\n    print('thread finished', flush=True)\n"
                      "threading.Thread(target=late).start()\nleave(0)\n")
    assert done.returncode == 0 and done.stdout == "thread finished\n"


def test_a_profiler_still_writes_its_profile(tmp_path):
    """``python -m cProfile -m simcluster.cli ...`` writes the profile after the command returns: not cut short."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(tmp_path / "run.prof"), "-m", "simcluster.cli",
                           "schema"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and (tmp_path / "run.prof").stat().st_size > 0


@pytest.mark.parametrize("before", [True, False])
def test_the_cycle_collector_is_as_it_was_once_the_commands_have_loaded(before):
    """Loading the command's modules pauses the collector (``cli/__init__``), and gives it back as it found it."""
    done = run_python("import gc\n" + ("" if before else "gc.disable()\n")
                      + "import simcluster.cli\nprint(gc.isenabled())\n")
    assert done.returncode == 0 and done.stdout == f"{before}\n"
