"""Megatron-Core's DistributedDataParallel buckets gradients only on the first pipeline stage's first model chunk:
``bucket_size = None`` (one bucket, the whole chunk's) when ``get_pipeline_model_parallel_rank() > 0`` or
``disable_bucketing``, which Megatron-LM's ``get_model`` and NeMo 2.x's ``MegatronParallel.init_ddp`` pass as
``model_chunk_idx > 0`` (NVIDIA/Megatron-LM megatron/core/distributed/distributed_data_parallel.py, core_r0.7 to
r0.12). Checked on the engine's recorded collectives: reduce-scatters and parameter all-gathers per chunk and step,
against the closed form, with bytes conserved; other stacks keep PyTorch DDP's fixed-size buckets everywhere."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from simcluster.engine import Simulation, simulate
from simcluster.spec import config

BUCKET_BYTES = 25e6


def _scenario(virtual_stages: int = 2, bucket: str | None = f"{BUCKET_BYTES / 1e6:g} MB",
              **training) -> config.Scenario:
    """16 H100s, tp 2, pp 2 interleaved in 2 model chunks a rank (4 chunks of 6 layers), dp 4, ZeRO-1."""
    bucket_size = {"grad_bucket_size": bucket} if bucket else {}
    return config.from_dict({
        "name": "mcore-buckets", "model": "gpt3-1.3b",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2, "nic": "connectx-7",
                    "topology": "rail-fat-tree"},
        "training": {"seq_len": 2048, "global_batch_size": 32, "micro_batch_size": 1, "precision": "bf16",
                     **training},
        "parallelism": {"tp": 2, "pp": 2, "dp": 4, "virtual_stages": virtual_stages, "zero_stage": 1,
                        "overlap_param_gather": True, **bucket_size},
    })


def _fixed_size_buckets(cost) -> int:
    """PyTorch DDP-style buckets of BUCKET_BYTES, never finer than one per layer."""
    return min(cost.layers, math.ceil(cost.grad_bytes / BUCKET_BYTES))


def _per_chunk(events, prefix: str) -> tuple[Counter, Counter]:
    """Collectives named ``prefix c<chunk>b<bucket>`` on the dp stream: count and bytes per chunk."""
    dp = events[(events["stream"] == "dp") & events["name"].str.startswith(prefix)]
    chunks = dp["name"].str.extract(r" c(\d+)b\d+$")[0].astype(int)
    return Counter(chunks.tolist()), Counter(dict(dp.groupby(chunks)["bytes"].sum()))


def test_megatron_core_reduces_one_bucket_off_the_first_stages_first_chunk():
    sim = Simulation(_scenario())
    assert sim.scenario.megatron_core
    chunks = sim.plan.chunks
    assert [(c.chunk, c.stage) for c in chunks] == [(0, 0), (1, 1), (2, 0), (3, 1)]
    # chunk 0 by Megatron-Core's own walk (mcore_buckets; docs/calibration/round-23.md "Round 23"): GPT-3 1.3B at TP 2
    # (hidden 2,048, biases, LayerNorm), buckets of 25 MB / 4 B = 6.25M elements, parameters in reverse: layer 5's
    # fc2 (8.39M) and fc1 (8.39M) each alone, its fc1 norm with qkv (6.30M); then for each lower layer its upper
    # neighbour's qkv norm and proj with its fc2 (10.49M), its fc1, its fc1 norm with qkv (3 a layer, layers 4-0);
    # layer 0's qkv norm and proj (2.10M), closed before the tied embedding (pp 2: ``shared_embedding``), which is
    # alone: 3 + 15 + 1 + 1 = 20
    expected = {c.chunk: 20 if c.chunk == 0 else 1 for c in chunks}
    events = sim.run(1).events
    grads, grad_bytes = _per_chunk(events, "grad reduce_scatter")
    gathers, gather_bytes = _per_chunk(events, "param all_gather")
    assert dict(grads) == expected
    assert dict(gathers) == expected  # each gradient bucket's parameters gathered as one bucket
    for c in chunks:                  # conserved up to each bucket's padding to a multiple of dp 4
        assert 0 <= grad_bytes[c.chunk] - c.grad_bytes < expected[c.chunk] * 4 * 4
        assert gather_bytes[c.chunk] == pytest.approx(c.param_bytes * grad_bytes[c.chunk] / c.grad_bytes,
                                                      rel=1e-12)


def test_the_first_stage_keeps_megatron_cores_default_bucket_and_the_last_stage_has_one():
    """pp 2, no interleaving (two chunks of 12 layers), the default bucket: max(40M, 1M x dp) parameters of fp32
    gradients (bf16 training reduces in fp32), 160 MB at dp 4, on stage 0; stage 1 does not bucket by size, but its
    copy of the tied output layer is marked ``shared_embedding`` (language_module.py) and so takes a bucket of its own
    (``_does_param_require_new_bucket``), reduced first: ceil(vocab / 2) x hidden elements, then the rest at once."""
    sim = Simulation(_scenario(virtual_stages=1, bucket=None))
    first, last = sim.plan.chunks
    assert (first.stage, last.stage, first.layers) == (0, 1, 12)
    default_bytes = max(40e6, 1e6 * 4) * 4
    assert sim.plan.bucket_bytes == default_bytes
    expected = math.ceil(first.grad_bytes / default_bytes)
    assert 1 < expected < first.layers  # the bucket size decides, not the one-per-layer floor
    events = sim.run(1).events
    grads, grad_bytes = _per_chunk(events, "grad reduce_scatter")
    assert dict(grads) == {0: expected, 1: 2}
    assert grad_bytes[1] == pytest.approx(last.grad_bytes, rel=1e-12)   # both multiples of dp 4: no padding
    model = sim.scenario.model
    head = next(r for _, r in events[events["name"] == "grad reduce_scatter c1b0"].iterrows())
    assert head["bytes"] == 4 * math.ceil(model.vocab / 2) * model.hidden


def test_other_stacks_keep_fixed_size_buckets_on_every_chunk():
    """torchtitan's optimizer is not Megatron-Core's stack: PyTorch DDP buckets every chunk alike."""
    sim = Simulation(_scenario(optimizer="torch_adamw"))
    assert not sim.scenario.megatron_core
    grads, _ = _per_chunk(sim.run(1).events, "grad reduce_scatter")
    assert dict(grads) == {c.chunk: _fixed_size_buckets(c) for c in sim.plan.chunks}
    assert all(count > 1 for count in grads.values())


def test_one_bucket_chunks_collapsed_as_expanded():
    scenario = _scenario()
    collapsed = simulate(scenario).summary["step_time_s"]
    assert simulate(scenario, expand=True).summary["step_time_s"] == pytest.approx(collapsed, rel=1e-9)
