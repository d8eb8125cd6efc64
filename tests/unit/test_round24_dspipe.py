"""Round 24: DeepSpeed's BF16_Optimizer all-reduces its fp32 gradients in bf16 (parallel/deepspeed_pipeline.py,
``BF16_OPTIMIZER_COMM_DTYPE``; docs/calibration/round-24.md "Round 24: DeepSpeed's pipeline rows simulated fast").

Source: deepspeed/runtime/engine.py of 2022, ``allreduce_bucket`` casts the flat gradient to
``communication_data_type`` (bf16 by default for a bf16 run at ZeRO stage 0 in the versions of 2022, from
microsoft/DeepSpeed#1487 of November 2021; at 9b70ce56, July 2022, the lines #2071 links), all-reduces and
post-scales the copy and copies it back. Independent truth: closed
forms of the bytes, and the BigScience prequel's own before/after of the same layout (chronicles-prequel.md, 02-27 on
DeepSpeed's fp16 ZeRO-1 path, 02-28 on the BF16_Optimizer), which the all-reduce's width decides.
"""

from __future__ import annotations

import pytest
from test_deepspeed_pipeline import plans

from simcluster.engine import simulate
from simcluster.parallel import deepspeed_pipeline, memory
from simcluster.spec import config


@pytest.mark.parametrize(("grad", "comm", "expected"), [
    ("fp32", "bf16", (4 + 2) + (2 + 2) + (2 + 4)),   # cast, post-scaling mul_ of the bf16 copy, copy back
    ("fp32", "fp32", 4 + 4),                          # no cast: the mul_ alone
    ("bf16", "bf16", 2 + 2),
])
def test_allreduce_bucket_bytes_per_parameter(grad, comm, expected):
    assert deepspeed_pipeline.allreduce_bucket_bytes_per_param(grad, comm) == expected


def test_the_bf16_optimizer_all_reduces_two_bytes_a_parameter():
    """Each chunk's data-parallel all-reduce moves 2 B per parameter of the chunk (its fp32 gradient cast to bf16),
    where Megatron's engine with the same fp32 buffer reduces 4 B; DeepSpeed's 16-bit path (ZeRO-1, bf16 gradients)
    keeps its 2 B. The tied embedding's all-reduce (``dist.all_reduce(weight._hp_grad)``, not through
    ``allreduce_bucket``) stays fp32."""
    assert deepspeed_pipeline.BF16_OPTIMIZER_COMM_DTYPE == "bf16"
    megatron, deepspeed = plans(parallelism__dp=2, cluster__nodes=4)
    weight = memory.state_bytes_per_param("bf16")["weights"]
    assert deepspeed.dp_grad_op == "allreduce"
    for before, after in zip(megatron.chunks, deepspeed.chunks, strict=True):
        params = after.param_bytes / weight
        assert before.grad_bytes == pytest.approx(4 * params)
        assert after.grad_bytes == pytest.approx(2 * params)
    assert deepspeed.embedding_grad_bytes == megatron.embedding_grad_bytes
    low_megatron, low = plans(parallelism__dp=2, cluster__nodes=4, parallelism__grad_reduce_dtype="bf16")
    assert [c.grad_bytes for c in low.chunks] == [c.grad_bytes for c in low_megatron.chunks]


# The prequel's twins (bigscience-workshop/bigscience train/tr11-176B-ml/chronicles-prequel.md at 053adafe): the
# 106 x 12288 model at DP 8 TP 4 PP 12 MBS 2, GBS 2048, 48 nodes, partition 'type:transformer|embed', Sec/it.
# 02-27 (fp16, table "regex partition_method='type:transformer|embed'") against 02-28 (BF16_Optimizer, "Rebalancing
# layers"): 64 heads 110.96 -> 116.54 s, 96 heads 112.69 -> 118.79 s.
PREQUEL_FP16_TO_BF16 = {
    "bigscience-prequel-195b-h64-tp4-pp12-mbs2-a100": (110.96, 116.54),
    "bigscience-prequel-195b-h96-tp4-pp12-mbs2-a100": (112.69, 118.79),
}
# Tolerance on the ratio: 0.02. Each published figure is one iteration-2 snapshot of a run; the two twins' published
# ratios differ from each other by 0.004, and the same author's repeated configuration on 02-21 differs by more
# (section "Round 22: the A100 Megatron/DeepSpeed rows simulated fast"), so a point or two is what the pair can say.
RATIO_TOLERANCE = 0.02


def _fp16_twin(name: str) -> config.Scenario:
    """The held-out BF16_Optimizer scenario on DeepSpeed's fp16 ZeRO-1 path (16-bit gradients reduce-scattered)."""
    data = config.load(name).model_dump(mode="json")
    data["training"]["precision"] = "fp16"
    data["parallelism"]["grad_reduce_dtype"] = "fp16"
    return config.from_dict(data)


def _ratio(name: str) -> float:
    bf16 = simulate(config.load(name)).summary["step_time_s"]
    return bf16 / simulate(_fp16_twin(name)).summary["step_time_s"]


@pytest.mark.parametrize("name", sorted(PREQUEL_FP16_TO_BF16))
def test_bf16_optimizer_over_fp16_step_as_the_prequel_measured(name, monkeypatch):
    """The BF16_Optimizer's step over the fp16 path's, against the prequel's 02-27 -> 02-28 pair (+5.0% / +5.4%).
    With the all-reduce in fp32 (the model before round 24) the ratio is about 0.035 too high (1.091 / 1.089)."""
    fp16_s, bf16_s = PREQUEL_FP16_TO_BF16[name]
    published = bf16_s / fp16_s
    assert _ratio(name) == pytest.approx(published, abs=RATIO_TOLERANCE)
    monkeypatch.setattr(deepspeed_pipeline, "BF16_OPTIMIZER_COMM_DTYPE", "fp32")
    assert _ratio(name) > published + 1.5 * RATIO_TOLERANCE
