"""Simulate every NeMo DGX H100 recipe layout of tests/data/nemo_recipe_layouts.yaml, contract keys only.

The rows are the file's ``layouts`` (published runs' layouts, the 25.02 csv's Mixtral rows with their ep / etp among
them) and ``recipe_defaults`` (NeMo 2.x's long-context and MoE recipes' own layouts at 1-4x their node count).

Each row is built exactly as tests/validation/test_nemo_recipe_layouts.py builds it (``expand``: cluster h100-sxm x 8
per node, connectx-7, rail-fat-tree; dp = gpus / (tp*pp*cp); the other framework options take simcluster's
defaults, as an outside scorer's scenario does) and simulated one at a time. Per row it prints the step time, model
TFLOP/s per GPU, MFU against the bf16 dense peak (whatever the precision), peak memory, the breakdown (compute,
exposed communication by parallelism, bubble) and, with ``--host``, the host/kernel-gap share: the step time lost to
the host model (efficiency.yaml host_overhead kernel_gap_s and pipeline_step_s), from a second run with both at 0.
Flags: ``refused`` (memory model), ``error``, ``timeout`` (over ``--timeout`` s of wall time), ``slow`` (over 30 s),
``mfu`` (bf16 MFU outside 25-60 %), ``fp8x`` (fp8/bf16 throughput of the same layout outside 1.1-1.7).
``--csv`` adds the csv's Nemotron-3 8B rows (``CSV_LAYOUTS``), the csv rows the layout file does not have. Long
sequences flag ``mfu`` by convention: MFU counts attention as non-causal (Narayanan et al. 2021), twice the
causal kernels' work, which at 64K-128K is most of the step.

    python scripts/recipe_sweep.py [--only PATTERN ...] [--csv] [--host] [--json OUT.json]
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import signal
import sys
import time
from pathlib import Path

from simcluster.core import script_entry
from simcluster.core.errors import ScenarioError
from simcluster.engine import simulate
from simcluster.spec import config
from simcluster.workload import kernels

ROOT = Path(__file__).resolve().parents[1]
LAYOUT_TEST = ROOT / "tests" / "validation" / "test_nemo_recipe_layouts.py"
MFU_RANGE = (0.25, 0.60)     # plausible bf16 dense MFU of a NeMo H100 recipe (the brief's band)
FP8_RANGE = (1.1, 1.7)       # plausible fp8 / bf16 throughput of one layout (the brief's band)
SLOW_S = 30.0
# The csv's Nemotron-3 8B pre_train rows (same commit), which the layout file leaves out (no preset before round 18):
# the layout, micro batch and batch per precision as the file states them; the model as its model + size columns
# name it. Every other dense pre_train row of the csv is in the layout file (source nemo-2502-h100-csv).
CSV_LAYOUTS = [
    {"name": "nemo2502-nemotron3-8b", "model": "nemotron3-8b", "precision": "bf16", "gpus": 8, "seq": 4096, "tp": 2,
     "pp": 1, "cp": 1, "vp": 1, "mbs": 2, "gbs": 32},
    {"name": "nemo2502-nemotron3-8b", "model": "nemotron3-8b", "precision": "fp8", "gpus": 64, "seq": 4096, "tp": 2,
     "pp": 1, "cp": 1, "vp": 1, "mbs": 4, "gbs": 256},
]


class Timeout(TimeoutError):
    """A row took longer than --timeout seconds of wall time."""


def layout_test():
    """tests/validation/test_nemo_recipe_layouts.py as a module: its rows and ``scenario_dict`` (one definition)."""
    spec = importlib.util.spec_from_file_location("nemo_recipe_layouts", LAYOUT_TEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def layouts() -> list[tuple[str, dict, dict]]:
    """(name, scenario dict, row) of every recipe row, from the layout test's own ``expand``."""
    return layout_test().LAYOUTS


def csv_row(row: dict, precision: str) -> tuple[str, dict, dict]:
    """(name, scenario dict, row) of one row of the recommended-configs csv, built as the layout file's rows are."""
    data = layout_test().scenario_dict({**row, "recompute": "none"}, row["gpus"], row["gbs"], precision)
    return data["name"], data, row


def csv_layouts() -> list[tuple[str, dict, dict]]:
    """(name, scenario dict, row) of ``CSV_LAYOUTS``: the csv's rows the layout file lacks."""
    return [csv_row(row, row["precision"]) for row in CSV_LAYOUTS]


@contextlib.contextmanager
def time_limit(seconds: float):
    def expire(_signum, _frame):
        raise Timeout
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


HOST_OVERHEADS = ("kernel_gap_s", "pipeline_step_s")   # the fitted host terms (efficiency.yaml host_overhead)


@contextlib.contextmanager
def without_host_overheads(fields: tuple[str, ...] = HOST_OVERHEADS):
    """The host model with ``fields`` at 0; by default no kernel gap and no pipeline-step time (what-if: the GPU
    never waits on the host)."""
    original = kernels.host_model
    kernels.host_model = lambda: dataclasses.replace(original(), **dict.fromkeys(fields, 0.0))
    try:
        yield
    finally:
        kernels.host_model = original


def run_row(name: str, data: dict, timeout: float, host: bool) -> dict:
    """One row's numbers and flags."""
    out: dict = {"name": name, "model": data["model"] if isinstance(data["model"], str) else "inline",
                 "precision": data["training"]["precision"], "gpus": data["cluster"]["nodes"] * 8,
                 "layout": "tp{tp} pp{pp} cp{cp} dp{dp} vp{virtual_stages}".format(**data["parallelism"])
                 + (f" ep{data['parallelism']['ep']}" if data["parallelism"].get("ep", 1) > 1 else "")
                 + f" mbs{data['training']['micro_batch_size']} gbs{data['training']['global_batch_size']}",
                 "flags": []}
    try:
        scenario = config.from_dict(data)
    except ScenarioError as err:  # an unknown model name, an impossible layout: reported, the sweep goes on
        out["flags"].append("invalid")
        out["error"] = str(err)
        return out
    started, cpu = time.perf_counter(), time.process_time()
    try:
        with time_limit(timeout):
            try:
                result = simulate(scenario)
            except ScenarioError as err:  # the memory model refuses it: report it and simulate it anyway
                out["flags"].append("refused")
                out["refusal"] = str(err)
                result = simulate(scenario, check_memory=False)
    except Timeout:
        out["flags"].append("timeout")
        return out
    except Exception as err:  # noqa: BLE001 - a sweep reports every failure and goes on
        out["flags"].append("error")
        out["error"] = f"{type(err).__name__}: {err}"
        return out
    out["wall_s"], out["cpu_s"] = time.perf_counter() - started, time.process_time() - cpu
    if out["wall_s"] > SLOW_S:
        out["flags"].append("slow")
    s = result.summary
    bf16_peak = scenario.cluster.gpu.peak_flop_per_s("bf16")
    out.update(step_s=s["step_time_s"], tflops=s["model_tflops_per_gpu"],
               mfu_bf16=s["model_tflops_per_gpu"] * 1e12 / bf16_peak, mem_gib=s["peak_memory_per_gpu_bytes"] / 2**30,
               compute_s=s["compute_s"], exposed_s=s["exposed_comm_by_parallelism_s"],
               bubble_s=s["pipeline_bubble_s"], microbatches=s["microbatches"])
    if out["precision"] == "bf16" and not MFU_RANGE[0] <= out["mfu_bf16"] <= MFU_RANGE[1]:
        out["flags"].append("mfu")
    if host:
        with time_limit(timeout), without_host_overheads():
            bare = simulate(scenario, check_memory=False).summary["step_time_s"]
        out["host_s"] = s["step_time_s"] - bare
    return out


def fp8_ratios(rows: list[dict]) -> None:
    """Attach each fp8 row's throughput over its bf16 twin (same name, same layout) and flag it outside FP8_RANGE."""
    by_name = {row["name"]: row for row in rows}
    for row in rows:
        twin = by_name.get(row["name"].removesuffix("-fp8") + "-bf16") if row["name"].endswith("-fp8") else None
        if twin and "step_s" in row and "step_s" in twin:
            row["fp8x"] = twin["step_s"] / row["step_s"]
            if not FP8_RANGE[0] <= row["fp8x"] <= FP8_RANGE[1]:
                row["flags"].append("fp8x")


def line(row: dict) -> str:
    if "step_s" not in row:
        return (f"{row['name']:42} {row['precision']:4} {row['gpus']:5} {row['layout']:36} {','.join(row['flags'])}"
                + (f" ({row['error']})" if "error" in row else ""))
    exposed = " ".join(f"{k}={v:.2f}" for k, v in row["exposed_s"].items() if v > 5e-4)
    host = f" host={row['host_s']:.2f}" if "host_s" in row else ""
    ratio = f" x{row['fp8x']:.2f}" if "fp8x" in row else ""
    return (f"{row['name']:42} {row['precision']:4} {row['gpus']:5} {row['layout']:36} {row['step_s']:8.3f} "
            f"{row['tflops']:6.1f} {row['mfu_bf16']:6.1%} {row['mem_gib']:5.1f} | comp={row['compute_s']:.2f} "
            f"bub={row['bubble_s']:.2f} {exposed}{host}{ratio} | {row['cpu_s']:.1f}s {','.join(row['flags'])}")


def main(argv: list[str] | None = None) -> int:
    parser = script_entry.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=[], help="parts of row names to run (default: all)")
    parser.add_argument("--csv", action="store_true", help="also the rows of NeMo 25.02's H100 csv the layout "
                        "file lacks (CSV_LAYOUTS)")
    parser.add_argument("--host", action="store_true", help="also measure the host/kernel-gap share (2 runs)")
    parser.add_argument("--timeout", type=float, default=120.0, help="wall seconds per row before it is skipped")
    parser.add_argument("--json", type=Path, help="write the rows to this JSON file")
    args = parser.parse_args(argv)
    rows = []
    extra = csv_layouts() if args.csv else []
    for name, data, _row in layouts() + extra:
        if args.only and not any(pattern in name for pattern in args.only):
            continue
        rows.append(run_row(name, data, args.timeout, args.host))
        print(line(rows[-1]), flush=True)
    fp8_ratios(rows)
    print("\nfp8 / bf16 throughput of the same layout:")
    for row in rows:
        if "fp8x" in row:
            print(f"  {row['name']:42} {row['fp8x']:.2f} {'fp8x' if 'fp8x' in row['flags'] else ''}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
