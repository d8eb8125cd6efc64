"""Context-parallel attention as Transformer Engine runs it: cp ring steps of fused attention, with their copies and
softmax corrections, per rank and microbatch.

Source: Transformer Engine 1.7-1.11 (the NeMo 24.07-24.09 containers), ``transformer_engine/pytorch/attention.py``,
``AttnFuncWithCP`` (from 1.10 ``AttnFuncWithCPAndKVP2P``), the ``p2p`` communication type (TE's default, and the
only one before 1.10; Megatron-Core passes ``cp_comm_type`` from 0.9 on, default "p2p"), with causal load balancing:
the sequence is cut into 2cp chunks and rank r holds chunks r and 2cp-1-r, so its s/cp queries are two halves.

Forward, step i = 0 .. cp-1, the keys and values of rank r-i (received from the previous rank during step i-1):

* step 0: the rank's own chunks, causal, s/cp queries x s/cp keys;
* step i <= r: the other rank's first chunk only (its second lies in the future of both query halves): non-causal,
  s/cp queries x s/2cp keys, the key/value half copied out first (``kv[0].contiguous()``);
* step i > r: only the rank's second query half sees them, both chunks: non-causal, s/2cp queries x s/cp keys,
  the query half copied out first (``q[1].contiguous()``).

The steps alternate between two streams ("to resolve wave quantization issue of Flash Attn in each step"): step
i+1's kernels are queued on one stream while step i computes on the other, so they start as step i's thread blocks
retire, without a stream gap of their own (``Op.gap_hidden``; their device time still counts); step i's merge of
the log-sum-exp (``flash_attn_fwd_softmax_lse_correction``; at step 1 the output's zero fill and the
lse's clone to fp64) runs on the other stream beside step i+1's attention, so only the last one is on the critical
path; after the loop the lse is cast back to fp32 and each step's partial output is rescaled into the output
(``flash_attn_fwd_out_correction``, one fused kernel per step). The key/value buffer is first packed by a
``torch.cat`` of K and V.

Backward (one stream), the same steps in reverse (step cp-1 the causal diagonal): each step's fused attention
backward, its input half copies (K/V, or Q, O and dO), then dQ accumulated (copy or add), the step's dK and dV
concatenated (``torch.cat``) and accumulated into the dK/dV buffer that travels around the ring with the keys.
Before the loop K/V is copied into the ring buffer and the second half of the lse made contiguous.

Ranks differ only in which steps halve the keys and which halve the queries. Each phase of the ring paces at its
slowest rank (every step waits for the neighbour's send), and the model takes that rank per phase
(``pacing_ranks``). Forward, every rank runs 3cp + 2 kernels, cp + 4 of them paying the stream gap; rank cp-1
halves the keys at every later step, the shortest kernels on the flash efficiency curve
(``kernels.attention_efficiency`` saturates in the key length): the slowest. Backward, rank 0 halves the queries
at every later step, which costs three half copies (Q, O, dO) instead of one of K/V, and splits its dQ and dK/dV
writes on the diagonal: 7cp + 1 kernels against rank cp-1's 5cp + 1; at the measured queued-launch gap
(efficiency.yaml host_overhead.kernel_gap_s) those kernels cost about what rank cp-1's shorter keys do, the
ranks are within 1% of each other, and rank cp-1 is taken for both phases (tests/unit/test_context_parallel.py
checks the Llama 3 8B shapes).

FLOP convention: an op's ``flop`` is Megatron's count (``workload.ops``: the causal attention counted as if
unmasked, i.e. twice its unmasked tiles), shared among the steps in proportion to their tiles. Every step's op
then carries twice its tiles, the kernel model's causal executed fraction (efficiency.yaml attention.
executed_fraction, 0.5 forward) gives each step exactly its tiles, and the steps' counts sum to the single kernel's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from simcluster.spec.model import TransformerSpec
from simcluster.workload.ops import LSE_BYTES_PER_ELEMENT, Op, Shard, _memory, local_kv_hidden

CORE, CORE_BACKWARD = "attention", "attention_backward"  # ops.attention_core's fused kernels
# The causal mask leaves half of a square score matrix's tiles (the triangle): the ratio of a step's unmasked tiles
# to Megatron's count (efficiency.yaml attention.executed_fraction.forward is the same 0.5; a test ties them).
CAUSAL_TILE_FRACTION = 0.5
# The fp64 running log-sum-exp of the forward (``softmax_lse.to(torch.double)``); per-step lse are fp32.
LSE_ACCUMULATOR_BYTES_PER_ELEMENT = 8
# FLOP per element of the merge kernels (counting convention as in workload.ops; bandwidth-bound everywhere):
LSE_CORRECTION_FLOP_PER_ELEMENT = 6  # max, min, subtract, exp, log1p, add
OUT_CORRECTION_FLOP_PER_ELEMENT = 2  # multiply by exp(lse_step - lse) (one exp per row, amortised), add


@dataclass(frozen=True)
class RingStep:
    """One step of the ring on one rank: its queries and keys (tokens of one sequence) and its mask."""

    queries: int
    keys: int
    causal: bool
    halves: str = ""  # "keys" or "queries": which input is half of the rank's chunk pair (later steps only)

    def tiles(self, micro_batch: int, q_width: int) -> float:
        """Executed multiply-add FLOP of the step's forward: Q K^T and P V over the unmasked part."""
        full = 4.0 * micro_batch * self.queries * self.keys * q_width
        return CAUSAL_TILE_FRACTION * full if self.causal else full


def ring_steps(seq_len: int, cp: int, rank: int) -> list[RingStep]:
    """The forward steps of ``rank`` with causal load balancing (module docstring); backward runs them reversed."""
    local = seq_len // cp
    half = local // 2
    steps = [RingStep(local, local, True)]
    for i in range(1, cp):
        steps.append(RingStep(local, half, False, "keys") if i <= rank else RingStep(half, local, False, "queries"))
    return steps


def pacing_ranks(cp: int) -> tuple[int, int]:
    """The rank each phase of the ring waits for, (forward, backward): cp-1 (every later step halves the keys), the
    slowest forward and within 0.1% of the slowest backward; module docstring."""
    return cp - 1, cp - 1


@dataclass(frozen=True)
class CpAttention:
    """The kernels of one phase of context-parallel attention on one rank: before the steps, per step (the kernels
    a ring transfer runs beside), after the steps."""

    prologue: list[Op]
    steps: list[list[Op]]
    epilogue: list[Op]

    @property
    def ops(self) -> list[Op]:
        return [*self.prologue, *(op for step in self.steps for op in step), *self.epilogue]


class _Sizes:
    """Element counts of one rank's tensors (micro batch b, local heads, widths)."""

    def __init__(self, model: TransformerSpec, shard: Shard):
        self.b = shard.micro_batch
        self.heads = model.heads // shard.tp
        self.q_width = self.heads * model.d_head
        self.kv_width = local_kv_hidden(model, shard.tp)
        self.e = shard.activation_bytes_per_element
        self.kernel = shard.attention

    def q(self, tokens: int) -> float:
        return self.b * tokens * self.q_width

    def kv(self, tokens: int) -> float:
        """K and V together."""
        return 2.0 * self.b * tokens * self.kv_width

    def lse(self, tokens: int) -> float:
        return float(self.b * self.heads * tokens)

    def copy(self, name: str, elements: float) -> Op:
        return _memory(name, 0.0, 2 * elements * self.e)

    def add(self, name: str, elements: float) -> Op:
        return _memory(name, elements, 3 * elements * self.e)

    def attention(self, step: RingStep, backward: bool) -> Op:
        """A step's fused attention: the traffic of ``ops.attention_core`` at the step's shape, Megatron's count."""
        q_o = self.q(step.queries) * self.e
        k_v = self.kv(step.keys) / 2 * self.e
        lse = self.lse(step.queries) * LSE_BYTES_PER_ELEMENT
        counted = step.tiles(self.b, self.q_width) / CAUSAL_TILE_FRACTION
        if backward:
            return Op(CORE_BACKWARD, "attention", 2 * counted, 4 * q_o + 4 * k_v + lse,
                      step.queries, step.keys, self.q_width // self.heads, self.b * self.heads, kernel=self.kernel)
        return Op(CORE, "attention", counted, 2 * q_o + 2 * k_v + lse,
                  step.queries, step.keys, self.q_width // self.heads, self.b * self.heads, kernel=self.kernel)


def forward(model: TransformerSpec, shard: Shard, rank: int) -> CpAttention:
    """The forward kernels of ``rank`` on its compute stream's critical path (module docstring)."""
    size = _Sizes(model, shard)
    local = shard.seq_len // shard.cp
    steps = ring_steps(shard.seq_len, shard.cp, rank)
    per_step = []
    for step in steps:
        ops = []
        if step.halves == "keys":
            ops.append(size.copy("cp_kv_half", size.kv(step.keys)))
        elif step.halves == "queries":
            ops.append(size.copy("cp_q_half", size.q(step.queries)))
        ops.append(size.attention(step, backward=False))
        # steps after the first are queued on the other stream while the step before computes: no gap of their own
        per_step.append([dataclasses.replace(op, gap_hidden=True) for op in ops] if step.halves else ops)
    last = size.lse(steps[-1].queries)
    epilogue = [
        # the last step's lse merge (the earlier ones ran beside the next step's attention, on the other stream)
        _memory("cp_lse_correction", LSE_CORRECTION_FLOP_PER_ELEMENT * last,
                last * (2 * LSE_ACCUMULATOR_BYTES_PER_ELEMENT + LSE_BYTES_PER_ELEMENT)),
        _memory("cp_lse_cast", 0.0, size.lse(local) * (LSE_ACCUMULATOR_BYTES_PER_ELEMENT + LSE_BYTES_PER_ELEMENT)),
    ]
    for step in steps:  # read the step's output and the output, write the output; read both lse
        out = size.q(step.queries)
        epilogue.append(_memory("cp_out_correction", OUT_CORRECTION_FLOP_PER_ELEMENT * out,
                                3 * out * size.e + 2 * size.lse(step.queries) * LSE_BYTES_PER_ELEMENT))
    return CpAttention([size.copy("cp_kv_pack", size.kv(local))], per_step, epilogue)


def backward(model: TransformerSpec, shard: Shard, rank: int) -> CpAttention:
    """The backward kernels of ``rank``, one stream (module docstring): TE's step i is forward step cp-1-i."""
    size = _Sizes(model, shard)
    cp, local = shard.cp, shard.seq_len // shard.cp
    half = local // 2
    prologue = [size.copy("cp_kv_pack", size.kv(local)),
                _memory("cp_lse_half", 0.0, 2 * size.lse(half) * LSE_BYTES_PER_ELEMENT)]
    per_step = []
    forward_steps = ring_steps(shard.seq_len, cp, rank)
    for i in range(cp):
        step = forward_steps[cp - 1 - i]  # TE: i == cp-1 the diagonal, i >= cp-rank-1 keys halved, else queries
        ops = []
        if step.halves == "keys":
            ops.append(size.copy("cp_kv_half", size.kv(step.keys)))
        elif step.halves == "queries":
            ops += [size.copy("cp_q_half", size.q(step.queries)) for _ in ("q", "out", "dout")]
        ops.append(size.attention(step, backward=True))
        ops += _dq_accumulation(size, step, i, rank, cp)
        ops.append(size.copy("cp_dkv_concat", size.kv(step.keys)))
        ops += _dkv_accumulation(size, step, i, rank, cp)
        per_step.append(ops)
    return CpAttention(prologue, per_step, [])


def _dq_accumulation(size: _Sizes, step: RingStep, i: int, rank: int, cp: int) -> list[Op]:
    """dQ of step i into the rank's dQ (TE: copy where first written, add after; a query-halved step writes the
    second half only)."""
    first = cp - rank - 1  # the first step whose dQ covers both query halves
    elements = size.q(step.queries)
    if i < first:
        return [(size.copy if i == 0 else size.add)("cp_dq_accumulate", elements)]
    if i == first and rank != cp - 1:  # first half copied, second added
        return [size.copy("cp_dq_accumulate", elements / 2), size.add("cp_dq_accumulate", elements / 2)]
    return [(size.copy if i == first else size.add)("cp_dq_accumulate", elements)]


def _dkv_accumulation(size: _Sizes, step: RingStep, i: int, rank: int, cp: int) -> list[Op]:
    """dK/dV of step i into the travelling dK/dV buffer (TE: copy where first written, add after)."""
    elements = size.kv(step.keys)
    if step.causal:  # the diagonal, last: rank 0 adds the first half and copies the second
        if rank == 0:
            return [size.add("cp_dkv_accumulate", elements / 2), size.copy("cp_dkv_accumulate", elements / 2)]
        return [size.add("cp_dkv_accumulate", elements)]
    if step.halves == "keys":
        return [(size.copy if i == 0 and rank == cp - 1 else size.add)("cp_dkv_accumulate", elements)]
    return [(size.copy if i == 0 else size.add)("cp_dkv_accumulate", elements)]


def attention(model: TransformerSpec, shard: Shard) -> tuple[CpAttention, CpAttention]:
    """Forward and backward of the ranks that pace the ring (``pacing_ranks``)."""
    forward_rank, backward_rank = pacing_ranks(shard.cp)
    return forward(model, shard, forward_rank), backward(model, shard, backward_rank)


def apply(model: TransformerSpec, shard: Shard, phases: dict[str, list[Op]]) -> dict[str, list[Op]]:
    """The layer ``phases`` (``ops.layer_ops``) with the attention core (``ops.attention_core``'s one kernel each
    way; also what selective or full recompute re-runs) as the ring steps; unchanged where ``applies`` is false."""
    if not applies(model, shard):
        return phases
    forward_steps, backward_steps = attention(model, shard)
    cores = {CORE: forward_steps.ops, CORE_BACKWARD: backward_steps.ops}

    def rewrite(op: Op) -> list[Op]:
        return cores[op.name] if op.kind == "attention" and op.name in cores else [op]

    return {phase: [new for op in ops for new in rewrite(op)] for phase, ops in phases.items()}


def applies(model: TransformerSpec, shard: Shard) -> bool:
    """Whether attention runs as ring steps: context parallelism with Transformer Engine's fused attention
    (``flash``); multi-head latent attention keeps its own single-kernel model (workload.mla)."""
    return shard.cp > 1 and shard.attention == "flash" and model.mla is None
