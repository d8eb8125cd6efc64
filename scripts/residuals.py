"""What the simulation's remaining error follows (issue 15; docs/calibration/round-17.md "Round 17: what the residual
follows").

    PYTHONPATH=. python scripts/residuals.py VALIDATE.json HELD_OUT.json [--cache /tmp/residuals.json]
                                             [--csv residuals.csv] [--plot docs/img/residuals.png]

The two JSON files are ``simcluster validate --json`` and ``simcluster validate --held-out --json`` outputs: the
error of each row (simulated / published throughput - 1) is read from them, never recomputed. Each row's bundled
scenario is simulated once (``engine.simulation.Simulation``; results cached in ``--cache`` by name, so a rerun
simulates nothing) for its features (``features``):

- the critical path the fitted constants act on, as ``scripts/fit_host_overheads.py`` linearises it: c = m v + pp - 1
  blocks of each phase (m microbatches, v chunks a stage), ``crit_kernels`` = c x the chunks' mean kernels of a
  forward plus a backward block, ``crit_blocks`` = 2c; the fitted terms on it (``gap_ms``: the gaps of crit_blocks
  blocks as the simulator charges them, ``StreamTime.gaps_s``: the fitted gap a kernel but the queued no-work
  launches; ``pipe_ms``: crit_blocks x the pipeline step when pp > 1);
- per block: device time, kernels, mean kernel duration, model FLOP;
- one dense layer's op classes on one rank (``fp8_pairs.layer_breakdown``): GEMM, attention and memory-bound shares
  of its device time (NaN for MoE models, whose layer is not the dense one);
- the engine's step: compute, bubble, interference and exposed communication per parallelism, as shares of the step;
- the layout and workload: GPU, precision, stack, tp, pp, vp, cp, dp, ep, micro batch, microbatches, tokens a
  microbatch, hidden, layers, sequence, GPUs.

From each row's error: ``missing_ms`` = published - simulated step (positive: the simulation lacks time, the error's
sign), and what the fitted constants would need to change by to zero the row alone: ``gap_us_needed`` =
missing / crit_kernels, ``pipe_us_needed`` = missing / crit_blocks (a constant absorbs a residual only if that value is
the same on every row).

Analysis (``analyse``): Spearman rank correlation of the error with every numeric feature, on the calibration and the
held-out rows separately; one- and two-feature least-squares fits of the error on standardised features made on the
calibration rows ONLY and scored on the held-out rows (median |error| after subtracting the fitted prediction; nothing
is written back to the model); and the families whose rows share their per-GPU work (the same kernels and blocks a
step) but not their error, which no per-kernel or per-block constant can separate (``SAME_WORK``).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
from accuracy_tables import InputError, load_cases
from fp8_pairs import layer_breakdown

from simcluster.cli.outputs import check_writable
from simcluster.core import inputs as inputs_module
from simcluster.core import outputs, script_entry
from simcluster.core.errors import ScenarioError
from simcluster.engine.simulation import Simulation
from simcluster.spec import config
from simcluster.workload import kernels

# The software stack of each validation source (data/validation.yaml ``sources``): which framework ran the row.
STACK = {
    "megatron_core_h100_2024": "megatron-core", "megatron_core_h100_2024_strong": "megatron-core",
    "narayanan2021": "megatron-lm-2021", "megatron_a100_2021": "megatron-lm-2021",
    "megatron_readme_gpt3_a100": "megatron-lm-2021", "korthikanti2022": "megatron-lm-2022",
    "llmfoundry": "llm-foundry-fsdp", "nemo_2407": "nemo", "nemo_2509": "nemo", "nemo_2511": "nemo",
    "nemo_dgx_h100_2024": "nemo", "llama3_2024": "meta-llama3", "smith2022": "deepspeed-megatron",
    "bigscience_bloom": "deepspeed-megatron", "torchtitan_2412": "torchtitan", "nemotron4": "nemo",
    "megatron_moe_zoo_qwen3": "megatron-core", "megatron_moe_zoo_mixtral": "megatron-core",
    "megatron_core_moe_readme": "megatron-core",
}
# features written to the CSV and ranked (numeric); the categorical ones are grouped instead (``CATEGORIES``)
NUMERIC = ("gpus", "tp", "pp", "vp", "cp", "dp", "ep", "micro_batch", "microbatches", "tokens_per_microbatch",
           "hidden", "layers", "seq_len", "fp8", "moe", "step_s", "crit_blocks", "crit_kernels", "kernels_per_block",
           "device_ms_per_block", "mean_kernel_us", "gflop_per_block", "gap_share", "pipe_share",
           "gemm_share", "attention_share", "memory_share", "compute_share", "bubble_share", "interference_share",
           "exposed_share", "exposed_tp_share", "exposed_cp_share", "exposed_pp_share", "exposed_dp_share",
           "exposed_ep_share", "dp_nodes")
CATEGORIES = ("gpu", "precision", "stack", "set")
# families whose rows run the same per-GPU work a step (same model, layout per GPU, micro batch and microbatches; only
# the data-parallel width, hence the GPU count, differs): a per-kernel or per-block constant moves them alike.
# ``same_work`` keeps only the rows whose critical path has the first row's kernels and device time.
SAME_WORK = {
    "NeMo GPT-3 175B, 128-2048 H100 (cal)": ("nemo2409-gpt3-175b-", "-h100-bf16"),
    "NeMo Llama 3.1 8B, 8-128 H100 (cal)": ("nemo2409-llama31-8b-", "-h100-bf16"),
    "Nemotron-4 15B, 768-2304 H100": ("nemotron4-15b-", "-h100"),
    "Nemotron-4 340B, 1536-3072 H100": ("nemotron4-340b-", "-h100"),
    "MT-NLG 530B, 280-420 nodes": ("smith2022-mtnlg-530b-", "-a100"),
    "MPT 13B, 8-64 H100": ("mpt-13b-", "-h100"),
}


def _row_features(scenario, sim: Simulation, summary: dict) -> dict:
    """The features of one simulated scenario (see the module doc)."""
    plan = sim.plan
    p, t, m = scenario.parallelism, scenario.training, scenario.model
    host = kernels.host_model()
    pp = plan.layout.pp
    v = plan.chunk_count // pp
    mb = plan.microbatches
    critical = mb * v + pp - 1
    chunks = plan.chunks
    kernels_block = float(np.mean([c.forward_stream.kernels + c.backward_stream.kernels for c in chunks])) / 2
    device_block = float(np.mean([c.forward_stream.device_s + c.backward_stream.device_s for c in chunks])) / 2
    flop_block = float(np.mean([c.forward_flop + c.backward_flop for c in chunks])) / 2
    step = float(summary["step_time_s"])
    crit_kernels = 2 * critical * kernels_block
    crit_blocks = 2 * critical
    # the gaps as the simulator charges them (StreamTime.gaps_s: queued no-work launches, graphs; round-32 review)
    gap_s = crit_blocks * float(np.mean([c.forward_stream.gaps_s(host) + c.backward_stream.gaps_s(host)
                                         for c in chunks])) / 2
    pipe_s = crit_blocks * host.pipeline_step_s if pp > 1 else 0.0
    out = {
        "gpu": scenario.cluster.gpu.name, "precision": t.precision, "gpus": scenario.cluster.gpus,
        "tp": p.tp, "pp": pp, "vp": v, "cp": p.cp, "dp": plan.layout.dp, "ep": p.ep, "micro_batch": t.micro_batch_size,
        "microbatches": mb, "tokens_per_microbatch": t.seq_len * t.micro_batch_size / p.cp, "hidden": m.hidden,
        "layers": m.layers, "seq_len": t.seq_len, "fp8": float(t.precision == "fp8"), "moe": float(m.moe is not None),
        "step_s": step, "crit_blocks": crit_blocks, "crit_kernels": crit_kernels, "kernels_per_block": kernels_block,
        "device_ms_per_block": device_block * 1e3, "mean_kernel_us": device_block / kernels_block * 1e6,
        "gflop_per_block": flop_block / 1e9, "gap_ms": gap_s * 1e3, "pipe_ms": pipe_s * 1e3,
        "gap_share": gap_s / step, "pipe_share": pipe_s / step,
        "compute_share": float(summary["compute_s"]) / step,
        "bubble_share": float(summary["pipeline_bubble_s"]) / step,
        "interference_share": float(summary["comm_interference_s"]) / step,
        "exposed_share": float(summary["exposed_comm_s"]) / step,
        "dp_nodes": plan.layout.dp / max(1, scenario.cluster.gpus_per_node // (p.tp * p.cp)),
    }
    for axis, seconds in summary["exposed_comm_by_parallelism_s"].items():
        out[f"exposed_{axis}_share"] = float(seconds) / step
    out.update(op_shares(scenario))
    return out


def op_shares(scenario) -> dict[str, float]:
    """GEMM, attention and memory-bound (casts included) shares of one dense layer's device time on one rank
    (``fp8_pairs.layer_breakdown``, the kernel model the plan runs); NaN for an MoE model (its layer differs)."""
    if scenario.model.moe is not None:
        return {"gemm_share": math.nan, "attention_share": math.nan, "memory_share": math.nan}
    layer = layer_breakdown(scenario)
    device = {k: v for k, v in layer.items() if k not in ("layer", "kernel gaps", "tensor-core fill")}
    total = sum(device.values())
    gemm = sum(v for k, v in device.items() if k.startswith("GEMM"))
    attention = sum(v for k, v in device.items() if k.startswith("attention"))
    return {"gemm_share": gemm / total, "attention_share": attention / total,
            "memory_share": (total - gemm - attention) / total}


def features(name: str) -> dict:
    """Simulate the bundled scenario ``name`` once (without the memory check: features only) and return its
    features."""
    scenario = config.load(name)
    sim = Simulation(scenario, check_memory=False)
    summary = sim.run(None).summary
    return _row_features(scenario, sim, summary)


def refuse_overwriting(inputs: tuple[Path, ...], **outputs: Path | None) -> None:
    """One line (ScenarioError naming the option) when an output of a residual script (``--cache``, ``--csv``,
    ``--plot``) is one of its ``inputs``: ``--cache`` on a validate output rewrote it with the cache (round 31); or
    when it is a folder or its folder cannot be written (round 32: found at the first write, after a simulation)."""
    for option, path in outputs.items():
        if path is not None:
            if path.is_dir():
                raise ScenarioError(f"--{option}", f"{str(path)!r} is a folder: give a file's path")
            check_writable(path.parent, f"--{option}")
        for given in inputs:
            if path is not None and path.exists() and given.exists() and path.samefile(given):
                raise ScenarioError(f"--{option}", f"{str(path)!r} is the input {str(given)!r}: writing it would "
                                    "overwrite the validate output; give another path")


def read_cache(cache: Path, inputs: tuple[Path, ...]) -> dict:
    """The feature cache of a residual script (residuals, error_features, heldout_residuals, step_shares): {} when
    absent. Refused in one line when it is one of the ``inputs`` (``refuse_overwriting``) or holds no JSON object
    (a corrupt or foreign file: a traceback before round 31, and overwritten by the first row simulated)."""
    refuse_overwriting(inputs, cache=cache)
    if not cache.exists():
        return {}
    cached = inputs_module.load_json(cache, what="feature cache")
    if not isinstance(cached, dict):
        raise ScenarioError("--cache", f"{str(cache)!r} is not a feature cache (a JSON object): remove it or give "
                            "another path")
    return cached


# What ``load_rows`` reads of each validate --json case.
CASE_FIELDS = {"scenario": str, "source": str, "family": str, "error": (int, float), "step_time_s": (int, float)}


def load_rows(validate_json: Path, held_out_json: Path, cache: Path) -> list[dict]:
    """Every row of the two validate outputs with its error, published step and features (simulated once per
    scenario, cached in ``cache``)."""
    cached = read_cache(cache, (validate_json, held_out_json))
    rows = []
    for label, path in (("cal", validate_json), ("ho", held_out_json)):
        for case in json.loads(path.read_text())["cases"]:
            name = case["scenario"]
            if name not in cached:
                print(f"simulating {name}", file=sys.stderr, flush=True)
                cached[name] = features(name)
                outputs.write_text(cache, json.dumps(cached))  # atomic: a Ctrl-C leaves the last whole cache
            row = {"scenario": name, "set": label, "family": case["family"], "source": case["source"],
                   "stack": STACK.get(case["source"], "other"), "error": case["error"], **cached[name]}
            if abs(row["step_s"] - case["step_time_s"]) > 1e-6 * case["step_time_s"]:
                print(f"warning: {name} simulates {row['step_s']:.4f} s, the JSON says {case['step_time_s']:.4f} s "
                      "(a different model version)", file=sys.stderr)
            sim_step = case["step_time_s"]
            published = sim_step * (1.0 + case["error"])   # error = published step / simulated step - 1
            row["published_s"] = published
            row["missing_ms"] = (published - sim_step) * 1e3
            row["gap_us_needed"] = row["missing_ms"] * 1e3 / row["crit_kernels"]
            row["pipe_us_needed"] = row["missing_ms"] * 1e3 / row["crit_blocks"]
            rows.append(row)
    return rows


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties averaged (Spearman's convention)."""
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    for value in np.unique(x):
        tied = x == value
        r[tied] = r[tied].mean()
    return r


def spearman(x, y) -> float:
    """Spearman's rank correlation of the finite pairs (NaN with fewer than 5 or a constant side)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 5 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return math.nan
    return float(np.corrcoef(ranks(x[keep]), ranks(y[keep]))[0, 1])


def column(rows: list[dict], key: str) -> np.ndarray:
    return np.array([float(r.get(key, math.nan)) for r in rows])


SUBSETS = {"cal": lambda r: r["set"] == "cal", "ho": lambda r: r["set"] == "ho",
           "dense H100 (cal+ho)": lambda r: r["gpu"] == "h100-sxm" and not r["moe"],
           "NeMo dense H100": lambda r: r["gpu"] == "h100-sxm" and not r["moe"] and r["stack"] == "nemo"}


def correlations(rows: list[dict]) -> list[tuple[str, dict[str, float]]]:
    """Spearman's rho of the error with each numeric feature per subset (``SUBSETS``), strongest held-out first."""
    out = []
    for key in NUMERIC:
        out.append((key, {label: spearman(column([r for r in rows if keep(r)], key),
                                          column([r for r in rows if keep(r)], "error"))
                          for label, keep in SUBSETS.items()}))
    return sorted(out, key=lambda kv: -abs(np.nan_to_num(kv[1]["ho"])))


def fit_on_calibration(rows: list[dict], keys: tuple[str, ...]) -> dict:
    """Least squares error ~ a + sum b_k z_k (z: the feature standardised on the calibration rows), fitted on the
    calibration rows only; scored on both sets as the median |error - prediction| (rows whose feature is NaN keep
    their error). Returns the coefficients and the scores."""
    cal = [r for r in rows if r["set"] == "cal"]
    x_cal = np.column_stack([column(cal, k) for k in keys])
    mean, std = np.nanmean(x_cal, axis=0), np.nanstd(x_cal, axis=0)
    std[std == 0] = 1.0
    keep = np.all(np.isfinite(x_cal), axis=1)
    design = np.column_stack([np.ones(keep.sum()), (x_cal[keep] - mean) / std])
    coef, *_ = np.linalg.lstsq(design, column(cal, "error")[keep], rcond=None)
    scores = {}
    for label in ("cal", "ho"):
        part = [r for r in rows if r["set"] == label]
        x = (np.column_stack([column(part, k) for k in keys]) - mean) / std
        prediction = coef[0] + x @ coef[1:]
        error = column(part, "error")
        after = np.where(np.isfinite(prediction), error - prediction, error)
        scores[label] = (float(np.median(np.abs(error))), float(np.median(np.abs(after))),
                         float(np.max(np.abs(after))))
    return {"keys": keys, "coef": coef, "scores": scores}


# the fitted constants' structures and one more per-block or per-step term, each a column of seconds a step per
# unit (``structure_fits``): a constant absorbs the residual only if its fit on the calibration rows helps the held-out
STRUCTURES = {
    "per kernel": ("crit_kernels",),
    "per device second": ("crit_device_s",),
    "per pipeline block": ("crit_pipe_blocks",),
    "per kernel + per device second": ("crit_kernels", "crit_device_s"),
    "per kernel + per pipeline block": ("crit_kernels", "crit_pipe_blocks"),
    "all three": ("crit_kernels", "crit_device_s", "crit_pipe_blocks"),
    "per kernel + per bubble second": ("crit_kernels", "bubble_s"),
}


def structure_fits(rows: list[dict]) -> list[tuple[str, np.ndarray, dict]]:
    """For each of ``STRUCTURES``: the change of its constants (s per unit) that best zeroes the calibration rows'
    relative errors (least squares on (missing - sum x_k u_k) / published step, linear in the step as
    ``scripts/fit_host_overheads.py`` estimates it), and the median and max |error| on both sets with that change
    (error = published / (simulated + sum x_k u_k) - 1). Nothing is fitted to held-out rows."""
    def units(row, keys):
        derived = {"crit_device_s": row["crit_blocks"] * row["device_ms_per_block"] / 1e3,
                   "crit_pipe_blocks": row["crit_blocks"] if row["pp"] > 1 else 0.0,
                   "bubble_s": row["bubble_share"] * row["step_s"]}
        return np.array([derived.get(k, row.get(k)) for k in keys], dtype=float)

    out = []
    cal = [r for r in rows if r["set"] == "cal"]
    for label, keys in STRUCTURES.items():
        published = column(cal, "published_s")
        design = np.array([units(r, keys) for r in cal]) / published[:, None]
        x, *_ = np.linalg.lstsq(design, column(cal, "missing_ms") / 1e3 / published, rcond=None)
        scores = {}
        for name in ("cal", "ho"):
            part = [r for r in rows if r["set"] == name]
            step = column(part, "step_s") + np.array([units(r, keys) for r in part]) @ x
            error = column(part, "published_s") / step - 1.0
            scores[name] = (float(np.median(np.abs(error))), float(np.max(np.abs(error))))
        out.append((label, x, scores))
    return out


def nemo_h100_families(rows: list[dict]) -> list[tuple[str, float, float]]:
    """The NeMo dense H100 rows with each ``SAME_WORK`` family folded into one point (so that a family of five near
    identical rows counts once): (name, mean kernel duration in us, mean error), by kernel duration."""
    points: dict[str, list[dict]] = {}
    for r in rows:
        if r["gpu"] == "h100-sxm" and not r["moe"] and r["stack"] == "nemo":
            family = next((label for label, (head, tail) in SAME_WORK.items()
                           if r["scenario"].startswith(head) and r["scenario"].endswith(tail)), r["scenario"])
            points.setdefault(family, []).append(r)
    return sorted(((name, float(np.mean(column(group, "mean_kernel_us"))), float(np.mean(column(group, "error"))))
                   for name, group in points.items()), key=lambda p: p[1])


def same_work(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    """The ``SAME_WORK`` families present, rows by GPU count."""
    out = []
    for label, prefix in SAME_WORK.items():
        family = sorted((r for r in rows if r["scenario"].startswith(prefix[0]) and r["scenario"].endswith(prefix[1])),
                        key=lambda r: r["gpus"])
        family = [r for r in family if family and math.isclose(r["crit_kernels"], family[0]["crit_kernels"])
                  and math.isclose(r["device_ms_per_block"], family[0]["device_ms_per_block"])]
        if len(family) > 1:
            out.append((label, family))
    return out


CSV_KEYS = ("scenario", "set", "stack", "gpu", "precision", "error", "missing_ms", "published_s", "step_s",
            "gap_ms", "pipe_ms", "gap_us_needed", "pipe_us_needed", *[k for k in NUMERIC if k != "step_s"])


def write_csv(rows: list[dict], path: Path, keys: tuple[str, ...] = CSV_KEYS) -> None:
    def cell(value) -> str:
        return f"{value:.6g}" if isinstance(value, float) else str(value)
    lines = [",".join(keys)] + [",".join(cell(r.get(k, "")) for k in keys) for r in rows]
    path.write_text("\n".join(lines) + "\n")


# the plot's panels: (feature, axis label, log x)
PANELS = (("mean_kernel_us", "mean kernel duration (us)", True),
          ("gap_share", "fitted kernel gaps / step", False),
          ("bubble_share", "simulated pipeline bubble / step", False),
          ("exposed_dp_share", "exposed DP communication / step", False),
          ("gpus", "GPUs", True),
          ("micro_batch", "micro batch", True))


def plot(rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    stacks = sorted({r["stack"] for r in rows})
    colours = {s: f"C{i % 10}" for i, s in enumerate(stacks)}
    fig = Figure(figsize=(13, 8), layout="constrained")
    axes = fig.subplots(2, 3)
    for ax, (key, label, log) in zip(axes.flat, PANELS, strict=True):
        for r in rows:
            marker = "o" if r["set"] == "cal" else ("^" if r["moe"] else "s")
            ax.scatter(r[key], 100 * r["error"], s=28, marker=marker, color=colours[r["stack"]],
                       facecolors=colours[r["stack"]] if r["set"] == "cal" else "none", linewidths=1.1)
        rho_cal = spearman(column([r for r in rows if r["set"] == "cal"], key),
                           column([r for r in rows if r["set"] == "cal"], "error"))
        rho_ho = spearman(column([r for r in rows if r["set"] == "ho"], key),
                          column([r for r in rows if r["set"] == "ho"], "error"))
        note = " (lines: same per-GPU work)" if key == "gpus" else ""
        ax.set_title(f"{label}{note}\nSpearman: calibration {rho_cal:+.2f}, held-out {rho_ho:+.2f}", fontsize=9)
        ax.axhline(0, color="0.5", lw=0.8)
        for bound in (-10, 10):
            ax.axhline(bound, color="0.8", lw=0.6, ls="--")
        if key == "gpus":   # the same-work families: what no per-kernel or per-block constant can move apart
            for _label, family in same_work(rows):
                ax.plot([r["gpus"] for r in family], [100 * r["error"] for r in family], color="0.4", lw=0.8)
        if log:
            ax.set_xscale("log")
        ax.set_ylabel("error (%): + simulated fast")
    handles = [axes.flat[0].scatter([], [], color=colours[s], label=s) for s in stacks]
    handles += [axes.flat[0].scatter([], [], marker=m, facecolors="none", edgecolors="k", label=lab)
                for m, lab in (("s", "held-out dense"), ("^", "held-out MoE"))]
    handles.append(axes.flat[0].scatter([], [], marker="o", color="k", label="calibration (filled)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=6, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def report(rows: list[dict]) -> list[str]:
    lines = ["Spearman rho of the error with each feature (strongest on held-out first):",
             f"  {'feature':<26}" + "".join(f"{label:>22}" for label in SUBSETS)]
    for key, rho in correlations(rows):
        lines.append(f"  {key:<26}" + "".join(f"{rho[label]:>+22.2f}" for label in SUBSETS))
    lines.append("Fits on calibration only (error ~ a + b z): median |error| cal before->after (max after), "
                 "held-out before->after (max after):")
    fits = [fit_on_calibration(rows, (key,)) for key in NUMERIC]
    fits += [fit_on_calibration(rows, pair) for pair in (("gap_share", "pipe_share"), ("mean_kernel_us", "gpus"),
                                                          ("gap_share", "exposed_dp_share"), ("fp8", "pipe_share"),
                                                          ("gpus", "pipe_share"), ("tokens_per_microbatch", "gpus"))]
    for result in sorted(fits, key=lambda f: f["scores"]["ho"][1]):
        (c0, c1, cmax), (h0, h1, hmax) = result["scores"]["cal"], result["scores"]["ho"]
        coef = " ".join(f"{b:+.3f}" for b in result["coef"][1:])
        lines.append(f"  {'+'.join(result['keys']):<34} b {coef:<14} cal {c0:.1%}->{c1:.1%} ({cmax:.1%})  "
                     f"ho {h0:.1%}->{h1:.1%} ({hmax:.1%})")
    lines.append("Structures refitted on calibration only (change of each constant; median / max |error| after):")
    for label, x, scores in structure_fits(rows):
        lines.append(f"  {label:<34} x {' '.join(f'{v * 1e6:+.1f}us' if abs(v) < 1e-3 else f'{v:+.4f}' for v in x):<22}"
                     f" cal {scores['cal'][0]:.1%} / {scores['cal'][1]:.1%}  ho {scores['ho'][0]:.1%} / "
                     f"{scores['ho'][1]:.1%}")
    lines.append("Pipelined rows: missing time against the simulated pipeline bubble:")
    for r in sorted((r for r in rows if r["pp"] > 1 and r["bubble_share"] > 0), key=lambda r: r["stack"]):
        bubble_ms = r["bubble_share"] * r["step_s"] * 1e3
        lines.append(f"  {r['set']:<3} {r['scenario']:<44} {r['stack']:<19} {r['error']:+7.1%} missing "
                     f"{r['missing_ms']:+9.0f} ms bubble {bubble_ms:8.0f} ms ratio {r['missing_ms'] / bubble_ms:+.2f}")
    families = nemo_h100_families(rows)
    lines.append("NeMo dense H100, one point per family (mean kernel duration, mean error): " + ", ".join(
        f"{name} {kernel:.0f} us {error:+.1%}" for name, kernel, error in families)
        + f"; Spearman {spearman([f[1] for f in families], [f[2] for f in families]):+.2f}")
    lines.append("Rows of the same per-GPU work a step (a per-kernel or per-block constant moves them alike):")
    for label, family in same_work(rows):
        lines.append(f"  {label}: " + ", ".join(
            f"{r['gpus']} GPUs {r['error']:+.1%} ({r['missing_ms']:+.0f} ms, gap {r['gap_us_needed']:+.1f} us)"
            for r in family))
    lines.append("Rows: error, missing ms a step (published - simulated), and the change to zero it alone in the "
                 "per-kernel gap (us) or in the pipeline step (us):")
    for r in sorted(rows, key=lambda r: r["error"]):
        pipe = f"{r['pipe_us_needed']:+8.0f}" if r["pp"] > 1 else f"{'-':>8}"
        lines.append(f"  {r['set']:<3} {r['scenario']:<44} {r['error']:+7.1%} {r['missing_ms']:+9.1f} ms "
                     f"gap {r['gap_us_needed']:+7.1f} pipe {pipe}  kernel {r['mean_kernel_us']:6.0f} us "
                     f"gapshare {r['gap_share']:.2f} pipeshare {r['pipe_share']:.2f} dp {r['exposed_dp_share']:.3f}")
    return lines


def main(argv: list[str]) -> int:
    parser = script_entry.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("validate_json", type=Path)
    parser.add_argument("held_out_json", type=Path)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/residuals_cache.json"))
    parser.add_argument("--csv", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        for path in (args.validate_json, args.held_out_json):  # both, before simulating (round 32: the second
            load_cases(path, CASE_FIELDS)                      # file's JSON error came after every first row)
        refuse_overwriting((args.validate_json, args.held_out_json), csv=args.csv, plot=args.plot)
        rows = load_rows(args.validate_json, args.held_out_json, args.cache)
    except (InputError, ScenarioError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(report(rows)))
    if args.csv:
        write_csv(rows, args.csv)
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
