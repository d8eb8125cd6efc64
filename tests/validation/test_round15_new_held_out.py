"""Round 15's new held-out rows (docs/calibration/round-15.md, "Round 15: new held-out runs") against the other figures
their sources publish, so that a wrong shape, batch or GPU count in a scenario cannot pass unseen:

- Narayanan et al. 2021 (SC21, arXiv 2104.04473) Table 1 states each model's parameter count (billion, one
  decimal) and the aggregate PFLOP/s over all GPUs beside the per-GPU TFLOP/s; Table 2 states 174.6B for the
  GPT-3 shape of Megatron-LM's README example. The scenario's parameter count must be the table's (its rounding,
  0.05B), and per-GPU TFLOP/s x GPUs the aggregate (163 carries three digits: 0.31% of rounding).
- Megatron-LM's README GPT-3 example: "each iteration takes around 32 seconds resulting in 138 teraFLOPs per GPU":
  the scenario's hardware FLOP a step (recompute counted, the README's count: Narayanan et al. 2021 eq. 3) over
  1,024 GPUs x 32 s must give 138 within 0.5% ("around 32 seconds" and 138 are rounded).
"""

import pytest

from simcluster.spec import config
from simcluster.studies import validation
from simcluster.workload import moe

HELD_OUT = {c["scenario"]: c for c in validation.held_out_cases()}

# scenario -> (parameters in billions, aggregate PFLOP/s) as SC21 Table 1 prints them
SC21_TABLE_1 = {
    "narayanan2021-529.6b-a100": (529.6, 410.2),
    "narayanan2021-1008b-a100": (1008.0, 502.0),
}
ROUND_15_ROWS = {"megatronlm-gpt3-175b-1024-a100", *SC21_TABLE_1}


def test_round_15_rows_are_held_out_with_their_sources():
    assert ROUND_15_ROWS <= set(HELD_OUT)
    sources = validation.sources()
    for name in ROUND_15_ROWS:
        assert HELD_OUT[name]["source"] in sources, name
        assert HELD_OUT[name]["metric"] == "hardware", name  # both sources count the recomputed forward


@pytest.mark.parametrize("name", sorted(SC21_TABLE_1))
def test_sc21_rows_have_table_1s_parameters_and_aggregate_throughput(name):
    scenario = config.load(name)
    billions, aggregate_pflops = SC21_TABLE_1[name]
    assert scenario.model.params / 1e9 == pytest.approx(billions, abs=0.05)
    assert HELD_OUT[name]["tflops_per_gpu"] * scenario.cluster.gpus / 1e3 == pytest.approx(aggregate_pflops,
                                                                                            rel=0.0031)


def test_megatron_readme_gpt3_example_is_138_tflops_at_32_seconds():
    scenario = config.load("megatronlm-gpt3-175b-1024-a100")
    t = scenario.training
    assert scenario.model.params / 1e9 == pytest.approx(174.6, abs=0.05)  # SC21 Table 2's GPT-3 175B
    assert scenario.cluster.gpus == 1024 and t.global_batch_size == 1536 and t.activation_recompute == "full"
    flop = moe.hardware_flop_per_step(scenario.model, t.seq_len, t.global_batch_size, t.activation_recompute)
    assert flop / (scenario.cluster.gpus * 32.0) / 1e12 == pytest.approx(HELD_OUT[scenario.name]["tflops_per_gpu"],
                                                                         rel=0.005)
