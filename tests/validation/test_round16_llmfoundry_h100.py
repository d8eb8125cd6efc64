"""Round 16's held-out rows (docs/calibration/round-16.md, "Round 16: new held-out runs") against the other figures
their source publishes, so that a wrong shape, batch or GPU count in a scenario cannot pass unseen.

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


# d_model and n_heads of the yaml llm-foundry's benchmark script loads for each size (round 36,
# docs/calibration/round-36.md "Round 36: MPT-13B against 7B and 30B"): submit_benchmarks.py reads
# scripts/train/yamls/mpt/<size>.yaml before llm-foundry#543 (@ 12a63191) and
# scripts/train/yamls/pretrain/mpt-<size>.yaml after. mpt/30b.yaml @ 08875284 and pretrain/mpt-30b.yaml @ 39393a21 and @
# fe15f275: 7168 / 56; mpt/70b.yaml @ 47b89d49: 8192 / 64; pretrain/mpt-13b.yaml @ 309f6837: 5120 / 40;
# pretrain/mpt-7b.yaml @ 15fb4ffa: 4096 / 32; mpt/1b.yaml @ 08875284: 2048 / 16 ("Modified 24->16 so that d_head == 128
# to statisfy FlashAttention"). Every size runs heads of 128; the 30B scenarios carried 64 heads of 112 until round 36.
YAML_HEADS = {"mpt-1b": (2048, 16), "mpt-7b": (4096, 32), "mpt-13b": (5120, 40), "mpt-30b": (7168, 56),
              "mpt-70b": (8192, 64)}


@pytest.mark.parametrize("name", sorted(n for n in HELD_OUT if n.startswith("mpt-")))
def test_mpt_scenarios_have_the_benchmark_yamls_heads(name):
    model = config.load(name).model
    assert (model.hidden, model.heads) == YAML_HEADS["-".join(name.split("-")[:2])], name
