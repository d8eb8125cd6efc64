"""Round 35's held-out rows from NeMo Megatron 22.08's GPT-3 5B scaling table against their sources (docs/calibration.md
"Round 35: held-out runs added").

The NeMo Megatron (BigNLP-Scripts) README of release 22.08, section 7.1.2, "Tokens per Second" on 1 / 2 / 5 / 9 / 10 /
18 / 20 DGX A100 80GB nodes: 39543 / 79128 / 195047 / 344523 / 383500 / 670254 / 731791. The layout is the 5B
training configuration (conf/training/gpt3/5b.yaml, both stored versions alike): 24 layers, hidden 4096, 32 heads,
sequence 2048, micro batch 2, global batch 1440, tp 2, pp 1, bf16, no recompute, GPT-2 BPE (50,257 words) padded to a
multiple of 128 x tp. The table does not print the batch at each node count; its figures do: each is 1440 x 2048
tokens over a step time with two decimals, truncated to a whole token a second, and 1440 / (2 x 4 x nodes) is a whole
number of microbatches at every node count in the table. The 10-node figure is not a row: it equals the README's
22.04 and 22.05 copies' (383500) to the token, so the rule cannot pin it to 22.08. A changed shape, batch, layout or
conversion fails here.
"""

import math

import pytest

from simcluster.spec import config
from simcluster.studies import validation

TOKENS_PER_STEP = 1440 * 2048
GPT2_BPE_WORDS = 50257
# nodes -> tokens/s as the README prints them (section 7.1.2, release 22.08), the admitted rows
PUBLISHED = {1: 39543, 2: 79128, 5: 195047, 9: 344523, 18: 670254, 20: 731791}


def _name(nodes):
    return f"nemo2208-gpt3-5b-{8 * nodes}-a100"


def _case(name):
    return next(c for c in validation.held_out_cases() if c["scenario"] == name)


@pytest.mark.parametrize("nodes", sorted(PUBLISHED))
def test_each_figure_is_the_fixed_batch_over_a_two_decimal_step(nodes):
    tokens_per_s = PUBLISHED[nodes]
    step = round(TOKENS_PER_STEP / tokens_per_s, 2)
    assert math.floor(TOKENS_PER_STEP / step) == tokens_per_s   # 74.58, 37.27, 15.12, 8.56, 4.40, 4.03 s
    assert TOKENS_PER_STEP / tokens_per_s == pytest.approx(step, abs=0.005)


def _fits(tokens_per_step, tokens_per_s, cut=math.floor):
    step = round(tokens_per_step / tokens_per_s, 2)
    return cut(tokens_per_step / step) == tokens_per_s


def test_another_batch_would_not_give_two_decimal_steps():
    """The check above can fail: at a global batch of 1,536 (the 175B configuration's) no row's figure is a
    two-decimal step, so the round steps pin the batch, not the rounding."""
    other = 1536 * 2048
    assert not any(_fits(other, v) for v in PUBLISHED.values())


def test_the_figures_pin_the_batch_only_up_to_a_whole_multiple_of_1440():
    """Round 35 review: of every batch from 1 to 4,095 sequences only 1,440 and 2,880 make all six figures
    truncated two-decimal steps (k x 1,440 always does: k times a two-decimal step is one), so the table fixes the
    batch to a multiple of 1,440 and the 5B configuration picks 1,440; rounding instead of truncating fits no batch."""
    fitting = [b for b in range(1, 4096) if all(_fits(b * 2048, v) for v in PUBLISHED.values())]
    assert fitting == [1440, 2880]
    assert not any(all(_fits(b * 2048, v, round) for v in PUBLISHED.values()) for b in range(1, 4096))


def test_the_ten_node_figure_is_not_a_row():
    """383500 tokens/s at 10 nodes is in the 22.04 and 22.05 copies of the table as well as in 22.08's, so rule R35
    cannot pin it to 22.08 (the same README also carries the mT5 20-node figure, 1303767, unchanged from 22.05 while
    its other cells moved)."""
    names = {c["scenario"] for c in validation.held_out_cases()}
    assert {_name(n) for n in PUBLISHED} <= names and _name(10) not in names


@pytest.mark.parametrize("nodes", sorted(PUBLISHED))
def test_each_row_is_the_5b_configuration_on_its_nodes(nodes):
    scenario = config.load(_name(nodes))
    t, p, m = scenario.training, scenario.parallelism, scenario.model
    assert (scenario.cluster.nodes, scenario.cluster.gpus_per_node, scenario.cluster.gpu.name) == (
        nodes, 8, "a100-80gb-sxm")
    assert (m.layers, m.hidden, m.heads, m.max_seq_len) == (24, 4096, 32, 2048)
    assert m.vocab == math.ceil(GPT2_BPE_WORDS / (128 * p.tp)) * 128 * p.tp == 50432
    assert (t.seq_len, t.micro_batch_size, t.global_batch_size, t.precision) == (2048, 2, 1440, "bf16")
    assert (p.tp, p.pp, p.dp, p.zero_stage, p.sequence_parallel) == (2, 1, 4 * nodes, 0, False)
    assert t.activation_recompute == "none"
    assert (p.overlap_grad_reduce, p.grad_reduce_dtype) == (True, "fp32")   # NeMo 1.x's async fp32 chunks, pp 1
    # NeMo 1.x's MegatronBaseModel._validate_config turns gradient accumulation fusion off at pipeline size 1, and
    # its configure_optimizers keeps the asynchronous all-reduce only without the fusion: never both on.
    assert t.gradient_accumulation_fusion is False and not (t.gradient_accumulation_fusion and p.overlap_grad_reduce)
    microbatches = t.global_batch_size // (t.micro_batch_size * p.dp)
    assert microbatches * t.micro_batch_size * p.dp == 1440 and microbatches == 180 // nodes
    assert _case(_name(nodes))["step_time_s"] == pytest.approx(TOKENS_PER_STEP / PUBLISHED[nodes], abs=5e-5)


def test_the_model_is_the_5b_of_its_name():
    """12 L h^2 (1 + 13 / 12h) + (V + s) h: 4.84B in the layers, 5.05B with the embeddings."""
    m = config.load(_name(1)).model
    layers = 12 * m.layers * m.hidden ** 2 * (1 + 13 / (12 * m.hidden))
    total = layers + (m.vocab + m.max_seq_len) * m.hidden
    assert 4.8e9 < layers < 4.9e9 and 5.0e9 < total < 5.1e9
