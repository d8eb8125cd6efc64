"""The error to expect of a run: how far the validation harness found simcluster on published runs like it.

``simcluster validate`` (calibration) and ``validate --held-out`` compare simulated with published throughput, run
by run (data/validation.yaml; docs/accuracy.md). ``data/accuracy.yaml`` is a snapshot of those errors, one entry per
validated run with the traits it is matched on (``traits``), written by ``scripts/accuracy_tables.py --write-data``
from the two ``validate --json`` outputs (tests/validation/test_accuracy_snapshot.py fails when it is stale).

``card(scenario)`` picks the published runs that resemble the scenario. First the runs of the scenario's software
stack (``spec.stack``: DeepSpeed's pipeline engine, llm-foundry FSDP, Megatron-Core with TE 1.x, ...; the strongest
predictor of the held-out error, docs/calibration/round-22.md "Round 22: what the held-out error tracks"), when at least
``MIN_HELD_OUT_RUNS`` held-out runs are on it; within them, or among every run when too few are, the same GPU
generation, the same precision class and the same dense/MoE kind; while fewer than ``MIN_HELD_OUT_RUNS`` held-out
runs match, it widens the match a trait at a time (``WIDENING``: MoE first, then precision, then generation; at the
end every run of the stack, or every run). The card says whether the stack has calibration runs (the fitted
constants saw it) and what the held-out runs on stacks like it (calibrated or not) erred, signed (``coverage``).
It returns the basis in words (a dropped trait as the kinds the held-out runs behind the figures are, and the run's
own kind named when none of them is: ``basis_words``), the held-out runs' median and max |error| and mean signed
error, the calibration runs' figures on the same basis, and the nearest runs by name (``nearest``). A snapshot that
cannot be read leaves the error unknown (``unavailable``); the run goes on; one written before round 22 (no
``calibrated_stacks``) gives the card without the stack.

Simplification, stated: this is the harness's error on similar published runs, not a bound on this run. A run
unlike any published one (another layout, scale or model) can err more; a run whose published twin is fitted
(calibration) errs less there than elsewhere, which is why the held-out runs set the figures and the calibration
runs are shown beside them. Error sign as ``validate``: error = simulated / published throughput - 1 (positive:
simulated fast).
"""

from __future__ import annotations

import math

import numpy as np
import yaml

from simcluster.core import catalog
from simcluster.spec import stack as stacks
from simcluster.workload import moe

# At least this many held-out runs behind a card: the median of one or two runs is a single run's error, or the mean
# of two.
MIN_HELD_OUT_RUNS = 3
# The traits a card matches on, and the order in which they are dropped while too few held-out runs match: whether
# the model is MoE first (the harness has few MoE runs per generation and precision), then the precision class,
# then the GPU generation (the trait the compute model depends on most: kernel efficiencies, clocks, NVLink).
MATCHED = ("generation", "precision_class", "moe")
WIDENING = ("moe", "precision_class", "generation")

# GPU architecture by NVLink generation, for NVIDIA parts (hardware.yaml names no architecture): NVLink 2 came with
# Volta (V100), 3 with Ampere (A100), 4 with Hopper (H100/H200), 5 with Blackwell (B200/B300/GB200/GB300) (NVIDIA,
# "NVLink and NVLink Switch", nvidia.com/en-us/data-center/nvlink, the table of NVLink generations).
ARCHITECTURE_BY_NVLINK = {2: "volta", 3: "ampere", 4: "hopper", 5: "blackwell"}
# Precision classes: the 16-bit formats share the tensor cores' rate (hardware.yaml peaks); fp8 (any scaling
# recipe, MXFP8 included) runs at twice it on Hopper and Blackwell.
PRECISION_CLASS = {"bf16": "16-bit", "fp16": "16-bit", "fp8": "fp8", "fp32": "32-bit", "tf32": "32-bit"}

# ``nearest``: runs of the card's basis ordered by a distance that counts each differing categorical trait (the model's
# name among them) as 1 and a factor of NEAREST_FACTOR in GPU count or in model FLOP per token as 1 more. A judgment,
# not a measurement: it only orders the runs a user may want to read about, the figures do not use it.
NEAREST = 3
NEAREST_FACTOR = 8.0
NEAREST_TRAITS = ("model", "gpu", "style", "precision_class", "moe", "generation")

# Whether the basis is the stack's runs first (when MIN_HELD_OUT_RUNS held-out runs are on it). A choice, measured
# rather than fitted: held out one at a time against the other runs (scripts/card_check.py, round 22's snapshot),
# the stack-first basis anticipates a run's |error| as well as the round-20 rule (median miss 2.53% against 2.50%) and
# its signed error worse (4.51% against 3.48%), while the stack row's signed median (calibrated stacks or not) does
# best (3.29%): the row is shown either way; False gives the round-20 basis with it.
MATCH_STACK = False

# The snapshot's list of the stacks that have calibration runs (scripts/accuracy_tables.py ``data_text``). A snapshot
# without it, or with an entry without its ``stack``, is one written before round 22: its card ignores the stack.
CALIBRATED_STACKS = "calibrated_stacks"

# What every snapshot entry carries (scripts/accuracy_tables.py ``data_entries``); a snapshot without them is unread.
ENTRY_KEYS = ("scenario", "set", "error", "gpus", "gflop_per_token", *NEAREST_TRAITS)
TEXT_KEYS = ("scenario", "set", "model", "gpu", "style", "precision_class", "generation")
# How the basis names a GPU generation that is not a capitalised architecture.
GENERATION_WORDS = {"amd": "AMD", "unknown": "unknown-generation"}

NOTE = ("the validation harness's error on similar published runs (error = simulated / published throughput - 1, "
        "positive = simulated fast), not a bound on this run")


def generation(gpu) -> str:
    """The GPU's architecture ('hopper', ...); a non-NVIDIA part's vendor, 'unknown' for a custom one."""
    if gpu.vendor == "nvidia":
        return ARCHITECTURE_BY_NVLINK.get(gpu.nvlink_generation, "unknown")
    return "unknown" if gpu.vendor == "custom" else gpu.vendor


def style(scenario) -> str:
    """How the run shards its state: 'fsdp' (ZeRO-3, parameters sharded too: FSDP, Megatron-FSDP), 'deepspeed-3d'
    (DeepSpeed's pipeline engine) or 'megatron-3d' (Megatron's tensor/pipeline/data parallelism)."""
    if scenario.parallelism.zero_stage == 3:
        return "fsdp"
    return "deepspeed-3d" if scenario.parallelism.pipeline_engine == "deepspeed" else "megatron-3d"


def traits(scenario) -> dict:
    """What a card matches a scenario on, as the snapshot stores it for each validated run."""
    t = scenario.training
    flop = moe.model_flop_per_step(scenario.model, t.seq_len, t.global_batch_size) / scenario.tokens_per_step
    gpu = scenario.cluster.gpu
    return {"model": scenario.model.name, "gpu": gpu.name, "generation": generation(gpu), "precision": t.precision,
            "precision_class": PRECISION_CLASS[t.precision], "moe": scenario.model.moe is not None,
            "style": style(scenario), "stack": stacks.family(scenario), "gpus": scenario.cluster.gpus,
            "gflop_per_token": round(flop / 1e9, 3)}


class SnapshotError(ValueError):
    """data/accuracy.yaml missing or malformed: the card says the expected error is unknown, the run goes on."""


def _finite(value) -> bool:
    """A finite number (YAML reads .nan and .inf; a bool is no number here)."""
    return type(value) in (int, float) and math.isfinite(value)


def snapshot() -> dict:
    """data/accuracy.yaml: ``measured_on`` and ``runs`` (one entry per validated run, each with ``ENTRY_KEYS``, a
    finite error and positive GPU count and FLOP per token). SnapshotError, one line, when it cannot be read so."""
    try:
        data = catalog.load("accuracy")
    except OSError as exc:
        raise SnapshotError(f"data/accuracy.yaml: cannot be read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise SnapshotError(f"data/accuracy.yaml: not YAML ({str(exc).splitlines()[0]})") from None
    return checked(data)


def checked(data, where: str = "data/accuracy.yaml") -> dict:
    """``data`` if it is a snapshot as ``snapshot`` describes it (``where`` names it in the error); SnapshotError,
    one line, otherwise. Also for a snapshot read from another file (scripts/card_check.py)."""
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, list):
        raise SnapshotError(f"{where}: no list of runs")
    required = frozenset(ENTRY_KEYS)
    for index, entry in enumerate(runs):
        if not (isinstance(entry, dict) and required <= entry.keys() and _finite(entry["error"])
                and _finite(entry["gpus"]) and entry["gpus"] > 0
                and _finite(entry["gflop_per_token"]) and entry["gflop_per_token"] > 0
                and type(entry["moe"]) is bool and all(type(entry[k]) is str for k in TEXT_KEYS)):
            raise SnapshotError(f"{where}: runs[{index}] lacks one of {', '.join(ENTRY_KEYS)} or has a "
                                "non-finite error, a non-positive gpus or gflop_per_token, a moe not true/false or "
                                "another trait not text")
        if "stack" in entry and type(entry["stack"]) is not str:
            raise SnapshotError(f"{where}: runs[{index}].stack: not text")
    calibrated = data.get(CALIBRATED_STACKS)
    if calibrated is not None and not (isinstance(calibrated, list) and all(type(s) is str for s in calibrated)):
        raise SnapshotError(f"{where}: {CALIBRATED_STACKS}: not a list of stack names")
    return data


def knows_stacks(data: dict) -> bool:
    """Whether the snapshot records each run's stack and the calibrated stacks (written in round 22 or later)."""
    return isinstance(data.get(CALIBRATED_STACKS), list) and all("stack" in r for r in data["runs"])


def figures(errors: list[float]) -> dict:
    """Runs, median and max |error|, mean signed error and how many runs were simulated fast (None when none)."""
    if not errors:
        return {"runs": 0, "median_abs_error": None, "max_abs_error": None, "mean_error": None, "fast_runs": 0}
    signed = np.asarray(errors, dtype=float)
    return {"runs": len(signed), "median_abs_error": float(np.median(np.abs(signed))),
            "max_abs_error": float(np.abs(signed).max()), "mean_error": float(signed.mean()),
            "fast_runs": int((signed > 0).sum())}


def _held(runs: list[dict]) -> int:
    return sum(r["set"] == "held-out" for r in runs)


def select(target: dict, runs: list[dict], by_stack: bool = False) -> tuple[tuple[str, ...], list[dict]]:
    """The matched traits and the runs matching ``target`` on them. With ``by_stack``, when at least
    MIN_HELD_OUT_RUNS held-out runs are on the target's stack, only those runs, with 'stack' first among the matched
    traits; otherwise every run. Among them: all of MATCHED first, then one fewer at a time in WIDENING order, the
    first match with at least MIN_HELD_OUT_RUNS held-out runs (at the end: every run among them)."""
    if by_stack:
        same = [r for r in runs if r["stack"] == target["stack"]]
        if _held(same) >= MIN_HELD_OUT_RUNS:
            keys, chosen = select(target, same)
            return ("stack", *keys), chosen
    keys = list(MATCHED)
    for dropped in (None, *WIDENING):
        if dropped is not None:
            keys.remove(dropped)
        chosen = [r for r in runs if all(r[k] == target[k] for k in keys)]
        if _held(chosen) >= MIN_HELD_OUT_RUNS or not keys:
            return tuple(keys), chosen
    raise AssertionError("unreachable: the last step matches every run")


def _words(key: str, values) -> str:
    """The basis's words for one trait's values: 'Ampere and Hopper GPUs', '16-bit and fp8', 'dense and MoE'."""
    if key == "generation":
        names = [GENERATION_WORDS.get(v, v.capitalize()) for v in values]
        return f"{' and '.join(names)} GPUs"
    return " and ".join(("MoE" if v else "dense") if key == "moe" else v for v in values)


def basis_words(target: dict, keys: tuple[str, ...], chosen: list[dict]) -> str:
    """What the figures rest on: a matched trait as the target's ('Hopper GPUs, fp8, MoE'), a dropped one as the
    values the chosen held-out runs have, saying so when the target's is none of them ('Blackwell GPUs, 16-bit, MoE
    (no dense run)'); with every trait dropped 'every published run', with the target's missing kinds ('every
    published run (no run on AMD GPUs)'). Matched on the stack: its name first ('llm-foundry FSDP, Hopper GPUs,
    16-bit, dense')."""
    held = [r for r in chosen if r["set"] == "held-out"] or list(chosen)
    parts, missing = [], []
    for key in MATCHED:
        if key in keys:
            parts.append(_words(key, [target[key]]))
            continue
        values = sorted({r[key] for r in held})
        absent = ""
        if target[key] not in values:
            kind = _words(key, [target[key]])
            absent = f"no run on {kind}" if key == "generation" else f"no {kind} run"
            missing.append(absent)
        parts.append(_words(key, values) + (f" ({absent})" if absent else ""))
    if not keys:
        return "every published run" + (f" ({'; '.join(missing)})" if missing else "")
    return ", ".join(([stacks.name(target["stack"])] if "stack" in keys else []) + parts)


def signed(errors: list[float]) -> dict:
    """Runs, median and mean signed error and how many runs were simulated fast (None when none)."""
    if not errors:
        return {"runs": 0, "median_error": None, "mean_error": None, "fast_runs": 0}
    values = np.asarray(errors, dtype=float)
    return {"runs": len(values), "median_error": float(np.median(values)), "mean_error": float(values.mean()),
            "fast_runs": int((values > 0).sum())}


def coverage(target: dict, runs: list[dict], calibrated: list[str], matched: bool) -> dict:
    """What the card says of the target's stack: its family and name, whether it has calibration runs (is in
    ``calibrated``), its runs per set in the snapshot, whether the basis is its runs (``matched``), and the signed
    figures of the held-out runs on stacks of the same standing (calibrated or not: in round 22's snapshot the
    uncalibrated stacks' held-out runs median +3.9%, 76 of 82 fast, the calibrated ones' -0.6%, 20 of 41)."""
    is_calibrated = target["stack"] in calibrated
    alike = [r["error"] for r in runs if r["set"] == "held-out" and (r["stack"] in calibrated) == is_calibrated]
    own = [r for r in runs if r["stack"] == target["stack"]]
    return {"family": target["stack"], "name": stacks.name(target["stack"]), "calibrated": is_calibrated,
            "calibration_runs": sum(r["set"] == "calibration" for r in own), "held_out_runs": _held(own),
            "matched": matched, "alike_stacks_held_out": signed(alike)}


def distance(a: dict, b: dict) -> float:
    """``nearest``'s distance between two runs' traits."""
    scale = math.log(NEAREST_FACTOR)
    return (sum(a[k] != b[k] for k in NEAREST_TRAITS) + abs(math.log(a["gpus"] / b["gpus"])) / scale
            + abs(math.log(a["gflop_per_token"] / b["gflop_per_token"])) / scale)


def nearest(target: dict, runs: list[dict], count: int = NEAREST) -> list[dict]:
    """The ``count`` runs closest to ``target`` (``distance``; ties by name), each with its set and error."""
    ranked = sorted(runs, key=lambda r: (distance(target, r), r["scenario"]))[:count]
    return [{"scenario": r["scenario"], "set": r["set"], "error": r["error"]} for r in ranked]


def card_of(target: dict, runs: list[dict], measured_on: str = "", calibrated: list[str] | None = None,
            match_stack: bool | None = None) -> dict:
    """The card of a scenario with ``target`` traits against the snapshot's ``runs``; ``calibrated``: the snapshot's
    calibrated stacks, None for a snapshot that does not record stacks (the card then ignores the stack:
    ``stack_calibrated`` and ``stack_coverage`` None); ``match_stack``: the basis rule, None for ``MATCH_STACK``."""
    by_stack = calibrated is not None
    keys, chosen = select(target, runs, by_stack and (MATCH_STACK if match_stack is None else match_stack))
    return {"basis": basis_words(target, keys, chosen), "matched_on": list(keys), "traits": target,
            "held_out": figures([r["error"] for r in chosen if r["set"] == "held-out"]),
            "calibration": figures([r["error"] for r in chosen if r["set"] == "calibration"]),
            "nearest": nearest(target, chosen), "measured_on": measured_on, "note": NOTE,
            "stack": target.get("stack"),
            "stack_calibrated": target["stack"] in calibrated if by_stack else None,
            "stack_coverage": coverage(target, runs, calibrated, "stack" in keys) if by_stack else None}


def card(scenario) -> dict:
    """The summary's ``accuracy``: ``card_of`` the scenario against data/accuracy.yaml (no simulation). A snapshot
    that cannot be read (``snapshot``) gives a card without figures whose ``unavailable`` says why: the run goes on."""
    target = traits(scenario)
    try:
        data = snapshot()
    except SnapshotError as exc:
        return {"basis": None, "matched_on": [], "traits": target, "held_out": figures([]),
                "calibration": figures([]), "nearest": [], "measured_on": "", "note": NOTE, "stack": target["stack"],
                "stack_calibrated": None, "stack_coverage": None, "unavailable": str(exc)}
    calibrated = data[CALIBRATED_STACKS] if knows_stacks(data) else None
    return card_of(target, data["runs"], data.get("measured_on", ""), calibrated)


def line(accuracy: dict) -> tuple[str, str]:
    """The run table's row from the held-out runs: ('expected error (19 held-out runs: Hopper GPUs, 16-bit, dense)',
    'median 8.5%, max 20.2%, 15 of 19 simulated too fast'); ('expected error', 'unknown: ...') without a snapshot."""
    if accuracy.get("unavailable"):
        return "expected error", f"unknown: {accuracy['unavailable']}"
    held = accuracy["held_out"]
    if not held["runs"]:  # a snapshot without held-out runs: nothing to quote
        return "expected error", "no held-out published run in data/accuracy.yaml"
    return (f"expected error ({held['runs']} held-out runs: {accuracy['basis']})",
            f"median {held['median_abs_error']:.1%}, max {held['max_abs_error']:.1%}, {held['fast_runs']} of "
            f"{held['runs']} simulated too fast")


def stack_words(accuracy: dict) -> str | None:
    """The card's words on the run's stack: 'llm-foundry FSDP (no calibration run on this stack; held-out runs on
    uncalibrated stacks: median +3.9%, 76 of 82 simulated too fast)', with '; the figures above are not only this
    stack's: it has 2 held-out runs, fewer than 3' when too few of its held-out runs are there to match on; None when
    the snapshot records no stacks."""
    c = accuracy.get("stack_coverage")
    if not c:
        return None
    alike = c["alike_stacks_held_out"]
    figures_text = (f"median {alike['median_error']:+.1%}, {alike['fast_runs']} of {alike['runs']} simulated too fast"
                    if alike["runs"] else "none")
    if c["calibrated"]:
        own = (f"{c['calibration_runs']} calibration run{'s' * (c['calibration_runs'] != 1)} on this stack; held-out "
               f"runs on calibrated stacks: {figures_text}")
    else:
        own = f"no calibration run on this stack; held-out runs on uncalibrated stacks: {figures_text}"
    widened = "" if c["matched"] else "; the figures above are not only this stack's"
    if not c["matched"] and c["held_out_runs"] < MIN_HELD_OUT_RUNS:
        widened += (f": it has {c['held_out_runs']} held-out run{'s' * (c['held_out_runs'] != 1)}, fewer than "
                    f"{MIN_HELD_OUT_RUNS}")
    return f"{c['name']} ({own}{widened})"


def lines(accuracy: dict) -> list[tuple[str, str]]:
    """The run table's rows: ``line``, then ('  stack', ``stack_words``) when the snapshot records stacks."""
    words = None if accuracy.get("unavailable") else stack_words(accuracy)
    return [line(accuracy)] + ([("  stack", words)] if words else [])
