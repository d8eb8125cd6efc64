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
from simcluster.core.errors import ScenarioError, did_you_mean, quoted
from simcluster.engine.replay import replay as run_plan
from simcluster.fabric import topology
from simcluster.fabric.topology import Fabric
from simcluster.replay import rescale
from simcluster.replay.formats import is_chakra, load_trace, read_kineto
from simcluster.replay.plan import ReplayPlan, build_plan
from simcluster.replay.recorded import RecordedRun, check_world_size
from simcluster.replay.report import describe_disagreement, describe_plan, deviations, step_report
from simcluster.spec import hardware
from simcluster.studies.grid import FabricSpec

DEFAULT_NETWORK_MODEL = rescale.DEFAULT_NETWORK_MODEL


@dataclass
class ReplayOutcome:
    """A replayed run on one fabric: the events (one row per replayed op of each agent, recorded times
    alongside), the per-step report rows (``report.step_report``) and the sentences of what was assumed, with
    the plan, the fabric (``label``: as the user named it) and the GPU it ran on (``gpu_assumed``: the trace
    does not name its GPU and none was given)."""

    run: RecordedRun
    plan: ReplayPlan
    fabric: Fabric
    gpu: str  # catalog name of the GPU replayed on
    events: pd.DataFrame
    steps: list[dict]
    assumptions: list[str]
    label: str = ""
    gpu_assumed: bool = False

    def report(self) -> dict:
        """The report ``--json`` prints and ``replay.json`` holds."""
        return {"fabric": self.label or self.fabric.name, "gpu": self.gpu, "gpu_assumed": self.gpu_assumed,
                "steps": self.steps, "deviations": deviations(self.events), "assumptions": self.assumptions}


def replay_traces(traces: Sequence[str | Path], *, topology_name: str | None = None,
                  topology_options: Mapping[str, object] | None = None, **options) -> ReplayOutcome:
    """Replay the run recorded in ``traces`` on one fabric (``replay_on_fabrics`` for the options)."""
    fabrics = None if topology_name is None else [FabricSpec(topology_name, tuple((topology_options or {}).items()))]
    return replay_on_fabrics(traces, fabrics=fabrics, **options)[0]


def replay_on_fabrics(traces: Sequence[str | Path], *, fabrics: Sequence[FabricSpec] | None = None,
                      gpu_name: str | None = None, nic: str | None = None, gpus_per_node: int | None = None,
                      scale_dp: int = 1, network_model: str | None = None, gpu_scaling: str = "roofline",
                      expand: bool = False, algorithm: str = "auto",
                      status: Callable[[str], AbstractContextManager] = nullcontext,
                      into: list[ReplayOutcome] | None = None) -> list[ReplayOutcome]:
    """Replay the run recorded in ``traces`` (Kineto, one file per rank, or Chakra) on each of ``fabrics``.

    The trace is read and planned once. Options left ``None`` are taken from the trace: the GPU (another one
    rescales compute only, ``gpu_scaling`` saying how), the fabric (``fabrics`` None: the one the trace most
    likely ran on) and its NIC (``nic``: a catalog name or a line rate such as '25 Gb/s'; default: the recorded
    GPU's reference server's), the GPUs per node. The fabric never depends on ``gpu_name``: its NVLink is the
    recorded GPU's. ``algorithm`` forces a collective algorithm where an op has it (NCCL_ALGO; else NCCL's
    choice). ``scale_dp`` repeats the recorded world (weak scaling). ``status`` wraps each simulation, the
    slow part, with its description (the command line shows it as a spinner). ``into``: a list each outcome is
    appended to as it finishes (the command line keeps the finished ones when interrupted).
    """
    run = load_trace(traces)
    check_world_size(run.world_size * scale_dp, "--scale-dp")
    recorded_gpu, gpu, busy_s, gpu_assumptions = _compute_on(run, traces, gpu_name, gpu_scaling)
    gpu_assumed = run.gpu_name is None and gpu_name is None
    network_model = network_model or DEFAULT_NETWORK_MODEL
    plan = build_plan(run, scale_dp=scale_dp, busy_s=busy_s, expand=expand)
    outcomes = [] if into is None else into
    for spec in fabrics or [None]:
        fabric, fabric_assumptions = _fabric(run.world_size * scale_dp, recorded_gpu, spec, nic, gpus_per_node,
                                             network_model)
        with status(f"replaying {plan.op_count()} ops on {plan.world_size} ranks"
                    f"{'' if spec is None else ' on ' + spec.label}..."):
            try:
                events = run_plan(plan, fabric, network_model, algorithm).events
            except ScenarioError as err:  # a forced algorithm the fabric or GPU cannot run
                if err.field != "algorithm":
                    raise
                raise ScenarioError("--algorithm", err.message) from None
        mixed = describe_disagreement(events)
        assumptions = [*run.assumptions, *gpu_assumptions, *fabric_assumptions, *plan.assumptions,
                       describe_plan(plan), *([mixed] if mixed else []),
                       *([f"collective algorithm forced: {algorithm} where an op has it (NCCL's choice elsewhere)"]
                         if algorithm != "auto" else [])]
        outcomes.append(ReplayOutcome(run, plan, fabric, gpu, events, step_report(run, events), assumptions,
                                      label=spec.label if spec else fabric.name, gpu_assumed=gpu_assumed))
    return outcomes


def _compute_on(run: RecordedRun, traces: Sequence[str | Path], gpu_name: str | None, gpu_scaling: str
                ) -> tuple[str, str, dict[tuple[int, int], float] | None, list[str]]:
    """The GPU the trace ran on, the GPU replayed on (``gpu_name``, else the trace's), and when they differ
    every compute op's kernel time on the latter; with the sentences saying why.

    Kineto traces are read a second time without merging kernels, so that each kernel of a merged segment is
    rescaled by its own roof; Chakra nodes are already the unit the trace gives.
    """
    recorded_gpu, gpu_sentence = rescale.infer_gpu(run.gpu_name)
    gpu = gpu_name or recorded_gpu
    gpu_spec = hardware.gpu(gpu, field="--gpu")
    if gpu == recorded_gpu:
        return recorded_gpu, gpu, None, [gpu_sentence]
    kineto = not any(is_chakra(path) for path in traces)
    kernels = read_kineto(traces, merge_compute=False) if kineto and gpu_scaling == "roofline" else None
    busy_s, rescale_sentence = rescale.busy_rescaled(run, hardware.gpu(recorded_gpu), gpu_spec, gpu_scaling,
                                                     kernels)
    return recorded_gpu, gpu, busy_s, [gpu_sentence, rescale_sentence]


def _fabric(world: int, gpu: str, spec: FabricSpec | None, nic: str | None, gpus_per_node: int | None,
            network_model: str) -> tuple[Fabric, list[str]]:
    """The fabric of ``world`` GPUs ``gpu`` replayed on, and the sentences saying what it is, read from the
    built fabric (so a fabric file's own links are what is reported), and, when the user chose none of
    topology, NIC and GPUs per node, why the default one."""
    per_node = gpus_per_node or rescale.DEFAULT_GPUS_PER_NODE
    default_topology, default_nic, default_sentence = rescale.default_fabric(world, gpu, per_node)
    nic_spec = nic_from_text(nic, default_nic) if nic else hardware.nic(default_nic)
    name = spec.name if spec else default_topology
    assumptions = [default_sentence] if spec is None and nic is None and gpus_per_node is None else []
    options = dict(spec.options) if spec else {}
    if spec is None and name == "rail-fat-tree":
        options, why = rescale.default_fabric_options(world, per_node)
        assumptions += [why] if why else []
    fabric = topology.build(name, gpus=world, gpus_per_node=per_node, gpu=hardware.gpu(gpu), nic=nic_spec,
                            options=options)
    label = spec.label if spec else name
    assumptions.append(f"fabric replayed on: {label}, {world} GPUs, {per_node} per node, links "
                       f"{describe_links(fabric) or 'none (one GPU)'}, network model {network_model}")
    return fabric, assumptions


def describe_links(fabric: Fabric) -> str:
    """'nvlink 2400 Gb/s, nic 200 Gb/s, ...': each kind of link of ``fabric`` with its rates (what was built)."""
    rates: dict[str, set[float]] = {}
    for kind, rate in zip(fabric.link_kind, fabric.link_bytes_per_s, strict=True):
        rates.setdefault(kind, set()).add(float(rate))
    return ", ".join(f"{kind} " + "/".join(f"{r * 8 / 1e9:.4g}" for r in sorted(values)) + " Gb/s"
                     for kind, values in rates.items())


def nic_from_text(text: str, default_name: str) -> hardware.NicSpec:
    """A catalog NIC, or a line rate ('25 Gb/s'): the default NIC's adapter and host link at that rate."""
    if text in hardware.nic_names():
        return hardware.nic(text, field="--nic")
    try:
        rate = units.parse(text, units.BYTES_PER_S, field="--nic")
    except ScenarioError:
        raise ScenarioError("--nic", f"expected a catalog NIC ({did_you_mean(text, hardware.nic_names())}"
                                     f"{', '.join(hardware.nic_names())}) or a line rate such as '25 Gb/s', got "
                                     f"{quoted(text)}") from None
    units.check_sign(rate, units.POSITIVE, "--nic", text, units.BYTES_PER_S)  # '0 Gb/s', '-5 Gb/s', '1e9 Tb/s'
    base = hardware.nic(default_name)
    return hardware.NicSpec(**{**base.model_dump(), "name": f"custom {rate * 8 / 1e9:g} Gb/s",
                               "rate": f"{rate} B/s"})


__all__ = ["DEFAULT_NETWORK_MODEL", "ReplayOutcome", "describe_links", "nic_from_text", "replay_on_fabrics",
           "replay_traces"]
