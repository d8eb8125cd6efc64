"""The end-to-end FP8-over-BF16 speedup of Llama 3 8B on 8 H100, against two independent published measurements.

Issue 15's Llama 3 8B BF16/FP8 pair (NeMo 24.09 BF16, calibration; NeMo 24.07 FP8, held out) is 10.6 points apart:
the simulated FP8 step is relatively too fast. These two measurements, from outside NVIDIA, ask whether the model's
FP8 gain at 8B (GEMMs at hidden 4096 / FFN 14336, 4,096-16,384 tokens per GEMM, a 16-bit attention share at
sequence 8192) is larger than FP8 training delivers on this model and GPU count. Both ran torchtitan with torchao's
dynamic tensorwise float8 (the recipe the bundled torchtitan scenario models: `fp8_recipe: torchao_tensorwise`),
FSDP2 over 8 H100 (Meta's Grand Teton, 96 GB HBM2e, 500 W: `h100-sxm-96gb-500w`), sequence 8192, torch.compile:

- local batch 1: bf16 6,150 / float8 tensorwise (with float8 FSDP all-gather) 7,689.5 median tokens/s, per-op
  selective activation checkpointing (pytorch/ao `torchao/float8/README.md`, "Training benchmarks", NVIDIA H100
  table; torch 2.7.0a0+gitb98af95, torchao 0.10.0+git890e0ac8, torchtitan 0.0.2; added by pytorch/ao#1793, 2025):
  x1.250;
- local batch 2, global 16: FSDP + torch.compile 6,667 / + Float8 8,532 TPS/GPU, selective activation
  checkpointing (pytorch/torchtitan `benchmarks/llama3_h100_202412_torchtitan.md`, Table 1, December 2024; the
  same document's Table 2 gives the held-out `torchtitan-llama31-8b-8-h100-fp8-32k`, but Table 1 is no validation
  row and nothing is fitted to it): x1.280.

The model runs the same settings (the torchtitan scenario at sequence 8192, local batch 1 or 2), bf16 against fp8.
torchtitan's per-op selective checkpointing (save every other matmul output, the attention output and the
abs-max results; recompute the rest: `_save_list` / `_custom_policy` in torchtitan's `parallelize_llama.py`,
2024-25) lies between the model's `selective` (the attention core only) and `full` (the whole layer), so both are run
as a bracket.
Simulated: x1.17-1.20 (batch 1), x1.20-1.24 (batch 2): 3.5-6% BELOW the measurements, never above. Not modelled, each
of which would raise the simulated FP8 gain: the float8 FSDP all-gather (the model casts every weight on every call,
about 2.8% of the float8 step at batch 1), torch.compile's fusion of the abs-max and cast into neighbouring kernels.

Tolerance: the simulated speedup lies within [0.92, 1.02] of the measured one for both bracket ends. The upper
bound is the finding kept as a guard (docs/calibration/round-21.md, "Round 21: the FP8-over-BF16 speedup at 8B against
independent measurements"): a change that makes the model's FP8 gain at 8B larger than FP8 training measured fails
here. It is a coarse guard: the model sits 3.5-6% below the measurements, so it fails only at a grossly
over-generous fp8 GEMM (checked: no split-accumulator slowdown together with an fp8 ceiling 10% higher gives
x1.25-1.32, up to 1.030 of the measurement; either alone, or with the fp8 ceiling at bf16's, stays inside). The 2%
above allows the one unmodelled item on the other side: in torchtitan's per-op policy `_save_list` names
`aten.mm` but not `aten._scaled_mm`, so the float8 run may recompute all its forward GEMMs where bf16 recomputes
every second one, which the bracket runs alike. The lower bound allows the unmodelled items that raise the gain
(up to ~4%) and the two measurements' own spread (batch 1 against 2, two software releases).
"""

import pytest
from scripts_loader import load_script

from simcluster import engine
from simcluster.spec import config

fp8_pairs = load_script("fp8_pairs")   # its twin(): the scenario in the other precision, everything else equal

BASE = "torchtitan-llama31-8b-8-h100-fp8-32k"
SEQ = 8192
GPUS = 8
# local batch -> (bf16 tokens/s per GPU, float8 tokens/s per GPU), the published pairs above
PUBLISHED = {1: (6150.0, 7689.5),   # torchao README, Training benchmarks (H100)
             2: (6667.0, 8532.0)}   # torchtitan benchmarks/llama3_h100_202412_torchtitan.md, Table 1
BRACKET = ("selective", "full")     # torchtitan's per-op SAC recomputes more than one, less than the other
BELOW, ABOVE = 0.92, 1.02


def _variant(precision: str, micro_batch: int, recompute: str):
    data = config.load(BASE).model_dump(mode="json", exclude_none=True)
    data["training"].update(seq_len=SEQ, micro_batch_size=micro_batch, global_batch_size=GPUS * micro_batch,
                            activation_recompute=recompute)
    data["name"] = f"torchtitan-llama31-8b-mbs{micro_batch}-{recompute}"
    return fp8_pairs.twin(config.from_dict(data), precision)


def _step_s(precision: str, micro_batch: int, recompute: str) -> float:
    # the published runs fit (47.8 GB peak at batch 1); the memory model's 500 W part is not what is checked here
    return float(engine.simulate(_variant(precision, micro_batch, recompute), check_memory=False)
                 .summary["step_time_s"])


@pytest.mark.parametrize("micro_batch", sorted(PUBLISHED))
@pytest.mark.parametrize("recompute", BRACKET)
def test_fp8_speedup_at_8b_not_above_measured(micro_batch, recompute):
    bf16_tps, fp8_tps = PUBLISHED[micro_batch]
    measured = fp8_tps / bf16_tps
    simulated = _step_s("bf16", micro_batch, recompute) / _step_s("fp8", micro_batch, recompute)
    assert BELOW * measured <= simulated <= ABOVE * measured, (micro_batch, recompute, simulated, measured)
