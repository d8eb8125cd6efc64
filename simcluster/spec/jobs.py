"""Several jobs on one fabric: a scenario whose ``jobs:`` list places training jobs on the nodes of one ``cluster``.

A jobs scenario has ``name``, ``cluster`` (the shared fabric: every node of it), ``network`` and ``jobs``; each job
is a training scenario without a cluster of its own (``scenario``: a file or bundled name whose model, training,
parallelism and variability it takes, its ``cluster`` ignored; and/or those sections inline, which override the
file's) and a ``placement`` on the shared cluster's nodes. A job runs on whole nodes (tp*pp*dp*cp a multiple of
``gpus_per_node``), as exclusive node allocation in Slurm does. ``engine.jobs`` simulates the jobs together on one
network and each alone on the same placement; docs/scenario.md ("Several jobs on one fabric") documents the format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

from simcluster.core import inputs
from simcluster.core.errors import ScenarioError
from simcluster.spec import config
from simcluster.spec.base import Spec
from simcluster.spec.config import Cluster, Scenario

Index = Annotated[int, Strict(), Field(ge=0)]
Positive = Annotated[int, Strict(), Field(ge=1)]

# Sections of a training scenario a job may give inline (its cluster is the shared one).
JOB_SECTIONS = ("model", "training", "parallelism", "variability", "reliability", "economics")


class Placement(Spec):
    model_config = ConfigDict(extra="forbid", frozen=True)

    nodes: list[Index] | None = Field(None, description="the shared cluster's nodes the job runs on, in rank order "
                                      "(rank r on node nodes[r // gpus_per_node])")
    first_node: Index | None = Field(None, description="first node of the job's nodes: first_node, "
                                     "first_node + stride, ... (as many as the job needs)")
    stride: Positive = Field(1, description="with first_node: 1 = contiguous nodes, 2 = every other node "
                             "(interleaved with another job), ...")

    @model_validator(mode="after")
    def _one_form(self) -> Placement:
        if (self.nodes is None) == (self.first_node is None):
            raise ValueError("give exactly one of nodes and first_node")
        if self.nodes is not None and self.stride != 1:
            raise ValueError("stride goes with first_node, not with nodes")
        return self


# Files a jobs run writes beside the jobs' folders (cli/run.run_jobs): a job of that name would have its folder there.
TOP_LEVEL_FILES = ("summary.json",)


class Job(Spec):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                      description="names the job in the summary and its output folder")
    scenario: str | None = Field(None, description="a scenario file or bundled name: the job's model, training, "
                                 "parallelism and variability (its cluster is replaced by the shared one)")
    placement: Placement = Field(description="where the job runs: {first_node, stride} or {nodes: [...]}")
    model: Any = None
    training: Any = None
    parallelism: Any = None
    variability: Any = None
    reliability: Any = None
    economics: Any = None


class JobsScenario(Spec):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("jobs", pattern=r"^[^/\\.][^/\\]*$")
    description: str = Field("", max_length=config.MAX_DESCRIPTION_CHARS, pattern=r"^[^\n\r]*$",
                             description="one line: what the scenario is for (`simcluster run --list`)")
    cluster: Cluster = Field(description="the shared cluster and fabric: every node the jobs may use")
    network: str = Field("flow", description="network model (analytic | flow | chunk)")
    jobs: list[Job] = Field(min_length=1, description="the jobs and their placements")

    # a folder's name, checked as a single-job scenario's (round 37: only its length in characters was, so a name
    # of 150 two-byte characters, a tab or a leading space was refused as the first job's name)
    _folder_name = field_validator("name")(config.folder_name)


@dataclass(frozen=True)
class PlacedJob:
    """A job resolved: its own training scenario (cluster: its nodes' count of the shared cluster's) and the
    shared fabric's GPU index of each of its ranks."""

    name: str
    scenario: Scenario
    nodes: tuple[int, ...]
    gpus: tuple[int, ...]


@dataclass(frozen=True)
class Jobs:
    """A jobs scenario resolved: the shared cluster (as a scenario, for its fabric) and the placed jobs."""

    name: str
    cluster: Cluster
    network: str
    jobs: tuple[PlacedJob, ...]


def has_jobs(data: Any) -> bool:
    """Whether a parsed scenario document lists jobs."""
    return isinstance(data, dict) and "jobs" in data


def is_jobs_file(name_or_path: str | Path | None) -> bool:
    """Whether a scenario file (or bundled name) is a jobs scenario."""
    path = config.resolve_path(name_or_path)
    return has_jobs(inputs.load_yaml(path, inputs.MAX_SCENARIO_BYTES, "scenario file"))


def load(name_or_path: str | Path | None) -> Jobs:
    """Read and resolve a jobs scenario file."""
    path = config.resolve_path(name_or_path)
    return from_dict(inputs.load_yaml(path, inputs.MAX_SCENARIO_BYTES, "scenario file"), str(path))


def from_dict(data: Any, source: str = "scenario") -> Jobs:
    """Validate a jobs scenario and resolve every job into its own training scenario and GPUs."""
    if network := (data.get("network") if isinstance(data, dict) else None):
        if network not in config.NETWORK_MODELS:
            raise ScenarioError("network", f"expected one of {', '.join(config.NETWORK_MODELS)}, got {network!r}")
    try:
        spec = JobsScenario.model_validate(data)
    except ScenarioError:
        raise
    except ValidationError as err:
        config.raise_first(err, source, JobsScenario)
    folded = [job.name.casefold() for job in spec.jobs]
    for index, name in enumerate(job.name for job in spec.jobs):
        if folded[index] in folded[:index]:  # one folder where case is not told apart (round 34: a and A)
            other = spec.jobs[folded.index(folded[index])].name
            raise ScenarioError(f"jobs.{index}.name", f"{name!r} names two jobs" if other == name else
                                f"{name!r} and {other!r} differ in case only: their folders are one on a file "
                                "system that ignores case (macOS, Windows), the second job's files over the first's")
        if name.casefold() in TOP_LEVEL_FILES:  # the job's folder would be the run's own file (round 29)
            raise ScenarioError(f"jobs.{index}.name", f"{name!r} is the name of a file the run writes beside the "
                                f"jobs' folders ({', '.join(TOP_LEVEL_FILES)})")
    cluster_dict = data["cluster"]
    owner: dict[int, str] = {}
    placed = []
    for index, job in enumerate(spec.jobs):
        scenario = _job_scenario(job, cluster_dict, spec, index, source)
        nodes = _nodes(job, scenario, spec.cluster, index)
        for node in nodes:
            if node in owner:
                raise ScenarioError(f"jobs.{index}.placement", f"node {node} is already job {owner[node]!r}'s")
            owner[node] = job.name
        per_node = spec.cluster.gpus_per_node
        gpus = tuple(node * per_node + g for node in nodes for g in range(per_node))
        placed.append(PlacedJob(job.name, scenario, tuple(nodes), gpus))
    return Jobs(spec.name, spec.cluster, spec.network, tuple(placed))


def _job_scenario(job: Job, cluster_dict: dict, spec: JobsScenario, index: int, source: str) -> Scenario:
    """The job's training scenario: its file's sections, overridden by its inline ones, on its share of the
    shared cluster."""
    where = f"jobs.{index}"
    body: dict = {}
    if job.scenario is not None:
        try:
            path = config.resolve_path(job.scenario)
        except ScenarioError as err:
            raise ScenarioError(f"{where}.scenario", err.message) from None
        loaded = inputs.load_yaml(path, inputs.MAX_SCENARIO_BYTES, "scenario file")
        if not isinstance(loaded, dict) or has_jobs(loaded):
            raise ScenarioError(f"{where}.scenario", f"{path} is not a single-job scenario")
        body.update({key: loaded[key] for key in JOB_SECTIONS if key in loaded})
    body.update({key: getattr(job, key) for key in JOB_SECTIONS if getattr(job, key) is not None})
    for key in ("model", "training"):
        if key not in body:
            raise ScenarioError(f"{where}.{key}", "required: inline or from the job's scenario file")
    p = body.get("parallelism") or {}
    if not isinstance(p, dict):
        raise ScenarioError(f"{where}.parallelism", "expected a mapping")
    gpus = 1
    for axis in ("tp", "pp", "dp", "cp"):
        value = p.get(axis, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ScenarioError(f"{where}.parallelism.{axis}", f"expected a positive integer, got {value!r}")
        gpus *= value
    per_node = spec.cluster.gpus_per_node
    if gpus % per_node:
        raise ScenarioError(f"{where}.parallelism", f"tp*pp*dp*cp = {gpus} GPUs is not a whole number of "
                            f"{per_node}-GPU nodes (jobs get whole nodes)")
    nodes = gpus // per_node
    if nodes > spec.cluster.nodes:
        raise ScenarioError(f"{where}.parallelism", f"{gpus} GPUs need {nodes} nodes; the cluster has "
                            f"{spec.cluster.nodes}")
    body["name"] = _job_scenario_name(spec.name, job.name)
    body["cluster"] = {**cluster_dict, "nodes": nodes}
    body["network"] = spec.network
    try:
        return config.from_dict(body, source)
    except ScenarioError as err:
        raise ScenarioError(f"{where}.{err.field}", err.message) from None


def _job_scenario_name(scenario: str, job: str) -> str:
    """A job's own scenario name, SCENARIO-JOB, a folder name of at most ``config.MAX_NAME_BYTES``: the scenario's
    part cut in bytes (a character cut in two dropped), the job's name (64 ASCII characters at most) kept whole, so
    two jobs never share one. Round 37: the whole was cut at 200 characters, so the jobs of a 190-character
    scenario named 'x...1' and 'x...2' both became the same name, and a scenario of 99 two-byte characters
    had every job refused as 'jobs.0.name: is 202 bytes long', the job's name being one character."""
    suffix = f"-{job}"
    return scenario.encode()[:config.MAX_NAME_BYTES - len(suffix.encode())].decode(errors="ignore") + suffix


def _nodes(job: Job, scenario: Scenario, cluster: Cluster, index: int) -> list[int]:
    """The shared cluster's nodes of the job, in rank order."""
    where = f"jobs.{index}.placement"
    needed = scenario.cluster.nodes
    placement = job.placement
    if placement.nodes is not None:
        nodes = list(placement.nodes)
        if len(nodes) != needed:
            raise ScenarioError(f"{where}.nodes", f"lists {len(nodes)} nodes; the job's tp*pp*dp*cp needs {needed}")
        if len(set(nodes)) != len(nodes):
            raise ScenarioError(f"{where}.nodes", "lists a node twice")
    else:
        nodes = [placement.first_node + i * placement.stride for i in range(needed)]
    beyond = [n for n in nodes if n >= cluster.nodes]
    if beyond:
        raise ScenarioError(where, f"node {beyond[0]} is not one of the cluster's {cluster.nodes} nodes "
                            f"(0 to {cluster.nodes - 1})")
    return nodes
