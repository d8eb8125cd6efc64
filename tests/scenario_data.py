"""Scenario dictionaries with ``section__key=value`` changes applied (shared by the tests; ``tests/`` is on the path
as the conftest's folder)."""

from __future__ import annotations

import copy

from simcluster.spec import config

# a small Mixtral 8x7B run on Megatron-Core with the alltoall dispatcher (NeMo's token drop applies by default): the
# token-drop tests' base (tests/cli/test_moe_token_drop_cli.py, tests/unit/test_sweep.py); copy before changing it
MIXTRAL = {"name": "mixtral", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2},
           "model": "mixtral-8x7b", "training": {"seq_len": 1024, "global_batch_size": 16, "micro_batch_size": 1},
           "parallelism": {"tp": 1, "pp": 2, "dp": 8, "ep": 8}, "network": "analytic"}


def with_changes(data: dict, **changes) -> config.Scenario:
    """The scenario of ``data`` (left unchanged) with each ``section__key=value`` of ``changes`` set."""
    data = copy.deepcopy(data)
    for path, value in changes.items():
        section, key = path.split("__")
        data[section][key] = value
    return config.from_dict(data)


def bundled_with_training(name: str, **training) -> config.Scenario:
    """The bundled scenario ``name`` (as written: unset keys stay unset, so defaults resolve again) with each
    ``training`` key set."""
    data = config.load(name).model_dump(mode="json", exclude_none=True)
    data["training"].update(training)
    return config.from_dict(data)


def sequence_parallel_grads_s(sim, group: tuple[int, ...]) -> float:
    """The step's TP all-reduce of the sequence-parallel parameters' gradients (parallel.sequence_parallel_grads)
    timed alone on ``group``, as the engine tallies it (tensor-parallel communication), for a one-stage plan."""
    from simcluster.collectives import timing

    (size_bytes,) = sim.plan.sequence_parallel_grad_bytes
    return timing.isolated_time_s(sim.fabric, "allreduce", group, size_bytes) if size_bytes else 0.0
