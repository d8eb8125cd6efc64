"""scripts/moe_fixed_cost.py (docs/calibration/round-35.md "Round 35: the MoE layer's fixed cost"): what the line
through two rows of different layouts says about a fixed cost, in closed form, and the marin layer benchmark's scenario.
No simulation of a step runs here."""

from __future__ import annotations

import pytest
from scripts_loader import load_script

from simcluster.core.script_entry import run

fixed_cost = load_script("moe_fixed_cost")


def test_two_row_intercept_is_the_line_through_the_two_points():
    """The closed form equals the line through (t1, f1 + s1 t1) and (t2, f2 + s2 t2) computed point to point
    (moe_dropless_pairs.fixed_and_per_token), for hand-made lines of unequal fixed and per-token costs."""
    f1, s1, f2, s2, t1, t2 = 2.0e-3, 4.0e-6, 1.5e-3, 5.0e-6, 1024.0, 2048.0
    line = fixed_cost.fixed_and_per_token((t1, f1 + s1 * t1), (t2, f2 + s2 * t2))
    assert fixed_cost.two_row_intercept(f1, s1, f2, s2, t1, t2) == pytest.approx(line[0], rel=1e-12)
    # at t2 = 2 t1: 2 f1 - f2 - 2 t1 (s2 - s1) = 4.0 - 1.5 - 2.048 ms
    assert line[0] == pytest.approx(0.452e-3, rel=1e-9)


def test_one_per_token_cost_gives_back_the_fixed_cost():
    """Two rows of one layout (one line) give that line's intercept whatever their tokens; a per-token cost 1 us
    higher on the larger row lowers it by t1 t2 / (t2 - t1) x 1 us, 2.048 ms at 1,024 / 2,048 tokens."""
    assert fixed_cost.two_row_intercept(3e-3, 5e-6, 3e-3, 5e-6, 1024, 2048) == pytest.approx(3e-3)
    assert fixed_cost.two_row_intercept(3e-3, 5e-6, 3e-3, 6e-6, 1024, 2048) == pytest.approx(3e-3 - 2.048e-3)


def test_readings_of_one_published_point():
    """The zoo's TP 4 row, 29.0 s over 3,008 layer-microbatches = 9.641 ms at 1,024 tokens, against a line of
    2.80 ms + 4.27 us a token: 6.68 us a token if the fixed part is right, 5.27 ms if the per-token part is."""
    published = 29.0 / 3008
    per_token, fixed = fixed_cost.readings(published, 1024, 2.80e-3, 4.27e-6)
    assert per_token == pytest.approx((published - 2.80e-3) / 1024)
    assert per_token == pytest.approx(6.68e-6, abs=0.01e-6)
    assert fixed == pytest.approx(5.27e-3, abs=0.01e-3)


def test_marin_scenario_is_the_benchmarks_layer():
    """The Qwen3-235B shape on EP 8: 16 local experts, 4,096 tokens a GPU at micro batch 1, 16,384 at 4, TP 1,
    GeLU experts (no gated_linear_unit in the harness's TransformerConfig), forced balance."""
    s = fixed_cost.marin_scenario("qwen3-235b", "deepep", 4096)
    assert s.model.moe.experts // s.parallelism.ep == 16
    assert (s.model.hidden, s.model.moe.ffn_hidden, s.model.moe.top_k) == (4096, 1536, 8)
    assert s.parallelism.tp == 1 and s.parallelism.moe_dispatcher == "flex"
    assert s.model.mlp == "gelu" and s.model.moe.load == "balanced"
    assert fixed_cost.marin_scenario("qwen3-30b", "a2a", 16384).training.micro_batch_size == 4


def test_unknown_command_is_one_line(capsys):
    assert run(fixed_cost.main, ["line"], fixed_cost.__doc__, words=(1, 1)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lines, terms, layer" in err
