"""Megatron-FSDP's all-gather prefetch by Megatron-Core release (parallel/megatron_fsdp_prefetch.py;
docs/calibration/round-29.md, "Round 29: review of the Megatron-FSDP prefetch and the QK-norm copies").

The truth here is ``AllGatherPipeline.all_gather_params``'s loop as the released megatron-core wheels have it, written
out below (``units_prefetched``), not the model's rule:
- 0.12.0 / 0.13.0 (``custom_fsdp/param_and_grad_buffer.py``): ``all_gather_size`` sums every bucket requested, the
  current unit's included, and the loop breaks once it reaches ``suggested_AG_prefetch_size``, which
  ``fully_sharded_data_parallel.py`` sets to ``suggested_communication_unit_size`` itself;
- 0.14.0 / 0.15.0 / 0.16.0 (``fsdp/src/megatron_fsdp/param_and_grad_buffer.py``): ``prefetch_all_gather_size`` is that
  sum minus ``base_all_gather_size`` (the current unit's), against half the size (``megatron_fsdp.py``);
- ``fsdp_double_buffer`` (the Bridge recipes') stops the loop at two units in flight (``need_skip_prefetch``).
Megatron-Bridge's Llama 3 70B Blackwell recipes state 800,000,000 on NeMo 25.11's Megatron-Core 0.15.
"""

from __future__ import annotations

import pytest

from simcluster.engine import Simulation
from simcluster.parallel import megatron_fsdp_prefetch
from simcluster.spec import config
from simcluster.spec.config import ScenarioError

# Llama 3 70B at tp 1: QKV 8192 x (8192 + 2 x 8 x 128), projection 8192^2, SwiGLU fc1 8192 x 2 x 28672, fc2
# 28672 x 8192, two RMSNorm gains of 8192 (Meta's Llama 3 model card shapes)
LLAMA3_70B_LAYER = 8192 * (8192 + 2 * 1024) + 8192 * 8192 + 8192 * 2 * 28672 + 28672 * 8192 + 2 * 8192
COUNTS_CURRENT_UNIT = {"0.12": True, "0.13": True, "0.14": False, "0.15": False, "0.16": False}
BUDGET_SHARE = {"0.12": 1, "0.13": 1, "0.14": 2, "0.15": 2, "0.16": 2}   # size, or size // 2


def units_prefetched(release: str, unit: int, size: int, later_units: int = 4, double_buffer: bool = False) -> int:
    """How many further equal units one pre-forward hook requests, by the release's loop."""
    budget, requested, prefetched = size // BUDGET_SHARE[release], unit, 0
    base = 0 if COUNTS_CURRENT_UNIT[release] else unit
    while prefetched < later_units:
        if requested - base >= budget or (double_buffer and 1 + prefetched + 1 > 2):  # units in flight
            break
        requested, prefetched = requested + unit, prefetched + 1
    return prefetched


def _scenario(mcore_version: str | None = "0.15", **parallelism) -> config.Scenario:
    training = {"seq_len": 2048, "global_batch_size": 16, "micro_batch_size": 1, "precision": "bf16"}
    if mcore_version is not None:
        training["mcore_version"] = mcore_version
    return config.from_dict({
        "name": "megatron-fsdp-prefetch",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1, "topology": "nvswitch-node"},
        "model": "llama3-8b", "training": training,
        "parallelism": {"tp": 1, "pp": 1, "dp": 8, "zero_stage": 3, **parallelism},
    })


def test_the_bridge_70b_recipes_unit_size_still_prefetches_the_next_layer_on_megatron_core_0_15():
    for gpu in ("gb200", "gb300"):
        scenario = config.load(f"nemo2511-llama3-70b-64-{gpu}-fp8")
        assert scenario.training.mcore_version == "0.15"
        assert scenario.parallelism.suggested_communication_unit_size == 800_000_000
        assert megatron_fsdp_prefetch.unit_elements(scenario) == LLAMA3_70B_LAYER
        assert units_prefetched("0.15", LLAMA3_70B_LAYER, 800_000_000, double_buffer=True) == 1
        assert megatron_fsdp_prefetch.prefetches_next_unit(scenario)
    # the same size on 0.13's custom FSDP would have prefetched nothing
    assert units_prefetched("0.13", LLAMA3_70B_LAYER, 800_000_000) == 0


@pytest.mark.parametrize("release", sorted(COUNTS_CURRENT_UNIT))
def test_prefetch_follows_the_releases_loop(release):
    unit = int(megatron_fsdp_prefetch.unit_elements(_scenario(release)))
    for size in (1, unit // 2, unit, unit + 1, 2 * unit, 2 * unit + 2, 10 * unit):
        expected = units_prefetched(release, unit, size) > 0
        assert megatron_fsdp_prefetch.prefetches_next_unit(
            _scenario(release, suggested_communication_unit_size=size)) is expected, (release, size)
    # unset: the release's default (twice the mean unit in 0.12-0.13; 1e9 in 0.14-0.15) prefetches a layer
    assert megatron_fsdp_prefetch.prefetches_next_unit(_scenario(release))
    default = 2 * unit if COUNTS_CURRENT_UNIT[release] else 1_000_000_000
    assert units_prefetched(release, unit, default) > 0


def test_without_prefetch_no_compute_runs_beside_a_parameter_gather():
    """0.13 with half a unit: each unit's gather is issued at its own hook and waited for, so on rank 0 no compute
    overlaps any gather and the data-parallel time exposed is at least every gather's; 0.15 with the same size
    prefetches, and the gathers hide behind compute."""
    def run(scenario):
        result = Simulation(scenario).run(1)
        events = result.events[result.events["rank"] == 0]
        gathers = events[events["name"].str.startswith("zero3 all_gather")]
        compute = events[events["stream"] == "compute"]
        return result.summary["exposed_comm_by_parallelism_s"]["dp"], gathers, compute

    size = int(megatron_fsdp_prefetch.unit_elements(_scenario()) // 2)
    exposed, gathers, compute = run(_scenario("0.13", suggested_communication_unit_size=size))
    gathered_s = float((gathers["end_s"] - gathers["start_s"]).sum())
    assert gathered_s > 0
    for start_s, end_s in zip(gathers["start_s"], gathers["end_s"], strict=True):
        beside = compute[(compute["start_s"] < end_s - 1e-12) & (compute["end_s"] > start_s + 1e-12)]
        assert beside.empty
    assert exposed >= gathered_s * (1 - 1e-9)
    prefetched, prefetched_gathers, _ = run(_scenario("0.15", suggested_communication_unit_size=size))
    assert len(prefetched_gathers) == len(gathers)
    assert prefetched < 0.25 * gathered_s


def test_the_key_is_refused_off_megatron_fsdp_and_before_its_release():
    with pytest.raises(ScenarioError, match="suggested_communication_unit_size"):
        _scenario(zero_stage=1, suggested_communication_unit_size=800_000_000)
    # megatron-core 0.11.0's DistributedDataParallelConfig has no such field (no FSDP before 0.12); unstated on
    # H100 the release is NeMo 24.09's 0.9
    for release in ("0.11", None):
        with pytest.raises(ScenarioError, match="suggested_communication_unit_size"):
            _scenario(release, suggested_communication_unit_size=800_000_000)
    assert _scenario("0.12", suggested_communication_unit_size=800_000_000)
