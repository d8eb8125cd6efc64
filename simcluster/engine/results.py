"""Result of a simulation: the summary (keys of DESIGN.md), the events table and per-link usage; and writers.

The tables are ``core.table.Table`` columns, written without pandas (a run's command does not import it);
``Result.events`` and ``Result.links`` give them as pandas DataFrames, made when first asked for."""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simcluster.core import outputs
from simcluster.core.table import Coded, Table
from simcluster.core.units import SECONDS, fmt
from simcluster.engine.record import FabricLinks, RunRecord, SymmetryCheck
from simcluster.fabric import bom
from simcluster.fabric.classes import TIERS
from simcluster.outcomes import accuracy_card, reliability
from simcluster.parallel import memory

SUMMARY_KEYS = (
    "step_time_s", "tokens_per_s", "model_tflops_per_gpu", "hardware_tflops_per_gpu", "mfu", "hfu",
    "peak_memory_per_gpu_bytes", "compute_s", "exposed_comm_s", "pipeline_bubble_s", "gpus", "network_model",
    "wall_time_s", "goodput", "interruptions_per_day", "checkpoint_interval_s",
)


@dataclass(eq=False)
class Result:
    summary: dict
    event_table: Table  # recorder.COLUMNS
    link_table: Table  # link_table's columns
    memory: object  # MemoryBreakdown of the worst stage

    @functools.cached_property
    def events(self):
        """The events as a pandas DataFrame (recorder.COLUMNS)."""
        return self.event_table.frame()

    @functools.cached_property
    def links(self):
        """Per-link usage as a pandas DataFrame (``link_table``)."""
        return self.link_table.frame()

    def write(self, out_dir: Path, trace_ranks: int | None = None, table_format: str = "csv") -> list[Path]:
        """Write summary.json, events.csv (``table_format`` parquet: events.parquet), links.csv, trace.json.gz into
        ``out_dir``, each atomically; non-finite figures of the summary are written as null (``core.outputs``)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        written = [outputs.write_text(out_dir / "summary.json", outputs.dumps(self.summary, indent=2) + "\n")]
        written.append(outputs.write_table(self.event_table, out_dir / "events", table_format))
        written.append(outputs.write_table(self.link_table, out_dir / "links.csv"))
        written.append(write_chrome_trace(self.event_table, out_dir / "trace.json.gz", max_ranks=trace_ranks))
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
    # seconds of the step each parallelism's communication kept the compute stream waiting
    by_parallelism = {"tp": mean("tp_comm_s"), "cp": mean("cp_comm_s"), "pp": mean("p2p_wait_s"),
                      "dp": mean("dp_wait_s"), "ep": mean("ep_comm_s")}
    exposed_comm_s = (by_parallelism["tp"] + by_parallelism["cp"] + by_parallelism["pp"] + by_parallelism["dp"]
                      + by_parallelism["ep"])
    bubble_s = step_time_s - compute_s - exposed_comm_s
    peak = scenario.cluster.gpu.peak_flop_per_s(scenario.training.precision)
    model_flop_per_gpu_s = record.model_flop_per_step / step_time_s / gpus
    hardware_flop_per_gpu_s = record.hardware_flop_per_step / step_time_s / gpus
    links = link_table(record.fabric, record.link_bytes, record.end_s, record.link_peak_utilisation)
    fabric = None
    fabric_usd_per_gpu_hour = 0.0
    if record.fabric_bill is not None:
        fabric_usd_per_gpu_hour = bom.usd_per_gpu_hour(record.fabric_bill, gpus, scenario.economics.pue)
        fabric = {**record.fabric_bill, "usd_per_gpu_hour": fabric_usd_per_gpu_hour}
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
        "exposed_comm_by_link_class_s": by_link_class(by_parallelism, record.bottleneck_by_parallelism),
        "bottleneck_by_parallelism": record.bottleneck_by_parallelism,
        # of compute_s: what communication kernels running beside the compute added to it (SMs and HBM they take)
        "comm_interference_s": mean("interference_s"),
        "pipeline_bubble_s": bubble_s if bubble_s > 1e-9 * step_time_s else 0.0,  # float noise is no bubble
        "gpus": gpus,
        "network_model": record.network_model,
        "wall_time_s": record.wall_time_s,
        "steps": steps,
        "tokens_per_step": scenario.tokens_per_step,
        "microbatches": record.microbatches,
        # microbatches whose output-layer wgrad the last stage deferred to the flush, as run (a defaulted deferral
        # whose buffers would not fit is off: memory.with_fitting_deferral)
        "deferred_output_wgrads": memory.deferred_output_wgrads(scenario),
        "model_flop_per_step": record.model_flop_per_step,
        "hardware_flop_per_step": record.hardware_flop_per_step,
        "busiest_link_utilisation": _max(links["utilisation"]) if len(links) else 0.0,
        "busiest_link_utilisation_by_kind": max_by(links["kind"], links["utilisation"]),
        # the same, over each link's busiest window of ``peak_window_s`` rather than the whole run
        "peak_link_utilisation_by_kind": (max_by(links["kind"], links["peak_utilisation"])
                                          if "peak_utilisation" in links else None),
        "peak_window_s": record.peak_window_s,
        "topology": record.fabric.topology,
        "gpu": scenario.cluster.gpu.name,
        # the preset the model is and how it was chosen ({"name", "chosen_by": "name" | "shape"}); for an unnamed
        # model of its own, the presets whose recipe settings it takes ("shape+vocab" | "shape+nearest-vocab" |
        # "ambiguous"); None otherwise (``Scenario.model_preset``)
        "model_preset": scenario.model_preset(),
        "layout": dict(record.layout),
        "agents": len(record.agents),
        "events": len(record.events),
        "fabric": fabric,
        # GPU-hours at the GPU's price plus the fabric's share (``fabric.usd_per_gpu_hour``)
        "cost_per_step_usd": (scenario.price_per_gpu_hour + fabric_usd_per_gpu_hour) * gpus * step_time_s / 3600.0,
        "cost_per_step_fabric_usd": fabric_usd_per_gpu_hour * gpus * step_time_s / 3600.0,
        "symmetry": symmetry(record.symmetry, steps, step_time_s),
        **({"variability": record.variability} if record.variability is not None else {}),
        # failures, checkpoints and restarts over a whole run (outcomes.reliability)
        **reliability.summary_entries(scenario, step_time_s),
        # the validation harness's error on published runs like this one (outcomes.accuracy_card; no simulation)
        "accuracy": accuracy_card.card(scenario),
    }
    return Result(summary=summary, event_table=record.events, link_table=links, memory=record.memory)


def _max(values: np.ndarray) -> float:
    """The largest value, NaN skipped (NaN when all are: pandas' ``max``)."""
    finite = values[~np.isnan(values)]
    return float(finite.max()) if len(finite) else float("nan")


def max_by(keys: Sequence[str], values: np.ndarray) -> dict[str, float]:
    """The largest of ``values`` per key, keys sorted (pandas' ``groupby(keys).max()``, NaN skipped). ``keys``: a
    list, or a ``Coded`` column (compared by code, not by text per row)."""
    if isinstance(keys, Coded):
        codes_of: dict = {}
        for code in np.flatnonzero(np.bincount(keys.codes, minlength=len(keys.labels))).tolist():
            codes_of.setdefault(keys.labels[code], []).append(code)
        return {str(key): _max(values[np.isin(keys.codes, codes_of[key])]) for key in sorted(codes_of)}
    keys_array = np.asarray(keys, dtype=object)
    return {str(key): _max(values[keys_array == key]) for key in sorted(set(keys))}


def by_link_class(by_parallelism: dict[str, float], bottleneck: dict[str, str | None] | None) -> dict | None:
    """Exposed communication per tier of the fabric (``fabric.classes.TIERS``, plus ``torus`` or a file's own
    classes where they bind): each parallelism's exposed seconds are charged to the tier that bounds its traffic
    (``engine.simulation.bottlenecks``); seconds of a parallelism whose traffic never leaves a GPU go to
    ``unattributed``. Sums to ``exposed_comm_s``. None when the run does not know its bottlenecks (replay)."""
    if bottleneck is None:
        return None
    out = dict.fromkeys(TIERS, 0.0)
    for axis, seconds in by_parallelism.items():
        if seconds > 0:
            key = bottleneck.get(axis) or "unattributed"
            out[key] = out.get(key, 0.0) + seconds
    return out


def symmetry(check: SymmetryCheck | None, steps: int, step_time_s: float) -> dict:
    """The summary's ``symmetry`` entry: whether the merge policy's classes were exact (``engine.merge``), and if
    not, by how much the step time may be pessimistic (``bound_s`` per step, ``bound_pct`` of the step) and, where it
    was computed, the step time the exact run cannot beat (``lower_bound_s``, ``lower_bound_pct`` below the step:
    additive keys, round 22), the merge policy applied (``merge``: ``simulation.merge_name``) and the policies of
    the passes run (``passes``: one here; ``engine.run_expanded`` names each of its passes, round 34)."""
    collapsed = bool(check and check.collapsed)
    merge = None if check is None else check.merge
    ran = {"merge": merge, "passes": [] if merge is None else [merge]}
    if check is None or check.held_back_classes is None:
        return {"collapsed": collapsed, "exact": None, "held_back_classes": None, "bound_s": None, "bound_pct": None,
                "lower_bound_s": None, "lower_bound_pct": None,
                "note": "this network model does not check merged transfer classes; --expand (one agent per GPU, "
                        "every transfer its own class) gives the reference" if collapsed else
                        "this network model does not check merged transfer classes", **ran}
    bound_s = check.held_back_s / steps
    bound_pct = 100.0 * bound_s / step_time_s if step_time_s > 0 else 0.0
    lower_s = None if check.lower_bound_end_s is None else check.lower_bound_end_s / steps
    lower_pct = None if lower_s is None or step_time_s <= 0 else 100.0 * (1.0 - lower_s / step_time_s)
    exact = check.held_back_classes == 0
    if exact:
        note = ("every merged transfer class was exact (each replica's transfer was held at its class's rate by a "
                "saturated link): the collapsed run equals the expanded one" if collapsed else
                "every transfer class was exact (expanded: every transfer call its own class, the reference)"
                if merge in (None, "none") else
                f"every transfer class was exact (expanded, transfers merged by the {merge} policy, each merged class "
                f"proven exact by the network model: the reference's step)")
    else:
        note = (f"{check.held_back_classes} merged transfer classes held some replicas' transfers back (unequally "
                f"loaded routes: ECMP, oversubscription or an asymmetric layout); the step time may be pessimistic "
                f"by up to about {fmt(bound_s, SECONDS, 3)} ({bound_pct:.2f}%, an estimate from above of what the "
                f"exact run saves, not a proof); "
                + ("" if lower_s is None else
                   f"the exact step is at least {fmt(lower_s, SECONDS, 4)} ({lower_pct:.2f}% below this one: every "
                   f"transfer at its fastest replica's time alone on the fabric: a lower bound as far as the engine "
                   f"is monotone); ")
                + ("run with --expand for the exact figure" if collapsed else "merge=NO_MERGE gives the reference"))
    return {"collapsed": collapsed, "exact": exact, "held_back_classes": check.held_back_classes,
            "bound_s": bound_s, "bound_pct": bound_pct, "lower_bound_s": lower_s, "lower_bound_pct": lower_pct,
            "note": note, **ran}


def link_table(fabric: FabricLinks, link_bytes: np.ndarray, duration_s: float,
               peak_utilisation: np.ndarray | None = None) -> Table:
    """Bytes and mean utilisation of every link that carried traffic; ``kind`` is the link's class (its tier:
    nvlink, pcie, nic, leaf-spine, spine-core, torus ...), ``technology`` what it is made of (nvlink, pcie, ib,
    ethernet, torus); ``peak_utilisation`` (when the network model keeps windows) the utilisation of the link's
    busiest time window (``network.windows``). Columns: link_id, (src, dst when the fabric names its nodes), kind,
    technology, bytes, utilisation (, peak_utilisation)."""
    used = np.flatnonzero(link_bytes > 0)
    capacity = fabric.capacity_bytes_per_s[used]
    classes = fabric.classes if fabric.classes is not None else fabric.kinds
    every = len(used) == len(fabric.kinds)  # every link carried traffic (a symmetric run's usual case)
    ids = used.tolist() if not every else None

    def of_used(values: Sequence) -> Sequence:
        if isinstance(values, Coded):  # codes into few names: kept so (the writer formats each name once)
            return values if every else values.take(used)
        return list(values) if every else [values[i] for i in ids]

    def text(values: Sequence) -> Sequence:
        return values if isinstance(values, Coded) else list(map(str, values))

    columns: dict = {"link_id": used}
    if fabric.ends is not None:
        if hasattr(fabric.ends, "sources"):   # kept as columns (``topology.LinkEnds``, ``record.LinkEnds``)
            columns["src"] = text(of_used(fabric.ends.sources))
            columns["dst"] = text(of_used(fabric.ends.destinations))
        else:
            ends = of_used(fabric.ends)
            columns["src"] = [str(src) for src, _ in ends]
            columns["dst"] = [str(dst) for _, dst in ends]
    columns["kind"] = of_used(classes)
    columns["technology"] = of_used(fabric.kinds)
    columns["bytes"] = link_bytes[used]
    columns["utilisation"] = (link_bytes[used] / (capacity * duration_s) if duration_s > 0
                              else np.zeros(len(used)))
    if peak_utilisation is not None:
        columns["peak_utilisation"] = peak_utilisation[used]
    return Table(columns)


STREAM_TIDS = {"compute": 0, "tp": 1, "pp": 2, "dp": 3, "cp": 4, "ep": 5}
# Lanes only some runs have, named in a trace only when it holds their events: the expert data-parallel group's own
# stream (Megatron-FSDP MoE, ``engine.data_parallel.communicator_streams``), whose collectives overlap the dense ones
OPTIONAL_STREAM_TIDS = {"dp-experts": 6}
# gzip level of the trace: level 1 writes several times faster than the default 9 for a file about a third larger
# (zlib's documented speed/ratio trade-off), which matters for traces of millions of events
TRACE_GZIP_LEVEL = 1
# Events encoded and written per chunk: the trace is streamed, never held whole in memory as Python objects
TRACE_CHUNK_EVENTS = 65536


def write_chrome_trace(events, path: Path, max_ranks: int | None = None) -> Path:
    """Chrome trace (opens in Perfetto / chrome://tracing): pid = rank, one tid per stream, times in us.
    ``events``: the recorder's columns (a ``core.table.Table``, or a DataFrame of them).

    Only the first ``max_ranks`` ranks that recorded events are written (at 16k GPUs: representative ranks). The
    JSON is streamed chunk by chunk from the event columns (each distinct name encoded once), not built as one
    list of dicts: the same document ``json.dump`` would write, in a fraction of the time and memory.
    """
    from simcluster.core import catalog

    max_ranks = max_ranks or catalog.load("engine")["trace"]["max_ranks"]
    rank_of = np.asarray(events["rank"]).astype(np.int64)
    ranks = np.unique(rank_of)[:max_ranks].tolist()
    kept = np.isin(rank_of, ranks)
    every = bool(kept.all())

    def kept_column(name: str, dtype) -> np.ndarray:
        values = np.asarray(events[name], dtype=dtype)
        return values if every else values[kept]

    start_s, end_s = kept_column("start_s", float), kept_column("end_s", float)
    start_us = start_s * 1e6
    dur_us = np.maximum(0.0, (end_s - start_s) * 1e6)
    sizes = kept_column("bytes", float)
    if not (np.isfinite(start_us).all() and np.isfinite(dur_us).all() and np.isfinite(sizes).all()):
        raise ValueError("Out of range float values are not JSON compliant")  # json.dump's allow_nan=False
    encoded: dict = {}

    def text(value) -> str:  # JSON string of a name, encoded once per distinct name
        out = encoded.get(value)
        if out is None:
            out = encoded[value] = json.dumps(str(value))
        return out

    streams = kept_column("stream", object).tolist()
    present = set(streams)
    tids = STREAM_TIDS | {stream: tid for stream, tid in OPTIONAL_STREAM_TIDS.items() if stream in present}
    head = []
    for rank in ranks:
        head.append(json.dumps({"ph": "M", "name": "process_name", "pid": int(rank), "tid": 0,
                                "args": {"name": f"rank {rank}"}}))
        for stream, tid in tids.items():
            head.append(json.dumps({"ph": "M", "name": "thread_name", "pid": int(rank), "tid": tid,
                                    "args": {"name": stream}}))
    columns = (kept_column("name", object).tolist(), kept_column("kind", object).tolist(),
               kept_column("rank", np.int64).tolist(),
               [tids.get(stream, 9) for stream in streams], start_us.tolist(),
               dur_us.tolist(), kept_column("microbatch", np.int64).tolist(), sizes.tolist(),
               kept_column("group", np.int64).tolist())
    # UTF-8 whatever the locale, as every text file (core.outputs; the JSON below is ASCII today: names go
    # through json.dumps)
    with outputs.atomic_path(path) as tmp, gzip.open(tmp, "wt", compresslevel=TRACE_GZIP_LEVEL,
                                                    encoding="utf-8") as handle:
        handle.write('{"traceEvents": [')
        handle.write(", ".join(head))
        separator = ", " if head else ""
        for first in range(0, len(start_us), TRACE_CHUNK_EVENTS):
            rows = zip(*(column[first:first + TRACE_CHUNK_EVENTS] for column in columns), strict=True)
            handle.write(separator + ", ".join(
                f'{{"ph": "X", "name": {text(name)}, "cat": {text(kind)}, "pid": {rank}, "tid": {tid}, '
                f'"ts": {ts!r}, "dur": {dur!r}, "args": {{"microbatch": {mb}, "bytes": {size!r}, "gpus": {group}}}}}'
                for name, kind, rank, tid, ts, dur, mb, size, group in rows))
            separator = ", "
        handle.write('], "displayTimeUnit": "ms"}')
    return path
