"""The example outputs and figures that README.md and docs/tutorial.md quote, produced by the code they describe.

Each quoted block sits between ``<!-- docs-numbers: NAME -->`` and ``<!-- /docs-numbers -->`` in its page and is made
by the function of ``BLOCKS`` named NAME, which runs the command the page shows (in process, as a user would):

    python scripts/docs_numbers.py            # check: exit 1 and name each block whose numbers drifted
    python scripts/docs_numbers.py --write    # rewrite the blocks from a fresh run
    python scripts/docs_numbers.py --write tutorial-moe   # one block

Figures the pages quote from the data files (peak FLOP/s, link and NIC rates, efficiency factors, reliability and
variability defaults: ``DATA_FIGURES``) are checked too, each sentence as its page writes it against the value in
``simcluster/data``; a mismatch is fixed by hand (``--write`` does not touch them).

A block drifts when its words change or one of its numbers moves by more than 1% or one unit of its last printed
digit (the page rounds); tests/unit/test_docs_numbers.py runs the check. Each command runs once per process.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import json
import re
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- docs-numbers: {name} -->"
END = "<!-- /docs-numbers -->"
TOLERANCE = 0.01  # relative; the page rounds to 3-4 digits, and the issue found a drift of 20%
WRAP = 116        # the tutorial wraps the verdict paragraph here


@functools.cache
def _run(*args: str) -> tuple[str, Path]:
    """``simcluster ARGS --out TMP`` in process: (what it printed, its output folder)."""
    from simcluster.cli import main

    root = Path(tempfile.mkdtemp(prefix="docs-numbers-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)  # read while the process lives (cached), then gone
    out_dir = root / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        code = main([*args, "--out", str(out_dir)])
    if code != 0:
        raise RuntimeError(f"simcluster {' '.join(args)} exited with {code}")
    return stdout.getvalue(), out_dir


def _compare(*args: str) -> tuple[str, dict]:
    printed, out_dir = _run("compare", *args)
    return printed, json.loads((out_dir / "compare.json").read_text())


def _printed_block(printed: str) -> str:
    """What a command printed, less its last line ('wrote ... to DIR/', which names a temporary folder)."""
    lines = [line.rstrip() for line in printed.rstrip("\n").splitlines()]
    while lines and not lines[-1].startswith("wrote"):
        lines.pop()
    return "\n".join(lines[:-1])


# --- README: "Which fabric should we buy?" -----------------------------------------------------------------------

README_FABRIC = ("llama3-70b-1024-h100-roce", "--topology", "leaf-spine:oversubscription=2,protocol=ethernet",
                 "--topology", "rail-fat-tree")
TIER_WORDS = {"nvlink": "NVLink", "pcie": "PCIe links", "nic": "NICs", "leaf": "leaf uplinks",
              "spine": "spine links", "core": "core links"}


def _busiest_tier(row: dict) -> str:
    by_tier = {tier: row[f"exposed_comm_{tier}_s"] for tier in TIER_WORDS if f"exposed_comm_{tier}_s" in row}
    return TIER_WORDS[max(by_tier, key=by_tier.get)]


def readme_fabric() -> str:
    from simcluster.core import units

    _, report = _compare(*README_FABRIC)
    ethernet, rail = report["runs"]
    faster, slower = (rail, ethernet) if rail["time_to_target_s"] <= ethernet["time_to_target_s"] else (ethernet, rail)
    name = {id(rail): "the rail fabric", id(ethernet): "the leaf-spine"}
    saving = 1 - faster["cost_usd"] / slower["cost_usd"]
    text = (f"On Llama 3 70B, 1,024 H100: the 2:1 RoCE leaf-spine costs {units.fmt_usd(ethernet['fabric_capex_usd'])}"
            f" of fabric against {units.fmt_usd(rail['fabric_capex_usd'])} for the rail-optimised InfiniBand "
            f"fat-tree, but waits {units.fmt(ethernet['exposed_comm_network_s'], units.SECONDS)} per "
            f"{units.fmt(ethernet['step_time_s'], units.SECONDS)} step on its {_busiest_tier(ethernet)} (the rail "
            f"fabric: {units.fmt(rail['exposed_comm_network_s'], units.SECONDS)} on its {_busiest_tier(rail)}), so "
            f"{name[id(faster)]} reaches the target "
            f"{1 - faster['time_to_target_s'] / slower['time_to_target_s']:.1%} sooner and "
            f"{abs(saving):.1%} {'cheaper' if saving >= 0 else 'dearer'} all in.")
    return textwrap.fill(text, 117, break_on_hyphens=False)


# --- docs/tutorial.md ---------------------------------------------------------------------------------------------

TUTORIAL_COMPARE = ("gpt3-175b-1024-h100", "--topology", "rail-fat-tree", "--topology", "leaf-spine:oversubscription=4")


def tutorial_compare() -> str:
    printed, _ = _compare(*TUTORIAL_COMPARE)
    block = _printed_block(printed)
    table, verdict = block[:block.index("Verdict")].rstrip(), block[block.index("Verdict"):]
    return ("```\n" + table + "\n```\n\nand a verdict (one paragraph; here wrapped):\n\n```\n"
            + textwrap.fill(verdict, WRAP) + "\n```")


MOE_SYSTEMS = ("h100", "b200", "gb200-nvl72")
MOE_HEADER = "| {model}, 256 GPUs | H100 + IB | B200 + IB | GB200 NVL72 |\n|---|---|---|---|"


def _moe_table(model: str, scenario: str, rows: list[tuple[str, Callable[[dict], str]]]) -> str:
    _, report = _compare(*(f"{scenario}-{system}" for system in MOE_SYSTEMS))
    lines = [MOE_HEADER.format(model=model)]
    lines += [f"| {label} | " + " | ".join(cell(run) for run in report["runs"]) + " |" for label, cell in rows]
    return "\n".join(lines)


def _s(value: float) -> str:
    return f"{value:.2f} s"


def _ep(run: dict) -> str:
    ep_s = run["summary"]["exposed_comm_by_parallelism_s"]["ep"]
    return f"{_s(ep_s)} ({ep_s / run['step_time_s']:.0%})"


def tutorial_moe() -> str:
    from simcluster.core import units

    cost = ("cost to the target loss", lambda r: units.fmt_usd(r["cost_usd"]))
    deepseek = _moe_table("DeepSeek-V3", "deepseek-v3-256", [
        ("step time", lambda r: _s(r["step_time_s"])), ("compute", lambda r: _s(r["compute_s"])),
        ("exposed communication", lambda r: _s(r["exposed_comm_s"])),
        ("of which expert parallel (all-to-alls)", _ep), ("pipeline bubble", lambda r: _s(r["pipeline_bubble_s"])),
        ("MFU", lambda r: f"{r['mfu']:.1%}"), cost])
    mixtral = _moe_table("Mixtral 8x22B", "mixtral-8x22b-256", [
        ("step time", lambda r: _s(r["step_time_s"])), ("compute", lambda r: _s(r["compute_s"])),
        ("of which expert parallel: all-to-alls and expert-TP collectives (exposed)", _ep),
        ("MFU", lambda r: f"{r['mfu']:.1%}"), cost])
    return deepseek + "\n\n" + mixtral


TUTORIAL_SWEEP = ("gpt3-175b-1024-h100", "--gpus", "64,128,...,8192", "--topology", "rail-fat-tree", "--topology",
                  "leaf-spine:oversubscription=4")
SWEEP_ROWS_SHOWN = ("64", "1,024", "8,192")  # the tutorial shortens the table to these counts


def tutorial_sweep() -> str:
    printed, _ = _run("sweep", *TUTORIAL_SWEEP)
    lines = _printed_block(printed).splitlines()
    row = re.compile(r"\s*\d+\. \S+\s+([\d,]+)\s")  # a series' row; the legend above has no GPU count
    table = [line for line in lines if not row.match(line) or row.match(line).group(1) in SWEEP_ROWS_SHOWN]
    return "```\n" + "\n".join(line for line in table if not line.startswith("16 runs")) + "\n```"


# --- docs/scenario.md and README: several jobs on one fabric ------------------------------------------------------

JOBS_BUNDLED = "two-jobs-8-nodes-roce"
# Two halves of the bundled Llama 3 70B scenario on its 128-node 2:1 RoCE leaf-spine: dp 16 each, global batch 256
# (the 1,024-GPU scenario's 16 microbatches a replica), placed interleaved (stride 2) or contiguous (nodes 0-63, 64-127)
JOBS_70B = "llama3-70b-1024-h100-roce"
JOBS_70B_HALF = {"parallelism": {"dp": 16}, "training": {"global_batch_size": 256}}


def _jobs_run(scenario: dict | str) -> list[dict]:
    """The per-job rows of ``simcluster run`` on a jobs scenario (a bundled name, or a dict written to a file)."""
    if isinstance(scenario, dict):
        folder = Path(tempfile.mkdtemp(prefix="docs-numbers-jobs-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        path = folder / f"{scenario['name']}.yaml"
        path.write_text(json.dumps(scenario))  # JSON is YAML
        scenario = str(path)
    _, out_dir = _run("run", scenario)
    return json.loads((out_dir / "summary.json").read_text())["jobs"]


def _bundled_jobs(**placements) -> dict:
    """The bundled two-job scenario with other placements (job name -> placement)."""
    from simcluster.core import inputs
    from simcluster.spec import config

    data = inputs.load_yaml(config.resolve_path(JOBS_BUNDLED), inputs.MAX_SCENARIO_BYTES, "scenario file")
    for job in data["jobs"]:
        job["placement"] = placements[job["name"]]
    return {**data, "name": f"{JOBS_BUNDLED}-placed"}


def _jobs_70b(stride: int, order: str | None = None) -> dict:
    """Two Llama 3 70B jobs of 512 H100 on the 70B scenario's cluster, interleaved (stride 2) or contiguous."""
    from simcluster.core import inputs
    from simcluster.spec import config

    data = inputs.load_yaml(config.resolve_path(JOBS_70B), inputs.MAX_SCENARIO_BYTES, "scenario file")
    parallelism = {**data["parallelism"], **JOBS_70B_HALF["parallelism"], **({"order": order} if order else {})}
    training = {**data["training"], **JOBS_70B_HALF["training"]}
    nodes = data["cluster"]["nodes"] // 2
    placements = ({"first_node": 0, "stride": 2}, {"first_node": 1, "stride": 2}) if stride == 2 else (
        {"first_node": 0, "stride": 1}, {"first_node": nodes, "stride": 1})
    jobs = [{"name": name, "model": data["model"], "training": training, "parallelism": parallelism,
             "placement": placement} for name, placement in zip("ab", placements, strict=True)]
    return {"name": f"jobs-70b-{stride}-{order or 'default'}", "cluster": data["cluster"], "jobs": jobs}


def _pair(values: list[float]) -> str:
    """One job's figure, or both jobs' ('4.387 / 4.386 s') where they differ as printed."""
    shown = [f"{value:.3f} s" if value >= 1 else f"{value * 1e3:.1f} ms" for value in values]
    if len(set(shown)) == 1:
        return shown[0]
    return " / ".join(text.split()[0] for text in shown[:-1]) + " / " + shown[-1]


def _slowdowns(rows: list[dict]) -> str:
    shown = [f"{row['slowdown']:.3f}" for row in rows]
    return shown[0] if len(set(shown)) == 1 else " / ".join(shown)


def _jobs_row(label: str, placement: str, rows: list[dict]) -> str:
    return (f"| {label} | {placement} | {_pair([r['step_time_alone_s'] for r in rows])} | "
            f"{_pair([r['step_time_s'] for r in rows])} | {_slowdowns(rows)} |")


def scenario_jobs() -> str:
    interleaved = _jobs_run(JOBS_BUNDLED)
    contiguous = _jobs_run(_bundled_jobs(a={"first_node": 0, "stride": 1}, b={"first_node": 4, "stride": 1}))
    lines = ["| scenario (`simcluster run ...`) | placement | step alone | step together | slowdown |",
             "|---|---|---|---|---|",
             _jobs_row(f"`{JOBS_BUNDLED}` (2 x Llama 2 7B, 32 H100 each, 4:1 leaves)", "interleaved (stride 2)",
                       interleaved),
             _jobs_row("the same, `first_node: 0` and `4`", "contiguous", contiguous),
             _jobs_row(f"2 x Llama 3 70B (tp 8, pp 4, dp 16: 512 H100 each, global batch 256) on the 128-node 2:1 "
                       f"RoCE leaf-spine of `{JOBS_70B}`", "interleaved", _jobs_run(_jobs_70b(2))),
             _jobs_row("the same", "contiguous (nodes 0-63, 64-127)", _jobs_run(_jobs_70b(1))),
             _jobs_row("the same with `order: tp-cp-pp-dp` (data parallelism outermost)", "interleaved",
                       _jobs_run(_jobs_70b(2, "tp-cp-pp-dp"))),
             _jobs_row("the same", "contiguous", _jobs_run(_jobs_70b(1, "tp-cp-pp-dp")))]
    return "\n".join(lines)


def readme_jobs() -> str:
    interleaved = _jobs_run(JOBS_BUNDLED)
    contiguous = _jobs_run(_bundled_jobs(a={"first_node": 0, "stride": 1}, b={"first_node": 4, "stride": 1}))
    return textwrap.fill(f"`simcluster run {JOBS_BUNDLED}`: two Llama 2 7B jobs interleaved over the 4:1 leaves of a "
                         f"RoCE leaf-spine slow each other by {_slowdowns(interleaved)}x; placed contiguous, "
                         f"{_slowdowns(contiguous)}x.", 117, break_on_hyphens=False)


# --- docs/variability.md and README: weak scaling with variability ------------------------------------------------

WEAK = ("gpt3-175b-1024-h100", "--gpus", "256,1024,4096,16384")
WEAK_VARIED = (*WEAK, "--vary", "variability=measured", "--samples", "5", "--no-plots")


NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _sweep_rows(*args: str) -> list[dict]:
    """The rows of ``results.csv`` of ``simcluster sweep ARGS`` (numbers as floats), by GPU count."""
    import csv

    _, out_dir = _run("sweep", *args)
    with (out_dir / "results.csv").open() as f:
        # numbers as floats, but never the run's hash ``key`` ('e49746833553e335', '16e36ac767de85a7' read as 1.6e37)
        rows = [{k: float(v) if k != "key" and NUMBER.fullmatch(v or "") else v for k, v in row.items()}
                for row in csv.DictReader(f)]
    return sorted(rows, key=lambda row: row["gpus"])


def _weak() -> tuple[list[dict], list[dict]]:
    """The weak-scaling sweep with variability (5 seeds a point) and without (the bundled scenario, one run a point)."""
    return _sweep_rows(*WEAK_VARIED), _sweep_rows(*WEAK, "--no-plots")


def variability_weak() -> str:
    varied, plain = _weak()
    lines = ["| GPUs | step p10 / p50 / p90 (s) | per-GPU throughput vs 256 | goodput | per GPU after failures |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {row['gpus']:,.0f} | {row['step_time_p10_s']:.3f} / {row['step_time_p50_s']:.3f} / "
              f"{row['step_time_p90_s']:.3f} | {row['efficiency']:.1%} | {row['goodput']:.3f} | "
              f"{row['efficiency'] * row['goodput']:.1%} |" for row in varied]
    first, last = plain[0], plain[-1]
    cost = [1 - v["tokens_per_s"] / p["tokens_per_s"]
            for v, p in ((varied[0], first), (varied[-1], last))]
    text = (f"Without variability the same sweep keeps {last['efficiency']:.1%} ({first['step_time_s']:.3f} s at "
            f"{first['gpus']:,.0f} GPUs, {last['step_time_s']:.3f} s at {last['gpus']:,.0f}): variability costs "
            f"{cost[0]:.1%} of the throughput at {first['gpus']:,.0f} GPUs and {cost[1]:.1%} at {last['gpus']:,.0f}.")
    return "\n".join(lines) + "\n\n" + textwrap.fill(text, 117, break_on_hyphens=False)


def readme_weak() -> str:
    varied, plain = _weak()
    last = varied[-1]
    text = (f"It keeps {last['efficiency']:.1%} of its per-GPU throughput at {last['gpus']:,.0f} GPUs "
            f"({plain[-1]['efficiency']:.1%} without variability), and {last['efficiency'] * last['goodput']:.1%} once "
            f"failures are counted.")
    return textwrap.fill(text, 117, break_on_hyphens=False)


BLOCKS: dict[str, tuple[str, Callable[[], str]]] = {
    "readme-fabric": ("README.md", readme_fabric),
    "tutorial-compare": ("docs/tutorial.md", tutorial_compare),
    "tutorial-moe": ("docs/tutorial.md", tutorial_moe),
    "tutorial-sweep": ("docs/tutorial.md", tutorial_sweep),
    "scenario-jobs": ("docs/scenario.md", scenario_jobs),
    "readme-jobs": ("README.md", readme_jobs),
    "variability-weak": ("docs/variability.md", variability_weak),
    "readme-weak": ("README.md", readme_weak),
}


# --- figures the pages quote from the data files -----------------------------------------------------------------

def _data(name: str, keys: str):
    """A value of ``simcluster/data/<name>.yaml`` by its dotted keys."""
    from simcluster.core import catalog

    value = catalog.load(name)
    for key in keys.split("."):
        value = value[key]
    return value


def _d(name: str, keys: str, form: str = "{:g}", scale: float = 1.0) -> Callable[[], str]:
    """The figure at ``keys`` of data file ``name``, times ``scale``, as the page writes it (``form``)."""
    return lambda: form.format(_data(name, keys) * scale if scale != 1.0 else _data(name, keys))


def _number(name: str, keys: str) -> Callable[[], str]:
    """The number of a quantity the data file writes with its unit ('370 GB/s' -> '370')."""
    return lambda: str(_data(name, keys)).split()[0]


def _peak_tflops(gpu: str, precision: str) -> Callable[[], str]:
    from simcluster.core import units

    return lambda: f"{units.parse(_data('hardware', f'gpus.{gpu}.peak.{precision}'), units.FLOP_PER_S) / 1e12:.0f}"


def _attention(gpu: str, direction: str) -> Callable[[], str]:
    """A flash-attention curve as compute-and-memory.md writes it: `0.70 × n/(n + 238)`."""
    def text() -> str:
        curve = _data("efficiency", f"attention.{gpu}")
        half = curve["kv_tokens_half"]
        fraction = f"{curve[f'{direction}_max']:.3f}".rstrip("0")
        fraction = f"{fraction:0<4}"  # two decimals at least: 0.70
        return f"`{fraction} × n/(n + {half[direction] if isinstance(half, dict) else half})`"
    return text


COMPUTE, EFF = "docs/compute-and-memory.md", "efficiency"
US = ("{:g} µs", 1e6)  # seconds in the data, microseconds on the page
# (page, what it writes with {} where each figure goes, the figures from the data as the page writes them). The page's
# line breaks count as spaces. A changed data value, or a page edited away from its data, fails the check; the page
# is then fixed by hand (these are sentences, not generated blocks).
DATA_FIGURES: list[tuple[str, str, tuple[Callable[[], str], ...]]] = [
    (COMPUTE, "The bf16 ceiling ({})", (_d(EFF, "gemm.ceiling.bf16"),)),
    (COMPUTE, "The fp8 ceiling ({})", (_d(EFF, "gemm.ceiling.fp8"),)),
    (COMPUTE, "with k₀ = {} bf16 elements", (_d(EFF, "gemm.k_overhead"),)),
    (COMPUTE, "is `forward_max × n/(n + {})`", (_d(EFF, "attention.default.kv_tokens_half"),)),
    (COMPUTE, "(head dim 128, s = 512 to 16k): {} forward and {} backward",
     (_attention("a100-80gb-sxm", "forward"), _attention("a100-80gb-sxm", "backward"))),
    (COMPUTE, "on Blackwell (B200, GB200, B300, GB300) its own curve, {} forward and {} backward",
     (_attention("gb300", "forward"), _attention("gb300", "backward"))),
    (COMPUTE, "replay's rescale too): {} on H100, H200 and GB300", (_d(EFF, "bandwidth_fraction.h100-sxm"),)),
    (COMPUTE, "A100 80GB {} (round 26", (_d(EFF, "bandwidth_fraction.a100-80gb-sxm"),)),
    (COMPUTE, "A100 40GB {} (round 27", (_d(EFF, "bandwidth_fraction.a100-40gb-sxm"),)),
    (COMPUTE, "softmax and dropout run at {} of HBM bandwidth", (_d(EFF, "attention.naive.bandwidth_fraction"),)),
    (COMPUTE, "H100/H200 {} (1575 of", (_d(EFF, "clock_ratio.h100-sxm", "{:.2f}"),)),
    (COMPUTE, "B200 {} (1580 of 1965 MHz", (_d(EFF, "clock_ratio.b200", "{:.2f}"),)),
    (COMPUTE, "A100 {} (an assumption", (_d(EFF, "clock_ratio.a100-80gb-sxm", "{:.1f}"),)),
    (COMPUTE, "Blackwell GEMM {}: the median B200", (_d(EFF, "sustained_share.b200.gemm"),)),
    (COMPUTE, "a {} gap on the stream before every kernel", (_d(EFF, "host_overhead.kernel_gap_s", *US),)),
    (COMPUTE, "{} of host dispatch per kernel", (_d(EFF, "host_overhead.dispatch_s", *US),)),
    (COMPUTE, "`efficiency.yaml host_overhead`: {} fitted on the dense runs",
     (_d(EFF, "host_overhead.kernel_gap_s", *US),)),
    (COMPUTE, "and {} per pipeline step", (_d(EFF, "host_overhead.pipeline_step_s", *US),)),
    (COMPUTE, "`graph_node_s` ({}, a replayed graph's node latency)", (_d(EFF, "host_overhead.graph_node_s", *US),)),
    (COMPUTE, "the {} launch overhead instead of the kernel gap", (_d(EFF, "launch_overhead_s", *US),)),
    # the fitted pair where README and calibration.md's factor table and fitted part name them (a refit moves them)
    ("README.md", "Fitted: a {} gap on the stream per kernel and {} per pipeline step",
     (_d(EFF, "host_overhead.kernel_gap_s", *US), _d(EFF, "host_overhead.pipeline_step_s", *US))),
    *(("docs/calibration.md", sentence, (_d(EFF, f"host_overhead.{key}", *US),)) for sentence, key in (
        ("| **stream gap per kernel** | **{}** (GEMM", "kernel_gap_s"),
        ("| **host time per pipeline step** | **{}** per", "pipeline_step_s"),
        ("- **kernel gap, {} per kernel (fitted", "kernel_gap_s"),
        ("- **pipeline step, {} (fitted", "pipeline_step_s"))),
    ("docs/glossary.md", "(H100 SXM bf16: {} TFLOP/s", (_peak_tflops("h100-sxm", "bf16"),)),
    ("docs/scaling-laws.md", "(H100 SXM: {} TFLOP/s bf16, {}, ${}/h)",
     (_peak_tflops("h100-sxm", "bf16"), _d("hardware", "gpus.h100-sxm.tdp", "{}"),
      _d("hardware", "gpus.h100-sxm.price_per_gpu_hour", "{:.2f}"))),
    *(("docs/scaling-laws.md", f"{source}: E {{}}, A {{}}, B {{}}, alpha {{}}, beta {{}}",
        tuple(_d("scaling_laws", f"{law}.{key}") for key in ("E", "A", "B", "alpha", "beta")))
      for law, source in (("chinchilla", "Hoffmann et al. 2022, approach 3"),
                          ("chinchilla-refit", "Besiroglu et al. 2024"))),
    ("docs/scaling-laws.md", "L(C_min) = (Cc/C_min)^{} with Cc = {} PF-days",
     (_d("scaling_laws", "kaplan.L_C_min.aC", "{:.3f}"),
      lambda: re.sub(r"e\+?0*", "e", f"{_data('scaling_laws', 'kaplan.L_C_min.Cc_pf_days'):.1e}"))),
    ("docs/scenario.md", "(`connectx-6`: {} HDR, `connectx-7`: {} NDR, `connectx-8`: {} XDR)",
     tuple(_d("hardware", f"nics.{nic}.rate", "{}") for nic in ("connectx-6", "connectx-7", "connectx-8"))),
    ("docs/scenario.md", "| `fabric_lifetime_years` | {} (`data/fabric_costs.yaml`)",
     (_d("fabric_costs", "lifetime_years"),)),
    ("docs/scenario.md", "`failures_per_1000_node_days` ({}; 0 turns failures off)",
     (_d("reliability", "failures.per_1000_node_days"),)),
    ("docs/reliability.md", "| failures, all components | {} per 1,000 node-days",
     (_d("reliability", "failures.per_1000_node_days"),)),
    ("docs/reliability.md", "| checkpoint write bandwidth | {} MB/s per GPU",
     (_d("reliability", "checkpoint.write_bytes_per_s_per_gpu", scale=1e-6),)),
    ("docs/reliability.md", "| checkpoint read bandwidth | {} MB/s per GPU",
     (_d("reliability", "checkpoint.read_bytes_per_s_per_gpu", scale=1e-6),)),
    ("docs/reliability.md", "| detection | {} min |", (_d("reliability", "restart.detection_s", scale=1 / 60),)),
    ("docs/reliability.md", "| restart | {} min |", (_d("reliability", "restart.restart_s", scale=1 / 60),)),
    ("docs/reliability.md", "| event simulation | {} days, seed {} |",
     (_d("reliability", "event_simulation.horizon_days"), _d("reliability", "event_simulation.seed"))),
    ("docs/variability.md", "| `gpu_speed_cv` | {} |", (_d("variability", "measured.gpu_speed_cv"),)),
    ("docs/variability.md", "| `kernel_jitter_cv` | {} |", (_d("variability", "measured.kernel_jitter_cv"),)),
    ("docs/collectives.md", "NVLink 3 (A100) {}/300", (_number("nccl", "measured.nvlink_ring_busbw.nvlink3.value"),)),
    ("docs/collectives.md", "NVLink 4 (H100, H200) {}/450",
     (_number("nccl", "measured.nvlink_ring_busbw.nvlink4.value"),)),
    ("docs/collectives.md", "NVLink 5 (B200, B300, GB200, GB300) {}/900",
     (_number("nccl", "measured.nvlink_ring_busbw.nvlink5.value"),)),
    ("docs/collectives.md", "NVLink 4 0.686 ({} GB/s", (_number("nccl", "measured.nvls_busbw.nvlink4.value"),)),
    ("docs/collectives.md", "NVLink 5 0.593 ({} GB/s", (_number("nccl", "measured.nvls_busbw.nvlink5.value"),)),
    ("docs/collectives.md", "network links: {}/50 (NDR 400G", (_number("nccl", "measured.per_nic_busbw.value"),)),
    ("docs/collectives.md", "payload fraction (LL {}, LL128 {}, Simple 1) and, for the tree, NCCL's {}",
     (_d("nccl", "protocols.LL.bandwidth_fraction"), _d("nccl", "protocols.LL128.bandwidth_fraction"),
      _d("nccl", "tree.bandwidth_fraction"))),
]


def data_figures() -> list[str]:
    """Where a page no longer writes what its data file holds: one line per sentence, [] when all agree."""
    problems = []
    for page, sentence, figures in DATA_FIGURES:
        expected = sentence.format(*(figure() for figure in figures))
        if expected not in " ".join((ROOT / page).read_text().split()):
            problems.append(f"{page}: no longer writes {expected!r} (the data file's figure)")
    return problems


# --- checking and writing -----------------------------------------------------------------------------------------

def quoted(name: str) -> str:
    """The block ``name`` as its page holds it."""
    page = (ROOT / BLOCKS[name][0]).read_text()
    begin = BEGIN.format(name=name)
    start = page.index(begin) + len(begin)
    return page[start:page.index(END, start)].strip("\n")


NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
DECORATION = re.compile(r"[\s━┃┏┓┗┛┡┩┳┻╇│└┘┌┐─┴┬├┤┼]+")


def _skeleton(text: str) -> str:
    """The words of a block: numbers as '#', table rules and runs of spaces (they follow the numbers' widths) as one
    space."""
    return DECORATION.sub(" ", NUMBER.sub("#", text)).strip()


def _value(text: str) -> float:
    return float(text.replace(",", ""))


def drift(page: str, fresh: str) -> list[str]:
    """How the page's block differs from a fresh one: [] when the words are the same and every number is within
    TOLERANCE or one unit of the page's last digit."""
    if _skeleton(page) != _skeleton(fresh):
        return [f"the words changed:\n  page:  {_skeleton(page)[:300]}\n  fresh: {_skeleton(fresh)[:300]}"]
    problems = []
    for old, new in zip(NUMBER.findall(page), NUMBER.findall(fresh), strict=True):
        unit = 10.0 ** -len(old.split(".")[1]) if "." in old else 1.0
        if abs(_value(old) - _value(new)) > max(TOLERANCE * abs(_value(new)), unit):
            problems.append(f"{old} is now {new}")
    return problems


def write(name: str) -> None:
    path = ROOT / BLOCKS[name][0]
    page, old = path.read_text(), quoted(name)
    begin = BEGIN.format(name=name)
    path.write_text(page.replace(f"{begin}\n{old}\n{END}", f"{begin}\n{BLOCKS[name][1]()}\n{END}"))


def main(argv: list[str]) -> int:
    names = [a for a in argv if not a.startswith("--")] or list(BLOCKS)
    unknown = [name for name in names if name not in BLOCKS]
    if unknown:
        from simcluster.core.errors import ScenarioError

        raise ScenarioError(unknown[0], f"no such block (blocks: {', '.join(BLOCKS)})")
    if "--write" in argv:
        for name in names:
            write(name)
            print(f"wrote {name} into {BLOCKS[name][0]}")
        return 0
    failed = 0
    if len(names) == len(BLOCKS):  # a full check: the figures quoted from the data files too (no simulation)
        figures = data_figures()
        print(f"data-file figures ({len(DATA_FIGURES)} sentences): " + ("ok" if not figures else "; ".join(figures)))
        failed += bool(figures)
    for name in names:
        problems = drift(quoted(name), BLOCKS[name][1]())
        print(f"{name} ({BLOCKS[name][0]}): " + ("ok" if not problems else "drifted: " + "; ".join(problems)))
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from simcluster.core.script_entry import run

    sys.exit(run(main, sys.argv[1:], __doc__, ["--write"]))
