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
  out_features/splits columns each, one after another (GEMM i+1 issued before the wait for GEMM i, so two in flight,
  in TE 1.x fp8 training: ``pipeline_overlaps_first_gemm``), chunk i's reduce-scatter once GEMM i is done; the last
  chunk's reduce-scatter runs after the last GEMM, exposed (``exposed_reduce_scatters``);
- ring_exchange for a reduce-scatter (TE split_overlap_rs_p2p, NeMo's configurations only): tp chunk GEMMs of
  tokens/tp rows, each sent to the rank owning its rows, then a reduce of the received chunks (``ring_reduce``);
- bulk: the whole GEMM beside a whole collective (the wgrad-side all-gather of the norm output, the reduce-scatter
  of the dgrad output).

A chunked GEMM is one op here: its chunk shape (m, n, k) for the GEMM shape model, ``batch`` the chunks whose tiles
share waves (``sharing``) and the FLOP of all chunks, so its device time is that of the chunks one after another,
packed ``batch`` at a time. Kernel gaps: one per overlapped GEMM, not per chunk.
TE issues the chunks from its C++ loop round-robin on ``streams`` compute streams (comm_gemm_overlap.h), so the next
chunk is queued on another stream when one ends (``in_flight``): no stream idles between chunks for the host or an
event (the gap, ``kernels.HostModel.kernel_gap_s``, is the idle before a kernel the host issues from Python).
Assumption.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from functools import cache

from simcluster.core import catalog
from simcluster.spec.config import (  # LATEST_TE_VERSION: ``config``'s TE by default
    LATEST_TE_VERSION,
    megatron_bridge_release,
    recipe_models,
    stated_mcore_version,
)
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
    fp8_buf: bool = False  # its output written and reduce-scattered in fp8 (``fp8_reduce_scatter``)


# The userbuffers GEMMs of the engine's TP collectives of a layer (plan.tp_collectives_per_layer), per phase and
# collective: forward, the all-gathers before qkv/fc1 and the reduce-scatters after proj/fc2; backward, the
# all-gathers of dY before proj/fc2's dgrad and the reduce-scatters of qkv/fc1's dgrad output beside their wgrad.
COLLECTIVE_GEMMS = {
    "forward": {"all_gather": ("qkv_fprop", "fc1_fprop"), "reduce_scatter": ("proj_fprop", "fc2_fprop")},
    "backward": {"all_gather": ("proj_dgrad", "fc2_dgrad"), "reduce_scatter": ("qkv_wgrad", "fc1_wgrad")}}


# The GEMMs whose userbuffers all-gather Transformer Engine switches off when autograd is (is_grad_enabled false:
# the first forward of a full recompute): TE 1.x layernorm_linear.py / layernorm_mlp.py "if tp_world_size == 1 or
# (not is_grad_enabled) or return_layernorm_output: ub_overlap_ag = False", TE 2.x "ub_overlap_ag_fprop =
# ub_overlap_ag_fprop and is_grad_enabled and not return_layernorm_output"; gather_along_first_dim (NCCL, blocking)
# instead. The forward reduce-scatters (ub_overlap_rs_fprop) keep userbuffers.
GRAD_FREE_NCCL_GEMMS = COLLECTIVE_GEMMS["forward"]["all_gather"]


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


# Settings a configuration states that the model runs as TE's defaults: cga_size (the CTA cluster of the
# communication kernel: not modelled) and num_splits, which must be the modelled ``pipeline_splits``.
RECORDED_SETTINGS = ("cga_size", "num_splits")


def _gemm_of(name: str, settings: dict, te_version: int = LATEST_TE_VERSION) -> Gemm:
    """One GEMM's ``Gemm`` from a configuration's settings: TE's defaults for its method updated with the stated
    values; a num_splits other than the modelled ``pipeline_splits`` is an error (not modelled)."""
    unknown = set(settings) - {field.name for field in dataclasses.fields(Gemm)} - set(RECORDED_SETTINGS)
    if unknown:  # e.g. atomic_gemm: TE's atomic-counter GEMM overlap, not modelled
        raise ValueError(f"userbuffers {name}: {', '.join(sorted(unknown))} not modelled")
    splits = settings.get("num_splits", constants()["pipeline_splits"])
    if splits != constants()["pipeline_splits"]:
        raise ValueError(f"userbuffers {name}: num_splits {splits} is not modelled "
                         f"(pipeline_splits {constants()['pipeline_splits']})")
    stated = {k: v for k, v in settings.items() if k != "method" and k not in RECORDED_SETTINGS}
    return dataclasses.replace(te_default(settings["method"], te_version), **stated, method=settings["method"])


@cache
def _configs(te_version: int = LATEST_TE_VERSION, bridge: bool = False) -> dict[tuple, dict[str, Gemm]]:
    """Every configuration, keyed by (hidden, tp, tokens, sms, precision): TE's defaults of ``te_version``.x updated
    with a NeMo configuration's, as initialize_ub merges them (a setting the configuration states replaces the
    default; one it leaves out keeps it: TE 2.x ``get_default_config`` then ``ub_cfg.update``, TE 1.x
    ``ub_cfg.get(key, default)``); precision None for a configuration that states none (any precision), else one key
    per precision its match lists (NeMo 2.x's performance scripts pick the bf16 or the fp8 file by compute dtype).
    ``bridge``: a Megatron-Bridge release's (data/userbuffers.yaml megatron_bridge_configs): its copy of a NeMo
    configuration (the same name) replaces that entry and must have its match; a configuration of Megatron-Bridge's
    alone (a name no NeMo entry has) adds its match and must share none with a NeMo entry."""
    out = {}
    for entry in constants()["nemo_configs"]:
        gemms = _entry_gemms(entry, te_version)
        for key in _match_keys(entry["match"]):
            if key in out:  # two configurations of one shape: the second would silently take the first one's runs
                raise ValueError(f"userbuffers {entry['name']}: another NeMo configuration has its match {key}")
            out[key] = gemms
    if bridge:
        nemo = {entry["name"]: set(_match_keys(entry["match"])) for entry in constants()["nemo_configs"]}
        for entry in constants()["megatron_bridge_configs"]:
            keys = set(_match_keys(entry["match"]))
            copied = nemo.get(entry["name"])
            if copied is not None and keys != copied:  # a copy taking other runs than the NeMo file's
                raise ValueError(f"userbuffers {entry['name']}: its match is not the NeMo configuration's")
            if copied is None and keys & set(out):  # Bridge-only, yet taking a NeMo configuration's runs
                raise ValueError(f"userbuffers {entry['name']}: a NeMo configuration of another name has its match")
            gemms = _entry_gemms(entry, te_version)
            out.update(dict.fromkeys(keys, gemms))
    return out


def _entry_gemms(entry: dict, te_version: int) -> dict[str, Gemm]:
    """One configuration's per-GEMM settings: TE's defaults of ``te_version``.x updated with the entry's."""
    gemms = _defaults(te_version)
    for name, settings in entry["gemms"].items():
        gemms[name] = _gemm_of(name, settings, te_version)
    return gemms


def _match_keys(match: dict) -> list[tuple]:
    """The keys of one configuration's match: (hidden, tp, tokens, sms, precision) per listed precision, and per
    combination of the listed values where tp, tokens or sms is a list (a recipe passing the configuration whatever
    the layout or Blackwell GPU: megatron_bridge_configs)."""
    shapes = itertools.product(*(v if isinstance(v, list) else [v] for v in (
        match["hidden"], match["tp"], match["tokens"], match["sms"])))
    return [(*shape, precision) for shape in shapes for precision in match.get("precision", [None])]


def _candidates(hidden: int, tp: int, tokens: int, sms: int, precision: str | None,
                bridge: bool = False) -> list[tuple]:
    """The keys of the configurations a run of this shape and ``precision`` may take, in order: the one listing its
    precision, then the one stating none (those that exist; ``bridge``: with Megatron-Bridge's own)."""
    known = _configs(LATEST_TE_VERSION, bridge)
    return [key for key in ((hidden, tp, tokens, sms, precision), (hidden, tp, tokens, sms, None)) if key in known]


def _resolve(hidden: int, tp: int, tokens: int, sms: int, precision: str | None, bridge: bool = False) -> tuple | None:
    """The key of the configuration a run of this shape and ``precision`` takes (the first of ``_candidates``), None
    when none exists."""
    return next(iter(_candidates(hidden, tp, tokens, sms, precision, bridge)), None)


@cache
def config(hidden: int = 0, tp: int = 0, tokens: int = 0, sms: int = 0,
           precision: str | None = None, te_version: int = LATEST_TE_VERSION, bridge: bool = False) -> dict[str, Gemm]:
    """The per-GEMM settings (TE's names, ``<layer>_<pass>``) of a layer of ``hidden`` at ``tp`` with ``tokens`` rows
    per microbatch on a GPU of ``sms`` SMs in ``precision`` (None: a configuration stating no precision) and
    Transformer Engine ``te_version``.x: the NeMo configuration tuned for that shape (data/userbuffers.yaml
    nemo_configs; ``bridge``: Megatron-Bridge's, megatron_bridge_configs: its copy where it differs, and its own),
    else TE's defaults.
    No shape: TE's defaults."""
    key = _resolve(hidden, tp, tokens, sms, precision, bridge)
    if key is None:
        return _defaults(te_version)
    return _configs(te_version, bridge)[key]


def math_sms(found: Gemm, sms: int) -> int:
    """SMs an overlapped GEMM is launched on, on a GPU of ``sms``: sms - num_sm with set_sm_margin, else all
    (Transformer Engine CommOverlapCore: ``_math_sms = set_sm_margin ? sm_count - num_comm_sm : sm_count``, passed to
    cuBLASLt as its SM-count target for every chunk GEMM, whether or not the communication is running)."""
    return sms - found.num_sm if found.set_sm_margin else sms


@cache
def _config_models(bridge: bool = False) -> dict[tuple, frozenset[str]]:
    """The model presets each NeMo configuration's recipe trains, keyed as ``_configs`` (``bridge``: with
    Megatron-Bridge's entries, its copies over NeMo's)."""
    entries = constants()["nemo_configs"] + (constants()["megatron_bridge_configs"] if bridge else [])
    return {key: frozenset(entry["match"]["models"]) for entry in entries for key in _match_keys(entry["match"])}


def scenario_config(scenario) -> dict[str, Gemm]:
    """``config`` of a scenario's layers in its Transformer Engine (``parallelism.te_version``): of its hidden size,
    tp, tokens per microbatch and GPU, the configuration of its precision, else the one stating none, whose recipe
    trains the scenario's model (a model it names, on Megatron-Core); TE's defaults otherwise (a Megatron-LM run or
    another model of the same shape does not pass NeMo's configuration). A run that states a Megatron-Bridge release
    (``training.mcore_version`` from data/mcore_versions.yaml ``megatron_bridge``) takes Megatron-Bridge's
    configurations: its copies of NeMo's and its own (the Blackwell Llama 3.1 405B and Llama 3 70B ones)."""
    t, p = scenario.training, scenario.parallelism
    bridge = megatron_bridge_release(stated_mcore_version(t))
    sms = kernels.sm_count(scenario.cluster.gpu.name)
    shape = (scenario.model.hidden, p.tp, t.seq_len // p.cp * t.micro_batch_size, sms)
    keys = _candidates(*shape, t.precision, bridge) if scenario.megatron_core else []
    # the first whose recipe trains this model: a model listed only on the entry without a precision keeps it
    names = recipe_models(scenario.model)  # an unnamed inline model: the presets of its shape
    key = next((key for key in keys if names & _config_models(bridge)[key]), None)
    return config(te_version=p.te_version) if key is None else config(*key, te_version=p.te_version, bridge=bridge)


def scenario_charged(scenario) -> dict[str, Gemm]:
    """``scenario_config`` as the model charges it on the scenario's GPU (``charged``): what the engine times."""
    return charged(scenario_config(scenario), scenario.cluster.gpu.name)


def charged(settings: dict[str, Gemm], gpu_name: str) -> dict[str, Gemm]:
    """``settings`` as the model charges them on ``gpu_name``: on a GPU with persistent GEMM grids
    (``interference.persistent_grid``) a pipeline or bulk GEMM launched on all SMs beside its communication kernel
    runs as if launched on SMs - num_sm (set_sm_margin): its grid's CTAs on the SMs the communication holds wait for
    it to end, which costs about the communication's time; the margin's cost is the lower estimate of that
    (data/userbuffers.yaml persistent_grid_methods). Elsewhere, and for the ring exchanges, as configured."""
    if not interference.persistent_grid(gpu_name):
        return settings
    methods = constants()["persistent_grid_methods"]
    return {name: dataclasses.replace(found, set_sm_margin=True)
            if found.method in methods and not found.set_sm_margin else found for name, found in settings.items()}


def te_name(op_name: str, phase: str) -> str | None:
    """Transformer Engine's name (``<layer>_<pass>``) of the layer op ``op_name`` in ``phase`` (None: not a GEMM TE
    names)."""
    if op_name not in LAYERS or phase not in PASSES:
        return None
    return f"{LAYERS[op_name]}_{PASSES[phase]}"


def gemm(op_name: str, phase: str, settings: dict[str, Gemm] | None = None) -> Gemm | None:
    """The settings of the layer op ``op_name`` in ``phase`` (None: not a userbuffers GEMM)."""
    name = te_name(op_name, phase)
    return None if name is None else (settings or config()).get(name)  # proj/fc2 wgrad: no overlap


def method(op_name: str, phase: str, settings: dict[str, Gemm] | None = None) -> str | None:
    """The overlap method of the layer op ``op_name`` in ``phase`` (None: not a userbuffers GEMM)."""
    found = gemm(op_name, phase, settings)
    return found.method if found else None


# The GEMMs whose configured fp8_buf Transformer Engine honours: its default "pipeline" (reduce-scatter) GEMMs.
# TE 1.x initialize_ub (base.py, since NVIDIA/TransformerEngine#750, April 2024: "Make individual ReduceScatter
# overlap to use FP8 buffer so load the GEMM output in FP8 to save memory bandwidth cost"): fp8_buf = name in
# layers_all_gather_overlap or (ub_cfg.get("fp8_buf", False) and name in methods["pipeline"]); the all-gather
# buffers are fp8 in fp8 training whatever the configuration says (plan.FP8_GATHERED_OPS). With an fp8 buffer
# _Linear's forward writes the GEMM output into the userbuffer as fp8 (is_fp8_ubuf(): proj_out_pttype uint8) and the
# reduce-scatter moves fp8 elements into a 16-bit rs_out (transformer_engine/pytorch/module/linear.py, TE 1.x).
FP8_BUFFER_GEMMS = ("proj_fprop", "fc2_fprop")


def fp8_reduce_scatter(name: str, precision: str, settings: dict[str, Gemm] | None = None) -> bool:
    """Whether the GEMM ``name`` (TE's ``<layer>_<pass>``) writes and reduce-scatters its output in fp8: fp8
    training, a GEMM TE honours fp8_buf for (``FP8_BUFFER_GEMMS``) and a configuration stating fp8_buf."""
    found = (settings or config()).get(name)
    return precision in HIGH_PRECISION and name in FP8_BUFFER_GEMMS and found is not None and found.fp8_buf


def reduce_scatter_bytes(name: str, size_bytes: float, activation_element: float, precision: str,
                         settings: dict[str, Gemm] | None = None) -> float:
    """Bytes of the reduce-scatter of GEMM ``name``'s output, ``size_bytes`` at ``activation_element`` bytes an
    element: its fp8 elements (``BYTES_PER_ELEMENT[precision]`` each) with an fp8 buffer, else as they are."""
    if not fp8_reduce_scatter(name, precision, settings):
        return size_bytes
    return size_bytes * BYTES_PER_ELEMENT[precision] / activation_element


def fp8_chunk_bytes(size_bytes: float, activation_element: float, precision: str,
                    settings: dict[str, Gemm] | None = None) -> float | None:
    """Bytes of a reduce-scatter chunk of ``size_bytes`` (16-bit) moved from an fp8 userbuffer, None when no GEMM of
    ``settings`` reduce-scatters in fp8 (``fp8_reduce_scatter``)."""
    names = [name for name in FP8_BUFFER_GEMMS if fp8_reduce_scatter(name, precision, settings)]
    return reduce_scatter_bytes(names[0], size_bytes, activation_element, precision, settings) if names else None


def last_chunk_bytes(activation_bytes: float, tp: int, activation_element: float, precision: str,
                     settings: dict[str, Gemm] | None = None) -> tuple[float, float | None]:
    """Bytes of a pipeline overlap's exposed last reduce-scatter chunk (1/splits of a microbatch's 16-bit
    ``activation_bytes``): in 16 bits, and from an fp8 userbuffer (``fp8_chunk_bytes``; None: no fp8_buf)."""
    chunk = activation_bytes / chunks("pipeline", tp)
    return chunk, fp8_chunk_bytes(chunk, activation_element, precision, settings)


def chunks(method_name: str, tp: int, aggregate: bool | None = None, reduce_scatter: bool = False) -> int:
    """Chunk GEMMs of one overlapped GEMM: tp for a ring exchange (an all-gather's tp/2 aggregated; ``aggregate``
    None: TE's default ``ring_aggregate``; a ``reduce_scatter``'s always tp: TE's split_overlap_rs_p2p loops over
    tp_size and never reads aggregate, which only split_overlap_ag does, TE 1.x UbufP2PCommOverlap and TE 2.x
    CommOverlapP2PBase), the pipeline's splits, 1 for a bulk overlap."""
    if method_name == "ring_exchange":
        pairs = constants()["ring_aggregate"] if aggregate is None else aggregate
        return tp // 2 if pairs and tp % 2 == 0 and not reduce_scatter else tp
    return constants()["pipeline_splits"] if method_name == "pipeline" else 1


def chunked(op: Op, method_name: str, tp: int, precision: str, sms: int, aggregate: bool | None = None,
            out_element: float | None = None, reduce_scatter: bool = False, first_gemm: bool = False) -> Op:
    """``op`` (a GEMM of the run's ``precision``) as the chunk GEMMs ``method_name`` runs on ``sms`` SMs (the GPU's,
    or ``math_sms``): a ring exchange splits its m (tokens) rows, a pipeline its n (out_features) columns. FLOP are
    kept; bytes count each chunk's operands (the operand not split is read once per chunk) and its output
    (``out_element`` bytes an element, None: ``chunk_bytes``'s); ``batch`` is the chunks whose tiles share waves
    (``sharing``; ``reduce_scatter``: a ring exchange's reduce-scatter, ``first_gemm``: a pipeline issuing GEMM
    i+1 first, ``in_flight``)."""
    count = chunks(method_name, tp, aggregate, reduce_scatter)
    if count == 1 or op.batch != 1:
        return op
    # sequence parallelism splits the tokens by tp; a pipeline's columns by its splits (TE: m / num_splits)
    m, n = (math.ceil(op.m / count), op.n) if method_name == "ring_exchange" else (op.m, math.ceil(op.n / count))
    hbm = count * chunk_bytes(op, m, n, precision, out_element)
    batch = sharing(m, n, count, sms, method_name, reduce_scatter, first_gemm)
    return dataclasses.replace(op, m=m, n=n, batch=batch, hbm_bytes=float(hbm))


def chunk_bytes(op: Op, m: int, n: int, precision: str, out_element: float | None = None) -> float:
    """HBM bytes of one (m x n) chunk of the GEMM ``op``: its operands (m x k rows, the k x n weight) in the GEMM's
    precision, its output in 16 bits at least (``out_element`` bytes an element when given: an fp8 userbuffer)."""
    element = BYTES_PER_ELEMENT[op.precision or precision]
    out = max(element, BYTES_PER_ELEMENT["bf16"]) if out_element is None else out_element
    return float((m * op.k + op.k * n) * element + m * n * out)


def pipeline_overlaps_first_gemm(te_version: int, precision: str) -> bool:
    """Whether a pipeline overlap in Transformer Engine ``te_version``.x training in ``precision`` issues chunk GEMM
    i+1 before the communication stream waits for chunk GEMM i (data/userbuffers.yaml pipeline_overlap_first_gemm:
    TE 1.x's fp8_gemm passes split_overlap_rs gemm_overlap true, its 16-bit gemm false; TE 2.x only with
    pipeline_rs_overlap_first_gemm, off by default)."""
    return precision in constants()["pipeline_overlap_first_gemm"][te_version]


def in_flight(method_name: str, reduce_scatter: bool = False, first_gemm: bool = False) -> int:
    """Chunk GEMMs of one overlapped GEMM queued or running at once on one hardware queue: 1 where TE waits for
    chunk GEMM i before issuing GEMM i+1 (a pipeline without ``first_gemm``; ``packing`` false), ``issued_ahead``
    (2) where it issues GEMM i+1 and then waits for GEMM i (a pipeline with ``first_gemm``, a ring exchange's
    ``reduce_scatter``: split_overlap_rs_p2p), ``streams`` (3) for a ring exchange's all-gather, whose GEMM i+1
    waits only for ring step i's receive."""
    if method_name == "pipeline" and first_gemm:
        return constants()["issued_ahead"]
    if not constants()["packing"][method_name]:
        return 1
    return constants()["issued_ahead"] if reduce_scatter else constants()["streams"]


def sharing(m: int, n: int, count: int, sms: int, method_name: str = "ring_exchange", reduce_scatter: bool = False,
            first_gemm: bool = False) -> int:
    """Chunk GEMMs of (m x n) outputs whose tiles share waves, of ``count``: all of them when the chunks in flight
    (``in_flight``) hold a wave of tiles (the SMs one chunk's last wave leaves idle take the next chunk's tiles, so
    only the last chunk's tail is quantised), else the chunks in flight; 1 when one chunk runs at a time (each
    quantised alone). Tiles counted with the largest tile of the GEMM model (efficiency.yaml gemm.tiles), the
    fewest."""
    streams = min(in_flight(method_name, reduce_scatter, first_gemm), count)
    if streams == 1:
        return 1
    tile_m, tile_n, _ = max(catalog.load("efficiency")["gemm"]["tiles"], key=lambda tile: tile[0] * tile[1])
    tiles = streams * math.ceil(m / tile_m) * math.ceil(n / tile_n)
    return count if tiles >= sms else streams


def copied_gemms(te_version: int, precision: str) -> frozenset[str]:
    """The GEMMs (TE's ``<layer>_<pass>``) whose userbuffer a copy on the compute stream fills or empties in
    Transformer Engine ``te_version``.x training in ``precision`` (data/userbuffers.yaml main_stream_copies)."""
    table = constants()["main_stream_copies"][te_version]
    return frozenset(table["all"] + ([] if precision in HIGH_PRECISION else table["high_precision"]))


def grad_free_split(per_layer: dict[str, list[tuple[str, int]]]
                    ) -> tuple[dict[str, list[tuple[str, int]]], dict[str, tuple[tuple[str, int], ...]]]:
    """A layer's TP collectives per phase (``plan.tp_collectives_per_layer``) as (overlapped, blocking) when full
    recompute runs the first forward without autograd: its all-gathers go over NCCL, blocking
    (``GRAD_FREE_NCCL_GEMMS``); everything else keeps userbuffers."""
    overlapped = {phase: list(calls) for phase, calls in per_layer.items()}
    gathers = tuple((op, count) for op, count in per_layer["forward"] if op == "all_gather")
    overlapped["forward"] = [(op, 0 if op == "all_gather" else count) for op, count in per_layer["forward"]]
    return overlapped, {"forward": gathers}


def mxfp8_scale_gathers(ops: dict[str, list[Op]], phases: tuple[str, ...],
                        settings: dict[str, Gemm] | None = None) -> int:
    """The blocking scale-inverse all-gathers on the compute stream that MXFP8 training adds to ``phases`` of a
    layer's ``ops`` under userbuffers: one per GEMM (TE's ``<layer>_<pass>``, once for split projections) whose
    method ``settings`` give lists it (data/userbuffers.yaml mxfp8_scale_gathers)."""
    table = constants()["mxfp8_scale_gathers"]
    count = 0
    for phase in phases:
        names = set()
        for op in ops.get(phase, ()):
            found = gemm(op.name, phase, settings) if op.kind == "gemm" else None
            if found is not None and te_name(op.name, phase) in table.get(found.method, ()):
                names.add(te_name(op.name, phase))
        count += len(names)
    return count


def buffer_copy(op: Op, phase: str, tp: int, element_bytes: float) -> Op:
    """A copy of the sequence-parallel shard (tokens/tp x hidden elements of ``element_bytes``, read and written)
    into or out of the userbuffer of the GEMM ``op`` in ``phase`` (data/userbuffers.yaml main_stream_copies): the
    all-gathered input of a forward (tokens x hidden ``op.m`` x ``op.k``) or of a dgrad (dY, tokens x out_features
    ``op.m`` x ``op.k``), or a weight gradient's reduce-scattered dgrad output (hidden ``op.m``, tokens ``op.k``)."""
    tokens, hidden = (op.k, op.m) if phase == "backward_weight" else (op.m, op.k)
    elements = tokens // tp * hidden
    return Op("ub_copy", "memory", 0.0, float(2 * elements * element_bytes))


def ring_reduce(op: Op, tp: int, activation_bytes: int, received_bytes: float | None = None) -> Op:
    """The reduce after a ring-exchange reduce-scatter ``op`` (TE split_overlap_rs_p2p: reduce_bf16 of the tp
    received chunks on the main stream, after the last send): tp chunks of tokens/tp x out_features (``op.n``) read
    (``received_bytes`` an element when the userbuffer is fp8, else 16 bits), one written in 16 bits."""
    elements = op.m // tp * op.n   # queued: split_overlap_rs_p2p's C++ launches it after its last chunk (call_issue)
    if received_bytes is None:
        return Op("ub_reduce", "memory", 0.0, float((tp + 1) * elements * activation_bytes), queued=True)
    return Op("ub_reduce", "memory", 0.0, float((tp * received_bytes + activation_bytes) * elements), queued=True)


def apply(ops: dict[str, list[Op]], tp: int, precision: str, activation_bytes: int, sms: int,
          settings: dict[str, Gemm] | None = None, te_version: int = LATEST_TE_VERSION,
          grad_free_forward: bool = False) -> dict[str, list[Op]]:
    """A layer's ops per phase as userbuffers runs them on a GPU of ``sms`` SMs with ``settings`` (``config``; None:
    TE's defaults) in Transformer Engine ``te_version``.x: chunked ring-exchange and pipeline GEMMs, each GEMM on its
    ``math_sms`` (``Op.sms``, set only where the margin leaves SMs out), the copies into and out of the userbuffer
    on the compute stream (``copied_gemms``, one a GEMM and phase; an all-gather's in the fp8 elements it moves, a
    weight gradient's reduce-scattered output in 16 bits) and the reduce after a ring-exchange reduce-scatter.
    ``grad_free_forward`` (full recompute: Megatron's CheckpointFunction runs the first forward with autograd off):
    its all-gather GEMMs (``GRAD_FREE_NCCL_GEMMS``) run whole, their input gathered over NCCL (``plan``)."""
    copied = copied_gemms(te_version, precision)
    gathered_bytes = BYTES_PER_ELEMENT[precision] if precision in HIGH_PRECISION else activation_bytes
    out: dict[str, list[Op]] = {}
    for phase, phase_ops in ops.items():
        out[phase] = []
        copies_done: set[str] = set()
        for op in phase_ops:
            found = gemm(op.name, phase, settings) if op.kind == "gemm" else None
            if found is None or (grad_free_forward and phase == "forward"
                                 and te_name(op.name, phase) in GRAD_FREE_NCCL_GEMMS):
                out[phase].append(op)
                continue
            how, name = found.method, te_name(op.name, phase)
            copy = None
            if name in copied and name not in copies_done:   # once per GEMM (one TE module for split projections)
                copies_done.add(name)
                copy = buffer_copy(op, phase, tp, activation_bytes if phase == "backward_weight" else gathered_bytes)
                if phase != "backward_weight":   # an all-gather's buffer filled before the GEMM ...
                    out[phase].append(copy)
            fp8_out = BYTES_PER_ELEMENT[precision] if fp8_reduce_scatter(name, precision, settings) else None
            launched = math_sms(found, sms)
            reduce_scatter = phase in ("forward", "recompute") and op.name in REDUCE_SCATTER_OPS
            gemm_op = chunked(op, how, tp, precision, launched, found.aggregate, fp8_out, reduce_scatter,
                              pipeline_overlaps_first_gemm(te_version, precision))
            out[phase].append(dataclasses.replace(gemm_op, sms=launched) if launched != sms else gemm_op)
            if copy is not None and phase == "backward_weight":   # ... a reduce-scatter's emptied after it
                out[phase].append(copy)
            if how == "ring_exchange" and phase in ("forward", "recompute") and op.name in REDUCE_SCATTER_OPS:
                out[phase].append(ring_reduce(op, tp, activation_bytes, fp8_out))
    return out


# Row-parallel GEMMs whose forward output is reduce-scattered
REDUCE_SCATTER_OPS = ("attn_out", "mlp_down")


def exposed_reduce_scatters(ops: dict[str, list[Op]], settings: dict[str, Gemm] | None = None,
                            fp8_in: str | None = None) -> dict[str, int]:
    """Per phase, the pipeline overlaps of ``ops``: each leaves its last chunk's reduce-scatter (1/splits of the
    collective) exposed after its last chunk GEMM (TE split_overlap_rs). ``fp8_in`` a precision: only those whose
    reduce-scatter moves fp8 in it (``fp8_reduce_scatter``)."""
    def counted(op: Op, phase: str) -> bool:
        return (op.kind == "gemm" and method(op.name, phase, settings) == "pipeline"
                and (fp8_in is None or fp8_reduce_scatter(te_name(op.name, phase), fp8_in, settings)))
    return {phase: sum(1 for op in phase_ops if counted(op, phase)) for phase, phase_ops in ops.items()}


def exposed_stream(ops: dict[str, list[Op]], phases: tuple[str, ...], chunk_s: float,
                   settings: dict[str, Gemm] | None = None, fp8_chunk_s: float | None = None,
                   precision: str = "bf16") -> kernels.StreamTime:
    """Device time of ``phases`` spent on exposed reduce-scatter chunks of ``chunk_s`` each, ``fp8_chunk_s`` for
    those moving fp8 (``exposed_reduce_scatters`` fp8_in ``precision``; None: all at ``chunk_s``). No kernel of the
    compute stream: the compute stream waits for the communication stream."""
    counts = exposed_reduce_scatters(ops, settings)
    total = sum(counts.get(phase, 0) for phase in phases)
    if fp8_chunk_s is None:
        return kernels.StreamTime(device_s=chunk_s * total)
    fp8 = exposed_reduce_scatters(ops, settings, fp8_in=precision)
    in_fp8 = sum(fp8.get(phase, 0) for phase in phases)
    return kernels.StreamTime(device_s=chunk_s * (total - in_fp8) + fp8_chunk_s * in_fp8)


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
