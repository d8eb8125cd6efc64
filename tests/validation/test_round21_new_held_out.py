"""Round 21's new held-out rows (docs/calibration/round-21.md, "Round 21: new held-out runs"): the Megatron-LM baseline
of MegaScale (Jiang et al., NSDI 2024, arXiv 2402.15627v1), GPT-3 175B on 256 to 12,288 Ampere GPUs, held to the other
figures the paper publishes beside each step, so that a wrong shape, batch or layout cannot pass unseen:

- Table 2 prints iteration time, throughput (tokens/s), training time for 300B tokens (days) and MFU for each row.
  The MFU is the model FLOP of Narayanan et al. 2021, 72 B s l h^2 (1 + s/6h + V/12lh) (what
  ``validation.published_tflops`` turns a published step into), over the bf16 peak of the scenario's GPU (A100:
  312 TFLOP/s): within 0.4% on every row (the iteration times carry 3-4 digits, the MFU 3), so the GPUs are Ampere
  at 312, not H800 (989: 13-17% MFU), and the count has the attention and logit terms (6 N a token with N the
  parameters, embedding included, is 2.7% lower and would miss the 256-GPU row by 2.6%). Throughput = batch x 2,048
  / iteration time and training time = 300e9 / throughput, each within 0.5%.
- Table 3's row 1 (baseline, 256 GPUs, batch 256, MFU 47.7%) is held as 0.477 x 312 model TFLOP/s a GPU, which is
  14.83 s a step (the scenario header's figure).
- Table 1 (tp 8, pp 8) and section 6.1 ("six ... interleaving stages", sequence 2,048, vocabulary 64,000): the
  scenario's vocabulary is 64,000 padded as Megatron-LM pads it (``--make-vocab-size-divisible-by`` 128 x tp), and
  its 96 layers fall into 8 x 6 model chunks of 2 layers.
"""

import pytest

from simcluster.spec import config
from simcluster.studies import validation

HELD_OUT = {c["scenario"]: c for c in validation.held_out_cases()}
SOURCE = "megascale2024_megatron"
SEQ, VOCAB, TP, PP, INTERLEAVING = 2048, 64000, 8, 8, 6  # Table 1 and section 6.1
TOKENS_TRAINED = 300e9  # Table 2's caption: "the training time required for training 300B tokens"
A100_BF16_PEAK = 312e12  # NVIDIA A100 datasheet, dense bf16

# GPUs -> (global batch, iteration time s, throughput tokens/s, training time days, MFU), Table 2's Megatron-LM rows
TABLE_2 = {
    256: (768, 40.0, 39.3e3, 88.35, 0.530), 512: (768, 21.2, 74.1e3, 46.86, 0.499),
    768: (768, 15.2, 103.8e3, 33.45, 0.467), 1024: (768, 11.9, 132.7e3, 26.17, 0.447),
    3072: (6144, 29.02, 433.6e3, 8.01, 0.487), 6144: (6144, 14.78, 851.6e3, 4.08, 0.478),
    8192: (6144, 12.24, 1027.9e3, 3.38, 0.433), 12288: (6144, 8.57, 1466.8e3, 2.37, 0.412),
}
TABLE_3 = "megascale2024-megatron-175b-256-gbs256-a100"
TABLE_3_GPUS, TABLE_3_BATCH, TABLE_3_MFU = 256, 256, 0.477
ROWS = {f"megascale2024-megatron-175b-{gpus}-a100": gpus for gpus in TABLE_2}


def mfu(name: str) -> float:
    """The row's published step as model FLOP/s a GPU over the bf16 peak of the scenario's GPU."""
    scenario = config.load(name)
    return validation.published_tflops(HELD_OUT[name], scenario) * 1e12 / scenario.cluster.gpu.peak_flop_per_s("bf16")


def test_round_21_rows_are_held_out_with_their_source():
    megascale = {name for name in HELD_OUT if name.startswith("megascale2024-")}
    assert megascale == set(ROWS) | {TABLE_3}
    assert all(HELD_OUT[name]["source"] == SOURCE and HELD_OUT[name]["metric"] == "model" for name in megascale)
    assert SOURCE in validation.sources()
    assert {name: HELD_OUT[name]["step_time_s"] for name in ROWS} == {name: TABLE_2[ROWS[name]][1] for name in ROWS}


@pytest.mark.parametrize("name", sorted(ROWS) + [TABLE_3])
def test_scenario_is_the_published_layout(name):
    scenario = config.load(name)
    m, t, p = scenario.model, scenario.training, scenario.parallelism
    gpus, batch = (TABLE_3_GPUS, TABLE_3_BATCH) if name == TABLE_3 else (ROWS[name], TABLE_2[ROWS[name]][0])
    padded_vocab = -(-VOCAB // (128 * TP)) * 128 * TP  # Megatron-LM's _vocab_size_with_padding
    assert (m.layers, m.hidden, m.heads, m.vocab, t.seq_len) == (96, 12288, 128, padded_vocab, SEQ)
    assert (p.tp, p.pp, p.virtual_stages, p.tp * p.pp * p.dp) == (TP, PP, INTERLEAVING, scenario.cluster.gpus)
    assert scenario.cluster.gpus == gpus and m.layers == p.pp * p.virtual_stages * 2  # 2 layers a model chunk
    assert t.global_batch_size == batch
    assert scenario.cluster.gpu.name == "a100-80gb-sxm" and scenario.cluster.gpus_per_node == 8
    assert scenario.cluster.gpu.peak_flop_per_s("bf16") == A100_BF16_PEAK
    # the assumptions of the header, Megatron-LM's own configuration of this model (Korthikanti et al. 2022)
    assert (t.micro_batch_size, t.precision, t.activation_recompute, t.attention) == (1, "bf16", "selective", "naive")
    assert (p.sequence_parallel, p.zero_stage, p.overlap_grad_reduce, p.tp_comm_overlap) == (True, 0, False, False)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_table_2_columns_are_one_step(name):
    batch, step_s, tokens_per_s, days, published_mfu = TABLE_2[ROWS[name]]
    assert mfu(name) == pytest.approx(published_mfu, rel=4e-3)
    assert batch * SEQ / step_s == pytest.approx(tokens_per_s, rel=5e-3)
    assert TOKENS_TRAINED / tokens_per_s / 86400 == pytest.approx(days, rel=5e-3)


def test_table_3_baseline_is_its_mfu_at_a100_peak():
    assert mfu(TABLE_3) == pytest.approx(TABLE_3_MFU, abs=5e-4)  # the 47.7% as printed, to its last digit
    scenario = config.load(TABLE_3)
    assert validation.published_step_s(HELD_OUT[TABLE_3], scenario) == pytest.approx(14.83, abs=5e-3)
