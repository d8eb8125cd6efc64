"""Per-GPU peak memory against peaks measured on real runs (torchtitan, docs/performance.md at commit 9dec370,
December 2024: Llama 3.1 on H100 96 GB, "Memory(GiB)" = PyTorch's peak reserved memory, max over GPUs).

What carries over from torchtitan to this Megatron-structured model is how memory scales with the layout; the level
does not (docs/compute-and-memory.md, "Validation"): torchtitan computes the loss with PyTorch's unfused
cross entropy on fp32 logits (log-softmax output and its gradient, 3 x 4 bytes per logit at the backward's peak,
against Megatron's one fp32 copy) and reports the caching allocator's reserved bytes.
"""

import pytest

from simcluster.parallel import memory
from simcluster.spec import config

GIB = 2**30

# Table 2: FSDP + CP + torch.compile + Float8, Llama 3.1 8B, 8 GPUs, local batch 1, full activation checkpointing;
# the sequence grows with CP so that every GPU holds 32,768 tokens. (fsdp, cp, sequence, measured GiB)
TABLE_2 = [(8, 1, 32768, 83.9), (4, 2, 65536, 84.2), (2, 4, 131072, 84.0), (1, 8, 262144, 84.5)]


def _table_2(fsdp: int, cp: int, seq: int):
    return config.from_dict({
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1},
        "model": "llama3-8b",
        "training": {"seq_len": seq, "global_batch_size": fsdp, "micro_batch_size": 1, "precision": "bf16",
                     "activation_recompute": "full"},
        # torchtitan shards parameters, gradients and optimizer states over dp_shard x cp (FSDP2 on the
        # flattened mesh), as the model's zero_stage 3 over dp x cp does
        "parallelism": {"tp": 1, "pp": 1, "dp": fsdp, "cp": cp, "zero_stage": 3},
    })


def test_context_parallelism_keeps_the_peak_flat_when_the_sequence_grows_with_it_as_measured():
    # measured: 83.9-84.5 GiB while CP and the sequence go 1 -> 8 and 32K -> 256K (spread 0.7 %); the model must
    # hold the same per-GPU peak (activations scale with s/cp, states shard over dp x cp). Without CP splitting the
    # stored activations the 256K row would need 8x the 32K row's.
    measured = [row[3] for row in TABLE_2]
    modelled = [memory.per_gpu_memory(_table_2(*row[:3])).total_bytes / GIB for row in TABLE_2]
    measured_spread = max(measured) / min(measured) - 1
    assert max(modelled) / min(modelled) - 1 <= measured_spread + 0.01   # tolerance: 1 point beyond the measured
    for layout, value in zip(TABLE_2, modelled, strict=True):
        assert value < layout[3]   # a lower bound: the unfused fp32 loss and allocator caching are not modelled


@pytest.mark.xfail(strict=True, reason="torchtitan's unfused fp32 cross entropy and reserved-memory caching are not "
                   "modelled: the model is 35 % below the measured peak (docs/compute-and-memory.md)")
def test_table_2_level_within_15_percent_of_measured():
    fsdp, cp, seq, measured = TABLE_2[0]
    assert memory.per_gpu_memory(_table_2(fsdp, cp, seq)).total_bytes / GIB == pytest.approx(measured, rel=0.15)
