"""Transformer Engine's userbuffers overlap (``parallelism.tp_comm_overlap``): the chunk GEMMs it runs, the SMs its
communication holds per GEMM and the communication it leaves exposed (data/userbuffers.yaml, each value sourced).

Transformer Engine names the overlapped GEMMs of a layer qkv/proj/fc1/fc2 x fprop/dgrad/wgrad; here they are the
layer ops "qkv", "attn_out", "mlp_up" and "mlp_down" of the phases forward (and a full recompute), backward_input
and backward_weight. Each has its settings (``Gemm``: method, num_sm, set_sm_margin, aggregate): TE's
initialize_ub defaults for the run's Transformer Engine major version (``parallelism.te_version``), or the NeMo
configuration tuned for the run's shape (``config``, data/userbuffers.yaml nemo_configs). A GEMM with set_sm_margin
is launched on SMs - num_sm (``math_sms``) for its whole duration, and its communication kernel runs on the num_sm
left out, beside none of the GEMM's SMs (``collective_sms``). Three methods:

- ring_exchange (all-gather, then the GEMM; TE split_overlap_ag): ``tp`` chunk GEMMs of tokens/tp rows each, the
  first on the local shard, chunk i once ring step i-1 has delivered shard i; the exchange runs on copy engines;
- pipeline (the GEMM, then reduce-scatter; TE split_overlap_rs): ``pipeline_splits`` chunk GEMMs of
  out_features/splits columns each, one after another, chunk i's reduce-scatter once GEMM i is done; the last
  chunk's reduce-scatter runs after the last GEMM, exposed (``exposed_reduce_scatters``);
- ring_exchange for a reduce-scatter (TE split_overlap_rs_p2p, NeMo's configurations only): tp chunk GEMMs of
  tokens/tp rows, each sent to the rank owning its rows, then a reduce of the received chunks (``ring_reduce``);
- bulk: the whole GEMM beside a whole collective (the wgrad-side all-gather of the norm output, the reduce-scatter
  of the dgrad output).

A chunked GEMM is one op here: its chunk shape (m, n, k) for the GEMM shape model, ``batch`` the chunks whose tiles
share waves (``sharing``) and the FLOP of all chunks, so its device time is that of the chunks one after another,
packed ``batch`` at a time. Kernel gaps: one per overlapped GEMM, not per chunk.
TE issues the chunks from its C++ loop round-robin on ``streams`` compute streams (comm_gemm_overlap.h), so the next
chunk is queued on another stream when one ends: no stream idles between chunks for the host or an event (the
gap, ``kernels.HostModel.kernel_gap_s``, is the idle before a kernel the host issues from Python). Assumption.
"""

from __future__ import annotations

import dataclasses
import math
from functools import cache

from simcluster.core import catalog
from simcluster.spec.config import LATEST_TE_VERSION  # the TE ``config`` takes when none is given
from simcluster.spec.hardware import BYTES_PER_ELEMENT
from simcluster.workload import interference, kernels
from simcluster.workload.ops import HIGH_PRECISION, Op

# Layer ops and phases as Transformer Engine names them (its userbuffers keys: "<layer>_<pass>")
LAYERS = {"qkv": "qkv", "attn_out": "proj", "mlp_up": "fc1", "mlp_down": "fc2"}
PASSES = {"forward": "fprop", "recompute": "fprop", "backward_input": "dgrad", "backward_weight": "wgrad"}


@cache
def constants() -> dict:
    return catalog.load("userbuffers")


@dataclasses.dataclass(frozen=True)
class Gemm:
    """How Transformer Engine overlaps one GEMM of a layer (its ``initialize_ub`` settings): the method, the SMs its
    communication kernel holds, whether the GEMM is launched on the others only (set_sm_margin: ``math_sms``) and
    whether a ring exchange aggregates its chunks in pairs."""

    method: str
    num_sm: int
    set_sm_margin: bool = False
    aggregate: bool = False


# The userbuffers GEMMs of the engine's TP collectives of a layer (plan.tp_collectives_per_layer), per phase and
# collective: forward, the all-gathers before qkv/fc1 and the reduce-scatters after proj/fc2; backward, the
# all-gathers of dY before proj/fc2's dgrad and the reduce-scatters of qkv/fc1's dgrad output beside their wgrad.
COLLECTIVE_GEMMS = {
    "forward": {"all_gather": ("qkv_fprop", "fc1_fprop"), "reduce_scatter": ("proj_fprop", "fc2_fprop")},
    "backward": {"all_gather": ("proj_dgrad", "fc2_dgrad"), "reduce_scatter": ("qkv_wgrad", "fc1_wgrad")}}


def te_default(method_name: str, te_version: int = LATEST_TE_VERSION) -> Gemm:
    """TE's defaults for a GEMM of ``method_name`` in Transformer Engine ``te_version``.x: a ring exchange's one flag
    CTA, num_sm for the others (interference.yaml ctas.userbuffers), ``ring_aggregate``, and set_sm_margin as that
    version's initialize_ub sets it (data/userbuffers.yaml set_sm_margin_default: none in 1.x, pipeline and bulk in
    2.x)."""
    margin = constants()["set_sm_margin_default"][te_version][method_name]
    if method_name == "ring_exchange":
        return Gemm(method_name, constants()["ring_exchange_sms"], margin, aggregate=constants()["ring_aggregate"])
    return Gemm(method_name, interference.constants()["ctas"]["userbuffers"], margin)


def _defaults(te_version: int) -> dict[str, Gemm]:
    """TE's defaults for every GEMM of a layer (``methods``) in ``te_version``.x."""
    return {name: te_default(how, te_version) for name, how in constants()["methods"].items()}


@cache
def _configs(te_version: int) -> dict[tuple, dict[str, Gemm]]:
    """Every configuration, keyed by (hidden, tp, tokens, sms): TE's defaults updated with a NeMo configuration's, as
    initialize_ub merges them (a setting the configuration states replaces the default of ``te_version``.x; one it
    leaves out keeps it: TE 2.x ``get_default_config`` then ``ub_cfg.update``, TE 1.x ``ub_cfg.get(key, default)``)."""
    out = {}
    for entry in constants()["nemo_configs"]:
        gemms = _defaults(te_version)
        for name, settings in entry["gemms"].items():
            base = te_default(settings["method"], te_version)
            gemms[name] = dataclasses.replace(base, **{k: v for k, v in settings.items() if k != "method"},
                                              method=settings["method"])
        match = entry["match"]
        out[(match["hidden"], match["tp"], match["tokens"], match["sms"])] = gemms
    return out


@cache
def config(hidden: int = 0, tp: int = 0, tokens: int = 0, sms: int = 0,
           te_version: int = LATEST_TE_VERSION) -> dict[str, Gemm]:
    """The per-GEMM settings (TE's names, ``<layer>_<pass>``) of a layer of ``hidden`` at ``tp`` with ``tokens`` rows
    per microbatch on a GPU of ``sms`` SMs in Transformer Engine ``te_version``.x: the NeMo configuration tuned for
    that shape (data/userbuffers.yaml nemo_configs), else TE's defaults. No shape: TE's defaults."""
    return _configs(te_version).get((hidden, tp, tokens, sms), _defaults(te_version))


def math_sms(found: Gemm, sms: int) -> int:
    """SMs an overlapped GEMM is launched on, on a GPU of ``sms``: sms - num_sm with set_sm_margin, else all
    (Transformer Engine CommOverlapCore: ``_math_sms = set_sm_margin ? sm_count - num_comm_sm : sm_count``, passed to
    cuBLASLt as its SM-count target for every chunk GEMM, whether or not the communication is running)."""
    return sms - found.num_sm if found.set_sm_margin else sms


@cache
def _config_models() -> dict[tuple, frozenset[str]]:
    """The model presets each NeMo configuration's recipe trains, keyed as ``_configs``."""
    return {(m["hidden"], m["tp"], m["tokens"], m["sms"]): frozenset(m["models"])
            for m in (entry["match"] for entry in constants()["nemo_configs"])}


def scenario_config(scenario) -> dict[str, Gemm]:
    """``config`` of a scenario's layers in its Transformer Engine (``parallelism.te_version``): its hidden size, tp,
    tokens per microbatch and GPU, where the scenario is the NeMo recipe's (a model it names, on Megatron-Core);
    TE's defaults otherwise (a Megatron-LM run or another model of the same shape does not pass NeMo's
    configuration)."""
    t, p = scenario.training, scenario.parallelism
    key = (scenario.model.hidden, p.tp, t.seq_len // p.cp * t.micro_batch_size,
           kernels.sm_count(scenario.cluster.gpu.name))
    if not scenario.megatron_core or scenario.model.name not in _config_models().get(key, ()):
        return config(te_version=p.te_version)
    return config(*key, te_version=p.te_version)


def gemm(op_name: str, phase: str, settings: dict[str, Gemm] | None = None) -> Gemm | None:
    """The settings of the layer op ``op_name`` in ``phase`` (None: not a userbuffers GEMM)."""
    if op_name not in LAYERS or phase not in PASSES:
        return None
    return (settings or config()).get(f"{LAYERS[op_name]}_{PASSES[phase]}")  # proj/fc2 wgrad: no overlap


def method(op_name: str, phase: str, settings: dict[str, Gemm] | None = None) -> str | None:
    """The overlap method of the layer op ``op_name`` in ``phase`` (None: not a userbuffers GEMM)."""
    found = gemm(op_name, phase, settings)
    return found.method if found else None


def chunks(method_name: str, tp: int, aggregate: bool | None = None) -> int:
    """Chunk GEMMs of one overlapped GEMM: tp for a ring exchange (tp/2 aggregated; ``aggregate`` None: TE's default
    ``ring_aggregate``), the pipeline's splits, 1 for a bulk overlap."""
    if method_name == "ring_exchange":
        pairs = constants()["ring_aggregate"] if aggregate is None else aggregate
        return tp // 2 if pairs and tp % 2 == 0 else tp
    return constants()["pipeline_splits"] if method_name == "pipeline" else 1


def chunked(op: Op, method_name: str, tp: int, precision: str, sms: int, aggregate: bool | None = None) -> Op:
    """``op`` (a GEMM of the run's ``precision``) as the chunk GEMMs ``method_name`` runs on ``sms`` SMs (the GPU's,
    or ``math_sms``): a ring exchange splits its m (tokens) rows, a pipeline its n (out_features) columns. FLOP are
    kept; bytes count each chunk's operands (the operand not split is read once per chunk); ``batch`` is the chunks
    whose tiles share waves (``sharing``)."""
    count = chunks(method_name, tp, aggregate)
    if count == 1 or op.batch != 1:
        return op
    # sequence parallelism splits the tokens by tp; a pipeline's columns by its splits (TE: m / num_splits)
    m, n = (math.ceil(op.m / count), op.n) if method_name == "ring_exchange" else (op.m, math.ceil(op.n / count))
    hbm = count * chunk_bytes(op, m, n, precision)
    return dataclasses.replace(op, m=m, n=n, batch=sharing(m, n, count, sms, method_name), hbm_bytes=float(hbm))


def chunk_bytes(op: Op, m: int, n: int, precision: str) -> float:
    """HBM bytes of one (m x n) chunk of the GEMM ``op``: its operands (m x k rows, the k x n weight) in the GEMM's
    precision, its output in 16 bits at least."""
    element = BYTES_PER_ELEMENT[op.precision or precision]
    return float((m * op.k + op.k * n) * element + m * n * max(element, BYTES_PER_ELEMENT["bf16"]))


def sharing(m: int, n: int, count: int, sms: int, method_name: str = "ring_exchange") -> int:
    """Chunk GEMMs of (m x n) outputs whose tiles share waves, of ``count``: all of them when the chunks in flight on
    TE's ``streams`` compute streams hold a wave of tiles (the SMs one chunk's last wave leaves idle take the next
    chunk's tiles, so only the last chunk's tail is quantised), else the chunks in flight. Tiles counted with the
    largest tile of the GEMM model (efficiency.yaml gemm.tiles), the fewest. ``constants()["packing"][method_name]``
    false: each chunk quantised alone (a pipeline's chunk GEMM waits for the one before it, data/userbuffers.yaml)."""
    if not constants()["packing"][method_name]:
        return 1
    streams = min(constants()["streams"], count)
    tile_m, tile_n, _ = max(catalog.load("efficiency")["gemm"]["tiles"], key=lambda tile: tile[0] * tile[1])
    in_flight = streams * math.ceil(m / tile_m) * math.ceil(n / tile_n)
    return count if in_flight >= sms else streams


def ubuf_copy(op: Op, tp: int, activation_bytes: int) -> Op:
    """The copy of dY's sequence-parallel shard into the userbuffer before a ring-exchange dgrad ``op`` in 16-bit
    training (TE grad_output_preprocess: copy_input_to_ubuf on the main stream): tokens/tp x out_features (``op.k``)
    read and written."""
    elements = op.m // tp * op.k
    return Op("ub_copy", "memory", 0.0, float(2 * elements * activation_bytes))


def ring_reduce(op: Op, tp: int, activation_bytes: int) -> Op:
    """The reduce after a ring-exchange reduce-scatter ``op`` (TE split_overlap_rs_p2p: reduce_bf16 of the tp
    received chunks on the main stream, after the last send): tp chunks of tokens/tp x out_features (``op.n``) read,
    one written, in 16 bits."""
    elements = op.m // tp * op.n
    return Op("ub_reduce", "memory", 0.0, float((tp + 1) * elements * activation_bytes))


def apply(ops: dict[str, list[Op]], tp: int, precision: str, activation_bytes: int, sms: int,
          settings: dict[str, Gemm] | None = None) -> dict[str, list[Op]]:
    """A layer's ops per phase as userbuffers runs them on a GPU of ``sms`` SMs with ``settings`` (``config``; None:
    TE's defaults): chunked ring-exchange and pipeline GEMMs, each GEMM on its ``math_sms`` (``Op.sms``, set only
    where the margin leaves SMs out), the copies into the userbuffer of the 16-bit ring-exchange dgrads and the
    reduce after a ring-exchange reduce-scatter."""
    out: dict[str, list[Op]] = {}
    for phase, phase_ops in ops.items():
        out[phase] = []
        for op in phase_ops:
            found = gemm(op.name, phase, settings) if op.kind == "gemm" else None
            if found is None:
                out[phase].append(op)
                continue
            how = found.method
            if phase == "backward_input" and how == "ring_exchange" and precision not in HIGH_PRECISION:
                out[phase].append(ubuf_copy(op, tp, activation_bytes))
            launched = math_sms(found, sms)
            gemm_op = chunked(op, how, tp, precision, launched, found.aggregate)
            out[phase].append(dataclasses.replace(gemm_op, sms=launched) if launched != sms else gemm_op)
            if how == "ring_exchange" and phase in ("forward", "recompute") and op.name in REDUCE_SCATTER_OPS:
                out[phase].append(ring_reduce(op, tp, activation_bytes))
    return out


# Row-parallel GEMMs whose forward output is reduce-scattered
REDUCE_SCATTER_OPS = ("attn_out", "mlp_down")


def exposed_reduce_scatters(ops: dict[str, list[Op]], settings: dict[str, Gemm] | None = None) -> dict[str, int]:
    """Per phase, the pipeline overlaps of ``ops``: each leaves its last chunk's reduce-scatter (1/splits of the
    collective) exposed after its last chunk GEMM (TE split_overlap_rs)."""
    return {phase: sum(1 for op in phase_ops if op.kind == "gemm" and method(op.name, phase, settings) == "pipeline")
            for phase, phase_ops in ops.items()}


def exposed_stream(ops: dict[str, list[Op]], phases: tuple[str, ...], chunk_s: float,
                   settings: dict[str, Gemm] | None = None) -> kernels.StreamTime:
    """Device time of ``phases`` spent on exposed reduce-scatter chunks of ``chunk_s`` each (no kernel of the compute
    stream: the compute stream waits for the communication stream)."""
    counts = exposed_reduce_scatters(ops, settings)
    return kernels.StreamTime(device_s=chunk_s * sum(counts.get(phase, 0) for phase in phases))


def collective_sms(phase: str, collective: str, settings: dict[str, Gemm] | None = None) -> list[tuple[float, int]]:
    """The SMs the userbuffers kernels of one ``collective`` ("all_gather" or "reduce_scatter") of ``phase``
    ("forward" or "backward") take from the compute, as (share of the collective's time, SMs), over its two GEMMs
    (``COLLECTIVE_GEMMS``, equal bytes): a ring exchange its num_sm (one flag CTA by default), a bulk overlap num_sm,
    a pipeline num_sm for all chunks but the last, whose reduce-scatter runs after the compute: None (no kernel
    beside it). A GEMM with set_sm_margin already runs on SMs - num_sm (``math_sms``, in its kernel time), its
    communication on the SMs left out: 0 (it takes HBM bandwidth, no SM). Shares of equal SMs are merged."""
    settings = settings or config()
    names = COLLECTIVE_GEMMS[phase][collective]
    parts: dict[int | None, float] = {}
    for name in names:
        found = settings[name]
        beside = 0 if found.set_sm_margin else found.num_sm
        if found.method == "pipeline":
            splits = constants()["pipeline_splits"]
            parts[beside] = parts.get(beside, 0.0) + (splits - 1) / splits / len(names)
            parts[None] = parts.get(None, 0.0) + 1 / splits / len(names)
        else:
            parts[beside] = parts.get(beside, 0.0) + 1 / len(names)
    return [(share, sms) for sms, share in parts.items()]
