"""Time of a kernel on a GPU: a roofline with shape-dependent efficiencies plus the stream's gap before it; time of
a block of kernels issued by the host: the device's time or the host's, whichever is longer.

    kernel time = max(executed FLOP / (peak FLOP/s * flop fraction),
                      HBM bytes / (HBM bandwidth * bandwidth fraction)) + kernel gap
                  + fill waves * compute time / waves        (tensor-core kernels: GEMM, flash attention)
    block time  = max(sum of kernel times, kernels * host dispatch per kernel)

The host (Python, PyTorch's dispatcher, Transformer Engine, cuBLASLt's heuristics) issues kernels asynchronously:
the GPU stream idles only when the host falls behind it (``StreamTime``, ``HostModel``).

The fractions come from ``simcluster/data/efficiency.yaml``, where each one carries its source: the large-GEMM
ceiling is calibrated on a measured 8192^3 bf16 GEMM on H100 (0.81 of peak), copies reach 0.9 of HBM
bandwidth, small or skinny GEMMs lose to tile and wave quantisation (NVIDIA, Matrix Multiplication Background
User's Guide) and to the fixed cost of each output tile, and fused attention follows FlashAttention-2/3
measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from simcluster.core import catalog
from simcluster.core.errors import ScenarioError
from simcluster.spec.hardware import GpuSpec
from simcluster.workload import host_dispatch, power_clock
from simcluster.workload.ops import HIGH_PRECISION, HOST_ONLY_LAUNCH, HOST_SYNC, Op  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class Efficiency:
    """Achievable fractions of a GPU's peaks for one op."""

    flop_fraction: float        # of the dense peak FLOP/s, applied to the executed FLOP
    bandwidth_fraction: float   # of the datasheet HBM bandwidth
    executed_flop_ratio: float = 1.0  # executed / counted FLOP (causal flash attention skips masked tiles)


def _table() -> dict:
    return catalog.load("efficiency")


def gemm_ceiling(precision: str) -> float:
    """Large-GEMM ceiling of the precision's tensor-core peak (efficiency.yaml gemm.ceiling; precisions not
    listed take bf16's)."""
    ceilings = _table()["gemm"]["ceiling"]
    return ceilings.get(precision, ceilings["bf16"])


def k_overhead(precision: str, gpu: GpuSpec | None) -> float:
    """The per-tile prologue/epilogue in reduction elements at ``precision``: a fixed time per output tile, so
    k_overhead (stated for bf16) times the precision's peak over bf16's (twice as many fp8 elements fit in it)."""
    base = _table()["gemm"]["k_overhead"]
    if gpu is None or precision not in gpu.peak or "bf16" not in gpu.peak:
        return base
    return base * gpu.peak_flop_per_s(precision) / gpu.peak_flop_per_s("bf16")


def _best_tile(m: int, n: int, batch: int, gpu_name: str, sms: int = 0) -> tuple[float, int, int]:
    """(relative tile throughput * useful/provisioned MACs, waves, tiles) of the best cuBLAS-like tile for an m x n
    output repeated ``batch`` times (efficiency.yaml gemm.tiles; ties keep the first tile listed). ``m`` may be a
    fractional mean (a grouped GEMM's rows per expert, workload/moe.py): the tiles cover ceil(m / tile_m) row
    blocks, the useful MACs are the mean's, so the tile's time (provisioned MACs over its throughput) depends on
    whole row blocks only and never falls as m grows; nor does the best tile's, a minimum of non-decreasing times.

    ``sms`` (0: all of the GPU's) is the SMs the GEMM is launched on (cuBLASLt's SM-count target, Transformer
    Engine's set_sm_margin): the tiles run in waves of ``sms`` at the same time per tile, so the provisioned MACs
    are waves x the GPU's SMs x the tile (the SMs left out compute nothing of this GEMM)."""
    gpu_sms = sm_count(gpu_name)
    sms = min(sms, gpu_sms) if sms > 0 else gpu_sms
    best, best_waves, best_tiles = 0.0, 1, 1
    for tile_m, tile_n, relative in _table()["gemm"]["tiles"]:
        tiles = batch * math.ceil(m / tile_m) * math.ceil(n / tile_n)
        waves = math.ceil(tiles / sms)
        useful = batch * m * n / (waves * gpu_sms * tile_m * tile_n)
        score = relative * useful
        if score > best:
            best, best_waves, best_tiles = score, waves, tiles
    return best, best_waves, best_tiles


def gemm_efficiency(m: int, n: int, k: int, gpu_name: str, batch: int = 1, precision: str = "bf16",
                    gpu: GpuSpec | None = None, sms: int = 0) -> float:
    """Achievable fraction of the precision's peak of a (m x k)(k x n) GEMM repeated ``batch`` times, from
    efficiency.yaml, launched on ``sms`` SMs (0: all; ``_best_tile``).

    ceiling(precision) * best over cuBLAS-like tiles of [relative tile throughput * useful/provisioned MACs]
    * k/(k + k0) models tile and wave quantisation (NVIDIA Matrix Multiplication Background User's Guide,
    sections 3.1 and 3.2) and a fixed per-tile prologue/epilogue equivalent to k0 reduction elements
    (``k_overhead``).
    """
    ceiling = gemm_ceiling(precision)
    if min(m, n, k, batch) <= 0:
        return ceiling
    best = _best_tile(m, n, batch, gpu_name, sms)[0]
    depth = k / (k + k_overhead(precision, gpu))
    return ceiling * best * depth


def spread_gemm_efficiency(op: Op, gpu: GpuSpec, precision: str) -> float:
    """``gemm_efficiency`` of a GEMM op whose rows spread over ``op.row_nodes`` (equally weighted multiples r_i of
    m; workload/moe.py ``step_load_nodes``): the fraction that gives its FLOP (at m) the MEAN time over the nodes,
    1 / mean_i(r_i / f(r_i m)), since each node's time is its FLOP, r_i times m's, over f(r_i m) of peak. The time
    is a step function of the rows (whole row blocks and waves), so this mean is not the time at the mean rows
    (Jensen). One node (1.0,): ``gemm_efficiency`` at m."""
    def fraction(rows: float) -> float:
        return gemm_efficiency(rows, op.n, op.k, gpu.name, op.batch, precision, gpu, op.sms)

    if op.row_nodes == (1.0,):
        return fraction(op.m)
    return len(op.row_nodes) / sum(r / fraction(r * op.m) for r in op.row_nodes)


def gemm_waves(op: Op, gpu_name: str) -> int:
    """Waves of output tiles of a GEMM kernel over the SMs it is launched on (``op.sms``), for the tile
    ``gemm_efficiency`` picks (1 for other kernels)."""
    if op.kind != "gemm" or min(op.m, op.n, op.k, op.batch) <= 0:
        return 1
    return _best_tile(op.m, op.n, op.batch, gpu_name, op.sms)[1]


def gemm_tiles(op: Op, gpu_name: str) -> int:
    """Output tiles of a GEMM kernel for the tile ``gemm_efficiency`` picks on the SMs it is launched on (``op.sms``;
    0 for other kernels)."""
    if op.kind != "gemm" or min(op.m, op.n, op.k, op.batch) <= 0:
        return 0
    return _best_tile(op.m, op.n, op.batch, gpu_name, op.sms)[2]


def tensor_core_waves(op: Op, gpu_name: str, free_sms: int) -> tuple[int, int] | None:
    """(waves as launched, waves on ``free_sms``) of a tensor-core kernel whose SMs other kernels hold part of while
    it runs: the tile the library picked for the SMs it was launched on (``op.sms``, ``_best_tile``) or a flash
    attention kernel's row blocks (``attention_waves``), run in waves of the SMs left (``free_sms``, at most those
    it was launched on). None for other kernels (CUDA-core, unfused attention's, empty GEMMs)."""
    gpu_sms = sm_count(gpu_name)
    launched = min(op.sms, gpu_sms) if op.sms > 0 else gpu_sms
    free = max(1, min(free_sms, launched))
    if op.kind == "gemm" and min(op.m, op.n, op.k, op.batch) > 0:
        tiles = _best_tile(op.m, op.n, op.batch, gpu_name, op.sms)[2]
    elif op.kind == "attention" and op.kernel != "naive" and op.batch > 0 and op.m > 0:
        tiles = _attention_blocks(op)
    else:
        return None
    return math.ceil(tiles / launched), math.ceil(tiles / free)


def split_accumulator_slowdown(gpu_name: str) -> float:
    """Time of an fp8 GEMM with the split accumulator over the same GEMM with fast accumulation (efficiency.yaml
    gemm.split_accumulator_slowdown; GPUs not listed: 1, no fast-accumulation mode to lose)."""
    table = _table()["gemm"]["split_accumulator_slowdown"]
    return table.get(gpu_name, table["default"])


def block_scaled(gpu_name: str, key: str) -> float:
    """MXFP8's measured costs on ``gpu_name`` (efficiency.yaml gemm.``key``): ``block_scaled_slowdown``, a block-scaled
    GEMM's time over the per-tensor fp8 GEMM's, or ``mxfp8_quantize_bandwidth_fraction``, its quantize kernel's HBM
    fraction."""
    table = _table()["gemm"][key]
    return table.get(gpu_name, table["default"])


def hbm_fraction(gpu_name: str | None = None) -> float:
    """Achievable fraction of the datasheet HBM bandwidth of HBM-bound kernels on ``gpu_name`` (efficiency.yaml,
    bandwidth_fraction, measured per GPU where a GPU's memory differs; GPUs not listed and None take ``default``)."""
    table = _table()["bandwidth_fraction"]
    return table.get(gpu_name, table["default"])


def naive_attention_hbm_fraction() -> float:
    """Achievable fraction of the datasheet HBM bandwidth of unfused attention's kernels (batched score GEMMs,
    softmax, dropout), as measured on A100 (efficiency.yaml attention.naive)."""
    return _table()["attention"]["naive"]["bandwidth_fraction"]


def sm_count(gpu_name: str) -> int:
    """Streaming multiprocessors of a GPU (efficiency.yaml, gemm.sms; GPUs not listed take ``default``)."""
    table = _table()["gemm"]["sms"]
    return table.get(gpu_name, table["default"])


# Head dimension the fused attention curves were measured at (efficiency.yaml attention: FlashAttention-3 and cuDNN
# on H100, cuDNN on GB300, FlashAttention-2 on A100: head dim 128).
REFERENCE_HEAD_DIM = 128


def attention_efficiency(op: Op, gpu_name: str) -> tuple[float, float]:
    """(achievable fraction of peak on executed FLOP, executed/counted FLOP) of a fused attention kernel.

    A saturating function of the key/value length n (under context parallelism a step kernel's,
    ``ring_key_length``), per kernel implementation (``op.kernel``): FlashAttention-2/3 fitted to FlashAttention-3
    measurements on H100 (efficiency.yaml, attention.source), FlashAttention-2 as PyTorch SDPA runs it
    (attention.flash2), Triton FlashAttention from its own sources (attention.flash_triton);
    the backward kernel is the one named ``*_backward``. A kernel without its own ``executed_fraction`` skips
    causal tiles as the flash kernel does; ``kv_tokens_half`` is one length or one per direction. Times the share
    the kernel keeps for its exponentials at this GPU and head dim (``exponential_share``).
    """
    flash = _table()["attention"]
    table = flash if op.kernel == "flash" else flash[op.kernel]
    curve_key = gpu_name if gpu_name in table else "default"
    curve = table[curve_key]
    direction = "backward" if op.name.endswith("backward") else "forward"
    peak_fraction = curve[f"{direction}_max"]
    half = curve["kv_tokens_half"]
    half = half[direction] if isinstance(half, dict) else half
    n = ring_key_length(op)
    saturation = n / (n + half) if n > 0 else 1.0
    executed_fractions = table.get("executed_fraction", flash["executed_fraction"])
    executed = executed_fractions[direction] * head_dim_tile_ratio(op, gpu_name)
    share = exponential_share(op, gpu_name, executed_fractions, curve_key)
    return peak_fraction * saturation * share * causal_share(op, gpu_name, half), executed


def causal_share(op: Op, gpu_name: str, kv_tokens_half: float) -> float:
    """Share of the unmasked curve's speed per executed FLOP that cuDNN's causal kernel keeps on Hopper
    (efficiency.yaml attention.causal_loss; the flash kernel on the GPUs listed, else 1): 1 / (1 + constant +
    diagonal_keys / n) at key length n. Under context parallelism only the ring's first step is causal (c = s/cp
    keys; ``ring_key_length``): the slowest rank's steps take (1 + h/c) / share(c) + (cp - 1)(1 + 2h/c) against
    (1 + h/c) + (cp - 1)(1 + 2h/c) for unmasked steps (h: the curve's ``kv_tokens_half``), so the one kernel
    keeps their ratio; at cp 1 that is share(s). The kernel is the 2024 release's, or the newest later measured
    release (``releases``) at or before the op's ``cudnn_release``, the run's container's cuDNN."""
    table = _table()["attention"].get("causal_loss")
    if op.kernel != "flash" or table is None or gpu_name not in table["gpus"] or op.n <= 0:
        return 1.0
    loss = causal_kernel(table, op.cudnn_release)["backward" if op.name.endswith("backward") else "forward"]
    chunk = op.n / op.ring_steps
    share = 1.0 / (1.0 + loss["constant"] + loss["diagonal_keys"] / chunk)
    first = 1.0 + kv_tokens_half / chunk
    rest = (op.ring_steps - 1) * (1.0 + 2.0 * kv_tokens_half / chunk)
    return (first + rest) / (first / share + rest)


def _cudnn_version(release: str) -> tuple[int, ...]:
    return tuple(int(part) for part in release.split("."))


def causal_kernel(table: dict, cudnn_release: str | None) -> dict:
    """The causal loss (``{forward, backward}``) of the cuDNN a run's container shipped: the newest measured release
    in ``table["releases"]`` at or before ``cudnn_release``, else (an earlier or unknown release) the 2024 kernel,
    ``table`` itself (efficiency.yaml attention.causal_loss)."""
    if cudnn_release is None:
        return table
    measured = [release for release in table.get("releases", {})
                if _cudnn_version(release) <= _cudnn_version(cudnn_release)]
    return table["releases"][max(measured, key=_cudnn_version)] if measured else table


def ring_key_length(op: Op) -> float:
    """Key/value length a fused attention kernel's saturation sees: ``op.n``, or under context parallelism (``op.
    ring_steps`` = cp > 1) the key length of one kernel with the time of the ring's cp step kernels.

    Transformer Engine's p2p loop (``AttnFuncWithCP`` / ``AttnFuncWithCPAndKVP2P``, transformer_engine/pytorch/
    attention.py in TE 1.x, attention/dot_product_attention/context_parallel.py in 2.x; docs/calibration/rounds-1-9.md
    "Round 8", "Round 27: attention and context parallelism at long sequences") cuts the sequence s into 2 cp chunks
    under causal load balancing (rank r holds chunks r and 2cp-1-r, c = s/cp tokens) and runs one kernel a step, each
    executing the same work: step 0 causal over the rank's own c keys, step i > 0 non-causal with c queries over the
    received block's first c/2 keys (i <= r) or c/2 queries over its c keys (i > r); the backward runs each rank's
    kernels in reverse order. Rank cp-1 runs the c/2-key kernel at every later step and the ring couples neighbours,
    so it sets the pace: with saturation n / (n + h) its steps take the executed work times (1 + h/c) + (cp-1)(1 +
    2h/c) = cp (1 + h (2cp-1)/s) over cp: one kernel on s / (2cp - 1) keys (s for cp 1)."""
    return op.n / (2 * op.ring_steps - 1)


def head_dim_tile_ratio(op: Op, gpu_name: str) -> float:
    """Executed over counted FLOP of a FlashAttention-2 kernel from its head-dim tile: the kernel compiled for the
    smallest tile >= the head dim ``op.k`` computes the whole tile (efficiency.yaml attention.flash2_head_dim_tiles:
    attention.flash2 on every GPU, the flash kernel on the GPUs where it is FlashAttention-2); 1 for other kernels,
    head dims that are a tile, and head dims past the largest tile."""
    tiles = _table()["attention"]["flash2_head_dim_tiles"]
    fa2 = op.kernel == "flash2" or (op.kernel == "flash" and gpu_name in tiles["flash_gpus"])
    if not fa2 or op.k <= 0:
        return 1.0
    tile = next((size for size in tiles["sizes"] if size >= op.k), op.k)
    return tile / op.k


def exponential_demand(op: Op, gpu_name: str, executed_fractions: dict[str, float],
                       head_dim: int | None = None) -> float | None:
    """Time of a fused attention kernel's exponentials over the time of its matmuls, each at its unit's peak rate
    on one SM (efficiency.yaml attention.exponential): one exp2 per executed score element in both directions (the
    backward recomputes the probabilities) beside 4 d matmul FLOP forward (Q K^T and P V, head dim d = ``op.k``
    unless ``head_dim`` is given) and 2 x (backward / forward executed fraction) times that backward (10 d: five
    matmuls). MLA's narrower values (192-wide queries and keys, 128-wide values) are counted as wide as the keys.
    None where the GPU's unit rates are not listed."""
    rates = _table()["attention"]["exponential"]["rates"].get(gpu_name)
    d = op.k if head_dim is None else head_dim
    if rates is None or d <= 0:
        return None
    flop_per_exp = 4.0 * d
    if op.name.endswith("backward"):
        flop_per_exp *= 2.0 * executed_fractions["backward"] / executed_fractions["forward"]
    return rates["tensor_flop_per_clock"] / rates["exp2_per_clock"] / flop_per_exp


def exponential_share(op: Op, gpu_name: str, executed_fractions: dict[str, float], curve_key: str = "default") -> float:
    """Share of its curve's speed a fused attention kernel keeps for its exponentials: the kernel takes matmul time
    + unhidden x exponential time (the exponentials and the per-element softmax work beside them overlap the
    matmuls only in part; efficiency.yaml attention.exponential), and its curve was measured at head dim 128 on
    the curve's reference GPU, so the share is (1 + c x demand there) / (1 + c x demand here), at most 1 (a wider
    head than the curve's is not credited). 1 where the GPU has no unhidden share or unit rates listed."""
    table = _table()["attention"]["exponential"]
    unhidden = table["unhidden"].get(gpu_name)
    reference = table["curve_reference"].get(curve_key, gpu_name if curve_key == gpu_name else None)
    demand = exponential_demand(op, gpu_name, executed_fractions)
    if unhidden is None or reference is None or demand is None:
        return 1.0
    reference_demand = exponential_demand(op, reference, executed_fractions, REFERENCE_HEAD_DIM)
    if reference_demand is None:
        return 1.0
    return min(1.0, (1.0 + unhidden * reference_demand) / (1.0 + unhidden * demand))


def op_precision(op: Op, precision: str) -> str:
    """The precision ``op`` runs in: its own where set (fp8 runs' output layer), the run's for GEMMs, and 16-bit
    for attention and elementwise kernels in fp8 training (Transformer Engine's default recipe)."""
    return op.precision or (precision if op.kind == "gemm" else HIGH_PRECISION.get(precision, precision))


def efficiency(op: Op, gpu: GpuSpec, precision: str = "bf16") -> Efficiency:
    """Achievable fractions of peak FLOP/s and HBM bandwidth for ``op`` on ``gpu`` in a run of ``precision``
    (data: efficiency.yaml)."""
    bandwidth_fraction = naive_attention_hbm_fraction() if op.kernel == "naive" else hbm_fraction(gpu.name)
    if op.kind == "gemm":
        fraction = spread_gemm_efficiency(op, gpu, op_precision(op, precision))
        if op.split_accumulator:
            fraction /= split_accumulator_slowdown(gpu.name)
        if op.block_scaled:
            fraction /= block_scaled(gpu.name, "block_scaled_slowdown")
        return Efficiency(fraction, bandwidth_fraction)
    if op.kind == "attention":
        fraction, executed = attention_efficiency(op, gpu.name)
        return Efficiency(fraction, bandwidth_fraction, executed)
    assert op.kind == "memory", op.kind
    if op.block_scaled:
        bandwidth_fraction = block_scaled(gpu.name, "mxfp8_quantize_bandwidth_fraction")
    # Elementwise kernels run on the CUDA cores, far above what their bytes allow: bandwidth-bound everywhere.
    return Efficiency(gemm_ceiling("bf16"), bandwidth_fraction)


TENSOR_CORE_KINDS = ("gemm", "attention")


def clock_ratio(gpu_name: str) -> float:
    """Sustained tensor-core clock in training over the clock of the short benchmarks the ceilings were measured
    at: the power cap's share (efficiency.yaml clock_ratio, sourced per GPU; GPUs not listed take ``default``)."""
    table = _table()["clock_ratio"]
    return table.get(gpu_name, table["default"])


def ceiling_ratio(gpu_name: str) -> float:
    """Tensor-core throughput of a GPU in a short benchmark relative to the Hopper-derived GEMM model, at the same
    clock (efficiency.yaml ceiling_ratio: measured GEMM maxima over the model; the power-capped clock is
    ``clock_ratio``'s)."""
    table = _table()["ceiling_ratio"]
    return table.get(gpu_name, table["default"])


def launch_overhead_s() -> float:
    """Per-kernel launch cost of a short benchmark, kernels queued back to back (efficiency.yaml)."""
    return _table()["launch_overhead_s"]


@dataclass(frozen=True)
class HostModel:
    """The host side of training and the per-kernel time beyond the roofline, per kernel class (efficiency.yaml
    host_overhead, each value with its meaning and source).

    ``kernel_gap_s``: every kernel, the idle of the stream between a kernel and the next one already queued (the
    launch latency of a queued kernel; measured in Kineto traces) in the "fill" structure, or a fitted gap that also
    stands for what the roofline misses per kernel in the "gap" structure (efficiency.yaml host_overhead_source).
    ``fill_waves``: tensor-core kernels only (GEMM, flash attention), the time per kernel beyond the wave-quantised
    roofline in training, in waves of that kernel (``wave_s``: the fill and drain of its tile pipeline, operands
    cold in L2; fitted; 0 in the "gap" structure). ``dispatch_s``: host CPU
    time to issue one kernel in training (measured). ``pipeline_step_s``: host time per pipeline step (one model
    chunk, one microbatch, one phase) during which the stream has drained and waits (fitted; only when pp > 1).
    ``gap_per``: "kernel" (in use), ``kernel_gap_s`` before every kernel; "call" (round 29, a structure study), before
    every kernel issued from Python, and the measured queued-launch latency (``launch_overhead_s``) before a kernel
    the C++ of one call queues behind the one before it (``Op.queued``, workload.call_issue). Under both, a queued
    launch with no work of its own (``Op.no_work``: MXFP8's scale swizzles, current scaling's one-element kernels)
    pays ``launch_overhead_s`` (round 32: no Python before it for the host to fall behind in, and no roofline for the
    fitted gap's per-kernel remainder to correct; on the host it costs a dispatch like every launch), and one whose
    stream time is inside a measured call time (``Op.in_measured_call``: MXFP8's swizzles) pays no gap (round-32
    review).
    ``cuda_graphs`` (round 30, off by default): a scenario's graphed kernels (``graphed``) pay ``graph_node_s``, the
    measured launch latency of a kernel node after the one before it inside a replayed CUDA graph, instead of the
    stream's gap, and no host dispatch; off, ``graphed`` leaves every block as it is.
    """

    kernel_gap_s: float
    dispatch_s: float
    pipeline_step_s: float
    fill_waves: float = 0.0
    gap_per: str = "kernel"
    cuda_graphs: bool = False
    graph_node_s: float = 0.0

    @property
    def queued_gap_s(self) -> float:
        """The gap before a kernel queued by the C++ of the call before it: the fitted gap per kernel, or the
        measured queued-launch latency per call (``gap_per``)."""
        return launch_overhead_s() if self.gap_per == "call" else self.kernel_gap_s

    def gap_s(self, op: Op) -> float:
        """The stream's gap before ``op`` (``gap_per``; a queued launch with no work, ``launch_overhead_s``; none
        before a host-side mark, ``HOST_ONLY_LAUNCH`` or ``HOST_SYNC``: no kernel on this stream, as ``stream_time``
        counts them)."""
        if op.name in (HOST_ONLY_LAUNCH, HOST_SYNC):
            return 0.0
        if op.queued and op.no_work:
            return 0.0 if op.in_measured_call else launch_overhead_s()
        return self.queued_gap_s if op.queued else self.kernel_gap_s


def host_model() -> HostModel:
    """The host model of efficiency.yaml host_overhead."""
    table = _table()["host_overhead"]
    gap_per = table.get("gap_per", "kernel")
    if gap_per not in GAP_PER:  # was an assert: a traceback, or nothing under python -O
        raise ScenarioError("efficiency.yaml host_overhead.gap_per", f"{gap_per!r} is not one of {', '.join(GAP_PER)}")
    graphs = table.get("cuda_graphs", False)
    if not isinstance(graphs, bool):  # bool('false') is True: the switch must be YAML's true or false (round 31)
        raise ScenarioError("efficiency.yaml host_overhead.cuda_graphs", f"{graphs!r} is not true or false")
    return HostModel(table["kernel_gap_s"], table["dispatch_s"], table["pipeline_step_s"], table["fill_waves"],
                     gap_per, graphs, table.get("graph_node_s", 0.0))


GAP_PER = ("kernel", "call")   # efficiency.yaml host_overhead gap_per (HostModel)


def pipeline_step_overhead_s() -> float:
    """Host time per pipeline step (one model chunk, one microbatch, one phase) during which the GPU idles
    (efficiency.yaml host_overhead.pipeline_step_s; fitted)."""
    return host_model().pipeline_step_s


@dataclass(frozen=True)
class StreamTime:
    """Kernels the host issues to one stream in one go: their device time and how many they are.

    The host dispatches kernels ahead of the GPU (CUDA launches are asynchronous), so the block ends when the
    slower of the two sides ends: the device, each kernel taking its roofline time plus the gap before it
    (``HostModel.kernel_gap_s``), or the host, each kernel taking ``dispatch_s`` of CPU time (``elapsed_s``).
    Blocks add up (``+``) and repeat (``count * block``) before the max is taken: the host runs ahead across the
    layers of a block.
    Simplification: the max is taken per block, as if the stream were empty at its start and end (exact at a
    pipeline step, where the stream drains; a block whose predecessor was device-bound may in reality start with
    queued kernels, and the last kernel's own time after a host-bound dispatch is left out).
    """

    device_s: float = 0.0   # roofline time of the kernels, without the gaps between them
    kernels: float = 0.0    # kernels launched (a float so that a block can be scaled by a layer count)
    wave_s: float = 0.0     # the tensor-core kernels' time per wave (``wave_s``), summed: one wave of each
    tensor_core_kernels: float = 0.0   # of the kernels, GEMM and attention ones (TENSOR_CORE_KINDS)
    # Host-side terms (``stream_time``): host CPU time beyond ``kernels * dispatch_s`` (launches on other streams,
    # a slower host CPU), and the stream's idle after host syncs (``synced_stall_s``), at the host model of the time
    host_extra_s: float = 0.0
    stall_s: float = 0.0
    # of ``device_s``, the compute-bound kernels' roofline time (``clock_s``): what the SM clock sets, and so what a
    # GPU's speed spread slows (engine.variability); HBM-bound kernels, gaps, stalls and host time it does not
    clock_s: float = 0.0
    # of ``kernels``, those the C++ of a call queues behind the kernel before it (``Op.queued``, workload.call_issue):
    # their gap is ``HostModel.queued_gap_s``
    queued_kernels: float = 0.0
    # of ``kernels``, those replayed from a CUDA graph (``graphed``): their gap is ``HostModel.graph_node_s``, no
    # dispatch; counted apart from ``queued_kernels``
    graphed_kernels: float = 0.0
    # of ``queued_kernels``, those with no work of their own (``Op.no_work``): their gap is ``launch_overhead_s``
    no_work_kernels: float = 0.0
    # of ``no_work_kernels``, those inside a measured call time (``Op.in_measured_call``): no gap
    measured_kernels: float = 0.0

    def __add__(self, other: StreamTime) -> StreamTime:
        return StreamTime(self.device_s + other.device_s, self.kernels + other.kernels,
                          self.wave_s + other.wave_s, self.tensor_core_kernels + other.tensor_core_kernels,
                          self.host_extra_s + other.host_extra_s, self.stall_s + other.stall_s,
                          self.clock_s + other.clock_s, self.queued_kernels + other.queued_kernels,
                          self.graphed_kernels + other.graphed_kernels, self.no_work_kernels + other.no_work_kernels,
                          self.measured_kernels + other.measured_kernels)

    def __rmul__(self, count: float) -> StreamTime:
        return StreamTime(count * self.device_s, count * self.kernels, count * self.wave_s,
                          count * self.tensor_core_kernels, count * self.host_extra_s, count * self.stall_s,
                          count * self.clock_s, count * self.queued_kernels, count * self.graphed_kernels,
                          count * self.no_work_kernels, count * self.measured_kernels)

    def clock_bound_s(self, host: HostModel | None = None) -> float:
        """Of ``elapsed_s``, the time a GPU's SM clock sets: the compute-bound kernels' (``clock_s``) when the
        device side binds, 0 when the host's dispatch does (a slower clock then hides under the host's lead; first
        order in the clock's change: exact while the change stays within the lead, ``host_bound_s`` -
        ``device_bound_s``, and a device-bound block's share is kept for a faster clock that would make it
        host-bound)."""
        host = host or host_model()
        return self.clock_s if self.device_bound_s(host) >= self.host_bound_s(host) else 0.0

    def device_bound_s(self, host: HostModel | None = None) -> float:
        """The device's side: every kernel's roofline time plus the gap before it (``HostModel.gap_per``), each
        tensor-core kernel's fill (``HostModel.fill_waves`` of its waves), and the idle after host syncs
        (``stall_s``)."""
        host = host or host_model()
        return self.device_s + self.gaps_s(host) + host.fill_waves * self.wave_s + self.stall_s

    def gaps_s(self, host: HostModel | None = None) -> float:
        """Of ``device_bound_s``, the gaps before the kernels: ``kernel_gap_s`` before a kernel issued from Python,
        ``HostModel.queued_gap_s`` before a queued one, ``launch_overhead_s`` before a queued one with no work (none
        before one inside a measured call time), ``graph_node_s`` before a graphed one."""
        host = host or host_model()
        eager = self.kernels - self.queued_kernels - self.graphed_kernels
        return (eager * host.kernel_gap_s + (self.queued_kernels - self.no_work_kernels) * host.queued_gap_s
                + (self.no_work_kernels - self.measured_kernels) * launch_overhead_s()
                + self.graphed_kernels * host.graph_node_s)

    def host_bound_s(self, host: HostModel | None = None) -> float:
        """The host's side: every eager launch's dispatch, one after another on one CPU thread (a graph's kernels
        none: its one launch per replay is not counted)."""
        host = host or host_model()
        return (self.kernels - self.graphed_kernels) * host.dispatch_s + self.host_extra_s

    def elapsed_s(self, host: HostModel | None = None) -> float:
        """Time of the block on its stream: the slower side."""
        host = host or host_model()
        return max(self.device_bound_s(host), self.host_bound_s(host))


def graphed(stream: StreamTime, host: HostModel | None = None) -> StreamTime:
    """``stream`` replayed from a CUDA graph, with ``HostModel.cuda_graphs`` on: every kernel graphed (its gap
    ``graph_node_s``, no dispatch), none queued by the host, no host time beyond dispatch (the Python, module calls
    and other-stream launches ran once, at capture). Device-side stalls (``stall_s``) are kept: a graph holds no host
    sync, so a stream with host syncs in it cannot be captured (the scopes read here hold none). Off: ``stream``."""
    host = host or host_model()
    if not host.cuda_graphs:
        return stream
    return replace(stream, queued_kernels=0.0, no_work_kernels=0.0, measured_kernels=0.0,
                   graphed_kernels=stream.kernels, host_extra_s=0.0)




def host_cpu_ratio(gpu_name: str) -> float:
    """Host CPU time per launch on the host CPU a GPU comes with, over the measured x86 one's
    (efficiency.yaml host_overhead.cpu_ratio; GPUs not listed: 1)."""
    table = _table()["host_overhead"].get("cpu_ratio", {})
    return table.get(gpu_name, table.get("default", 1.0))


def stream_time(ops: list[Op], gpu: GpuSpec, precision: str, te_phase: str | None = None,
                clock_pool: tuple[float, ...] | None = None) -> StreamTime:
    """The kernels ``ops`` issued back to back in training: their device time (sustained clock), count, the
    tensor-core kernels' time per wave (``wave_s``), and the tensor-core kernels' count; the host's side at the
    host CPU of ``gpu`` (``host_cpu_ratio``), ``HOST_ONLY_LAUNCH`` ops counted as launches only, and after each
    ``HOST_SYNC`` the stream's idle while the host issues the kernels up to the next sync (``synced_stall_s``).
    ``te_phase``: ``ops`` are that phase of a Transformer Engine layer, whose module calls cost the host more than
    their kernels' dispatch (``host_dispatch.module_host_s``); None: plain PyTorch ops, the dispatch alone.
    ``clock_pool``: under the duty-cycle clock, the balance terms per second of the blocks this one alternates with
    (``duty_cycle_rooflines``)."""
    rooflines = [roofline_s(op, gpu, precision) for op in ops]
    if power_clock.clock_model() == "duty_cycle":
        rooflines = duty_cycle_rooflines(ops, rooflines, gpu.name, precision, clock_pool)
    waves = [wave_s(op, compute_s, gpu.name) for op, (compute_s, _) in zip(ops, rooflines, strict=True)]
    host_only = sum(op.name == HOST_ONLY_LAUNCH for op in ops)
    syncs = sum(op.name == HOST_SYNC for op in ops)
    kernels = len(ops) - host_only - syncs
    host = host_model()
    ratio = host_cpu_ratio(gpu.name)
    modules = host_dispatch.module_host_s(ops, te_phase, precision, ratio) if te_phase else None
    extra = host.dispatch_s * (ratio * (kernels + host_only) - kernels) + (sum(modules) if modules else 0.0)
    stall = synced_stall_s(ops, [max(pair) for pair in rooflines], waves, host, host.dispatch_s * ratio, modules)
    return StreamTime(sum(max(pair) for pair in rooflines), kernels, sum(waves),
                      sum(op.kind in TENSOR_CORE_KINDS for op in ops), extra, stall,
                      sum(compute_s for compute_s, memory_s in rooflines if clock_bound(compute_s, memory_s)),
                      sum(op.queued for op in ops if op.name not in (HOST_ONLY_LAUNCH, HOST_SYNC)),
                      no_work_kernels=sum(op.queued and op.no_work for op in ops
                                          if op.name not in (HOST_ONLY_LAUNCH, HOST_SYNC)),
                      measured_kernels=sum(op.queued and op.no_work and op.in_measured_call for op in ops
                                           if op.name not in (HOST_ONLY_LAUNCH, HOST_SYNC)))


def clock_bound(compute_s: float, memory_s: float) -> bool:
    """A kernel whose roofline binds on its FLOP (``roofline_s``: compute time >= HBM time, some FLOP), whatever
    its kind: its whole time scales with the SM clock (tensor cores and CUDA cores alike); an HBM-bound kernel's
    does not (the memory clock is fixed). A kernel near the ridge counts by the side that binds at the sustained
    clock: one just below it that a slower clock would turn compute-bound is missed by at most the clock's change
    times its compute time (2.2% of it for the slowest of 8 GPUs at gpu_speed_cv 0.015, 5% for the slowest of 1,000)."""
    return compute_s > 0.0 and compute_s >= memory_s


def duty_terms(ops: list[Op], rooflines: list[tuple[float, float]], gpu_name: str,
               precision: str) -> tuple[float, float, float, float]:
    """A block's power balance terms (``power_clock``): tensor-core-bound time at ``clock_ratio``, other kernels'
    time, gaps, and the tensor-core time weighted by its precision's ``power_clock.tensor_power``."""
    tensor = [op.kind in TENSOR_CORE_KINDS and pair[0] >= pair[1] for op, pair in zip(ops, rooflines, strict=True)]
    tensor_s = sum(pair[0] for pair, bound in zip(rooflines, tensor, strict=True) if bound)
    powered_s = sum(pair[0] * power_clock.tensor_power(gpu_name, op_precision(op, precision))
                    for op, pair, bound in zip(ops, rooflines, tensor, strict=True) if bound)
    other_s = sum(max(pair) for pair, bound in zip(rooflines, tensor, strict=True) if not bound)
    host = host_model()
    idle_s = sum(host.gap_s(op) for op in ops if op.name not in (HOST_ONLY_LAUNCH, HOST_SYNC))
    return tensor_s, other_s, idle_s, powered_s


def duty_cycle_rooflines(ops: list[Op], rooflines: list[tuple[float, float]], gpu_name: str, precision: str = "bf16",
                         pool: tuple[float, ...] | None = None) -> list[tuple[float, float]]:
    """``rooflines`` (at ``clock_ratio``) with the tensor-core kernels' compute time at the clock the power cap
    allows this block by its duty cycle (``power_clock``, efficiency.yaml clock_model ``duty_cycle``): their
    compute-bound time draws their precision's tensor-core power, the other kernels' time ``low_power_share`` of
    it, the gaps none, and collectives beside the block ``comm_power_share`` over a ``comm_beside_compute`` share of
    the time. ``pool``: the terms per second of the blocks this one alternates with (``power_clock.pooled_terms``).
    One pass: a kernel the higher clock turns HBM-bound still counts as tensor-core time."""
    terms = duty_terms(ops, rooflines, gpu_name, precision)
    duration = sum(terms[:3])
    if pool is not None and duration > 0.0:
        terms = power_clock.pooled_terms(tuple(t / duration for t in terms), pool, duration,
                                         power_clock.controller_window_s())
    tensor_s, other_s, idle_s, powered_s = terms
    comm = power_clock.comm_power_share() * power_clock.comm_beside_compute()
    r = power_clock.clock_multiplier(tensor_s, other_s, idle_s, clock_ratio(gpu_name), power_clock.low_power_share(),
                                     powered_s / tensor_s if tensor_s > 0.0 else 1.0, comm)
    return [(compute_s / r, memory_s) if op.kind in TENSOR_CORE_KINDS else (compute_s, memory_s)
            for op, (compute_s, memory_s) in zip(ops, rooflines, strict=True)]


def synced_stall_s(ops: list[Op], times_s: list[float], waves_s: list[float], host: HostModel,
                   dispatch_s: float, module_s: list[float] | None = None) -> float:
    """The stream's idle after host syncs: a ``HOST_SYNC`` drains the stream, so after it the host has no lead and
    the segment up to the next sync (or the end of ``ops``) is a race, kernel by kernel in order: each launch costs
    the host ``dispatch_s`` (``HOST_ONLY_LAUNCH`` ops too) plus its module call's excess (``module_s``, per op), and a
    kernel starts when it has been launched and the stream is free, then takes its gap, time and fill. The segment
    ends when its last kernel ends or the host has issued its last launch, whichever is later; the idle is that
    over the segment's device time (gaps and fill included). Exact for the order of ``ops``, from an empty stream at
    the sync; the sync's own round trip is not counted."""
    stall, host_s, stream_s, device, synced = 0.0, 0.0, 0.0, 0.0, False
    module_s = module_s or [0.0] * len(ops)
    for op, time_s, wave, module in zip(ops, times_s, waves_s, module_s, strict=True):
        if op.name == HOST_SYNC:
            if synced:
                stall += max(host_s, stream_s) - device
            synced, host_s, stream_s, device = True, 0.0, 0.0, 0.0
            continue
        if not synced:
            continue
        host_s += dispatch_s + module
        if op.name == HOST_ONLY_LAUNCH:
            continue
        busy = host.gap_s(op) + time_s + host.fill_waves * wave
        stream_s = max(stream_s, host_s) + busy
        device += busy
    if synced:
        stall += max(host_s, stream_s) - device
    return stall


# Rows of the query block (forward) or key block (backward) one thread block of a fused flash attention kernel
# owns: 128 (Dao-AILab/flash-attention, flash_attn/cute/flash_fwd.py, the FlashAttention-3 Hopper kernel
# re-implemented: m_block_size = n_block_size = 128 by default; FlashAttention-2, Dao 2023: the forward is
# parallel over query blocks, the backward over key blocks), one block per SM at a time (assumption for the waves).
FLASH_BLOCK_ROWS = 128


def attention_waves(op: Op, gpu_name: str) -> int:
    """Waves of thread blocks of a fused flash attention kernel over the SMs: (batch x heads) x row blocks of the
    queries forward, of the keys backward (``FLASH_BLOCK_ROWS``)."""
    return max(1, math.ceil(_attention_blocks(op) / sm_count(gpu_name)))


def _attention_blocks(op: Op) -> int:
    """Thread blocks of a fused flash attention kernel: (batch x heads) x row blocks of the queries forward, of the
    keys backward (``FLASH_BLOCK_ROWS``)."""
    rows = op.n if op.name.endswith("backward") else op.m
    return op.batch * math.ceil(rows / FLASH_BLOCK_ROWS)


def wave_s(op: Op, compute_s: float, gpu_name: str) -> float:
    """One wave of a tensor-core kernel whose tiles compute for ``compute_s`` in all: that over its waves (a GEMM's
    for the tile ``gemm_efficiency`` picks, a flash attention kernel's over its row blocks); 0 for other kernels
    (memory-bound, unfused attention's). The fill is tile time, so an HBM-bound GEMM (a matrix-vector product) pays
    it on its short compute time, not on its bytes."""
    if op.kind == "gemm":
        return compute_s / gemm_waves(op, gpu_name)
    if op.kind == "attention" and op.kernel != "naive" and op.batch > 0 and op.m > 0:
        return compute_s / attention_waves(op, gpu_name)
    return 0.0


def op_time_s(op: Op, gpu: GpuSpec, precision: str, sustained: bool = True) -> float:
    """Time of one kernel on the GPU when the host keeps ahead of it: max(compute time, HBM time) plus the gap
    before it.

    ``sustained`` (training): tensor-core throughput at the clock the power cap allows (``clock_ratio``), the
    stream's gap before a kernel in training (``HostModel.kernel_gap_s``) and a tensor-core kernel's fill
    (``HostModel.fill_waves``); False gives the kernel in a short benchmark (ceilings as measured, the
    benchmark's launch overhead). A block's time, the host's side included, is ``ops_time_s``.
    """
    compute_s, memory_s = roofline_s(op, gpu, precision, sustained)
    if not sustained:
        return max(compute_s, memory_s) + launch_overhead_s()
    host = host_model()
    return max(compute_s, memory_s) + host.gap_s(op) + host.fill_waves * wave_s(op, compute_s, gpu.name)


def roofline_s(op: Op, gpu: GpuSpec, precision: str, sustained: bool = True) -> tuple[float, float]:
    """(compute time, HBM time) of one kernel at its achievable fractions; the larger one binds."""
    eff = efficiency(op, gpu, precision)
    compute_s = 0.0
    if op.flop > 0:
        clock = 1.0
        if sustained and op.kind in TENSOR_CORE_KINDS:
            ratio = clock_ratio(gpu.name)
            clock = ratio * ceiling_ratio(gpu.name) * power_clock.sustained_share(gpu.name, op.kind, op.kernel, ratio)
        compute_s = op.flop * eff.executed_flop_ratio / (gpu.peak_flop_per_s(op_precision(op, precision))
                                                       * eff.flop_fraction * clock)
        if sustained and op.kind == "gemm":
            # no GEMM faster than the GPU was measured to sustain at its power cap (efficiency.yaml
            # sustained_gemm_ceiling_tflops)
            ceiling = power_clock.sustained_gemm_ceiling(gpu.name, op_precision(op, precision))
            if ceiling is not None:
                compute_s = max(compute_s, op.flop / ceiling)
    memory_s = op.hbm_bytes / (gpu.hbm_bandwidth * eff.bandwidth_fraction)
    return compute_s, memory_s


def ops_time_s(ops: list[Op], gpu: GpuSpec, precision: str) -> float:
    """Kernels issued back to back on one stream as one block: the device's time or the host's, whichever is
    longer (``StreamTime.elapsed_s``)."""
    return stream_time(ops, gpu, precision).elapsed_s()


def achieved_flop_per_s(op: Op, gpu: GpuSpec, precision: str) -> float:
    """Counted FLOP over roofline time: what a short benchmark of this kernel would report."""
    return op.flop / op_time_s(op, gpu, precision, sustained=False)
