"""Transformer Engine's userbuffers overlap of one GEMM as the model runs it, against FLUX's operation-level
measurements of TransformerEngine (Chang et al. 2024, arXiv 2406.06858, section 5.1 and section 6): GPT-3 175B's MLP
GEMMs at 8-way tensor parallelism, (n, k) = (49152, 12288) after the all-gather (fc1) and (12288, 49152) before the
reduce-scatter (fc2), m = 1024 .. 8192 tokens, bf16, 8 GPUs of one NVLink node.

FLUX's overlap efficiency (its eq. 1-2): ECT = overall time - the non-split GEMM's time; E = 1 - ECT_overlap /
ECT_non-overlap, ECT_non-overlap being the NCCL collective alone. Measured for TransformerEngine 1.4.0 (best of its
configurations): -40% to 80% on 8x H800 NVLink, average 20%; -99% to 74% on 8x A100 NVLink (average -61%).

FLUX section 5.2 (training, GPT-3 175B on 128 GPUs at TP 8, PP 8, DP 2, Megatron-LM core r0.4.0): Flux is up to
1.10x faster than Megatron-LM without TE's overlap on H800 NVLink and up to 1.05x faster than TransformerEngine, so TE
gains at most 1.10x there; on A100 NVLink Flux is 1.04-1.05x over Megatron-LM and 1.01-1.04x over TE (section 6), so
TE gains 1.00-1.04x. ``--training`` prints the model's step-time ratio, overlap off / on, for that layout (global
batch not stated by FLUX: 256 here).

    PYTHONPATH=. python scripts/userbuffers_flux_check.py [--training] [gpu ...]
"""

from __future__ import annotations

import sys

from simcluster.collectives import timing
from simcluster.engine import simulate
from simcluster.engine.overlap import slowdowns
from simcluster.fabric import topology
from simcluster.parallel.layout import Layout
from simcluster.spec import config, hardware
from simcluster.workload import kernels, userbuffers
from simcluster.workload.ops import layer_ops, shard_for

TOKENS = (1024, 2048, 4096, 8192)
# FLUX's two patterns: the MLP's up GEMM after the all-gather (TE ring exchange), its down GEMM before the
# reduce-scatter (TE pipeline)
GEMMS = (("mlp_up", "ring_exchange", "all_gather"), ("mlp_down", "pipeline", "reduce_scatter"))
# TransformerEngine 1.4.0's overlap efficiency as FLUX measured it, m = 1024 .. 8192, AllGather and ReduceScatter
# (section 5.1 for the ranges, section 6 for the averages); per-shape values are in its Figures 11-13 (images)
MEASURED = {"h800-sxm": (-0.40, 0.80, 0.20), "a100-80gb-sxm": (-0.99, 0.74, -0.61)}
# H800 SXM5: the H100 SXM5 die with NVLink cut to 400 GB/s (both directions: 200 GB/s each way), NVIDIA H800 product
# brief (R); FLUX's H800 cluster (section 5).
GPUS = {"h100-sxm": None, "h800-sxm": "200 GB/s", "a100-80gb-sxm": None}


def scenario(gpu_name: str, tokens: int, training: bool = False, overlap: bool = True):
    """One 8-GPU node running GPT-3 175B's layer shapes at tp 8 (``training``: FLUX's 128-GPU training layout)."""
    gpu = hardware.gpu("h100-sxm" if gpu_name == "h800-sxm" else gpu_name).model_dump(mode="json")
    if GPUS[gpu_name]:
        gpu["nvlink_bandwidth"] = GPUS[gpu_name]
    data = {"name": f"flux-{gpu_name}-{tokens}",
            "cluster": {"gpu": gpu, "gpus_per_node": 8, "nodes": 16 if training else 1, "nic": "connectx-7",
                        "topology": "rail-fat-tree"},
            "model": "gpt3-175b" if training else "megatron-177b",
            "training": {"seq_len": tokens, "global_batch_size": 256 if training else 1, "micro_batch_size": 1,
                         "precision": "bf16", "activation_recompute": "selective" if training else "none"},
            "parallelism": {"tp": 8, "pp": 8 if training else 1, "dp": 2 if training else 1, "sequence_parallel": True,
                            "tp_comm_overlap": overlap, "zero_stage": 1, "schedule": "1f1b"}}
    return config.from_dict(data, source=data["name"])


def training_speedup(gpu_name: str) -> float:
    """Step time without TE's overlap over the step time with it, FLUX's training layout (sequence 2048)."""
    off, on = (simulate(scenario(gpu_name, 2048, True, overlap), check_memory=False).summary["step_time_s"]
               for overlap in (False, True))
    return off / on


def rows(gpu_name: str, tokens: int):
    """(GEMM, non-split us, overlapped us, NCCL us, efficiency) of fc1 (all-gather) and fc2 (reduce-scatter)."""
    s = scenario(gpu_name, tokens)
    gpu, p = s.cluster.gpu, s.parallelism
    shard = shard_for(s)
    plain = {op.name: op for op in layer_ops(s.model, shard)["forward"]}
    sms = kernels.sm_count(gpu.name)
    fabric = topology.from_scenario(s)
    group = tuple(Layout.of(p).group(0, "tp"))
    size = tokens * s.model.hidden * shard.activation_bytes_per_element
    f = slowdowns(s, Layout.of(p)).tp["forward"]
    out = []
    for name, how, collective in GEMMS:
        op = plain[name]
        whole_s = kernels.op_time_s(op, gpu, "bf16")
        chunk_s = kernels.op_time_s(userbuffers.chunked(op, how, p.tp, "bf16", sms), gpu, "bf16")
        comm_s = timing.isolated_time_s(fabric, collective, group, size)
        if how == "pipeline":
            splits = userbuffers.chunks(how, p.tp)
            tail_s = timing.isolated_time_s(fabric, collective, group, size / splits)
            overlapped_s = max(chunk_s * f, comm_s * (splits - 1) / splits) + tail_s
        else:
            overlapped_s = max(chunk_s * f, comm_s)
        out.append((name, whole_s, overlapped_s, comm_s, 1 - (overlapped_s - whole_s) / comm_s))
    return out


def main(gpus: list[str]) -> None:
    for gpu_name in gpus:
        print(f"\n{gpu_name}: {'m':>5} {'GEMM':9} {'whole us':>9} {'overlap us':>10} {'NCCL us':>8} {'E':>6}")
        effs = []
        for tokens in TOKENS:
            for name, whole_s, overlapped_s, comm_s, eff in rows(gpu_name, tokens):
                effs.append(eff)
                print(f"{'':{len(gpu_name) + 1}} {tokens:5} {name:9} {whole_s * 1e6:9.0f} {overlapped_s * 1e6:10.0f} "
                      f"{comm_s * 1e6:8.0f} {eff:6.0%}")
        print(f"{'':{len(gpu_name) + 1}} model: mean E {sum(effs) / len(effs):.0%}, range {min(effs):.0%} .. "
              f"{max(effs):.0%}")
        if gpu_name in MEASURED:
            low, high, mean = MEASURED[gpu_name]
            print(f"{'':{len(gpu_name) + 1}} FLUX, TE 1.4.0: mean E {mean:.0%}, range {low:.0%} .. {high:.0%}")


def _entry(argv: list[str]) -> None:
    names = [a for a in argv if a != "--training"] or ["h800-sxm", "a100-80gb-sxm", "h100-sxm"]
    if "--training" in argv:
        for name in names:
            print(f"{name}: GPT-3 175B, TP 8 PP 8 DP 2, step time overlap off / on {training_speedup(name):.3f}")
    else:
        main(names)


if __name__ == "__main__":
    from simcluster.core.script_entry import run

    sys.exit(run(_entry, sys.argv[1:], __doc__, ["--training"]))
