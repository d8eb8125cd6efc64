"""Several training jobs on one fabric: their traffic shares the links, and each job's slowdown against running
alone on the same placement (the question a cluster operator asks).

All jobs run in one SimPy environment over one network model of the shared fabric (``SharedNetwork``), so their
transfers share links max-min fairly under the ``flow`` model, as one job's transfers do. Each job is an ordinary
``Simulation`` of its own scenario on a *placed* view of the shared fabric (``placed_fabric``: the same graph and link
ids, its GPU i the shared fabric's GPU ``gpus[i]``), so its collectives are chosen and timed for where it runs;
``JobNetwork`` translates its ranks into the shared fabric's GPUs on their way to the network and names its
transfers after the job, so no two jobs' transfers merge into one class.

Each job steps until every job has done its ``steps`` (a job that finishes first keeps training, as it would on a
real cluster, so the others see its traffic to the end); a job's result is a snapshot at the end of its own
``steps``-th step. ``run`` simulates the jobs together, then each alone on the same placement (the same machinery
with one job), and reports each job's step time both ways and their ratio.

Simplifications (docs/scenario.md): jobs start their first step together at t = 0, so identical jobs communicate
in phase (their contention is the in-phase case, not an average over offsets); a job's summary carries the shared
fabric's link loads (all jobs' traffic) and its bill's counts (the whole fabric), with the fabric's capital cost and
power pro rata to the job's GPUs (``own_share``); torus fabrics (GPU-routed, indexed by global position) are not
placed.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict

import numpy as np
import simpy

from simcluster.core.errors import ScenarioError
from simcluster.engine.drivers import NetworkDriver
from simcluster.engine.merge import SYMMETRIC
from simcluster.engine.results import Result, summarize
from simcluster.engine.simulation import Simulation, make_network
from simcluster.fabric import topology
from simcluster.fabric.topology import Fabric
from simcluster.network.base import TransferClass
from simcluster.spec.jobs import Jobs, PlacedJob


def shared_fabric(jobs: Jobs) -> Fabric:
    """The fabric of the jobs' shared cluster."""
    c = jobs.cluster
    if c.topology == "torus":
        raise ScenarioError("cluster.topology", "jobs on a torus are not placed (its routes are tables over every "
                            "GPU of the torus); use a switched fabric")
    return topology.build(c.topology, gpus=c.gpus, gpus_per_node=c.gpus_per_node, gpu=c.gpu, nic=c.nic,
                          options=c.topology_options, sharp=c.sharp)


def placed_fabric(fabric: Fabric, gpus) -> Fabric:
    """``fabric`` seen by a job on ``gpus``: the same graph, links and link ids; GPU i is ``fabric``'s GPU
    ``gpus[i]`` (its routes are the shared fabric's routes between those GPUs)."""
    return dataclasses.replace(fabric, gpu_nodes=[fabric.gpu_nodes[g] for g in gpus], _router=None,
                               _routes=OrderedDict(), _small_routes={})


class SharedNetwork:
    """One environment and one network model of the shared fabric, driven by one ``NetworkDriver``."""

    def __init__(self, fabric: Fabric, network_name: str):
        self.env = simpy.Environment()
        self.model = make_network(network_name, fabric)
        self.driver = NetworkDriver(self.env, self.model, SYMMETRIC)


class JobNetwork:
    """A job's view of a ``SharedNetwork`` (what ``Simulation`` takes as ``shared_network``): its transfers with
    their ranks translated into the shared fabric's GPUs and labelled with the job's name (the merge policy keeps
    differently labelled calls apart: jobs never share a class)."""

    def __init__(self, shared: SharedNetwork, gpus, name: str):
        self.env, self.model, self._driver = shared.env, shared.model, shared.driver
        self._gpus = np.asarray(gpus, dtype=np.int64)
        self._name = name
        self._placed: dict[TransferClass, TransferClass] = {}  # the engine reuses its classes: translate once

    def transfer(self, transfers: TransferClass) -> simpy.Event:
        placed = self._placed.get(transfers)
        if placed is None:
            placed = TransferClass(self._gpus[transfers.pairs], transfers.size_bytes,
                                   f"{self._name}: {transfers.label}", transfers.parts)
            self._placed[transfers] = placed
        return self._driver.transfer(placed)


def simulate_together(jobs: Jobs, placed: tuple[PlacedJob, ...], fabric: Fabric, network_name: str | None = None,
                      steps: int | None = None, check_memory: bool = True) -> list[Result]:
    """Simulate ``placed`` jobs at once on ``fabric`` (one network); each job's Result at the end of its own
    ``steps`` (default: its scenario's training.steps)."""
    shared = SharedNetwork(fabric, network_name or jobs.network)
    sims = []
    for job in placed:
        try:
            sims.append(Simulation(job.scenario, network_name or jobs.network, fabric=placed_fabric(fabric, job.gpus),
                                   check_memory=check_memory, shared_network=JobNetwork(shared, job.gpus, job.name)))
        except ScenarioError as err:  # a layout that does not fit names its job
            raise ScenarioError(f"jobs.{jobs.jobs.index(job)}.{err.field}", err.message) from None
    env = shared.env
    records: list = [None] * len(sims)
    all_done = env.event()
    started = time.perf_counter()

    def train(index: int, sim: Simulation, wanted: int):
        step = 0
        while True:
            yield env.all_of([env.process(agent.step(step)) for agent in sim.agents])
            step += 1
            if step == wanted:  # this job's result; it keeps training while the others finish theirs
                records[index] = own_share(sim.record(wanted, time.perf_counter() - started), fabric)
                if all(r is not None for r in records):
                    all_done.succeed()
                    return

    for index, sim in enumerate(sims):
        env.process(train(index, sim, steps or sim.scenario.training.steps))
    env.run(until=all_done)
    return [summarize(record) for record in records]


def own_share(record, fabric: Fabric):
    """A job's record with the shared fabric's capital cost and power pro rata to its GPUs (the fabric's cost per
    GPU-hour is the same for every job, as on the whole cluster); the bill's counts stay the whole fabric's."""
    bill = record.fabric_bill
    if bill is None:
        return record
    share = record.scenario.cluster.gpus / fabric.gpus
    return dataclasses.replace(record, fabric_bill={**bill, "capex_usd": bill["capex_usd"] * share,
                                                    "power_w": bill["power_w"] * share})


@dataclasses.dataclass(frozen=True)
class JobsResult:
    """Each job's results together and alone, and the summary rows."""

    jobs: Jobs
    together: list[Result]
    alone: list[Result]
    network_model: str
    wall_time_s: float

    @property
    def rows(self) -> list[dict]:
        """The summary's ``jobs``: per job, its step time with the others and alone on the same nodes."""
        rows = []
        for job, together, alone in zip(self.jobs.jobs, self.together, self.alone, strict=True):
            t, a = together.summary, alone.summary
            rows.append({
                "name": job.name, "gpus": len(job.gpus), "nodes": list(job.nodes),
                "step_time_s": t["step_time_s"], "step_time_alone_s": a["step_time_s"],
                "slowdown": t["step_time_s"] / a["step_time_s"],
                "exposed_comm_s": t["exposed_comm_s"], "exposed_comm_alone_s": a["exposed_comm_s"],
                "tokens_per_s": t["tokens_per_s"], "tokens_per_s_alone": a["tokens_per_s"],
            })
        return rows

    @property
    def summary(self) -> dict:
        c = self.jobs.cluster
        return {
            "name": self.jobs.name, "gpus": c.gpus, "gpu": c.gpu.name, "topology": c.topology,
            "network_model": self.network_model, "jobs": self.rows, "wall_time_s": self.wall_time_s,
            "note": "jobs start together at t = 0 (in phase); slowdown = step time with the other jobs / alone on "
                    "the same nodes; each job's own summary (its folder) carries the shared fabric's link loads "
                    "and its GPUs' share of the fabric's cost",
        }


def run(jobs: Jobs, network_name: str | None = None, steps: int | None = None,
        check_memory: bool = True) -> JobsResult:
    """The jobs together on their shared fabric, then each alone on the same placement."""
    started = time.perf_counter()
    fabric = shared_fabric(jobs)
    together = simulate_together(jobs, jobs.jobs, fabric, network_name, steps, check_memory)
    alone = [simulate_together(jobs, (job,), fabric, network_name, steps, check_memory)[0] for job in jobs.jobs]
    return JobsResult(jobs, together, alone, network_name or jobs.network, time.perf_counter() - started)
