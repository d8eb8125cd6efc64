"""The multi-year projection: each ceiling recomputed by hand, the binding constraint is the smallest, and the
data and memory ceilings sit exactly where the compute-optimal run exhausts the stock or the HBM."""

import dataclasses

import pytest

from simcluster.core import catalog
from simcluster.core.errors import ScenarioError
from simcluster.outcomes import laws, projection

H100_PEAK = 989.4e12
H100_TDP_W = 700.0
H100_PRICE = 2.50
H100_HBM_BYTES = 81559 * 2**20  # as NVML reports it (simcluster/data/hardware.yaml)


def test_start_year_ceilings_match_hand_arithmetic():
    inputs = projection.defaults()
    caps = projection.ceilings(inputs, 0.0)
    T = inputs.run_duration_s
    assert caps["compute"] == pytest.approx(inputs.compute_flop_per_s * inputs.mfu * T)
    assert caps["budget"] == pytest.approx(inputs.budget_usd * H100_PEAK * inputs.mfu * 3600 / H100_PRICE)
    facility_w_per_gpu = inputs.pue * (H100_TDP_W + inputs.node_overhead_w / 8)
    flop_per_j = H100_PEAK * inputs.mfu / facility_w_per_gpu
    assert caps["energy"] == pytest.approx(inputs.power_cap_w * flop_per_j * T)
    assert caps["network"] == pytest.approx(inputs.network_max_flop)


def test_ceilings_grow_by_their_stated_rates():
    inputs = projection.defaults()
    now, later = projection.ceilings(inputs, 0.0), projection.ceilings(inputs, 3.0)
    assert later["compute"] / now["compute"] == pytest.approx(inputs.compute_growth**3)
    budget_rate = inputs.budget_growth * inputs.flop_per_usd_growth
    energy_rate = inputs.power_growth * inputs.flop_per_j_growth
    assert later["budget"] / now["budget"] == pytest.approx(budget_rate**3)
    assert later["energy"] / now["energy"] == pytest.approx(energy_rate**3)


def test_data_ceiling_is_where_the_optimal_run_uses_the_whole_stock():
    inputs = projection.defaults()
    law = laws.get(inputs.law)
    caps = projection.ceilings(inputs, 0.0, law)
    assert law.optimal(caps["data"]).tokens == pytest.approx(inputs.data_stock_tokens * inputs.data_epochs)


def test_memory_ceiling_is_where_the_optimal_model_fills_the_cluster_hbm():
    inputs = projection.defaults()
    law = laws.get(inputs.law)
    caps = projection.ceilings(inputs, 0.0, law)
    gpus = inputs.compute_flop_per_s / H100_PEAK
    assert law.optimal(caps["memory"]).params == pytest.approx(gpus * H100_HBM_BYTES / 16)


def test_binding_constraint_is_the_smallest_ceiling_every_year():
    for row in projection.project():
        ceilings = {name: row[f"{name}_flop"] for name in projection.CONSTRAINTS}
        assert row["flop"] == min(ceilings.values())
        assert ceilings[row["binding"]] == row["flop"]


def test_effective_compute_carries_the_algorithmic_doubling_and_lowers_the_loss():
    inputs = projection.defaults(gamma=1.0)
    rows = projection.project(inputs)
    assert rows[2]["effective_flop"] == pytest.approx(rows[2]["flop"] * 4.0)
    assert all(a["loss"] > b["loss"] for a, b in zip(rows, rows[1:], strict=False))


def test_a_tiny_budget_makes_budget_bind_and_a_tiny_power_cap_makes_energy_bind():
    base = projection.defaults(years=2)
    def binding(**changes):
        return {row["binding"] for row in projection.project(dataclasses.replace(base, **changes))}

    assert binding(budget_usd=1.0) == {"budget"}
    assert binding(power_cap_w=1.0) == {"energy"}
    assert binding(data_stock_tokens=1e9) == {"data"}


def test_phase_map_has_one_row_per_multiplier_and_the_ascii_diagram_shows_every_cell():
    inputs = projection.defaults(years=4)
    phase = projection.phase_map(inputs, "budget", [0.001, 1.0, 1000.0])
    assert len(phase["binding"]) == 3 and all(len(row) == 4 for row in phase["binding"])
    assert phase["values"][0] == pytest.approx(inputs.budget_usd * 0.001)
    assert set(phase["binding"][0]) == {"budget"}
    text = projection.ascii_phase(phase)
    body = text.splitlines()[2:5]
    assert all(len(line.split()) == 1 + 4 for line in body)
    assert "legend" in text and "B budget" in text


def test_defaults_carry_a_source_for_every_rate_and_constraint():
    data = catalog.load("projection")
    for entry in (*data["growth"].values(), *data["constraints"].values(), data["algorithmic_gamma"]):
        assert entry["source"]


def test_bad_projection_inputs_name_the_field():
    with pytest.raises(ScenarioError, match="gamma"):
        projection.defaults(gamma=-1.0)
    with pytest.raises(ScenarioError, match="years"):
        projection.defaults(years=0)
    with pytest.raises(ScenarioError, match="--phase"):
        projection.phase_map(projection.defaults(), "weather")
