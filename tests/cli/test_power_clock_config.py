"""A bad efficiency.yaml ``clock_model`` or ``power_clock.low_power_share`` (workload/power_clock.py) is refused in
one line naming the key, exit 2 through the CLI, never a traceback."""

from __future__ import annotations

import copy
import math

import pytest

from simcluster.core import catalog
from simcluster.core.errors import ScenarioError
from simcluster.workload import power_clock
from tests.cli.test_hostile_inputs import one_line_refusal


def _with(monkeypatch, clock_model=None, share=None):
    table = copy.deepcopy(catalog.load("efficiency"))
    if clock_model is not None:
        table["clock_model"] = clock_model
    if share is not None:
        table["power_clock"] = {**table["power_clock"], "low_power_share": share}
    monkeypatch.setattr(power_clock, "_table", lambda: table)


@pytest.mark.parametrize("model", ["duty", "FIXED", 1, None])
def test_a_bad_clock_model_names_the_key(monkeypatch, model):
    table = copy.deepcopy(catalog.load("efficiency"))
    table["clock_model"] = model
    monkeypatch.setattr(power_clock, "_table", lambda: table)
    with pytest.raises(ScenarioError, match="efficiency.yaml clock_model"):
        power_clock.clock_model()


@pytest.mark.parametrize("share", [-0.1, 1.5, math.nan, math.inf, "0.1", True])
def test_a_low_power_share_outside_0_1_names_the_key(monkeypatch, share):
    _with(monkeypatch, clock_model="duty_cycle", share=share)
    with pytest.raises(ScenarioError, match=r"efficiency.yaml power_clock.low_power_share"):
        power_clock.low_power_share()


@pytest.mark.parametrize("share", [0, 0.13, 1])
def test_shares_in_range_are_kept(monkeypatch, share):
    _with(monkeypatch, clock_model="duty_cycle", share=share)
    assert power_clock.low_power_share() == share


@pytest.mark.parametrize(("model", "share", "key"), [("duty", None, "efficiency.yaml clock_model"),
                                                     ("duty_cycle", 2.0, "power_clock.low_power_share")])
def test_the_cli_refuses_in_one_line_with_exit_2(cli, monkeypatch, tmp_path, model, share, key):
    _with(monkeypatch, clock_model=model, share=share)
    code, _out, err = cli("run", "nemo2409-gpt3-175b-128-h100-bf16", "--out", tmp_path / "out")
    one_line_refusal(code, err, key)
