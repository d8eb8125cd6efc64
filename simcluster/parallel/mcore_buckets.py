"""Megatron-Core's gradient buckets as its gradient buffer forms them: unequal buckets closed by parameter count.

Sources (docs/calibration/round-22.md, "Round 22: Megatron-Core's own gradient buckets" and "Round 23: Megatron-Core's
own gradient buckets, version by version"):

- the walk: every version from the early-2024 ``GradBuffer`` (NVIDIA/Megatron-LM megatron/core/distributed/
  grad_buffer.py, a8a5512) to ``_ParamAndGradBuffer`` (param_and_grad_buffer.py, 0011998, 2026) walks a model
  chunk's parameters in reverse registration order and closes a bucket as soon as it holds at least ``bucket_size``
  elements, padding its end so it shards evenly over the data-parallel ranks (distributed optimizer);
- the shared embedding: from the ``ddp_config`` versions on (core_r0.6/0.7), ``_does_param_require_new_bucket``
  gives a parameter marked ``shared_embedding`` (the first pipeline stage's word embedding when the output layer is
  tied to it and pp > 1, megatron/core/models/common/language_module) a bucket of its own;
- fp8 parameters: parameters are kept in one buffer per (param dtype, grad dtype), Transformer Engine's fp8 weights
  in a uint8 buffer (distributed_data_parallel.py ``_allocate_buffers_for_parameters``), each buffer cut by the walk
  above; ``partition_buckets`` then makes each fp8 bucket a bucket group and merges every non-fp8 bucket into the
  last fp8 group (the one of the chunk's first layers), whose collectives are coalesced (param_and_grad_buffer.py,
  0011998; the bucket groups are in Megatron-Core 0.14/0.15 as Megatron-Bridge 25.11 ships it).

Registration order of a Megatron-Core GPT layer with Transformer Engine modules: ``linear_proj`` (``SelfAttention``
builds it before ``linear_qkv``) weight then bias; ``linear_qkv``'s fused norm, then its weight and bias;
``linear_fc1``'s fused norm, then its weight and bias; ``linear_fc2`` weight and bias. A chunk: the word embedding and
learned position embedding (first chunk, in that order), its layers, the final norm and the output layer (a
``ColumnParallelLinear``, not fp8; last chunk).
Not modelled (under 1e-5 of a bucket): the later versions' padding of bucket ends to lcm(dp, 128) elements and of
parameter starts to 64 elements (the early version pads ends to dp only).
"""

from __future__ import annotations

from typing import NamedTuple

# Megatron-LM's --ddp-bucket-size default before DistributedDataParallelConfig's max(40M, 1M x dp) (core_v0.7.0):
# 40,000,000 elements (grad_buffer.py era, a8a5512)
MCORE_EARLY_2024_BUCKET = 40_000_000


class Tensor(NamedTuple):
    """One parameter of a chunk: the layer it belongs to (the embedding counted in the first, the final norm and
    output layer in the last), its elements on one tensor-parallel rank, whether it is a GEMM weight (an fp8
    parameter under fp8 parameters) and whether it needs a bucket of its own (a shared embedding)."""
    layer: int
    elements: float
    gemm: bool = False
    alone: bool = False


class Bucket(NamedTuple):
    """A bucket group in formation (backward) order: the lowest layer (or unit: ``gpt_param_tensors``) holding a
    parameter of it (its gradients are complete after that layer's backward), its padded elements, how many of
    them are fp8 GEMM weights, and how many of Megatron-Core's buckets it holds (each checked on its own by
    ``check_for_nan_in_grad``, workload/nan_check.py)."""
    low: int
    elements: int
    gemm_elements: int = 0
    buckets: int = 1


def layer_tensors(hidden: int, q_local: float, kv_local: float, ffn_local: float, mlp_matrices: int,
                  norms: float, biases: bool) -> list[tuple[float, bool]]:
    """(elements, GEMM weight?) of one layer's parameters on one tensor-parallel rank, in registration order: proj
    (and its replicated bias), qkv's norm, qkv (and bias), fc1's norm, fc1 (and bias), fc2 (and its replicated
    bias); the layer's norm parameters ``norms`` split evenly between the two fused norms (q/k norms with the
    first)."""
    h, qkv = hidden, q_local + 2 * kv_local
    bias = (lambda n: [(n, False)] if biases else [])   # noqa: E731
    return ([(h * q_local, True)] + bias(h) + [(norms / 2, False), (h * qkv, True)] + bias(qkv)
            + [(norms / 2, False), ((mlp_matrices - 1) * h * ffn_local, True)] + bias(ffn_local)
            + [(h * ffn_local, True)] + bias(h))


def gpt_param_tensors(layer: list[tuple[float, bool]], layers: int, embedding: float = 0.0, head: float = 0.0,
                      final_norm: float = 0.0, shared_embedding: bool = False, positions: float = 0.0,
                      edge_units: bool = False) -> list[Tensor]:
    """Every parameter of a chunk in registration order: the word ``embedding`` (layer 0; its own bucket when
    ``shared_embedding``) and the learned ``positions`` after it (``LanguageModelEmbedding`` builds
    ``word_embeddings`` first; only the word embedding is marked ``shared_embedding``, so the positions stay with
    layer 0's bucket), each when non-zero, ``layers`` copies of ``layer`` (``layer_tensors``), the final norm and the
    output layer ``head`` (the last layer) when non-zero. ``edge_units``: numbered by the units the backward runs
    apart instead (the embedding 0, layer i i + 1, the final norm and output layer ``layers`` + 1)."""
    shift = 1 if edge_units else 0
    tensors = [Tensor(0, embedding, alone=shared_embedding)] if embedding else []
    tensors += [Tensor(0, positions)] if positions else []
    tensors += [Tensor(i + shift, n, gemm) for i in range(layers) for n, gemm in layer]
    last = layers + 1 if edge_units else max(layers - 1, 0)
    return tensors + [Tensor(last, n) for n in (final_norm, head) if n]


def megatron_core_buckets(tensors: list[Tensor], bucket_size: float, dp: int) -> list[tuple[int, int]]:
    """(lowest layer holding a parameter of it, padded elements) of each bucket of one buffer, in formation
    (backward) order: the parameters walked in reverse, a bucket closed once it holds >= ``bucket_size`` elements
    and around a tensor that needs its own, each bucket's end padded up to a multiple of ``dp``; the remainder is
    the last bucket."""
    buckets, start, end, low = [], 0, 0, None

    def close():
        nonlocal start, end, low
        end = -(-end // dp) * dp
        buckets.append((low, int(end - start)))
        start, low = end, None

    for tensor in reversed(tensors):
        layer, numel = tensor[0], tensor[1]
        alone = len(tensor) > 3 and tensor[3]
        if alone and low is not None:
            close()
        end += numel
        low = layer if low is None else min(low, layer)
        if end - start >= bucket_size or alone:
            close()
    if low is not None:
        close()
    return buckets


def megatron_core_bucket_groups(tensors: list[Tensor], bucket_size: float, dp: int, fp8_params: bool) -> list[Bucket]:
    """A chunk's bucket groups in formation order. Without fp8 parameters one buffer, a group a bucket. With them
    (``partition_buckets``): the GEMM weights' fp8 buffer and the rest's buffer are cut apart, each fp8 bucket is a
    group and every other bucket joins the last one (the chunk's first layers)."""
    if not fp8_params:
        return [Bucket(low, n) for low, n in megatron_core_buckets(tensors, bucket_size, dp)]
    fp8 = megatron_core_buckets([t for t in tensors if t.gemm], bucket_size, dp)
    rest = megatron_core_buckets([t for t in tensors if not t.gemm], bucket_size, dp)
    if not fp8:
        return [Bucket(low, n) for low, n in rest]
    groups = [Bucket(low, n, n) for low, n in fp8]
    last = groups[-1]
    groups[-1] = Bucket(min([last.low] + [low for low, _ in rest]), last.elements + sum(n for _, n in rest),
                        last.elements, 1 + len(rest))
    return groups
