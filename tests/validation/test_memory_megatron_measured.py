"""Per-GPU peak memory against Megatron-LM's own accounting and a peak it measured.

Megatron-LM prints, after the first logged iteration, its theoretical model-state footprint
(megatron/training/theoretical_memory_usage.py, compute_weight_and_optimizer_memory: 6 + 12/dp bytes a parameter of the
most loaded shard with the distributed optimizer, 18 without) and what PyTorch's caching allocator measured
(training.py report_memory: "memory (MB) | allocated | max allocated | reserved | max reserved", MiB).
``MemoryBreakdown.allocated_bytes`` is what compares with "max allocated": the tensors, without the CUDA context and
NCCL buffers the allocator never holds.

The run: LAION's open-sci-ref 0.01 1.7B reference model on Leonardo (A100 64 GB, 4 a node, 63 nodes), Megatron-LM
pretrain_gpt.py --num-layers 24 --hidden-size 2048 --ffn-hidden-size 8192 --num-attention-heads 32 --seq-length 4096
--micro-batch-size 4 --global-batch-size 1008 --bf16 --swiglu --normalization RMSNorm --position-embedding-type rope
--qk-layernorm --use-flash-attn --use-distributed-optimizer --overlap-param-gather --overlap-grad-reduce
--recompute-activations --tensor-model-parallel-size 1 --pipeline-model-parallel-size 1, GPT-NeoX tokenizer (50277
tokens, padded to 50304 by make-vocab-size-divisible-by 128), tied embeddings and Megatron's default dropout 0.1 (no
--untie-embeddings-and-output-weights, no dropout flags). Its log (2025-03-31, quoted with the command line in a
public GitHub log parser of that run, stored file id 40965174410): "Number of parameters in most loaded shard in
billions: 1.7138", "Theoretical memory footprints: weight and optimizer=9884.48 MB", "[Rank 0] (after 50 iterations)
memory (MB) | allocated: 9909.08 | max allocated: 50277.16 | reserved: 53386.0 | max reserved: 53386.0".
"""

import pytest

from simcluster.parallel import memory
from simcluster.spec import config

MIB = 2**20
THEORETICAL_STATES_MIB = 9884.48
MEASURED_MAX_ALLOCATED_MIB = 50277.16
MEASURED_MAX_RESERVED_MIB = 53386.0
# --qk-layernorm (model.qk_layernorm) keeps the query and key norms' inputs per layer (2 x h x 2 bytes a token with 32
# KV heads) and their fp32 rsigma per head row: 24 layers x 16384 tokens x (8 KiB + 256 B) = 3.1 GiB (by hand), the
# term that took the model from -6.5% to -0.2%. Tolerance: the allocator's transients the model does not track
# (cuBLAS/NCCL workspaces inside the PyTorch pool), 2%.
TOLERANCE = 0.02


def _opensci_1p7b():
    # the GPU only sets the capacity, which this comparison does not use (Leonardo's A100 has 64 GB)
    return config.from_dict({
        "name": "opensci-ref-1.7b-leonardo", "cluster": {"gpu": "a100-80gb-sxm", "gpus_per_node": 4, "nodes": 63},
        "model": {"layers": 24, "hidden": 2048, "heads": 32, "ffn_hidden": 8192, "vocab": 50304, "mlp": "swiglu",
                  "norm": "rmsnorm", "position": "rope", "tied_embeddings": True, "dropout": True,
                  "qk_layernorm": True},
        "training": {"seq_len": 4096, "global_batch_size": 1008, "micro_batch_size": 4, "precision": "bf16",
                     "activation_recompute": "selective"},
        "parallelism": {"tp": 1, "pp": 1, "dp": 252, "zero_stage": 1}})


def test_model_states_equal_megatrons_distributed_optimizer_accounting():
    """6 + 12/dp bytes a parameter: bf16 weights, fp32 main gradients, fp32 master weights and Adam moments sharded over
    the 252 data-parallel ranks. Tolerance 0.1% (Megatron's own count of the shard, 1.7138 B, is printed rounded)."""
    b = memory.per_gpu_memory(_opensci_1p7b())
    states = (b.weights_bytes + b.gradients_bytes + b.optimizer_bytes) / MIB
    assert states == pytest.approx(THEORETICAL_STATES_MIB, rel=1e-3)   # unsharded (18 bytes) would be 2.9x


def test_allocated_peak_is_within_tolerance_of_megatrons_measured_max_allocated():
    allocated = memory.per_gpu_memory(_opensci_1p7b()).allocated_bytes / MIB
    assert allocated == pytest.approx(MEASURED_MAX_ALLOCATED_MIB, rel=TOLERANCE)
    assert allocated <= MEASURED_MAX_ALLOCATED_MIB      # what the model leaves out only adds
