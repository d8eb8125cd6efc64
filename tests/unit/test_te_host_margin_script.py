"""scripts/te_host_margin.py: the block closest to host-bound, its host side with and without Transformer Engine's
module calls. The difference is the module calls' excess (layers x 5 calls x excess a call, forward, Megatron-Core's
layer spec) on a Transformer Engine run and nothing on a run without it (Megatron-LM 2021); headroom closes the
block's host/device gap. Fails if the script reads another side than the plan's blocks or misses the module calls."""

import pytest
from scripts_loader import load_script

from simcluster.workload import host_dispatch


@pytest.fixture(scope="module")
def margin():
    return load_script("te_host_margin")


def test_a_te_run_adds_its_module_calls_and_a_2021_run_does_not(margin):
    block, device, torch_level, host, ratio, headroom = margin.margins("megatron-1.7b-h100")
    assert block.endswith("forward")
    layers = 24   # the 1.7B model's layers in one unpipelined chunk (README 2024 table)
    assert host - torch_level == pytest.approx(layers * 5 * host_dispatch.module_excess_s("bf16", False), rel=1e-6)
    assert ratio == pytest.approx(host / device, rel=1e-12)
    assert headroom * layers == pytest.approx(device - host, rel=1e-12)
    _, _, torch_2021, host_2021, _, _ = margin.margins("megatron-1.2b-a100-node")
    assert host_2021 == pytest.approx(torch_2021, rel=1e-12)


def test_a_bad_scenario_name_is_one_line_and_exit_2(margin, capsys):
    assert margin.main(["no-such-scenario"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: SCENARIO")
