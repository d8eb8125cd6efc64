"""Round 38: tests that failed by timing on a loaded machine, and the gaps in the commands they revealed
(docs/calibration.md, "Round 38: tests that failed by timing"). Each case lands the signal at the exact point on
purpose, so it does not depend on when a real one arrives; each failed on main before its fix.

- ``sweep``: a hangup (or Ctrl-C) after the last run, while the results table was computed, said "interrupted by
  SIGHUP" alone and left no results.csv nor sweep.json though every run had finished (round 29's test of a sweep's
  hangup sent it after a fixed 5 s, which under load fell there).
"""

from __future__ import annotations

import json
import signal

import yaml

from simcluster.studies import sweep as sweep_study
from tests.conftest import SMALL


def _signal_on_first_call(monkeypatch, module, name: str, signum: int) -> list:
    """``module.name`` receiving ``signum`` (a real signal, through the command's handler) on its first call."""
    real, calls = getattr(module, name), []

    def signalled(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            signal.raise_signal(signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, signalled)
    return calls


def test_a_sweep_interrupted_after_its_last_run_keeps_every_run(cli, tmp_path, monkeypatch):
    calls = _signal_on_first_call(monkeypatch, sweep_study, "table", signal.SIGHUP)
    scenario = tmp_path / "small.yaml"
    scenario.write_text(yaml.safe_dump(SMALL, sort_keys=False))
    code, out, err = cli("sweep", scenario, "--gpus", "16,32", "--jobs", "1", "--network", "analytic", "--no-plots",
                         "--out", tmp_path / "sw")
    assert code == 129 and err.count("\n") == 1 and "Traceback" not in err, (code, err)
    assert err.startswith("interrupted by SIGHUP: 2 of 2 runs finished; wrote results.csv, sweep.json"), err
    assert calls and out == ""
    report = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert report["pending"] == 0 and [row["gpus"] for row in report["series"][0]["rows"]] == [16, 32]
