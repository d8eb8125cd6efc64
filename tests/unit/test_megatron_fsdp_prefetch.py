"""Megatron-FSDP's all-gather prefetch budget (parallel/megatron_fsdp_prefetch.py; docs/calibration.md, "Round 29:
the Megatron-FSDP rows on GB200/GB300, prefetch and NCCL's SMs").

Megatron-FSDP's ``AllGatherPipeline.all_gather_params`` adds the next unit's buckets only while the buckets already
requested (the current unit's included) hold fewer than ``suggested_AG_prefetch_size`` = half of
``suggested_communication_unit_size`` elements (megatron_fsdp.py @ 00caa53a). Megatron-Bridge's Llama 3 70B
Blackwell recipes state 800,000,000: a Llama 3 70B layer is 855,654,400 elements at tp 1, so nothing is prefetched and
each unit's gather runs with the compute waiting for it."""

from __future__ import annotations

import pytest

from simcluster.engine import Simulation
from simcluster.parallel import megatron_fsdp_prefetch
from simcluster.spec import config
from simcluster.spec.config import ScenarioError

# Llama 3 70B at tp 1: QKV 8192 x (8192 + 2 x 8 x 128), projection 8192^2, SwiGLU fc1 8192 x 2 x 28672, fc2
# 28672 x 8192, two RMSNorm gains of 8192 (Meta's Llama 3 model card shapes)
LLAMA3_70B_LAYER = 8192 * (8192 + 2 * 1024) + 8192 * 8192 + 8192 * 2 * 28672 + 28672 * 8192 + 2 * 8192


def _scenario(**parallelism) -> config.Scenario:
    return config.from_dict({
        "name": "megatron-fsdp-prefetch",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1, "topology": "nvswitch-node"},
        "model": "llama3-8b",
        "training": {"seq_len": 2048, "global_batch_size": 16, "micro_batch_size": 1, "precision": "bf16"},
        "parallelism": {"tp": 1, "pp": 1, "dp": 8, "zero_stage": 3, **parallelism},
    })


def test_a_llama3_70b_layer_outweighs_the_bridge_recipes_prefetch_budget():
    for gpu in ("gb200", "gb300"):
        scenario = config.load(f"nemo2511-llama3-70b-64-{gpu}-fp8")
        assert scenario.parallelism.suggested_communication_unit_size == 800_000_000
        assert megatron_fsdp_prefetch.unit_elements(scenario) == LLAMA3_70B_LAYER
        assert not megatron_fsdp_prefetch.prefetches_next_unit(scenario)


def test_the_budget_is_half_the_unit_size_and_a_unit_at_the_budget_is_not_prefetched():
    unit = megatron_fsdp_prefetch.unit_elements(_scenario())
    assert megatron_fsdp_prefetch.prefetches_next_unit(_scenario())  # unset: Megatron-FSDP's twice the mean unit
    assert megatron_fsdp_prefetch.prefetches_next_unit(_scenario(suggested_communication_unit_size=int(2 * unit) + 2))
    assert not megatron_fsdp_prefetch.prefetches_next_unit(_scenario(suggested_communication_unit_size=int(2 * unit)))


def test_without_prefetch_no_compute_runs_beside_a_parameter_gather():
    """Each unit's gather is issued at its own hook and waited for: on rank 0 no compute overlaps any gather, the
    data-parallel time exposed is at least every gather's; with the prefetch the gathers hide behind compute."""
    def run(scenario):
        result = Simulation(scenario).run(1)
        events = result.events[result.events["rank"] == 0]
        gathers = events[events["name"].str.startswith("zero3 all_gather")]
        compute = events[events["stream"] == "compute"]
        return result.summary["exposed_comm_by_parallelism_s"]["dp"], gathers, compute

    exposed, gathers, compute = run(_scenario(suggested_communication_unit_size=1))
    gathered_s = float((gathers["end_s"] - gathers["start_s"]).sum())
    assert gathered_s > 0
    for start_s, end_s in zip(gathers["start_s"], gathers["end_s"], strict=True):
        beside = compute[(compute["start_s"] < end_s - 1e-12) & (compute["end_s"] > start_s + 1e-12)]
        assert beside.empty
    assert exposed >= gathered_s * (1 - 1e-9)
    prefetched, prefetched_gathers, _ = run(_scenario())
    assert len(prefetched_gathers) == len(gathers)
    assert prefetched < 0.25 * gathered_s


def test_the_key_is_refused_off_megatron_fsdp():
    with pytest.raises(ScenarioError, match="suggested_communication_unit_size"):
        _scenario(zero_stage=1, suggested_communication_unit_size=800_000_000)
