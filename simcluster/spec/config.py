"""Scenario YAML -> validated pydantic models, with presets resolved and units parsed once.

Every user error becomes a ``ScenarioError`` naming the field (``parallelism.tp``) and what was expected.
The format is documented field by field in ``docs/scenario.md``; ``simcluster schema`` prints its JSON Schema.
"""

from __future__ import annotations

import functools
import math
import re
import typing
import unicodedata
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from simcluster.core import catalog, inputs, limits, units
from simcluster.core.errors import ScenarioError, did_you_mean, quoted, shown
from simcluster.core.units import Bytes, Count
from simcluster.spec import fabric_options, hardware, model
from simcluster.spec.base import Spec, serialized
from simcluster.spec.hardware import GpuSpec, NicSpec, Precision
from simcluster.spec.model import TransformerSpec
from simcluster.spec.reliability import Reliability
from simcluster.spec.variability import Variability, measured

NETWORK_MODELS = ("analytic", "flow", "chunk")

# Plain numbers of the scenario (prices, ratios) are finite and not booleans: YAML's .inf, .nan and true are refused.
FiniteFloat = units.FiniteNumber

# Plausibility bounds, checked before anything is allocated (docs/robustness.md):
# GPUs in one cluster: ten million is about fifty times the largest training clusters announced by 2025 (~2e5
# GPUs); the per-rank tables of a larger fabric alone would take gigabytes.
MAX_GPUS = 10**7
# GPUs in one NVLink domain: NVIDIA's largest announced is 576 (Rubin Ultra NVL576, GTC 2025).
MAX_GPUS_PER_NODE = 576
MAX_SEQ_LEN = model.MAX_SEQ_LEN
# Sequences per optimizer step: 10^8; published runs use at most a few thousand (Llama 3 405B: 16M tokens =
# 2048 x 8192), and critical batch sizes (McCandlish et al. 2018) stay far below.
MAX_GLOBAL_BATCH_SIZE = 10**8
# Microbatches per replica per step: each costs about a millisecond of simulation per pipeline stage, so 10^5 is
# already minutes; published pipelines run a few hundred at most.
MAX_MICROBATCHES = 10**5
# Optimizer steps simulated: each is simulated event by event and steady state is reached in the first few.
MAX_STEPS = 10**4
# Power usage effectiveness: 1.58 on average in the Uptime Institute's 2023 survey, ~2.5 for the oldest sites; 3
# would spend two watts on cooling and power delivery for every watt of computing.
MAX_PUE = 3.0
# Grid carbon intensity: coal-fired generation emits ~0.82 kg CO2-eq/kWh over its life cycle, lignite up to ~1.2
# (IPCC AR5 WG3 2014, Annex III, table A.III.2); 2 is above any grid.
MAX_KG_CO2_PER_KWH = 2.0
# Years over which a fabric's capital is spread: hyperscalers depreciate servers and network equipment over 4 to 6
# years (Microsoft FY2022 10-K: 6); 0.1 (five weeks) to 30 years brackets any schedule. 1e-308 years made the
# fabric's share of a GPU-hour, and so the run's cost, infinite (written as null); 0 a ZeroDivisionError.
MIN_FABRIC_LIFETIME_YEARS, MAX_FABRIC_LIFETIME_YEARS = 0.1, 30.0
# A scenario name becomes a folder name (runs/<name>/, runs/<name>-sweep-2/): file systems allow 255 bytes; the
# rest is left for the suffixes simcluster appends.
MAX_NAME_BYTES = 200


# training precisions with bf16 parameters, the only ones whose fp32 master weights the precision-aware optimizer
# keeps as 16-bit remainders (Transformer Engine FusedAdam: store_param_remainders only for torch.bfloat16 params;
# Megatron-Core: only with config.bf16; fp8 training keeps bf16 parameters)
PRECISION_AWARE_PRECISIONS = ("bf16", "fp8")

# training.logits_memory values of the PyTorch-native loss (torch's cross entropy on the model's logits, pipelined by
# torch.distributed.pipelining): fp32 logits (torchtitan) or the 16-bit ones (NeMo AutoModel without fp32_upcast)
TORCH_LOGITS = ("torch_fp32", "torch_16bit")

# the optimizers of Megatron-Core's distributed optimizer (``Scenario.megatron_core``)
MEGATRON_CORE_OPTIMIZERS = ("adam", "adam_precision_aware")
# the optimizers that step fp32 parameters in place, with no 16-bit model copy to write (training.autocast_fp32_params):
# torch.optim.AdamW (torch_adamw) and Composer's DecoupledAdamW; Megatron's and DeepSpeed's mixed-precision optimizers
# keep fp32 master weights beside 16-bit model weights and copy into them (workload/optimizer_step.py)
AUTOCAST_OPTIMIZERS = ("torch_adamw", "decoupled_adamw")

# Megatron-Core's default gradient bucket (distributed/distributed_data_parallel_config.py, bucket_size: "If
# unspecified, MCore uses a default value of max(40000000, 1000000 * dp_size) parameters (larger DP sizes need larger
# buckets to ensure collectives do not become latency-bound)"; DistributedDataParallel.__init__ from core_r0.7 takes
# dp_size = parallel_state.get_data_parallel_world_size(), without context parallelism, and sets no bucketing
# (bucket_size None) when overlap_grad_reduce is off); PyTorch DDP's bucket_cap_mb default is 25 MB.
MCORE_BUCKET_MIN_PARAMS = 40_000_000
MCORE_BUCKET_PARAMS_PER_RANK = 1_000_000
TORCH_DDP_BUCKET_BYTES = 25e6
# Apex DistributedFusedAdam (NeMo 1.x's optim.name distributed_fused_adam): bucket_cap_mb defaults to 100 and is
# counted in MiB (apex/contrib/optimizers/distributed_fused_adam.py: bucket_size = 1024*1024*bucket_cap_mb /
# dtype_size); NeMo-Framework-Launcher's nemotron_15b.yaml sets the same 100.
APEX_BUCKET_CAP_BYTES = 100 * 2**20

# wgrad_deferral_limit of NeMo's performance recipes with defer_embedding_wgrad_compute: 22 in the 24.09 launcher
# (conf/training/llama/llama3_70b.yaml, nemotron/nemotron_340b.yaml) and NeMo 2.x (llm/recipes/llama3_70b.py
# pretrain_recipe_performance; Llama 3 70B, Nemotron-4 340B), Megatron-Bridge's recipes' usual value; 50 in NeMo 2.x's
# for the models named here by their presets (llm/recipes/gpt3_175b.py pretrain_recipe_performance; Llama 3.1 405B:
# MegatronCommOverlapCallback with userbuffers_bf16_h100_h16384_tp8_cp2_mbs1_seqlen8192)
NEMO_WGRAD_DEFERRAL_LIMIT = 22
# Transformer Engine major versions (parallelism.te_version). LATEST_TE_VERSION: the newest, 2 (TE 2.0, 2025). A run
# that leaves it unset resolves to default_te_version: 1 on Hopper and older GPUs, what both hidden NeMo releases ran
# on DGX H100: NeMo 24.09 TE 1.10 (NeMo 24.09 user guide, "Software Component Versions"); NeMo 25.02 (NeMo r2.2.x,
# Megatron-Core 0.11) was built on nvcr.io/nvidia/pytorch:25.01-py3 (NeMo CHANGELOG r2.2.0 "build: Bump PyT to 25.01"
# #11973/#12323; requirements/manifest.json "ngc-pytorch": "nvcr.io/nvidia/pytorch:25.01-py3"), whose TE is 1.14 (a
# container on that base with core_r0.11.0 reports "Transformer Engine 1.14.0+87fbe81"; bionemo-framework pins
# TE_TAG=v1.13 on it, "the version that matches the pytorch base container"), and NeMo's CI pins a 1.x commit on that
# base (manifest.json transformer_engine ref 7d576ed, "pre-1.7.0"); TE 2.x recipes reached NeMo only in r2.3.0 (NeMo
# 25.04: "[NeMo 2.0] Interface for using MXFP8 and FP8 current scaling recipes" #12503, "Functional MXFP8 support for
# (G)B200"). Not certain for 25.02: NeMo's containers have shipped a newer TE than their base (24.09: TE 1.10 on
# PyTorch 24.07's 1.8) and r2.2.0 carries "Debug Apex distributed optimizer to handle Transformer Engine 2.0" (#12004);
# 1 is right for 24.09 in any case. 2 on Blackwell (a GPU with an fp4 peak: NeMo's Blackwell recipes run NeMo 25.04+ /
# Megatron-Bridge containers, TE 2.x; Megatron-Bridge docs/releases/software-versions.md: 25.09 TE 2.7, 25.11 TE 2.9),
# with the TE 2.x fp8 recipes (current scaling, MXFP8) and with Megatron-Core's fused MoE router (needs TE >= 2.6).
# docs/calibration/round-17.md, "Round 17: contract-only defaults against NeMo's recipes". Their userbuffers defaults
# (TE 2.x base.py get_default_config: set_sm_margin for pipeline and bulk) are in data/userbuffers.yaml.
LATEST_TE_VERSION = 2
TE2_FP8_RECIPES = frozenset({"current", "mxfp8"})


# The fp8 recipe a run of precision fp8 that states none gets (training.fp8_recipe). NeMo 1.x (24.09: the launcher's
# fp8_hybrid, fp8_amax_history_len 1024, fp8_amax_compute_algo max) and NeMo 2.x (25.02: recipes/precision/
# mixed_precision.py bf16_with_fp8_mixed, fp8_recipe "delayed"; scripts/performance/argument_parser.py --fp8_recipe
# choices ds/cs/mxfp8, "Defaults to ds") run Transformer Engine's delayed scaling. Megatron-Bridge's performance
# scripts, what NeMo 25.09+ / 25.11 benchmark on Blackwell with (DGX-B200 / GB200 / GB300), have no delayed option:
# scripts/performance/argument_parser.py --compute_dtype choices bf16, fp8_cs, fp8_mx, fp8_sc, nvfp4, and
# utils/precision.py get_precision_config maps fp8_cs to bf16_with_fp8_current_scaling_mixed (the performance summary's
# "FP8-CS" rows; FP8-MX in parentheses). A scenario names no framework or version (DESIGN.md's contract keys), so the
# GPU stands for the era, as for default_te_version: Blackwell (an fp4 peak) is read as Megatron-Bridge. It is a proxy,
# not the framework: NeMo 2.x (25.02-25.07: bf16_with_fp8_mixed; the performance scripts take any --gpu and default to
# ds) defaults to delayed scaling on Blackwell too, Megatron-Bridge runs fp8_cs on H100 too; NeMo 24.09 (PyTorch 24.07
# container, TE 1.10) predates Blackwell. fp8_recipe_note says so on every run that takes this default.
# docs/calibration/round-24.md, "Round 24: contract-only runs get the framework's defaults" and "Round 24: review of the
# framework's fp8 defaults".
DEFAULT_FP8_RECIPE = "delayed"
BLACKWELL_FP8_RECIPE = "current"


def default_fp8_recipe(gpu: GpuSpec, precision: str, megatron_core: bool, mcore_version: str | None = None) -> str:
    """training.fp8_recipe of a run that leaves it unset: current scaling for an fp8 run on Megatron-Core of a
    Megatron-Bridge release (``mcore_version`` 0.14 on, data/mcore_versions.yaml ``megatron_bridge``: its fp8_cs) or,
    with no release given, on Blackwell (a GPU with an fp4 peak, as ``default_mcore_version`` reads it); else delayed
    scaling (``DEFAULT_FP8_RECIPE``'s comment)."""
    if precision != "fp8" or not megatron_core:
        return DEFAULT_FP8_RECIPE
    if mcore_version is not None:
        return BLACKWELL_FP8_RECIPE if _at_least(mcore_version, "megatron_bridge") else DEFAULT_FP8_RECIPE
    return BLACKWELL_FP8_RECIPE if "fp4" in gpu.peak else DEFAULT_FP8_RECIPE


def fp8_recipe_note(scenario: Scenario) -> str | None:
    """One line naming the fp8 recipe an fp8 run on Megatron-Core that states none was given, the framework version
    it stands for and what to state for the other one (None when the scenario states it or reads none)."""
    t = scenario.training
    if "fp8_recipe" not in t._resolved or t.precision != "fp8" or not scenario.megatron_core:
        return None
    if t.fp8_recipe == BLACKWELL_FP8_RECIPE:
        return (f"training.fp8_recipe (default) is current scaling: Megatron-Bridge's fp8_cs (NeMo 25.09+, "
                f"Megatron-Core 0.14 on; mcore_version {t.mcore_version}); NeMo 2.x (25.02-25.07) defaults to "
                "delayed scaling on any GPU: state fp8_recipe: delayed for it")
    return (f"training.fp8_recipe (default) is delayed scaling: NeMo 24.09 / 25.02 (bf16_with_fp8_mixed; "
            f"mcore_version {t.mcore_version}); Megatron-Bridge (NeMo 25.09+) runs current scaling (fp8_cs): state "
            "fp8_recipe: current for it")


# The MoE router options (training.moe_*) at what a dense model runs: the values nothing reads (moe_router's
# resolved default). Another value on a dense model is refused (Scenario._check_experts).
DENSE_MOE_ROUTER_DEFAULTS = {"moe_router": "unfused", "moe_router_dtype": "model", "moe_load_balancing": "aux_loss",
                             "moe_cuda_graphs": False}


def default_te_version(gpu: GpuSpec, precision: str, fp8_recipe: str, moe_router: str | None = None) -> int:
    """parallelism.te_version of a run that leaves it unset: 2 on Blackwell (a GPU with an fp4 peak), with a TE 2.x
    fp8 recipe or with the fused MoE router (--moe-router-fusion: TE >= 2.6), else 1 (NeMo 24.09's TE 1.10 and
    25.02's TE 1.14 on H100; LATEST_TE_VERSION's comment)."""
    if ("fp4" in gpu.peak or (precision == "fp8" and fp8_recipe in TE2_FP8_RECIPES)
            or moe_router == "fused"):
        return LATEST_TE_VERSION
    return 1


# Whether Megatron-Core runs a multi-latent-attention model with TP communication overlap (userbuffers): no release
# read does (docs/calibration/round-27.md, "Round 27: TP overlap with multi-latent attention and the MoE zoo's
# Megatron-Core release"; the megatron-core wheels, PyPI, megatron/core/extensions/transformer_engine.py and
# transformer/multi_latent_attention.py). 0.11 and 0.12: MLA's projections are built without a tp_comm_buffer_name,
# and TELinear / TELayerNormColumnParallelLinear assert "Buffer name should be set to configure communication overlap
# settings" under config.tp_comm_overlap (the model is not built). 0.13, 0.14 and 0.15: TELinear.__init__ sets
# ``self.config.tp_comm_overlap = False`` (the model's shared TransformerConfig: "Disabling TP communication overlap
# for this layer") for a buffer name outside qkv, proj, fc1, fc2, and MLASelfAttention builds ``linear_q_down_proj``
# ('q_down_proj'; without q_lora_rank ``linear_kv_down_proj``, 'kv_down_proj') before every other TE linear of the
# model but the first layer's ``linear_proj``. Megatron-Bridge's DeepSeek-V3 recipes (deepseek_v3.py) default to
# ``CommOverlapConfig(tp_comm_overlap=False)`` besides.
MLA_RUNS_TP_OVERLAP = False


# Megatron-Core releases (training.mcore_version): the known ones, the era boundaries and the by-GPU default, each
# with its source, in data/mcore_versions.yaml (docs/calibration/round-25.md, "Round 25: the Megatron-Core release as a
# scenario key").
def mcore_release(version: str) -> tuple[int, int]:
    """A "major.minor" release as numbers, for ordering ('0.10' after '0.9')."""
    major, minor = version.split(".")
    return int(major), int(minor)


def known_mcore_versions() -> list[str]:
    """Every Megatron-Core minor release (data/mcore_versions.yaml ``releases``)."""
    return list(catalog.load("mcore_versions")["releases"])


def default_etp(moe, p: Parallelism, core: bool) -> int:
    """``parallelism.etp`` left unset. Without expert parallelism (ep 1) Megatron-Core splits each expert over the
    tensor-parallel ranks (megatron/core/parallel_state.py initialize_model_parallel: "if
    expert_tensor_parallel_size is None: expert_tensor_parallel_size = tensor_model_parallel_size", NVIDIA/Megatron-LM
    @ 934c826; before the option existed, Megatron-Core 0.9 / NeMo 24.09, the experts' linear layers were tensor
    parallel too): NeMo 2.x's long-context Mixtral recipes (mixtral_8x7b_16k.py / _64k.py: tp 4, ep 1) and the 24.09
    launcher's mixtral_8x22b.yaml (tp 8, no ep) run that way. With ep > 1, NeMo's recommended H100 configurations set
    ETP 1 (scripts/llm/performance/recommended_model_configs/model_configs_h100.csv @ 349c401: Mixtral 8x22B TP4 EP8
    ETP1), so 1. Elsewhere (a dense model, another stack, tp 1, an expert ffn tp does not divide) 1."""
    if moe is None or not core or p.tp == 1 or p.ep > 1 or moe.ffn_hidden % p.tp:
        return 1
    return p.tp


def default_mcore_version(gpu: GpuSpec) -> str:
    """training.mcore_version of a Megatron-Core run that leaves it unset: the first Megatron-Bridge container's
    release on Blackwell (a GPU with an fp4 peak), NeMo 24.09's elsewhere (data/mcore_versions.yaml ``default``)."""
    default = catalog.load("mcore_versions")["default"]
    return default["blackwell" if "fp4" in gpu.peak else "other"]


def _at_least(version: str | None, boundary: str) -> bool:
    return version is not None and mcore_release(version) >= mcore_release(catalog.load("mcore_versions")[boundary])


def release_in(version: str | None, span: str) -> bool:
    """Whether a release is in a span of data/mcore_versions.yaml (``{first, until}``: from first up to, not
    including, until); None (no release): no."""
    bounds = catalog.load("mcore_versions")[span]
    return (version is not None
            and mcore_release(bounds["first"]) <= mcore_release(version) < mcore_release(bounds["until"]))


def lazy_first_param_gather(version: str | None) -> bool:
    """Whether a release dispatches a model chunk's first parameter all-gather at the chunk's first forward pre-hook
    (the bucket groups, 0.9 on) rather than at optimizer.zero_grad, the step's start (0.8 and before); None (not
    Megatron-Core): no."""
    return _at_least(version, "lazy_first_param_gather")


def stated_mcore_version(training: Training) -> str | None:
    """The Megatron-Core release a scenario states (``training.mcore_version`` as written), None where it leaves it
    to the by-GPU default: a NeMo behaviour pinned by container reads only a stated release."""
    return None if "mcore_version" in training._resolved else training.mcore_version


def container_cudnn(version: str | None) -> str | None:
    """The cuDNN release of the NeMo container that shipped a Megatron-Core release (data/mcore_versions.yaml
    ``nemo_containers`` and ``container_cudnn``: 25.09's 9.11.0 ... 26.04's 9.20.0); None for no release and for
    releases whose container's cuDNN is not listed (the NeMo 24.x containers, releases no container names)."""
    tables = catalog.load("mcore_versions")
    containers = [name for name, release in tables["nemo_containers"].items() if release == version]
    return next((tables["container_cudnn"][name] for name in containers if name in tables["container_cudnn"]), None)


def container_te(version: str | None) -> str | None:
    """The Transformer Engine release ("major.minor") of the NeMo container that shipped a Megatron-Core release
    (data/mcore_versions.yaml ``nemo_containers`` and ``container_te``: 24.05's 1.6, 24.07's 1.8, 24.09's 1.10,
    25.09's 2.7 ... 26.04's 2.14); None for no release and for releases whose container's TE is not listed here."""
    tables = catalog.load("mcore_versions")
    containers = [name for name, release in tables["nemo_containers"].items() if release == version]
    return next((tables["container_te"][name] for name in containers if name in tables["container_te"]), None)


def megatron_bridge_release(version: str | None) -> bool:
    """Whether a release is a Megatron-Bridge container's (data/mcore_versions.yaml ``megatron_bridge``: NeMo 25.09's
    0.14 on), whose recipes pass Megatron-Bridge's userbuffers configurations (data/userbuffers.yaml
    megatron_bridge_configs); None (no release stated): no."""
    return _at_least(version, "megatron_bridge")


def fused_moe_router(version: str | None) -> bool:
    """Whether a release has Megatron-Core's fused MoE router (--moe-router-fusion; data/mcore_versions.yaml
    ``moe_router_fusion``: 0.14 on, absent from 0.13)."""
    return _at_least(version, "moe_router_fusion")


def nemo_fp32_embedding_grads(version: str | None) -> bool:
    """Whether a release's NeMo container reduces the word embedding's gradient in fp32 under Apex's distributed Adam
    (data/mcore_versions.yaml ``nemo_fp32_embedding_grads``: NeMo 24.05's 0.7 on, NeMo 2.0.0rc0's
    ``_with_fp32_optimizer``); None (no release): no."""
    return _at_least(version, "nemo_fp32_embedding_grads")


def nemo_apex_group_per_virtual_stage(version: str | None) -> bool:
    """Whether a release's NeMo container gives Apex one bucket group per model chunk under virtual stages rather than
    one per Transformer layer (data/mcore_versions.yaml ``nemo_apex_group_per_virtual_stage``: NeMo 24.09's 0.9 on,
    NeMo 2.0.0's ``configure_optimizers``); None (no stated release): no."""
    return _at_least(version, "nemo_apex_group_per_virtual_stage")


def grad_scaling_at_least(version: str | None, boundary: str) -> bool:
    """Whether a release is at or after a boundary of Megatron's gradient scaling before the data-parallel reduction
    (data/mcore_versions.yaml ``grad_scaling``; workload/grad_scaling.py); None (no release): no."""
    return version is not None and mcore_release(version) >= mcore_release(
        catalog.load("mcore_versions")["grad_scaling"][boundary])


def has_nan_check(version: str | None) -> bool:
    """Whether a release's DistributedDataParallel can check each gradient bucket for NaN before its collective
    (data/mcore_versions.yaml ``nan_check``: 0.6 on; workload/nan_check.py); None (no release): no."""
    return _at_least(version, "nan_check")


def nan_check_reads_isinf(version: str | None) -> bool:
    """Whether a release's NaN check also reads each bucket norm's isinf, a second host read (data/mcore_versions.yaml
    ``nan_check_isinf``: 0.12 on, ``check_grads``); None: no."""
    return _at_least(version, "nan_check_isinf")


def nan_check_group_read(version: str | None) -> bool:
    """Whether a release's NaN check reads once a bucket group, ``logical_or_``-ing its buckets' isnan first
    (data/mcore_versions.yaml ``nan_check_group_read``: 0.9); elsewhere once (twice) a bucket."""
    return release_in(version, "nan_check_group_read")


def nemo_average_in_collective(version: str | None) -> bool:
    """``parallelism.average_in_collective`` left unset: whether the release's NeMo container averages in the
    collective (data/mcore_versions.yaml ``grad_scaling.nemo_average_in_collective``: NeMo 24.09's 0.9 on)."""
    return grad_scaling_at_least(version, "nemo_average_in_collective")


def gpu_catalog_note(scenario: Scenario) -> str | None:
    """One line when an inline GPU named like a catalog GPU has other silicon figures (``hardware.SILICON_FIGURES``):
    it still takes that GPU's per-GPU tables (efficiency.yaml: SM count, clocks, GEMM and HBM fractions, fp8
    layouts), which were measured on the catalog's chip: a what-if of that chip with one figure changed (``sweep
    --vary cluster.gpu.hbm_bandwidth=...``), not another chip's measurement."""
    gpu = scenario.cluster.gpu
    lookalike = hardware.catalog_lookalike(gpu)
    if lookalike:
        return (f"cluster.gpu.name: {quoted(gpu.name)} is not the catalog's {quoted(lookalike)} (names match "
                f"exactly): simulated with the default per-GPU tables, not {lookalike}'s; name it {quoted(lookalike)} "
                "for them")
    conflict = hardware.catalog_conflict(gpu)
    if not conflict:
        return None
    return (f"cluster.gpu.name: {quoted(gpu.name)} is a catalog GPU but its {conflict}: simulated with that GPU's "
            "per-GPU tables (SMs, clocks, GEMM and HBM fractions measured on it), a what-if of that chip; give "
            "another name for the tables' defaults")


def mcore_version_note(scenario: Scenario) -> str | None:
    """One line naming the Megatron-Core release a run that states none was given and what it changes, when the
    release changes this layout's step: ZeRO 1/2 with overlap_param_gather over a data-parallel group of more than
    one rank (dp x cp: the distributed optimizer shards over both, as the engine gathers) and a pipeline: without
    virtual stages, whose later stages' first gather the release starts in the fill or at the step's start; with
    them (Megatron-Core's own buffers, not Apex's), whose chunks' gathers the release dispatches from the schedule
    (0.9 on) or chains behind the previous chunk's (before; engine/data_parallel.py ``GatherDuringForward``)."""
    t, p = scenario.training, scenario.parallelism
    if "mcore_version" not in t._resolved or t.mcore_version is None:
        return None
    if not (p.dp * p.cp > 1 and p.zero_stage in (1, 2) and p.overlap_param_gather and p.pp > 1
            and (p.virtual_stages == 1 or p.grad_buckets != "apex")):
        return None
    containers = [name for name, version in catalog.load("mcore_versions")["nemo_containers"].items()
                  if version == t.mcore_version]
    release = f"the NeMo {containers[0]} container's" if containers else "a release"
    if p.virtual_stages > 1:
        return (f"training.mcore_version (default) is {t.mcore_version}, {release} Megatron-Core on this GPU: the "
                "pipeline schedule dispatches each model chunk's parameter all-gathers (align_param_gather, 0.9 and "
                "later: chunks 0 and 1 at the start, chunk c at the forward (c - 1) pp - pp_rank); state "
                "mcore_version: '0.8' for NeMo 24.07 or a Megatron-LM before 0.9 (each chunk's gathers start when "
                "the previous chunk's last one is waited for)")
    return (f"training.mcore_version (default) is {t.mcore_version}, {release} Megatron-Core on this GPU: each "
            "pipeline stage after the first dispatches its parameter all-gather at its first forward (the bucket "
            "groups of 0.9 and later), exposed in the pipeline fill; state mcore_version: '0.8' for NeMo 24.07 or a "
            "Megatron-LM before 0.9 (gathered from the step's start, behind the fill)")


# gpt3-175b-nemo: GPT-3 175B with NeMo's vocab padded to 51200, the NeMo rows' inline model, trained by the same
# gpt3_175b recipe (data/userbuffers.yaml lists it beside gpt3-175b for the same reason).
NEMO_WGRAD_DEFERRAL_LIMITS = {"gpt3-175b": 50, "gpt3-175b-nemo": 50, "llama3-405b": 50, "llama3.1-405b": 50}

# Models whose NeMo performance recipes reduce gradients in bf16 in bf16 training too (elsewhere bf16 only with fp8):
# NeMo 2.x llm/recipes/gpt3_175b.py and nemotron4_340b.py pretrain_performance_optimizations set
# plugins.grad_reduce_in_fp32 = False for both precisions, and the 24.09 launcher's gpt3/175b and nemotron_340b
# configs set optim.grad_sync_dtype: bf16 (llama3_70b.py does not). NeMo 24.09's dgxc Nemotron-4 340B recipe too
# (nemotron4-340b-synth.yaml: grad_sync_dtype bf16); its 15B recipe reduces in fp32 (mcore_distributed_optim without
# grad_sync_dtype: NeMo 1.x setup_mcore_distributed_parallel, grad_reduce_in_fp32 = grad_sync_dtype == 'fp32'). One
# stored NeMo 2.x script version (pretrain_nemotron4_15b.py 10145fe, NeMo 2.2.0's "callbacks and bf16 grad" #11985)
# reduces in bf16 for bf16 runs of every model, a later one (bf2c0d18) for fp8 only: docs/calibration/round-15.md,
# "Round 15". Mixtral 8x7B and 8x22B reduce in bf16 in both releases: NeMo 2.x llm/recipes/mixtral_8x7b.py and
# mixtral_8x22b.py pretrain_performance_optimizations set recipe.trainer.plugins.grad_reduce_in_fp32 = False (no
# precision test), and the 24.09 launcher's conf/training/mixtral/mixtral_8x7b.yaml (0937882) sets
# optim.grad_sync_dtype: bf16 under mcore_distributed_optim (NeMo 1.x: grad_reduce_in_fp32 = grad_sync_dtype == 'fp32').
# docs/calibration/round-18.md, "Round 18: the contract keys against every NeMo 2.x performance recipe".
NEMO_BF16_GRAD_REDUCE_MODELS = frozenset({"gpt3-175b", "gpt3-175b-nemo", "nemotron4-340b", "mixtral-8x7b",
                                          "mixtral-8x22b"})


# MoE models whose NeMo performance recipes drop tokens at capacity 1.0 and pad every expert to it (training
# .moe_token_drop): NeMo 2.x llm/recipes/mixtral_8x7b.py and mixtral_8x22b.py performance mode append
# MegatronTokenDropCallback (nemo/lightning/pytorch/callbacks/moe_token_drop.py: moe_expert_capacity_factor 1.0,
# moe_pad_expert_input_to_capacity True), and NeMo-Framework-Launcher's conf/training/mixtral/mixtral_8x7b.yaml sets
# moe_expert_capacity_factor 1.0 and moe_pad_expert_input_to_capacity True. docs/calibration/round-18.md, "Round 18".
NEMO_TOKEN_DROP_MODELS = frozenset({"mixtral-8x7b", "mixtral-8x22b"})
NEMO_TOKEN_DROP_CAPACITY = 1.0

# Models whose NeMo performance recipes leave TP communication overlap and the output layer's wgrad deferral off
# (parallelism.tp_comm_overlap, defer_embedding_wgrad): NeMo 2.x llm/recipes/mixtral_8x22b.py (00138e2) and
# mixtral_8x7b.py pretrain_performance_optimizations add MegatronCommOverlapCallback without tp_comm_overlap or
# defer_embedding_wgrad_compute, and the callback starts both from False ("Optimizations disabled by default",
# nemo/lightning/pytorch/callbacks/megatron_comm_overlap.py @ 03ec896 and every stored version); NeMo 1.x (24.09):
# NeMo-Framework-Launcher conf/training/mixtral/mixtral_8x7b.yaml and mixtral_8x22b.yaml (0937882) state
# ub_tp_comm_overlap: false and no defer_embedding_wgrad_compute (NeMo 1.x's default False).
# docs/calibration/round-27.md, "Round 27: contract-only defaults against NeMo's MoE and long-context recipes".
NEMO_NO_COMM_OVERLAP_MODELS = frozenset({"mixtral-8x7b", "mixtral-8x22b"})

# NeMo 2.x's long-context recipes (llm/recipes/llama3_8b_16k.py / _64k.py @ 0189a3b, llama3_8b_128k.py @ 4924ebf,
# llama3_70b_16k.py @ 0633c8f, llama3_70b_64k.py @ 033457a, nemotron4_15b_16k.py @ 06cca55, nemotron4_15b_64k.py @
# 05d8bf2, nemotron3_22b_16k.py / _64k.py and mixtral_8x22b_64k.py @ 280786e, mixtral_8x7b_16k.py @ 033457a,
# mixtral_8x7b_64k.py @ 0189a3b) train at 16384 tokens or more (their *_16k names the shortest) and build on each
# model's plain pretrain_recipe (performance_mode False): no MegatronCommOverlapCallback (TP overlap off, the
# output layer's wgrad not deferred: TransformerConfig's defaults), no MegatronTokenDropCallback (dropless), and the
# trainers' grad_reduce_in_fp32=True with bf16_mixed (recipes/precision/mixed_precision.py @ 0a07447: fp32; its
# bf16_with_fp8_mixed keeps it). NeMo 1.x's long-context launcher confs agree (NeMo-Framework-Launcher
# conf/training/gpt3/175b_16k.yaml @ 3bffbed: ub_tp_comm_overlap False, Apex distributed_fused_adam without
# grad_sync_dtype, i.e. fp32, no defer_embedding_wgrad_compute). A run at this length or more on Megatron-Core
# is read as one of them, unless its model's performance recipe runs that long: NEMO_PERFORMANCE_SEQ_LENS, the
# longest sequence of each model's pre_train rows in NeMo's recommended H100 configurations (scripts/llm/
# performance/recommended_model_configs/model_configs_h100.csv @ 349c401: Mixtral 8x22B 65536; every other model
# 8192 or less).
NEMO_LONG_CONTEXT_SEQ_LEN = 16384
NEMO_PERFORMANCE_SEQ_LENS = {"mixtral-8x22b": 65536}


def nemo_long_context(recipe: frozenset[str], seq_len: int) -> bool:
    """Whether a Megatron-Core run of the model NeMo knows by ``recipe`` (``recipe_models``) at ``seq_len`` is one of
    NeMo's long-context recipes (NEMO_LONG_CONTEXT_SEQ_LEN, NEMO_PERFORMANCE_SEQ_LENS)."""
    longest = max((NEMO_PERFORMANCE_SEQ_LENS[n] for n in recipe & NEMO_PERFORMANCE_SEQ_LENS.keys()), default=0)
    return seq_len >= NEMO_LONG_CONTEXT_SEQ_LEN and seq_len > longest


def token_dropped(m: TransformerSpec) -> TransformerSpec:
    """The MoE model with every expert capped at NeMo's capacity factor and padded to it (training.moe_token_drop);
    a dense model, or one that states its own capacity factor, is returned as it is."""
    if m.moe is None or m.moe.capacity_factor is not None:
        return m
    moe = m.moe.model_copy(update={"capacity_factor": NEMO_TOKEN_DROP_CAPACITY, "pad_to_capacity": True})
    return m.model_copy(update={"moe": moe})


# How a preset may be named (``model: NAME``): NeMo's recipes and performance scripts write llama31_405b,
# nemotron4_15b, mixtral_8x7b, gpt3_175b (nemo/collections/llm/recipes/*.py NAME; scripts/llm/performance/
# recommended_model_configs/model_configs_h100.csv model+size: llama31 405b), Hugging Face Llama-3.1-405B, the presets
# here llama3.1-405b. One rule: the name as written; else lower case with '_' and ' ' read as '-'; else with every
# '-', '_', '.' and ' ' ignored, when that leaves one preset (gpt3-1.3b and gpt3-13b both read gpt313b: such a name
# is refused, naming both).
_NAME_SEPARATORS = str.maketrans("", "", "-_. ")


def preset_name(value: str) -> str:
    """The preset (data/models.yaml) a model name written by a user means (``_NAME_SEPARATORS``' rule, or a NeMo
    long-context recipe name: ``context_suffix``); a name that means none is returned as written, for
    ``model.preset`` to refuse with the list of presets."""
    found = _spelled_preset(value)
    if found is None and (context := context_suffix(value)) is not None:
        found = context[0]
    return value if found is None else found


def _spelled_preset(value: str) -> str | None:
    """The preset a name means by ``_NAME_SEPARATORS``' rule alone (no context suffix), None if none."""
    presets = catalog.load("models")
    spelled = value.strip().casefold().replace("_", "-").replace(" ", "-")
    for name in (value, spelled):
        if name in presets:
            return name
    compact = spelled.translate(_NAME_SEPARATORS)
    found = sorted(name for name in presets if name.translate(_NAME_SEPARATORS) == compact)
    if len(found) > 1:
        raise ScenarioError("model", f"{quoted(value)} could name any of {', '.join(found)}: write one of them")
    return found[0] if found else None


def context_suffix(value: str) -> tuple[str, int] | None:
    """(preset, sequence tokens) of a NeMo long-context recipe name (``llama3_8b_128k``: llama3-8b at 131072 tokens,
    a 'k' being 1024 tokens as in NeMo's recipes: llama3_8b_16k.py seq_length 16384, _64k 65536, _128k 131072); None
    for a name without such a suffix or whose stem is no preset. One suffix only: the stem is read without one
    (``llama3_8b_16k_16k`` means nothing; round 27's recursive reading overflowed Python's stack on a long chain of
    them, a traceback)."""
    context = _CONTEXT_SUFFIX.fullmatch(value.strip().casefold().replace("_", "-").replace(" ", "-"))
    if not context or not context["stem"]:
        return None
    stem = _spelled_preset(context["stem"])
    return None if stem is None else (stem, int(context["k"]) * 1024)


# NeMo 2.x's long-context recipes are named for the model and the sequence they train at (llama3_8b_16k,
# nemotron4_15b_64k, mixtral_8x22b_64k, ...) and build the model of the plain name (nemo/collections/llm/recipes/
# nemotron.py: "nemotron4_15b_16k" -> Nemotron4Config15B(seq_length=16384); llama3_8b_16k.py: llama3_8b.model() with
# seq_length 16384): such a name means that preset at that length, which training.seq_len must state
# (Scenario._context_suffix_is_seq_len).
# 1 to 7 digits, no leading zero ('0k' names no length): 10^7 k tokens is beyond MAX_SEQ_LEN already, and int()
# refuses more than 4300 digits (a traceback) where a longer run of them would reach it.
_CONTEXT_SUFFIX = re.compile(r"(?P<stem>.*?)[-.]*(?P<k>[1-9][0-9]{0,6})k")


def _layer_shape(m: TransformerSpec) -> tuple[int, ...]:
    return m.layers, m.hidden, m.heads, m.n_kv_heads, m.ffn


@functools.cache
def _presets_of_shape(shape: tuple[int, ...]) -> frozenset[str]:
    """The dense presets (data/models.yaml) of this layer shape (layers, hidden, heads, kv heads, ffn)."""
    presets = (model.preset(name) for name in catalog.load("models"))
    return frozenset(m.name for m in presets if m.moe is None and m.mla is None and _layer_shape(m) == shape)


# The keys of DESIGN.md's inline model ("inline: {layers, hidden, heads, kv_heads, ffn_hidden, vocab}"); the
# architecture (mlp, norm, position, bias, tied embeddings, dropout) is not among them.
CONTRACT_MODEL_KEYS = frozenset({"layers", "hidden", "heads", "kv_heads", "ffn_hidden", "vocab"})
# What two presets of one shape may differ in and still be the same architecture (Llama 3 and 3.1: the context).
_NOT_ARCHITECTURE = {"name", "source", "max_seq_len"}


# How far a model's vocab may be from a preset's and still be that preset's, padded: Megatron pads the vocab to a
# multiple of --make-vocab-size-divisible-by (128) x tp (megatron/training/tokenizer's _vocab_size_with_padding), so
# at tp 8 by up to 1023 entries: NeMo's GPT-3 175B pads 50257 to 51200 (+943). Farther apart: another model.
PADDED_VOCAB_MAX = 1024


def shape_presets(m: TransformerSpec) -> tuple[list[TransformerSpec], str]:
    """The one rule both ``contract_inline_preset`` and ``recipe_match`` read an unnamed model by: the dense presets
    of its layer shape with its vocab ("shape+vocab"), else with the nearest vocab when that is within padding of
    it (``PADDED_VOCAB_MAX``: "shape+nearest-vocab"), else none ("none")."""
    shape = [model.preset(name) for name in sorted(_presets_of_shape(_layer_shape(m)))]
    nearest = min((abs(p.vocab - m.vocab) for p in shape), default=math.inf)
    if nearest > PADDED_VOCAB_MAX:
        return [], "none"
    return [p for p in shape if abs(p.vocab - m.vocab) == nearest], "shape+vocab" if nearest == 0 else \
        "shape+nearest-vocab"


def contract_inline_preset(value):
    """An inline model written with DESIGN.md's keys only, as the preset of that shape (layers, hidden, heads, kv
    heads, ffn) and vocab (``shape_presets``: the same vocab, else one within padding of it, the stated vocab kept)
    when those presets share one architecture: an outside tool writing Llama 3 8B inline cannot state swiglu, rmsnorm
    and rope, and GPT-style defaults would simulate another model (2 MLP matrices, not 3: the NeMo Llama 3.1 8B row
    19% shorter a step). Of several such presets (Llama 3 and 3.1), the longest context. Anything else (another key
    stated, no preset of that shape and vocab, presets of different architectures) is taken as written."""
    if not isinstance(value, dict) or not value or set(value) - CONTRACT_MODEL_KEYS:
        return value
    try:
        spec = TransformerSpec(**value)
    except ValueError:
        return value  # the field's own validation reports it
    matches = shape_presets(spec)[0]
    if len({tuple(sorted(m.model_dump(exclude=_NOT_ARCHITECTURE).items(), key=str)) for m in matches}) != 1:
        return value
    return {**max(matches, key=lambda m: m.max_seq_len).model_dump(), "vocab": spec.vocab}


def _recipe_settings(name: str) -> tuple:
    """What NeMo's recipe sets per model: bf16 reduction in bf16 runs, the wgrad deferral limit, and the userbuffers
    configurations (data/userbuffers.yaml nemo_configs entries) that list the model."""
    configs = catalog.load("userbuffers")["nemo_configs"]
    return (name in NEMO_BF16_GRAD_REDUCE_MODELS, NEMO_WGRAD_DEFERRAL_LIMITS.get(name),
            frozenset(i for i, entry in enumerate(configs) if name in entry["match"]["models"]))


def recipe_match(m: TransformerSpec) -> tuple[frozenset[str], str]:
    """The preset names NeMo's per-model settings (NEMO_BF16_GRAD_REDUCE_MODELS, NEMO_WGRAD_DEFERRAL_LIMITS,
    data/userbuffers.yaml nemo_configs) know a model by, and how they were chosen. A named model (or MoE/MLA): its name
    alone ("name"): Megatron-LM's 177B benchmark model has GPT-3 175B's layers but Megatron-LM's settings (fp32
    reduction with --bf16, TE's userbuffers defaults), not NeMo's recipe. An unnamed model, however it is written (its
    keys do not matter): ``shape_presets``, the presets of its layer shape and vocab ("shape+vocab"); when no preset of
    that shape has its vocab, those of the shape with the nearest vocab within padding of it ("shape+nearest-vocab":
    a padded vocab, NeMo's GPT-3 50257 -> 51200, is still gpt3_175b.py's model; NeMo picks these settings by the model
    its recipe builds). When those presets' recipe settings disagree, none of them ("ambiguous"): the run's own
    defaults, never a union. No preset of the shape, or none within padding of its vocab: "none"."""
    if m.name != TransformerSpec.model_fields["name"].default or m.moe is not None or m.mla is not None:
        return frozenset({m.name}), "name"
    presets, chosen_by = shape_presets(m)
    if not presets:
        return frozenset({m.name}), chosen_by
    found = frozenset(p.name for p in presets)
    if len({_recipe_settings(name) for name in found}) > 1:
        return frozenset({m.name}), "ambiguous"
    return found | {m.name}, chosen_by


def recipe_models(m: TransformerSpec) -> frozenset[str]:
    """The preset names NeMo's per-model settings know a model by (``recipe_match``)."""
    return recipe_match(m)[0]


class _Strict(Spec):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Defaulted(_Strict):
    """A section with options that default to what the framework runs, which may hang on other sections: left unset
    (None) they are resolved while the scenario is validated (``resolve``). Dumps show the resolved values, except
    ``rebuildable`` ones (sweep and compare grid points, validation layouts), where they are unset again (null) so
    that a scenario rebuilt with another layout resolves them anew."""

    _resolved: dict[str, Any] = PrivateAttr(default_factory=dict)

    def resolve(self, **defaults) -> None:
        """Set the fields of ``defaults`` still unset (None). The model is frozen: they are set once, while the
        scenario is validated, so that every later reader sees plain values."""
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
                self._resolved[name] = value

    def __eq__(self, other: object) -> bool:
        """Equal fields, however they were set (the record of resolved defaults is not part of the value)."""
        if type(self) is not type(other):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        """The field values' hash, consistent with ``__eq__`` (pydantic's frozen hash of ``_Strict``, which has no
        fields, would be 0 for every section)."""
        return hash((type(self), *self.__dict__.values()))

    @model_serializer(mode="wrap")
    def _dump_defaults_unset(self, handler, info):
        data = serialized(handler, self)
        if not isinstance(data, dict) or not (info.context or {}).get(UNRESOLVED):
            return data
        # a value set since (model_copy(update=...)) is the caller's, not the default: kept
        return {name: (None if name in self._resolved and getattr(self, name) == self._resolved[name] else value)
                for name, value in data.items()}


# serialisation context of ``rebuildable``
UNRESOLVED = "unresolved_defaults"


def rebuildable(scenario: BaseModel) -> dict:
    """The scenario as a JSON-ready dict with its framework defaults unset again: what a grid point or a restated
    layout is rebuilt from (``from_dict``), so that the defaults follow the new layout rather than the old one."""
    return scenario.model_dump(mode="json", context={UNRESOLVED: True})


class Cluster(_Strict):
    gpu: GpuSpec = Field(description="catalog name (h100-sxm, a100-80gb-sxm, ...) or an inline GPU spec")
    gpus_per_node: Count = Field(8, le=MAX_GPUS_PER_NODE, description="GPUs in one NVLink/NVSwitch domain")
    nodes: Count = Field(1, le=MAX_GPUS, description="number of nodes")
    nic: NicSpec = Field("connectx-7", validate_default=True,
                         description="catalog name or inline NIC spec, one per GPU")
    topology: str = Field("rail-fat-tree", min_length=1,
                          description="builtin fabric name or a path to a YAML/GraphML file")
    topology_options: dict[str, Any] = Field(
        default_factory=dict, description="options of the fabric builder, e.g. {oversubscription: 4}")
    sharp: Literal["auto", "on", "off"] = Field(
        "off", description="in-network reduction in InfiniBand switches (SHARP): off (default, as NCCL without "
        "NCCL_COLLNET_ENABLE=1) = never; auto = where the fabric has it, chosen where NCCL's tuner would; "
        "on = required")
    price_per_gpu_hour: FiniteFloat | None = Field(None, ge=0, le=hardware.MAX_PRICE_PER_GPU_HOUR,
                                                   description="USD per GPU-hour; default: GPU catalog")

    @field_validator("sharp", mode="before")
    @classmethod
    def _sharp_as_written(cls, value):
        """``sharp: on`` / ``off`` as a user writes them: YAML 1.1 (PyYAML) reads the bare words as true / false."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("gpu", mode="before")
    @classmethod
    def _gpu_preset(cls, value):
        return hardware.gpu(value).model_dump(mode="json") if isinstance(value, str) else value

    @field_validator("nic", mode="before")
    @classmethod
    def _nic_preset(cls, value):
        return hardware.nic(value).model_dump(mode="json") if isinstance(value, str) else value

    @model_validator(mode="after")
    def _plausible_size(self) -> Cluster:
        if self.gpus > MAX_GPUS:
            raise ScenarioError("cluster.nodes", f"{self.nodes} nodes x {self.gpus_per_node} GPUs = {self.gpus} "
                                f"GPUs, above the {MAX_GPUS:.0e} this simulator accepts (about fifty times the "
                                "largest clusters built)")
        limits.check_cluster_memory(self.gpus, "cluster.nodes")  # before a fabric of that size is built
        fabric_options.check(self.topology, self.topology_options)  # at load, not when the fabric is built
        return self

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node


class Training(_Defaulted):
    seq_len: Count = Field(2048, le=MAX_SEQ_LEN, description="tokens per sequence")
    global_batch_size: Count = Field(le=MAX_GLOBAL_BATCH_SIZE, description="sequences per optimizer step")
    micro_batch_size: Count = Field(1, le=MAX_GLOBAL_BATCH_SIZE, description="sequences per microbatch")
    precision: Precision = Field("bf16", description="compute precision of the GEMMs")
    fp8_recipe: Literal["delayed", "current", "mxfp8", "torchao_tensorwise"] | None = Field(
        None, description="fp8 scaling with precision fp8: Transformer Engine's per-tensor delayed or current "
        "scaling, or MXFP8 block scaling (Blackwell), or torchao's dynamic tensorwise Float8Linear (torchtitan: an "
        "abs-max pass before every cast, weights cast on every call); sets the bytes of the operand casts "
        "(workload/fp8_recipes.py, workload/torchao_float8.py); default: current with precision fp8 on Megatron-Core "
        "from mcore_version 0.14 (Megatron-Bridge's performance scripts, NeMo 25.09+: fp8 is fp8_cs; by default on "
        "Blackwell), else delayed (NeMo 24.09 / 25.02 bf16_with_fp8_mixed, Transformer Engine's DelayedScaling); "
        "unstated, the release is the GPU's era (NeMo 2.x defaults to delayed on Blackwell too: state it) and the run "
        "names the recipe it defaulted (default_fp8_recipe)")
    activation_recompute: Literal["none", "selective", "full"] = "none"
    recompute_modules: tuple[Literal["core_attn", "layernorm", "mla_up_proj", "moe_act", "mlp", "moe",
                                     "shared_experts"], ...] = Field(
        (), description="modules recomputed before their backward on top of activation_recompute (Megatron-Core "
        "--recompute-modules with selective granularity; ignored with activation_recompute: full, which re-runs "
        "them all): core_attn the attention core (as activation_recompute: selective); layernorm the norms that "
        "are modules of their own (an MLA layer's input norm, an MoE layer's pre-MLP norm; a norm fused into the "
        "GEMM after it is not), their outputs not stored; mla_up_proj multi-head latent attention's query and "
        "key/value up-projections and rotary embedding (workload/mla.py); moe_act the routed experts' activation, "
        "its output not stored; mlp the dense MLP (with its fused norm), moe the whole MoE layer (router, "
        "permutations, dispatch and combine all-to-alls, experts, shared experts) and shared_experts the MoE layer's "
        "shared experts, each a whole-module checkpoint keeping its input only (workload/ops.py module_recompute)")
    activation_offload_layers: Annotated[int, Strict()] = Field(
        0, ge=0, description="transformer layers whose saved activations go to host memory after their forward and "
        "come back before their backward (Megatron-Core cpu_offloading_num_layers, the first layers of the model); "
        "they leave the GPU's memory, and the compute stream waits only when Transformer Engine's one offload stream "
        "falls behind (parallel/activation_offload.py). Needs fewer layers than the model, pp: 1, virtual_stages: 1, "
        "activation_recompute: none and no recompute_modules, as Megatron-Core requires")
    gradient_accumulation_fusion: Annotated[bool, Strict()] = Field(
        True, description="weight gradients accumulated into the main gradient inside the wgrad GEMM (Megatron-Core's "
        "default); false adds them by a kernel of their own each microbatch (workload/grad_accumulation.py)")
    attention: Literal["flash", "flash2", "flash_triton", "naive"] = Field(
        "flash", description="attention kernel: fused (flash: FlashAttention-3 or cuDNN's fused attention on Hopper, "
        "as Transformer Engine runs it, FlashAttention-2 on Ampere), FlashAttention-2 as PyTorch SDPA runs it on "
        "Hopper too (flash2: about 0.6x flash's throughput there, same on Ampere), the Triton FlashAttention of "
        "flash-attention/llm-foundry (flash_triton: no causal tile skipping, FlashAttention-1 speed), or naive")
    cross_entropy: Literal["unfused", "fused", "megatron_fused"] | None = Field(
        None, description="loss kernel over the logits; default: megatron_fused on Megatron-Core (NeMo 2.x "
        "GPTConfig's cross_entropy_loss_fusion True, as NeMo's Llama 3 and Nemotron recipes), unfused otherwise. "
        "unfused (Megatron-LM's vocab-parallel cross entropy, pass by pass in fp32), fused (one kernel reading the "
        "16-bit logits, its backward writing their gradient: flash-attention's CrossEntropyLoss, llm-foundry's "
        "default loss_fn fused_crossentropy) or megatron_fused "
        "(Megatron-Core's cross_entropy_loss_fusion: the fp32 passes in four torch.compile graphs)")
    projections: Literal["fused", "separate"] = Field(
        "fused", description="input projections reading one tensor: fused (one QKV GEMM and one gate/up GEMM: "
        "Megatron-LM, Transformer Engine) or separate (one GEMM per weight, torchtitan's Llama wq/wk/wv and w1/w3, and "
        "a kernel summing their input gradients in the backward)")
    layer_backward: Literal["fused", "eager"] = Field(
        "fused", description="bias and norm-weight gradients of a layer: fused (Transformer Engine: the bias gradient "
        "in the wgrad GEMM's epilogue, dgamma/dbeta inside the norm's backward kernel; on Megatron's stacks the "
        "biases of its skip_bias_add linears, and the QKV bias of the 2022-23 local layer and of "
        "Megatron-DeepSpeed's layer, still one reduction kernel each, workload/eager_backward.py "
        "megatron_autograd_biases) or eager (PyTorch autograd of "
        "nn.Linear and F.layer_norm, llm-foundry's MPT: a reduction kernel per bias, a second pass over dy and x per "
        "norm; Megatron-LM 2020-22 with apex's fused LayerNorm: the norm-weight gradients in partial-sum and finalize "
        "kernels beside the dx kernel; workload/eager_backward.py)")
    norm_kernels: Literal["fused", "eager_fp32"] = Field(
        "fused", description="the RMSNorms (every layer's two and the final one): fused (one kernel a phase: "
        "Transformer Engine, apex, Inductor) or eager_fp32 (foundation-model-stack's LayerNormParameterized with "
        "use_high_precision_pow, no torch.compile, as IBM's fms-fsdp ran it: x.float(), pow, mean, + eps, rsqrt, "
        "multiply, type_as, weight multiply, each a kernel, 36 B an element forward and 92 backward in bf16, the "
        "weight gradient among them; autograd keeps the fp32 upcast and the normalised 16-bit tensor; "
        "workload/eager_norm_rope.py, data/eager_norm_rope.yaml; torchtitan's RMSNorm runs the same ops); eager_fp32 "
        "needs norm rmsnorm, no qk_layernorm, dropout_add_norm separate, bf16 or fp16, no tp_comm_overlap and not "
        "Megatron-Core")
    rope_kernels: Literal["fused", "eager_fp32", "eager_fp32_complex"] = Field(
        "fused", description="the rotary embedding of q and k: fused (one kernel a phase; Megatron-Core's unfused "
        "RoPE is rope_fusion false), eager_fp32 (foundation-model-stack's RotaryEmbedding.adjusted_qk, real form: "
        "per tensor a cast to fp32, the 2 x 2 rotation multiply, the pair sum and the cast back, 36 B a rotated "
        "element each way in bf16, plus each call's position and frequency-gather kernels) or eager_fp32_complex "
        "(torchtitan's apply_rotary_emb without torch.compile: per tensor a cast to fp32, the complex multiply and "
        "the cast back, 20 B a rotated element each way in bf16; workload/eager_norm_rope.py); either eager form "
        "needs position rope, bf16 or fp16, no MLA, no tp_comm_overlap and not Megatron-Core")
    kv_expansion: Literal["none", "copy"] = Field(
        "none", description="GQA's key and value heads before attention: none (the attention kernel reads the "
        "key/value heads as they are: FlashAttention, Transformer Engine, cuDNN, SDPA's enable_gqa) or copy (expanded "
        "to the query heads by a copy before F.scaled_dot_product_attention, as torchtitan's repeat_kv, "
        "foundation-model-stack's expand-and-flatten and KempnerForge's repeat_interleave do, eager or compiled: per "
        "layer a copy kernel each for keys and values forward, reading the local key/value heads and writing the "
        "local query heads' width, and a sum over the repeated heads backward; nothing when kv_heads equals heads; "
        "workload/kv_expansion.py); copy needs no model.mla and a stack other than Megatron-Core")
    qkv_bias_add: Literal["epilogue", "separate"] | None = Field(
        None, description="how the forward adds the QKV linear's bias (Megatron's one column-parallel linear built "
        "without skip_bias_add): epilogue (inside the GEMM: Transformer Engine, Megatron-Core, PyTorch 2.x addmm) or "
        "separate (an elementwise kernel over the [tokens, qkv] output: Megatron-LM 2020-22, F.linear on a 3-D input "
        "under PyTorch 1.x and, from 2022, LinearWithGradAccumulationAndAsyncCommunication's output + bias); "
        "default: separate for the 2021-22 Megatron layer (layer_backward eager, attention naive), else epilogue "
        "(workload/eager_backward.py)")
    logits_memory: Literal["megatron", "torch_fp32", "torch_16bit"] = Field(
        "megatron", description="memory only: how the output layer's logits and loss are held (parallel/memory.py). "
        "megatron: Megatron-Core's vocab-parallel cross entropy (its fp32 softmax saved, the 16-bit logits "
        "transient); torch_fp32: torchtitan's, the model casting the logits to fp32 for torch's cross entropy "
        "(DTensor loss_parallel with tp > 1), and with pp > 1 torch.distributed.pipelining keeping every "
        "microbatch's logits on the last stage until the step ends; torch_16bit: the same PyTorch-native loss on the "
        "16-bit logits the model returns (NeMo AutoModel's MaskedCrossEntropy with fp32_upcast false: "
        "F.cross_entropy saves a 16-bit log-softmax; the pipeline keeps 16-bit outputs)")
    residual_in_fp32: Annotated[bool, Strict()] = Field(
        False, description="the residual stream is kept in fp32, so each norm saves its fp32 input "
        "(flash-attention's GPT residual_in_fp32 with fused_dropout_add_ln: DropoutAddLayerNormFn saves the fp32 "
        "residual sum x; parallel/memory.py); with dropout_add_norm fused the fused kernels also move the residual "
        "and its gradient in fp32 (workload/ops.py dropout_add_norm_ops); memory only otherwise")
    dropout_add_norm: Literal["separate", "fused"] = Field(
        "separate", description="the residual adds and the norms after them: separate (the (bias-)dropout-add and "
        "the norm are kernels of their own, and as the residual add and the norm are two consumers of the stream "
        "autograd adds their gradients in a kernel of its own, twice a layer: Megatron-LM, Megatron-Core, "
        "Megatron-DeepSpeed, Transformer Engine; workload/ops.py residual_gradient_sum) or fused (flash-attention's "
        "DropoutAddLayerNorm, fused_dropout_add_ln: dropout, residual add and norm one kernel each way, its backward "
        "adding the residual gradient and applying the mask; no residual, mask or sum kernel; dropout_add_norm_ops); "
        "fused needs a 16- or 32-bit precision")
    autocast_fp32_params: Annotated[bool, Strict()] = Field(
        False, description="the parameters stay fp32 and each Linear casts its weight and bias to the 16-bit "
        "precision every microbatch, its weight and bias gradients cast back to fp32 before they are accumulated "
        "(torch.autocast without a 16-bit model copy: PyTorch Lightning precision bf16, flash-attention's fused_dense; "
        "workload/autocast_params.py); memory: fp32 weights, gradients and Adam moments (4 + 4 + 8 bytes) and each "
        "Linear's saved 16-bit weight copy; needs precision bf16 or fp16 and an optimizer stepping the fp32 "
        "parameters (torch_adamw, decoupled_adamw)")
    master_weights: Annotated[bool, Strict()] = Field(
        True, description="false: the parameters themselves are 16-bit and the optimizer steps them in place, with "
        "no fp32 master copy and its two moments in the parameter dtype (NeMo AutoModel casts its custom models to "
        "bf16, DeepseekV3ForCausalLM.initialize_weights(dtype=torch.bfloat16), and torch.optim.Adam keeps "
        "exp_avg and exp_avg_sq as zeros_like(param)); memory: 2 + 2 + 4 bytes a parameter (FSDP2 casts each "
        "reduced gradient shard back to the parameter dtype; the unsharded gradients it accumulates across "
        "microbatches stay at grad_reduce_dtype); needs precision bf16 or fp16, optimizer torch_adamw and no "
        "autocast_fp32_params (parallel/memory.py)")
    trainer: Literal["none", "lightning"] = Field(
        "none", description="the training loop around the model: none (nothing beyond the framework's step) or "
        "lightning (PyTorch Lightning 1.8 as flash-attention's training/ scripts run it: per microbatch the "
        "torchmetrics updates, self.log(sync_dist=True)'s barrier and all-reduce, and the progress bar's .item(), two "
        "stream drains; per step Lightning's gradient clipping over every parameter of ZeroRedundancyOptimizer's "
        "param_groups, not the rank's shard: workload/lightning_loop.py); lightning needs optimizer torch_adamw, "
        "pp 1 and zero_stage 0 or 1")
    mlp_activation: Literal["separate", "epilogue", "layernorm_mlp", "eager"] = Field(
        "separate", description="the GELU of a dense MLP: separate (an elementwise kernel each way: Megatron's "
        "bias_gelu, Transformer Engine) or epilogue (inside the GEMMs: flash-attention's FusedMLP, fused_mlp: True, "
        "fc1 with cuBLASLt's GELU_AUX_BIAS epilogue writing the pre-activation beside its output, fc2's dgrad with "
        "DGELU_BGRAD reading it back; workload/ops.py mlp_block) or layernorm_mlp (Transformer Engine 1.x's "
        "LayerNormMLP, inside TE's TransformerLayer: NeMo's megatron_gpt_full_te_layer_autocast spec; in fp8 with "
        "delayed scaling on Hopper the GELU writes fc2's fp8 input and its backward writes fc1's fp8 output gradient "
        "and transpose, so those two casts are not run: workload/fp8_recipes.py layernorm_mlp_cast_saving; otherwise "
        "as separate) or eager (a SwiGLU as PyTorch runs silu(gate) * up without torch.compile, fms's "
        "GatedLinearUnit and torchtitan's FeedForward: silu and the multiply forward, the two multiplies' gradients "
        "and silu_backward backward, each a kernel, and the silu output kept as well; workload/ops.py "
        "eager_swiglu_ops); epilogue needs mlp gelu, a dense model and a 16- or 32-bit precision, layernorm_mlp mlp "
        "gelu and a dense model, eager mlp swiglu and a dense model")
    cuda_graph_scope: Literal["none", "full_iteration"] = Field(
        "none", description="CUDA graphs over the training step: none, or full_iteration (Megatron-Core's "
        "FullCudaGraphWrapper, Megatron-Bridge cuda_graph_impl local with cuda_graph_scope full_iteration: every "
        "microbatch's forward and backward replayed as one graph; the optimizer step and data loading stay eager). "
        "Read only with efficiency.yaml host_overhead.cuda_graphs on (round 30, off by default): graphed kernels "
        "then pay the in-graph launch latency instead of the fitted gap, and no host dispatch")
    moe_cuda_graphs: Annotated[bool, Strict()] = Field(
        False, description="CUDA graphs over the MoE router and EP preprocess (Megatron-Core --cuda-graph-scope "
        "moe_router moe_preprocess): they replay as one graph launch instead of 31 eager launches each paying the "
        "host gap; the routed experts stay eager, and the shared experts Megatron also captures keep their gaps "
        "here (data/moe.yaml host_launches)")
    moe_router: Literal["fused", "unfused", "unfused_v0.9"] | None = Field(
        None, description="Megatron-Core's MoE router kernels (data/moe.yaml host_launches.router_backward): fused "
        "(--moe-router-fusion, Transformer Engine >= 2.6's fused top-k and aux-loss kernels), unfused (PyTorch ops, "
        "Megatron-Core r0.10-r0.12) or unfused_v0.9 (Megatron-Core v0.9's topk_softmax_with_capacity); default "
        "unfused: router fusion came with TE 2.6, after the NeMo 24.09/25.02 containers (TE 1.10, 1.14)")
    moe_token_drop: Annotated[bool, Strict()] | None = Field(
        None, description="NeMo's MegatronTokenDropCallback on a model whose moe states no capacity_factor: true "
        "drops tokens at capacity 1.0 and pads every expert to it (model.moe capacity_factor 1.0, pad_to_capacity), "
        "false keeps Megatron-Core's dropless routing; default true for the models NeMo's performance recipes run "
        "so (NEMO_TOKEN_DROP_MODELS: Mixtral 8x7B, 8x22B; not in NeMo's long-context recipes, nemo_long_context) on "
        "Megatron-Core with the alltoall dispatcher and a direct "
        "all-to-all, else false")
    moe_router_dtype: Literal["model", "fp32"] = Field(
        "model", description="the router's logits dtype (Megatron-Core --moe-router-dtype): model (the GEMMs' 16-bit "
        "dtype, Megatron-Core's default) or fp32 (RouterGatingLinearFunction writes fp32 logits, casts input and "
        "weight to fp32 for its two backward GEMMs, which run in TF32, and the gradients back: 4 more kernels "
        "backward, with their bytes)")
    moe_load_balancing: Literal["aux_loss", "seq_aux_loss"] = Field(
        "aux_loss", description="the router's load-balancing loss (Megatron-Core --moe-router-load-balancing-type): "
        "aux_loss (Switch, per microbatch) or seq_aux_loss (DeepSeek-V3's per-sequence loss: one more kernel "
        "backward)")
    optimizer: Literal["adam", "adam_precision_aware", "torch_adamw", "decoupled_adamw", "megatron2020",
                       "megatron2021"] = Field(
        "adam", description="adam (Megatron-Core's mixed-precision / distributed optimizer around a fused "
        "multi-tensor Adam: grad norm, Adam, copy to the 16-bit weights, zeroed gradient buffer), "
        "adam_precision_aware (Megatron-Core use_precision_aware_optimizer with Transformer Engine keeping the master "
        "weights: the optimizer config's fp8_recipe None or delayed; not Megatron-Bridge bf16 runs, whose optimizer "
        "config gets fp8_recipe tensorwise: adam there; refused with a stated mcore_version before 0.11, its first "
        "release), torch_adamw "
        "(torchtitan: fused AdamW and clip_grad_norm_ on FSDP's fp32 shards; workload/optimizer_step.py), "
        "decoupled_adamw (Composer's "
        "DecoupledAdamW, llm-foundry's default: eight unfused elementwise passes over each fp32 tensor, "
        "workload/composer_adamw.py), or Megatron-LM's fp16 optimizer wrapper of 2020 (megatron/fp16 FP16_Optimizer) "
        "or 2021 (megatron/optimizer FP16OptimizerWithFP16Params): apex FusedAdam plus their own passes, the "
        "gradient norm and the copy of the updated weights into the fp16 model (workload/megatron_fp16_step.py); "
        "fp16 only")
    adam_moments_dtype: Literal["fp32", "bf16"] = Field(
        "fp32", description="dtype of Adam's two moments (Megatron-Core --exp-avg-dtype / --exp-avg-sq-dtype, which "
        "only use_precision_aware_optimizer honours): bf16 holds them at 2 bytes, 4 B a parameter less state; TE's "
        "FusedAdam unscales them to fp32 copies for its kernel and writes them back, 3 kernels a moment and parameter "
        "tensor, 32 B a shard parameter more moved (workload/optimizer_step.py). With optimizer adam_precision_aware "
        "(TE keeping the master weights) or adam (Megatron-Core keeping its own fp32 master shards: an fp8 run with "
        "current scaling or MXFP8, or a Megatron-Bridge bf16 run, whose optimizer config gets fp8_recipe "
        "tensorwise); Megatron-Bridge's DeepSeek-V3 recipe sets bf16. bf16 with a stated mcore_version before 0.11 "
        "(the precision-aware optimizer's first release) is refused, and bf16 with adam before 0.13 in an fp8 run, "
        "0.14 in a bf16 run (0.11 and 0.12 always hand TE the master weights: adam_precision_aware; "
        "data/mcore_versions.yaml own_master_bf16_moments)")
    fp8_param_gather: Annotated[bool, Strict()] | None = Field(
        None, description="Megatron-Core's fp8 parameters (--fp8-param-gather, NeMo's fp8_param_gather / fp8_params): "
        "Transformer Engine's GEMM weights held as fp8 Float8Tensors, the distributed optimizer all-gathering them in "
        "fp8 and casting its fp32 shard into them (workload/fp8_params.py); with fp8_recipe torchao_tensorwise and "
        "optimizer torch_adamw, torchao's float8 all-gather for FSDP2 (workload/torchao_float8.py); default: true with "
        "precision fp8 on Megatron-Core with any Transformer Engine recipe at zero_stage 1, 2 or 3 (NeMo 2.x's and "
        "Megatron-Bridge's delayed and current scaling presets, Megatron-Bridge's MXFP8 preset; required at "
        "zero_stage 3), false otherwise. On Hopper (TN-only fp8 "
        "GEMMs) zero_stage 3 with fp8 is refused either way: without fp8 parameters the per-microbatch re-quantize, "
        "with them the per-microbatch transpose, is not modelled; use zero_stage 1/2 or bf16")
    fp8_precompute_scale: Annotated[bool, Strict()] = Field(
        False, description="with torchao's float8 all-gather (fp8_param_gather, fp8_recipe torchao_tensorwise, "
        "optimizer torch_adamw): torchtitan's --float8.precompute_float8_dynamic_scale_for_fsdp, the weights' scales "
        "from one fused amax pass and one all-reduce a step instead of an amax pass and all-reduce per weight and "
        "gather (workload/torchao_float8.py)")
    mcore_version: str | None = Field(
        None, description="the Megatron-Core release the run used, 'major.minor' as a quoted string ('0.8', '0.10'; "
        "a known release, data/mcore_versions.yaml); read only on Megatron-Core (another stack ignores it). From "
        "0.9 a pipeline stage holding one model chunk dispatches its first parameter all-gather at its first "
        "forward (DDP's bucket groups, finish_param_sync), before 0.9 at optimizer.zero_grad, the step's start "
        "(engine/data_parallel.py); from 0.14 (Megatron-Bridge) an fp8 run's default recipe is current scaling; "
        "stated (not defaulted), from 0.7 (NeMo 24.05) with grad_buckets apex and a 16-bit grad_reduce_dtype, NeMo's "
        "word embedding is reduced in fp32 buckets of its own (workload/fp32_embedding_grads.py); before 0.7 (and for "
        "Megatron-LM's own DDP of 2021-23, stated as '0.1') every bucket is scaled before its reduction, one rank "
        "included, from 0.7 only when its factor is not 1, and from 0.9 parallelism.average_in_collective defaults on "
        "(workload/grad_scaling.py); stated, from 0.14 with tp_comm_overlap, Megatron-Bridge's own userbuffers "
        "configurations (data/userbuffers.yaml megatron_bridge_configs); with rope_fusion, Megatron-Core's q/k/v "
        "layout copies up to 0.13 (workload/te_flash_layout.py); stated, the cuDNN its NeMo container shipped picks "
        "Hopper's causal attention kernel (data/mcore_versions.yaml container_cudnn); with "
        "parallelism.suggested_communication_unit_size, whether Megatron-FSDP prefetches the next unit (0.12-0.13 "
        "count the current one against the size, 0.14 on do not; parallel/megatron_fsdp_prefetch.py); with "
        "parallelism.check_for_nan_in_grad, the check's host reads (one a bucket, one a bucket group in 0.9, two "
        "from 0.12: isnan and isinf; refused before 0.6; workload/nan_check.py). "
        "Default: 0.14 on Blackwell (NeMo 25.09, the first Megatron-Bridge container), else 0.9 (NeMo 24.09); the "
        "run names it where it changes the step (mcore_version_note)")
    rope_fusion: Annotated[bool, Strict()] | None = Field(
        None, description="Megatron-Core's apply_rope_fusion (Megatron-LM --no-rope-fusion, NeMo apply_rope_fusion); "
        "read only on Megatron-Core. With it on, Megatron-Core 0.5-0.13's TEDotProductAttention hands Transformer "
        "Engine bshd and copies q, k and v to it itself, whatever the positions (workload/te_flash_layout.py, "
        "data/mcore_versions.yaml mcore_bshd_copies). Default: true for rotary positions (Megatron-LM's default; "
        "NeMo 2.x LlamaConfig / Llama3Config, NeMo 1.x launcher Llama confs), false otherwise (NeMo's GPTConfig and "
        "megatron_base_model default; later Megatron-LM validate_args resets it when position_embedding_type is not "
        "rope); a learned-position run on a Megatron-LM without that reset states true")
    steps: Count = Field(1, le=MAX_STEPS, description="optimizer steps to simulate")

    @field_validator("mcore_version", mode="before")
    @classmethod
    def _mcore_release(cls, value):
        if value is None:
            return value
        if not isinstance(value, str):  # YAML reads 0.10 as the number 0.1
            raise ValueError(f"expected a quoted 'major.minor' release such as '0.9' or '0.10' (YAML reads an "
                             f"unquoted 0.10 as the number 0.1), got {value!r}")
        known = known_mcore_versions()
        if value not in known:
            raise ValueError(f"{quoted(value)} is not a known Megatron-Core release 'major.minor': one of "
                             f"{known[0]} .. {known[-1]} (data/mcore_versions.yaml)")
        return value


class Parallelism(_Defaulted):
    tp: Count = Field(1, le=MAX_GPUS, description="tensor parallel degree")
    pp: Count = Field(1, le=MAX_GPUS, description="pipeline parallel degree")
    dp: Count = Field(1, le=MAX_GPUS, description="data parallel degree")
    cp: Count = Field(1, le=MAX_GPUS, description="context parallel degree")
    ep: Count = Field(1, le=MAX_GPUS, description="expert parallel degree: ranks sharing one MoE layer's experts, "
                      "carved from tp x cp x dp as Megatron-Core does (ep x etp divides tp*cp*dp)")
    etp: Count | None = Field(None, le=MAX_GPUS, description="expert tensor parallel degree: each expert's ffn "
                              "split over etp ranks; unset: tp on Megatron-Core with ep 1 (its "
                              "expert_tensor_parallel_size None = tp), else 1 (NeMo's H100 configs: ETP 1 with EP)")
    ep_alltoall: Literal["direct", "hierarchical"] = Field(
        "direct", description="token dispatch/combine all-to-all: direct (NCCL, every pair at once) or "
        "hierarchical (network to the same local rank of the destination node, then NVLink, as DeepEP does)")
    moe_dispatcher: Literal["alltoall", "flex"] = Field(
        "alltoall", description="Megatron-Core's MoE token dispatcher: alltoall (permute, NCCL all-to-all, sort by "
        "local expert) or flex (DeepEP/HybridEP: the dispatch sends token rows unpermuted, one per destination GPU, "
        "and the receiver permutes them by local expert once; the router's fused preprocess; workload/moe.py)")
    ep_overlap: Annotated[bool, Strict()] = Field(
        False, description="Megatron-Core's combined 1F1B EP all-to-all overlap (--overlap-moe-expert-parallel-comm): "
        "in the steady state each dispatch/combine runs beside one attention or MLP sub-stage of another "
        "microbatch, warm-up and cool-down stay blocking, the communication kernels' SMs slow the compute "
        "(parallel/ep_overlap.py)")
    schedule: Literal["gpipe", "1f1b"] = "1f1b"
    # a chunk holds at least one layer, the embedding or the output layer (the pp*virtual_stages check below)
    virtual_stages: Count = Field(1, le=model.MAX_LAYERS + 2, description="model chunks per pipeline rank (>1: "
                                  "interleaved 1F1B)")
    sequence_parallel: Annotated[bool, Strict()] = Field(
        True, description="Megatron sequence parallelism (needs tp > 1 to matter)")
    zero_stage: Literal[0, 1, 2, 3] = Field(1, description="ZeRO stage of the distributed optimizer")
    fsdp: Literal["fsdp1", "fsdp2"] | None = Field(
        None, description="which PyTorch FSDP a zero_stage 3 run with optimizer torch_adamw ran; default: fsdp2 "
        "(torchtitan's fully_shard). fsdp1 (FullyShardedDataParallel, e.g. IBM's fms-fsdp) all-gathers straight "
        "into its flat parameter and reduce-scatters from its flat gradient, so FSDP2's all-gather copy-out and "
        "reduce-scatter copy-in are not charged, and keeps only the root gathered into the backward "
        "(parallel/fsdp_runtime.py), and pays FSDP1's side-stream gradient kernels as Composer's FSDP1 does (the "
        "flat gradient's cat, the pad to a multiple of the world, the pre-divide)")
    layers_per_stage: list[Annotated[int, Strict()]] | None = Field(
        None, description="layers of each pipeline chunk in order (pp*virtual_stages entries); default: Megatron split")
    order: str = Field(
        "tp-cp-dp-pp", description="rank order, innermost first; default: pipeline outermost, as Megatron-Core "
        "(parallel_state order tp-cp-ep-dp-pp), Megatron-LM, DeepSpeed's PipeModelDataParallelTopology and "
        "torchtitan's device mesh place it (Meta's Llama 3 405B ran tp-cp-pp-dp)")
    grad_bucket_size: Bytes | None = Field(
        None, description="data-parallel gradient bucket; default with grad_buckets apex: Apex's 100 MiB "
        "(distributed_fused_adam bucket_cap_mb); else on Megatron-Core: its max(40M, 1M x dp) parameters at "
        "grad_reduce_dtype's width with overlap_grad_reduce, one bucket per chunk without; PyTorch DDP's 25 MB "
        "otherwise")
    grad_buckets: Literal["megatron", "megatron_core", "apex"] | None = Field(
        None, description="how the data-parallel buckets are cut: megatron_core (Megatron-Core's "
        "DistributedDataParallel: the parameters in reverse registration order, a bucket closed at grad_bucket_size "
        "elements; default on Megatron-Core at ZeRO 0-2), megatron (equal buckets of grad_bucket_size, at most one a "
        "layer: PyTorch DDP as modelled, and the default elsewhere) or apex (NeMo 1.x's distributed_fused_adam: one "
        "group a layer of whole grad_bucket_size buckets, the parameters of no layer with the chunk's first layer)")
    grad_reduce_dtype: Literal["fp32", "bf16", "fp16"] | None = Field(
        None, description="precision of the gradient reduction; default: bf16 with precision fp8 on Megatron-Core "
        "(NeMo 2.x performance scripts: grad_reduce_in_fp32 False with fp8) and with bf16 for the gpt3-175b, "
        "nemotron4-340b and mixtral-8x7b/8x22b presets (their NeMo recipes), fp32 otherwise and in NeMo's "
        "long-context recipes, 16384 tokens or more beyond the model's performance recipe (nemo_long_context; "
        "Megatron-LM reduces in fp32 when training in bf16; NeMo's bf16_mixed)")
    overlap_grad_reduce: Annotated[bool, Strict()] = Field(
        True, description="reduce gradient buckets while the backward pass runs (PyTorch DDP, Megatron-Core)")
    average_in_collective: Annotated[bool, Strict()] | None = Field(
        None, description="Megatron-Core's DistributedDataParallelConfig.average_in_collective (Megatron-LM "
        "--ddp-average-in-collective, release 0.8 on): the reduction averages (NCCL's ReduceOp.AVG) instead of each "
        "bucket being multiplied by 1/(dp x cp) before it, a read and write of the gradient buffer a step "
        "(workload/grad_scaling.py; the expert buffers are still scaled by their own factor). Read only with "
        "grad_buckets megatron_core. Default: true from mcore_version 0.9 (NeMo 24.09 on: NeMo 2.0.0's "
        "mcore_distributed_optim default, the NeMo 2.x and Megatron-Bridge recipes), false before and elsewhere; "
        "a Megatron-LM run states false (its flag is off by default)")
    check_for_nan_in_grad: Annotated[bool, Strict()] | None = Field(
        None, description="Megatron-Core's DistributedDataParallelConfig.check_for_nan_in_grad (Megatron-LM "
        "--no-check-for-nan-in-loss-and-grad turns it off): before each gradient bucket's collective a norm reading "
        "the bucket's gradients on the compute stream and a host read of its isnan (0.6-0.11), isnan and isinf "
        "(0.12 on), each read draining the stream (workload/nan_check.py). Read only with grad_buckets "
        "megatron_core. Default: false on every release (the field's own default in Megatron-Core, NeMo 1.x's "
        "optim check_for_nan_in_grad, and what the NeMo 2.x and Megatron-Bridge performance scripts set); a "
        "Megatron-LM run (its flag is on by default) and a NeMo 2.x or Megatron-Bridge recipe run outside the "
        "performance scripts (MegatronStrategy and the recipes pass True) state true")
    suggested_communication_unit_size: Annotated[int, Strict()] | None = Field(
        None, gt=0, description="Megatron-FSDP's DistributedDataParallelConfig.suggested_communication_unit_size "
        "(elements), read with zero_stage 3 on Megatron-Core (mcore_version 0.12 on) and a dense model. Releases "
        "0.12-0.13 count the current unit against an all-gather prefetch budget of the whole size: a unit (a layer's "
        "parameters on a tensor-parallel rank) at least that size is gathered at its own hook with the compute "
        "waiting, none ahead. From 0.14 the next unit is prefetched whatever the size (the budget, half of it, only "
        "bounds further units) (parallel/megatron_fsdp_prefetch.py). Unset: the release's own (twice the mean unit "
        "in 0.12-0.13, 1e9 in 0.14-0.15), one unit prefetched")
    local_ddp: Literal["none", "flattened", "contiguous"] = Field(
        "none", description="Megatron-LM's own DDP (--DDP-impl local, 2020-2021) and its passes over the gradients "
        "after the backward, whatever dp is: flattened (2020: flatten copy, division, copy back) or contiguous "
        "(2021's contiguous buffer: zeroed each step, divided in place); none counts no such pass "
        "(workload/megatron_fp16_step.py). With dp > 1 it reduces after the backward: overlap_grad_reduce false")
    tp_comm_overlap: Annotated[bool, Strict()] | None = Field(
        None, description="overlap tensor-parallel collectives with their GEMMs (Transformer Engine userbuffers); "
        "default: on with tp > 1 and sequence parallelism on Megatron-Core (NeMo's and Megatron-Core's performance "
        "recipes; docs/scenario.md) except with MLA, which Megatron-Core runs without it (refused if stated; "
        "MLA_RUNS_TP_OVERLAP), for Mixtral and at 16384 tokens or more (NeMo's long-context recipes), off "
        "otherwise")
    tp_comm_overlap_impl: Literal["userbuffers", "async_tp"] = Field(
        "userbuffers", description="what overlaps them with tp_comm_overlap: userbuffers (Transformer Engine: every "
        "TP collective of a block under the block) or async_tp (PyTorch's micro-pipeline TP, torchtitan's "
        "enable_async_tensor_parallel: the all-gather/matmul and matmul/reduce-scatter pairs decomposed per rank, "
        "the backward's summed-gradient reduce-scatters left blocking; workload/async_tp.py)")
    te_version: Literal[1, 2] | None = Field(
        None, description="major version of the Transformer Engine the run used (1: 1.x, 2: 2.x), for its userbuffers "
        "defaults: 2.x launches the pipeline and bulk overlaps' GEMMs on the SMs their communication leaves "
        "(set_sm_margin), 1.x on all (data/userbuffers.yaml set_sm_margin_default); a NeMo configuration's own "
        "setting holds in both (on Hopper the margin changes no step time: cuBLAS's persistent grids wait for the "
        "SMs the communication holds either way, persistent_grid_gpus); and in fp8 training 1.x issues a pipeline's "
        "chunk GEMM i+1 before waiting for GEMM i (fp8_gemm's gemm_overlap), so two chunks share waves, where 2.x "
        "runs them one at a time (pipeline_overlap_first_gemm); default: 1 on Hopper and older GPUs (NeMo "
        "24.09: TE 1.10, 25.02's base: TE 1.14), 2 on Blackwell, with the current / mxfp8 fp8 recipes or with "
        "moe_router fused (TE >= 2.6) (docs/scenario.md)")
    overlap_param_gather: Annotated[bool, Strict()] | None = Field(
        None, description="ZeRO 1/2: gather updated parameters during the next step's forward (Megatron-Core); "
        "default: on with zero_stage 1 or 2 and overlap_grad_reduce on Megatron-Core (NeMo's and Megatron-Core's "
        "performance recipes; docs/scenario.md), off otherwise")
    overlap_param_gather_with_optimizer_step: Annotated[bool, Strict()] = Field(
        False, description="Megatron-Core's overlap_param_gather_with_optimizer_step: each stage's first model "
        "chunk is stepped by an optimizer of its own and its parameter all-gather dispatched right after, under "
        "the other chunks' optimizer step and the buffers' zeroing; every chunk one bucket. Needs Megatron-Core "
        "0.9 or later, zero_stage 1 or 2, overlap_param_gather and virtual_stages > 1 "
        "(parallel/param_gather_overlap.py)")
    defer_embedding_wgrad: Annotated[bool, Strict()] | None = Field(
        None, description="Megatron-Core's defer_embedding_wgrad_compute: the last stage leaves the output layer's "
        "weight-gradient GEMM of a step's first wgrad_deferral_limit microbatches to the pipeline flush, where the "
        "other stages' cool-down backwards run (parallel/memory.py deferred_output_wgrads); default: on with pp > 1, "
        "1F1B and gradient_accumulation_fusion on Megatron-Core (NeMo's performance recipes) where the last stage "
        "fits its buffers (off where it would not: NeMo sets it per recipe), off otherwise and for Mixtral and "
        "NeMo's long-context recipes (16384 tokens or more)")
    wgrad_deferral_limit: Annotated[int, Strict()] | None = Field(
        None, ge=0, le=MAX_GLOBAL_BATCH_SIZE, description="microbatches whose output-layer wgrad "
        "defer_embedding_wgrad defers (0: all); default: NeMo's performance recipes', 50 for the gpt3-175b and "
        "llama3(.1)-405b presets, 22 otherwise (Llama 3 70B, Nemotron-4 340B)")
    p2p: Literal["auto", "blocking", "async"] = Field(
        "auto", description="pipeline send semantics: blocking (the sender waits until its batched send/receive "
        "with the peer completes, Megatron's non-interleaved 1F1B), async (the sender goes on), auto (blocking for "
        "non-interleaved 1f1b, async for gpipe; Megatron-Core's interleaved schedule overlaps the steady state's and "
        "blocks in the cool-down, and from mcore_version 0.10 in the warm-up); blocking needs virtual_stages: 1")
    p2p_scatter_gather: Annotated[bool, Strict()] = Field(
        True, description="without sequence parallelism, send 1/tp of a pipeline message per TP rank and all-gather "
        "it over the TP group on the receiver (Megatron-LM --scatter-gather-tensors-in-pipeline)")
    pipeline_engine: Literal["megatron", "deepspeed"] = Field(
        "megatron", description="what runs the pipeline: Megatron-LM's schedule, or DeepSpeed's PipelineEngine "
        "(Megatron-DeepSpeed, 2021-2022): exchanges one after the other, the sent output all-gathered again before "
        "its backward, gradients accumulated by DeepSpeed each microbatch (bf16 with fp32 gradients: BF16_Optimizer, "
        "which all-reduces them), parallel/deepspeed_pipeline.py")
    layernorm_tp_auto_sync: Annotated[bool, Strict()] = Field(
        False, description="BigScience's Megatron-DeepSpeed --layernorm-tp-auto-sync (renamed "
        "--sync-tp-duplicated-parameters in July 2022), the band-aid BLOOM 176B trained with from March 2022: every "
        "LayerNorm forward (recompute included) first all-reduces its weight and bias over the TP group "
        "(ReduceOp.AVG), the compute waiting for each; needs pipeline_engine: deepspeed "
        "(parallel/deepspeed_pipeline.py)")

    @field_validator("zero_stage", mode="before")
    @classmethod
    def _zero_stage_not_bool(cls, value):
        if isinstance(value, bool):
            raise ValueError(f"expected 0, 1, 2 or 3, got {value!r}")
        return value

    @field_validator("te_version", mode="before")
    @classmethod
    def _te_version_exact(cls, value):
        if value is not None and type(value) is not int:  # 2.0 or true are not a version
            raise ValueError(f"expected 1 or 2, got {value!r}")
        return value

    @field_validator("grad_bucket_size")
    @classmethod
    def _positive_bucket(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("must be a positive size, e.g. '25 MB'")
        return value

    @property
    def megatron_core(self) -> bool:
        """Megatron's pipeline engine without Megatron-LM's 2020-21 local DDP (``Scenario.megatron_core`` also asks
        the training section)."""
        return self.pipeline_engine == "megatron" and self.local_ddp == "none"

    @field_validator("order")
    @classmethod
    def _order(cls, value: str) -> str:
        if sorted(value.split("-")) != ["cp", "dp", "pp", "tp"]:
            raise ValueError("must name tp, cp, pp and dp once each, e.g. 'tp-cp-dp-pp'")
        return value


class Economics(_Strict):
    # PUE is facility power over IT power: >= 1 by its definition (The Green Grid, White Paper 49, 2012).
    pue: FiniteFloat = Field(1.2, ge=1.0, le=MAX_PUE,
                             description="datacenter power usage effectiveness (Uptime Institute 2023 ~1.2-1.6)")
    node_overhead: str = Field("1.5 kW", description="CPU, NICs, fans per node beyond the GPUs")
    grid_kg_co2_per_kwh: FiniteFloat = Field(0.4, ge=0, le=MAX_KG_CO2_PER_KWH,
                                             description="grid carbon intensity (IEA 2023 world ~0.45)")
    fabric_lifetime_years: FiniteFloat | None = Field(
        None, ge=MIN_FABRIC_LIFETIME_YEARS, le=MAX_FABRIC_LIFETIME_YEARS,
        description="years over which the fabric's capital cost is spread (0.1 to 30); default: "
        "data/fabric_costs.yaml")
    fabric_prices: dict[str, Any] | None = Field(
        None, description="overrides of data/fabric_costs.yaml (same keys), e.g. {nic: {usd: 1500}}")

    @field_validator("node_overhead")
    @classmethod
    def _node_overhead_power(cls, value: str) -> str:
        try:
            units.parse_checked(value, units.WATTS, units.NON_NEGATIVE)
        except ScenarioError as err:
            raise ValueError(err.message) from None
        return value


# A scenario's description is one line of a listing.
MAX_DESCRIPTION_CHARS = 200


def folder_name(value: str) -> str:
    """A scenario's ``name``, which becomes a folder: refuse what a file system refuses or what would hide in a
    listing (a single-job scenario's and a jobs scenario's, ``spec.jobs``)."""
    control = [c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]
    if control:
        raise ValueError(f"must not contain control characters (found {control[0]!r} in {value[:40]!r})")
    if value != value.strip():
        raise ValueError(f"must not start or end with white space, got {value[:40]!r}")
    size = len(value.encode())
    if size > MAX_NAME_BYTES:
        raise ValueError(f"is {size} bytes long, at most {MAX_NAME_BYTES} (it names a folder)")
    return value


class Scenario(_Strict):
    name: str = Field("scenario", pattern=r"^[^/\\.][^/\\]*$",
                      description="names the output folder runs/<name>/: no '/' or '\\', no leading '.', no "
                      "control characters, no leading or trailing space, at most 200 bytes")
    description: str = Field("", max_length=MAX_DESCRIPTION_CHARS, pattern=r"^[^\n\r]*$",
                             description="one line saying what the scenario is for (`simcluster run --list`)")
    cluster: Cluster
    model: TransformerSpec = Field(
        description="preset name or inline {layers, hidden, heads, kv_heads, ffn_hidden, vocab}")
    training: Training
    parallelism: Parallelism = Field(default_factory=Parallelism)
    network: Literal["analytic", "flow", "chunk"] = Field("flow", description="network model")
    economics: Economics = Field(default_factory=Economics)
    reliability: Reliability = Field(default_factory=Reliability,
                                     description="failure rates, checkpoints, restarts (docs/reliability.md)")
    variability: Variability | None = Field(
        None, description="per-GPU speed, kernel jitter, stragglers; 'measured' = the sourced defaults "
        "(docs/variability.md); none: every GPU alike")

    # how the model became a preset: "name" (the preset's name, or its full definition), "shape" (an inline model
    # of DESIGN.md's keys matching the preset's shape: ``contract_inline_preset``)
    _model_chosen_by: str = PrivateAttr(default="name")
    # the model as written when training.moe_token_drop capped its experts (``token_dropped``), else None
    _model_as_written: TransformerSpec | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _note_model_by_shape(cls, data, handler):
        scenario = handler(data)
        raw = data.get("model") if isinstance(data, dict) else None
        if isinstance(raw, dict) and raw and not set(raw) - CONTRACT_MODEL_KEYS:
            scenario._model_chosen_by = "shape"
        elif isinstance(data, Scenario):
            scenario._model_chosen_by = data._model_chosen_by
            scenario._model_as_written = data._model_as_written
        return scenario

    @model_validator(mode="wrap")
    @classmethod
    def _context_suffix_is_seq_len(cls, data, handler):
        """A NeMo long-context recipe name (``model: llama3_8b_128k``, ``context_suffix``) states the sequence its
        recipe trains at: a training.seq_len that differs (the 2048 default included) is refused, not run silently
        at another length."""
        scenario = handler(data)
        raw = data.get("model") if isinstance(data, dict) else None
        if isinstance(raw, str) and _spelled_preset(raw) is None and (context := context_suffix(raw)) is not None:
            preset, tokens = context
            if tokens != scenario.training.seq_len:
                raise ScenarioError("training.seq_len", f"{scenario.training.seq_len}, but model {quoted(raw)} names "
                                    f"{preset} at {tokens} tokens (NeMo's long-context recipe names: 1k = 1024): "
                                    f"state seq_len: {tokens}, or write model: {preset} for another length")
        return scenario

    def model_preset(self) -> dict[str, str] | None:
        """The preset (data/models.yaml) the model is, and how it was chosen: ``{"name": preset, "chosen_by":
        "name" | "shape"}`` ("shape": written inline with DESIGN.md's keys only and taken as the preset of that shape,
        its architecture and NeMo's per-model settings included). A model of its own without a name: the presets
        whose NeMo recipe settings it takes (``recipe_match``): ``{"name": "a,b" | None, "chosen_by": "shape+vocab"
        | "shape+nearest-vocab" | "ambiguous"}`` (ambiguous: presets of its shape disagree, the run's own defaults
        taken); None otherwise."""
        name = self.model.name
        if name in catalog.load("models"):
            preset = model.preset(name)
            if self._model_chosen_by == "shape":   # a vocab within padding of the preset's is kept as written
                preset = preset.model_copy(update={"vocab": self.model.vocab})
            if self.training.moe_token_drop:
                preset = token_dropped(preset)
            if self.model == preset:
                return {"name": name, "chosen_by": self._model_chosen_by}
        found, how = recipe_match(self.model)
        if how in ("name", "none"):
            return None
        return {"name": ",".join(sorted(found - {name})) or None, "chosen_by": how}

    @field_validator("variability", mode="before")
    @classmethod
    def _measured_variability(cls, value):
        if value == "measured":
            return measured()
        if isinstance(value, str):
            raise ValueError(f"expected a mapping or 'measured', got {value!r}")
        return value

    @property
    def megatron_core(self) -> bool:
        """Megatron-Core as NeMo's recipes run it, the stack the framework defaults model: Megatron's pipeline engine
        without the 2020-21 local DDP, Megatron-Core's optimizer (not torchtitan's, llm-foundry's or the 2020-21 fp16
        wrappers), its vocab-parallel loss memory, Transformer Engine's fp8 (not torchao's)."""
        t = self.training
        return (self.parallelism.megatron_core and t.optimizer in MEGATRON_CORE_OPTIMIZERS
                and t.logits_memory == "megatron" and t.fp8_recipe != "torchao_tensorwise")

    @model_validator(mode="after")
    def _framework_defaults(self) -> Scenario:
        """The options left unset, as NeMo's and Megatron-Core's performance recipes configure them on Megatron-Core
        (elsewhere off, fp32 and PyTorch DDP's buckets):
        - TP communication overlap with sequence parallelism and tp > 1 (Transformer Engine's userbuffers), except
          for the models whose recipes leave it off (NEMO_NO_COMM_OVERLAP_MODELS: Mixtral) and in NeMo's
          long-context recipes (``nemo_long_context``: 16384 tokens or more, beyond the model's performance recipe;
          off there too: the wgrad deferral, bf16 reduction and token drop);
        - the distributed optimizer's parameter all-gather under the next forward, with ZeRO 1/2 and the gradient
          reduce-scatter overlapped (Megatron-LM asserts --overlap-param-gather needs --overlap-grad-reduce);
        - the fused loss (NeMo 2.x GPTConfig: cross_entropy_loss_fusion True);
        - the Megatron-Core release (``default_mcore_version``): 0.14 on Blackwell (NeMo 25.09, Megatron-Bridge),
          else 0.9 (NeMo 24.09); the GPU stands for the era, ``mcore_version_note`` names it where it changes the step;
        - the fp8 recipe (``default_fp8_recipe``): current scaling from Megatron-Core 0.14 (Megatron-Bridge's
          fp8_cs; by default on Blackwell), else delayed (NeMo 24.09 / 25.02); ``fp8_recipe_note`` names it;
        - fp8 parameters with any Transformer Engine recipe at ZeRO 1-3 (workload/fp8_params.py): NeMo 2.x
          bf16_with_fp8_mixed (delayed) and bf16_with_fp8_current_scaling_mixed, and Megatron-Bridge's fp8 presets
          (src/megatron/bridge/training/mixed_precision.py bf16_with_fp8_delayed_scaling_mixed /
          bf16_with_fp8_current_scaling_mixed / bf16_with_mxfp8_mixed: fp8_param_gather True); MXFP8 differs by
          version (NeMo 2.x @ 0a07447 and early Megatron-Bridge: False), the default follows later Megatron-Bridge;
          NeMo 1.x (the 24.07 launcher) left it off (fp8_params unset: False), so the nemo2407 rows state false;
        - gradients reduced in bf16 with fp8 training (NeMo 2.x performance scripts: grad_reduce_in_fp32 False with
          fp8) and in bf16 training of the models NEMO_BF16_GRAD_REDUCE_MODELS names, else fp32 (Megatron-LM forces
          fp32 reduction with --bf16; NeMo's bf16_mixed keeps it);
        - Megatron-Core's buckets: max(40M, 1M x dp) parameters at that width with the reduction overlapped, one
          bucket per chunk without (bucket_size None);
        - the output layer's wgrad deferred to the pipeline flush with pp > 1 (NeMo's defer_embedding_wgrad_compute,
          wgrad_deferral_limit per recipe; parallel/memory.py deferred_output_wgrads), not for Mixtral nor in the
          long-context recipes;
        - rope fusion (``rope_fusion``) with rotary positions: Megatron-LM's default (--no-rope-fusion is
          store_false), NeMo 2.x's Llama configs and NeMo 1.x's Llama launcher confs; off with learned positions
          (NeMo's GPTConfig, later Megatron-LM's validate_args);
        - Megatron-Core's unfused MoE router (``moe_router``): --moe-router-fusion needs Transformer Engine >= 2.6
          (fused top-k 2.6, fused aux loss 2.7), later than NeMo 24.09 (TE 1.10) and 25.02;
        - Transformer Engine 1.x (``te_version``) on Hopper and older GPUs, whose userbuffers defaults launch every
          overlapped GEMM on all SMs: NeMo 24.09's TE 1.10 and 25.02's TE 1.14; 2.x (pipeline and bulk GEMMs on
          SMs - num_sm) on Blackwell and with TE 2.x fp8 recipes (``default_te_version``; docs/scenario.md). A stack
          without Transformer Engine does not read it;
        - Megatron-Core's own bucket formation (``grad_buckets: megatron_core``) on Megatron-Core at ZeRO 0-2, equal
          buckets elsewhere; Apex's 100 MiB buckets (APEX_BUCKET_CAP_BYTES) with ``grad_buckets: apex``, on any stack;
        - no per-bucket NaN check (``check_for_nan_in_grad``) on any release: the field's default and the NeMo /
          Megatron-Bridge performance scripts'; a Megatron-LM run states true;
        - experts split over the tensor-parallel ranks without expert parallelism (``etp`` = tp with ep 1,
          ``default_etp``), as Megatron-Core does with expert_tensor_parallel_size None; 1 with ep > 1 (NeMo's
          H100 configurations' ETP 1);
        - NeMo's token drop (``moe_token_drop``: capacity factor 1.0, padded) for the Mixtral presets with the alltoall
          dispatcher (NEMO_TOKEN_DROP_MODELS), applied to a model that states no capacity factor."""
        p, t, core = self.parallelism, self.training, self.megatron_core
        t.resolve(mcore_version=default_mcore_version(self.cluster.gpu) if core else None)
        t.resolve(fp8_recipe=default_fp8_recipe(self.cluster.gpu, t.precision, core, t.mcore_version))
        recipe = recipe_models(self.model)  # the model's name, or the presets of its shape when it has none
        long_context = core and nemo_long_context(recipe, t.seq_len)  # NeMo's plain (not performance) recipes
        no_overlap = long_context or bool(recipe & NEMO_NO_COMM_OVERLAP_MODELS)  # no TP overlap, no wgrad deferral
        p.resolve(tp_comm_overlap=(core and not no_overlap and p.tp > 1 and p.sequence_parallel
                                   and (self.model.mla is None or MLA_RUNS_TP_OVERLAP)),
                  overlap_param_gather=core and p.zero_stage in (1, 2) and p.overlap_grad_reduce,
                  grad_reduce_dtype=("bf16" if core and not long_context and (t.precision == "fp8" or (
                      t.precision == "bf16" and recipe & NEMO_BF16_GRAD_REDUCE_MODELS)) else "fp32"))
        t.resolve(moe_router="unfused")
        t.resolve(rope_fusion=core and self.model.position == "rope")
        p.resolve(etp=default_etp(self.model.moe, p, core))
        self._nemo_token_drop(recipe, long_context)
        t.resolve(cross_entropy="megatron_fused" if core else "unfused",
                  fp8_param_gather=core and t.precision == "fp8" and p.zero_stage >= 1
                  and not t.fp8_recipe.startswith("torchao"))
        # Megatron-Core's own bucket formation (parallel/mcore_buckets.py; Megatron-FSDP at ZeRO 3 has its units)
        p.resolve(grad_buckets="megatron_core" if core and p.zero_stage < 3 else "megatron")
        p.resolve(average_in_collective=p.grad_buckets == "megatron_core" and nemo_average_in_collective(
            t.mcore_version))
        p.resolve(check_for_nan_in_grad=False)
        if p.grad_buckets == "apex":
            bucket = APEX_BUCKET_CAP_BYTES
        elif not core:
            bucket = TORCH_DDP_BUCKET_BYTES
        elif p.overlap_grad_reduce:
            bucket = (max(MCORE_BUCKET_MIN_PARAMS, MCORE_BUCKET_PARAMS_PER_RANK * p.dp)
                      * hardware.BYTES_PER_ELEMENT[p.grad_reduce_dtype])
        else:
            bucket = math.inf
        p.resolve(grad_bucket_size=bucket)
        te_needed = default_te_version(self.cluster.gpu, t.precision, t.fp8_recipe, t.moe_router)
        if p.te_version == 1 and te_needed > 1:
            raise ScenarioError("parallelism.te_version", "1 cannot run this: Blackwell GPUs, the current / mxfp8 fp8 "
                                "recipes and moe_router fused need Transformer Engine 2.x (set 2 or leave it unset)")
        p.resolve(te_version=te_needed)
        p.resolve(defer_embedding_wgrad=core and not no_overlap and p.pp > 1 and p.schedule == "1f1b"
                  and t.gradient_accumulation_fusion,
                  wgrad_deferral_limit=max((NEMO_WGRAD_DEFERRAL_LIMITS[n] for n in recipe
                                            & NEMO_WGRAD_DEFERRAL_LIMITS.keys()), default=NEMO_WGRAD_DEFERRAL_LIMIT))
        return self

    def _nemo_token_drop(self, recipe: frozenset[str], long_context: bool) -> None:
        """``training.moe_token_drop``: resolved (true for NEMO_TOKEN_DROP_MODELS on Megatron-Core with the alltoall
        dispatcher and a direct all-to-all, whose expert inputs can be padded, outside NeMo's long-context recipes,
        ``nemo_long_context``), then applied to a model whose moe states no capacity_factor: capacity 1.0, padded (a
        stated capacity_factor is taken as written)."""
        moe, p, t = self.model.moe, self.parallelism, self.training
        paddable = p.moe_dispatcher == "alltoall" and p.ep_alltoall == "direct"
        t.resolve(moe_token_drop=bool(moe is not None and moe.capacity_factor is None and self.megatron_core
                                      and paddable and not long_context and recipe & NEMO_TOKEN_DROP_MODELS))
        if not t.moe_token_drop:
            return
        if moe is None:
            raise ScenarioError("training.moe_token_drop", "token drop caps the experts of an MoE layer: it needs "
                                "a model with moe")
        if not self.megatron_core:
            raise ScenarioError("training.moe_token_drop", "true is NeMo's MegatronTokenDropCallback on Megatron-Core: "
                                "this stack is not Megatron-Core (set false or leave it unset)")
        if moe.capacity_factor is not None:
            if not moe.pad_to_capacity:
                raise ScenarioError("training.moe_token_drop", f"true pads every expert to its capacity: the model's "
                                    f"capacity_factor {moe.capacity_factor} is not padded (set model.moe "
                                    "pad_to_capacity: true, or moe_token_drop: false)")
            return
        if not paddable:
            raise ScenarioError("training.moe_token_drop", "token drop pads every expert to its capacity: it needs "
                                "moe_dispatcher: alltoall and ep_alltoall: direct")
        self._model_as_written = self.model
        object.__setattr__(self, "model", token_dropped(self.model))  # frozen: set once, while validated

    @model_serializer(mode="wrap")
    def _dump_model_as_written(self, handler, info):
        """``rebuildable`` dumps keep the model as written: a rebuilt scenario applies moe_token_drop anew. A model set
        since (model_copy(update=...), which copies the record of the written one) is the caller's: kept. A resolved
        dump (``model_dump``) states the model run: capacity_factor 1.0, pad_to_capacity true."""
        data = serialized(handler, self)
        written = self._model_as_written
        if (isinstance(data, dict) and (info.context or {}).get(UNRESOLVED) and written is not None
                and self.model == token_dropped(written)):
            data["model"] = written.model_dump(mode="json")
        return data

    def __eq__(self, other: object) -> bool:
        """Equal fields and model choice: the record of the model as written before token drop is not part of the
        value (a scenario equals the reload of its resolved dump, which states the padded model)."""
        if type(self) is not type(other):
            return NotImplemented
        return self.__dict__ == other.__dict__ and self._model_chosen_by == other._model_chosen_by

    __hash__ = None  # a scenario holds unhashable sections (lists, dicts): compared by value, never a key

    @model_validator(mode="after")
    def _stragglers_exist(self) -> Scenario:
        for index, straggler in enumerate(self.variability.stragglers if self.variability else ()):
            field, limit = (("ranks", self.cluster.gpus) if straggler.ranks is not None
                            else ("nodes", self.cluster.nodes))
            beyond = [i for i in getattr(straggler, field) if i >= limit]
            if beyond:
                raise ScenarioError(f"variability.stragglers.{index}.{field}",
                                    f"{beyond[0]} is not one of the cluster's {limit} {field} (0 to {limit - 1})")
        return self

    @field_validator("name")
    @classmethod
    def _folder_name(cls, value: str) -> str:
        return folder_name(value)

    @field_validator("model", mode="before")
    @classmethod
    def _model_preset(cls, value):
        return (model.preset(preset_name(value)).model_dump() if isinstance(value, str)
                else contract_inline_preset(value))

    @model_validator(mode="after")
    def _check_layout(self) -> Scenario:
        p, t, m = self.parallelism, self.training, self.model
        product = p.tp * p.pp * p.dp * p.cp
        if product != self.cluster.gpus:
            raise ScenarioError("parallelism", f"tp*pp*dp*cp = {p.tp}*{p.pp}*{p.dp}*{p.cp} = {product} "
                                f"but the cluster has {self.cluster.gpus} GPUs (nodes*gpus_per_node)")
        if m.heads % p.tp:
            raise ScenarioError("parallelism.tp", f"{m.heads} attention heads are not divisible by tp={p.tp}")
        if t.global_batch_size % (p.dp * t.micro_batch_size):
            raise ScenarioError("training.global_batch_size", f"{t.global_batch_size} sequences are not divisible "
                                f"by dp*micro_batch_size = {p.dp}*{t.micro_batch_size}")
        if t.seq_len % p.cp:
            raise ScenarioError("parallelism.cp", f"seq_len {t.seq_len} is not divisible by cp={p.cp}")
        if p.cp > 1 and t.seq_len % (2 * p.cp):
            # causal load balancing cuts each sequence into 2cp chunks, rank r holding chunks r and 2cp-1-r
            # (Megatron-LM's get_batch_on_this_cp_rank, megatron/training/utils.py: val.view(..., 2 * cp_size,
            # seq // (2 * cp_size)); workload/kernels.py's ring times its kernels on those chunks): a fraction of a
            # token is no chunk
            raise ScenarioError("parallelism.cp", f"seq_len {t.seq_len} is not divisible by 2*cp = {2 * p.cp} (each "
                                "rank holds two of the sequence's 2cp chunks, for causal load balance)")
        if p.sequence_parallel and p.tp > 1 and (t.seq_len // p.cp) % p.tp:
            # Megatron's sequence parallelism splits each rank's s/cp tokens over the TP group (megatron/core/
            # tensor_parallel/mappings.py _split_along_first_dim: "First dimension of the tensor should be divisible
            # by tensor parallel size")
            raise ScenarioError("training.seq_len", f"{t.seq_len} tokens over cp={p.cp} are not divisible by "
                                f"tp={p.tp}: sequence parallelism splits each rank's tokens over the TP group (or set "
                                "sequence_parallel: false)")
        if p.cp > 1 and t.attention == "naive" and self.megatron_core:
            # megatron/core/transformer/dot_product_attention.py: "Context parallelism is only supported by
            # TEDotProductAttention!" (the unfused attention asserts context_parallel_size == 1)
            raise ScenarioError("training.attention", f"naive with cp={p.cp}: Megatron-Core runs context parallelism "
                                "in Transformer Engine's attention only (its unfused DotProductAttention refuses "
                                "cp > 1): use flash")
        self._check_experts()
        if p.virtual_stages > 1 and p.pp == 1:  # Megatron-Core parallel_state.initialize_model_parallel raises it
            raise ScenarioError("parallelism.virtual_stages", f"{p.virtual_stages} model chunks per pipeline rank "
                                "need pp > 1 (Megatron-Core refuses an interleaved schedule without pipeline "
                                "parallelism); use virtual_stages: 1")
        chunks = p.pp * p.virtual_stages
        if p.layers_per_stage is not None:
            if len(p.layers_per_stage) != chunks:
                raise ScenarioError("parallelism.layers_per_stage", f"has {len(p.layers_per_stage)} entries, "
                                    f"expected pp*virtual_stages = {chunks}")
            if any(n < 0 for n in p.layers_per_stage) or sum(p.layers_per_stage) != m.layers:
                raise ScenarioError("parallelism.layers_per_stage", f"sums to {sum(p.layers_per_stage)}, "
                                    f"expected the model's {m.layers} layers (entries >= 0)")
        elif m.layers + 2 < chunks:  # the embedding and the output layer may fill a chunk each (Llama 3 405B)
            raise ScenarioError("parallelism.pp", f"{m.layers} layers (+ embedding and output) cannot fill "
                                f"pp*virtual_stages = {chunks} chunks")
        self._check_precision_options()
        if p.defer_embedding_wgrad and (p.pp == 1 or not t.gradient_accumulation_fusion):  # ModelParallelConfig
            raise ScenarioError("parallelism.defer_embedding_wgrad", "needs pp > 1 and gradient_accumulation_fusion "
                                "(Megatron-Core refuses it otherwise)")
        if p.tp_comm_overlap and p.tp > 1 and not p.sequence_parallel:  # Megatron-LM's arguments.py asserts it
            raise ScenarioError("parallelism.tp_comm_overlap", "needs sequence_parallel: true with tp > 1 (Transformer "
                                "Engine's userbuffers overlap the sequence-parallel all-gathers and reduce-scatters)")
        stated = stated_mcore_version(t)
        if self.megatron_core and t.moe_router == "fused" and stated is not None and not fused_moe_router(stated):
            raise ScenarioError("training.mcore_version", f"'{stated}' has no fused MoE router (moe_router: fused, "
                                "--moe-router-fusion): Megatron-Core ships it from 0.14 (data/mcore_versions.yaml "
                                "moe_router_fusion)")
        self._check_recompute_modules_release(stated)
        if (self.megatron_core and m.mla is not None and t.rope_fusion and "rope_fusion" not in t._resolved
                and release_in(stated, "mla_refuses_rope_fusion")):
            # TransformerConfig.__post_init__ of 0.11 and 0.12 (data/mcore_versions.yaml mla_refuses_rope_fusion)
            raise ScenarioError("training.rope_fusion", f"true with multi-latent attention (model.mla): Megatron-Core "
                                f"'{stated}' refuses it (\"multi_latent_attention does not support "
                                "apply_rope_fusion\"): set rope_fusion: false")
        if p.tp_comm_overlap and p.tp > 1 and m.mla is not None and self.megatron_core and not MLA_RUNS_TP_OVERLAP:
            raise ScenarioError("parallelism.tp_comm_overlap", "Megatron-Core runs MLA without TP overlap (0.11-0.12 "
                                "refuse it, 0.13 on switch it off at q_down_proj; config.MLA_RUNS_TP_OVERLAP): set it "
                                "false")
        if p.tp_comm_overlap_impl == "async_tp" and not p.tp_comm_overlap:
            raise ScenarioError("parallelism.tp_comm_overlap_impl", "async_tp needs tp_comm_overlap: true")
        if p.tp_comm_overlap_impl == "async_tp" and m.moe is not None:
            raise ScenarioError("parallelism.tp_comm_overlap_impl", "async_tp is modelled for dense layers only "
                                "(torchtitan's async TP on its dense Llama models)")
        if p.tp_comm_overlap_impl == "async_tp" and (t.projections != "separate" or m.mlp != "swiglu"):
            raise ScenarioError("parallelism.tp_comm_overlap_impl", "async_tp is modelled as torchtitan's Llama runs "
                                "it (projections: separate, mlp: swiglu: two summed input gradients whose "
                                "reduce-scatters stay blocking)")
        if t.fp8_recipe == "torchao_tensorwise" and m.moe is not None:
            raise ScenarioError("training.fp8_recipe", "torchao_tensorwise converts dense nn.Linear layers only "
                                "(torchao's Float8Linear of the time did not convert grouped experts)")
        if t.layer_backward == "eager" and m.moe is not None and m.linear_biases:
            raise ScenarioError("training.layer_backward", "eager bias gradients are modelled for dense MLPs only "
                                "(llm-foundry's MPT); an MoE model with biases needs fused")
        self._check_eager_norm_rope()
        self._check_kv_expansion()
        if t.qkv_bias_add is not None and not m.linear_biases:  # round 33: ignored unsaid (a step unchanged)
            raise ScenarioError("training.qkv_bias_add", f"{t.qkv_bias_add}: the model has no linear biases "
                                "(model.bias false, or an rmsnorm model's default), so there is no QKV bias to add: "
                                "leave it unset")
        if t.dropout_add_norm == "fused" and (t.mcore_version is not None or p.pipeline_engine == "deepspeed"):
            # round 33 review: accepted unsaid on an MLPerf Megatron-Core scenario, two sum kernels a layer dropped
            raise ScenarioError("training.dropout_add_norm", "fused is flash-attention's DropoutAddLayerNorm; "
                                "Megatron-Core's layer (training.mcore_version stated) and Megatron-DeepSpeed's "
                                "(pipeline_engine: deepspeed) add the residual and run the norm as two consumers: "
                                "separate")
        self._check_offload()
        if p.fsdp is not None and (p.zero_stage != 3 or t.optimizer != "torch_adamw"):
            raise ScenarioError("parallelism.fsdp", f"{p.fsdp}: names the PyTorch FSDP of a zero_stage 3 run with "
                                "optimizer torch_adamw (Composer's decoupled_adamw is FSDP1 already); leave it unset")
        if p.virtual_stages > 1 and p.schedule != "1f1b":
            raise ScenarioError("parallelism.virtual_stages", "interleaving (virtual_stages > 1) needs schedule: 1f1b")
        if self.microbatches > MAX_MICROBATCHES:
            raise ScenarioError("training.global_batch_size", f"{t.global_batch_size} sequences give "
                                f"{self.microbatches} microbatches per replica (global_batch_size / (dp * "
                                f"micro_batch_size)), above the {MAX_MICROBATCHES:.0e} simulated in reasonable time")
        if p.virtual_stages > 1 and p.p2p == "blocking":
            raise ScenarioError("parallelism.p2p", "blocking sends are modelled for non-interleaved schedules only "
                                "(virtual_stages: 1); use auto or async with interleaving")
        if p.pipeline_engine == "deepspeed":
            self._check_deepspeed_engine()
        elif p.layernorm_tp_auto_sync:
            raise ScenarioError("parallelism.layernorm_tp_auto_sync", "BigScience's Megatron-DeepSpeed flag: needs "
                                "pipeline_engine: deepspeed")
        if p.virtual_stages > 1 and self.microbatches % p.pp:
            raise ScenarioError("parallelism.virtual_stages", f"the interleaved schedule needs microbatches "
                                f"({self.microbatches}) divisible by pp={p.pp} (as Megatron-LM requires)")
        return self

    def _check_deepspeed_engine(self) -> None:
        """What DeepSpeed's PipelineEngine (2021-2022) runs: TrainSchedule (1F1B, no interleaving), blocking
        sends, activations partitioned over the TP ranks (no sequence parallelism in Megatron-DeepSpeed then),
        gradients reduced after the last microbatch, ZeRO 0 or 1 ("PP+BF16 only work for ZeRO Stage 1";
        ZeRO-2/3 refuse pipelines), bf16/fp16, fp32 gradients only through BF16_Optimizer (bf16, sharded: ZeRO 1),
        its own gradient accumulation (no fusion into the wgrad GEMM)."""
        p, t = self.parallelism, self.training
        field = "parallelism.pipeline_engine"
        needs = [
            (p.schedule == "1f1b" and p.virtual_stages == 1, "schedule: 1f1b with virtual_stages: 1 (TrainSchedule)"),
            (p.p2p in ("auto", "blocking"), "p2p: auto or blocking (its sends are blocking broadcasts)"),
            (not p.overlap_grad_reduce, "overlap_grad_reduce: false (ReduceGrads runs after the last microbatch)"),
            (not p.overlap_param_gather and not p.tp_comm_overlap, "overlap_param_gather and tp_comm_overlap: false"),
            (p.tp == 1 or (not p.sequence_parallel and p.p2p_scatter_gather),
             "sequence_parallel: false and p2p_scatter_gather: true with tp > 1 (PartitionedTensor messages)"),
            (p.zero_stage in (0, 1), "zero_stage: 0 or 1 (ZeRO-2/3 do not run with its pipeline)"),
            (t.precision in ("bf16", "fp16"), "precision: bf16 or fp16"),
            (p.grad_reduce_dtype != "fp32" or (t.precision == "bf16" and p.zero_stage == 1),
             "fp32 gradients only with precision: bf16 and zero_stage: 1 (BF16_Optimizer); else grad_reduce_dtype "
             "bf16 or fp16"),
            (t.gradient_accumulation_fusion, "gradient_accumulation_fusion left true: the engine accumulates "
             "gradients itself (parallel/deepspeed_pipeline.py)"),
            (self.model.moe is None and p.cp == 1, "a dense model without context parallelism"),
            (p.local_ddp == "none" and t.optimizer == "adam",
             "local_ddp: none and optimizer: adam (its FusedAdam inside its own BF16_Optimizer / fp16 wrapper)"),
        ]
        for ok, need in needs:
            if not ok:
                raise ScenarioError(field, f"deepspeed needs {need}")

    def _check_precision_options(self) -> None:
        """Options that only mean something with what they need: an fp8 recipe with fp8 GEMMs (MXFP8 with tensor
        cores that scale by blocks: Blackwell's, which also run the MX fp4 formats, hence a GPU with an fp4 peak),
        MLA's up-projection recompute with MLA, Megatron-LM's 2020-2021 fp16 optimizer wrappers with fp16 and no
        ZeRO, its local DDP with the reduction after the backward. First of all, a precision the GPU has tensor cores
        for (fp8 on an A100 is refused here, naming the field, not when the run's MFU is computed)."""
        t = self.training
        self.cluster.gpu.peak_flop_per_s(t.precision)
        if t.fp8_recipe != "delayed" and t.precision != "fp8":
            raise ScenarioError("training.fp8_recipe", f"{t.fp8_recipe} needs precision: fp8 (the run is "
                                f"{t.precision})")
        if t.fp8_param_gather and (t.precision != "fp8" or self.parallelism.zero_stage == 0):
            # Megatron-LM's arguments.py: "--fp8-param-gather only supported with distributed optimizer, torch fsdp2,
            # megatron fsdp ..."
            raise ScenarioError("training.fp8_param_gather", "fp8 parameters need precision: fp8 and a sharded "
                                "optimizer (zero_stage 1, 2 or 3: the distributed optimizer or FSDP), as Megatron-LM "
                                "requires")
        if (t.fp8_param_gather and not self.megatron_core
                and not (t.fp8_recipe == "torchao_tensorwise" and t.optimizer == "torch_adamw")):
            # fp8 parameters (fp8_model_init, the optimizer casting into them) are Megatron-Core's; on torchtitan's
            # FSDP2 with torchao's tensorwise recipe the option is torchao's float8 all-gather (workload.torchao_float8)
            raise ScenarioError("training.fp8_param_gather", "fp8 parameters are modelled on Megatron-Core (its "
                                "distributed optimizer or Megatron-FSDP) and as torchao's float8 all-gather "
                                "(fp8_recipe: torchao_tensorwise with optimizer: torch_adamw) only; this stack has "
                                "neither (set it false)")
        if t.fp8_precompute_scale and not (t.fp8_param_gather and t.fp8_recipe == "torchao_tensorwise"
                                           and t.optimizer == "torch_adamw"):
            raise ScenarioError("training.fp8_precompute_scale", "precomputed float8 scales need torchao's float8 "
                                "all-gather (fp8_param_gather: true, fp8_recipe: torchao_tensorwise, optimizer: "
                                "torch_adamw)")
        if (t.precision == "fp8" and self.parallelism.zero_stage >= 3 and not t.fp8_param_gather
                and not t.fp8_recipe.startswith("torchao")):
            # torch FSDP and Megatron-FSDP (without keep_fp8_transpose_cache) free Transformer Engine's cached fp8
            # weights after each use, so it re-quantizes them every microbatch: not modelled (workload.fp8_params)
            # on Hopper fp8 parameters are refused too (workload.fp8_params.refuse_sharded_transpose): not suggested
            gpu = self.cluster.gpu.name
            start = f"zero_stage 3 with fp8 on {gpu} ({t.fp8_recipe} recipe)"
            if not self.megatron_core:
                why = (f"{start} off Megatron-Core re-quantizes the weights FSDP frees every microbatch: not modelled "
                       "(use zero_stage 1 or 2, or precision bf16)")
            elif hardware.fp8_gemms_tn_only(gpu):
                why = (f"{start} re-quantizes the weights FSDP frees every microbatch, and with fp8 parameters remakes "
                       "each weight's transpose: neither is modelled (use zero_stage 1 or 2, or precision bf16)")
            else:
                why = f"{start} is modelled with fp8 parameters only (set it true)"
            raise ScenarioError("training.fp8_param_gather", why)
        if t.fp8_recipe == "mxfp8" and "fp4" not in self.cluster.gpu.peak:
            raise ScenarioError("training.fp8_recipe", f"mxfp8 needs tensor cores with block scaling (Blackwell); "
                                f"{self.cluster.gpu.name} has none")
        if t.autocast_fp32_params and t.precision not in ("bf16", "fp16"):
            raise ScenarioError("training.autocast_fp32_params", f"autocast casts fp32 parameters to 16 bits: needs "
                                f"precision: bf16 or fp16 (the run is {t.precision})")
        if t.autocast_fp32_params and t.optimizer not in AUTOCAST_OPTIMIZERS:
            raise ScenarioError("training.autocast_fp32_params", f"fp32 parameters are stepped in place by "
                                f"{' or '.join(AUTOCAST_OPTIMIZERS)}; optimizer {t.optimizer} keeps a 16-bit model "
                                f"copy beside fp32 master weights")
        if not t.master_weights and (t.precision not in ("bf16", "fp16") or t.optimizer != "torch_adamw"
                                     or t.autocast_fp32_params or t.adam_moments_dtype != "fp32"):
            raise ScenarioError("training.master_weights", f"false (16-bit parameters stepped in place by torch's "
                                f"Adam, moments in their dtype) needs precision bf16 or fp16, optimizer torch_adamw, "
                                f"no autocast_fp32_params and adam_moments_dtype unset (the run: precision "
                                f"{t.precision}, optimizer {t.optimizer})")
        if t.trainer == "lightning" and (t.optimizer != "torch_adamw" or self.parallelism.pp != 1
                                         or self.parallelism.zero_stage > 1):
            raise ScenarioError("training.trainer", f"lightning (flash-attention's Lightning loop with DDP and "
                                f"ZeroRedundancyOptimizer) needs optimizer torch_adamw, pp 1 and zero_stage 0 or 1 "
                                f"(the run: optimizer {t.optimizer}, pp {self.parallelism.pp}, zero_stage "
                                f"{self.parallelism.zero_stage})")
        if t.mlp_activation == "epilogue" and (self.model.mlp != "gelu" or self.model.moe is not None
                                               or t.precision == "fp8"):
            raise ScenarioError("training.mlp_activation", f"the GEMM epilogue GELU is modelled for a dense GELU MLP "
                                f"in 16 or 32 bits (model mlp {self.model.mlp}, "
                                f"{'MoE' if self.model.moe is not None else 'dense'}, precision {t.precision})")
        if t.dropout_add_norm == "fused" and t.precision == "fp8":
            raise ScenarioError("training.dropout_add_norm", "fused (flash-attention's DropoutAddLayerNorm, which "
                                "writes the norm's output in the input's 16 or 32 bits) is modelled without fp8 "
                                "(precision fp8)")
        if t.mlp_activation == "layernorm_mlp" and (self.model.mlp != "gelu" or self.model.moe is not None):
            raise ScenarioError("training.mlp_activation", f"layernorm_mlp (Transformer Engine 1.x's LayerNormMLP, "
                                f"its GELU fused with the fp8 casts) is modelled for a dense GELU MLP (model mlp "
                                f"{self.model.mlp}, {'MoE' if self.model.moe is not None else 'dense'})")
        if t.mlp_activation == "eager" and (self.model.mlp != "swiglu" or self.model.moe is not None):
            raise ScenarioError("training.mlp_activation", f"eager (PyTorch's silu(gate) * up op by op) is modelled "
                                f"for a dense SwiGLU MLP (model mlp {self.model.mlp}, "
                                f"{'MoE' if self.model.moe is not None else 'dense'})")
        if t.projections == "separate" and self.model.mla is not None:
            raise ScenarioError("training.projections", "separate projections are modelled for multi-head and "
                                "grouped-query attention (MLA has its own projections)")
        if t.logits_memory == "torch_16bit" and t.precision in ("fp32", "tf32"):
            raise ScenarioError("training.logits_memory", f"torch_16bit holds the 16-bit logits of a bf16, fp16 or "
                                f"fp8 run; precision {t.precision} computes them in fp32 (use torch_fp32)")
        if t.logits_memory in TORCH_LOGITS and t.cross_entropy == "fused":
            raise ScenarioError("training.logits_memory", f"{t.logits_memory}: torch's cross entropy on the whole "
                                "logits, which the fused loss (cross_entropy: fused) never materialises")
        if "mla_up_proj" in t.recompute_modules and self.model.mla is None:
            raise ScenarioError("training.recompute_modules", "mla_up_proj needs a model with mla")
        if "moe_act" in t.recompute_modules and self.model.moe is None:
            # Megatron-Core: moe_act exists in its grouped experts only (TEGroupedMLP; "moe_act in recompute_modules
            # is only supported with moe_grouped_gemm"), the experts simcluster models
            raise ScenarioError("training.recompute_modules", "moe_act needs a model with moe (its grouped experts' "
                                "activation)")
        self._check_module_checkpoints()
        if t.optimizer.startswith("megatron") and (t.precision != "fp16" or self.parallelism.zero_stage):
            raise ScenarioError("training.optimizer", f"{t.optimizer} is Megatron-LM's fp16 optimizer wrapper: needs "
                                "precision: fp16 and zero_stage: 0 (no distributed optimizer then)")
        if t.optimizer == "adam_precision_aware" and t.precision not in PRECISION_AWARE_PRECISIONS:
            raise ScenarioError("training.optimizer", f"adam_precision_aware keeps 16-bit remainders of bf16 "
                                f"weights: needs precision: bf16 or fp8 (the run is {t.precision})")
        # bf16 moments with Megatron-Core's own fp32 master (adam): use_precision_aware_optimizer with
        # use_precision_aware_optimizer_no_fp8_or_ds_fp8 False, i.e. the optimizer config's fp8_recipe neither None nor
        # delayed: an fp8 run with current scaling or MXFP8, or a Megatron-Bridge bf16 run (its MixedPrecisionConfig
        # copies its fp8_recipe default "tensorwise" onto the optimizer config; workload/optimizer_step.py)
        if t.adam_moments_dtype == "bf16" and not (
                t.optimizer == "adam_precision_aware"
                or (t.optimizer == "adam" and (t.precision == "bf16"
                                               or (t.precision == "fp8" and t.fp8_recipe != "delayed")))):
            raise ScenarioError("training.adam_moments_dtype", f"bf16 moments need Megatron-Core's precision-aware "
                                f"optimizer: optimizer adam_precision_aware, or adam in a bf16 run or an fp8 run with "
                                f"current scaling or mxfp8 (the run: optimizer {t.optimizer}, precision {t.precision}"
                                f"{f', fp8_recipe {t.fp8_recipe}' if t.precision == 'fp8' else ''})")
        stated = stated_mcore_version(t)
        if self.megatron_core and stated is not None and not _at_least(stated, "precision_aware_optimizer"):
            # OptimizerConfig.use_precision_aware_optimizer and exp_avg_dtype first ship in 0.11.0 (the 0.10.0 and
            # 0.11.0 wheels; data/mcore_versions.yaml precision_aware_optimizer)
            for field, value, off in (("optimizer", t.optimizer, "adam"), ("adam_moments_dtype",
                                                                            t.adam_moments_dtype, "fp32")):
                if value in ("adam_precision_aware", "bf16"):
                    raise ScenarioError(f"training.{field}", f"{value} is Megatron-Core's precision-aware optimizer, "
                                        f"first in release 0.11: the run states mcore_version {stated!r} (state "
                                        f"{off}, or a release from '0.11')")
        if (self.megatron_core and stated is not None and t.optimizer == "adam" and t.adam_moments_dtype == "bf16"
                and _at_least(stated, "precision_aware_optimizer")):
            # Megatron-Core's own fp32 master with TE's bf16 moments: the optimizer config's fp8_recipe and
            # use_precision_aware_optimizer_no_fp8_or_ds_fp8 first in 0.13 (0.11, 0.12: TE always keeps the master);
            # a bf16 run's tensorwise recipe there is Megatron-Bridge's, 0.14 (data/mcore_versions.yaml
            # own_master_bf16_moments, megatron_bridge)
            first = "megatron_bridge" if t.precision == "bf16" else "own_master_bf16_moments"
            if not _at_least(stated, first):
                release = catalog.load("mcore_versions")[first]
                why = ("TE keeps the master weights" if not _at_least(stated, "own_master_bf16_moments")
                       else "a bf16 run's optimizer config has no current-scaling recipe")
                raise ScenarioError("training.adam_moments_dtype", f"bf16 with optimizer adam (Megatron-Core's own "
                                    f"fp32 master) needs a {t.precision} run on mcore_version {release!r} or later: "
                                    f"the run states {stated!r}, where {why} (state optimizer adam_precision_aware, "
                                    f"or adam_moments_dtype fp32)")
        p = self.parallelism
        if p.local_ddp != "none" and not t.optimizer.startswith("megatron") and p.pipeline_engine != "deepspeed":
            # (DeepSpeed's engine refuses Megatron's DDP itself: _check_deepspeed_engine)
            raise ScenarioError("parallelism.local_ddp", f"{p.local_ddp}: Megatron-LM's local DDP of 2020-2021 runs "
                                "with its fp16 optimizer wrapper (optimizer: megatron2020 or megatron2021)")
        if p.grad_buckets == "apex" and (p.zero_stage not in (1, 2) or not p.overlap_grad_reduce
                                         or self.model.moe is not None):
            raise ScenarioError("parallelism.grad_buckets", "apex is Apex's distributed Adam with overlapped "
                                "reductions: needs zero_stage 1 or 2, overlap_grad_reduce true and a dense model")
        if p.overlap_param_gather_with_optimizer_step and not (
                self.megatron_core and p.zero_stage in (1, 2) and p.overlap_param_gather and p.virtual_stages > 1
                and p.grad_buckets != "apex" and _at_least(t.mcore_version, "param_gather_with_optimizer_step")):
            first = catalog.load("mcore_versions")["param_gather_with_optimizer_step"]
            raise ScenarioError("parallelism.overlap_param_gather_with_optimizer_step", "true is Megatron-Core's "
                                "distributed optimizer option (Megatron-LM validate_args): needs Megatron-Core's own "
                                "buffers (not grad_buckets apex), zero_stage 1 or 2, overlap_param_gather true, "
                                f"virtual_stages > 1 and mcore_version {first} or later (the option's first release, "
                                "data/mcore_versions.yaml)")
        if p.grad_buckets == "megatron_core" and (not self.megatron_core or p.zero_stage >= 3):
            raise ScenarioError("parallelism.grad_buckets", "megatron_core is Megatron-Core's DistributedDataParallel "
                                "at ZeRO 0-2: this stack is not Megatron-Core or runs ZeRO 3 (set megatron or leave "
                                "it unset)")
        if p.average_in_collective and (p.grad_buckets != "megatron_core"
                                        or not grad_scaling_at_least(t.mcore_version, "average_in_collective")):
            raise ScenarioError("parallelism.average_in_collective", "true is Megatron-Core's DDP option from release "
                                "0.8: needs grad_buckets megatron_core and mcore_version 0.8 or later (set false or "
                                "leave it unset)")
        if p.check_for_nan_in_grad and (p.grad_buckets != "megatron_core" or not has_nan_check(t.mcore_version)):
            raise ScenarioError("parallelism.check_for_nan_in_grad", "true is Megatron-Core's DDP check from release "
                                "0.6: needs grad_buckets megatron_core and mcore_version 0.6 or later (set false or "
                                "leave it unset)")
        if p.suggested_communication_unit_size is not None and (not self.megatron_core or p.zero_stage != 3
                                                                or self.model.moe is not None):
            raise ScenarioError("parallelism.suggested_communication_unit_size", "is Megatron-FSDP's prefetch budget, "
                                "read for a dense model at zero_stage 3 on Megatron-Core only (leave it unset)")
        if p.suggested_communication_unit_size is not None and not _at_least(t.mcore_version, "megatron_fsdp"):
            raise ScenarioError("parallelism.suggested_communication_unit_size", "is Megatron-FSDP's option from "
                                "Megatron-Core 0.12: state training.mcore_version 0.12 or later (or leave it unset)")
        if p.local_ddp != "none" and p.overlap_grad_reduce and p.dp > 1:
            raise ScenarioError("parallelism.local_ddp", f"{p.local_ddp}: Megatron-LM's local DDP reduces after the "
                                "backward, set overlap_grad_reduce: false")

    def _check_eager_norm_rope(self) -> None:
        """``norm_kernels`` / ``rope_kernels`` eager model fms's and torchtitan's RMSNorm and RoPE run without
        torch.compile: 16-bit activations upcast to fp32, not Megatron-Core's fused modules, and no TP overlap (an
        async-TP run is compiled: torchtitan's async TP is a compiler pass; Megatron's overlap is Megatron-Core's).
        Tensor parallelism itself is allowed: the norms run on the sequence shard (every token without sequence
        parallelism), the RoPE on the local heads."""
        t, m, p = self.training, self.model, self.parallelism
        for key, eager, needs in (("norm_kernels", t.norm_kernels != "fused",
                                   [(m.norm != "rmsnorm", "model.norm rmsnorm (LayerNormParameterized in RMSNorm "
                                     "mode)"), (m.qk_layernorm, "no model.qk_layernorm"),
                                    (t.dropout_add_norm == "fused", "dropout_add_norm separate")]),
                                  ("rope_kernels", t.rope_kernels != "fused",
                                   [(m.position != "rope", "model.position rope"),
                                    (m.mla is not None, "no model.mla")])):
            if not eager:
                continue
            needs += [(t.precision not in ("bf16", "fp16"), "precision bf16 or fp16 (the fp32 upcast of 16-bit "
                       "activations)"), (p.tp_comm_overlap, "parallelism.tp_comm_overlap false (an overlapped TP "
                       "run is compiled or Megatron-Core)"),
                      (self.megatron_core, "a stack other than Megatron-Core (its norms and RoPE are fused modules)")]
            for failed, need in needs:
                if failed:
                    raise ScenarioError(f"training.{key}", f"{getattr(t, key)} needs {need}")

    def _check_kv_expansion(self) -> None:
        """``kv_expansion: copy`` models the PyTorch-native attention modules that expand GQA's heads before SDPA:
        not MLA (its own attention, workload/mla.py) and not Megatron-Core (TE and flash read the groups directly)."""
        if self.training.kv_expansion == "none":
            return
        for failed, need in ((self.model.mla is not None, "no model.mla"),
                             (self.megatron_core, "a stack other than Megatron-Core (its attention reads the "
                              "key/value groups directly)")):
            if failed:
                raise ScenarioError("training.kv_expansion", f"copy needs {need}")

    def _check_offload(self) -> None:
        """Megatron-Core's limits on activation offloading (TransformerConfig.__post_init__): fewer layers than the
        model has, no pipeline parallelism, no activation recompute."""
        t, offload = self.training, self.training.activation_offload_layers
        if not offload:
            return
        if offload >= self.model.layers:
            raise ScenarioError("training.activation_offload_layers", f"{offload} layers: must be fewer than the "
                                f"model's {self.model.layers}")
        if self.parallelism.pp > 1 or self.parallelism.virtual_stages > 1:
            raise ScenarioError("training.activation_offload_layers", "activation offloading needs pp: 1 and "
                                "virtual_stages: 1 (Megatron-Core has no pipeline parallelism with CPU offloading)")
        if t.activation_recompute != "none":
            raise ScenarioError("training.activation_offload_layers", "activation offloading needs "
                                "activation_recompute: none (Megatron-Core does not combine them)")
        if t.recompute_modules:
            raise ScenarioError("training.activation_offload_layers", "activation offloading needs no "
                                "recompute_modules (Megatron-Core does not combine them)")

    def _check_recompute_modules_release(self, stated: str | None) -> None:
        """A stated release before 0.13 (data/mcore_versions.yaml recompute_modules) had no --recompute-modules:
        only core_attn (its selective recompute) and moe (its --moe-layer-recompute) describe such a run."""
        newer = [m for m in self.training.recompute_modules if m not in ("core_attn", "moe")]
        if self.megatron_core and stated is not None and newer and not _at_least(stated, "recompute_modules"):
            raise ScenarioError("training.recompute_modules", f"{newer[0]} is a --recompute-modules choice, first in "
                                f"Megatron-Core {catalog.load('mcore_versions')['recompute_modules']}: the run states "
                                f"mcore_version {stated!r}")

    def _check_module_checkpoints(self) -> None:
        """The whole-module checkpoints of ``recompute_modules`` need their module in the model. Megatron-Core
        (TransformerConfig, 0.13 on) accepts mlp, moe and shared_experts on any model and lets one without the module
        do nothing (TransformerLayer sets recompute_mlp only when the layer's MLP is not an MoELayer; MoELayer's
        shared_experts_recompute acts only with shared experts); a key that changes nothing is refused here."""
        modules, moe = self.training.recompute_modules, self.model.moe
        if "mlp" in modules and self.model.moe_layers == self.model.layers:
            raise ScenarioError("training.recompute_modules", "mlp recomputes the dense MLP: every layer of this "
                                "model is an MoE layer (use moe or moe_act)")
        if "moe" in modules and moe is None:
            raise ScenarioError("training.recompute_modules", "moe needs a model with moe (it recomputes the MoE "
                                "layer)")
        if "shared_experts" in modules and (moe is None or not moe.shared_experts):
            raise ScenarioError("training.recompute_modules", "shared_experts needs a model with moe.shared_experts")

    def _check_experts(self) -> None:
        """Expert parallelism as Megatron-Core lays it out: ep x etp x expert-data-parallel = tp x cp x dp."""
        p, moe = self.parallelism, self.model.moe
        if moe is None:
            if p.ep > 1 or p.etp > 1:
                raise ScenarioError("parallelism.ep", "expert parallelism (ep, etp > 1) needs a model with moe")
            if p.moe_dispatcher != "alltoall":
                raise ScenarioError("parallelism.moe_dispatcher", f"{p.moe_dispatcher} dispatches MoE tokens: it "
                                    "needs a model with moe")
            for key, default in DENSE_MOE_ROUTER_DEFAULTS.items():
                # a router option stated on a dense model: nothing reads it, yet moe_router fused would set the TE
                # default (default_te_version) and meet the release check as if the run had an MoE router
                if (value := getattr(self.training, key)) != default:
                    raise ScenarioError(f"training.{key}", f"{str(value).lower()} configures the MoE router: it "
                                        "needs a model with moe")
            return
        if moe.experts % p.ep:
            raise ScenarioError("parallelism.ep", f"{moe.experts} experts are not divisible by ep={p.ep}")
        if (p.tp * p.cp * p.dp) % (p.ep * p.etp):
            raise ScenarioError("parallelism.ep", f"ep*etp = {p.ep}*{p.etp} does not divide tp*cp*dp = "
                                f"{p.tp}*{p.cp}*{p.dp} (the ranks of a pipeline stage, as Megatron-Core requires)")
        if moe.ffn_hidden % p.etp:
            raise ScenarioError("parallelism.etp", f"expert ffn_hidden {moe.ffn_hidden} is not divisible by "
                                f"etp={p.etp}")
        if p.tp > 1 and not p.sequence_parallel:
            raise ScenarioError("parallelism.sequence_parallel", "MoE with tp > 1 needs sequence_parallel: true "
                                "(Megatron-Core requires it)")
        if p.moe_dispatcher == "flex" and p.ep_alltoall != "hierarchical":
            raise ScenarioError("parallelism.moe_dispatcher", "flex (DeepEP, HybridEP) sends a token once per "
                                "destination node and GPU: it needs ep_alltoall: hierarchical")
        if p.moe_dispatcher == "flex" and p.ep * p.etp == 1:
            raise ScenarioError("parallelism.moe_dispatcher", "flex dispatches tokens between expert-parallel "
                                "ranks: it needs ep x etp > 1 (Megatron-Core's flex dispatcher asserts it)")
        if p.moe_dispatcher == "flex" and moe.pad_to_capacity:
            raise ScenarioError("model.moe.pad_to_capacity", "the flex dispatcher does not pad experts to capacity "
                                "(Megatron-Core's flex dispatcher asserts it): use moe_dispatcher: alltoall")
        if p.ep_alltoall == "hierarchical" and moe.pad_to_capacity:
            raise ScenarioError("model.moe.pad_to_capacity", "padded rows are per expert and nothing deduplicates "
                                "them per node: padding needs ep_alltoall: direct")

    @property
    def expert_data_parallel(self) -> int:
        """Ranks of a pipeline stage holding the same expert shard (Megatron-Core's expert data parallel group)."""
        p = self.parallelism
        return p.tp * p.cp * p.dp // (p.ep * p.etp)

    @property
    def microbatches(self) -> int:
        """Microbatches per data-parallel replica per step."""
        return self.training.global_batch_size // (self.parallelism.dp * self.training.micro_batch_size)

    @property
    def tokens_per_step(self) -> int:
        return self.training.global_batch_size * self.training.seq_len

    @property
    def price_per_gpu_hour(self) -> float:
        price = self.cluster.price_per_gpu_hour
        return self.cluster.gpu.price_per_gpu_hour if price is None else price


def _field_path(loc: tuple) -> str:
    return ".".join(str(part) for part in loc if not str(part).startswith("function-"))


def from_dict(data: Any, source: str = "scenario") -> Scenario:
    """Validate a parsed YAML document; any problem is a ScenarioError naming the field."""
    if not isinstance(data, dict):
        got = ("nothing (an empty file, or only comments)" if data is None else  # was 'got NoneType' (round 32)
               f"{'a list' if isinstance(data, list) else 'a single value'} ({shown(data)[:60]})")
        raise ScenarioError(source, f"expected a mapping of scenario fields, got {got}")
    if "jobs" in data:
        raise ScenarioError("jobs", "a scenario with several jobs on one fabric runs with `simcluster run` "
                            "(spec.jobs); this takes a single-job scenario")
    try:
        return Scenario.model_validate(data)
    except ScenarioError:
        raise
    except ValidationError as err:
        raise_first(err, source, Scenario)


def _model_in(annotation) -> type[BaseModel] | None:
    """The first pydantic model in a field's annotation (``GpuSpec`` in ``str | GpuSpec``, ``Straggler`` in
    ``list[Straggler] | None``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _known_keys(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """The keys the mapping holding an unknown key (``loc``, the key last) takes under ``model``, or [] when the path
    cannot be followed. Parts that name no field (list indexes, a union member's tag, a dict's key) are passed."""
    for part in loc[:-1]:
        if model is None:
            return []
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is not None:
            model = _model_in(field.annotation)
    return list(model.model_fields) if model is not None else []


def raise_first(err: ValidationError, source: str, model: type[BaseModel] | None = None):
    """Raise pydantic's first error as a ScenarioError naming its field. ``model``: the model validated, whose field
    names an unknown key is matched against (a near miss, ``cuda_graphs_scope``, is told the key it is close to)."""
    errors = err.errors(include_url=False)
    first = errors[0]
    if first["type"] == "missing":  # a key spelled wrong beside it is likelier the cause: `modle` for `model`
        first = next((e for e in errors if e["type"] == "extra_forbidden" and e["loc"][:-1] == first["loc"][:-1]),
                     first)
    field = _field_path(first["loc"]) or source
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] not in ("value_error", "missing", "extra_forbidden") and "input" in first:
        message += f", got {shown(first['input'])}"
    if first["type"] == "less_than_equal":
        message += " (a plausibility bound, see docs/robustness.md)"
    if first["type"] == "extra_forbidden":
        close = did_you_mean(first["loc"][-1], _known_keys(model, first["loc"])) if first["loc"] else ""
        message = f"unknown key ({close}see `simcluster schema` for the allowed fields)"
    elif first["type"] == "missing":
        message = "required field is missing"
    ctx_error = (first.get("ctx") or {}).get("error")
    if isinstance(ctx_error, ScenarioError):
        field, message = ctx_error.field, ctx_error.message
    raise ScenarioError(field, message) from None


def bundled_dir() -> Path:
    """Folder of the scenarios shipped with the package (the repo's ``scenarios/`` links to it)."""
    return Path(str(resources.files("simcluster").joinpath("data", "scenarios")))


def bundled_names() -> list[str]:
    return sorted(p.stem for p in bundled_dir().glob("*.yaml"))


DEFAULT_SCENARIO = "gpt3-175b-1024-h100"


def resolve_path(name_or_path: str | Path | None) -> Path:
    """A scenario file: a path, or the name of a bundled scenario; None is the bundled default."""
    if name_or_path is None:
        name_or_path = DEFAULT_SCENARIO
    if not str(name_or_path).strip():  # Path('') is '.', the current folder: say what was given
        raise ScenarioError("SCENARIO", f"expected a scenario file or bundled name, got {str(name_or_path)!r} (leave "
                            "it out for the demo)")
    path = Path(name_or_path)
    bundled = bundled_dir() / f"{name_or_path}.yaml"
    try:
        if path.is_file():
            return path
        if bundled.is_file():
            return bundled
        if path.exists():  # a folder, a FIFO (reading it would wait forever), a device
            raise ScenarioError("SCENARIO", f"{str(path)!r} is not a regular file (a folder, a pipe or a device?)")
        if path.is_symlink():  # a link to nothing, or to itself: "no file" and every bundled name misled (round 31)
            raise ScenarioError("SCENARIO", f"{str(path)!r} is a symbolic link that leads to no file (dangling, or "
                                "a loop)")
    except OSError as err:  # a name longer than the file system takes
        raise ScenarioError("SCENARIO", f"cannot use {str(name_or_path)[:60]!r}...: {err.strerror}") from None
    raise ScenarioError("SCENARIO", f"no file {str(path)!r} and no bundled scenario of that name "
                        f"(bundled: {', '.join(bundled_names())}; `simcluster run --list` says what each is for)")


def load(name_or_path: str | Path | None = None) -> Scenario:
    """Read and validate a scenario file (or a bundled scenario by name); size, text and YAML aliases are
    bounded (``core.inputs``)."""
    path = resolve_path(name_or_path)
    data = inputs.load_yaml(path, inputs.MAX_SCENARIO_BYTES, "scenario file")
    return from_dict(data, source=str(path))


def json_schema() -> dict:
    return Scenario.model_json_schema()
