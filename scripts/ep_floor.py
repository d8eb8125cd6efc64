"""The least time a step's blocking expert-parallel all-to-alls can take, and what a published step then leaves for
everything else, against the simulation's own split.

    python scripts/ep_floor.py SCENARIO [SCENARIO...]

Per scenario (a validation case, calibration or held out): one dispatch's floor at the links' line rates
(``deepep.line_rate_floor_s``: DeepEP's deduplicated bytes with the flex dispatcher, every top-k copy with the
alltoall one; uniform, balanced routing; the EP group's GPUs consecutive, as Megatron-Core's tp-cp-dp-pp order puts
an EP group inside a pipeline stage), the all-to-alls of the busiest pipeline stage in a step (dispatch and combine,
forward and backward: 4 a MoE layer and microbatch, 6 with full recompute, which re-runs the forward's pair), their
floor, the published step less that floor (the most the stage's other work can have taken when its all-to-alls block
the compute stream: a stage's work runs in series on its stream, so the step is at least its sum), and the simulated
work besides (compute, with its interference, and the exposed tensor- and context-parallel collectives, which block
the stream too; the bubble and waits excluded: idle, not work). ``excess`` > 0: the simulated non-EP work alone is
longer than the published step allows, whatever the all-to-alls cost. Rows that overlap the all-to-alls
(``ep_overlap``) have no such bound. A diagnostic: nothing is fitted or written; held-out scenarios are read, never
tuned to (docs/calibration.md, "Round 15: the MoE zoo's Qwen3 rows").
"""

from __future__ import annotations

import argparse

from simcluster.collectives import deepep
from simcluster.parallel.layout import split_layers
from simcluster.parallel.plan import shard_for
from simcluster.spec import config
from simcluster.studies import validation
from simcluster.workload import moe


def stage_moe_layers(scenario: config.Scenario) -> int:
    """MoE layers of the pipeline stage holding the most (chunk c on rank c % pp, Megatron's interleaving)."""
    m, p = scenario.model, scenario.parallelism
    chunks = split_layers(m.layers, p.pp, p.virtual_stages, p.layers_per_stage)
    per_stage = [0] * p.pp
    first = 0
    for c, count in enumerate(chunks):
        per_stage[c % p.pp] += sum(m.is_moe_layer(i) for i in range(first, first + count))
        first += count
    return max(per_stage)


def published_step_s(scenario: config.Scenario) -> float:
    """The validation case's published step time (a published TFLOP/s turned into one with the model FLOP)."""
    for case in validation.cases() + validation.held_out_cases():
        if case["scenario"] == scenario.name:
            if "step_time_s" in case:
                return case["step_time_s"]
            flop = moe.model_flop_per_step(scenario.model, scenario.training.seq_len,
                                           scenario.training.global_batch_size)
            return flop / (scenario.cluster.gpus * validation.published_tflops(case, scenario) * 1e12)
    raise ValueError(f"{scenario.name}: not a validation case")


def row(name: str) -> dict:
    from simcluster.engine import simulate

    scenario = config.load(name)
    m, p, c = scenario.model, scenario.parallelism, scenario.cluster
    if m.moe is None or p.ep < 2:
        raise ValueError(f"{name}: no expert parallelism (model.moe and parallelism.ep >= 2)")
    shard = shard_for(scenario)
    group = p.ep * p.etp
    nodes, local = (1, group) if group <= c.gpus_per_node else (group // c.gpus_per_node, c.gpus_per_node)
    dedup = p.ep_alltoall == "hierarchical"
    token_bytes = m.hidden * shard.activation_bytes_per_element
    floor = deepep.line_rate_floor_s(nodes, local, moe.routed_tokens(m, shard), token_bytes, m.moe.experts,
                                     m.moe.top_k, c.nic.rate, c.gpu.nvlink_bandwidth, dedup)
    per_layer = 6 if scenario.training.activation_recompute == "full" else 4
    count = per_layer * stage_moe_layers(scenario) * scenario.microbatches
    summary = simulate(scenario).summary
    ep_s = summary["exposed_comm_by_parallelism_s"]["ep"]
    published = published_step_s(scenario)
    out = dict(name=name, nodes=nodes, local=local, dedup=dedup, floor_ms=floor * 1e3, count=count,
               floor_step_s=floor * count, published_s=published, simulated_s=summary["step_time_s"],
               exposed_ep_s=ep_s, overlap=p.ep_overlap,
               simulated_other_s=summary["compute_s"] + sum(summary["exposed_comm_by_parallelism_s"][k]
                                                            for k in ("tp", "cp")))
    out["allowed_other_s"] = None if p.ep_overlap else published - out["floor_step_s"]
    out["excess_s"] = None if p.ep_overlap else out["simulated_other_s"] - out["allowed_other_s"]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="+")
    args = parser.parse_args(argv)
    print("scenario | EP nodes x GPUs | bytes | floor ms | all-to-alls | floor s | published s | published - floor s"
          " | simulated s | exposed EP s | simulated compute + TP/CP s | excess s")
    for name in args.scenarios:
        try:
            r = row(name)
        except (ValueError, config.ScenarioError) as error:
            parser.error(str(error))
        bound = "overlapped" if r["overlap"] else f"{r['allowed_other_s']:.2f}"
        excess = "-" if r["overlap"] else f"{r['excess_s']:+.2f}"
        print(f"{name} | {r['nodes']} x {r['local']} | {'dedup' if r['dedup'] else 'every copy'} | "
              f"{r['floor_ms']:.3f} | {r['count']} | {r['floor_step_s']:.2f} | {r['published_s']:.2f} | {bound} | "
              f"{r['simulated_s']:.2f} | {r['exposed_ep_s']:.2f} | {r['simulated_other_s']:.2f} | {excess}")


if __name__ == "__main__":
    main()
