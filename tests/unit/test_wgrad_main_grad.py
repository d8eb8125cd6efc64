"""The weight-gradient GEMM's output bytes under gradient-accumulation fusion (workload/ops.py ``wgrad_output_bytes``):
Megatron-Core's TE linears and Megatron's own linear accumulate into main_grad in place (beta = 1), reading and
writing it at its width; without the fusion, or on a stack without main_grad (torchtitan, llm-foundry, DeepSpeed),
the GEMM writes a fresh 16-bit gradient once. Checked against closed forms written from the model's shapes, not from
the ops' own m/n/k."""

from __future__ import annotations

import dataclasses

import pytest

from simcluster.spec import config, model
from simcluster.workload import moe, ops
from simcluster.workload.ops import Shard

LLAMA3_8B = model.preset("llama3-8b")   # hidden 4096, ffn 14336 (SwiGLU), 32 heads of 128, 8 KV heads, vocab 128256
SEQ, MICRO, TP = 8192, 1, 2
BF16, FP8 = 2, 1


def _wgrads(shard: Shard) -> dict[str, ops.Op]:
    return {op.name: op for op in ops.layer_ops(LLAMA3_8B, shard)["backward_weight"] if op.kind == "gemm"}


def _dense_weights() -> dict[str, tuple[int, int]]:
    """(in, out) of each TP-2 rank's weight, from the model card: QKV 4096 -> (4096 + 2 x 1024) / 2, the attention
    output 4096 / 2 -> 4096, fc1 (gate and up) 4096 -> 2 x 14336 / 2, fc2 14336 / 2 -> 4096."""
    return {"qkv": (4096, (4096 + 2 * 8 * 128) // TP), "attn_out": (4096 // TP, 4096),
            "mlp_up": (4096, 2 * 14336 // TP), "mlp_down": (14336 // TP, 4096)}


@pytest.mark.parametrize(("precision", "operand"), [("bf16", BF16), ("fp8", FP8)])
@pytest.mark.parametrize("main_grad", [0, 4, 2])
def test_a_dense_layers_wgrad_reads_both_operands_and_accumulates_into_the_main_gradient(precision, operand,
                                                                                         main_grad):
    """dW = X^T dY over the rank's tokens: read X (tokens x in) and dY (tokens x out) at the operand width; fused
    (main_grad 4: fp32, 2: bf16 gradient reduction) read and write main_grad (in x out) at its width, unfused write a
    16-bit dW once (fp8 GEMMs too: Transformer Engine writes the weight gradient in 16 bits)."""
    shard = Shard(seq_len=SEQ, micro_batch=MICRO, tp=TP, precision=precision, main_grad_bytes=main_grad)
    wgrads = _wgrads(shard)
    tokens = SEQ * MICRO
    for name, (inner, outer) in _dense_weights().items():
        output = 2 * main_grad if main_grad else BF16
        want = tokens * (inner + outer) * operand + inner * outer * output
        assert wgrads[name].hbm_bytes == pytest.approx(want, rel=1e-12), name
        assert wgrads[name].flop == pytest.approx(2.0 * tokens * inner * outer, rel=1e-12), name


def test_the_fp32_main_gradient_adds_six_bytes_a_weight_to_a_bf16_wgrad():
    """4 + 4 bytes of main_grad read and written where 2 were written: + 6 bytes per weight element of the layer
    (TP-2 rank of Llama 3 8B: 4096 x 3072 + 2048 x 4096 + 4096 x 14336 + 7168 x 4096 weights)."""
    plain = _wgrads(Shard(seq_len=SEQ, micro_batch=MICRO, tp=TP))
    fused = _wgrads(Shard(seq_len=SEQ, micro_batch=MICRO, tp=TP, main_grad_bytes=4))
    weights = 4096 * 3072 + 2048 * 4096 + 4096 * 14336 + 7168 * 4096
    extra = sum(fused[name].hbm_bytes - plain[name].hbm_bytes for name in _dense_weights())
    assert extra == pytest.approx(6 * weights, rel=1e-12)


def test_the_output_layer_accumulates_too_the_router_does_not():
    """The output layer is Megatron's ColumnParallelLinear (wgrad_gemm_accum_fp32 into main_grad); it stays bf16 in
    fp8 runs. The MoE router is a plain torch GEMM whose .grad the DDP hook adds (moe.yaml main_grad_accumulate): a
    16-bit output, fused or not."""
    tokens, vocab_local = SEQ * MICRO, 128256 // TP
    for main_grad in (0, 4):
        shard = Shard(seq_len=SEQ, micro_batch=MICRO, tp=TP, precision="fp8", main_grad_bytes=main_grad)
        logits = ops.output_ops(LLAMA3_8B, shard)["backward_weight"][0]
        output = 2 * main_grad if main_grad else BF16
        assert logits.hbm_bytes == pytest.approx(tokens * (4096 + vocab_local) * BF16 + 4096 * vocab_local * output)
    qwen3 = model.preset("qwen3-235b-a22b")
    routers = [next(op for op in moe.moe_block(qwen3, Shard(seq_len=4096, micro_batch=1, main_grad_bytes=main_grad),
                                               ep=8, load=1.0).backward_weight if op.name == "router")
               for main_grad in (0, 4)]
    assert routers[0].hbm_bytes == routers[1].hbm_bytes
    assert routers[0].hbm_bytes == pytest.approx(4096 * (4096 + 128) * BF16 + 4096 * 128 * BF16)


@pytest.mark.parametrize(("scenario", "width"), [
    ("nemo2409-llama31-8b-8-h100-bf16", 4),        # Megatron-Core, fp32 gradient reduction
    ("nemo2407-llama2-70b-64-h100-fp8", 2),        # Megatron-Core, bf16 gradient reduction with fp8
    ("torchtitan-llama31-8b-8-h100-fp8-32k", 0),   # PyTorch FSDP2: no main_grad
    ("mpt-7b-8-h100", 0),                          # llm-foundry (FSDP)
    ("bigscience-bloom-176b-384-a100", 0),         # DeepSpeed's engine: its own accumulation
])
def test_only_megatron_stacks_with_the_fusion_accumulate_in_the_gemm(scenario, width):
    loaded = config.load(scenario)
    assert ops.shard_for(loaded).main_grad_bytes == width
    unfused = loaded.model_copy(update={"training": loaded.training.model_copy(
        update={"gradient_accumulation_fusion": False})})
    assert ops.shard_for(unfused).main_grad_bytes == 0


def test_without_the_fusion_the_separate_accumulation_is_charged_once_not_twice():
    """gradient_accumulation_fusion false: the wgrad GEMM writes its 16-bit gradient and grad_accumulation's kernel
    reads it and reads and writes main_grad; the GEMM itself must not also carry main_grad."""
    loaded = config.load("nemo2409-llama31-8b-8-h100-bf16")
    unfused = loaded.model_copy(update={"training": loaded.training.model_copy(
        update={"gradient_accumulation_fusion": False})})
    shard = ops.shard_for(unfused)
    layer = ops.layer_ops(LLAMA3_8B, shard)["backward_weight"]
    fused_shard = dataclasses.replace(shard, grad_accumulation_bytes=0.0, main_grad_bytes=4)
    fused = ops.layer_ops(LLAMA3_8B, fused_shard)["backward_weight"]
    gemm_bytes = {op.name: op.hbm_bytes for op in layer if op.kind == "gemm"}
    fused_gemm_bytes = {op.name: op.hbm_bytes for op in fused if op.kind == "gemm"}
    weights = sum(op.m * op.n * op.batch for op in layer if op.kind == "gemm")
    assert sum(fused_gemm_bytes.values()) - sum(gemm_bytes.values()) == pytest.approx((8 - 2) * weights)
    separate = sum(op.hbm_bytes for op in layer if op.name == "grad_accumulate")
    assert separate == pytest.approx((2 + 4 + 4) * weights)
