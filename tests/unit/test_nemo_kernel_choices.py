"""The attention and loss kernels of the NeMo H100 scenarios, as their recipes set them.

docs/calibration/rounds-10-14.md, "Issue 15: the NeMo H100 recipes' kernels".

Sources: NVIDIA/dgxc-benchmarking v24.11.1 (commit 35a9aecc) nemo_megatron/launch.sh exports NVTE_FUSED_ATTN=0 for the
GPT-3 175B runs (Transformer Engine 1.6 then runs the flash-attn package's FlashAttention-2) and its
gpt3_175b_hydra.yaml sets no cross_entropy_loss_fusion; the llama3.1 recipe for the 24.09 container exports
NVTE_FLASH_ATTN=0 and NVTE_FUSED_ATTN=1 (cuDNN) and NeMo-Framework-Launcher's llama3_1_8b.yaml sets
cross_entropy_loss_fusion: true. Megatron-Core's fused loss (megatron/core/fusions/fused_cross_entropy.py, 2024):
closed form in bf16, forward 6 (cast and max) + 8 (exp and sum) + 8 (copy back) + 8 (normalise) = 30 bytes a logit,
backward 10 (scatter, scale, cast; fresh fp32 buffer) + 8 (copy back) = 18.
"""

import pytest

from simcluster.spec import config
from simcluster.spec.model import TransformerSpec
from simcluster.workload.ops import Shard, output_ops

MODEL = TransformerSpec(layers=2, hidden=1024, heads=8, vocab=50368, dropout=False)
GPT3_CALIBRATION = [f"nemo2409-gpt3-175b-{n}-h100-bf16" for n in (128, 256, 512, 1024, 2048)]
LLAMA31_CALIBRATION = [f"nemo2409-llama31-8b-{n}-h100-bf16" for n in (8, 16, 32, 64, 128)]


def _loss_bytes_per_logit(kernel: str) -> tuple[float, float, int]:
    shard = Shard(seq_len=2048, micro_batch=2, cross_entropy=kernel, precision="bf16")
    ops = output_ops(MODEL, shard)
    logits = shard.tokens * MODEL.vocab
    forward = [op for op in ops["forward"] if op.name.startswith("ce_")]
    backward = [op for op in ops["backward_input"] if op.name.startswith("ce_")]
    return (sum(op.hbm_bytes for op in forward) / logits, sum(op.hbm_bytes for op in backward) / logits,
            len(forward) + len(backward))


def test_megatron_fused_loss_moves_the_bytes_of_its_compiled_graphs():
    assert _loss_bytes_per_logit("megatron_fused") == (30, 18, 6)


def test_megatron_fused_loss_lies_between_the_unfused_passes_and_one_kernel():
    unfused, megatron, one_kernel = (sum(_loss_bytes_per_logit(k)[:2]) for k in ("unfused", "megatron_fused", "fused"))
    assert one_kernel < megatron < unfused


@pytest.mark.parametrize("name", GPT3_CALIBRATION)
def test_gpt3_calibration_runs_flash_attention_2_and_the_unfused_loss(name):
    training = config.load(name).training
    assert (training.attention, training.cross_entropy) == ("flash2", "unfused")


@pytest.mark.parametrize("name", LLAMA31_CALIBRATION)
def test_llama31_calibration_runs_cudnn_attention_and_megatron_core_fused_loss(name):
    training = config.load(name).training
    assert (training.attention, training.cross_entropy) == ("flash", "megatron_fused")


def test_llama3_8b_fp8_of_24_07_keeps_the_unfused_loss():
    assert config.load("nemo2407-llama3-8b-8-h100-fp8").training.cross_entropy == "unfused"
