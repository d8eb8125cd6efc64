"""``engine.drivers.Groups``: the groups an agent passes to the collective driver at every block, hashed once. The
shortcut must key exactly as the plain tuple of the same groups would (same programs), never confuse two different
sets of groups, and count their members as the direct sum does."""

from __future__ import annotations

import simpy

from simcluster import collectives, network
from simcluster.engine.drivers import CollectiveDriver, Groups, NetworkDriver
from simcluster.fabric import topology
from simcluster.spec import hardware


def test_groups_hash_and_compare_as_their_tuple_and_count_their_members():
    plain = [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9)]
    groups = Groups(plain)
    assert groups == tuple(plain) and hash(groups) == hash(tuple(plain)) == hash(groups)  # the kept hash
    assert groups.members == sum(len(g) for g in plain) == 10
    other = Groups([(0, 1, 2, 3), (4, 5, 6, 7), (8, 10)])
    assert other != groups and hash(other) == hash(tuple(other)) != hash(groups)
    assert {groups: "a", tuple(plain): "b"} == {groups: "b"}  # one key: a Groups finds the tuple's entry


def test_the_driver_makes_one_program_per_set_of_groups_whatever_its_type():
    fabric = topology.build("rail-fat-tree", gpus=16, gpus_per_node=8, gpu=hardware.gpu("h100-sxm"),
                            nic=hardware.nic("connectx-7"), options={})
    env = simpy.Environment()
    driver = CollectiveDriver(env, fabric, NetworkDriver(env, network.make("flow", collectives.calibrated(fabric))))
    tp = [tuple(range(8)), tuple(range(8, 16))]
    across = [tuple(range(0, 16, 2)), tuple(range(1, 16, 2))]
    for groups in (tp, Groups(tp), Groups(tp), Groups(across), across):
        env.process(driver.run_block((("all_gather", 2),), groups, 2**20, tag="tp"))
        env.run()
    programs = {key[1]: program for key, program in driver._programs.items()}
    assert len(driver._programs) == 2 and set(programs) == {tuple(tp), tuple(across)}
    assert programs[tuple(tp)] is not programs[tuple(across)]
