"""Diminishing returns over a GPU sweep: efficiency, margins and the knee, on sweeps with known answers."""

import math

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.outcomes import economics, returns

PLANT = economics.Plant(price_per_gpu_hour=2.0, gpu_tdp_w=700.0, gpu_idle_w=70.0, gpus_per_node=8,
                        node_overhead_w=1500.0, pue=1.2, grid_kg_co2_per_kwh=0.4, params=7e9,
                        non_embedding_params=6.5e9)
PER_GPU_TOKENS_PER_S = 2000.0


def amdahl_sweep(serial_fraction, counts=(8, 16, 32, 64, 128, 256)):
    """Throughput of an Amdahl-limited job: speedup n / (1 + s (n - 1)) relative to one GPU."""
    return [{"gpus": n, "tokens_per_s": PER_GPU_TOKENS_PER_S * n / (1 + serial_fraction * (n - 1))}
            for n in counts]


def test_linear_scaling_has_unit_efficiency_equal_gpu_hours_and_no_knee():
    rows = returns.sweep_table(amdahl_sweep(0.0), PLANT, "chinchilla", target_loss=2.3)
    assert all(row["efficiency"] == pytest.approx(1.0) for row in rows)
    assert all(row["gpu_hours"] == pytest.approx(rows[0]["gpu_hours"]) for row in rows)
    assert all(math.isinf(row["hours_saved_per_extra_gpu_hour"]) for row in rows[1:])
    assert returns.knee(rows)["first_below_gpus"] is None


def test_efficiency_of_an_amdahl_sweep_matches_its_closed_form():
    s = 0.01
    rows = returns.scaling_efficiency(amdahl_sweep(s))
    for row in rows:
        n = row["gpus"]
        expected = (n / (1 + s * (n - 1))) / (n / 8 * 8 / (1 + s * 7))
        assert row["efficiency"] == pytest.approx(expected, rel=1e-12)


def test_knee_is_the_last_count_before_efficiency_drops_below_the_threshold():
    s = 0.01
    # efficiency(n) = (1 + 7 s) / (1 + s (n - 1)): 0.82 at 32, 0.66 at 64 for s = 0.01 -> knee at 32 for 0.8
    result = returns.knee(amdahl_sweep(s), threshold=0.8)
    assert result["knee_gpus"] == 32
    assert result["first_below_gpus"] == 64
    assert result["first_below_efficiency"] == pytest.approx(1.07 / 1.63)


def test_marginal_loss_per_gpu_hour_at_a_deadline_by_hand():
    sweep = [{"gpus": 8, "tokens_per_s": 16000.0}, {"gpus": 16, "tokens_per_s": 24000.0}]
    deadline_s = 30 * 86400.0
    rows = returns.sweep_table(sweep, PLANT, "chinchilla", target_loss=2.3, deadline_s=deadline_s)

    def loss(tokens):
        return 1.69 + 406.4 / 7e9**0.34 + 410.7 / tokens**0.28

    drop = loss(16000.0 * deadline_s) - loss(24000.0 * deadline_s)
    extra_gpu_hours = 8 * deadline_s / 3600
    assert rows[0]["marginal_loss_per_gpu_hour"] is None
    assert rows[1]["marginal_loss_per_gpu_hour"] == pytest.approx(drop / extra_gpu_hours, rel=1e-9)
    # time to target: 2/3 of the time on twice the GPUs -> 4/3 the GPU-hours
    assert rows[1]["time_to_target_s"] == pytest.approx(rows[0]["time_to_target_s"] * 16000 / 24000)
    assert rows[1]["gpu_hours"] == pytest.approx(rows[0]["gpu_hours"] * 4 / 3)
    saved_h = rows[0]["time_to_target_s"] / 3 / 3600
    assert rows[1]["hours_saved_per_extra_gpu_hour"] == pytest.approx(saved_h / (rows[0]["gpu_hours"] / 3))


def test_sweep_rows_come_out_sorted_by_gpu_count():
    rows = returns.scaling_efficiency(list(reversed(amdahl_sweep(0.02))))
    assert [row["gpus"] for row in rows] == [8, 16, 32, 64, 128, 256]


def test_repeated_gpu_counts_and_empty_sweeps_are_refused():
    with pytest.raises(ScenarioError, match="repeat"):
        returns.scaling_efficiency([{"gpus": 8, "tokens_per_s": 1.0}, {"gpus": 8, "tokens_per_s": 2.0}])
    with pytest.raises(ScenarioError, match="at least one"):
        returns.scaling_efficiency([])
    with pytest.raises(ScenarioError, match="threshold"):
        returns.knee(amdahl_sweep(0.0), threshold=0.0)
