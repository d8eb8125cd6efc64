"""An expanded run (one agent per GPU) finds each agent's groups by lookup in tables made once, shares one list per
group among the group's agents, and lets only the last member of a rendezvous start a process: the same groups and
the same results as building them per agent, at a cost linear in the GPU count (issue 19)."""

from __future__ import annotations

import itertools

import pytest
import simpy

from simcluster.engine import Simulation
from simcluster.spec import config


def _scenario(parallelism: dict, nodes: int = 4) -> config.Scenario:
    return config.from_dict({
        "name": "groups", "model": {"layers": 8, "hidden": 1024, "heads": 8, "vocab": 32000},
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": nodes, "nic": "connectx-7",
                    "topology": "rail-fat-tree"},
        "training": {"seq_len": 1024, "global_batch_size": 16, "micro_batch_size": 1},
        "parallelism": parallelism,
    })


def _group_by_definition(layout, rank: int, axes: tuple[str, ...]) -> tuple[int, ...]:
    """The ranks that differ from ``rank`` only on ``axes``, in the order of the axes' coordinates (the first
    axis slowest), from ``Layout.coords`` and ``Layout.rank`` alone."""
    coords = layout.coords(rank)
    return tuple(layout.rank(**{**coords, **dict(zip(axes, values, strict=True))})
                 for values in itertools.product(*(range(getattr(layout, axis)) for axis in axes)))


@pytest.mark.parametrize("parallelism", [{"tp": 2, "cp": 2, "pp": 2, "dp": 4}, {"tp": 4, "pp": 2, "dp": 4},
                                         {"tp": 2, "pp": 2, "dp": 8, "order": "dp-tp-cp-pp"}])
def test_every_expanded_agent_gets_the_group_its_coordinates_define(parallelism):
    sim = Simulation(_scenario(parallelism), expand=True, check_memory=False)
    layout = sim.plan.layout
    for axes in (("dp", "cp"), ("tp",), ("cp",)):
        for agent in sim.agents:
            assert list(sim._groups(agent, axes)) == [_group_by_definition(layout, agent.rank, axes)]


def test_agents_of_one_group_share_its_list_and_the_whole_job_group_is_made_once():
    sim = Simulation(_scenario({"tp": 2, "pp": 2, "dp": 8}), expand=True, check_memory=False)
    by_group: dict = {}
    for agent in sim.agents:
        groups = sim._groups(agent, ("dp", "cp"))
        assert by_group.setdefault(groups[0], groups) is groups
    assert len(by_group) == 4  # tp x pp data-parallel groups of 8
    whole = {id(sim._step_groups(agent, "grad norm")) for agent in sim.agents}
    assert sim.plan.grad_norm_axes and len(whole) == 1  # the distributed optimizer's norm over every rank


def test_collapsed_agents_keep_the_groups_of_all_their_ranks():
    sim = Simulation(_scenario({"tp": 2, "pp": 2, "dp": 8}), check_memory=False)
    layout = sim.plan.layout
    for agent in sim.agents:
        want = sorted({_group_by_definition(layout, r, ("dp", "cp")) for r in agent.ranks})
        assert list(sim._groups(agent, ("dp", "cp"))) == want


def test_only_the_last_member_of_a_tensor_parallel_rendezvous_starts_a_process():
    sim = Simulation(_scenario({"tp": 4, "pp": 2, "dp": 4}), expand=True, check_memory=False)
    started = []
    process = simpy.Environment.process
    sim.env.process = lambda generator: started.append(generator.__name__) or process(sim.env, generator)
    members = [a for a in sim.agents if a.rank in sim._groups(sim.agents[0], ("tp",))[0]]
    done = [sim.tensor_parallel(agent, (("allreduce", 1),), 1e6, "block") for agent in members]
    assert started == ["_run_tensor_parallel"]  # three members counted themselves in; the fourth runs it
    sim.env.run()
    assert all(event.processed for event in done)
    assert sim._rendezvous == {}
