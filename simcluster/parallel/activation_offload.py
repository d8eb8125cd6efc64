"""The compute stream's wait for activation-offload copies (Megatron-Core ``cpu_offloading_num_layers``).

Megatron-Core hands each layer's forward to Transformer Engine's ``get_cpu_offload_context``; TE 2.x's
``OffloadSynchronizer`` (transformer_engine/pytorch/cpu_offload.py, ``_default_offload_sync_init``, ``fwd_step``,
``bwd_step``) runs every copy on ONE side stream (``offload_stream``), in issue order, into pinned host buffers:

- forward: layer i < n (n offloaded layers of L) is copied device-to-host once its forward ends (``fwd_step``
  before layer i + 1); the compute stream waits for that copy before the forward of layer L - n + i
  (``finish_offload_map[True, L - n + i]``);
- backward: layer i's reload starts at the backward step of layer L - 1 - n + i (``start_reload_map[False, ...]``)
  and the compute stream waits for it before layer i's own backward.

So a copy has many layers of slack, and the copies only show when the side stream falls behind as a whole:
``stall_s`` replays that queue (closed form per copy: done_i = max(issue_i, done_(i-1)) + bytes / bandwidth).
The copies run on copy engines; the HBM they read or write (the offloaded layers' activations once per
microbatch and direction, about 2% of B200-class HBM bandwidth at the 70B recipes' rate) is not charged here.

The host link a copy crosses is data (``data/hardware.yaml``): NVLink-C2C as measured on GH200 (``host_links``
``nvlink-c2c-d2h`` / ``-h2d``) for the Grace parts, limited by the Grace's LPDDR5X shared by the GPUs of one
superchip (two on GB200 / GB300); PCIe x16 for x86 hosts (``pcie``, the catalog NICs' host links too).
"""

from __future__ import annotations

from simcluster.spec import hardware

# GPUs whose host is a Grace CPU over NVLink-C2C, and how many GPUs share one Grace's memory: GB200 / GB300
# superchips are one Grace and two Blackwell GPUs (NVIDIA GB200 NVL72 and GB300 NVL72 datasheets: 36 Grace CPUs,
# 72 GPUs).
GRACE_GPUS_PER_CPU = {"gb200": 2, "gb300": 2}
# x86 hosts: the GPU's PCIe x16 generation (A100 SXM: PCIe 4.0; H100 / H200 / B200 / B300 SXM: PCIe 5.0, NVIDIA
# product briefs; MI300X OAM: PCIe 5.0, AMD datasheet).
PCIE_HOST_LINK = {"a100-40gb-sxm": "pcie-gen4", "a100-80gb-sxm": "pcie-gen4"}
DEFAULT_PCIE_HOST_LINK = "pcie-gen5"


def host_link_bandwidth(gpu_name: str, direction: str) -> float:
    """Bytes/s one GPU's offload copies reach in ``direction`` ('d2h' or 'h2d') while every GPU of its host copies.

    Grace parts: the measured NVLink-C2C rate, capped by the Grace's LPDDR5X split over the GPUs that share it;
    x86: the PCIe x16 link's rate (``data/hardware.yaml`` ``host_links`` / ``pcie``).
    """
    if direction not in ("d2h", "h2d"):
        raise ValueError(f"direction must be 'd2h' or 'h2d', not {direction!r}")
    if gpu_name in GRACE_GPUS_PER_CPU:
        link = hardware.host_link(f"nvlink-c2c-{direction}").bandwidth
        return min(link, hardware.host_link("grace-lpddr5x").bandwidth / GRACE_GPUS_PER_CPU[gpu_name])
    return hardware.pcie(PCIE_HOST_LINK.get(gpu_name, DEFAULT_PCIE_HOST_LINK)).bandwidth


def stall_s(layers: int, offloaded: int, layer_s: float, copy_s: float, backward: bool) -> float:
    """Time the compute stream waits, per microbatch and direction, for TE's offload (forward) or reload
    (backward) copies of ``offloaded`` of ``layers`` layers, each layer ``layer_s`` of compute and each copy
    ``copy_s`` on the one offload stream."""
    if not 0 <= offloaded < layers:
        raise ValueError(f"offloaded layers must lie in [0, {layers}), not {offloaded}")
    if offloaded == 0:
        return 0.0
    # compute order: forward 0..L-1, backward L-1..0; position k is the k-th layer the compute stream runs
    order = range(layers) if not backward else range(layers - 1, -1, -1)
    issue_at = ({i: i for i in range(offloaded)} if not backward  # copy i issued after layer i's forward ends
                else {i: layers - 1 - offloaded + i for i in range(offloaded)})  # reload i at that layer's start
    need_at = ({layers - offloaded + i: i for i in range(offloaded)} if not backward  # wait before this layer
               else {i: i for i in range(offloaded)})
    pending = sorted(range(offloaded), key=lambda i: issue_at[i], reverse=backward)
    done: dict[int, float] = {}
    clock = stalled = copy_free = 0.0
    for layer in order:
        if backward:  # bwd_step: start this step's reloads, then wait for this layer's own
            while pending and issue_at[pending[0]] == layer:
                copy_free = max(copy_free, clock) + copy_s
                done[pending.pop(0)] = copy_free
        if layer in need_at:
            wait = max(0.0, done[need_at[layer]] - clock)
            stalled += wait
            clock += wait
        clock += layer_s
        if not backward and pending and issue_at[pending[0]] == layer:  # fwd_step after this layer: offload it
            copy_free = max(copy_free, clock) + copy_s
            done[pending.pop(0)] = copy_free
    return stalled


def microbatch_stalls_s(gpu_name: str, layers: int, offloaded: int, layer_fwd_s: float, layer_bwd_s: float,
                        layer_bytes: float) -> tuple[float, float]:
    """(forward, backward) compute-stream waits per microbatch for ``offloaded`` layers of ``layer_bytes`` saved
    activations each, over the GPU's host link (``host_link_bandwidth``)."""
    if not offloaded:
        return 0.0, 0.0
    return (stall_s(layers, offloaded, layer_fwd_s, layer_bytes / host_link_bandwidth(gpu_name, "d2h"), False),
            stall_s(layers, offloaded, layer_bwd_s, layer_bytes / host_link_bandwidth(gpu_name, "h2d"), True))
