"""The replay study (simcluster/studies/replay.py): trace files in, events, per-step report and assumptions out,
without the command line. The command's own contract (options, messages, files) is tests/cli/test_replay_cli.py.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.replay.report import step_report
from simcluster.spec import hardware
from simcluster.studies.replay import nic_from_text, replay_traces

CHAKRA = sorted((Path(__file__).parent.parent / "data" / "chakra").glob("all_reduce.*.et"))


def test_outcome_holds_the_events_their_report_and_every_assumption_in_order():
    """astra-sim's 8-rank allreduce: the importer's sentences first, then the GPU, the default fabric and what
    it was replayed on, the plan's own last; the simulation runs once, inside ``status``."""
    shown = []

    @contextmanager
    def status(message):
        shown.append(message)
        yield

    outcome = replay_traces(CHAKRA, network_model="analytic", status=status)
    assert shown == ["replaying 8 ops on 8 ranks..."]
    assert outcome.steps == step_report(outcome.run, outcome.events)
    assert outcome.report() == {"steps": outcome.steps, "assumptions": outcome.assumptions}
    assert outcome.gpu == "a100-80gb-sxm" and outcome.fabric.name == "nvswitch-node"
    own = outcome.assumptions[len(outcome.run.assumptions):]
    assert own[0].startswith("GPU: ") and own[1].startswith("fabric: the trace does not record it")
    assert own[2].startswith("fabric replayed on: nvswitch-node, 8 x a100-80gb-sxm") and "analytic" in own[2]
    assert own[-1].startswith("replayed 8 ops on 8 ranks: 8 of 8 communication ops re-simulated")


def test_a_line_rate_nic_is_the_default_nic_at_that_rate():
    custom = nic_from_text("25 Gb/s", "connectx-6")
    base = hardware.nic("connectx-6")
    assert custom.name == "custom 25 Gb/s" and custom.rate == pytest.approx(25e9 / 8)
    assert custom.model_dump(exclude={"name", "rate"}) == base.model_dump(exclude={"name", "rate"})
    assert nic_from_text("connectx-7", "connectx-6") == hardware.nic("connectx-7")
    with pytest.raises(ScenarioError, match="--nic"):
        nic_from_text("fast", "connectx-6")
