"""Round 37 (docs/calibration/round-37.md, "Round 37: audit of llm-foundry's MPT rows"): the five A100 rows of the
llm-foundry family against the tables they come from, and every MPT row's model and stack keys against the benchmark's
own yamls and MPTConfig's defaults, so that a key changed away from its source fails here.

Source of the rows: mosaicml/llm-foundry, scripts/train/benchmarking/README.md (commit 061f2c7c), tables "A100 80GB
with 1600 Gbps node-node interconnect (RoCE)" and "A100 40GB with 1600 Gbps node-node interconnect (RoCE)": GPUs,
micro batch, gradient accumulation, global batch, activation checkpointing, tokens/s per GPU ("Throughput
(T/s/GPU)", an integer) and "NumParams", as printed. The H100 rows are held to the "H100 80GB BF16" table by
test_round16_llmfoundry_h100.py and test_round19_mpt_h100_rows.py; the MFU conversion of all 16 rows by
test_round23_conversions.py.

Source of the keys: the yamls submit_benchmarks.py loads (scripts/train/yamls/mpt/{1b,30b}.yaml @ 08875284, 7b.yaml
@ 12a63191, 13b.yaml @ d4bf3c38, 70b.yaml @ 47b89d49: vocab_size 50368, expansion_ratio 4, no alibi, no dropout,
decoupled_adamw); llmfoundry/models/mpt/configuration_mpt.py (learned_pos_emb True, no_bias False, tied embeddings,
resid/emb/attn dropout 0, norm_type low_precision_layernorm: one F.layer_norm a phase); submit_benchmarks.py @
12a63191 and @ 51652eae (low-precision LayerNorm forced, limit_all_gathers, non-reentrant checkpointing).
"""

import pytest
from llmfoundry_h100 import HELD_OUT, SEQ, assert_published_tflops_are_the_rows, assert_scenario_is_row

from simcluster.spec import config

# scenario -> (GPUs, micro batch, accumulation steps, global batch, activation checkpointing, tokens/s per GPU,
#              NumParams), as the README's A100 tables print them (sequence 2048 in every row), and the GPU
TABLE = {
    "mpt-7b-8-a100-80gb": ((8, 6, 2, 96, False, 4641, 6658859008), "a100-80gb-sxm"),
    "mpt-13b-8-a100-80gb": ((8, 2, 3, 48, False, 2262, 12853954560), "a100-80gb-sxm"),
    "mpt-30b-8-a100-80gb": ((8, 3, 21, 504, True, 916, 29975214080), "a100-80gb-sxm"),
    "mpt-70b-64-a100-80gb": ((64, 8, 4, 2048, True, 410, 64862437376), "a100-80gb-sxm"),
    "mpt-7b-128-a100-40gb": ((128, 18, 1, 2304, True, 3623, 6658859008), "a100-40gb-sxm"),
}
# the A100 tables' headings: "1600 Gbps node-node interconnect", i.e. 1.6e12 bit/s a node
NODE_LINK_BITS = 1600e9
MPT_ROWS = sorted(n for n in HELD_OUT if n.startswith("mpt-"))


def test_the_a100_rows_are_held_out_llm_foundry_rows():
    assert set(TABLE) <= set(MPT_ROWS) and len(MPT_ROWS) == 16


@pytest.mark.parametrize("name", sorted(TABLE))
def test_scenario_is_the_a100_tables_row(name):
    row, gpu = TABLE[name]
    assert_scenario_is_row(name, row, gpu=gpu)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_published_tflops_are_the_a100_rows_tokens_per_second_in_llm_foundrys_count(name):
    assert_published_tflops_are_the_rows(name, TABLE[name][0])


@pytest.mark.parametrize("name", sorted(n for n in TABLE if config.load(n).cluster.nodes > 1))
def test_multi_node_a100_rows_have_the_headings_1600_gbps_a_node(name):
    cluster = config.load(name).cluster
    assert cluster.nic.rate * 8 * cluster.gpus_per_node == pytest.approx(NODE_LINK_BITS)


@pytest.mark.parametrize("name", MPT_ROWS)
def test_every_mpt_row_runs_the_benchmarks_model_and_stack(name):
    scenario = config.load(name)
    m, t, p = scenario.model, scenario.training, scenario.parallelism
    # model: the yaml's vocabulary and expansion ratio, MPTConfig's defaults (learned positions, biases, tied
    # embeddings, LayerNorm, no QK norm, no dropout), the position table sized by the run's sequence
    assert (m.vocab, m.ffn_hidden, m.max_seq_len) == (50368, 4 * m.hidden, SEQ)
    assert (m.position, m.linear_biases, m.tied_embeddings, m.norm) == ("learned", True, True, "layernorm")
    assert not m.qk_layernorm and not m.dropout
    # stack: llm-foundry's eager MPT with its Triton attention line, fused cross entropy, Composer's DecoupledAdamW,
    # one low-precision LayerNorm kernel a phase, bf16 FSDP1 FULL_SHARD over every GPU with bf16 reduction
    assert (t.precision, t.seq_len, t.attention, t.cross_entropy) == ("bf16", SEQ, "flash_triton", "fused")
    assert (t.optimizer, t.layer_backward, t.norm_kernels) == ("decoupled_adamw", "eager", "fused")
    assert (p.tp, p.pp, p.zero_stage, p.grad_reduce_dtype) == (1, 1, 3, "bf16")
