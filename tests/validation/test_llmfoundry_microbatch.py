"""Where llm-foundry's FSDP step is simulated fast: per microbatch, not per token (round 18).

Sources (mosaicml/llm-foundry, scripts/train/benchmarking/; none of these rows is a held-out row of
simcluster/data/validation.yaml, whose llm-foundry rows are the sequence-2,048 runs):

- README.md (commit 061f2c7c), table "H100 80GB BF16": MPT-13B on 8 H100 with activation checkpointing at large
  microbatches, amp_bf16, mixed precision DEFAULT, FULL_SHARD: sequence 1,024, micro batch 40, 3 accumulations,
  5,502 tokens/s per GPU; sequence 4,096, micro batch 10, 3 accumulations, 4,717.
- larger_mb_1.md (commit beb8dee6, the results table of the same benchmarking effort, llm-foundry#543): MPT-7B on
  8 A100 80GB at sequence 2,048, no activation checkpointing, 2 accumulations, DEFAULT, FULL_SHARD, the micro batch
  swept: 1 -> 3,366, 2 -> 4,044, 4 -> 4,513, 6 -> 4,715 tokens/s per GPU.

The same simulator that puts the held-out MPT-13B H100 rows at micro batch 2 10-18% fast puts the 13B on the same
GPUs at 10-40 sequences a microbatch within 3%, and reproduces the A100 7B at micro batch 4-6 within 2%: the compute
per token is right. What it misses grows as the microbatch shrinks at a fixed model (7B on A100: +9.7% at micro
batch 1, -0.5% at 6), i.e. a cost per microbatch that scales with what FSDP moves per microbatch
(docs/calibration/round-18.md, "Round 18: llm-foundry's per-microbatch FSDP cost"). The measured gain from micro batch 1
to 6 (1.40x) is a strict expected failure (simulated 1.27x), so a model change that supplies the missing cost flips it.
"""

import pytest

from simcluster.engine import simulate
from simcluster.spec import config

# (model, seq, micro batch, accumulations, activation recompute, gpu, measured tokens/s per GPU)
LARGE_MICROBATCH_ROWS = [
    ("mpt-13b", 1024, 40, 3, "full", "h100-sxm", 5502),
    ("mpt-13b", 4096, 10, 3, "full", "h100-sxm", 4717),
    ("mpt-7b", 2048, 4, 2, "none", "a100-80gb-sxm", 4513),
    ("mpt-7b", 2048, 6, 2, "none", "a100-80gb-sxm", 4715),
]
A100_SWEEP = {1: 3366, 2: 4044, 4: 4513, 6: 4715}  # MPT-7B, 8 A100 80GB, 2 accumulations: micro batch -> tokens/s/GPU
SHAPES = {"mpt-7b": (32, 4096, 32), "mpt-13b": (40, 5120, 40)}  # layers, d_model, heads (yamls/pretrain/mpt-*.yaml)
NIC = {"h100-sxm": "connectx-7", "a100-80gb-sxm": "connectx-6"}
TOLERANCE = 0.05


def _tokens_per_gpu_s(model: str, seq: int, micro: int, accum: int, recompute: str, gpu: str) -> float:
    layers, hidden, heads = SHAPES[model]
    scenario = config.from_dict({
        "name": f"{model}-8-{gpu}-s{seq}-mb{micro}",
        "cluster": {"gpu": gpu, "gpus_per_node": 8, "nodes": 1, "nic": NIC[gpu], "topology": "nvswitch-node"},
        "model": {"name": model, "layers": layers, "hidden": hidden, "heads": heads, "ffn_hidden": 4 * hidden,
                  "vocab": 50368, "dropout": False, "max_seq_len": seq},
        "training": {"seq_len": seq, "global_batch_size": 8 * micro * accum, "micro_batch_size": micro,
                     "precision": "bf16", "attention": "flash_triton", "cross_entropy": "fused",
                     "optimizer": "decoupled_adamw", "layer_backward": "eager", "activation_recompute": recompute},
        "parallelism": {"tp": 1, "pp": 1, "dp": 8, "zero_stage": 3, "sequence_parallel": False,
                        "grad_reduce_dtype": "bf16"},
    })
    return simulate(scenario).summary["tokens_per_s"] / 8


@pytest.mark.parametrize("row", LARGE_MICROBATCH_ROWS, ids=lambda r: f"{r[0]}-{r[5]}-s{r[1]}-mb{r[2]}")
def test_large_microbatch_rows_match(row):
    *layout, measured = row
    assert _tokens_per_gpu_s(*layout) == pytest.approx(measured, rel=TOLERANCE)


@pytest.mark.xfail(strict=True, reason="FSDP's per-microbatch cost is under-modelled (simulated 1.27x, measured "
                                       "1.40x); docs/calibration/round-18.md, round 18")
def test_gain_from_micro_batch_1_to_6_matches_the_a100_sweep():
    simulated = {mb: _tokens_per_gpu_s("mpt-7b", 2048, mb, 2, "none", "a100-80gb-sxm") for mb in (1, 6)}
    assert simulated[6] / simulated[1] == pytest.approx(A100_SWEEP[6] / A100_SWEEP[1], rel=TOLERANCE)

