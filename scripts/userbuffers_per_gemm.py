"""Per overlapped GEMM of one layer, what the model gives for Transformer Engine's userbuffers overlap
(``parallelism.tp_comm_overlap``): the GEMM alone (its chunk GEMMs, ``workload.userbuffers``), its collective alone on
the fabric, the GEMM slowed by the communication kernel's SMs (``engine.overlap``), and the overlapped time a
per-GEMM max(compute, communication) would give, against what the engine charges (the whole block's compute against
the whole block's communication, ``engine.agents`` ``compute``).

    PYTHONPATH=. python scripts/userbuffers_per_gemm.py megatron-177b-h100 nemo2409-gpt3-175b-128-h100-bf16
"""

from __future__ import annotations

import sys

from simcluster.collectives import timing
from simcluster.engine.overlap import slowdowns
from simcluster.fabric import topology
from simcluster.parallel.layout import Layout
from simcluster.parallel.plan import tp_collective_bytes
from simcluster.spec import config
from simcluster.workload import kernels, userbuffers
from simcluster.workload.ops import layer_ops, shard_for

# The collective each overlapped GEMM hides (TE initialize_ub pairs; userbuffers.COLLECTIVE_GEMMS): forward, the
# all-gathers before qkv/fc1 and the reduce-scatters after proj/fc2; dgrads beside all-gathers, wgrads beside
# reduce-scatters
FORWARD = {"qkv": "all_gather", "mlp_up": "all_gather", "attn_out": "reduce_scatter", "mlp_down": "reduce_scatter"}
BACKWARD = {"backward_input": "all_gather", "backward_weight": "reduce_scatter"}


def rows(name: str):
    scenario = config.load(name)
    p, t, m, gpu = scenario.parallelism, scenario.training, scenario.model, scenario.cluster.gpu
    precision = t.precision
    shard = shard_for(scenario)
    element = shard.activation_bytes_per_element
    settings = userbuffers.scenario_charged(scenario)
    layer = userbuffers.apply(layer_ops(m, shard), p.tp, precision, element, kernels.sm_count(gpu.name), settings,
                              p.te_version)
    fabric = topology.from_scenario(scenario)
    group = tuple(Layout.of(p).group(0, "tp"))
    activation = t.seq_len / p.cp * t.micro_batch_size * m.hidden * element
    sizes = tp_collective_bytes(scenario, activation)
    factors = slowdowns(scenario, Layout.of(p)).tp
    # the pipeline's exposed last reduce-scatter chunk, as the plan times it (fp8 with fp8_buf)
    chunk, fp8_chunk = userbuffers.last_chunk_bytes(activation, p.tp, element, precision, settings)
    chunk_s = timing.isolated_time_s(fabric, "reduce_scatter", group, chunk)
    fp8_s = timing.isolated_time_s(fabric, "reduce_scatter", group, fp8_chunk) if fp8_chunk else None
    out = []
    for phase in ("forward", "backward_input", "backward_weight"):
        for op in layer.get(phase, []):
            how = userbuffers.method(op.name, phase, settings) if op.kind == "gemm" else None
            if how is None:
                continue
            collective = FORWARD[op.name] if phase == "forward" else BACKWARD[phase]
            gemm_s = kernels.op_time_s(op, gpu, precision)
            comm_s = timing.isolated_time_s(fabric, collective, group, sizes[collective])
            f = factors["forward" if phase == "forward" else "backward"]
            tail_s = under_s = 0.0  # the pipeline's last chunk runs after the GEMM; the rest under it
            if how == "pipeline":
                splits = userbuffers.chunks("pipeline", p.tp)
                tail_s = userbuffers.exposed_stream({phase: [op]}, (phase,), chunk_s, settings, fp8_s,
                                                    precision).device_s
                under_s = comm_s * (splits - 1) / splits
            out.append((phase, op.name, how, collective, gemm_s, comm_s, f, tail_s, under_s or comm_s))
    return out


def main(names: list[str]) -> None:
    for name in names:
        print(f"\n{name}")
        print(f"{'phase':15} {'gemm':9} {'method':13} {'coll':14} {'gemm us':>8} {'comm us':>8} {'f':>6} "
              f"{'model us':>9} {'perGEMM us':>10} {'comm/gemm':>9}")
        tot_model = tot_per = tot_gemm = tot_comm = 0.0
        for phase, op, how, coll, gemm_s, comm_s, f, tail_s, under_s in rows(name):
            model_s = gemm_s * f + tail_s  # what the block charges for this GEMM while comm < the block's compute
            per_s = max(gemm_s * f, under_s) + tail_s  # the communication under its own GEMM only
            tot_model += model_s
            tot_gemm += gemm_s
            tot_comm += comm_s
            tot_per += per_s
            print(f"{phase:15} {op:9} {how:13} {coll:14} {gemm_s * 1e6:8.0f} {comm_s * 1e6:8.0f} {f:6.3f} "
                  f"{model_s * 1e6:9.0f} {per_s * 1e6:10.0f} {comm_s / gemm_s:9.2f}")
        print(f"{'sum':15} {'':9} {'':13} {'':14} {tot_gemm * 1e6:8.0f} {tot_comm * 1e6:8.0f} {'':6} "
              f"{tot_model * 1e6:9.0f} {tot_per * 1e6:10.0f} {tot_comm / tot_gemm:9.2f}")


if __name__ == "__main__":
    from simcluster.core.script_entry import run

    sys.exit(run(lambda argv: main(argv or ["megatron-177b-h100", "nemo2409-gpt3-175b-128-h100-bf16"]), sys.argv[1:],
                 __doc__))
