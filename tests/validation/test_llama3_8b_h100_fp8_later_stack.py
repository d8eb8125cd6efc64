"""Llama 3 8B FP8 on 8 H100 as NVIDIA's later stack ran it, against the model: the bound an FP8 charge at 8B must keep.

Issue 15's Llama 3 8B pair (`nemo2409-llama31-8b-8-h100-bf16` -4.7%, calibration; `nemo2407-llama3-8b-8-h100-fp8`
+5.2%, held out) asks for an FP8 cost the 24.07 run paid and the model does not charge (docs/calibration/round-29.md,
"Round 29: the Llama 3 8B BF16/FP8 pair against its FP8 sibling, per microbatch"). NVIDIA published the same model, GPU
count, global batch and sequence on a later stack: the 25.11 page's DGX-H100 row LLAMA3_8B, 8 GPUs, FP8-CS, GBS 128, MBS
1, sequence 8192, FSDP 1, TP 1, PP 1, CP 1, GA 16: 14,451 tokens/s per GPU, a 9.070 s step (NVIDIA-NeMo/Megatron-Bridge
docs/performance-summary.md, "25.11 NeMo Container", System: DGX-H100; stored copy pufanyi/Megatron-Bridge at 21a2ced8;
the 25.09 section's row, precision not stated, 14,079). It is no validation row: round 27 left it out because its
stored preset recomputes 5 of the 32 layers (full, block method: `recompute_num_layers` 5), which
`activation_recompute` cannot state; nothing is fitted to it here.

The model on that layout, from the B200 calibration scenario of the same page and recipe family
(`nemo2511-llama3-8b-8-b200-fp8`: current scaling, fp8 parameters, fused loss, bf16 reduction, Megatron-Core 0.15)
with the H100 and micro batch 1. Megatron-FSDP with fp8 parameters on Hopper is refused by the model (its
per-microbatch weight transposes are not modelled), so ZeRO 1 stands in: the model's most favourable version of the
run, as is the step without recompute. The 5 recomputed layers are the no-recompute step plus 5/32 of what full
recompute of every layer adds (the layers are identical; full recompute leaves the output layer and loss alone).

Simulated at main 418d11d4: 9.877 s without recompute (-8.2%), 10.319 s with the 5 layers (-12.1%), where the 24.07
row, CP 2 on TE 1.8, is +5.2% (fast). So on NVIDIA's later stack the model's FP8 step at 8B is too slow, not too
fast: the 24.07 row's deficit is that run's (its stack or its figure), not an FP8 term the model lacks at 8B. The
pair needs 0.505 s a step more on the 24.07 row (15.8 ms a microbatch of 4,096 tokens a rank); the same charge per
token on this layout (16 microbatches of 8,192 tokens a rank, the same 131,072 tokens a rank a step) puts it at -16.2%.

Tolerance, both one-sided and stated by what the model leaves out:
- the model's most favourable step (ZeRO 1, no recompute) is not shorter than the published one (error <= 0): the
  run also recomputed 5 layers and re-transposed its FSDP-gathered fp8 weights every microbatch. Fails if the model's
  FP8 at 8B on H100 becomes more than 8% faster;
- with the 5 layers the error stays above -14%: fails at an FP8 charge of half of what the pair needs (by arithmetic
  on the simulated steps: +0.25 s a step gives -14.2%), so it guards against closing the pair through an FP8 term at
  8B that the later stack's measurement contradicts.
"""

import copy

import pytest

from simcluster import engine
from simcluster.spec import config

BASE = "nemo2511-llama3-8b-8-b200-fp8"
GPUS, GLOBAL_BATCH, SEQ = 8, 128, 8192
TOKENS_PER_S_PER_GPU = 14451.0          # 25.11 page, DGX-H100, LLAMA3_8B, FP8-CS
RECOMPUTED_LAYERS = 5                   # stored H100 FP8-CS preset: recompute_num_layers 5, full, block
LAYERS = 32
SLOW_BOUND = -0.14


def published_step_s() -> float:
    return GLOBAL_BATCH * SEQ / (TOKENS_PER_S_PER_GPU * GPUS)


def _step_s(recompute: str) -> float:
    data = copy.deepcopy(config.load(BASE).model_dump(mode="json", exclude_none=True))
    data["name"] = "llama3-8b-8-h100-fp8-2511-layout"
    data["cluster"]["gpu"] = "h100-sxm"
    data["training"].update(micro_batch_size=1, activation_recompute=recompute)
    scenario = config.from_dict(data)
    assert (scenario.parallelism.tp, scenario.parallelism.cp, scenario.parallelism.dp) == (1, 1, 8)
    assert scenario.training.precision == "fp8" and scenario.training.fp8_recipe == "current"
    return engine.simulate(scenario).summary["step_time_s"]


@pytest.fixture(scope="module")
def steps() -> dict[str, float]:
    return {recompute: _step_s(recompute) for recompute in ("none", "full")}


def test_published_step_is_the_pages_tokens_per_second():
    assert published_step_s() == pytest.approx(9.070, abs=5e-4)


def test_the_models_most_favourable_step_is_not_faster_than_published(steps):
    assert published_step_s() / steps["none"] - 1 <= 0.0, steps


def test_with_the_recomputed_layers_the_model_is_slow_by_less_than_the_bound(steps):
    recomputed = steps["none"] + RECOMPUTED_LAYERS / LAYERS * (steps["full"] - steps["none"])
    error = published_step_s() / recomputed - 1
    assert SLOW_BOUND < error < 0.0, (recomputed, error)
