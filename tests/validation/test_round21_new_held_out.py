"""Round 21's new held-out rows (docs/calibration.md, "Round 21: new held-out runs"): the Megatron-LM baseline of
MegaScale (Jiang et al., NSDI 2024, arXiv 2402.15627v1), GPT-3 175B on 256 to 12,288 Ampere GPUs, held to the other
figures the paper publishes beside each step, so that a wrong shape, batch or layout cannot pass unseen:

- Table 2 prints iteration time, throughput (tokens/s) and MFU for each row. The MFU is the model FLOP of Narayanan
  et al. 2021, 72 B s l h^2 (1 + s/6h + V/12lh) (simcluster's ``model_flop_per_step``), over GPUs x iteration time x
  312 TFLOP/s (A100's bf16 peak): within 0.5% on every row (the iteration times carry 3-4 digits), so the GPUs are
  Ampere at 312, not H800 (989: 13-17% MFU). Throughput = batch x 2,048 / iteration time within 0.5%.
- Table 3's row 1 (baseline, 256 GPUs, batch 256, MFU 47.7%) is held as 0.477 x 312 model TFLOP/s a GPU.
The model's vocabulary is 64,000 as stated, padded to 64,512 (128 x tp 8) as Megatron-LM pads it: 0.004% of the FLOP.
"""

import pytest

from simcluster.spec import config
from simcluster.studies import validation
from simcluster.workload import moe

HELD_OUT = {c["scenario"]: c for c in validation.held_out_cases()}
SOURCE = "megascale2024_megatron"
PEAK = 312e12
SEQ = 2048

# GPUs -> (global batch, iteration time s, throughput tokens/s, MFU), Table 2's Megatron-LM rows as published
TABLE_2 = {
    256: (768, 40.0, 39.3e3, 0.530), 512: (768, 21.2, 74.1e3, 0.499), 768: (768, 15.2, 103.8e3, 0.467),
    1024: (768, 11.9, 132.7e3, 0.447), 3072: (6144, 29.02, 433.6e3, 0.487), 6144: (6144, 14.78, 851.6e3, 0.478),
    8192: (6144, 12.24, 1027.9e3, 0.433), 12288: (6144, 8.57, 1466.8e3, 0.412),
}
TABLE_3 = "megascale2024-megatron-175b-256-gbs256-a100"
ROWS = {f"megascale2024-megatron-175b-{gpus}-a100": gpus for gpus in TABLE_2}


def test_round_21_rows_are_held_out_with_their_source():
    megascale = {name for name in HELD_OUT if name.startswith("megascale2024-")}
    assert megascale == set(ROWS) | {TABLE_3}
    assert all(HELD_OUT[name]["source"] == SOURCE for name in megascale)
    assert SOURCE in validation.sources()


@pytest.mark.parametrize("name", sorted(ROWS) + [TABLE_3])
def test_scenario_is_the_published_layout(name):
    scenario = config.load(name)
    m, t, p = scenario.model, scenario.training, scenario.parallelism
    gpus, batch = (256, 256) if name == TABLE_3 else (ROWS[name], TABLE_2[ROWS[name]][0])
    assert (m.layers, m.hidden, m.heads, m.vocab, t.seq_len) == (96, 12288, 128, 64512, SEQ)
    assert (p.tp, p.pp, p.virtual_stages, p.dp, scenario.cluster.gpus) == (8, 8, 6, gpus // 64, gpus)
    assert t.global_batch_size == batch
    assert scenario.cluster.gpu.name == "a100-80gb-sxm" and scenario.cluster.gpus_per_node == 8
    # the assumptions of the header, Megatron-LM's own configuration of this model (Korthikanti et al. 2022)
    assert (t.micro_batch_size, t.precision, t.activation_recompute, t.attention) == (1, "bf16", "selective", "naive")
    assert (p.sequence_parallel, p.zero_stage, p.overlap_grad_reduce, p.tp_comm_overlap) == (True, 0, False, False)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_table_2_mfu_and_throughput_are_the_model_flop_of_the_published_step(name):
    gpus = ROWS[name]
    batch, step_s, tokens_per_s, mfu = TABLE_2[gpus]
    assert HELD_OUT[name]["step_time_s"] == step_s
    scenario = config.load(name)
    flop = moe.model_flop_per_step(scenario.model, SEQ, batch)
    assert flop / (gpus * step_s * PEAK) == pytest.approx(mfu, rel=5e-3)
    assert batch * SEQ / step_s == pytest.approx(tokens_per_s, rel=5e-3)


def test_table_3_baseline_is_its_mfu_at_a100_peak():
    assert HELD_OUT[TABLE_3]["tflops_per_gpu"] == pytest.approx(0.477 * PEAK / 1e12, abs=0.05)
