"""Memory a cluster needs, checked before anything is allocated: a valid but huge cluster is refused with the reason
instead of running the machine out of memory minutes later (docs/robustness.md).

The estimate is the fabric's: every GPU brings its NIC, its links and a share of the switches, each a networkx node
or edge with its attributes, plus the routing tables. Measured with ``python benchmarks/fabric_memory.py`` (RSS
after building the fabric and routing one pair, per GPU, at 8,192 and 32,768 GPUs): rail-fat-tree 7.8 KB, fat-tree
7.9 KB, leaf-spine 6.8 KB, torus 2.8 KB, linear in the GPU count. The estimate takes the largest, rounded up. It is
a lower bound of a run's memory (the engine, its records and the outputs come on top), so a refusal is certain to
be right, and a run it lets through may still need several times more (docs/robustness.md has the figures).
"""

from __future__ import annotations

import os
import resource

from simcluster.core import units
from simcluster.core.errors import ScenarioError

# Bytes of fabric per GPU (see the module docstring: the largest builder, 7.9 KB measured, rounded up).
FABRIC_BYTES_PER_GPU = 8 * 1024
# The memory a fabric may take unless SIMCLUSTER_MEMORY_LIMIT says otherwise: 4 GiB holds the fabric of 524,288
# GPUs, four times the 131,072-GPU runs the simulator is meant for, and fits the memory of a laptop.
DEFAULT_MEMORY_LIMIT_BYTES = 4 * 2**30
MEMORY_LIMIT_ENV = "SIMCLUSTER_MEMORY_LIMIT"


def memory_limit_bytes() -> float:
    """The memory a fabric may take: ``SIMCLUSTER_MEMORY_LIMIT`` (e.g. '64 GiB') or 4 GiB, and never more than this
    process may allocate (RLIMIT_AS) or the machine holds."""
    text = os.environ.get(MEMORY_LIMIT_ENV)
    limit = float(DEFAULT_MEMORY_LIMIT_BYTES)
    if text:
        limit = units.parse_checked(text, units.BYTES, units.POSITIVE, field=MEMORY_LIMIT_ENV)
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        limit = min(limit, float(soft))
    try:
        limit = min(limit, float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")))
    except (ValueError, OSError, AttributeError):  # not every platform tells
        pass
    return limit


def check_cluster_memory(gpus: int, field: str) -> int:
    """``gpus`` unless the fabric of that many GPUs alone would exceed ``memory_limit_bytes``; else one
    ScenarioError naming ``field`` with the estimate and the limit."""
    needed = gpus * FABRIC_BYTES_PER_GPU
    limit = memory_limit_bytes()
    if needed > limit:
        raise ScenarioError(field, f"{gpus:,} GPUs need at least {units.fmt(needed, units.BYTES, 3)} of memory for "
                            f"the fabric alone ({FABRIC_BYTES_PER_GPU // 1024} KiB per GPU), above the "
                            f"{units.fmt(limit, units.BYTES, 3)} limit (set {MEMORY_LIMIT_ENV}, e.g. '64 GiB', to "
                            "raise it on a larger machine)")
    return gpus
