"""Squared-ReLU MLPs (``mlp: squared_relu``; So et al. 2021, Primer; Nemotron-4) and linear layers without biases
(``bias: false``) against closed forms: the activation kernel's FLOP and bytes, the non-gated MLP's model FLOP
(Narayanan et al. 2021's 72*B*s*l*h^2*(...) for GPT shapes), Korthikanti et al. 2022's stored activations, and the
Nemotron-4 reports' parameter counts."""

import math

import pytest

from simcluster.parallel import memory
from simcluster.spec import model
from simcluster.spec.model import TransformerSpec
from simcluster.workload import ops
from simcluster.workload.ops import Shard, layer_ops

GPT = TransformerSpec(layers=4, hidden=1024, heads=8, ffn_hidden=4096, vocab=5000, max_seq_len=2048)
SQUARED = GPT.model_copy(update={"mlp": "squared_relu"})


def test_activation_kernel_is_one_fused_elementwise_pass_each_way():
    """Forward: relu then square, 2 FLOP per element, reads x and writes y; backward: twice the FLOP (the
    convention of every elementwise backward), reads x and dy, writes dx."""
    elements, e = 3 * 4096, 2
    forward, backward = ops.activation_ops("mlp_act", SQUARED, elements, e)
    assert (forward.kind, backward.kind) == ("memory", "memory")
    assert (forward.flop, forward.hbm_bytes) == (2 * elements, 2 * elements * e)
    assert (backward.flop, backward.hbm_bytes) == (4 * elements, 3 * elements * e)


def test_layer_kernels_differ_from_gelu_only_in_the_activation_flop():
    shard = Shard(seq_len=1024, micro_batch=2, tp=2)
    gelu, squared = layer_ops(GPT, shard), layer_ops(SQUARED, shard)
    act_elements = shard.tokens * GPT.ffn / shard.tp
    for phase in ("forward", "backward_input", "backward_weight"):
        assert [op.name for op in gelu[phase]] == [op.name for op in squared[phase]]
        assert ops.hbm_bytes(gelu[phase]) == ops.hbm_bytes(squared[phase])
        assert ops.flop(gelu[phase], ops.MATMUL_KINDS) == ops.flop(squared[phase], ops.MATMUL_KINDS)
    gap = ops.flop(gelu["forward"]) - ops.flop(squared["forward"])
    assert gap == (ops.GELU_FLOP_PER_ELEMENT - 2) * act_elements


@pytest.mark.parametrize(("seq_len", "batch"), [(2048, 64), (4096, 8)])
def test_model_flop_of_a_gpt_shaped_squared_relu_model_is_narayanans_formula(seq_len, batch):
    """Two MLP matrices like GELU: 72*B*s*l*h^2*(1 + s/(6h) + V/(12*l*h)) (Narayanan et al. 2021, 5.1)."""
    s, B, L, h, V = seq_len, batch, SQUARED.layers, SQUARED.hidden, SQUARED.vocab
    expected = 72 * B * s * L * h**2 * (1 + s / (6 * h) + V / (12 * L * h))
    assert ops.model_flop_per_step(SQUARED, s, B) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", ["nemotron4-15b", "nemotron4-340b"])
def test_nemotron4_model_flop_is_the_non_gated_gqa_closed_form(name):
    """Per token, forward: QKV 2h(q + 2kv), output projection 2qh, up and down 2 x 2h*ffn, scores and context
    4sq (causal not halved), logits 2hV; training is three times that (Narayanan et al. 2021)."""
    spec = model.preset(name)
    s, B, L, h, V, f = 4096, 3, spec.layers, spec.hidden, spec.vocab, spec.ffn
    q, kv = spec.heads * (h // spec.heads), spec.kv_heads * (h // spec.heads)
    per_token = L * (2 * h * (q + 2 * kv) + 2 * q * h + 2 * 2 * h * f + 4 * s * q) + 2 * h * V
    assert ops.model_flop_per_step(spec, s, B) == pytest.approx(3 * B * s * per_token, rel=1e-12)


def test_stored_activations_are_korthikantis_gelu_terms_without_dropout():
    """Sequence parallel, flash attention, no dropout, bf16: per layer 2 norm inputs, the QKV and MLP inputs (h wide,
    split by t), Q, K, V and the attention output (split by t), the activation's input and the down projection's
    input (ffn wide each, split by t): two ffn tensors as for GELU, not SwiGLU's three."""
    spec = model.preset("nemotron4-15b")
    shard = Shard(seq_len=4096, micro_batch=1, tp=8)
    T, h, t, e, f = 4096, spec.hidden, 8, 2, spec.ffn
    kv_local = math.ceil(spec.kv_heads / t) * spec.d_head
    expected = T * (4 * e * h / t + e * (2 * h / t + 2 * kv_local) + 2 * e * f / t)
    assert memory.layer_activation_bytes(spec, shard) == pytest.approx(expected, rel=1e-12)
    gelu = spec.model_copy(update={"mlp": "gelu"})
    swiglu = spec.model_copy(update={"mlp": "swiglu"})
    assert memory.layer_activation_bytes(gelu, shard) == memory.layer_activation_bytes(spec, shard)
    assert memory.layer_activation_bytes(swiglu, shard) - expected == pytest.approx(T * e * f / t, rel=1e-12)


def test_bias_false_drops_the_linear_biases_from_the_spec_and_the_memory_model():
    unbiased = SQUARED.model_copy(update={"bias": False})
    h, f = GPT.hidden, GPT.ffn
    assert SQUARED.linear_biases and not unbiased.linear_biases
    assert SQUARED.layer_params - unbiased.layer_params == (3 * h + h) + (f + h)
    assert unbiased.attention_params == 4 * h * h and unbiased.mlp_params == 2 * h * f
    assert unbiased.norm_params == SQUARED.norm_params == 4 * h   # layernorm keeps gain and bias
    for tp in (1, 4):
        assert memory.layer_params_per_rank(unbiased, tp) * tp == pytest.approx(
            unbiased.layer_params + (tp - 1) * unbiased.norm_params, rel=1e-12)
    assert TransformerSpec(layers=1, hidden=64, heads=4, vocab=10, norm="rmsnorm").linear_biases is False


def test_nemotron4_15b_has_the_reports_parameter_counts():
    """Parmar et al. 2024, section 2: "3.2 billion embedding parameters and 12.5 billion non-embedding parameters"
    (untied, 2 x 256,000 x 6,144 = 3.15e9 rounds to 3.1: the report's 3.2 is loose by 1.7%)."""
    spec = model.preset("nemotron4-15b")
    assert spec.non_embedding_params == pytest.approx(12.5e9, rel=0.004)
    assert spec.embedding_params == pytest.approx(3.2e9, rel=0.02)


def test_nemotron4_340b_has_340_billion_parameters():
    assert model.preset("nemotron4-340b").params == pytest.approx(340e9, rel=0.005)
