"""Data-parallel rings over many nodes: simcluster's collective time against the ranks, beside measured points.

For the message sizes of the Nemotron-4 15B rows (TP 8, so one GPU of each data-parallel group per node: 244 MB fp32
gradient reduce-scatters, 122 MB bf16 parameter all-gathers; the contract-only twins' Megatron-Core buckets of
max(40M, 1M x DP) parameters), it prints per rank count the protocol NCCL 2.18-2.21 chooses, its estimate, and what
the run pays with each protocol; then the published nccl-tests points it can be set beside (docs/calibration.md,
"Round 17: data-parallel rings over many nodes"). Usage: PYTHONPATH=. python scripts/dp_ring_scaling.py
"""

from __future__ import annotations

from simcluster import collectives
from simcluster.collectives import Collective, nccl
from simcluster.fabric import topology
from simcluster.spec import hardware

H100 = hardware.gpu("h100-sxm")
A100 = hardware.gpu("a100-80gb-sxm")
CX7 = hardware.nic("connectx-7")
CX6 = hardware.nic("connectx-6")
RANKS = (16, 48, 96, 192, 288)
PARAMS_PER_BUCKET_TP8 = 244_286_976 // 4   # one Nemotron-4 15B layer's parameters on one TP-8 rank


def _rail(ranks: int):
    fabric = topology.build("rail-fat-tree", gpus=8 * ranks, gpus_per_node=8, gpu=H100, nic=CX7)
    return fabric, list(range(0, 8 * ranks, 8))


def _time_ms(fabric, group, op: str, size: float, protocol: str = "auto", gpu=H100) -> tuple[float, str]:
    outcome = collectives.run(Collective(op, group, int(size), algorithm="ring", protocol=protocol), fabric,
                              "analytic", gpu=gpu)
    return outcome.time_s * 1e3, outcome.protocol


def one_gpu_per_node_table() -> None:
    print("one GPU per node (TP 8), H100 + 400 Gb/s NDR; ms; NCCL 2.19 estimate of the chosen protocol")
    print(f"{'collective':<34} {'ranks':>5} {'chosen':>7} {'run':>7} {'estimate':>8} {'LL128':>7} {'Simple':>7}")
    for ranks in RANKS:
        fabric, group = _rail(ranks)
        contract_params = max(40e6, 1e6 * ranks)   # Megatron-Core bucket (round 16: 384 MB fp32 at DP 96)
        cases = (("reduce_scatter fp32 (bundled)", "reduce_scatter", 4 * PARAMS_PER_BUCKET_TP8),
                 ("all_gather bf16 (bundled)", "all_gather", 2 * PARAMS_PER_BUCKET_TP8),
                 ("reduce_scatter fp32 (contract)", "reduce_scatter", 4 * contract_params),
                 ("all_gather bf16 (contract)", "all_gather", 2 * contract_params))
        for label, op, size in cases:
            run_ms, chosen = _time_ms(fabric, group, op, size)
            estimate = nccl.estimate_s(op, "ring", chosen, size, n=ranks, nodes=ranks, local=1,
                                       nvlink_bytes_per_s=H100.nvlink_bandwidth,
                                       network_bytes_per_s=CX7.rate, gpu=H100) * 1e3
            ll128 = _time_ms(fabric, group, op, size, "LL128")[0]
            simple = _time_ms(fabric, group, op, size, "Simple")[0]
            print(f"{label:<34} {ranks:>5} {chosen:>7} {run_ms:>7.2f} {estimate:>8.2f} {ll128:>7.2f} {simple:>7.2f}")


def measured_points() -> None:
    print("\nmeasured beside simulated")
    fabric = topology.build("rail-fat-tree", gpus=2, gpus_per_node=1, gpu=A100, nic=CX6)
    sim_us = collectives.run(Collective("allreduce", range(2), 8), fabric, "analytic", gpu=A100).time_s * 1e6
    print(f"nccl-tests#150: 2 nodes x 1 A100, HDR, allreduce 8-64 B: measured 19.0-20.7 us, simulated {sim_us:.1f} us")
    measured = {4: 360, 8: 345, 16: 320, 32: 300, 64: 280, 128: 260}
    print("nccl#1229: reduce-scatter busbw on 8 H100 a node, 4..128 nodes (size not stated), GB/s:")
    print("  measured          " + " ".join(f"{nodes}:{bw}" for nodes, bw in measured.items()))
    for size in (1 << 30, 4 << 30, 8 << 30):
        row = []
        for nodes in measured:
            n = 8 * nodes
            fab = topology.build("rail-fat-tree", gpus=n, gpus_per_node=8, gpu=H100, nic=CX7)
            t = collectives.run(Collective("reduce_scatter", range(n), size), fab, "analytic", gpu=H100).time_s
            row.append(f"{nodes}:{size / t * (n - 1) / n / 1e9:.0f}")
        print(f"  simulated {size >> 30} GiB  " + " ".join(row))


if __name__ == "__main__":
    one_gpu_per_node_table()
    measured_points()
