"""A recorded run replayed on a fabric, end to end: trace files -> ``RecordedRun`` -> ``ReplayPlan`` -> SimPy
replay (``engine/replay.py``) -> per-step report. ``simcluster replay`` is this study plus option parsing and
printing.

What the user leaves open is decided from the trace: the GPU from its device name, the fabric (which traces never
record) from the GPU and the world size. Every such decision, the importers' and the plan's own included, is a
sentence of ``ReplayOutcome.assumptions``, so a report always says what it rests on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from simcluster.core import units
from simcluster.core.errors import ScenarioError
from simcluster.engine.replay import replay as run_plan
from simcluster.fabric import topology
from simcluster.fabric.topology import Fabric
from simcluster.replay import rescale
from simcluster.replay.formats import is_chakra, load_trace, read_kineto
from simcluster.replay.plan import ReplayPlan, build_plan
from simcluster.replay.recorded import RecordedRun
from simcluster.replay.report import describe_plan, step_report
from simcluster.spec import hardware

DEFAULT_NETWORK_MODEL = "flow"  # contention between concurrent collectives matters in a replay


@dataclass
class ReplayOutcome:
    """A replayed run: the events (one row per replayed op, recorded times alongside), the per-step report rows
    (``report.step_report``) and the sentences of what was assumed, with the plan, fabric and GPU it ran on."""

    run: RecordedRun
    plan: ReplayPlan
    fabric: Fabric
    gpu: str  # catalog name of the GPU replayed on
    events: pd.DataFrame
    steps: list[dict]
    assumptions: list[str]

    def report(self) -> dict:
        """The report ``--json`` prints and ``replay.json`` holds."""
        return {"steps": self.steps, "assumptions": self.assumptions}


def replay_traces(traces: Sequence[str | Path], *, topology_name: str | None = None,
                  topology_options: Mapping[str, object] | None = None, gpu_name: str | None = None,
                  nic: str | None = None, gpus_per_node: int | None = None, scale_dp: int = 1,
                  network_model: str | None = None, gpu_scaling: str = "roofline", expand: bool = False,
                  status: Callable[[str], AbstractContextManager] = nullcontext) -> ReplayOutcome:
    """Replay the run recorded in ``traces`` (Kineto, one file per rank, or Chakra) on a fabric.

    Options left ``None`` are taken from the trace: the GPU (another one rescales compute, ``gpu_scaling``
    saying how), the fabric and its NIC (``nic``: a catalog name or a line rate such as '25 Gb/s'), the GPUs
    per node. ``scale_dp`` repeats the recorded world (weak scaling). ``status`` wraps the simulation, the one
    slow part, with its description (the command line shows it as a spinner).
    """
    run = load_trace(traces)
    gpu, gpu_spec, busy_s, gpu_assumptions = _compute_on(run, traces, gpu_name, gpu_scaling)
    network_model = network_model or DEFAULT_NETWORK_MODEL
    fabric, fabric_assumptions = _fabric(run.world_size * scale_dp, gpu, gpu_spec, topology_name, topology_options,
                                         nic, gpus_per_node, network_model)
    plan = build_plan(run, scale_dp=scale_dp, busy_s=busy_s, expand=expand)
    assumptions = [*run.assumptions, *gpu_assumptions, *fabric_assumptions, *plan.assumptions, describe_plan(plan)]
    with status(f"replaying {plan.op_count()} ops on {plan.world_size} ranks..."):
        events = run_plan(plan, fabric, network_model).events
    return ReplayOutcome(run, plan, fabric, gpu, events, step_report(run, events), assumptions)


def _compute_on(run: RecordedRun, traces: Sequence[str | Path], gpu_name: str | None,
                gpu_scaling: str) -> tuple[str, hardware.GpuSpec, dict[tuple[int, int], float] | None, list[str]]:
    """The GPU replayed on (``gpu_name``, else the trace's), its spec, and when it is not the recorded GPU every
    compute op's kernel time on it; with the sentences saying why.

    Kineto traces are read a second time without merging kernels, so that each kernel of a merged segment is
    rescaled by its own roof; Chakra nodes are already the unit the trace gives.
    """
    recorded_gpu, gpu_sentence = rescale.infer_gpu(run.gpu_name)
    gpu = gpu_name or recorded_gpu
    gpu_spec = hardware.gpu(gpu, field="--gpu")
    if gpu == recorded_gpu:
        return gpu, gpu_spec, None, [gpu_sentence]
    kineto = not any(is_chakra(path) for path in traces)
    kernels = read_kineto(traces, merge_compute=False) if kineto and gpu_scaling == "roofline" else None
    busy_s, rescale_sentence = rescale.busy_rescaled(run, hardware.gpu(recorded_gpu), gpu_spec, gpu_scaling,
                                                     kernels)
    return gpu, gpu_spec, busy_s, [gpu_sentence, rescale_sentence]


def _fabric(world: int, gpu: str, gpu_spec: hardware.GpuSpec, topology_name: str | None,
            topology_options: Mapping[str, object] | None, nic: str | None, gpus_per_node: int | None,
            network_model: str) -> tuple[Fabric, list[str]]:
    """The fabric of ``world`` GPUs replayed on, and the sentences saying what it is (and, when the user chose
    none of topology, NIC and GPUs per node, why the default one)."""
    per_node = gpus_per_node or rescale.DEFAULT_GPUS_PER_NODE
    default_topology, default_nic, default_sentence = rescale.default_fabric(world, gpu, per_node)
    nic_spec = nic_from_text(nic, default_nic) if nic else hardware.nic(default_nic)
    name = topology_name or default_topology
    assumptions = [default_sentence] if topology_name is None and nic is None and gpus_per_node is None else []
    assumptions.append(f"fabric replayed on: {name}, {world} x {gpu}, {per_node} per node, NIC {nic_spec.name} "
                       f"({nic_spec.rate * 8 / 1e9:g} Gb/s), network model {network_model}")
    fabric = topology.build(name, gpus=world, gpus_per_node=per_node, gpu=gpu_spec, nic=nic_spec,
                            options=dict(topology_options or {}))
    return fabric, assumptions


def nic_from_text(text: str, default_name: str) -> hardware.NicSpec:
    """A catalog NIC, or a line rate ('25 Gb/s'): the default NIC's adapter and host link at that rate."""
    if text in hardware.nic_names():
        return hardware.nic(text, field="--nic")
    try:
        rate = units.parse(text, units.BYTES_PER_S, field="--nic")
    except ScenarioError:
        raise ScenarioError("--nic", f"expected a catalog NIC ({', '.join(hardware.nic_names())}) or a line rate "
                                     f"such as '25 Gb/s', got {text!r}") from None
    base = hardware.nic(default_name)
    return hardware.NicSpec(**{**base.model_dump(), "name": f"custom {rate * 8 / 1e9:g} Gb/s",
                               "rate": f"{rate} B/s"})


__all__ = ["DEFAULT_NETWORK_MODEL", "ReplayOutcome", "nic_from_text", "replay_traces"]
