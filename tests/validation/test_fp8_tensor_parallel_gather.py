"""Transformer Engine all-gathers the sequence-parallel GEMM inputs in fp8 in fp8 training (round 5, lead 3).

Source (TE 1.x, transformer_engine/pytorch/module): LayerNormLinear/LayerNormMLP write the norm output as fp8 and
gather that (``ln_out`` of dtype uint8 before ``gather_along_first_dim``), the row-parallel layers' backward casts dY
to fp8 before its gather (``grad_output_preprocess``), and the userbuffers all-gather buffers are fp8 ("AllGather
buffers use fp8 when using fp8 recipe", ``initialize_ub``); reduce-scatters sum 16-bit partial outputs. The check is
against that closed form: with a collective time linear in bytes, an fp8 layer's TP time is the bf16 one less half
its all-gathers' share.
"""


import pytest
from scenario_data import with_changes

from simcluster.parallel.plan import plan, tp_collective_bytes, tp_collectives_per_layer

NEMO_LIKE = {"cluster__nodes": 1, "parallelism__tp": 4, "parallelism__pp": 1, "parallelism__dp": 2,
             "parallelism__sequence_parallel": True, "parallelism__tp_comm_overlap": True,
             "training__global_batch_size": 8}


def _scenario(small_scenario, **changes):
    return with_changes(small_scenario, **{**NEMO_LIKE, **changes})


def _linear_time(op, group, size_bytes):
    """A collective time proportional to its bytes (per op, so the ops stay distinguishable)."""
    return {"reduce_scatter": 1.0, "all_gather": 1.0, "allreduce": 2.0}[op] * size_bytes * 1e-9


def test_fp8_training_gathers_fp8_and_reduces_16_bit(small_scenario):
    fp8 = tp_collective_bytes(_scenario(small_scenario, training__precision="fp8"), 1000.0)
    bf16 = tp_collective_bytes(_scenario(small_scenario, training__precision="bf16"), 1000.0)
    assert fp8 == {"allreduce": 1000.0, "reduce_scatter": 1000.0, "all_gather": 500.0}
    assert bf16 == {"allreduce": 1000.0, "reduce_scatter": 1000.0, "all_gather": 1000.0}


@pytest.mark.parametrize("phase", ["forward", "backward"])
def test_fp8_tp_time_loses_half_of_its_gathers(small_scenario, phase):
    fp8_scenario = _scenario(small_scenario, training__precision="fp8")
    bf16_plan = plan(_scenario(small_scenario, training__precision="bf16"), _linear_time)
    fp8_plan = plan(fp8_scenario, _linear_time)
    chunk_bf16, chunk_fp8 = bf16_plan.chunks[0], fp8_plan.chunks[0]
    assert chunk_fp8.tp_bytes == chunk_bf16.tp_bytes          # same activation
    gathers = sum(count for op, count in tp_collectives_per_layer(fp8_scenario)[phase] if op == "all_gather")
    assert gathers >= 1
    gather_s = chunk_fp8.layers * gathers * _linear_time("all_gather", (), chunk_fp8.tp_bytes)
    bf16_s = getattr(chunk_bf16, f"{phase}_tp_comm_s")
    assert getattr(chunk_fp8, f"{phase}_tp_comm_s") == pytest.approx(bf16_s - gather_s / 2, rel=1e-12)
    assert chunk_fp8.tp_op_bytes == {"all_gather": chunk_fp8.tp_bytes / 2}
    assert chunk_bf16.tp_op_bytes == {}


@pytest.mark.parametrize("overlap", [True, False])
def test_the_engine_moves_fp8_gathers_on_the_network(small_scenario, monkeypatch, overlap):
    """The engine's network carries each TP collective at its own size: fp8 training's all-gathers at half the
    16-bit activation, its reduce-scatters at the whole; bf16 training every collective at the whole."""
    from simcluster.engine import drivers, simulate

    sizes: dict[str, set[tuple[str, float]]] = {}
    original = drivers.CollectiveDriver.run_block

    def spy(self, calls, groups, size_bytes, *args, **kwargs):
        if kwargs.get("tag", "tp") == "tp":
            sizes.setdefault(precision, set()).update((op, size_bytes) for op, _ in calls)
        return original(self, calls, groups, size_bytes, *args, **kwargs)

    monkeypatch.setattr(drivers.CollectiveDriver, "run_block", spy)
    for precision in ("bf16", "fp8"):
        scenario = _scenario(small_scenario, training__precision=precision, parallelism__tp_comm_overlap=overlap)
        activation = plan(scenario, _linear_time).chunks[0].tp_bytes
        simulate(scenario)
        ops = {op for op, _ in sizes[precision]}
        assert ops == {"all_gather", "reduce_scatter"}
        want = {"all_gather": activation / 2 if precision == "fp8" else activation, "reduce_scatter": activation}
        assert sizes[precision] == set(want.items())
