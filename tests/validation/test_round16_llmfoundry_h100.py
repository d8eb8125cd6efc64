"""Round 16's held-out rows (docs/calibration.md, "Round 16: new held-out runs") against the other figures their
source publishes, so that a wrong shape, batch or GPU count in a scenario cannot pass unseen.

Source: mosaicml/llm-foundry, scripts/train/benchmarking/README.md (commit 061f2c7c), table "H100 80GB BF16": each
row states the GPUs, micro batch, gradient accumulation, global batch, activation checkpointing, tokens/s per GPU
("Throughput (T/s/GPU)", an integer), the parameter count ("NumParams") and "Model TFLOP" (MFU x 989.4 TFLOP/s).

- The scenario's layout must be the row's, and global batch = GPUs x micro batch x accumulation steps.
- The scenario's parameter count must be the row's NumParams (simcluster counts MPT's biases, norms and position
  table as the table does).
- The published TFLOP/s (the held-out entry) must be tokens/s per GPU x llm-foundry's FLOP per token, 6 N + 12 L d s
  (the README's MFU formula), within the rounding of the integer tokens/s (0.3%), and simcluster's model FLOP a step
  must be that count within 0.2%, so the harness compares like with like.
"""

import pytest
from llmfoundry_h100 import HELD_OUT, SEQ, assert_published_tflops_are_the_rows, assert_scenario_is_row

from simcluster.spec import config
from simcluster.workload import moe

# scenario -> (GPUs, micro batch, accumulation steps, global batch, activation checkpointing, tokens/s per GPU,
#              NumParams), as the table prints them (sequence 2048 in every row)
TABLE = {
    "mpt-70b-32-h100": (32, 2, 16, 1024, True, 882, 64862437376),
    "mpt-30b-32-h100": (32, 14, 3, 1344, True, 2308, 29975214080),
    "mpt-30b-16-h100": (16, 10, 3, 480, True, 2263, 29975214080),
    "mpt-30b-8-h100": (8, 3, 21, 504, True, 2002, 29975214080),
    "mpt-13b-64-h100": (64, 2, 1, 128, False, 4800, 12853954560),
    "mpt-13b-32-h100": (32, 2, 1, 64, False, 4811, 12853954560),
    "mpt-13b-16-h100": (16, 2, 1, 32, False, 4767, 12853954560),
    "mpt-13b-8-h100": (8, 2, 1, 16, False, 4792, 12853954560),
}


def test_round_16_rows_are_held_out():
    assert set(TABLE) <= set(HELD_OUT)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_scenario_is_the_tables_row(name):
    assert_scenario_is_row(name, TABLE[name])


@pytest.mark.parametrize("name", sorted(TABLE))
def test_published_tflops_are_the_tables_tokens_per_second_in_llm_foundrys_count(name):
    flop_per_token = assert_published_tflops_are_the_rows(name, TABLE[name])
    scenario = config.load(name)
    m, t = scenario.model, scenario.training
    simulated_count = moe.model_flop_per_step(m, t.seq_len, t.global_batch_size)
    assert simulated_count == pytest.approx(flop_per_token * SEQ * t.global_batch_size, rel=0.002)
