"""Megatron's gradient scaling before the data-parallel reduction (workload/grad_scaling.py;
docs/calibration/round-28.md, "Round 28: Megatron's gradient scaling before the data-parallel reduction").

What the source does, read from the released megatron-core wheels (PyPI 0.5.0-0.16.0), the nemo_toolkit 2.0.0rc1 /
2.0.0 wheels and Megatron-LM's 2021-23 megatron/model/distributed.py, not from simcluster:
- before each bucket's collective the bucket's gradient buffer is multiplied in place by its factor, a read and a
  write of every element in the buffer's dtype: 0.5.0 ``self.data /= self.data_parallel_world_size`` and 0.6.0
  ``self.grad_data *= self.gradient_scaling_factor`` unconditionally, 0.7.0 on only ``if
  self.gradient_scaling_factor != 1.0``; Megatron-LM's own DDP ``buffer_.data /= mpu.get_data_parallel_world_size()``
  before its all-reduce, at one rank too;
- the factor: 1/(dp x cp) (0.8: 1/dp); with ``average_in_collective`` (0.8 on, ReduceOp.AVG) 1.0 for the dense
  buffers, 1/ep for the expert buffers (0.8-0.11) or edp/(dp x cp) (0.12 on);
- NeMo 24.09's NeMo (2.0.0) averages by default (``cfg.optim.get('average_in_collective', True)``, every 2.0.0
  recipe True); NeMo 24.07's (2.0.0rc1) passes nothing (False); Megatron-LM's flag is off by default.
"""

from __future__ import annotations

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.engine import Simulation, simulate
from simcluster.spec import config
from simcluster.workload import grad_scaling, kernels

FP32 = 4


def _data(training: dict | None = None, parallelism: dict | None = None, model: str = "llama3-8b") -> dict:
    return {
        "name": "grad-scaling",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1},
        "model": model,
        "training": {"seq_len": 2048, "global_batch_size": 16, "micro_batch_size": 1, "precision": "bf16",
                     **(training or {})},
        "parallelism": {"tp": 1, "pp": 1, "dp": 8, "zero_stage": 1, **(parallelism or {})},
    }


def _scenario(version: str, **parallelism) -> config.Scenario:
    return config.from_dict(_data({"mcore_version": version}, parallelism))


@pytest.mark.parametrize(("version", "dp", "cp", "average", "expected"), [
    ("0.5", 8, 1, None, (True, True)),     # self.data /= dp
    ("0.6", 1, 1, None, (True, True)),     # *= factor, unconditionally: one rank too
    ("0.7", 1, 1, None, (False, False)),   # factor 1.0 skipped
    ("0.7", 8, 1, None, (True, True)),
    ("0.8", 4, 2, None, (True, True)),
    ("0.8", 1, 8, None, (False, False)),   # 0.8's factor is 1/dp: 1.0 at dp 1 whatever cp
    ("0.9", 1, 8, False, (True, True)),    # 0.9 on: 1/(dp x cp)
    ("0.9", 8, 1, None, (False, False)),   # NeMo 24.09 on averages in the collective by default: dense 1.0
    ("0.8", 8, 1, True, (False, False)),
])
def test_which_buffers_are_scaled_release_by_release(version, dp, cp, average, expected):
    stated = {} if average is None else {"average_in_collective": average}
    scenario = config.from_dict(_data({"mcore_version": version, "seq_len": 8192},
                                      {"dp": dp, "cp": cp, "tp": 8 // (dp * cp), **stated}))
    dense, _ = grad_scaling.scaled(scenario)
    assert dense == expected[0]


def test_the_default_follows_the_nemo_container():
    assert not _scenario("0.8").parallelism.average_in_collective     # NeMo 2.0.0rc1 (24.07): not passed
    assert _scenario("0.9").parallelism.average_in_collective         # NeMo 2.0.0 (24.09): default True
    assert _scenario("0.15").parallelism.average_in_collective        # Megatron-Bridge recipes
    assert not config.load("megatron-16b-h100").parallelism.average_in_collective   # Megatron-LM r0.8.0


def test_expert_buffers_keep_their_factor_under_the_average():
    """With average_in_collective the expert buffers are scaled so that the average over the expert data-parallel
    group gives the mean over dp x cp: 1/ep up to 0.11, edp/(dp x cp) from 0.12 (here tp 1, ep 8 on 8 GPUs:
    edp 1, so 1/8 either way)."""
    for version in ("0.9", "0.12"):
        moe = config.from_dict(_data({"mcore_version": version}, {"ep": 8}, model="mixtral-8x7b"))
        dense, expert = grad_scaling.factors(moe)
        assert dense == 1.0 and expert == pytest.approx(1 / 8)
        assert grad_scaling.scaled(moe) == (False, True)


@pytest.mark.parametrize("version", ["0.1", "0.6"])
def test_one_rank_pays_one_read_and_write_of_the_fp32_buffer(version):
    """Korthikanti et al.'s 22B (tp 8, dp 1): Megatron-LM 2022's local DDP divides the fp32 buffer by 1 each step.
    The optimizer block grows by one memory-bound kernel of 8 B per local parameter; the local parameters in closed
    form, 12 l h^2 + 13 l h + (V + s) h over tp 8 (LayerNorm and biases; 2 l h LayerNorm parameters and the
    position table held whole on every rank), within 0.5%."""
    base = config.load("korthikanti2022-22b-a100")
    scaled = Simulation(base.model_copy(update={"training": base.training.model_copy(
        update={"mcore_version": version})})).plan
    unscaled = Simulation(base.model_copy(update={"training": base.training.model_copy(
        update={"mcore_version": "0.7"})})).plan
    m, tp = base.model, base.parallelism.tp
    params = (m.layers * (12 * m.hidden ** 2 + 9 * m.hidden) + m.vocab * m.hidden) / tp \
        + m.layers * 4 * m.hidden + m.max_seq_len * m.hidden + 2 * m.hidden
    gpu = base.cluster.gpu
    rate = gpu.hbm_bandwidth * kernels.hbm_fraction(gpu.name)
    grown_s = scaled.optimizer_s[0] - unscaled.optimizer_s[0]
    assert grown_s - kernels.host_model().kernel_gap_s == pytest.approx(2 * FP32 * params / rate, rel=5e-3)


def test_overlapped_buckets_are_scaled_in_the_backward_before_their_collective():
    """dp 8, the reduction overlapped (release 0.8, no average): one scaling kernel per bucket on the compute stream,
    each just before its reduce-scatter starts; together they read and write the whole fp32 buffer once (the
    buckets' bytes add up to the chunk's gradient bytes), and the step is that much longer or less."""
    scenario = _scenario("0.8")
    result = simulate(scenario)
    plan = Simulation(scenario).plan
    assert plan.grad_scaled[0] and plan.optimizer_s == Simulation(_scenario("0.9")).plan.optimizer_s
    events = result.events
    scales = events[events["name"].str.startswith("grad scale") & (events["rank"] == 0)]
    gpu = scenario.cluster.gpu
    rate = gpu.hbm_bandwidth * kernels.hbm_fraction(gpu.name)
    gap = kernels.host_model().kernel_gap_s
    moved = ((scales["end_s"] - scales["start_s"] - gap) * rate).sum()
    assert len(scales) >= 2
    assert moved == pytest.approx(2 * plan.chunks[0].grad_bytes, rel=1e-6)
    assert plan.chunks[0].grad_bytes == pytest.approx(FP32 * 8.03e9, rel=0.01)   # Llama 3 8B, fp32 main gradients
    averaged = simulate(_scenario("0.9"))
    assert result.summary["step_time_s"] > averaged.summary["step_time_s"]


@pytest.mark.parametrize(("parallelism", "training"), [
    ({"average_in_collective": True}, {"mcore_version": "0.7"}),           # no such option before 0.8
    ({"average_in_collective": True, "grad_buckets": "megatron"}, {"mcore_version": "0.9"}),
    ({"average_in_collective": True, "grad_buckets": "apex"}, {"mcore_version": "0.9"}),
])
def test_average_in_collective_where_megatron_core_has_none_is_refused(parallelism, training):
    with pytest.raises(ScenarioError) as error:
        config.from_dict(_data(training, parallelism))
    assert error.value.field == "parallelism.average_in_collective"


def test_the_cli_refuses_it_in_one_line(cli, write_scenario, tmp_path):
    path = write_scenario(_data({"mcore_version": "0.7"}, {"average_in_collective": True}))
    code, out, err = cli("run", path, "--out", tmp_path / "out")
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and err.startswith("error: parallelism.average_in_collective: true is")
