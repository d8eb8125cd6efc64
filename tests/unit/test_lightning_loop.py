"""flash-attention's PyTorch Lightning loop (workload/lightning_loop.py, ``training.trainer: lightning``): per
microbatch the metric updates, the synced log's barrier and the progress bar's ``.item()`` (two stream drains), per
step Lightning's gradient clipping over every parameter of ZeroRedundancyOptimizer's ``param_groups``. Checked
against counts read from source and closed forms of the model's own kernel terms."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.engine import simulate
from simcluster.parallel import plan
from simcluster.spec import config
from simcluster.workload import kernels, lightning_loop, optimizer_step

ROWS = ["dao2023-gpt3-1.3b-2k-8-a100", "dao2023-gpt3-1.3b-8k-8-a100", "dao2023-gpt3-2.7b-2k-8-a100",
        "dao2023-gpt3-2.7b-8k-8-a100"]
FP32 = 4.0


def _clip_extra_s(params: float, shard: float, gpu) -> float:
    """Closed form of the clipping's extra time over all ``params`` instead of ``shard``: 12 B an element at the
    model's HBM rate, plus each of the two multi_tensor_apply calls' further queued launches, one per
    65,536 x 320 elements (optimizer_step module docstring), at the measured queued-launch latency."""
    per_byte = max(kernels.roofline_s(kernels.Op("read", "memory", 0.0, 1.0), gpu, "bf16"))
    per_launch = optimizer_step.MULTI_TENSOR_CHUNK * optimizer_step.MULTI_TENSOR_MAX_BLOCKS
    launches = 2 * (math.ceil(params / per_launch) - math.ceil(shard / per_launch))
    return 12.0 * (params - shard) * per_byte + launches * kernels.launch_overhead_s()


def test_a_microbatch_issues_the_kernels_and_drains_read_from_source():
    """By hand from the sources (module docstring): Perplexity's forward under torchmetrics 0.10.3, reset 2 +
    update 4 + compute 2 + state merge 2; NumTokens 1; Lightning 1.8.6's synced on-step log: clone, the barrier's
    and the sync's one-element all-reduces, the division, three epoch-mean kernels; the closure's division and
    clone. Two drains: the barrier's cudaDeviceSynchronize and the progress bar's .item()."""
    ops = lightning_loop.microbatch_ops()
    assert lightning_loop.KERNELS == (2 + 4 + 2 + 2) + 1 + (1 + 2 + 1 + 3) + 2 == 20
    assert lightning_loop.DRAINS == 2 == sum(op.name == kernels.HOST_SYNC for op in ops)
    # the barrier's drain falls after the metrics and before the all-reduce that syncs the loss
    names = [op.name for op in ops]
    barrier = names.index("barrier: NCCL one-element all-reduce")
    assert names[barrier + 1] == kernels.HOST_SYNC and names[barrier + 2] == "sync_dist: NCCL all_reduce"
    assert max(names.index(n) for n in names if n.startswith(("Perplexity", "NumTokens"))) < barrier


def test_the_microbatch_charge_is_the_gaps_plus_one_dispatch_a_drain():
    """Closed form on the A100: every one-element kernel is device-bound (the fitted gap, 21 us, exceeds the
    dispatch, 13.5 us), so each drain idles the stream for the first launch's dispatch alone, and the block is its
    kernels' gaps and rooflines plus two dispatches."""
    gpu = config.load(ROWS[0]).cluster.gpu
    host = kernels.host_model()
    ops = lightning_loop.microbatch_ops()
    block = kernels.stream_time(ops, gpu, "bf16")
    rooflines = sum(max(kernels.roofline_s(op, gpu, "bf16")) for op in ops if op.name != kernels.HOST_SYNC)
    dispatch = host.dispatch_s * kernels.host_cpu_ratio(gpu.name)
    assert host.kernel_gap_s > dispatch
    assert block.stall_s == pytest.approx(2 * dispatch, rel=1e-9)
    assert block.elapsed_s() == pytest.approx(20 * host.kernel_gap_s + rooflines + 2 * dispatch, rel=1e-9)
    assert block.elapsed_s() < 0.6e-3     # under 0.6 ms a microbatch: the loop is not where the rows' gap is


def test_lightning_clips_every_parameter_not_the_shard():
    """The norm (read 4 B) and the scaling (read 4, write 4) over all P local parameters instead of the P / 8 of
    the rank's ZeRO-1 shard: 12 B x 7P/8 more at the model's HBM rate, and the multi_tensor_apply calls' further
    launches (``_clip_extra_s``)."""
    gpu = config.load(ROWS[0]).cluster.gpu
    params = 1.316e9
    shard = params / 8
    base = plan.optimizer_time_s(shard, gpu, "bf16", "fp32", "torch_adamw", params)
    lightning = plan.optimizer_time_s(shard, gpu, "bf16", "fp32", "torch_adamw", params, clip_over="buffer")
    assert lightning - base == pytest.approx(_clip_extra_s(params, shard, gpu), rel=0.01)
    assert [p.over for p in optimizer_step.passes("torch_adamw", clip_over="buffer")] == ["buffer", "buffer", "shard"]
    assert [p.over for p in optimizer_step.passes("torch_adamw")] == ["shard"] * 3   # torchtitan's FSDP2 shards


@pytest.mark.parametrize("name", [ROWS[0], ROWS[3]])
def test_the_step_pays_the_loop_in_full(name, monkeypatch):
    """Nothing overlaps the loop (each drain empties the stream): the simulated step grows by the microbatches
    times the loop's block plus the clipping's extra bytes, in full; fails if the engine hid any of it."""
    scenario = config.load(name)
    assert lightning_loop.applies(scenario) and lightning_loop.clip_over(scenario) == "buffer"
    gpu = scenario.cluster.gpu
    serial_s = scenario.microbatches * kernels.stream_time(lightning_loop.microbatch_ops(), gpu, "bf16").elapsed_s()
    with_loop = simulate(scenario).summary["step_time_s"]
    monkeypatch.setattr(lightning_loop, "applies", lambda s: False)
    assert lightning_loop.clip_over(scenario) == "shard"
    without = simulate(scenario).summary["step_time_s"]
    params = scenario.model.layers * scenario.model.layer_params + scenario.model.embedding_params
    clip_s = _clip_extra_s(params, params / scenario.parallelism.dp, gpu)
    assert with_loop - without == pytest.approx(serial_s + clip_s, rel=0.01)
    assert (with_loop - without) / without < 0.004      # 0.2-0.3% of the step


def test_only_the_flash_attention_rows_run_it():
    """The key is set in exactly the four FlashAttention-2 rows (read from the files: loading every bundled
    scenario would cost seconds), and they load with it on."""
    named = sorted(p.stem for p in config.bundled_dir().glob("*.yaml") if "trainer: lightning" in p.read_text())
    assert named == ROWS
    assert all(lightning_loop.applies(config.load(name)) for name in named)
    assert not lightning_loop.applies(config.load("torchtitan-llama31-8b-8-h100-fp8-32k"))


def test_refused_outside_the_stack_it_models(tmp_path: Path):
    text = (config.bundled_dir() / f"{ROWS[0]}.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("zero_stage: 1", "zero_stage: 3"))
    with pytest.raises(ScenarioError) as err:
        config.load(bad)
    assert err.value.field == "training.trainer"
