"""The least time a step's blocking expert-parallel all-to-alls can take, and what a published step then leaves for
everything else, against the simulation's own split.

    python scripts/ep_floor.py SCENARIO [SCENARIO...]

Per scenario (a validation case, calibration or held out): one dispatch's floor at the links' line rates
(``deepep.line_rate_floor_s``: DeepEP's deduplicated bytes with the flex dispatcher, every top-k copy with the
alltoall one; uniform, balanced routing, within the model's router groups if it states them; the EP group's GPUs
consecutive, as Megatron-Core's tp-cp-dp-pp order puts an EP group inside a pipeline stage, so the script refuses
etp > 1 and an EP group that neither divides nor is a multiple of the GPUs a node), the all-to-alls of a pipeline
stage in a step, on the MEAN over stages (dispatch and combine, forward and backward: 4 a MoE layer and microbatch,
6 with full recompute, which re-runs the forward's pair; the multi-token-prediction modules' MoE layers counted),
their floor, the published step less that floor, and the simulated work besides, also the mean over all GPUs (the
engine's summary: compute with its interference and the optimizer step, and the exposed tensor- and context-parallel
collectives, which block the stream too; the bubble and waits excluded: idle, not work). A stage's work runs in
series on its stream, so the step is at least each stage's sum, hence at least the mean over stages (every stage
holds the same number of GPUs): ``excess`` > 0 says the simulated non-EP work alone, on the mean rank, is longer
than the published step allows, whatever the all-to-alls cost. Rows that overlap the all-to-alls (``ep_overlap``)
have no such bound. A diagnostic: nothing is fitted or written; held-out scenarios are read, never tuned to
(docs/calibration/round-15.md, "Round 15: the MoE zoo's Qwen3 rows").
"""

from __future__ import annotations

import sys

from simcluster.collectives import deepep
from simcluster.core import script_entry
from simcluster.parallel import memory
from simcluster.parallel.plan import shard_for
from simcluster.spec import config
from simcluster.studies import validation
from simcluster.workload import moe


def stage_moe_layers(scenario: config.Scenario) -> list[int]:
    """MoE layers of each pipeline stage (chunk c on rank c % pp, Megatron's interleaving; the MTP modules' layers on
    the last chunk, ``memory.chunk_layers``)."""
    p = scenario.parallelism
    per_stage = [0] * p.pp
    for c, count in enumerate(memory.chunk_layers(scenario.model, p.pp, p.virtual_stages, p.layers_per_stage)[1]):
        per_stage[c % p.pp] += count
    return per_stage


def mean_stage_moe_layers(scenario: config.Scenario) -> float:
    """MoE layers of a pipeline stage on the mean over stages (the engine's summary is a mean over GPUs)."""
    per_stage = stage_moe_layers(scenario)
    return sum(per_stage) / len(per_stage)


def validation_case(name: str) -> dict:
    """The calibration or held-out case of scenario ``name``."""
    for case in validation.cases() + validation.held_out_cases():
        if case["scenario"] == name:
            return case
    raise ValueError(f"{name}: not a validation case (calibration or held out; simcluster validate lists them)")


def checked(name: str) -> config.Scenario:
    """Scenario ``name`` if the bound applies to it: a validation case with expert parallelism whose EP group is
    ``nodes x local`` consecutive GPUs (etp 1; the group divides or is a multiple of the GPUs a node)."""
    validation_case(name)
    scenario = config.load(name)
    m, p, per_node = scenario.model, scenario.parallelism, scenario.cluster.gpus_per_node
    if m.moe is None or p.ep < 2:
        raise ValueError(f"{name}: no expert parallelism (model.moe and parallelism.ep >= 2)")
    if p.etp > 1:
        raise ValueError(f"{name}: parallelism.etp {p.etp} > 1: the floor assumes the EP group's own GPUs (etp 1)")
    if per_node % p.ep if p.ep <= per_node else p.ep % per_node:
        raise ValueError(f"{name}: parallelism.ep {p.ep} neither divides nor is a multiple of gpus_per_node "
                         f"{per_node}: the floor assumes whole nodes or a group inside one")
    return scenario


def row(name: str) -> dict:
    from simcluster.engine import simulate

    scenario = checked(name)
    m, p, c = scenario.model, scenario.parallelism, scenario.cluster
    shard = shard_for(scenario)
    nodes, local = (1, p.ep) if p.ep <= c.gpus_per_node else (p.ep // c.gpus_per_node, c.gpus_per_node)
    dedup = p.ep_alltoall == "hierarchical"
    token_bytes = m.hidden * shard.activation_bytes_per_element
    floor = deepep.line_rate_floor_s(nodes, local, moe.routed_tokens(m, shard), token_bytes, m.moe.experts,
                                     m.moe.top_k, c.nic.rate, c.gpu.nvlink_bandwidth, dedup, m.moe.groups,
                                     m.moe.group_topk)
    per_layer = 6 if scenario.training.activation_recompute == "full" else 4
    count = per_layer * mean_stage_moe_layers(scenario) * scenario.microbatches
    summary = simulate(scenario).summary
    ep_s = summary["exposed_comm_by_parallelism_s"]["ep"]
    published = validation.published_step_s(validation_case(scenario.name), scenario)
    out = dict(name=name, nodes=nodes, local=local, dedup=dedup, floor_ms=floor * 1e3, count=count,
               floor_step_s=floor * count, published_s=published, simulated_s=summary["step_time_s"],
               exposed_ep_s=ep_s, overlap=p.ep_overlap,
               simulated_other_s=summary["compute_s"] + sum(summary["exposed_comm_by_parallelism_s"][k]
                                                            for k in ("tp", "cp")))
    out["allowed_other_s"] = None if p.ep_overlap else published - out["floor_step_s"]
    out["excess_s"] = None if p.ep_overlap else out["simulated_other_s"] - out["allowed_other_s"]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = script_entry.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="+")
    args = parser.parse_args(argv)
    for name in args.scenarios:  # every name checked before the header is printed or anything simulated
        try:
            checked(name)
        except ValueError as error:
            parser.error(str(error))
    print("scenario | EP nodes x GPUs | bytes | floor ms | all-to-alls (stage mean) | floor s | published s"
          " | published - floor s | simulated s | exposed EP s | simulated compute + TP/CP s | excess s")
    for name in args.scenarios:
        r = row(name)
        bound = "overlapped" if r["overlap"] else f"{r['allowed_other_s']:.2f}"
        excess = "-" if r["overlap"] else f"{r['excess_s']:+.2f}"
        print(f"{name} | {r['nodes']} x {r['local']} | {'dedup' if r['dedup'] else 'every copy'} | "
              f"{r['floor_ms']:.3f} | {r['count']:.1f} | {r['floor_step_s']:.2f} | {r['published_s']:.2f} | {bound} | "
              f"{r['simulated_s']:.2f} | {r['exposed_ep_s']:.2f} | {r['simulated_other_s']:.2f} | {excess}")


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
