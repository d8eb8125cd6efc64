"""An FP8 pipelined step against its BF16 twin, term by term on the busiest stage (issue 15: which terms of the
NeMo FP8 pipelined rows grow with fp8 and with the microbatches of a step; docs/calibration.md "Issue 15: the FP8
pipelined rows against their BF16 twins").

    PYTHONPATH=. python scripts/fp8_twin_terms.py nemo2407-llama2-70b-64-h100-fp8 nemo2407-gpt3-175b-128-h100-fp8

For each FP8 scenario: its twin in bf16 (``fp8_pairs.twin``: the same file, layout and software, only the precision
swapped), both itemised on the FP8 run's busiest stage by ``pipeline_terms.stage_terms`` (seconds per step: the
layer's op classes times layers and microbatches, the chunks' extras, the amax regions, the fitted kernel gaps and
pipeline steps) and Transformer Engine's weight quantization once a step (in each chunk's first-microbatch forward,
``plan.fp8_weight_quantize_s``), then per term FP8 - BF16 in seconds a step and in microseconds per block (one
model chunk, one microbatch, one phase: what a term that grows with the microbatches is charged per); the engine's
step of each; and,
for a validation row, the published step (``simulated x simulated / published throughput``) and the share of
simulated - published per step and per block beside the terms only FP8 has (``FP8_ONLY``) and the fitted
kernel gaps it adds.
"""

from __future__ import annotations

import sys

from fp8_pairs import twin
from pipeline_terms import print_reports, published_step_s, stage_terms

from simcluster import engine
from simcluster.core.errors import ScenarioError
from simcluster.parallel import plan
from simcluster.spec import config
from simcluster.workload import fp8_params

# the terms a bf16 run has not: Transformer Engine's activation and gradient casts (per layer and microbatch) and
# delayed scaling's amax regions (per chunk, microbatch and direction), with current scaling's tensor-parallel amax
# all-reduces (per sequence-parallel cast, layer and microbatch) in the same term
FP8_ONLY = ("fp8 casts", "fp8 amax regions (kernels + all-reduce)")


def twin_terms(scenario) -> tuple[dict[str, tuple[float, float]], dict]:
    """{term: (fp8 s, bf16 s)} a step on the FP8 run's busiest stage, the BF16 twin read on the same stage, and
    the layout's facts (blocks: chunks x microbatches x 2 phases on that stage)."""
    fp8_terms, facts = stage_terms(scenario)
    bf16_terms, _ = stage_terms(twin(scenario, "bf16"), facts["stage"])
    keys = list(dict.fromkeys([*fp8_terms, *bf16_terms]))
    return {k: (fp8_terms.get(k, 0.0), bf16_terms.get(k, 0.0)) for k in keys}, facts



def report(name: str) -> list[str]:
    scenario = config.load(name)
    if scenario.training.precision != "fp8":
        raise ScenarioError("training.precision", f"{name} runs {scenario.training.precision}, not fp8")
    terms, facts = twin_terms(scenario)
    blocks = facts["blocks"]
    fp8_summary = engine.simulate(scenario, check_memory=False).summary
    bf16_step = float(engine.simulate(twin(scenario, "bf16"), check_memory=False).summary["step_time_s"])
    fp8_step = float(fp8_summary["step_time_s"])
    lines = [f"== {name}: stage {facts['stage']}, {facts['chunks']} chunks, {facts['layers']} layers, "
             f"{facts['microbatches']} microbatches, {blocks} blocks",
             f"  {'term':<46} {'fp8 s':>8} {'bf16 s':>8} {'fp8-bf16':>9} {'us/block':>9}"]
    for key, (fp8, bf16) in terms.items():
        lines.append(f"  {key:<46} {fp8:8.3f} {bf16:8.3f} {fp8 - bf16:+9.3f} {(fp8 - bf16) / blocks * 1e6:+9.1f}")
    weights_s = plan.fp8_weight_quantize_s(scenario, facts["stage"], fp8_params.enabled(scenario.training))
    lines.append(f"  {'fp8 weights once a step (first microbatch)':<46} {weights_s:8.3f} {0.0:8.3f} "
                 f"{weights_s:+9.3f}")
    lines.append(f"  {'engine step_time_s':<46} {fp8_step:8.3f} {bf16_step:8.3f} {fp8_step - bf16_step:+9.3f}")
    published = published_step_s(scenario)
    if published is not None:
        only = sum(terms[k][0] for k in FP8_ONLY if k in terms) + weights_s
        gaps = terms["kernel gaps (fitted)"][0] - terms["kernel gaps (fitted)"][1]
        excess = fp8_step - published
        lines.append(f"  published step {published:.3f} s: simulated - published {excess:+.3f} s "
                     f"({excess / blocks * 1e6:+.0f} us/block); the fp8-only terms {only:.3f} s, with the kernel "
                     f"gaps fp8 adds {only + gaps:.3f} s")
    return lines


def main(argv: list[str]) -> int:
    return print_reports(argv, report)


if __name__ == "__main__":
    from simcluster.core.script_entry import run

    sys.exit(run(main, sys.argv[1:], __doc__, words=(1, None), usage="SCENARIO [SCENARIO ...]"))
