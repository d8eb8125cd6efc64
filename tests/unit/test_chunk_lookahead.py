"""The chunk model's look-ahead (round 27): rolled back when a class starts before the completion it found, and cut
at checkpoints every ``_LOOKAHEAD_EVENTS`` events. Neither may move a chunk: a step with a checkpoint after every
event, and one with none, give the same floats and the same chunk-hop events as the default."""

from __future__ import annotations

import math

import pytest

from simcluster.engine import Simulation
from simcluster.network import store_forward
from simcluster.spec import config


def _step() -> tuple[float, int]:
    spec = config.from_dict({
        "name": "chunk-lookahead",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2, "nic": "connectx-7",
                    "topology": "rail-fat-tree"},
        "model": {"layers": 4, "hidden": 1024, "heads": 8, "vocab": 32000},
        "training": {"seq_len": 2048, "global_batch_size": 8, "micro_batch_size": 1},
        "parallelism": {"tp": 2, "pp": 2, "dp": 4},
        "network": "chunk",
    })
    simulation = Simulation(spec)
    result = simulation.run(1)
    return result.summary["step_time_s"], simulation.model.events


@pytest.mark.parametrize("budget", [1, 64, math.inf])
def test_checkpoints_and_rollbacks_move_no_chunk(monkeypatch, budget):
    default = _step()
    monkeypatch.setattr(store_forward, "_LOOKAHEAD_EVENTS", budget)
    assert _step() == default
