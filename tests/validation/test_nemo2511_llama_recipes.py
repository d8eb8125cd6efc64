"""What the NeMo 25.11 Llama 3 runs ran, from Megatron-Bridge's performance scripts (scenario headers cite the
files and commits), held against the scenarios and against Transformer Engine's loss kernel.

- The loss: every stored version of the performance scripts sets ``model.cross_entropy_fusion_impl = "te"``
  (scripts/performance/utils/overrides.py ``_set_common_perf_overrides``; the older utils/helpers.py
  ``set_common_perf_overrides``) on ``cross_entropy_loss_fusion = True``: Megatron-Core calls Transformer Engine's
  ``parallel_cross_entropy`` (transformer_engine/pytorch/triton/cross_entropy.py). Its forward is
  ``online_softmax_kernel`` (one read of each 16-bit logit: a row's max and sum) and a per-row loss kernel that reads
  three fp32 values a row; its backward is ``cross_entropy_backward_kernel`` (one read of each logit, the gradient
  written in place). So 1 + 2 logit reads/writes: 3 x 2 bytes per logit in bf16, against the unfused vocab-parallel
  loss's 30 bytes.
- The 70B presets (LLAMA3_70B_PRETRAIN_CONFIG_{GB200,GB300}_FP8_CS): micro batch 2, Megatron FSDP
  (optim_grads_params: ZeRO-3), cpu_offloading_num_layers 40 / 20, gradient_accumulation_fusion False, TP 1.
"""

import pytest

from simcluster.spec import config
from simcluster.workload.ops import Shard, output_ops

LLAMA_ROWS = ["nemo2511-llama3-8b-8-b200-fp8", "nemo2511-llama3-8b-8-gb200-fp8", "nemo2511-llama3-8b-8-gb300-fp8",
              "nemo2511-llama3-70b-64-gb200-fp8", "nemo2511-llama3-70b-64-gb300-fp8",
              "nemo2511-llama3-405b-128-b200-fp8"]
OFFLOADED_LAYERS = {"gb200": 40, "gb300": 20}
TE_CE_LOGIT_PASSES = 3          # forward read; backward read + in-place write
BF16 = 2


@pytest.mark.parametrize("name", LLAMA_ROWS)
def test_the_loss_is_transformer_engines_fused_cross_entropy(name):
    assert config.load(name).training.cross_entropy == "fused"


@pytest.mark.parametrize("gpu", sorted(OFFLOADED_LAYERS))
def test_70b_runs_what_the_preset_sets(gpu):
    s = config.load(f"nemo2511-llama3-70b-64-{gpu}-fp8")
    t, p = s.training, s.parallelism
    assert (t.micro_batch_size, t.activation_offload_layers, t.gradient_accumulation_fusion) == (
        2, OFFLOADED_LAYERS[gpu], False)
    assert (p.tp, p.pp, p.cp, p.zero_stage) == (1, 1, 1, 3)


def test_fused_loss_moves_the_logits_as_transformer_engines_kernel():
    s = config.load("nemo2511-llama3-8b-8-b200-fp8")
    model, t = s.model, s.training
    shard = Shard(seq_len=t.seq_len, micro_batch=t.micro_batch_size, cross_entropy=t.cross_entropy,
                  precision=t.precision)
    ops = output_ops(model, shard)
    loss_bytes = sum(op.hbm_bytes for phase in ("forward", "backward_input") for op in ops[phase]
                     if op.name.startswith("ce_"))
    logits = shard.tokens * model.vocab
    assert loss_bytes == pytest.approx(TE_CE_LOGIT_PASSES * BF16 * logits)
