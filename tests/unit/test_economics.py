"""Time, GPU-hours, cost, energy, CO2 and the Landauer ratio to a target loss, each recomputed by hand."""

import math

import numpy as np
import pytest

from simcluster.core.errors import ScenarioError
from simcluster.outcomes import economics, laws
from simcluster.spec import config

# A small hand-built plant: 16 GPUs at 700 W TDP / 70 W idle, 8 per node with 1.5 kW overhead, PUE 1.2.
PLANT = economics.Plant(price_per_gpu_hour=2.5, gpu_tdp_w=700.0, gpu_idle_w=70.0, gpus_per_node=8,
                        node_overhead_w=1500.0, pue=1.2, grid_kg_co2_per_kwh=0.4, params=7e9,
                        non_embedding_params=6.5e9, bits_per_flop=16)
SUMMARY = {"tokens_per_s": 1.0e6, "gpus": 16, "step_time_s": 4.0, "mfu": 0.4, "exposed_comm_s": 0.6,
           "pipeline_bubble_s": 0.4}


def chinchilla_tokens(n, target):
    return (410.7 / (target - 1.69 - 406.4 / n**0.34)) ** (1 / 0.28)


def test_time_cost_energy_and_co2_to_a_target_match_hand_arithmetic():
    report = economics.time_to_target(SUMMARY, PLANT, "chinchilla", target_loss=2.2, goodput=0.5)
    tokens = chinchilla_tokens(7e9, 2.2)
    time_s = tokens / (0.5 * 1.0e6)
    busy = 1 - (0.6 + 0.4) / 4.0
    power_w = 1.2 * (16 * (70 + 630 * busy) + 2 * 1500)
    assert report["tokens_to_target"] == pytest.approx(tokens, rel=1e-12)
    assert report["time_to_target_s"] == pytest.approx(time_s, rel=1e-12)
    assert report["gpu_hours"] == pytest.approx(16 * time_s / 3600, rel=1e-12)
    assert report["cost_usd"] == pytest.approx(16 * time_s / 3600 * 2.5, rel=1e-12)
    assert report["busy_fraction"] == pytest.approx(0.75)
    assert report["energy_j"] == pytest.approx(power_w * time_s, rel=1e-12)
    assert report["co2_kg"] == pytest.approx(power_w * time_s / 3.6e6 * 0.4, rel=1e-12)
    assert report["law"] == "chinchilla"


def test_landauer_bound_is_kt_ln2_per_bit_of_each_training_flop():
    kt_ln2 = 1.380649e-23 * 300 * math.log(2)
    assert economics.landauer_j_per_bit() == pytest.approx(kt_ln2, rel=1e-12)
    assert economics.landauer_j_per_bit() == pytest.approx(2.871e-21, rel=1e-3)  # shared/reference value
    report = economics.time_to_target(SUMMARY, PLANT, "chinchilla", tokens=1e11)
    bit_ops = 6 * 7e9 * 1e11 * 16
    assert report["landauer_j"] == pytest.approx(bit_ops * kt_ln2, rel=1e-12)
    assert report["energy_over_landauer"] == pytest.approx(report["energy_j"] / (bit_ops * kt_ln2), rel=1e-12)
    assert 1e6 < report["energy_over_landauer"] < 1e10  # real hardware is 10^7-10^8 above the bound


def test_a_token_budget_reports_the_loss_it_reaches():
    report = economics.time_to_target(SUMMARY, PLANT, "chinchilla", tokens=2e11)
    assert report["loss"] == pytest.approx(1.69 + 406.4 / 7e9**0.34 + 410.7 / 2e11**0.28, rel=1e-12)
    assert report["time_to_target_s"] == pytest.approx(2e11 / 1e6)


def test_kaplan_counts_non_embedding_parameters():
    report = economics.time_to_target(SUMMARY, PLANT, "kaplan", tokens=1e11)
    assert report["params"] == 6.5e9
    assert report["loss"] == pytest.approx(((6.4e13 / 6.5e9) ** (0.076 / 0.103) + 1.8e13 / 1e11) ** 0.103)


@pytest.mark.parametrize("busy,expected,basis", [(0.3, 0.3, "stated"), ("mfu", 0.4, "mfu")])
def test_busy_fraction_can_be_stated_or_taken_from_mfu(busy, expected, basis):
    report = economics.time_to_target(SUMMARY, PLANT, "chinchilla", tokens=1e11, busy_fraction=busy)
    assert report["busy_fraction"] == pytest.approx(expected)
    assert report["busy_fraction_basis"] == basis
    assert report["facility_power_w"] == pytest.approx(1.2 * (16 * (70 + 630 * expected) + 2 * 1500))


def test_without_a_step_breakdown_gpus_are_counted_at_tdp():
    report = economics.time_to_target({"tokens_per_s": 1e6, "gpus": 16}, PLANT, "chinchilla", tokens=1e11)
    assert report["busy_fraction"] == 1.0
    assert report["facility_power_w"] == pytest.approx(1.2 * (16 * 700 + 2 * 1500))


def test_a_partial_node_still_pays_its_node_overhead():
    assert economics.facility_power_w(PLANT, 9, 1.0) == pytest.approx(1.2 * (9 * 700 + 2 * 1500))


def test_plant_from_the_bundled_scenario_reads_catalog_and_economics():
    scenario = config.load(None)
    plant = economics.Plant.from_scenario(scenario)
    assert plant.gpu_tdp_w == scenario.cluster.gpu.tdp
    assert plant.node_overhead_w == pytest.approx(1500.0)
    assert plant.params == scenario.model.params
    assert plant.non_embedding_params == scenario.model.non_embedding_params
    assert plant.bits_per_flop == 16  # bf16
    assert plant.price_per_gpu_hour == scenario.price_per_gpu_hour


@pytest.mark.parametrize("kwargs,field", [
    ({}, "target_loss"),
    ({"target_loss": 2.2, "tokens": 1e11}, "target_loss"),
    ({"target_loss": 1.5}, "target_loss"),
    ({"tokens": 1e11, "goodput": 0.0}, "goodput"),
    ({"tokens": 1e11, "goodput": 1.5}, "goodput"),
    ({"tokens": 1e11, "busy_fraction": 1.5}, "busy_fraction"),
    ({"tokens": -1.0}, "tokens"),
])
def test_bad_requests_are_scenario_errors_naming_the_field(kwargs, field):
    with pytest.raises(ScenarioError) as err:
        economics.time_to_target(SUMMARY, PLANT, "chinchilla", **kwargs)
    assert err.value.field == field


def test_a_summary_without_throughput_names_the_missing_key():
    with pytest.raises(ScenarioError) as err:
        economics.time_to_target({"gpus": 8}, PLANT, "chinchilla", tokens=1e9)
    assert err.value.field == "summary.tokens_per_s"


def test_loss_curve_falls_monotonically_to_the_target_at_the_time_to_target():
    report = economics.time_to_target(SUMMARY, PLANT, "chinchilla", target_loss=2.2, goodput=0.8)
    curve = economics.loss_curve(SUMMARY, PLANT, "chinchilla", report["time_to_target_s"], goodput=0.8)
    assert np.all(np.diff(curve["loss"]) < 0)
    assert np.all(curve["loss"] > curve["loss_floor"])
    assert curve["loss"][-1] == pytest.approx(2.2, rel=1e-12)
    assert curve["tokens"][-1] == pytest.approx(0.8 * 1e6 * report["time_to_target_s"], rel=1e-12)
    assert curve["loss_floor"] == pytest.approx(laws.get("chinchilla").loss_floor(7e9))
