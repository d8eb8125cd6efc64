"""FLOP and bytes per op against hand-derived closed forms (Narayanan et al. 2021; Korthikanti 2022)."""

import pytest

from simcluster.spec import model
from simcluster.spec.model import TransformerSpec
from simcluster.workload import ops as workload
from simcluster.workload.ops import MATMUL_KINDS, Shard, embedding_ops, layer_ops, output_ops

TRAIN_PHASES = ("forward", "backward_input", "backward_weight")


def megatron_flop(B, s, L, h, V, full_recompute=False):
    """Narayanan et al. 2021, section 5.1: training FLOP per iteration of a GPT model."""
    if full_recompute:
        return 96 * B * s * L * h**2 * (1 + s / (6 * h) + V / (16 * L * h))
    return 72 * B * s * L * h**2 * (1 + s / (6 * h) + V / (12 * L * h))


def whole_model_matmul_flop(spec, shard, phases):
    """Sum over the layers, the embedding and the output layer of the matmul FLOP in ``phases``."""
    per_layer = layer_ops(spec, shard)
    total = spec.layers * sum(workload.flop(per_layer[p], MATMUL_KINDS) for p in phases)
    for ends in (embedding_ops(spec, shard), output_ops(spec, shard)):
        total += sum(workload.flop(ends[p], MATMUL_KINDS) for p in phases)
    return total


@pytest.mark.parametrize("name, seq_len, batch", [("gpt3-175b", 2048, 1536), ("gpt3-1.3b", 2048, 512),
                                                   ("megatron-8.3b", 1024, 16)])
def test_gpt_training_flop_matches_megatron_formula_without_recompute(name, seq_len, batch):
    spec = model.preset(name)
    expected = megatron_flop(batch, seq_len, spec.layers, spec.hidden, spec.vocab)
    assert workload.model_flop_per_step(spec, seq_len, batch) == pytest.approx(expected, rel=1e-12)
    # the per-layer ops summed by hand agree with the helper
    shard = Shard(seq_len=seq_len, micro_batch=batch)
    assert whole_model_matmul_flop(spec, shard, TRAIN_PHASES) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name", ["gpt3-175b", "gpt3-2.7b"])
def test_gpt_training_flop_with_full_recompute_matches_96_formula(name):
    spec = model.preset(name)
    expected = megatron_flop(64, 2048, spec.layers, spec.hidden, spec.vocab, full_recompute=True)
    assert workload.hardware_flop_per_step(spec, 2048, 64, "full") == pytest.approx(expected, rel=1e-12)


def test_model_flop_counts_no_recompute_and_hardware_flop_counts_it():
    spec = model.preset("gpt3-6.7b")
    s, B, L, h = 2048, 32, spec.layers, spec.hidden
    model_flop = workload.model_flop_per_step(spec, s, B)
    assert workload.hardware_flop_per_step(spec, s, B, "none") == model_flop
    # selective recompute re-runs the attention core's forward: 4*B*s^2*h per layer (Korthikanti et al. 2022)
    selective = workload.hardware_flop_per_step(spec, s, B, "selective")
    assert selective - model_flop == pytest.approx(L * 4 * B * s**2 * h, rel=1e-12)


@pytest.mark.parametrize("name", ["llama3-8b", "llama2-70b", "llama3-405b", "llama2-7b"])
def test_llama_flop_per_token_is_six_n_plus_attention_term(name):
    spec = model.preset(name)
    s, B = 4096, 8
    L, h, V, f = spec.layers, spec.hidden, spec.vocab, spec.ffn
    kv = (spec.kv_heads or spec.heads) * (h // spec.heads)
    # matmul parameters by hand: Q and O (h x h), K and V (h x kv), gate/up/down (h x f), output (V x h)
    n_matmul = L * (2 * h * h + 2 * h * kv + 3 * h * f) + V * h
    expected_per_token = 6 * n_matmul + 12 * L * s * h
    per_token = workload.model_flop_per_step(spec, s, B) / (B * s)
    assert per_token == pytest.approx(expected_per_token, rel=1e-12)


def test_gqa_projects_q_at_full_width_and_k_v_at_kv_width():
    spec = model.preset("llama3-70b")   # 64 heads, 8 kv heads, head_dim 128
    tokens = 1024
    forward = layer_ops(spec, Shard(seq_len=tokens, micro_batch=1))["forward"]
    qkv = next(op for op in forward if op.name == "qkv")
    h, kv = 8192, 8 * 128
    assert qkv.flop == 2 * tokens * (h * h + 2 * h * kv)


def test_swiglu_has_three_mlp_matrices_and_gelu_two():
    gelu = TransformerSpec(layers=1, hidden=1024, heads=8, ffn_hidden=4096, vocab=1000)
    swiglu = gelu.model_copy(update={"mlp": "swiglu"})
    shard = Shard(seq_len=512, micro_batch=2)
    tokens = 1024

    def mlp_flop(spec):
        ops = layer_ops(spec, shard)["forward"]
        return sum(op.flop for op in ops if op.name in ("mlp_up", "mlp_down"))

    assert mlp_flop(gelu) == 2 * 2 * tokens * 1024 * 4096
    assert mlp_flop(swiglu) == 3 * 2 * tokens * 1024 * 4096


def test_backward_gemms_cost_as_much_as_forward_and_attention_backward_twice():
    spec = model.preset("gpt3-13b")
    ops = layer_ops(spec, Shard(seq_len=2048, micro_batch=2, tp=4))
    forward_gemm = workload.flop(ops["forward"], ("gemm",))
    assert workload.flop(ops["backward_input"], ("gemm",)) == pytest.approx(forward_gemm)
    assert workload.flop(ops["backward_weight"], ("gemm",)) == pytest.approx(forward_gemm)
    forward_attention = workload.flop(ops["forward"], ("attention",))
    assert workload.flop(ops["backward_input"], ("attention",)) == pytest.approx(2 * forward_attention)
    assert workload.flop(ops["backward_weight"], ("attention",)) == 0


def test_attention_forward_is_four_b_s_squared_h_not_halved_for_causal():
    spec = model.preset("gpt3-1.3b")
    s, b, h = 2048, 4, 2048
    ops = layer_ops(spec, Shard(seq_len=s, micro_batch=b))["forward"]
    assert workload.flop(ops, ("attention",)) == 4 * b * s**2 * h


@pytest.mark.parametrize("name", ["gpt3-13b", "llama2-70b"])
def test_tensor_parallel_splits_matmul_flop_evenly_over_ranks(name):
    spec = model.preset(name)
    single = layer_ops(spec, Shard(seq_len=2048, micro_batch=1, tp=1))
    split = layer_ops(spec, Shard(seq_len=2048, micro_batch=1, tp=8))
    for phase in TRAIN_PHASES:
        whole = workload.flop(single[phase], MATMUL_KINDS)
        assert 8 * workload.flop(split[phase], MATMUL_KINDS) == pytest.approx(whole, rel=1e-12)


def test_context_parallel_divides_attention_and_gemm_flop_by_cp():
    spec = model.preset("llama3-8b")
    single = layer_ops(spec, Shard(seq_len=16384, micro_batch=1, cp=1))["forward"]
    split = layer_ops(spec, Shard(seq_len=16384, micro_batch=1, cp=4))["forward"]
    for kind in ("attention", "gemm"):
        assert 4 * workload.flop(split, (kind,)) == pytest.approx(workload.flop(single, (kind,)), rel=1e-12)


def test_sequence_parallel_splits_norm_traffic_by_tp_and_without_it_norms_are_replicated():
    spec = model.preset("gpt3-13b")

    def norm_bytes(sp):
        ops = layer_ops(spec, Shard(seq_len=2048, micro_batch=1, tp=8, sequence_parallel=sp))["forward"]
        return sum(op.hbm_bytes for op in ops if op.name == "attn_norm")

    tokens, h = 2048, 5120
    assert norm_bytes(False) == 2 * tokens * h * 2          # read x, write y, 2 bytes each
    assert norm_bytes(True) == pytest.approx(norm_bytes(False) / 8)


def test_gemm_reads_both_inputs_and_writes_output():
    spec = model.preset("gpt3-1.3b")
    tokens, h = 2 * 1024, 2048
    qkv = layer_ops(spec, Shard(seq_len=1024, micro_batch=2, precision="bf16"))["forward"][1]
    assert qkv.name == "qkv" and (qkv.m, qkv.n, qkv.k) == (tokens, 3 * h, h)
    assert qkv.hbm_bytes == 2 * (tokens * h + h * 3 * h + tokens * 3 * h)
    fp32 = layer_ops(spec, Shard(seq_len=1024, micro_batch=2, precision="fp32"))["forward"][1]
    assert fp32.hbm_bytes == 2 * qkv.hbm_bytes


def test_flash_attention_traffic_is_linear_in_sequence_and_naive_is_quadratic():
    spec = model.preset("gpt3-1.3b")

    def attention_bytes(kind, s):
        ops = layer_ops(spec, Shard(seq_len=s, micro_batch=1, attention=kind))
        names = ("attention", "attention_scores", "softmax", "attention_dropout", "attention_context")
        return sum(op.hbm_bytes for op in ops["forward"] if op.name in names)

    assert attention_bytes("flash", 4096) == pytest.approx(2 * attention_bytes("flash", 2048))
    # naive: the s^2 score matrix dominates; it is written by the scores GEMM, read+written by softmax, ...
    assert attention_bytes("naive", 4096) > 3.5 * attention_bytes("naive", 2048)
    heads, s = 16, 2048
    assert attention_bytes("naive", s) > 5 * heads * s * s     # at least softmax in/out and dropout (bytes)


def test_recompute_phase_holds_attention_core_for_selective_and_whole_forward_for_full():
    spec = model.preset("gpt3-1.3b")
    shard = dict(seq_len=2048, micro_batch=1)
    none = layer_ops(spec, Shard(**shard, recompute="none"))
    selective = layer_ops(spec, Shard(**shard, recompute="selective"))
    full = layer_ops(spec, Shard(**shard, recompute="full"))
    assert none["recompute"] == []
    assert [op.kind for op in selective["recompute"]] == ["attention"]
    assert full["recompute"] == full["forward"]


def test_embedding_has_no_matmul_and_output_layer_projects_to_vocab():
    spec = model.preset("gpt3-1.3b")
    shard = Shard(seq_len=2048, micro_batch=1, tp=2)
    assert workload.flop(sum(embedding_ops(spec, shard).values(), []), MATMUL_KINDS) == 0
    logits = [op for op in output_ops(spec, shard)["forward"] if op.name == "logits"][0]
    assert logits.flop == 2 * 2048 * 2048 * 25129    # ceil(50257 / 2) vocab rows per rank


def test_fp8_training_casts_every_gemm_input_and_output_gradient_once():
    # GPT-style layer, tp 2 with sequence parallelism: by hand, forward casts the two h-wide sequence-parallel
    # inputs (T/2 x h each) and the two TP-split ones (T x h/2, T x 4h/2); backward the output gradients.
    spec = TransformerSpec(layers=1, hidden=256, heads=4, vocab=1000)
    shard = Shard(seq_len=512, micro_batch=2, tp=2, sequence_parallel=True, precision="fp8")
    tokens, h = 1024, 256
    forward_elements = 2 * (tokens / 2) * h + tokens * (h / 2 + 4 * h / 2)
    backward_elements = 2 * (tokens / 2) * h + tokens * (3 * h / 2 + 4 * h / 2)
    ops = layer_ops(spec, shard)
    (forward_cast,) = [op for op in ops["forward"] if op.name == "fp8_cast"]
    (backward_cast,) = [op for op in ops["backward_input"] if op.name == "fp8_cast"]
    assert (forward_cast.flop, backward_cast.flop) == pytest.approx((forward_elements, backward_elements))
    # Transformer Engine 1.x delayed scaling in Megatron-Core's layer (fp8_recipes): the norms write fp8 (no cast);
    # with sequence parallelism the projection's and fc2's inputs are cast (2 + 1) in the forward and transposed
    # (1 + 1) in the backward for the weight gradient (TE 1.x _Linear); backward the QKV and fc1 output gradients are
    # cast-transposed (2 + 1 + 1), the two row-parallel ones get a bias sum (2) and a cast (2 + 1) on the shard and a
    # transpose (1 + 1) after the gather, and the two gathered norm outputs are transposed (1 + 1) for the weight
    # gradients
    assert forward_cast.hbm_bytes == pytest.approx(3 * tokens * (h / 2 + 4 * h / 2))
    assert backward_cast.hbm_bytes == pytest.approx(4 * tokens * (3 * h / 2 + 4 * h / 2)
                                                    + 2 * (5 * (tokens / 2) * h + 2 * tokens * h) + 2 * 2 * tokens * h
                                                    + 2 * tokens * (h / 2 + 4 * h / 2))
    bf16 = layer_ops(spec, Shard(seq_len=512, micro_batch=2, tp=2, sequence_parallel=True, precision="bf16"))
    assert not [op for phase in bf16.values() for op in phase if op.name == "fp8_cast"]


def test_fp8_training_keeps_the_output_layer_in_bf16():
    spec = TransformerSpec(layers=1, hidden=256, heads=4, vocab=1000)
    fp8 = output_ops(spec, Shard(seq_len=512, micro_batch=1, precision="fp8"))
    bf16 = output_ops(spec, Shard(seq_len=512, micro_batch=1, precision="bf16"))
    (fp8_logits,) = [op for op in fp8["forward"] if op.name == "logits"]
    (bf16_logits,) = [op for op in bf16["forward"] if op.name == "logits"]
    assert fp8_logits.precision == "bf16" and fp8_logits.hbm_bytes == bf16_logits.hbm_bytes


def test_a_model_without_dropout_applies_and_stores_no_masks():
    # Llama trains without dropout: the residual add reads x and the residual and writes y (3 x 2 bytes per
    # element) instead of also writing a 1-byte mask; naive attention has no dropout kernel
    kwargs = dict(layers=1, hidden=256, heads=4, vocab=1000)
    with_dropout = TransformerSpec(**kwargs)
    without = TransformerSpec(**kwargs, dropout=False)
    shard = Shard(seq_len=512, micro_batch=1, attention="naive")
    elements = 512 * 256

    def op(spec, name):
        return next(o for o in layer_ops(spec, shard)["forward"] if o.name == name)

    assert op(with_dropout, "attn_residual").hbm_bytes == elements * (3 * 2 + 1)
    assert op(without, "attn_residual").hbm_bytes == elements * 3 * 2
    assert not [o for o in layer_ops(without, shard)["forward"] if o.name == "attention_dropout"]
