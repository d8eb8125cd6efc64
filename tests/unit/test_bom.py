"""Fabric bill of materials (fabric.bom): counts against the closed forms of the designs, prices and power from the
data file, and the network's share in the cost of a step and of a run."""

from __future__ import annotations

import math

import pytest

from simcluster import simulate
from simcluster.core import catalog
from simcluster.core.errors import ScenarioError
from simcluster.fabric import bom, topology
from simcluster.outcomes import economics
from simcluster.spec import config, hardware

H100 = hardware.gpu("h100-sxm")
CX7 = hardware.nic("connectx-7")
PRICES = catalog.load("fabric_costs")


def fabric(name: str, gpus: int, **options):
    return topology.build(name, gpus=gpus, gpus_per_node=8, gpu=H100, nic=CX7, options=options)


@pytest.mark.parametrize("k", [4, 8, 12])
def test_k_ary_fat_tree_matches_al_fares_counts(k):
    # Al-Fares et al. 2008, section 3: 5k^2/4 switches of k ports (k^2/2 edge, k^2/2 aggregation, k^2/4 core),
    # k^3/4 hosts, and k^3/4 cables in each of the three layers (host-edge, edge-aggregation, aggregation-core)
    hosts = k**3 // 4
    b = bom.bill(fabric("fat-tree", hosts, k=k))
    assert b["switches"] == 5 * k * k // 4
    assert {tier: t["count"] for tier, t in b["switches_by_tier"].items()} == {
        "leaf": k * k // 2, "spine": k * k // 2, "core": k * k // 4}
    assert b["cables_by_class"] == {"nic": hosts, "leaf-spine": hosts, "spine-core": hosts}
    assert b["cables"] == 3 * hosts
    assert b["ports"] == 5 * k**3 // 4   # every switch port used: (5k^2/4) x k
    assert b["nics"] == hosts
    # optics on every cable (default cabling): two transceivers each
    assert b["transceivers"] == 2 * 3 * hosts


@pytest.mark.parametrize("servers", [16, 32, 96])
def test_rail_optimised_two_tier_matches_its_closed_form(servers):
    # DGX SuperPOD style, radix R = 64: a rail leaf per scalable unit of R/2 servers and per rail (8 rails), every
    # leaf one cable to each of min(R/2, servers) spines
    radix, rails = 64, 8
    units = math.ceil(servers / (radix // 2))
    leaves, spines = rails * units, min(radix // 2, servers)
    b = bom.bill(fabric("rail-fat-tree", servers * rails))
    assert b["switches_by_tier"]["leaf"]["count"] == leaves
    assert b["switches_by_tier"]["spine"]["count"] == spines
    assert b["cables_by_class"] == {"nic": servers * rails, "leaf-spine": leaves * spines}
    assert b["nics"] == servers * rails
    # the price is the sum of its parts at the data file's prices
    switch = PRICES["switches"]["ib-ndr-64"]
    optics = PRICES["reach"]["optics-mm"]
    cables = servers * rails + leaves * spines
    expected = ((leaves + spines) * switch["usd"] + servers * rails * PRICES["nic"]["usd"]
                + cables * (optics["cable_usd"] + 2 * optics["transceiver_usd"]))
    assert b["capex_usd"] == pytest.approx(expected)
    assert b["power_w"] == pytest.approx((leaves + spines) * switch["power_w"] + servers * rails * PRICES["nic"][
        "power_w"] + 2 * cables * optics["transceiver_power_w"])


def test_oversubscribed_leaf_spine_has_fewer_spines_and_copper_to_the_hosts():
    full, half = bom.bill(fabric("leaf-spine", 512)), bom.bill(fabric("leaf-spine", 512, oversubscription=2))
    assert half["switches_by_tier"]["spine"]["count"] * 2 == full["switches_by_tier"]["spine"]["count"]
    assert half["capex_usd"] < full["capex_usd"]
    assert half["cables_by_reach"]["dac"] == 512   # one top-of-rack copper cable per NIC
    assert half["switches_by_tier"]["leaf"]["model"] == "ethernet-400g-64"


def test_a_single_node_has_no_fabric_to_buy():
    b = bom.bill(fabric("nvswitch-node", 8))
    assert b["switches"] == b["cables"] == b["nics"] == 0 and b["capex_usd"] == 0


def test_prices_can_be_overridden_and_unknown_entries_are_refused():
    base = bom.bill(fabric("rail-fat-tree", 128))
    cheaper = bom.bill(fabric("rail-fat-tree", 128), bom.costs({"nic": {"usd": 1000}}))
    assert base["capex_usd"] - cheaper["capex_usd"] == pytest.approx(128 * (PRICES["nic"]["usd"] - 1000))
    with pytest.raises(ScenarioError, match="economics.fabric_prices.nic.price"):
        bom.costs({"nic": {"price": 1}})
    with pytest.raises(ScenarioError, match="economics.fabric_prices.nic.usd"):
        bom.costs({"nic": {"usd": -1}})


def test_amortised_share_is_capex_over_lifetime_plus_electricity():
    b = {"capex_usd": 8766.0 * 5 * 100, "lifetime_years": 5.0, "power_w": 1000.0, "electricity_usd_per_kwh": 0.1}
    # 100 USD per hour of capital and 1 kW x PUE 1.5 x 0.1 USD/kWh, over 10 GPUs
    assert bom.usd_per_gpu_hour(b, gpus=10, pue=1.5) == pytest.approx((100 + 0.15) / 10)


def test_cost_per_step_and_to_target_include_the_network(small_scenario):
    scenario = config.from_dict(small_scenario)
    summary = simulate(scenario).summary
    share = summary["fabric"]["usd_per_gpu_hour"]
    assert share > 0
    gpu_only = scenario.price_per_gpu_hour * summary["gpus"] * summary["step_time_s"] / 3600
    assert summary["cost_per_step_usd"] == pytest.approx(gpu_only + summary["cost_per_step_fabric_usd"])
    report = economics.time_to_target(summary, scenario, "chinchilla", tokens=1e9)
    assert report["cost_usd"] == pytest.approx(report["gpu_cost_usd"] + report["fabric_cost_usd"])
    assert report["fabric_cost_usd"] == pytest.approx(report["gpu_hours"] * share)
    assert report["fabric_power_w"] > 0


def test_scenario_lifetime_changes_the_share(small_scenario):
    short = dict(small_scenario, economics={"fabric_lifetime_years": 1})
    s1 = simulate(config.from_dict(small_scenario)).summary["fabric"]
    s2 = simulate(config.from_dict(short)).summary["fabric"]
    assert s2["lifetime_years"] == 1 and s2["usd_per_gpu_hour"] > 4 * s1["usd_per_gpu_hour"]


def test_a_bad_price_override_fails_before_the_simulation(small_scenario):
    from simcluster.engine import Simulation

    small_scenario["economics"] = {"fabric_prices": {"switches": {"ib-ndr-64": {"usd": "cheap"}}}}
    with pytest.raises(ScenarioError, match="economics.fabric_prices.switches.ib-ndr-64.usd"):
        Simulation(config.from_dict(small_scenario))


@pytest.mark.parametrize(("name", "gpus", "options"), [("rail-fat-tree", 512, {}), ("fat-tree", 128, {}),
                                                       ("leaf-spine", 256, {"oversubscription": 4})])
def test_the_bill_counts_by_class_codes_as_by_each_link_class(name, gpus, options):
    """The bill reads the fabric's per-link class and kind codes; a fabric offering only the per-link lists (codes
    found by the bill) gets the same bill, dict orders included; and the codes name every link's class."""
    built = fabric(name, gpus, **options)
    names, codes = built.link_class_codes
    assert [names[c] for c in codes.tolist()] == built.link_class

    class ListsOnly:   # the fabric without its codes
        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, attribute):
            if attribute.endswith("_codes"):
                raise AttributeError(attribute)
            return getattr(self._inner, attribute)

    by_codes, by_lists = bom.bill(built), bom.bill(ListsOnly(built))
    assert by_codes == by_lists and list(by_codes["cables_by_class"]) == list(by_lists["cables_by_class"])
    assert sum(by_codes["cables_by_class"].values()) == by_codes["cables"] > 0
