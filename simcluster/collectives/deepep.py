"""DeepEP's intranode all-to-all rate: SM-bound copies, not NCCL's NVLink rate (data/moe.yaml ``deepep_intranode``).

Inside one NVLink domain the flex dispatcher's DeepEP kernels copy every token row a rank receives (its own among
them) with the ``deepep_sms`` SMs they are given (Megatron-Core ``--moe-deepep-num-sms``, default 20), so on NVLink 4
they move fewer bytes a second than NCCL's all-to-all, which the simulator runs at NCCL's NVLink efficiency
(nccl.yaml, 370 of 450 GB/s on H100). DeepEP's own benchmark measured 337.35 GB/s of received rows at 24 SMs on an
NVLink 4 GPU (deepseek-ai/DeepEP#16); scaled to the SMs given and to the remote share (ranks - 1)/ranks of the rows,
that is what the all-to-all's NVLink bytes move at. ``intranode_slowdown`` is the ratio the engine applies to the
intranode all-to-all's NVLink bytes (``algorithms.alltoall_hierarchical``, ``TokenRouting.intranode_slowdown``):
NCCL's rate over DeepEP's, at least 1 (where DeepEP is faster the link binds, as on H800). GPUs of an NVLink
generation without a measurement keep 1.
"""

from __future__ import annotations

from simcluster.collectives import nccl
from simcluster.core import catalog
from simcluster.core.units import BYTES_PER_S, parse


def remote_rate(received_bytes_per_s: float, measured_sms: int, ranks: int, sms: int) -> float:
    """Remote bytes a second one GPU's DeepEP intranode kernel moves on ``sms`` SMs, from a benchmark rate of
    ``received_bytes_per_s`` (every received row, the rank's own among them) over ``ranks`` ranks at
    ``measured_sms`` SMs: SM-bound, so proportional to the SMs, (ranks - 1)/ranks of the rows remote."""
    if received_bytes_per_s <= 0 or measured_sms < 1 or ranks < 2 or sms < 1:
        raise ValueError(f"need a rate {received_bytes_per_s} > 0, SMs {measured_sms}, {sms} >= 1, ranks {ranks} >= 2")
    return received_bytes_per_s * sms / measured_sms * (ranks - 1) / ranks


def intranode_slowdown(gpu) -> float:
    """NCCL's all-to-all rate on ``gpu``'s NVLink (nccl.yaml efficiency x line rate) over DeepEP's SM-bound remote
    rate at Megatron-Core's default SMs (``remote_rate``), at least 1; 1 without a measurement for the generation."""
    table = catalog.load("moe")
    entry = table.get("deepep_intranode", {}).get(f"nvlink{int(getattr(gpu, 'nvlink_generation', 0) or 0)}")
    if entry is None or gpu is None:
        return 1.0
    deepep = remote_rate(parse(entry["received_bytes_per_s"], BYTES_PER_S), int(entry["sms"]), int(entry["ranks"]),
                         int(table["ep_overlap"]["deepep_sms"]))
    nccl_rate = nccl.efficiency("direct", "Simple", "nvlink", gpu) * gpu.nvlink_bandwidth
    return max(1.0, nccl_rate / deepep)
