"""Megatron-Core's per-bucket NaN/Inf gradient check (workload/nan_check.py; docs/calibration/round-34.md, "Round 34:
the per-bucket NaN check").

What the source does, read in the released megatron-core wheels 0.5.0-0.14.0 and nemo_toolkit 1.23.0 / 2.0.0 /
2.2.0, not in simcluster:
- 0.5.0 has no check; from 0.6.0 ``start_grad_sync`` runs ``grad_data.norm(p=2)`` over the bucket's gradients, then
  reads ``isnan`` of it on the host (``assert``, later ``validate_result``), and from 0.12.0 ``isinf`` too: one
  reduction over the bucket's bytes and one (two) host reads a bucket, before its scaling and collective;
- Megatron-LM turns it on by default (``--no-check-for-nan-in-loss-and-grad`` is store_false), NeMo 2's
  MegatronStrategy and recipes pass True, NeMo 1.x's ``cfg.optim.get('check_for_nan_in_grad', False)`` and the
  NeMo / Megatron-Bridge performance scripts turn it off. simcluster's default is off on every release (the field's
  own default, the performance scripts'); a Megatron-LM run states true (round 34 review).
"""

from __future__ import annotations

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.engine import Simulation, simulate
from simcluster.engine.data_parallel import bucket_checks
from simcluster.spec import config
from simcluster.workload import kernels, nan_check, schedule_host

FP32 = 4


def _data(training: dict | None = None, parallelism: dict | None = None) -> dict:
    gpus = (parallelism or {}).get("dp", 8)
    return {
        "name": "nan-check",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": gpus, "nodes": 1},
        "model": "llama3-8b",
        "training": {"seq_len": 2048, "global_batch_size": 16, "micro_batch_size": 1, "precision": "bf16",
                     **(training or {})},
        "parallelism": {"tp": 1, "pp": 1, "dp": 8, "zero_stage": 1, **(parallelism or {})},
    }


def _scenario(version: str | None, **parallelism) -> config.Scenario:
    return config.from_dict(_data({} if version is None else {"mcore_version": version}, parallelism))


@pytest.mark.parametrize("version", ["0.5", "0.6", "0.9", "0.11", "0.13", "0.14", None])
def test_unset_is_off_on_every_release_and_stated_true_checks(version):
    """Unset: off whatever the release (Megatron-Core's own default and the NeMo / Megatron-Bridge performance
    scripts'; a stated '0.9' and the by-GPU default '0.9' agree); stated true from 0.6: on."""
    assert _scenario(version).parallelism.check_for_nan_in_grad is False
    if version not in ("0.5", None):
        assert nan_check.applies(_scenario(version, check_for_nan_in_grad=True))


@pytest.mark.parametrize(("name", "expected"), [
    ("megatron-1.7b-h100", True),                  # Megatron-LM core 0.8: on by default, stated
    ("flagperf-llama3-8b-8-h100-bf16", True),      # FlagPerf's Megatron-LM 0.6: no --no- flag, stated
    ("nemo2409-llama31-8b-8-h100-bf16", False),    # NeMo 1.x's mcore_distributed_optim: off by default
    ("nemo2511-llama3-8b-8-b200-fp8", False),      # Megatron-Bridge's performance scripts
    ("mlperf50-llama31-405b-512-h100-fp8", True),  # the run's pretrain.py: True
    ("mlperf50-llama31-405b-512-gb200-fp8", False),  # the run's pretrain.py: not full_cuda_graph
    ("moezoo-qwen3-235b-256-h100-a2a", True),      # Megatron-LM's pretrain_gpt.py on 0.14
    ("korthikanti2022-22b-a100", False),           # Megatron-LM 2022's own DDP ('0.1'): none
    ("nemo2409-gpt3-175b-128-h100-bf16", False),   # Apex's distributed Adam: not Megatron-Core's DDP
])
def test_each_bundled_stack_has_its_sources_value(name, expected):
    assert nan_check.applies(config.load(name)) is expected


@pytest.mark.parametrize(("version", "reads"), [("0.6", 1), ("0.11", 1), ("0.12", 2), ("0.15", 2)])
def test_a_bucket_is_one_norm_over_its_bytes_and_a_test_per_read(version, reads):
    ops = nan_check.bucket_ops(1.5e9, version)
    assert nan_check.reads(version) == reads
    assert [op.name for op in ops] == [nan_check.NORM_KERNEL] + ["torch.isnan", "torch.isinf"][:reads]
    assert ops[0].hbm_bytes == 1.5e9 and sum(op.hbm_bytes for op in ops[1:]) <= 16


def test_overlapped_buckets_are_checked_before_their_collective():
    """dp 8, release 0.12: one check per bucket on rank 0's compute stream, each ending before its reduce-scatter
    starts; each check's time less its two scalar kernels and two drains (the measured drain stall) is a norm
    reading the bucket at the achievable HBM rate, and the norms together read the whole fp32 gradient buffer once
    (Llama 3 8B: 4 B x 8.03 G). Without the check the step is shorter by at least half the checks' time (they run on
    the compute stream during the last backward)."""
    scenario = _scenario("0.12", check_for_nan_in_grad=True)
    result = simulate(scenario)
    events = result.events[result.events["rank"] == 0]
    checks = events[events["name"].str.startswith("nan check")].set_index("name")
    reduces = events[events["name"].str.startswith("grad reduce_scatter")].set_index("name")
    assert len(checks) == len(reduces) >= 2
    gpu = scenario.cluster.gpu
    rate = gpu.hbm_bandwidth * kernels.hbm_fraction(gpu.name)
    gap = kernels.host_model().kernel_gap_s
    scalar = kernels.op_time_s(nan_check.bucket_ops(0.0, "0.12")[1], gpu, "bf16")
    drains = 2 * schedule_host.drain_stall_s(gpu.name)
    moved = 0.0
    for name, check in checks.iterrows():
        reduce = reduces.loc[name.replace("nan check", "grad reduce_scatter")]
        assert check["end_s"] <= reduce["start_s"] + 1e-12
        norm_bytes = (check["end_s"] - check["start_s"] - drains - 2 * scalar - gap) * rate
        assert norm_bytes == pytest.approx(reduce["bytes"], rel=1e-6)
        moved += norm_bytes
    assert moved == pytest.approx(FP32 * 8.03e9, rel=0.01)
    unchecked = simulate(_scenario("0.12"))
    checked_s = (checks["end_s"] - checks["start_s"]).sum()
    assert result.summary["step_time_s"] - unchecked.summary["step_time_s"] > 0.5 * checked_s


@pytest.mark.parametrize(("grad_dtype", "width"), [("fp32", FP32), ("bf16", 2)])
def test_one_rank_checks_each_chunk_buffer_with_the_optimizer(grad_dtype, width):
    """One GPU (dp 1: nothing overlapped): the optimizer block grows by one check of the stage's whole buffer, a norm
    over its gradients at the buffer's width (fp32: 4 B per parameter; bf16, grad_reduce_in_fp32 False: 2 B) of
    Llama 3 8B's 8.03 G, one scalar kernel and one drain (release 0.9)."""
    on = Simulation(_scenario("0.9", dp=1, grad_reduce_dtype=grad_dtype, check_for_nan_in_grad=True),
                    check_memory=False).plan
    off = Simulation(_scenario("0.9", dp=1, grad_reduce_dtype=grad_dtype), check_memory=False).plan
    assert not on.nan_checked
    gpu = _scenario("0.9").cluster.gpu
    rate = gpu.hbm_bandwidth * kernels.hbm_fraction(gpu.name)
    gap = kernels.host_model().kernel_gap_s
    scalar = kernels.op_time_s(nan_check.bucket_ops(0.0, "0.9")[1], gpu, "bf16")
    grown = on.optimizer_s[0] - off.optimizer_s[0] - scalar - schedule_host.drain_stall_s(gpu.name) - gap
    assert grown * rate == pytest.approx(width * 8.03e9, rel=0.01)


@pytest.mark.parametrize(("parallelism", "training"), [
    ({"check_for_nan_in_grad": True}, {"mcore_version": "0.5"}),           # no check before 0.6
    ({"check_for_nan_in_grad": True, "grad_buckets": "apex"}, {"mcore_version": "0.9"}),
    ({"check_for_nan_in_grad": True, "zero_stage": 3}, {"mcore_version": "0.12"}),
])
def test_a_check_where_megatron_cores_ddp_has_none_is_refused(parallelism, training):
    with pytest.raises(ScenarioError) as error:
        config.from_dict(_data(training, parallelism))
    assert error.value.field == "parallelism.check_for_nan_in_grad"


def test_the_cli_refuses_it_in_one_line(cli, write_scenario, tmp_path):
    path = write_scenario(_data({"mcore_version": "0.5"}, {"check_for_nan_in_grad": True}))
    code, out, err = cli("run", path, "--out", tmp_path / "out")
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and err.startswith("error: parallelism.check_for_nan_in_grad: true is")


def test_a_merged_group_checks_each_of_its_buckets():
    """fp8 parameters (release 0.12): Megatron-Core's partition_buckets merges every non-fp8 bucket into the last fp8
    bucket group, whose start_grad_sync still checks bucket by bucket (check_grads loops over self.buckets). The
    last group's check on rank 0 is one norm over its bytes plus, for each of its k > 1 buckets, a norm's gap, two
    scalar kernels and two drains; every other group has k = 1."""
    scenario = config.from_dict(_data({"mcore_version": "0.12", "precision": "fp8"}, {"check_for_nan_in_grad": True}))
    sim = Simulation(scenario)
    counts = bucket_checks(sim, sim.plan.chunks[0])
    assert counts[:-1] == [1] * (len(counts) - 1) and counts[-1] > 1
    events = simulate(scenario).events
    events = events[events["rank"] == 0]
    checks = events[events["name"].str.startswith("nan check")].set_index("name")
    reduces = events[events["name"].str.startswith("grad reduce_scatter")].set_index("name")
    gpu = scenario.cluster.gpu
    rate = gpu.hbm_bandwidth * kernels.hbm_fraction(gpu.name)
    gap = kernels.host_model().kernel_gap_s
    each = gap + 2 * kernels.op_time_s(nan_check.bucket_ops(0.0, "0.12")[1], gpu, "fp8") \
        + 2 * schedule_host.drain_stall_s(gpu.name)
    found = [(check["end_s"] - check["start_s"] - reduces.loc[name.replace("nan check", "grad reduce_scatter")]["bytes"]
              / rate) / each for name, check in checks.iterrows()]
    assert sorted(round(k, 6) for k in found) == sorted(float(k) for k in counts)


def test_release_0_9_reads_once_a_bucket_group_and_0_12_twice_a_bucket():
    """A group of three buckets (source: 0.9.0's _ParamAndGradBucketGroup.check_for_nan_in_grad norms each bucket,
    ``logical_or_``s their isnan and asserts once; 0.10-0.11 validate each bucket's norm, one host read each; 0.12's
    check_grads reads isnan and isinf of each). The norms read the same bytes in every release, so against 0.10: 0.9
    has two drains fewer and two ``logical_or_`` kernels more (each as an isnan), 0.12 three isinf tests and three
    drains more."""
    gpu = _scenario("0.9").cluster.gpu
    drain = schedule_host.drain_stall_s(gpu.name)
    scalar = kernels.op_time_s(nan_check.bucket_ops(0.0, "0.9")[1], gpu, "bf16")
    group = {v: nan_check.bucket_s(_scenario(v, check_for_nan_in_grad=True), 3e9, buckets=3)
             for v in ("0.9", "0.10", "0.12")}
    assert group["0.10"] - group["0.9"] == pytest.approx(2 * drain - 2 * scalar, rel=1e-9)
    assert group["0.12"] - group["0.10"] == pytest.approx(3 * (scalar + drain), rel=1e-9)
    assert drain > 0 and scalar > 0
