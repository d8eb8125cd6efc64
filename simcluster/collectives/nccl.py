"""NCCL calibration of collective costs: link efficiencies, protocol latencies and NCCL's algorithm choice.

Measured NCCL throughput is below line rate (ring allreduce reaches 370 of 450 GB/s on H100 NVLink, 232 of 300
on A100, a 400 Gb/s NIC 46-48 of 50 GB/s). NVLink fractions are measured per NVLink generation, so each applies to
the GPUs of its generation (``nvlink_key``; the fabric's ``gpu``, or a ``gpu`` passed in). Those fractions are
applied in ONE place: ``calibrated(fabric, algorithm, protocol)`` returns a view of the fabric whose link
capacities are scaled by ``efficiency``; every network model run on that view then charges the calibrated cost.
The constants and their sources are in ``simcluster/data/nccl.yaml``.

``choose`` reproduces NCCL's selection rule: NCCL's tuning model (src/graph/tuning.cc, ``ncclTopoTuneModel``
and ``ncclTopoGetAlgoTime``) predicts ``time = latency + bytes / algbw`` for every (algorithm, protocol) pair
from the topology, and runs the fastest. We evaluate the same closed forms with the fabric's calibrated
bandwidths.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from simcluster.core import catalog
from simcluster.core.units import BYTES, BYTES_PER_S, SECONDS, parse

PROTOCOLS = ("LL", "LL128", "Simple")

# Link-kind families. A fabric labels every directed link with a kind (fabric.link_kind); these substrings
# decide which measured efficiency applies. Host links (PCIe) are never the measured bottleneck: efficiency 1.
_NVLINK_MARKERS = ("nvlink", "nvswitch", "nvl")
_HOST_MARKERS = ("pcie", "host")


@cache
def constants() -> dict:
    """nccl.yaml with its quantities parsed to SI floats (efficiencies derived in ``efficiency_table``)."""
    raw = catalog.load("nccl")
    out = {"protocols": {}, "tree": {}, "measured": raw["measured"]}
    for name, spec in raw["protocols"].items():
        out["protocols"][name] = {
            "bandwidth_fraction": float(spec["bandwidth_fraction"]),
            "ring_fraction_below_2_per_node": float(spec.get("ring_bandwidth_fraction_below_2_gpus_per_node",
                                                             spec["bandwidth_fraction"])),
            "base_latency_s": parse(spec["base_latency"], SECONDS),
            "nvlink_step_latency_s": parse(spec["nvlink_step_latency"], SECONDS),
            "network_step_latency_s": parse(spec["network_step_latency"], SECONDS),
            "slices_per_chunk": int(spec.get("slices_per_chunk", 1)),
            "min_slice_bytes": parse(spec.get("min_slice_bytes", "0 B"), BYTES),
        }
    tree = raw["tree"]
    out["tree"] = {
        "bandwidth_fraction": float(tree["bandwidth_fraction"]),
        "nvlink_step_latency_s": {p: parse(v, SECONDS) for p, v in tree["nvlink_step_latency"].items()},
        "network_step_latency_s": {p: parse(v, SECONDS) for p, v in tree["network_step_latency"].items()},
        "base_latency_s": {p: parse(v, SECONDS) for p, v in tree["base_latency"].items()},
    }
    out["nvls_latency_s"] = parse(raw["nvls"]["latency"], SECONDS)
    out["nvls_min_gpus"] = int(raw["nvls"]["min_gpus"])
    sharp = raw["sharp"]
    out["sharp"] = {
        "fraction_of_point_to_point": float(sharp["bandwidth_fraction_of_point_to_point"]),
        "direct_intra_latency_s": parse(sharp["direct_intra_latency"], SECONDS),
        "direct_per_local_rank_latency_s": parse(sharp["direct_per_local_rank_latency"], SECONDS),
        "direct_inter_latency_s": parse(sharp["direct_inter_latency"], SECONDS),
        "nvls_inter_latency_s": parse(sharp["nvls_inter_latency"], SECONDS),
        "ops": tuple(sharp["ops"]),
    }
    out["plateau_factor"] = float(raw["selection"]["ring_allreduce_plateau_latency_factor"])
    out["plateau_min_bytes"] = parse(raw["selection"]["ring_allreduce_plateau_min_bytes"], BYTES)
    out["chunk_bytes"] = parse(raw["chunk"]["bytes"], BYTES)
    out["min_pipelined_bytes"] = parse(raw["chunk"]["min_pipelined_bytes"], BYTES)
    return out


def _rate(entry: dict, key: str) -> float:
    return parse(entry[key], BYTES_PER_S)


def per_nic_busbw() -> float:
    """One NIC's measured bus bandwidth across nodes, bytes/s (nccl.yaml measured.per_nic_busbw)."""
    return _rate(constants()["measured"]["per_nic_busbw"], "value")


def nvlink_key(gpu=None, measurement: str = "nvlink_ring_busbw") -> str:
    """The nccl.yaml entry of ``measurement`` that applies to ``gpu`` (a GpuSpec): its NVLink generation's
    ("nvlink3" for A100, "nvlink4" for H100/H200, "nvlink5" for Blackwell), or ``nvlink_fallback`` (H100's, an
    assumption) for a generation without one and for no GPU at all (fabrics built without a GPU spec)."""
    measured = constants()["measured"]
    key = f"nvlink{int(getattr(gpu, 'nvlink_generation', 0) or 0)}"
    return key if key in measured[measurement] else measured["nvlink_fallback"]


def efficiency_table(gpu=None) -> dict[str, dict[str, float]]:
    """``efficiency_table_for`` the NVLink measurements that apply to ``gpu`` (``nvlink_key``)."""
    return efficiency_table_for(nvlink_key(gpu), nvlink_key(gpu, "nvls_busbw"))


@cache
def efficiency_table_for(ring_key: str, nvls_key: str) -> dict[str, dict[str, float]]:
    """Achieved fraction of line rate per (algorithm family, link family), derived from the measurements, with
    the NVLink ring and NVLS measurements of nccl.yaml entries ``ring_key`` and ``nvls_key``.

    - ring over NVLink: a ring step loads every GPU's NVLink with exactly busbw (nccl-tests PERFORMANCE.md),
    so
      efficiency = busbw / line rate (370 / 450 on H100, 231.6 / 300 on A100, 679.6 / 900 on NVLink 5).
    - NVLS over NVLink: each GPU's NVLink carries S(n+1)/n per direction (S/n reduced shard back, S multicast
      in; S read for the reduction + S/n stored out), so the per-link rate is algbw (n+1)/n with
      algbw = busbw n / (2(n-1)); efficiency = that / line rate (480 GB/s busbw at n = 8 -> 0.686 on H100; 830
      GB/s of 900 -> 0.593 on B200).
    - network links: per-NIC busbw of a cross-node ring / NIC line rate (47 GB/s of 50 GB/s for NDR).
    - IB SHARP on network links: that point-to-point efficiency times SHARP's fraction of point-to-point bandwidth
      (0.95, Graham et al. 2020); inside the node CollNetDirect moves data as a ring does ("sharp"), NVLS+SHARP
      as NVLS does ("nvls_sharp").
    """
    measured = constants()["measured"]
    ring = measured["nvlink_ring_busbw"][ring_key]
    ring_eff = _rate(ring, "value") / _rate(ring, "line_rate")
    nvls = measured["nvls_busbw"][nvls_key]
    n = int(nvls["gpus"])
    nvls_algbw = _rate(nvls, "value") * n / (2 * (n - 1))
    nvls_eff = nvls_algbw * (n + 1) / n / _rate(nvls, "line_rate")
    nic = measured["per_nic_busbw"]
    nic_eff = _rate(nic, "value") / _rate(nic, "line_rate")
    sharp_eff = nic_eff * constants()["sharp"]["fraction_of_point_to_point"]
    return {
        "default": {"nvlink": ring_eff, "network": nic_eff, "host": 1.0},
        "nvls": {"nvlink": nvls_eff, "network": nic_eff, "host": 1.0},
        "sharp": {"nvlink": ring_eff, "network": sharp_eff, "host": 1.0},
        "nvls_sharp": {"nvlink": nvls_eff, "network": sharp_eff, "host": 1.0},
    }


def link_family(kind: str) -> str:
    """'nvlink', 'host' or 'network' for a fabric link kind such as 'nvlink', 'pcie', 'ib', 'ethernet'."""
    lowered = kind.lower()
    if any(marker in lowered for marker in _NVLINK_MARKERS):
        return "nvlink"
    if any(marker in lowered for marker in _HOST_MARKERS):
        return "host"
    return "network"


def protocol_fraction(algorithm: str, protocol: str, ppn: float | None = None, for_choice: bool = False) -> float:
    """The payload fraction of ``protocol`` (LL 0.5, LL128 0.92, Simple 1), what a run moves whatever ppn (NCCL
    2.23+'s revised model, nccl.yaml ``protocols``). ``for_choice``: the fraction NCCL 2.18-2.21's tuning model
    prices when it chooses, where a ring whose group has fewer than 2 GPUs per node (``ppn`` = ranks / nodes < 2)
    runs LL128 at 0.7."""
    proto = constants()["protocols"][protocol]
    if for_choice and algorithm == "ring" and ppn is not None and ppn < 2:
        return proto["ring_fraction_below_2_per_node"]
    return proto["bandwidth_fraction"]


def efficiency(algorithm: str, protocol: str, family: str, gpu=None, ppn: float | None = None,
               for_choice: bool = False) -> float:
    """Fraction of a ``family`` link's line rate a collective achieves with ``algorithm`` and ``protocol`` on
    ``gpu``'s NVLink generation (``nvlink_key``; None: the fallback, H100's), over a group of ``ppn`` GPUs per
    node (None: not below 2); ``for_choice``: as NCCL's tuning model prices it (``protocol_fraction``).

    The product of the measured link efficiency (``efficiency_table``), the protocol's payload fraction
    (``protocol_fraction``) and, for trees, NCCL's tree cap (0.92 of the ring's busBw, tuning.cc).
    """
    table = efficiency_table(gpu)
    link = table.get(algorithm, table["default"])[family]
    factor = link * protocol_fraction(algorithm, protocol, ppn, for_choice)
    if algorithm == "tree":
        factor *= constants()["tree"]["bandwidth_fraction"]
    return factor


class CalibratedFabric:
    """A fabric seen through NCCL's efficiencies: same graph, routes and latencies, scaled link capacities.

    Everything but ``link_bytes_per_s`` is delegated to the underlying fabric (``raw``), so any network model
    runs on it unchanged. NVLink efficiencies are those of the fabric's GPUs (``raw.gpu``, set by the builders).
    """

    def __init__(self, fabric, algorithm: str, protocol: str):
        self.raw = getattr(fabric, "raw", fabric)
        self.algorithm = algorithm
        self.protocol = protocol
        gpu = getattr(self.raw, "gpu", None)
        codes = getattr(self.raw, "link_kind_codes", None)   # the fabric's (distinct kinds, index of each link's)
        kinds, index = codes if codes is not None else np.unique(np.asarray(self.raw.link_kind, dtype=str),
                                                                 return_inverse=True)
        factors = np.array(
            [efficiency(algorithm, protocol, link_family(kind), gpu) for kind in kinds], dtype=float
        )
        self.link_bytes_per_s = np.asarray(self.raw.link_bytes_per_s, dtype=float) * factors[index]

    def __getattr__(self, name):
        return getattr(self.raw, name)


def calibrated(fabric, algorithm: str = "ring", protocol: str = "Simple") -> CalibratedFabric:
    """The fabric with NCCL's achieved fractions of line rate on every link (the one place they apply): a run's
    rates, whatever the group's GPUs per node (``protocol_fraction``; the ppn = 1 discount is the choice's only)."""
    return CalibratedFabric(fabric, algorithm, protocol)


def wire_factor(algorithm: str, protocol: str, label: str, gpu=None) -> float:
    """Bytes a transfer class of ``algorithm``/``protocol`` puts on a network calibrated for ring/Simple, per byte
    it moves: the ratio of the two efficiencies on the links the class uses, read from its label (the builders
    name classes by their links: "ring nvlink", "sharp network", "nvls"). 1 for ring/Simple; for the algorithms
    whose efficiency is one factor on every link family (protocols, the tree cap) the family does not matter.
    ``gpu``: the fabric's GPUs (their NVLink generation's efficiencies); a run's rates do not depend on the group's
    GPUs per node (``protocol_fraction``)."""
    family = link_family(label)
    return efficiency("ring", "Simple", family, gpu) / efficiency(algorithm, protocol, family, gpu)


# ---- NCCL-style selection ----------------------------------------------------------------------------------


# The ring collectives of NCCL 2.23+'s "ppn=1 latencies are fully exposed" rule (tuning.cc's ring branch for
# allreduce, reduce-scatter and all-gather; broadcast/reduce chains and the all-to-all are priced apart)
EXPOSED_RING_OPS = ("allreduce", "reduce_scatter", "all_gather")


def ring_latency_s(op: str, n: int, nodes: int, protocol: str, for_choice: bool = False) -> tuple[float, float]:
    """NCCL's ring latency: (per-collective base, mean per-step latency).

    tuning.cc: latency = baseLat + (nsteps - nInterSteps) * intraLat + nInterSteps * interLat, with
    nsteps = 2(n-1) for allreduce, n-1 for reduce-scatter/all-gather, and nInterSteps the same with nodes for
    n. We spread the step part evenly over the steps (each step of a multi-node ring crosses nodes somewhere).
    A ring allreduce/reduce-scatter/all-gather of one GPU per node (n == nodes > 1) pays the Tree row's network
    latency a network step in the run ("With ppn=1 latencies are fully exposed", NCCL 2.23+); ``for_choice``: NCCL
    2.18-2.21's estimate, the Ring row's (nccl.yaml ``protocols``, ``tree``).
    """
    proto = constants()["protocols"][protocol]
    steps = ring_steps(op, n)
    inter = ring_steps(op, nodes) if nodes > 1 else 0
    network = proto["network_step_latency_s"]
    if not for_choice and nodes > 1 and n == nodes and op in EXPOSED_RING_OPS:
        network = constants()["tree"]["network_step_latency_s"][protocol]
    total = (steps - inter) * proto["nvlink_step_latency_s"] + inter * network
    return proto["base_latency_s"], total / max(steps, 1)


def slices_per_chunk(protocol: str) -> int:
    """Slices a ring step's chunk travels as (nccl.yaml ``protocols``: Simple 2, LL and LL128 1)."""
    return constants()["protocols"][protocol]["slices_per_chunk"]


def min_slice_bytes(protocol: str) -> float:
    """The smallest slice a channel cuts a chunk into (nccl.yaml ``protocols``: Simple 32 KiB, else 0)."""
    return constants()["protocols"][protocol]["min_slice_bytes"]


def ring_steps(op: str, n: int) -> int:
    """Steps of a ring: 2(n-1) for allreduce (reduce-scatter then all-gather), n-1 for one of them."""
    return 2 * (n - 1) if op == "allreduce" else n - 1


def tree_latency_s(local: int, nodes: int, protocol: str) -> float:
    """NCCL's tree allreduce latency: baseLat + 2((ppn-1) intraLat + log2i(nodes) interLat) (tuning.cc; log2i is
    the integer floor of log2, so 3 nodes cost what 2 do)."""
    tree = constants()["tree"]
    return tree["base_latency_s"][protocol] + 2 * (
        (local - 1) * tree["nvlink_step_latency_s"][protocol]
        + (max(nodes, 1).bit_length() - 1) * tree["network_step_latency_s"][protocol]
    )


def sharp_uses_nvls(op: str, nvls: bool, local: int) -> bool:
    """Whether an in-network allreduce reduces inside the node with NVLink SHARP (NCCL's multi-node NVLS, which
    needs CollNet) rather than NVLink transfers (CollNetDirect): GPUs with NVLS and at least ``nvls.min_gpus`` of
    the group per node. Reduce-scatter and all-gather keep the direct intra-node exchange (a simplification)."""
    return op == "allreduce" and nvls and local >= constants()["nvls_min_gpus"]


def sharp_latency_s(local: int, uses_nvls: bool) -> float:
    """NCCL's latency of an in-network collective (tuning.cc, data/nccl.yaml ``sharp``): CollNetDirect
    2 (min(1, m-1) a_intra + (m-1) a_rank) + a_inter; NVLS+SHARP a_nvls + a_inter(NVLS). One tree traversal,
    whatever the number of nodes."""
    c = constants()["sharp"]
    if uses_nvls:
        return constants()["nvls_latency_s"] + c["nvls_inter_latency_s"]
    return 2 * (min(1, local - 1) * c["direct_intra_latency_s"]
                + (local - 1) * c["direct_per_local_rank_latency_s"]) + c["direct_inter_latency_s"]


def nvls_bytes(size_bytes: float, n: int, gpu=None) -> float:
    """Bytes per GPU and direction an NVLS allreduce of ``size_bytes`` over ``n`` GPUs is charged at the NVLS
    link efficiency (``efficiency_table_for``, set at the measurement's n0 GPUs): the larger of two bounds.

    - The links: S(n+1)/n (``algorithms.nvls``), which binds up to n0; alone it would let algbw grow as n/(n+1)
      (busbw 1033-1036 GB/s over 64-72 NVLink 5 GPUs).
    - NCCL's NVLS rate: NCCL's tuning model prices an NVLS allreduce at a bus bandwidth per GPU that does not
      depend on n (src/graph/tuning.cc, NCCL 2.19-2.27: busBw = 2 x bwIntra x nChannels x nvlsEfficiency
      (Hopper 0.85, Blackwell 0.74) x (nChannels-1)/nChannels, converted to algbw by n / (2(n-1))): the multimem
      reductions and multicast stores the SMs issue, not the link bytes, set the rate. Bus bytes 2(n-1)/n S at the
      measured busbw are, in link bytes at the link efficiency, S (n-1)/n (n0+1)/(n0-1); equal to S(n+1)/n at n0.
    Checked on NVL72 racks (docs/calibration/round-18.md, "Round 18: NVLS and all-to-all over the NVL72 domain").
    """
    n0 = int(constants()["measured"]["nvls_busbw"][nvlink_key(gpu, "nvls_busbw")]["gpus"])
    return size_bytes * max((n + 1) / n, (n - 1) / n * (n0 + 1) / (n0 - 1))


def sharp_bytes(op: str, size_bytes: float, local: int, uses_nvls: bool, gpu=None) -> tuple[float, float]:
    """(NVLink bytes per GPU, NIC bytes per GPU), each in its busier direction, of an in-network collective with
    ``local`` GPUs of the group in each node, each with its own NIC (one SHARP tree per rail).

    allreduce: every NIC sends its node's partial sum of a 1/m shard up once and receives the result once, S/m
    each way (a ring moves 2(n-1)/n S/m); inside the node a reduce-scatter and an all-gather, 2(m-1)/m S over
    NVLink (CollNetDirect), or S(m+1)/m with NVLink SHARP (``nvls_bytes``: more above 8 GPUs). reduce-scatter
    (input S): S/m up, S/n down; all-gather (output S): S/n up, S/m down; (m-1)/m S over NVLink. ``gpu``: the GPUs'
    spec, whose NVLink generation sets the NVLS bound (``nvls_bytes``).
    """
    m = local
    if op == "allreduce":
        nvlink = nvls_bytes(size_bytes, m, gpu) if uses_nvls else 2 * (m - 1) / m * size_bytes
    else:
        nvlink = (m - 1) / m * size_bytes
    return nvlink, size_bytes / m


# GpuSpec.vendor values whose collectives run NVIDIA's NCCL rules: NVIDIA's, and a custom GPU (the default library)
NCCL_VENDORS = ("nvidia", "custom")


def ring_plateau_factor(op: str, protocol: str, size_bytes: float, n: int, nodes: int, local: int,
                        gpu=None) -> float:
    """The factor NCCL's estimate puts on a ring's latency: its "plateau effect of ring" (nccl.yaml ``selection``),
    for a ring/Simple allreduce across nodes once each channel's share of each rank reaches 64 B; else 1. A rule of
    the choice only (``estimate_s``): the collective's run does not pay it. 1 for a ``gpu`` not by NVIDIA: RCCL
    applies it only on its non-HIP branch (AMD GPUs scale the ring's bandwidth by ringCorrectionFactor instead, not
    modelled); ``gpu`` None or a custom one: NVIDIA's NCCL, the library every collective here models."""
    c = constants()
    if op != "allreduce" or protocol != "Simple" or nodes < 2:
        return 1.0
    if gpu is not None and gpu.vendor not in NCCL_VENDORS:
        return 1.0
    return c["plateau_factor"] if size_bytes / (max(local, 1) * n) >= c["plateau_min_bytes"] else 1.0


def estimate_s(
    op: str,
    algorithm: str,
    protocol: str,
    size_bytes: float,
    *,
    n: int,
    nodes: int,
    local: int,
    nvlink_bytes_per_s: float,
    network_bytes_per_s: float,
    nvls: bool = False,
    gpu=None,
) -> float:
    """NCCL's predicted time of one (algorithm, protocol): latency + size / algbw, or inf when not applicable.

    ``nvlink_bytes_per_s``/``network_bytes_per_s``: line rate of one GPU's scale-up link and of one NIC; ``nvls``:
    the GPUs have NVLink SHARP (for in-network reductions, which then reduce inside the node with it); ``gpu``:
    their spec, whose NVLink generation sets the measured efficiencies (``efficiency``).
    """
    if n < 2:
        return 0.0
    if algorithm == "sharp":
        if op not in constants()["sharp"]["ops"] or nodes < 2 or protocol != "Simple":
            return math.inf
        uses_nvls = sharp_uses_nvls(op, nvls, local)
        calibration = "nvls_sharp" if uses_nvls else "sharp"
        nvlink_bytes, nic_bytes = sharp_bytes(op, size_bytes, local, uses_nvls, gpu)
        nvl = nvlink_bytes_per_s * efficiency(calibration, protocol, "nvlink", gpu)
        net = network_bytes_per_s * efficiency(calibration, protocol, "network", gpu)
        return sharp_latency_s(local, uses_nvls) + max(nvlink_bytes / nvl, nic_bytes / net)
    if algorithm == "nvls":
        if op != "allreduce" or nodes > 1 or protocol != "Simple" or n < constants()["nvls_min_gpus"]:
            return math.inf
        rate = nvlink_bytes_per_s * efficiency("nvls", protocol, "nvlink", gpu)
        return constants()["nvls_latency_s"] + nvls_bytes(size_bytes, n, gpu) / rate
    ppn = n / nodes if nodes else None
    nvl = nvlink_bytes_per_s * efficiency(algorithm, protocol, "nvlink", gpu, ppn, for_choice=True)
    net = network_bytes_per_s * efficiency(algorithm, protocol, "network", gpu, ppn, for_choice=True)
    if nodes == 1:
        busbw = nvl
    else:  # one channel per NIC rail; each GPU's NVLink carries every channel's hop (ring_transfers)
        busbw = min(local * net, nvl) if local > 1 else net
    if algorithm == "ring":
        base, per_step = ring_latency_s(op, n, nodes, protocol, for_choice=True)
        factor = {"allreduce": 2 * (n - 1) / n}.get(op, (n - 1) / n)
        plateau = ring_plateau_factor(op, protocol, size_bytes, n, nodes, local, gpu)
        latency = (base + ring_steps(op, n) * per_step) * plateau
        return latency + factor * size_bytes / busbw
    if algorithm == "tree":
        if op != "allreduce":
            return math.inf
        return (
            tree_latency_s(local, nodes, protocol) + 2 * size_bytes / busbw
        )  # algbw = busbw / 2 (tuning.cc)
    return math.inf


def choose(
    op: str,
    size_bytes: float,
    *,
    n: int,
    nodes: int,
    local: int,
    nvls: bool,
    nvlink_bytes_per_s: float,
    network_bytes_per_s: float,
    algorithm: str = "auto",
    protocol: str = "auto",
    sharp: bool = False,
    gpu=None,
) -> tuple[str, str]:
    """(algorithm, protocol) NCCL would run: the fastest by its tuning model among those allowed.

    Allreduce chooses among ring, tree, NVLS and IB SHARP; reduce-scatter and all-gather among ring and IB SHARP;
    the other collectives are rings (or direct sends for all-to-all). NVLS needs NVLink SHARP (``nvls``) and a
    group inside one NVSwitch domain; IB SHARP (``sharp``: the fabric's switches offer it) needs the group on at
    least two nodes; both run the Simple protocol only. Hierarchical allreduce is never picked automatically
    (NCCL has no such algorithm; it is offered for comparison). ``gpu``: the GPUs' spec (``estimate_s``).

    Deliberately two NCCL versions: the choice prices rings by NCCL 2.18-2.21's model (``estimate_s`` with
    ``for_choice=True``: LL128 at 0.7 of busBw and the Ring row's network latency for a ring of one GPU per node),
    the run pays NCCL 2.23+'s (0.92, the Tree row's network latency; nccl.yaml ``protocols``, VERSION ASSUMPTION).
    So the simulator runs what the 2024 NCCL chose at what it costs, and can pick a protocol slower under its own
    run cost: one GPU per node, all-gather 122 MB at 192 ranks LL128 4.45 ms vs Simple 3.98 ms, reduce-scatter
    244 MB at 288 ranks 8.08 vs 6.63 ms (pinned in tests/validation/test_dp_rings_many_nodes.py).
    """
    in_network = ["sharp"] if sharp and op in constants()["sharp"]["ops"] else []
    if algorithm == "auto":
        candidates = (["ring", "tree"] + (["nvls"] if nvls else []) if op == "allreduce" else ["ring"]) + in_network
    else:
        candidates = [algorithm]
    protocols = list(PROTOCOLS) if protocol == "auto" else [protocol]
    best, best_s = None, math.inf
    for algo in candidates:
        for proto in protocols:
            if algo not in ("ring", "tree", "nvls", "sharp"):
                return algo, (proto if protocol != "auto" else "Simple")
            time_s = estimate_s(
                op,
                algo,
                proto,
                size_bytes,
                n=n,
                nodes=nodes,
                local=local,
                nvlink_bytes_per_s=nvlink_bytes_per_s,
                network_bytes_per_s=network_bytes_per_s,
                nvls=nvls,
                gpu=gpu,
            )
            if time_s < best_s:
                best, best_s = (algo, proto), time_s
    if (
        best is None
    ):  # e.g. NVLS forced where it does not apply: keep the request, the schedule will refuse it
        return candidates[0], protocols[-1]
    return best
