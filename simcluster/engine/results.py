"""Result of a simulation: the summary (keys of DESIGN.md), the events table and per-link usage; and writers."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from simcluster.core import outputs
from simcluster.engine.record import FabricLinks, RunRecord

SUMMARY_KEYS = (
    "step_time_s", "tokens_per_s", "model_tflops_per_gpu", "hardware_tflops_per_gpu", "mfu", "hfu",
    "peak_memory_per_gpu_bytes", "compute_s", "exposed_comm_s", "pipeline_bubble_s", "gpus", "network_model",
    "wall_time_s",
)


@dataclass
class Result:
    summary: dict
    events: pd.DataFrame
    links: pd.DataFrame
    memory: object  # MemoryBreakdown of the worst stage

    def write(self, out_dir: Path, trace_ranks: int | None = None) -> list[Path]:
        """Write summary.json, events.csv (Parquet with pyarrow), links.csv, trace.json.gz into ``out_dir``, each
        atomically; non-finite figures of the summary are written as null (``core.outputs``)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        written = [outputs.write_text(out_dir / "summary.json", outputs.dumps(self.summary, indent=2) + "\n")]
        try:
            import pyarrow  # noqa: F401

            path = out_dir / "events.parquet"
            with outputs.atomic_path(path) as tmp:
                self.events.to_parquet(tmp)
        except ImportError:
            path = out_dir / "events.csv"
            with outputs.atomic_path(path) as tmp:
                self.events.to_csv(tmp, index=False)
        written.append(path)
        written.append(out_dir / "links.csv")
        with outputs.atomic_path(written[-1]) as tmp:
            self.links.to_csv(tmp, index=False)
        written.append(write_chrome_trace(self.events, out_dir / "trace.json.gz", max_ranks=trace_ranks))
        return written


def summarize(record: RunRecord) -> Result:
    """The Result of a finished run. Per-rank figures are means over GPUs, per step."""
    scenario, steps = record.scenario, record.steps
    gpus = scenario.cluster.gpus
    step_time_s = record.end_s / steps
    weights = np.array([agent.multiplicity for agent in record.agents], dtype=float)

    def mean(attr: str) -> float:
        values = np.array([getattr(agent.tally, attr) for agent in record.agents])
        return float(np.dot(values, weights) / weights.sum()) / steps

    compute_s = mean("compute_s") + mean("optimizer_s")
    # seconds of the step each parallelism's communication kept the compute stream waiting (expert parallelism: none
    # modelled yet, so 0)
    by_parallelism = {"tp": mean("tp_comm_s"), "cp": mean("cp_comm_s"), "pp": mean("p2p_wait_s"),
                      "dp": mean("dp_wait_s"), "ep": 0.0}
    exposed_comm_s = by_parallelism["tp"] + by_parallelism["cp"] + by_parallelism["pp"] + by_parallelism["dp"]
    bubble_s = step_time_s - compute_s - exposed_comm_s
    peak = scenario.cluster.gpu.peak_flop_per_s(scenario.training.precision)
    model_flop_per_gpu_s = record.model_flop_per_step / step_time_s / gpus
    hardware_flop_per_gpu_s = record.hardware_flop_per_step / step_time_s / gpus
    links = link_table(record.fabric, record.link_bytes, record.end_s)
    summary = {
        "name": scenario.name,
        "step_time_s": step_time_s,
        "tokens_per_s": scenario.tokens_per_step / step_time_s,
        "model_tflops_per_gpu": model_flop_per_gpu_s / 1e12,
        "hardware_tflops_per_gpu": hardware_flop_per_gpu_s / 1e12,
        "mfu": model_flop_per_gpu_s / peak,
        "hfu": hardware_flop_per_gpu_s / peak,
        "peak_memory_per_gpu_bytes": record.memory.total_bytes,
        "compute_s": compute_s,
        "exposed_comm_s": exposed_comm_s,
        "exposed_comm_by_parallelism_s": by_parallelism,
        "pipeline_bubble_s": bubble_s if bubble_s > 1e-9 * step_time_s else 0.0,  # float noise is no bubble
        "gpus": gpus,
        "network_model": record.network_model,
        "wall_time_s": record.wall_time_s,
        "steps": steps,
        "tokens_per_step": scenario.tokens_per_step,
        "microbatches": record.microbatches,
        "model_flop_per_step": record.model_flop_per_step,
        "hardware_flop_per_step": record.hardware_flop_per_step,
        "busiest_link_utilisation": float(links["utilisation"].max()) if len(links) else 0.0,
        "topology": record.fabric.topology,
        "gpu": scenario.cluster.gpu.name,
        "layout": dict(record.layout),
        "agents": len(record.agents),
        "events": len(record.events),
        "cost_per_step_usd": scenario.price_per_gpu_hour * gpus * step_time_s / 3600.0,
    }
    return Result(summary=summary, events=record.events, links=links, memory=record.memory)


def link_table(fabric: FabricLinks, link_bytes: np.ndarray, duration_s: float) -> pd.DataFrame:
    """Bytes and mean utilisation of every link that carried traffic."""
    used = np.flatnonzero(link_bytes > 0)
    capacity = fabric.capacity_bytes_per_s[used]
    table = pd.DataFrame({
        "link_id": used,
        "kind": [fabric.kinds[i] for i in used],
        "bytes": link_bytes[used],
        "utilisation": link_bytes[used] / (capacity * duration_s) if duration_s > 0 else 0.0,
    })
    if fabric.ends is not None:
        table.insert(1, "src", [str(fabric.ends[i][0]) for i in used])
        table.insert(2, "dst", [str(fabric.ends[i][1]) for i in used])
    return table


STREAM_TIDS = {"compute": 0, "tp": 1, "pp": 2, "dp": 3, "cp": 4}


def write_chrome_trace(events: pd.DataFrame, path: Path, max_ranks: int | None = None) -> Path:
    """Chrome trace (opens in Perfetto / chrome://tracing): pid = rank, one tid per stream, times in us.

    Only the first ``max_ranks`` ranks that recorded events are written (at 16k GPUs: representative ranks).
    """
    from simcluster.core import catalog

    max_ranks = max_ranks or catalog.load("engine")["trace"]["max_ranks"]
    ranks = sorted(events["rank"].unique())[:max_ranks]
    kept = events[events["rank"].isin(ranks)]
    trace = []
    for rank in ranks:
        trace.append({"ph": "M", "name": "process_name", "pid": int(rank), "tid": 0, "args": {"name": f"rank {rank}"}})
        for stream, tid in STREAM_TIDS.items():
            trace.append({"ph": "M", "name": "thread_name", "pid": int(rank), "tid": tid, "args": {"name": stream}})
    for row in kept.itertuples(index=False):
        trace.append({
            "ph": "X", "name": row.name, "cat": row.kind, "pid": int(row.rank), "tid": STREAM_TIDS.get(row.stream, 9),
            "ts": row.start_s * 1e6, "dur": max(0.0, (row.end_s - row.start_s) * 1e6),
            "args": {"microbatch": int(row.microbatch), "bytes": float(row.bytes), "gpus": int(row.group)},
        })
    with outputs.atomic_path(path) as tmp, gzip.open(tmp, "wt") as handle:
        json.dump({"traceEvents": trace, "displayTimeUnit": "ms"}, handle, allow_nan=False)
    return path
