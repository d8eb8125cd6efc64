"""Data-parallel rings over many nodes: simcluster's collective time against the ranks, beside measured points.

For the message sizes of the Nemotron-4 15B rows (TP 8, so one GPU of each data-parallel group per node: 244 MB fp32
gradient reduce-scatters, 122 MB bf16 parameter all-gathers; the contract-only twins' Megatron-Core buckets of
max(40M, 1M x DP) parameters), it prints per rank count the protocol NCCL 2.18-2.21 chooses, its estimate, and what
the run pays with each protocol; then the published nccl-tests points it can be set beside
(docs/calibration/round-17.md, "Round 17: data-parallel rings over many nodes"); then the Nemotron-4 15B rows'
data-parallel time split into the part no ring latency can remove (each chain at the NIC's bus rate against the compute
it overlaps) and the part the rings' latency adds, for the bundled scenario and its variants
(docs/calibration/round-18.md, "Round 18: data-parallel scaling"); then the same chains for NeMo 1.x's Apex
DistributedFusedAdam layout (per-layer bucket groups of 100 MiB buckets, the embedding and output layer with the first
layer; docs/calibration/round-18.md, "Round 18: NeMo 1.x's distributed Adam"), timed by a closed-form chain model
checked against the engine (``--apex``: that table alone); with ``--rows``, also the data-parallel time of the other
large-DP rows (about a minute more). ``--terms``: each row's step terms and chains split into wire, protocol discount
and ring latency (round 30). Usage: PYTHONPATH=. python scripts/dp_ring_scaling.py
       [--rows | --apex | --mcore-buckets | --growth | --angles | --terms]
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import sys

from simcluster import collectives
from simcluster.collectives import Collective, nccl
from simcluster.core import catalog, script_entry
from simcluster.engine import simulate
from simcluster.fabric import topology
from simcluster.parallel import mcore_buckets
from simcluster.parallel.mcore_buckets import MCORE_EARLY_2024_BUCKET, layer_tensors, megatron_core_buckets
from simcluster.spec import config, hardware
from simcluster.studies import validation

# the module, not the function of that name the package exports
ring_schedule = importlib.import_module("simcluster.collectives.schedule")

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


def compute_windows(events) -> tuple[float, float]:
    """Rank 0's compute the data-parallel chains overlap, in seconds (``events``: the engine's event table): the first
    microbatch's forward blocks (the parameter all-gathers') and the last microbatch's backward blocks (the gradient
    reduce-scatters'), Megatron-Core's launch points (docs/calibration/round-16.md, round 16)."""
    rank0 = events[events["rank"] == 0]
    compute = rank0[rank0["kind"] == "compute"]
    last = compute["microbatch"].max()

    def busy(frame) -> float:
        return float((frame["end_s"] - frame["start_s"]).sum())

    forward = compute[(compute["microbatch"] == 0) & compute["name"].str.startswith("forward")]
    backward = compute[(compute["microbatch"] == last) & compute["name"].str.startswith("backward")]
    return busy(forward), busy(backward)


def exposure_floor(ag_bytes: float, rs_bytes: float, ranks: int, net_busbw: float, forward_s: float,
                   backward_s: float) -> float:
    """What stays exposed when every ring ran at ``net_busbw`` with no latency:
    max(0, AG bytes (n-1)/n / busbw - forward) + max(0, RS bytes (n-1)/n / busbw - backward)."""
    wire = (ranks - 1) / ranks / net_busbw
    return max(0.0, ag_bytes * wire - forward_s) + max(0.0, rs_bytes * wire - backward_s)


def chain_split(events, ranks: int, net_busbw: float) -> dict[str, float]:
    """One step's data-parallel chains on rank 0 against the compute they overlap (``compute_windows``), in seconds,
    and ``floor``, their ``exposure_floor`` with the bytes the engine moved."""
    comm = events[(events["rank"] == 0) & (events["kind"] == "comm")]

    def total(prefix):
        rows = comm[comm["name"].str.startswith(prefix)]
        return float((rows["end_s"] - rows["start_s"]).sum()), float(rows["bytes"].sum())

    ag_s, ag_bytes = total("param all_gather")
    rs_s, rs_bytes = total("grad reduce_scatter")
    fwd_s, bwd_s = compute_windows(events)
    floor = exposure_floor(ag_bytes, rs_bytes, ranks, net_busbw, fwd_s, bwd_s)
    return {"ag": ag_s, "rs": rs_s, "fwd": fwd_s, "bwd": bwd_s, "floor": floor}


def _variant(raw: dict, change: str) -> config.Scenario:
    data = copy.deepcopy(raw)
    if change == "rule buckets":  # Megatron-Core's default, max(40M, 1M x DP) parameters (core_r0.7 on)
        data["parallelism"].pop("grad_bucket_size")
    elif change == "apex":  # NeMo 1.x's distributed_fused_adam buckets (grad_buckets: apex, its 100 MiB default)
        data["parallelism"].pop("grad_bucket_size")
        data["parallelism"]["grad_buckets"] = "apex"
    elif change == "bf16 grads":  # sensitivity only: NeMo's and Megatron-LM's default for this row is fp32
        data["parallelism"]["grad_reduce_dtype"] = "bf16"
    elif change == "apex bf16":  # Apex's layout with grad_sync_dtype bf16 (the 340B recipe's; none for the 15B)
        data["parallelism"].pop("grad_bucket_size")
        data["parallelism"].update(grad_buckets="apex", grad_reduce_dtype="bf16")
    elif change == "no param gather":  # Megatron-LM without --overlap-param-gather: gathered after the optimizer
        data["parallelism"]["overlap_param_gather"] = False
    elif change == "sharp":  # IB SHARP reduce-scatter / all-gather: NCCL >= 2.20 with HPC-X 2.18.1, not the run's
        data["cluster"]["sharp"] = "on"
    elif change == "micro batch 2":  # both NeMo 15B recipes' (TP 4 on one node, not the report's layout)
        data["training"]["micro_batch_size"] = 2
    elif change != "bundled":
        raise ValueError(f"unknown variant {change!r}")
    return config.from_dict(data)


def nemotron_split() -> None:
    busbw = CX7.rate * nccl.efficiency("ring", "Simple", "network", H100, 1)
    print(f"\nNemotron-4 15B, rank 0's data-parallel chains (ms; NIC bus rate {busbw / 1e9:.1f} GB/s): chain = "
          "the collectives back to back; floor = exposed at that rate with no ring latency; rest = the chains' "
          "structure and ring latency; vs rule = the step against the rule-bucket variant's, %")
    print(f"{'row':<26} {'variant':<13} {'step':>6} {'vs rule':>7} {'exposed':>7} {'floor':>6} {'rest':>7} "
          f"{'AG chain':>8} {'fwd':>5} {'RS chain':>8} {'bwd':>5}")
    for gpus in (768, 1536, 2304):
        name = f"nemotron4-15b-{gpus}-h100"
        raw = catalog.load(f"scenarios/{name}")
        results = {change: simulate(_variant(raw, change)) for change in ("bundled", "rule buckets", "bf16 grads")}
        rule_step = results["rule buckets"].summary["step_time_s"]
        for change, result in results.items():
            summary = result.summary
            split = chain_split(result.events, gpus // 8, busbw)
            exposed = summary["exposed_comm_by_parallelism_s"]["dp"]
            print(f"{name:<26} {change:<13} {summary['step_time_s'] * 1e3:>6.1f} "
                  f"{(summary['step_time_s'] / rule_step - 1) * 100:>+6.1f}% {exposed * 1e3:>7.1f} "
                  f"{split['floor'] * 1e3:>6.1f} {(exposed - split['floor']) * 1e3:>7.1f} {split['ag'] * 1e3:>8.1f} "
                  f"{split['fwd'] * 1e3:>5.1f} {split['rs'] * 1e3:>8.1f} {split['bwd'] * 1e3:>5.1f}")


# NeMo 1.x's distributed_fused_adam (NeMo-Framework-Launcher nemotron_15b.yaml: bucket_cap_mb 100; Apex
# distributed_fused_adam.py: bucket of 1 MiB x bucket_cap_mb / grad dtype size elements, shards aligned to 128 B;
# NeMo megatron_gpt_model.configure_optimizers: one init_params_bucket group per Transformer layer, the parameters of
# no layer (embedding, output layer, final norm) added to the first layer's group). Nemotron-4 15B on one TP-8 rank:
APEX_BUCKET_CAP_BYTES = 100 * 2**20
APEX_ALIGN_BYTES = 128
LAYER_PARAMS_TP8 = (6144 * 8192 + 6144 * 6144 + 2 * 6144 * 24576) // 8 + 4 * 6144  # qkv, proj, fc1, fc2; 2 norms
EMBED_HEAD_PARAMS_TP8 = 2 * 256000 * 6144 // 8                                        # input embedding + output layer
FINAL_NORM_PARAMS = 2 * 6144


def apex_groups(ranks: int, layers: int = 32) -> list[int]:
    """Elements each Apex bucket group communicates, in forward order (group 0 first), counted here from the shapes
    as the engine's ``apex_group_elements`` does: every bucket is bucket_size elements however full, a group
    ``ceil(params / bucket_size)`` of them, the first layer's group holding the embedding, output layer and final
    norm."""
    grad_bytes = 4
    shard = APEX_BUCKET_CAP_BYTES // grad_bytes // ranks
    shard -= shard % (APEX_ALIGN_BYTES // grad_bytes)
    bucket = shard * ranks
    layer = -(-LAYER_PARAMS_TP8 // bucket) * bucket
    first = -(-(LAYER_PARAMS_TP8 + EMBED_HEAD_PARAMS_TP8 + FINAL_NORM_PARAMS) // bucket) * bucket
    return [first] + [layer] * (layers - 1)


def chain_exposed(fwd_s: float, bwd_s: float, ag_s: list[float], rs_s: list[float], prefetch_one: bool,
                  head_s: tuple[float, float] | None = None) -> tuple:
    """Closed-form chains (forward order lists): the gathers against the first forward split evenly by layer, each
    layer waiting for its group (``prefetch_one``: Apex issues group j+1 when layer j starts, one in flight;
    otherwise all queued at the step's start, Megatron-Core's engine model); the reduce-scatters launched as each
    layer's backward ends (the first layer's group, with the embedding, last), back to back on one stream.
    ``head_s``: the output layer's (forward, backward) seconds within the windows, a part of its own after the
    layers' forward and before their backward (the engine's ``Cuts``, round 24); the lists then hold one more
    entry, last, for the buckets of the output layer alone (``per_layer_s(..., units=True)``)."""
    layers = len(ag_s) - (head_s is not None)
    head = [] if head_s is None else [head_s]
    fwd_parts = [(fwd_s - sum(h[0] for h in head)) / layers] * layers + [h[0] for h in head]
    bwd_parts = [(bwd_s - sum(h[1] for h in head)) / layers] * layers + [h[1] for h in head]
    start = end = ag_end = 0.0
    for j, t in enumerate(ag_s):
        ag_end = (ag_end if not prefetch_one or j == 0 else max(ag_end, start)) + t
        start = max(end, ag_end)
        end = start + fwd_parts[j]
    rs_end = ready = 0.0
    for t, part in zip(reversed(rs_s), reversed(bwd_parts), strict=True):
        ready += part
        rs_end = max(rs_end, ready) + t
    return end - fwd_s, rs_end - bwd_s


def _group_ms(fabric, group, op: str, elems: int, bucket: int, elem_bytes: int, coalesced: bool) -> float:
    """One group's collectives: ``coalesced`` prices the group as one collective of its bytes (NCCL spreading the
    grouped operations over its channels), else its buckets one after another (each its own ring latency)."""
    if coalesced:
        return _time_ms(fabric, group, op, elems * elem_bytes)[0]
    return elems // bucket * _time_ms(fabric, group, op, bucket * elem_bytes)[0]


def apex_layout() -> None:
    print("\nNemotron-4 15B: closed-form chains (ms) for the bundled 32 equal buckets and NeMo 1.x's Apex groups; "
          "'engine' = the simulated exposed data-parallel time of the bundled row, and of it with grad_buckets: apex")
    print(f"{'GPUs':>5} {'layout':<34} {'elements':>13} {'AG exp':>7} {'RS exp':>7} {'exposed':>8} {'engine':>7}")
    for gpus in (768, 1536, 2304):
        ranks = gpus // 8
        fabric, group = _rail(ranks)
        raw = catalog.load(f"scenarios/nemotron4-15b-{gpus}-h100")
        result = simulate(config.from_dict(raw))
        split = chain_split(result.events, ranks, CX7.rate)
        engine_ms = result.summary["exposed_comm_by_parallelism_s"]["dp"] * 1e3
        apex_ms = simulate(_variant(raw, "apex")).summary["exposed_comm_by_parallelism_s"]["dp"] * 1e3
        total = 32 * LAYER_PARAMS_TP8 + EMBED_HEAD_PARAMS_TP8 + FINAL_NORM_PARAMS
        even = total / 32
        rows = [("bundled (32 x 1/32)", [even] * 32, even, True, False)]
        groups = apex_groups(ranks)
        shard = APEX_BUCKET_CAP_BYTES // 4 // ranks
        bucket = (shard - shard % (APEX_ALIGN_BYTES // 4)) * ranks
        rows += [("apex, groups coalesced", groups, bucket, True, True),
                 ("apex, buckets in sequence", groups, bucket, False, True)]
        for label, elems, bucket_elems, coalesced, prefetch_one in rows:
            ag = [_group_ms(fabric, group, "all_gather", int(e), int(bucket_elems), 2, coalesced) / 1e3 for e in elems]
            rs = [_group_ms(fabric, group, "reduce_scatter", int(e), int(bucket_elems), 4, coalesced) / 1e3
                  for e in elems]
            ag_exp, rs_exp = chain_exposed(split["fwd"], split["bwd"], ag, rs, prefetch_one)
            engine = apex_ms if label.startswith("apex") else engine_ms
            print(f"{gpus:>5} {label:<34} {int(sum(elems)):>13,} {ag_exp * 1e3:>7.1f} {rs_exp * 1e3:>7.1f} "
                  f"{(ag_exp + rs_exp) * 1e3:>8.1f} {engine:>7.1f}")


# Megatron-Core's gradient buckets as the early-2024 GradBuffer forms them: simcluster.parallel.mcore_buckets (the
# engine's own formation for Megatron-Core rows). Nemotron-4 15B's parameters on one TP rank, registration order:


def gpt_param_tensors(hidden: int, ffn: int, kv_hidden: int, vocab: int, layers: int,
                      tp: int, edge_units: bool = False) -> list[mcore_buckets.Tensor]:
    """(layer, elements on one TP rank) of every parameter in registration order (no linear biases, squared-ReLU MLP,
    LayerNorm); the embedding counts as layer 0, the final norm and output layer as the last layer (``edge_units``:
    numbered by units, mcore_buckets.gpt_param_tensors)."""
    layer = layer_tensors(hidden, hidden / tp, kv_hidden / tp, ffn / tp, 2, 4 * hidden, False)
    return mcore_buckets.gpt_param_tensors(layer, layers, embedding=vocab * hidden // tp, head=vocab * hidden // tp,
                                           final_norm=2 * hidden, edge_units=edge_units)


def per_layer_s(buckets: list[tuple[int, int]], layers: int, seconds: list[float], units: bool = False) -> list[float]:
    """Each bucket's collective time (``seconds``, in bucket order) gathered by the layer that first needs it in the
    forward (and whose backward completes it): ``chain_exposed``'s per-layer lists. ``units``: the buckets' lows are
    units (the embedding 0, layer i i + 1, the output layer ``layers`` + 1): one more entry, the output layer's,
    and the embedding with layer 0."""
    out = [0.0] * (layers + units)
    for (low, _), time_s in zip(buckets, seconds, strict=True):
        out[max(low - 1, 0) if units else low] += time_s
    return out


def mcore_buckets_table() -> None:
    print("\nNemotron-4 15B with Megatron-Core's own 40M-element bucket formation (GradBuffer of early 2024), "
          "closed-form chains (ms) against the compute windows of the bundled row; NCCL 2.19's choice for each bucket")
    print(f"{'GPUs':>5} {'layout':<26} {'buckets':>7} {'AG protocols':<22} {'RS protocols':<22} {'AG exp':>7} "
          f"{'RS exp':>7} {'exposed':>8} {'engine':>7} {'step':>7} {'error':>7}")
    tensors = gpt_param_tensors(6144, 24576, 1024, 256000, 32, 8)
    for gpus in (768, 1536, 2304):
        ranks = gpus // 8
        fabric, group = _rail(ranks)
        result = simulate(config.load(f"nemotron4-15b-{gpus}-h100"))
        split = chain_split(result.events, ranks, CX7.rate)
        engine_s = result.summary["exposed_comm_by_parallelism_s"]["dp"]
        even = sum(t.elements for t in tensors) / 32
        layouts = (("bundled (32 x 1/32)", [(layer, even) for layer in range(32)]),
                   ("Megatron-Core, 40M", megatron_core_buckets(tensors, MCORE_EARLY_2024_BUCKET, ranks)))
        for label, buckets in layouts:
            picks, cost = {}, {}
            for op, elem_bytes in (("all_gather", 2), ("reduce_scatter", 4)):
                runs = [_time_ms(fabric, group, op, numel * elem_bytes) for _, numel in buckets]
                picks[op] = {p: sum(1 for _, q in runs if q == p) for p in sorted({q for _, q in runs})}
                cost[op] = per_layer_s(buckets, 32, [ms / 1e3 for ms, _ in runs])
            ag_exp, rs_exp = chain_exposed(split["fwd"], split["bwd"], cost["all_gather"], cost["reduce_scatter"],
                                           prefetch_one=False)
            step = result.summary["step_time_s"] - engine_s + ag_exp + rs_exp
            fmt = lambda d: " ".join(f"{k} {v}" for k, v in sorted(d.items()))   # noqa: E731
            print(f"{gpus:>5} {label:<26} {len(buckets):>7} {fmt(picks['all_gather']):<22} "
                  f"{fmt(picks['reduce_scatter']):<22} {ag_exp * 1e3:>7.1f} {rs_exp * 1e3:>7.1f} "
                  f"{(ag_exp + rs_exp) * 1e3:>8.1f} {engine_s * 1e3:>7.1f} {step * 1e3:>7.1f} "
                  f"{(PUBLISHED_STEP_S[gpus] / step - 1) * 100:>+6.1f}%")


# The report's Table 2 (arXiv 2402.16819) step times of the three batch-ramp stages, as the held-out rows state them
# (validation.yaml, source nemotron4): read from there, not written again here.
PUBLISHED_STEP_S = {int(c["scenario"].split("-")[2]): c["step_time_s"] for c in validation.held_out_cases()
                    if c["scenario"].startswith("nemotron4-15b-")}


@contextlib.contextmanager
def _ppn1_rings(step_latency_s: float | None = None, simple_only: bool = False):
    """Sensitivity only, never a model: the run's per-network-step latency of a one-GPU-per-node ring (nccl.yaml
    ``tree.network_step_latency``, LL128 and Simple alike) set to ``step_latency_s`` (the fabric's own path latency
    still floors it), and/or every reduce-scatter and all-gather held to Simple (NCCL_PROTO=Simple); the choice
    otherwise NCCL 2.19's."""
    latencies = nccl.constants()["tree"]["network_step_latency_s"]
    saved = dict(latencies)
    original = ring_schedule.choose

    def simple(op, size_bytes, **kwargs):
        if op in ("reduce_scatter", "all_gather") and kwargs.get("protocol", "auto") == "auto":
            kwargs["protocol"] = "Simple"
        return original(op, size_bytes, **kwargs)

    try:
        if step_latency_s is not None:
            latencies.update(LL128=step_latency_s, Simple=step_latency_s)
        if simple_only:
            ring_schedule.choose = simple
        yield
    finally:
        latencies.update(saved)
        ring_schedule.choose = original


def growth_table() -> None:
    """The step's growth over the 768-GPU stage (published +10 / +70 ms) under each variant: the bucket rule, the
    per-step latency of the rings, Simple held (sensitivities; none applied)."""
    print("\nNemotron-4 15B: step (ms), error and growth over the 768-GPU stage; published 570 / 580 / 640 ms "
          "(+10 / +70); sensitivities, none applied")
    variants = [("bundled", None, {}), ("rule buckets max(40M, 1M x DP)", "rule buckets", {})]
    variants += [(f"ppn=1 step latency {lat * 1e6:.1f} us", None, {"step_latency_s": lat}) for lat in (4e-6,)]
    variants += [("Simple held (NCCL_PROTO=Simple)", None, {"simple_only": True}),
                 ("Simple held, step latency 4.0 us", None, {"simple_only": True, "step_latency_s": 4e-6})]
    for label, change, rings in variants:
        cells = []
        with _ppn1_rings(**rings):
            steps = {gpus: simulate(_variant(catalog.load(f"scenarios/nemotron4-15b-{gpus}-h100"), change or "bundled"))
                     .summary["step_time_s"] for gpus in PUBLISHED_STEP_S}
        for gpus, step in steps.items():
            cells.append(f"{gpus}: {step * 1e3:6.1f} ({(PUBLISHED_STEP_S[gpus] / step - 1) * 100:+5.1f}%, "
                         f"{(step - steps[768]) * 1e3:+6.1f})")
        print(f"{label:<34} " + "  ".join(cells))


# Round 26's five angles (docs/calibration/round-26.md, "Round 26: Nemotron-4 15B's data-parallel time, five more
# angles"): each variant is a setting another source or stack of the period would give the run; none is applied.
ANGLES = (("bundled", None, {}), ("Apex layout (NeMo 1.x)", "apex", {}), ("Apex layout, bf16 grads", "apex bf16", {}),
          ("no overlap_param_gather", "no param gather", {}), ("Simple held, 14 us", None, {"simple_only": True}),
          ("IB SHARP RS/AG (NCCL 2.20+)", "sharp", {}), ("bf16 grads", "bf16 grads", {}),
          ("micro batch 2", "micro batch 2", {}))


def angles_table() -> None:
    """Step, error, exposed DP time and growth over the 768-GPU stage under each of round 26's variants."""
    print("\nNemotron-4 15B under round 26's variants: step ms (error, exposed DP ms, growth over 768 GPUs); published "
          "570 / 580 / 640 ms (+10 / +70); none applied")
    for label, change, rings in ANGLES:
        with _ppn1_rings(**rings):
            runs = {gpus: simulate(_variant(catalog.load(f"scenarios/nemotron4-15b-{gpus}-h100"), change or "bundled"))
                    .summary for gpus in PUBLISHED_STEP_S}
        base = runs[768]["step_time_s"]
        cells = [f"{gpus}: {s['step_time_s'] * 1e3:6.1f} "
                 f"({(PUBLISHED_STEP_S[gpus] / s['step_time_s'] - 1) * 100:+5.1f}%, "
                 f"dp {s['exposed_comm_by_parallelism_s']['dp'] * 1e3:5.1f}, {(s['step_time_s'] - base) * 1e3:+6.1f})"
                 for gpus, s in runs.items()]
        print(f"{label:<28} " + "  ".join(cells))


# Round 30: each data-parallel chain of a row split into the part at the NIC's bus rate, the protocol's bandwidth
# discount and the ring latency left unhidden (docs/calibration/round-30.md, "Round 30: what grows with the
# data-parallel size").
TERM_ROWS = ("nemotron4-15b-768-h100", "nemotron4-15b-1536-h100", "nemotron4-15b-2304-h100", "nemotron4-340b-1536-h100")


def chain_terms(scenario: config.Scenario, events) -> dict[str, dict]:
    """Rank 0's parameter all-gathers and gradient reduce-scatters (``events``: the engine's table), seconds: per chain
    the collectives' count, bytes, protocols (NCCL 2.19's choice for each bucket over a one-GPU-per-node rail, what the
    engine ran), ``chain`` (their durations summed), ``wire`` (bytes (n-1)/n at the NIC's measured bus rate, 47 GB/s),
    ``discount`` (what the protocol's bandwidth fraction adds to it: LL128 0.92 of busBw, nccl.yaml) and
    ``latency`` (the rest: base and per-step ring latency that Simple's slices did not hide, and any sharing
    of the NIC with other traffic)."""
    ranks = scenario.parallelism.dp
    fabric, group = _rail(ranks)
    fractions = {name: proto["bandwidth_fraction"] for name, proto in nccl.constants()["protocols"].items()}
    busbw = CX7.rate * nccl.efficiency("ring", "Simple", "network", H100, 1)   # 47 GB/s, nccl-tests#290
    comm = events[(events["rank"] == 0) & (events["kind"] == "comm")]
    terms = {}
    for prefix, op in (("param all_gather", "all_gather"), ("grad reduce_scatter", "reduce_scatter")):
        rows = comm[comm["name"].str.startswith(prefix)]
        chain = wire = discount = 0.0
        protocols: dict[str, int] = {}
        for start, end, size in zip(rows["start_s"], rows["end_s"], rows["bytes"], strict=True):
            protocol = _time_ms(fabric, group, op, size)[1]
            protocols[protocol] = protocols.get(protocol, 0) + 1
            bus = size * (ranks - 1) / ranks / busbw
            chain += end - start
            wire += bus
            discount += bus / fractions[protocol] - bus
        terms[op] = {"count": len(rows), "bytes": float(rows["bytes"].sum()), "protocols": protocols, "chain": chain,
                     "wire": wire, "discount": discount, "latency": chain - wire - discount}
    return terms


def terms_table(names: tuple[str, ...] = TERM_ROWS) -> None:
    """Each row's step split: compute, fitted gaps, exposed TP and DP, and per chain wire / discount / latency (ms)."""
    print("\nstep terms (ms; rank 0): exposed DP per chain = wire at 47 GB/s + protocol discount + ring latency, "
          "against the window it overlaps; tail = step less the last backward's end")
    for name in names:
        scenario = config.load(name)
        result = simulate(scenario, check_memory=False)
        s = result.summary
        exposed = s["exposed_comm_by_parallelism_s"]
        fwd_s, bwd_s = compute_windows(result.events)
        rank0 = result.events[result.events["rank"] == 0]
        last_backward = rank0[rank0["name"].str.startswith("backward")]["end_s"].max()
        optimizer = rank0[rank0["name"] == "optimizer"]
        print(f"{name}: dp {scenario.parallelism.dp}, step {s['step_time_s'] * 1e3:.1f}, compute "
              f"{s['compute_s'] * 1e3:.1f}, interference {s['comm_interference_s'] * 1e3:.1f}, bubble "
              f"{s['pipeline_bubble_s'] * 1e3:.1f}, exposed tp {exposed['tp'] * 1e3:.1f} pp {exposed['pp'] * 1e3:.1f} "
              f"dp {exposed['dp'] * 1e3:.1f}; first forward {fwd_s * 1e3:.1f}, last backward {bwd_s * 1e3:.1f}, "
              f"tail {(s['step_time_s'] - last_backward) * 1e3:.1f} (optimizer "
              f"{(optimizer['end_s'] - optimizer['start_s']).sum() * 1e3:.1f})")
        for op, t in chain_terms(scenario, result.events).items():
            print(f"  {op:<15} {t['count']:>3} x, {t['bytes'] / 1e9:6.2f} GB, {t['protocols']}: chain "
                  f"{t['chain'] * 1e3:6.1f} = wire {t['wire'] * 1e3:6.1f} + discount {t['discount'] * 1e3:5.1f} + "
                  f"latency {t['latency'] * 1e3:5.1f}")


LARGE_DP_ROWS = ("megatron-177b-4608-h100", "nemo2409-gpt3-175b-1024-h100-bf16", "nemo2409-gpt3-175b-2048-h100-bf16",
                 "llama3-405b-8k-h100-published", "llama3-405b-16k-h100-published",
                 "torchtitan-llama31-405b-512-h100-fp8", "nemotron4-340b-6144-h100")


def large_dp_rows() -> None:
    print("\nother large-DP rows, rank 0: exposed data-parallel time, its stream's busy time and bytes a step")
    for name in LARGE_DP_ROWS:
        scenario = config.load(name)
        result = simulate(scenario, check_memory=False)
        events, p, summary = result.events, scenario.parallelism, result.summary
        dp = events[(events["rank"] == 0) & (events["stream"] == "dp")]
        print(f"{name:40} tp{p.tp} pp{p.pp} dp{p.dp}: step {summary['step_time_s']:.3f} s, exposed DP "
              f"{summary['exposed_comm_by_parallelism_s']['dp'] * 1e3:.0f} ms, {len(dp)} collectives busy "
              f"{(dp['end_s'] - dp['start_s']).sum() * 1e3:.0f} ms, {dp['bytes'].sum() / 1e9:.1f} GB")


def main(argv: list[str] | None = None) -> None:
    parser = script_entry.Parser(description="data-parallel rings over many nodes (module docstring)",
                                     allow_abbrev=False)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--rows", action="store_true", help="also the other large-DP rows (about a minute more)")
    which.add_argument("--apex", action="store_true", help="the Apex layout table alone")
    which.add_argument("--mcore-buckets", action="store_true",
                       help="Megatron-Core's own 40M bucket formation (closed-form chains) alone")
    which.add_argument("--growth", action="store_true", help="the step's growth with DP under each variant alone")
    which.add_argument("--terms", action="store_true", help="each Nemotron-4 row's step terms and its chains split "
                       "into wire, protocol discount and ring latency alone (round 30)")
    which.add_argument("--angles", action="store_true", help="round 26's framework, NCCL, SHARP and precision "
                       "variants alone")
    args = parser.parse_args(argv)
    if args.apex:
        apex_layout()
        return
    if args.mcore_buckets:
        mcore_buckets_table()
        return
    if args.growth:
        growth_table()
        return
    if args.angles:
        angles_table()
        return
    if args.terms:
        terms_table()
        return
    one_gpu_per_node_table()
    measured_points()
    nemotron_split()
    apex_layout()
    if args.rows:
        large_dp_rows()


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
