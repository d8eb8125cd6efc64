"""The column-parallel linears' asynchronous backward collectives of Megatron and Transformer Engine, with TP
communication overlap off (``parallelism.tp_comm_overlap: false``; with it on, userbuffers run them:
``workload.userbuffers``).

Read in the source (stored text):
- Megatron-Core ``tensor_parallel/layers.py`` ``LinearWithGradAccumulationAndAsyncCommunication.backward``
  (core_r0.5 .. r0.12; Megatron-LM 2022's copy with ``sequence_parallel_enabled`` alike): with sequence
  parallelism the saved input is all-gathered ``async_op=True`` before the dgrad GEMM and waited after it; the
  dgrad output is reduce-scattered ``async_op=True`` before the wgrad GEMM ("Here we rely on
  CUDA_DEVICE_MAX_CONNECTIONS=1 to ensure that the reduce scatter is scheduled before the weight gradient
  computation") and waited after it; without sequence parallelism the dgrad all-reduce likewise.
- Transformer Engine 1.x / 2.x ``module/linear.py``, ``layernorm_linear.py``, ``layernorm_mlp.py`` backward: the
  norm output (the input) re-gathered with ``gather_along_first_dim(..., async_op=True)`` before the dgrad GEMM,
  ``handle.wait()`` after it; "# Overlap dgrad-RS/AR with wgrad": ``reduce_scatter_along_first_dim(dgrad, ...,
  async_op=True)`` (``allreduce(dgrad, ..., async_op=True)`` without sequence parallelism), waited after the wgrad
  GEMM.
- The row-parallel linears' backward all-gather of dY (``_ReduceScatterToSequenceParallelRegion.backward`` ->
  ``_gather_along_first_dim``; TE's ``grad_output_preprocess``) is synchronous: it stays blocking, as do the
  forward's collectives and a full recompute's.

So per column-parallel linear (QKV, fc1 or the shared experts' fc1: the GEMM reading each block's normed input,
``column_gemms``): one all-gather of the input beside its dgrad GEMM and one
reduce-scatter of its dgrad beside its wgrad GEMM (sequence parallel), or one all-reduce beside its wgrad GEMM.
Each is an NCCL kernel on its own SMs beside the GEMM (``interference``: the GEMM slows while it runs) and is
exposed only where it outlasts the slowed GEMM: a GEMM of g alone beside a collective of c at slowdown f takes
g + c (1 - 1/f) when c <= g f, else c. The engine starts a block's async collectives with its compute and charges
their interference over the block (``engine.overlap``); the per-GEMM exposure ``exposed_s`` is a TP wait after the
block's compute (``ChunkCost.tp_async_exposed_s``, ``plan``; ``engine.agents`` tallies it as exposed TP
communication, unscaled by GPU speed), which together give the pair's time exactly.

MLA (``model.mla``): the attention block's column-parallel linears are its up-projections (``mla.COLUMN_PARALLEL``:
``linear_q_up_proj`` / ``linear_q_proj`` and ``linear_kv_up_proj``, TE LayerNormColumnParallelLinear on the
sequence-parallel latents), not the duplicated down-projections, so that block's async pair runs beside them: the
block's one h-wide pair (``tp_collectives_per_layer``; the latents' own widths are not modelled) beside the
up-projections' dgrad and wgrad GEMMs together. No Megatron-Core release read runs MLA with TP overlap
(``spec.config.MLA_TP_OVERLAP``), so this is how an MLA model runs at tp > 1 with sequence parallelism.
"""

from __future__ import annotations

from simcluster.workload import interference, kernels, mla
from simcluster.workload.ops import Op

# The norms whose outputs a layer's column-parallel linears read (``ops.layer_ops``), in the order of their blocks'
# collectives: the attention's input (QKV) and the MLP's (fc1, or an MoE
# layer's shared experts' fc1); a layer with one pair of TP collectives (an MoE layer without shared experts) has the
# first only. The GEMM beside a block's collectives is found by its role, not its name (``column_gemms``).
BLOCK_NORMS = ("attn_norm", "mlp_norm")
# Which GEMM phase each async collective runs beside (sequence parallel, and not)
BESIDE = {True: (("all_gather", "backward_input"), ("reduce_scatter", "backward_weight")),
          False: (("allreduce", "backward_weight"),)}


def applies(scenario) -> bool:
    """Megatron-Core / Transformer Engine (and Megatron-LM 2022's layer) with tp > 1 and TP overlap off, MLA included
    (module docstring). Megatron-LM 2020-21 (local DDP) and DeepSpeed's pipeline engine are left blocking (their
    copies were not read)."""
    p = scenario.parallelism
    return p.tp > 1 and not p.tp_comm_overlap and scenario.megatron_core


def linears(per_layer: dict[str, list[tuple[str, int]]]) -> int:
    """Column-parallel linears of a layer: one per forward reduce-scatter (or all-reduce)."""
    return sum(count for op, count in per_layer["forward"] if op in ("reduce_scatter", "allreduce"))


def split(per_layer: dict[str, list[tuple[str, int]]], sequence_parallel: bool
          ) -> tuple[dict[str, list[tuple[str, int]]], dict[str, tuple[tuple[str, int], ...]]]:
    """A layer's TP collectives per phase (``plan.tp_collectives_per_layer``) as (overlapped, blocking), the form
    ``plan.tp_blocking`` has for async TP: the backward's overlapped calls are the async ones (``BESIDE``, one per
    column-parallel linear; the input re-gather is new, ``tp_collectives_per_layer`` has none), the blocking ones the
    rest of the backward (dY all-gathers, a full recompute's forward collectives); the forward unchanged (the engine
    runs it blocking without ``tp_comm_overlap``)."""
    n = linears(per_layer)
    remaining = {"reduce_scatter": n} if sequence_parallel else {"allreduce": n}
    blocking = []
    for op, count in per_layer["backward"]:
        taken = min(count, remaining.get(op, 0))
        remaining[op] = remaining.get(op, 0) - taken
        blocking.append((op, count - taken))
    overlapped = {"forward": list(per_layer["forward"]),
                  "backward": [(op, n) for op, _ in BESIDE[sequence_parallel]]}
    return overlapped, {"forward": (), "backward": tuple(blocking)}


def column_gemms(layer: dict[str, list[Op]], linears: int) -> list[tuple[tuple[Op, ...], tuple[Op, ...]]]:
    """(dgrad GEMMs, wgrad GEMMs) of the first ``linears`` blocks' column-parallel linears (``BLOCK_NORMS`` order): per
    block, the last GEMM of the backward before that block's norm backward, the one writing the gradient of the norm's
    output, i.e. the linear reading the (sequence-gathered) normed input whose all-gather and dgrad reduce-scatter
    these are (QKV, fc1, an MoE layer's shared-expert fc1: whatever the layer builds and names them), and its wgrad
    GEMM, the GEMM of the same name and transposed shape (dgrad tokens x in from out, wgrad in x out over tokens).
    An MLA attention block's are its up-projections instead (``mla.COLUMN_PARALLEL``, both of them): the GEMM before
    its norm is a duplicated down-projection, which gathers nothing. ((), ()) where the layer has no such GEMM (a
    norm with no GEMM before it, or no such norm)."""
    backward, weight = layer.get("backward_input", []), layer.get("backward_weight", [])
    out = []
    for norm in BLOCK_NORMS[:linears]:
        end = next((i for i, op in enumerate(backward) if op.name == norm), None)
        before = [] if end is None else [op for op in backward[:end] if op.kind == "gemm"]
        ups = [op for op in before if op.name in mla.COLUMN_PARALLEL] if norm == BLOCK_NORMS[0] else []
        dgrads = ups or before[-1:]
        wgrads = [next((op for op in reversed(weight) if op.kind == "gemm" and op.name == dgrad.name
                        and (op.m, op.n, op.batch) == (dgrad.n, dgrad.k, dgrad.batch)), None) for dgrad in dgrads]
        out.append((tuple(dgrads), tuple(op for op in wgrads if op is not None)))
    return out


def beside_ops(layer: dict[str, list[Op]], linears: int, sequence_parallel: bool) -> list[tuple[str, tuple[Op, ...]]]:
    """(collective, the GEMMs it runs beside) of one layer: per ``BESIDE`` entry, the first ``linears`` blocks'
    column-parallel GEMMs of its phase (``column_gemms``)."""
    gemms = column_gemms(layer, linears)
    return [(op_name, dgrads if phase == "backward_input" else wgrads)
            for op_name, phase in BESIDE[sequence_parallel] for dgrads, wgrads in gemms]


def wire_bytes_per_s(gpu) -> float:
    """The async collectives' wire rate per direction for their HBM contention: NVLink's line rate, an upper bound
    of an NCCL ring's achieved rate (0.82 of it on H100; that measurement lives in the collectives layer, above this
    one), as ``parallel.ep_overlap`` takes it. It enters only the HBM term: the GEMMs beside these collectives are
    compute-bound, so the waves decide."""
    return gpu.nvlink_bandwidth


def slowdown(layer: dict[str, list[Op]], linears: int, sequence_parallel: bool, gpu, precision: str) -> float:
    """How many times longer the GEMMs beside the async collectives run while an NCCL NVLink ring runs (its CTAs,
    ``interference.yaml`` ctas.nvlink; at ``wire_bytes_per_s``): ``interference.slowdown`` of those GEMMs' mix, each
    GEMM's waves of its tile on the SMs the ring leaves over its waves as launched (``kernels.tensor_core_waves``),
    its HBM-bound time at the bandwidth left. One factor for every pair of the layer: the engine charges it over the
    block (``engine.overlap``) and ``exposed_s`` exposes what outlasts it, so the two add up to each pair's time."""
    gemms = [op for _, ops in beside_ops(layer, linears, sequence_parallel) for op in ops]
    share = interference.memory_bound_share(gemms, gpu, precision)
    return interference.slowdown(gpu, interference.comm_kernel("nvlink", wire_bytes_per_s(gpu), gpu), share)


def exposed_s(layer: dict[str, list[Op]], linears: int, sequence_parallel: bool, gpu, precision: str,
              comm_s: dict[str, float]) -> float:
    """Seconds a layer's backward waits on its async collectives beyond the engine's block-level overlap: per pair of
    a collective of c (``comm_s`` per op) beside a GEMM of g at the layer's factor f (``slowdown``, the engine's),
    max(0, c / f - g), which with the interference the engine charges, c (1 - 1/f), makes the pair's time
    max(c, g f) when c > g f, g + c (1 - 1/f) otherwise (``interference.overlapped_s``)."""
    f = slowdown(layer, linears, sequence_parallel, gpu, precision)
    total = 0.0
    for op_name, gemms in beside_ops(layer, linears, sequence_parallel):
        if gemms:
            total += max(0.0, comm_s[op_name] / f - sum(kernels.op_time_s(op, gpu, precision) for op in gemms))
    return total
