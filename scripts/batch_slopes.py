"""Published steps of one layout at several global batches, split into the pipeline's slot per microbatch and what
runs once a step, against the model's (issue 15; docs/calibration/round-32.md "Round 32: the DeepSpeed pipeline rows
split into slot and step"). Diagnostics: nothing is fitted or written back; the prequel's series are not validation
rows.

    PYTHONPATH=. python scripts/batch_slopes.py

DeepSpeed's ``TrainSchedule`` runs 2 (m + pp - 1) instruction steps a stage (round 17); with the busiest stage's
forward and backward of a microbatch taking t seconds, a step is T = (m + pp - 1) t + d, d what runs once a step
(the data-parallel reduction, the tied-embedding all-reduce, the optimizer). Runs of one layout at several global
batches (m = batch / (dp x micro batch)) give the slot t as the least-squares slope of T in m and
d = intercept - (pp - 1) t. The model's steps at the same batches are split the same way, so what the model lacks at
the largest batch is (m + pp - 1) (t_published - t_model) in the slots plus d_published - d_model once a step.

A once-a-step cost that shrinks as 1 / dp (a ZeRO shard's optimizer) is a slope in m when dp varies at one global
batch (MT-NLG's series: m = 1920 / dp); the prequel's series vary the batch at one dp, where it is not.

Published figures (each point's TFLOPs column checks its seconds, tests/unit/test_round32_batch_slopes.py):
- bigscience-workshop/bigscience train/tr11-176B-ml/chronicles-prequel.md (stored at 053adafe), "Batchsize Warmup"
  (02-26-2022): 78 x 13824, 96 heads, tp 4, pp 12, dp 8, micro batch 2 at global batch 512 / 1024 / 1536 / 2048:
  35.77 / 59.65 / 83.11 / 107.12 s (113.52 / 136.15 / 146.59 / 151.64 TFLOPs). The stages, "Re-do" (02-27): "78/12=6.5
  - so the last stage has 1 block, while the rest have 7" (the embedding with the first stage, the output layer with
  the last, 'type:transformer').
- the same file, "GBS Variations" (02-25): 72 x 14336, 64 heads, tp 8, pp 12, dp 4 at micro batch 2 (global batch
  1568 / 2048: 99.93 / 128.82 s, 123.51 / 125.15 TFLOPs) and micro batch 4 (92.75 / 117.07 s, 133.08 / 137.70
  TFLOPs); 6 layers a stage. The same table's pp 6 pair (113.01 / 114.11 s at 49 / 64 microbatches: 73 ms a
  microbatch where its layout needs about 0.8 s) is not a line and is left out.
Both predate the BF16_Optimizer ("Rebalancing layers", 02-28: "compared to fp16 which grad accumulates in fp16"):
simulated with 16-bit gradients (``grad_reduce_dtype: bf16``), as ``prequel_layouts.py`` runs the 02-21 tables.
- the held-out BLOOM rows at global batch 16 (March 2022) and 2048 (June 2022): one layout, two dates (the layer-norm
  syncs of the later one are in its scenario); two points.
- the held-out MT-NLG rows at 280 / 350 / 420 nodes (dp 8 / 10 / 12, m = 240 / 192 / 160).
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass

import yaml

from simcluster.core import script_entry
from simcluster.engine import simulate
from simcluster.spec import config
from simcluster.studies import validation


@dataclass(frozen=True)
class Split:
    slot_s: float        # t: seconds a microbatch on the busiest stage (the slope)
    intercept_s: float   # T at m = 0: (pp - 1) t + d
    step_s: float        # d: what runs once a step
    residual_s: float    # the largest distance of a point from the line


def split(microbatches: list[int], steps: list[float], pp: int) -> Split:
    """Least-squares line T = slot m + intercept through (m, T), and d = intercept - (pp - 1) slot."""
    if len(set(microbatches)) < 2 or len(microbatches) != len(steps):
        raise ValueError("a line needs steps at two microbatch counts or more")
    n = len(microbatches)
    m0, t0 = sum(microbatches) / n, sum(steps) / n
    slot = sum((m - m0) * (t - t0) for m, t in zip(microbatches, steps, strict=True)) \
        / sum((m - m0) ** 2 for m in microbatches)
    intercept = t0 - slot * m0
    residual = max(abs(t - intercept - slot * m) for m, t in zip(microbatches, steps, strict=True))
    return Split(slot, intercept, intercept - (pp - 1) * slot, residual)


def missing(published: Split, model: Split, m: int, pp: int) -> tuple[float, float]:
    """What the model lacks at m microbatches: (in the m + pp - 1 slots, once a step); their sum is the published
    line's step less the model line's there."""
    return (m + pp - 1) * (published.slot_s - model.slot_s), published.step_s - model.step_s


@dataclass(frozen=True)
class Point:
    scenario: dict | str     # a scenario dict, or a held-out row's scenario name (its published step read there)
    published_s: float | None = None
    tflops: float | None = None


def _held_out_step_s(name: str) -> float:
    case = next(c for c in validation.held_out_cases() if c["scenario"] == name)
    return validation.published_step_s(case, config.load(name))


def _prequel(base: str, batch: int, **edits) -> dict:
    """The held-out prequel scenario ``base`` with the series' shape, layout and global batch, 16-bit gradients."""
    with open(config.resolve_path(base)) as fh:
        d = copy.deepcopy(yaml.safe_load(fh))
    model = {k: edits.pop(k) for k in ("layers", "hidden", "heads") if k in edits}
    d["name"] = f"{base}-batch{batch}"
    d["model"].update(name=f"prequel-{model.get('layers')}x{model.get('hidden')}", **model)
    d["training"].update(global_batch_size=batch, micro_batch_size=edits.pop("micro_batch", 2))
    d["parallelism"].update(grad_reduce_dtype="bf16", **edits)
    return d


WARMUP_0226 = dict(layers=78, hidden=13824, heads=96, layers_per_stage=[7] * 11 + [1])
GBS_0225 = dict(layers=72, hidden=14336, heads=64, layers_per_stage=[6] * 12)
TP4 = "bigscience-prequel-195b-h96-tp4-pp12-mbs2-a100"
TP8 = "bigscience-prequel-176b-h64-tp8-pp12-mbs2-a100"

SERIES: dict[str, list[Point]] = {
    "prequel 02-26 tp 4 pp 12 dp 8 mbs 2 (78 x 13824)": [
        Point(_prequel(TP4, b, **WARMUP_0226), s, f) for b, s, f in
        ((512, 35.77, 113.52), (1024, 59.65, 136.15), (1536, 83.11, 146.59), (2048, 107.12, 151.64))],
    "prequel 02-25 tp 8 pp 12 dp 4 mbs 2 (72 x 14336)": [
        Point(_prequel(TP8, b, micro_batch=2, **GBS_0225), s, f) for b, s, f in
        ((1568, 99.93, 123.51), (2048, 128.82, 125.15))],
    "prequel 02-25 tp 8 pp 12 dp 4 mbs 4 (72 x 14336)": [
        Point(_prequel(TP8, b, micro_batch=4, **GBS_0225), s, f) for b, s, f in
        ((1568, 92.75, 133.08), (2048, 117.07, 137.70))],
    "BLOOM tp 4 pp 12 dp 8 mbs 2 (held out, global batch 16 and 2048)": [
        Point("bigscience-bloom-176b-384-a100-gbs16"), Point("bigscience-bloom-176b-384-a100")],
    "MT-NLG tp 8 pp 35 mbs 1 (held out, 280 / 350 / 420 nodes)": [
        Point(f"smith2022-mtnlg-530b-{n}-a100") for n in (280, 350, 420)],
}


def scenario_of(point: Point):
    return config.load(point.scenario) if isinstance(point.scenario, str) else config.from_dict(point.scenario)


def series_split(points: list[Point]) -> dict:
    """The published and simulated lines of one series and what the model lacks at its largest batch."""
    scenarios = [scenario_of(p) for p in points]
    pp = scenarios[0].parallelism.pp
    ms = [s.training.global_batch_size // (s.parallelism.dp * s.training.micro_batch_size) for s in scenarios]
    published = [p.published_s if p.published_s is not None else _held_out_step_s(p.scenario) for p in points]
    simulated = [simulate(s).summary["step_time_s"] for s in scenarios]
    pub, sim = split(ms, published, pp), split(ms, simulated, pp)
    top = ms.index(max(ms))
    in_slots, once = missing(pub, sim, ms[top], pp)
    return {"pp": pp, "m": ms, "published": published, "simulated": simulated, "pub": pub, "sim": sim,
            "slots_s": in_slots, "step_s": once, "top": top}


def report(label: str, r: dict) -> list[str]:
    pub, sim, top = r["pub"], r["sim"], r["top"]
    points = ", ".join(f"m {m}: {p:.2f} / {s:.2f} s" for m, p, s in zip(r["m"], r["published"], r["simulated"],
                                                                        strict=True))
    return [f"== {label}, pp {r['pp']}: published / simulated {points}",
            f"  slot t: published {1e3 * pub.slot_s:7.1f} ms, model {1e3 * sim.slot_s:7.1f} ms "
            f"({100 * (pub.slot_s / sim.slot_s - 1):+.1f}%); once a step d: published {pub.step_s:6.2f} s, model "
            f"{sim.step_s:6.2f} s; published points off the line by at most {pub.residual_s:.2f} s",
            f"  missing at m = {r['m'][top]}: {r['slots_s']:+.2f} s in the slots, {r['step_s']:+.2f} s once a step "
            f"(published {r['published'][top]:.2f} s, simulated {r['simulated'][top]:.2f} s)"]


def main(argv: list[str]) -> int:
    script_entry.Parser(description=" ".join(__doc__.split("\n\n")[0].split())).parse_args(argv)  # --help; no args
    for label, points in SERIES.items():
        print("\n".join(report(label, series_split(points))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
