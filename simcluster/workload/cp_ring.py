"""The kernels of Transformer Engine's context-parallel p2p ring besides its attention steps, forward and backward,
per layer on one rank (docs/calibration/round-34.md "Round 34: the context-parallel ring, kernel by kernel").

The model counts the ring's cp attention steps as one attention op a direction (``ops.attention_core``, its time
from the step kernels: ``kernels.ring_key_length``) and its K/V exchange on the network (``parallel.plan``
``cp_exchange``). ``AttnFuncWithCPAndKVP2P`` launches more: the K/V buffer, the softmax-statistics (LSE) merges, the
output corrections and, backward, the dQ / dK / dV accumulation, each a kernel of its own; and cp attention calls a
direction, not one. This module lists them, each with its HBM bytes (closed forms in the rank's tokens ``c`` = s/cp,
query and key/value widths and heads), the stream it runs on and whether the attention of the other stream hides it.

Sources, causal mask, Megatron-Core's ``sbhd`` (or ``bshd``) at micro batch 1, bf16 ring (NeMo's ``fp8_dpa`` off:
an fp8 run's ring is this bf16 loop), cuDNN fused attention, ``cp_comm_type`` p2p, rank 0 (the rank with the most
launches; every rank's forward has the same count):

- TE 2.x: ``transformer_engine/pytorch/attention/dot_product_attention/context_parallel.py`` (stored commit
  015d2257, a development copy with debug prints; the bf16 path read). Forward: ``torch.cat`` of k and v into the
  ring buffer; step i on stream i % 2 (the current stream, ``cp_stream``): ``fused_attn_fwd``, and at i >= 1 the LSE
  merge of step i-1 on that step's stream (``torch.clone`` at step 0, then ``flash_attn_fwd_[second_half_]softmax_
  lse_correction``, jit-fused, one kernel each); after the loop, on the current stream, one output correction a step
  (``flash_attn_fwd_out_correction_init``, ``flash_attn_fwd_[second_half_]out_correction``). Backward, one stream:
  the LSE's second half made contiguous (ranks < cp-1), the K/V copied into the send buffer; per step
  ``fused_attn_bwd``, the dQ copy / add (two at i = cp-1-rank for ranks < cp-1), dK and dV copied / added apart (four
  at the last step on rank 0). NCCL send / receive batched into one call at cp 2 below compute capability 10.0
  (``batch_p2p_comm``), else an isend and an irecv.
- TE 1.x (NeMo 24.09's container runs 1.10, its user guide's Software Component Versions; the stored 2.0-era
  ``transformer_engine/pytorch/attention.py`` id 3102555733 and the 1.10/1.11-era copy id 55236154357, whose bf16
  forward and backward agree kernel for kernel but for the integer divisions below; the 1.x backward's per-step
  ``torch.cat((dk_.unsqueeze(0), dv_.unsqueeze(0)))`` in the 1.10/1.11-era copy and the 1.7/1.8-era one, id
  908186293): forward as 2.x but at step 1 ``out`` zero-filled and the LSE cloned and cast to fp64 (three kernels), the
  merges in fp64, the LSE cast back to fp32 after the loop, every output correction the one
  ``flash_attn_fwd_out_correction``; backward as 2.x but per step dK and dV concatenated (one ``torch.cat``) and
  accumulated as one tensor (one copy / add, two at the last step on rank 0). K/V packed on dim -3 (``sb2hd``), so a
  K/V half is a contiguous view; batched p2p at cp 2 whatever the GPU. The loop also divides the int32 cu_seqlens
  on the GPU, by release (``TE1_DIVISIONS``; docs/calibration/round-34.md "Round 34: review of the context-parallel ring
  kernels").

At micro batch 1 the halves TE makes ``.contiguous()`` (q[1], the K/V first half, O and dO halves) are contiguous
views already: no kernel. Streams: the forward's attention steps alternate between two streams, and a step's LSE
merge runs on its stream beside the next step's attention on the other (TE: "create two streams to resolve wave
quantization issue"), so the device is not idle before those launches: ``hidden`` (host dispatch only, no stream
gap, their few bytes under the attention). The K/V cat before the loop, the last step's merge, the casts and output
corrections after the loop and every backward kernel run in series on one stream: a kernel with its gap. The
attention steps past the first are launches whose time is already the one attention op's: zero bytes here.
"""

from __future__ import annotations

from dataclasses import dataclass

from simcluster.core import catalog
from simcluster.core.errors import ScenarioError

LSE_BYTES = 4      # the softmax statistics in fp32
SEQLENS_BYTES = 4  # cu_seqlens are int32, micro batch + 1 of them
SEQLENS_DIVIDE = "cp_seqlens_divide"
LSE64_BYTES = 8    # TE 1.x merges them in fp64 (``.to(torch.double)``)
ATTENTION_STEP = "cp_attention_step"   # a ring step's attention launch (its time in ops.attention_core's op)
NCCL_LAUNCH = "cp_p2p_launch"          # a NCCL send / receive call on NCCL's stream



def applied() -> bool:
    """efficiency.yaml ``host_overhead.cp_ring_kernels`` (round 34, OFF): whether a TE context-parallel run charges
    the ring's kernels listed here. Off, the ring is its attention steps and its exchange, as before round 34. The
    count is sourced; the price is not: every one of these small kernels would pay the fitted per-kernel gap, and the
    refit with them on (9 us / 630 us against 17 us / 500 us off) puts the calibration median at 3.1% (2.4% off) and
    the held-out median / max at 6.9% / 50.8% (6.1% / 34.3% off): the fitted gap cannot price kernels the host issues
    while the other stream's attention runs (docs/calibration/round-34.md "Round 34: the context-parallel ring, kernel
    by kernel", the lead's decision at its end)."""
    on = catalog.load("efficiency")["host_overhead"].get("cp_ring_kernels", False)
    if not isinstance(on, bool):  # bool('false') is True: YAML's true or false only
        raise ScenarioError("efficiency.yaml host_overhead.cp_ring_kernels", f"{on!r} is not true or false")
    return on

@dataclass(frozen=True)
class RingKernel:
    """One launch of the ring: its name, HBM bytes, and whether the other stream's attention hides its stream gap
    (``hidden``: host dispatch only) or it runs in series (a kernel with its gap). NCCL launches are ``hidden``."""

    name: str
    hbm_bytes: float
    hidden: bool = False


@dataclass(frozen=True)
class Divisions:
    """The ring's integer divisions of the int32 cumulative lengths on the GPU, per call on rank 0: ``series`` before
    the first attention on the current stream (entry and step 0), ``per_step`` at each later forward step on that
    step's stream (beside the other stream's attention), ``backward`` in each backward call but the last (one stream).
    """

    series: int = 0
    per_step: int = 0
    backward: int = 0


NO_DIVISIONS = Divisions()
# TE 1.x releases (first release, divisions), from source, fused attention, bshd / sbhd:
# - 1.7 (the 1.7/1.8-era attention.py, stored id 908186293, ``AttnFuncWithCP``): ``cu_seqlens_q // 2`` in the call of
#   every step on half the queries (rank 0: every later step, forward and backward but the backward's last);
# - 1.10 (the 1.10/1.11-era copy, id 55236154357, ``AttnFuncWithCPAndKVP2P``): on entry ``cu_seqlens_{q,kv}_padded //
#   cp_size``; at step 0 ``cu_seqlens_{q,kv} // cp_size``; at each later step ``cu_seqlens_q // (cp_size * 2)``,
#   ``cu_seqlens_kv // cp_size`` and ``cu_seqlens_q_padded // 2`` in the call; backward ``cu_seqlens_q_padded // 2``.
# TE 2.x (context_parallel.py @015d2257 and the later stored copies) caches them per shape for bshd / sbhd
# (``_get_cu_seqlens_info_with_cp``): none. Releases before 1.7 or not known: none counted.
TE1_DIVISIONS = (((1, 7), Divisions(0, 1, 1)), ((1, 10), Divisions(4, 3, 1)))


def seqlens_divisions(te_version: int, release: str | None) -> Divisions:
    """The ring's cu_seqlens divisions (``TE1_DIVISIONS``) for a TE 1.x ``release`` ("major.minor", the container's:
    ``config.container_te``); TE 2.x and an unknown release, none."""
    if te_version != 1 or release is None:
        return NO_DIVISIONS
    version = tuple(int(part) for part in release.split("."))
    known = [divisions for first, divisions in TE1_DIVISIONS if version >= first]
    return known[-1] if known else NO_DIVISIONS


def _divides(count: int, micro_batch: int, hidden: bool = False) -> list[RingKernel]:
    """``count`` integer divisions of an int32 cu_seqlens of micro batch + 1 entries (read and written once)."""
    return [RingKernel(SEQLENS_DIVIDE, 2 * (micro_batch + 1) * SEQLENS_BYTES, hidden)] * count


def _p2p_launches(exchanges: int, cp: int, te_version: int, blackwell: bool) -> list[RingKernel]:
    """NCCL calls of ``exchanges`` ring exchanges: one batched call at cp 2 (TE 2.x only below compute capability
    10.0), else an isend and an irecv."""
    batched = cp == 2 and (te_version == 1 or not blackwell)
    return [RingKernel(NCCL_LAUNCH, 0.0, hidden=True)] * (exchanges * (1 if batched else 2))


def forward(cp: int, te_version: int, micro_batch: int, chunk: int, q_hidden: int, kv_hidden: int, heads: int,
            e: int, blackwell: bool = False, divisions: Divisions = NO_DIVISIONS) -> list[RingKernel]:
    """The ring's forward launches on rank 0 beside its first attention step (module doc): ``chunk`` tokens a rank
    (s/cp), ``q_hidden`` / ``kv_hidden`` the rank's query / key-value widths, ``heads`` its query heads, ``e`` bytes an
    activation element; ``divisions`` the release's cu_seqlens divisions (``seqlens_divisions``). Empty at cp 1."""
    if cp == 1:
        return []
    b, c, half = micro_batch, chunk, chunk / 2
    lse, lse_half = b * heads * c, b * heads * half
    out, out_half = b * c * q_hidden * e, b * half * q_hidden * e
    kernels = [RingKernel("cp_kv_cat", 4 * b * c * kv_hidden * e)]
    kernels += _divides(divisions.series, b) + _divides(divisions.per_step * (cp - 1), b, hidden=True)
    kernels += [RingKernel(ATTENTION_STEP, 0.0, hidden=True)] * (cp - 1)
    if te_version == 1:
        kernels += [RingKernel("cp_out_zero", out, hidden=True), RingKernel("cp_lse_clone", 2 * lse * LSE_BYTES, True),
                    RingKernel("cp_lse_to_fp64", lse * (LSE_BYTES + LSE64_BYTES), True)]
        merge = lse_half * (2 * LSE64_BYTES + LSE_BYTES)   # rank 0's later steps: the second half, in fp64
        last = [RingKernel("cp_lse_to_fp32", lse * (LSE64_BYTES + LSE_BYTES))]
        first_out = 3 * out + 2 * lse * LSE_BYTES           # read out and the step's, write out; both LSEs
    else:
        kernels += [RingKernel("cp_lse_clone", 2 * lse * LSE_BYTES, hidden=True)]
        merge = 3 * lse_half * LSE_BYTES
        last = []
        first_out = 2 * out + 2 * lse * LSE_BYTES           # the init: read the step's output, write out
    kernels += [RingKernel("cp_lse_merge", merge, hidden=True)] * (cp - 2) + [RingKernel("cp_lse_merge", merge)]
    kernels += last + [RingKernel("cp_out_correction", first_out)]
    # the later steps' second halves; TE 1.x reads the fp64 LSE's half (a view of the tensor before the cast back)
    half_lse = LSE64_BYTES + LSE_BYTES if te_version == 1 else 2 * LSE_BYTES
    kernels += [RingKernel("cp_out_correction", 3 * out_half + lse_half * half_lse)] * (cp - 1)
    return kernels + _p2p_launches(cp - 1, cp, te_version, blackwell)


def backward(cp: int, te_version: int, micro_batch: int, chunk: int, q_hidden: int, kv_hidden: int, heads: int,
             e: int, blackwell: bool = False, divisions: Divisions = NO_DIVISIONS) -> list[RingKernel]:
    """The ring's backward launches on rank 0 beside its first attention step, one stream (module doc; arguments as
    ``forward``). Empty at cp 1."""
    if cp == 1:
        return []
    b, c, half = micro_batch, chunk, chunk / 2
    dq_half = b * half * q_hidden * e                  # a dQ half
    dk = b * c * kv_hidden * e                          # dK (or dV) over the chunk
    kernels = [RingKernel("cp_lse_half_copy", 2 * b * heads * half * LSE_BYTES),
               RingKernel("cp_kv_copy", 4 * dk)]
    kernels += [RingKernel(ATTENTION_STEP, 0.0)] * (cp - 1)
    kernels += _divides(divisions.backward * (cp - 1), b)
    # dQ: the second half copied at step 0, added at 0 < i < cp-1; at i = cp-1 the first half copied, the second added
    kernels += [RingKernel("cp_dq_copy", 2 * dq_half)] + [RingKernel("cp_dq_add", 3 * dq_half)] * (cp - 2)
    kernels += [RingKernel("cp_dq_copy", 2 * dq_half), RingKernel("cp_dq_add", 3 * dq_half)]
    # dK / dV into the received buffer: copied at step 0, added at 0 < i < cp-1, at the last step (rank 0) the first
    # half added and the second copied; TE 1.x first concatenates dK and dV (read both, write both) and moves them as
    # one tensor, TE 2.x moves each apart
    parts = 1 if te_version == 1 else 2
    width = 2 // parts                                  # tensors a kernel moves
    if te_version == 1:
        kernels += [RingKernel("cp_dkv_cat", 4 * dk)] * cp
    kernels += [RingKernel("cp_dkv_copy", 2 * width * dk)] * parts
    kernels += [RingKernel("cp_dkv_add", 3 * width * dk)] * (parts * (cp - 2))
    kernels += [RingKernel("cp_dkv_add", 3 * width * dk / 2), RingKernel("cp_dkv_copy", 2 * width * dk / 2)] * parts
    return kernels + _p2p_launches(cp, cp, te_version, blackwell)
