"""NeMo's fp32 word-embedding gradients under Apex's distributed Adam (``with_fp32_embedding_grads``).

**What NeMo runs.** NeMo 1.x's GPT model (``MegatronGPTModel.configure_optimizers``,
nemo/collections/nlp/models/language_modeling/megatron_gpt_model.py, read in the released nemo_toolkit wheels
2.0.0rc0, 2.0.0rc1, 2.0.0, 2.2.0 and 2.4.0), when its optimizer is Apex's distributed Adam (``optim.name:
distributed_fused_adam``, not ``mcore_distributed_optim``: ``grad_buckets: apex`` here), marks
``_with_fp32_optimizer`` on

- the first pipeline stage's word embedding (``shared_embedding_or_output_weight()`` of its first model chunk, the
  Megatron-Core GPT's ``embedding.word_embeddings.weight``) and its learned position table, if any;
- with ``share_embeddings_and_output_weights`` (``model.tied_embeddings``), the last stage's word-embedding copy
  that its output layer uses; an untied output layer is not marked.

2.0.0rc0 sets it unconditionally (NVIDIA/NeMo#8792, "Distributed optimizer reduces GPT embedding grads in FP32":
"When training Megatron-core GPT with the distributed optimizer, the embedding gradients were reduced in the grad
sync dtype (usually BF16). However, we want to reduce in FP32 to improve convergence."); 2.0.0rc1 on reads
``with_fp32_embedding_grads``, default True (NVIDIA/NeMo#8946), which no bundled recipe sets. NeMo's
``MegatronDistributedFusedAdam.init_params_bucket`` (nemo/core/optim/distributed_adam.py) then initialises a
group's marked parameters first, as Apex buckets of their own with ``grad_sync_dtype=torch.float32``, and the rest
of the group after them in the optimizer's ``grad_sync_dtype``; every bucket of the group depends on every
parameter of the group, so the group is still reduced together (Apex's ``init_params_bucket`` marks earlier buckets
unable to fill: each part starts new buckets). The parameters stay in the sharded optimizer: this is Apex's support
for several gradient dtypes (NVIDIA/apex#1721, NeMo#7359, September 2023), not the 2023 unsharded ``torch.optim.AdamW``
copy of NeMo#5920 that #7359 removed.

**What that changes in the step** (Apex ``DistributedFusedAdam``, apex/contrib/optimizers/distributed_fused_adam.py):

1. *The gradient copy.* The lookup's dense 16-bit ``.grad`` (``embedding_grad``) is added into the bucket's gradient
   buffer by the post-backward hook (``_grad_copy``: ``grad_out.add_(grad_in)``, the buffer in the bucket's
   ``grad_sync_dtype``) every microbatch: read 2, read and write 4 + 4 bytes, 10 instead of 6 a table parameter
   (``accumulation_bytes_per_param``).
2. *The reduce-scatter.* An fp32 bucket holds as many elements as a 16-bit one (the bucket and shard sizes come from
   ``bucket_cap_mb`` and the optimizer's default ``grad_sync_dtype``, ``default_shard_size``), at 4 bytes:
   ``fp32_params`` elements rounded up to whole buckets, reduced at twice the width (``engine.data_parallel``).
   The parameter all-gather stays in ``param_sync_dtype`` (16-bit): unchanged.
3. *The tied copies' all-reduce* (pp > 1, ``allreduce_first_last_embeddings`` after the data-parallel syncs): it
   all-reduces ``main_grad``, the parameter's view into that fp32 buffer, so 4 bytes an element
   (``parallel.plan.embedding_grad_bytes``).

**Which runs.** Apex's distributed Adam (``grad_buckets: apex``) on Megatron-Core reducing in 16 bits
(``grad_reduce_dtype`` bf16/fp16; with fp32 nothing changes), in a NeMo container from 24.05 (NeMo 2.0.0rc0,
Megatron-Core 0.7) on: a scenario states its container as ``training.mcore_version`` (data/mcore_versions.yaml
``nemo_containers``, ``nemo_fp32_embedding_grads``). A run that leaves the release to the default has no NeMo
pinned and is left at ``grad_reduce_dtype`` (``note`` says so).

**Left out** (stated in docs/calibration/round-26.md, "Round 26: NeMo's fp32 word-embedding gradients, by NeMo
release"): the tied output layer's wgrad GEMM accumulating into the fp32 ``main_grad`` on the last stage (C read and
written at 4 bytes: the GEMM stays compute-bound); Apex's zeroing of the fp32 buffer once a step (2 more bytes an
element, ~0.1 ms); the optimizer step reading an fp32 gradient shard for those elements; the buffer's 2 more bytes an
element of memory; and the timing of NeMo's last bucket group (the parameters with ``_disable_overlap_grad_sync``, the
tied embedding under pipelining and the sequence-parallel norms, which Apex reduces only at the step).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from simcluster.spec import config
from simcluster.spec.hardware import BYTES_PER_ELEMENT

if TYPE_CHECKING:
    from simcluster.spec.config import Scenario
    from simcluster.spec.model import TransformerSpec

# MegatronDistributedFusedAdam.init_params_bucket: grad_sync_dtype=torch.float32 for _with_fp32_optimizer parameters
GRAD_DTYPE = "fp32"
GRAD_BYTES = BYTES_PER_ELEMENT[GRAD_DTYPE]


def applies(scenario: Scenario) -> bool:
    """Whether the run's word embedding is reduced in fp32 buckets (module docstring): Apex's distributed Adam
    (``grad_buckets: apex``) on Megatron-Core, a 16-bit ``grad_reduce_dtype``, and a stated ``mcore_version`` of
    a NeMo container from 24.05 on."""
    p = scenario.parallelism
    return (
        p.grad_buckets == "apex"
        and scenario.megatron_core
        and p.grad_reduce_dtype != GRAD_DTYPE
        and config.nemo_fp32_embedding_grads(config.stated_mcore_version(scenario.training))
    )


def chunk_params(model: TransformerSpec, tp: int, first: bool, last: bool, pp: int) -> float:
    """``_with_fp32_optimizer`` elements of one model chunk per tensor-parallel rank: the first chunk's word
    embedding (ceil(V/tp) rows, the catalog's convention: ``embedding_grad.table_params``) and learned position
    table; the last chunk's tied copy of the word embedding under pipelining (at pp 1 it is the first chunk's)."""
    word = math.ceil(model.vocab / tp) * model.hidden
    params = 0.0
    if first:
        params += word + (model.max_seq_len * model.hidden if model.position == "learned" else 0)
    if last and not first and model.tied_embeddings and pp > 1:
        params += word
    return float(params)


def note(scenario: Scenario) -> str | None:
    """One line for a run with Apex's distributed Adam reducing in 16 bits that states no release: its embedding is
    reduced at grad_reduce_dtype, which NeMo from 24.05 does not do."""
    p = scenario.parallelism
    if (
        p.grad_buckets != "apex"
        or not scenario.megatron_core
        or p.grad_reduce_dtype == GRAD_DTYPE
        or config.stated_mcore_version(scenario.training) is not None
    ):
        return None
    return (
        "grad_buckets: apex without a stated training.mcore_version: the word embedding is reduced at "
        f"grad_reduce_dtype ({p.grad_reduce_dtype}) like the rest; NeMo's containers from 24.05 (mcore_version "
        "'0.7' on) reduce it in fp32 buckets of its own (with_fp32_embedding_grads): state the container's "
        "release to get that"
    )
