"""FlagPerf's Llama 3 Megatron-Core 0.6 rows (held out, source flagperf_mcore06_h100) run what FlagPerf's own files
state (docs/calibration/round-27.md, "Round 27: what FlagPerf's Llama 3 runs ran"). The truth here is transcribed from
those files, not from the scenarios:

- the launchers, training/benchmarks/llama3_{8B,70B}/megatron/pretrain_llama3.sh (FlagOpen/FlagPerf at 8f45ae0a for
  the 8B's model arguments, b67b4389 and adb02a53 for the 70B's): MODEL_ARGS, TRAINING_ARGS and VENDOR_ARGS;
- the configs, training/nvidia/llama3_{8B,70B}-megatron/config/config_H100x*.py: localbs 1, tensor/pipeline parallel;
- Megatron-LM's defaults for what the launchers leave unset, from the arguments.py FlagPerf stores for these cases
  (training/benchmarks/llama3_8B/megatron/arguments.py at 8f45ae0a): --bf16 turns on
  accumulate_allreduce_grads_in_fp32, --recompute-activations means recompute_granularity 'selective', and the file
  has no --defer-embedding-wgrad-compute (Megatron-LM's later option defaults to off), no --overlap-grad-reduce,
  --overlap-param-gather or --tp-comm-overlap unless passed, tied embeddings (no --untie-embeddings-and-output-weights),
  learned absolute positions, biases on the linear layers and dropout 0.1;
- the recompute: the 70B README's "H100环境配置" section lists "recompute-activations" among its strategies; the 8B
  README lists it only in its A100 section and no stored H100 script passes it (not stated for the 8B H100 rows);
- the attention: --use-flash-attn does not reach Transformer Engine's DotProductAttention under --use-mcore-models,
  and TE 1.3 (pytorch:24.02) prefers cuDNN's fused attention on sm90 for GQA (NVIDIA/TransformerEngine#497, 1.2.0).

Each resolved scenario field is compared, so a default that drifts from what the launcher ran fails here (the 70B
row's defer_embedding_wgrad resolved on until round 27 stated it false).
"""

import math

import pytest

from simcluster.spec import config

# MODEL_ARGS of the two launchers
LAUNCHER_MODEL = {
    "8b": {"layers": 32, "hidden": 4096, "ffn_hidden": 14336, "heads": 32, "kv_heads": 8},
    "70b": {"layers": 80, "hidden": 8192, "ffn_hidden": 28672, "heads": 64, "kv_heads": 8},
}
SEQ_LENGTH = 8192  # --seq-length 8192 --max-position-embeddings 8192
# FlagPerf's Llama3Tokenizer (training/benchmarks/llama3_8B/megatron/tokenizer.py at 8f45ae0a, and the later
# tokenizer.patch): vocab_size = the HF tokenizer's vocab_size + extra_vocab_size 256; Llama 3's HF tokenizer counts
# 128,000 without its 256 added special tokens (docs/calibration/round-28.md "Round 28: FlagPerf's Llama 3 8B rows")
HF_TOKENIZER_VOCAB, EXTRA_VOCAB = 128_000, 256
TOKENIZER_VOCAB = HF_TOKENIZER_VOCAB + EXTRA_VOCAB
MAKE_VOCAB_DIVISIBLE_BY = 128  # Megatron-LM's --make-vocab-size-divisible-by default, times tp
# scenario -> (size, tp, pp, global batch, the README's recompute for the row's environment)
ROWS = {
    "flagperf-llama3-8b-8-h100-bf16": ("8b", 2, 1, 512, "none"),
    "flagperf-llama3-8b-8-h100-fp8": ("8b", 2, 1, 512, "none"),
    "flagperf-llama3-8b-16-h100-bf16": ("8b", 2, 1, 512, "none"),
    "flagperf-llama3-8b-16-h100-fp8": ("8b", 2, 1, 512, "none"),
    "flagperf-llama3-8b-440-h100-bf16": ("8b", 2, 1, 1760, "none"),  # the row's fix_hp gbs=1760
    "flagperf-llama3-70b-64-h100-bf16": ("70b", 8, 4, 512, "selective"),
}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_model_is_the_launchers_shape_with_megatron_lm_06_defaults(name):
    size, tp, _, _, _ = ROWS[name]
    m = config.load(name).model
    assert {k: getattr(m, k) for k in LAUNCHER_MODEL[size]} == LAUNCHER_MODEL[size]
    assert (m.mlp, m.norm, m.max_seq_len) == ("swiglu", "rmsnorm", SEQ_LENGTH)  # --swiglu --normalization RMSNorm
    assert (m.tied_embeddings, m.position, m.bias, m.dropout) == (True, "learned", True, True)
    multiple = MAKE_VOCAB_DIVISIBLE_BY * tp
    assert m.vocab == math.ceil(TOKENIZER_VOCAB / multiple) * multiple


@pytest.mark.parametrize("name", sorted(ROWS))
def test_training_and_parallelism_are_the_launchers_flags(name):
    _, tp, pp, gbs, recompute = ROWS[name]
    s = config.load(name)
    t, p = s.training, s.parallelism
    assert (t.seq_len, t.micro_batch_size, t.global_batch_size) == (SEQ_LENGTH, 1, gbs)  # localbs = 1
    assert (p.tp, p.pp, p.sequence_parallel) == (tp, pp, True)  # config_H100x*.py, --sequence-parallel
    assert t.mcore_version == "0.6" and p.te_version == 1  # core_v0.6.0 in pytorch:24.02 (TE 1.3)
    assert p.zero_stage == 1  # --use-distributed-optimizer
    assert p.grad_reduce_dtype == "fp32"  # --bf16: accumulate_allreduce_grads_in_fp32
    assert (p.overlap_grad_reduce, p.overlap_param_gather, p.tp_comm_overlap) == (False, False, False)
    assert p.defer_embedding_wgrad is False  # no --defer-embedding-wgrad-compute in FlagPerf's arguments.py
    assert t.gradient_accumulation_fusion is True  # Megatron-LM's default
    assert t.cross_entropy == "unfused"  # no loss fusion option in Megatron-Core 0.6
    assert t.activation_recompute == recompute
    assert t.attention == "flash"  # TE 1.3's cuDNN fused attention on sm90 (TransformerEngine#497)


@pytest.mark.parametrize("name", [n for n in sorted(ROWS) if n.endswith("fp8")])
def test_fp8_rows_are_the_h100_fp8_adapters_delayed_scaling(name):
    t = config.load(name).training
    # training_adapter_H100_fp8.sh: --fp8-format hybrid --fp8-amax-compute-algo max --fp8-amax-history-len 1024
    assert (t.precision, t.fp8_recipe, t.fp8_param_gather) == ("fp8", "delayed", False)
