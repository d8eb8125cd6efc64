"""GPUs, NICs and host links: specs with their sources, and the catalog in ``simcluster/data/hardware.yaml``.

A scenario names a catalog entry (``gpu: h100-sxm``) or writes an inline spec with the same keys; both go through
the same pydantic models, so units are parsed once and unknown keys are errors.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, Strict, field_validator, model_validator

from simcluster.core import catalog
from simcluster.core.errors import ScenarioError, unknown_name
from simcluster.core.units import (
    BoardWatts,
    FiniteNumber,
    NonNegativeSeconds,
    NonNegativeWatts,
    PositiveBytes,
    PositiveBytesPerS,
    PositiveFlopPerS,
    WholeNumber,
)
from simcluster.spec.base import Spec

Precision = Literal["fp32", "tf32", "bf16", "fp16", "fp8"]
# Precisions a datasheet lists peaks for: the training precisions and fp4 (Blackwell's NVFP4/MXFP4 tensor cores;
# listed for reference, not a training precision of this simulator)
PeakPrecision = Literal["fp32", "tf32", "bf16", "fp16", "fp8", "fp4"]

# Bytes of one element of each training precision (weights and activations stored in it).
BYTES_PER_ELEMENT: dict[str, int] = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1}


# USD per GPU-hour: on-demand cloud list prices of an H100 were $2-12 in 2024 (AWS p5.48xlarge: $98.32/h for 8 GPUs);
# a thousand dollars is about a hundred times the dearest, and far larger prices overflow the cost figures.
MAX_PRICE_PER_GPU_HOUR = 1000.0


class GpuSpec(Spec):
    """One accelerator: tensor-core peaks, HBM, scale-up link, power and an indicative price."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom-gpu"
    vendor: str = "custom"
    # Peaks, capacities and bandwidths are > 0 (a rate divides: zero has no meaning, a negative one would run
    # the simulation backwards); powers are >= 0 and idle <= TDP. All are finite.
    peak: dict[PeakPrecision, PositiveFlopPerS] = Field(
        description="dense peak FLOP/s per precision, e.g. {bf16: 989 TFLOP/s}")
    hbm_capacity: PositiveBytes = Field(description="HBM capacity, e.g. '80 GB'")
    hbm_bandwidth: PositiveBytesPerS = Field(description="HBM bandwidth, e.g. '3.35 TB/s'")
    nvlink_bandwidth: PositiveBytesPerS = Field(description="scale-up bandwidth per GPU per direction, e.g. '450 GB/s'")
    nvlink_generation: WholeNumber = Field(4, ge=0, le=6, description="NVLink generation (0: not NVLink)")
    nvls: Annotated[bool, Strict()] = Field(
        False, description="NVSwitch in-network reduction (NVLink SHARP) available")
    tdp: BoardWatts = Field(description="board power at full load, e.g. '700 W' (1 W to 1 MW)")
    idle_power: NonNegativeWatts = Field(description="board power when idle, e.g. '70 W'")
    price_per_gpu_hour: FiniteNumber = Field(gt=0, le=MAX_PRICE_PER_GPU_HOUR,
                                             description="USD per GPU-hour, indicative")
    source: str = ""

    @model_validator(mode="after")
    def _idle_below_tdp(self) -> GpuSpec:
        if self.idle_power > self.tdp:
            raise ValueError(f"idle_power ({self.idle_power:g} W) exceeds tdp ({self.tdp:g} W)")
        return self

    def peak_flop_per_s(self, precision: str) -> float:
        """Dense peak for ``precision``; fp16/bf16 share tensor cores."""
        if precision not in self.peak:
            raise ScenarioError("training.precision", f"{self.name} has no {precision} peak listed "
                                f"(has: {', '.join(sorted(self.peak))})")
        return self.peak[precision]


class NicSpec(Spec):
    """A network adapter, one per GPU on the scale-out fabric."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom-nic"
    rate: PositiveBytesPerS = Field(description="per direction: the line rate, e.g. '400 Gb/s', or an effective "
                                    "per-GPU rate (measured bus bandwidth / network efficiency) where the scenario "
                                    "cites a measurement")
    latency: NonNegativeSeconds = Field("1 us", validate_default=True, description="adapter latency, e.g. '1 us'")
    host: str = Field("pcie-gen5", description="host link, a name in the pcie catalog")
    source: str = ""

    @field_validator("host")
    @classmethod
    def _known_host(cls, value: str) -> str:
        if value not in catalog.load("hardware")["pcie"]:
            raise ValueError(f"unknown host link {value!r}")
        return value


class LinkSpec(Spec):
    """A host link (PCIe) or a switch traversal: bandwidth and/or latency."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    bandwidth: PositiveBytesPerS | None = None
    latency: NonNegativeSeconds = 0.0
    source: str = ""


def _entry(section: str, name: str, field: str) -> dict:
    entries = catalog.load("hardware")[section]
    if name not in entries:
        raise unknown_name(field, f"{section[:-1]} preset", name, sorted(entries))
    return {"name": name, **entries[name]}


def gpu(name: str, field: str = "cluster.gpu") -> GpuSpec:
    """The catalog GPU ``name`` (e.g. 'h100-sxm')."""
    return GpuSpec(**_entry("gpus", name, field))


# The figures of a GPU's silicon, on which the tables keyed by its catalog name rest (efficiency.yaml: SM counts,
# clocks, GEMM and HBM fractions, fp8 layouts; interference.yaml: persistent GEMM grids), and its NVLink generation
# (the chip's ports): an inline spec named like a catalog GPU is that GPU, so these must be the catalog's. Its
# board and system figures (NVLink bandwidth, NVLS, TDP, idle power, price, vendor, source) may differ: the A800
# is an A100 whose NVLink runs 200 GB/s a direction, and a power cap moves only the energy figures (docs/scenario.md,
# cluster.gpu).
SILICON_FIGURES = ("peak", "hbm_capacity", "hbm_bandwidth", "nvlink_generation")


# Figures equal to this relative precision are the same: "3350 GB/s" and the catalog's "3.35 TB/s" parse to floats
# a rounding apart.
SAME_FIGURE_REL = 1e-9


def _differing(field: str, written, listed, texts: tuple) -> str | None:
    """The first place where ``written`` (an inline spec's figure) differs from ``listed`` (the catalog's), as
    "FIELD WRITTEN, the catalog's LISTED" (``texts``: both as the JSON dump writes them), else None."""
    if isinstance(listed, dict):
        for key in sorted(set(written) | set(listed)):
            if key not in written or key not in listed:
                return (f"{field}.{key} {texts[0].get(key, 'not listed')}, the catalog's "
                        f"{texts[1].get(key, 'not listed')}")
            found = _differing(f"{field}.{key}", written[key], listed[key], (texts[0][key], texts[1][key]))
            if found:
                return found
        return None
    same = math.isclose(written, listed, rel_tol=SAME_FIGURE_REL, abs_tol=0.0)
    return None if same else f"{field} {texts[0]}, the catalog's {texts[1]}"


def catalog_conflict(spec: GpuSpec) -> str | None:
    """For an inline ``spec`` named like a catalog GPU: the first of its silicon figures (``SILICON_FIGURES``) that
    differs from that GPU's, as "FIELD WRITTEN, the catalog's VALUE", else None (another name, or the same
    figures)."""
    if spec.name not in catalog.load("hardware")["gpus"]:
        return None
    known = gpu(spec.name)
    texts = (spec.model_dump(mode="json"), known.model_dump(mode="json"))
    for field in SILICON_FIGURES:
        found = _differing(field, getattr(spec, field), getattr(known, field), (texts[0][field], texts[1][field]))
        if found:
            return found
    return None


def _folded(name: str) -> str:
    """``name`` as a reader sees it: compatibility forms folded (NFKC: a full-width ``Ｂ300`` is ``B300``), invisible
    format characters dropped (a zero-width space or joiner pasted from a web page), case and surrounding blanks
    ignored."""
    text = unicodedata.normalize("NFKC", name)
    return "".join(c for c in text if unicodedata.category(c) != "Cf").strip().casefold()


def catalog_lookalike(spec: GpuSpec) -> str | None:
    """The catalog GPU an inline ``spec``'s name spells apart from case, surrounding blanks (``B300``, `` b300``;
    round 30), compatibility forms and invisible format characters (``Ｂ300``, ``b300`` with a zero-width space;
    round 31: they ran silently with the default tables), else None. The name-keyed tables match the exact name, so
    such a spec takes their defaults, not that GPU's: ``cluster.gpu: B300`` is refused as an unknown preset."""
    gpus = catalog.load("hardware")["gpus"]
    folded = _folded(spec.name)
    if spec.name in gpus or not folded:
        return None
    return next((name for name in gpus if _folded(name) == folded), None)


def nic(name: str, field: str = "cluster.nic") -> NicSpec:
    """The catalog NIC ``name`` (e.g. 'connectx-7')."""
    return NicSpec(**_entry("nics", name, field))


def pcie(name: str) -> LinkSpec:
    """The catalog host link ``name`` (e.g. 'pcie-gen5')."""
    return LinkSpec(**_entry("pcie", name, "nic.host"))


def host_link(name: str) -> LinkSpec:
    """A GPU's link to its host's memory that is no NIC's host link (``host_links``: NVLink-C2C and the Grace's
    LPDDR5X, for activation-offload copies)."""
    return LinkSpec(**_entry("host_links", name, "host_links"))


def switch(name: str) -> LinkSpec:
    """Per-hop latency of a switch family ('infiniband-ndr', 'ethernet-roce', 'nvswitch')."""
    return LinkSpec(**_entry("switches", name, "topology"))


def fp8_gemms_tn_only(gpu_name: str) -> bool:
    """Whether ``gpu_name``'s fp8 GEMMs take only the TN layout (Hopper), so fp8 operands need a transposed copy
    (efficiency.yaml gemm.fp8_any_layout)."""
    table = catalog.load("efficiency")["gemm"]["fp8_any_layout"]
    return not table.get(gpu_name, table["default"])


def gpu_names() -> list[str]:
    return sorted(catalog.load("hardware")["gpus"])


def nic_names() -> list[str]:
    return sorted(catalog.load("hardware")["nics"])
