"""Layouts, pipeline splits and schedules: partitions, counts and Megatron-LM's orders."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simcluster.parallel.layout import Layout, split_layers
from simcluster.parallel.schedules import pipeline_order


@given(st.integers(1, 200), st.integers(1, 16), st.sampled_from([1, 2, 3, 4, 8]))
def test_split_layers_assigns_every_layer_once(layers, pp, virtual_stages):
    chunks = pp * virtual_stages
    if layers + 2 < chunks:
        return
    counts = split_layers(layers, pp, virtual_stages)
    assert len(counts) == chunks and sum(counts) == layers and min(counts) >= 0


def test_even_split_when_layers_divide():
    assert split_layers(96, 8) == [12] * 8


def test_llama3_405b_first_and_last_chunks_hold_only_embedding_and_output():
    # Llama 3 paper, section 3.3.2: 126 layers on 16 ranks x 8 virtual stages
    counts = split_layers(126, 16, 8)
    assert counts[0] == 0 and counts[-1] == 0 and set(counts[1:-1]) == {1}


def test_uneven_split_lightens_first_and_last_stage():
    counts = split_layers(30, 4)
    assert counts[0] < max(counts) and counts[-1] < max(counts)


def test_rank_coordinates_round_trip_and_groups_partition_the_world():
    layout = Layout(tp=2, cp=2, pp=3, dp=2)
    for rank in range(layout.world_size):
        assert layout.rank(**layout.coords(rank)) == rank
    for axis in ("tp", "cp", "pp", "dp"):
        groups = layout.groups(axis)
        members = sorted(r for g in groups for r in g)
        assert members == list(range(layout.world_size))
        assert all(len(g) == getattr(layout, axis) for g in groups)
    # tensor-parallel ranks are consecutive (innermost axis): they share a node
    assert layout.group(0, "tp") == [0, 1]


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize(("pp", "m", "v"), [(1, 3, 1), (4, 8, 1), (4, 3, 1), (2, 4, 2), (4, 8, 2), (4, 12, 3)])
def test_every_stage_runs_each_forward_and_backward_once(schedule, pp, m, v):
    if v > 1 and schedule == "gpipe":
        return
    for stage in range(pp):
        order = pipeline_order(schedule, pp, stage, m, v)
        chunks = [c * pp + stage for c in range(v)]
        expected = {(phase, mb, c) for phase in ("forward", "backward") for mb in range(m) for c in chunks}
        assert {(w.phase, w.microbatch, w.chunk) for w in order} == expected
        assert len(order) == len(expected)
        # a backward never precedes its own forward
        seen = set()
        for w in order:
            if w.phase == "backward":
                assert ("forward", w.microbatch, w.chunk) in seen
            seen.add((w.phase, w.microbatch, w.chunk))


def test_1f1b_warm_up_is_pp_minus_stage_minus_one_forwards():
    # Narayanan et al. 2021 (PipeDream-Flush): stage i runs pp - i - 1 forwards before its first backward
    for stage in range(4):
        order = pipeline_order("1f1b", 4, stage, 8)
        first_backward = next(i for i, w in enumerate(order) if w.phase == "backward")
        assert first_backward == 4 - stage - 1 + 1


def test_interleaved_order_follows_megatron_for_two_stages_two_chunks():
    # Megatron-LM forward_backward_pipelining_with_interleaving, pp=2, v=2, 4 microbatches, rank 0:
    # warm-up (pp - rank - 1) * 2 + (v - 1) * pp = 4 forwards: mb0 c0, mb1 c0, mb0 c2, mb1 c2
    order = [(w.phase[0], w.microbatch, w.chunk) for w in pipeline_order("1f1b", 2, 0, 4, 2)]
    assert order[:4] == [("f", 0, 0), ("f", 1, 0), ("f", 0, 2), ("f", 1, 2)]
    assert order[4:6] == [("f", 2, 0), ("b", 0, 2)]


def test_interleaved_with_exactly_pp_microbatches_runs_all_forwards_first():
    # Megatron-LM: num_microbatches == pipeline size -> all_warmup_microbatches
    for stage in range(4):
        order = pipeline_order("1f1b", 4, stage, 4, 2)
        phases = [w.phase for w in order]
        assert phases == ["forward"] * 8 + ["backward"] * 8
