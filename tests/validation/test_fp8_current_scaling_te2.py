"""FP8 current scaling (Transformer Engine 2.x ``Float8CurrentScaling``, Megatron-Bridge "FP8-CS") against what
the framework runs and what NVIDIA published for it (docs/calibration/round-29.md, "Round 29: FP8 current scaling's
cost, kernel by kernel against Transformer Engine 2.x").

What TE 2.x runs per quantized GEMM operand (read in NVIDIA/TransformerEngine's stored quantizer.cpp,
``Float8CurrentScalingQuantizer::quantize_impl``, the releases of 2025-26 alike, and normalization.cpp
``Impl::FUSED_NORM_AMAX_FP8``): the amax pass (a zeroing of the amax, then ``nvte_compute_amax`` reading the 16-bit
tensor; skipped where a TE norm wrote the tensor and its amax), the TP MAX all-reduce of one fp32 amax where the
tensor is then sequence-parallel gathered, ``nvte_compute_scale_from_amax`` (one element) and the cast
``nvte_quantize_v2``. TE's own guide says it: "Quantization is a memory-bound operation that requires reading the
tensor twice" (docs/features/low_precision_training/fp8_current_scaling). The model charges the amax pass and the
cast as kernels with their bytes (``fp8_recipes.quantize_kernels``), the all-reduces (``plan.tp_amax_all_reduces``)
and not the two one-element kernels; the tests of those structures are in tests/unit (test_fp8_recipes.py,
test_fp8_current_tp_amax.py, test_fp8_gathered_transposes.py).

Truth used here, independent of the model: the NeMo 25.11 page prints every Blackwell Llama row twice at one layout,
"FP8-CS (FP8-MX)" (NVIDIA-NeMo/Megatron-Bridge docs/performance-summary.md, "25.11 NeMo Container"; stored copy
pufanyi/Megatron-Bridge at 21a2ced8): current scaling is the faster recipe in all four pairs, by 3.7% (8B, 8 B200:
30,624 / 29,521 tokens/s), 5.8% (8 GB200: 31,508 / 29,789), 4.0% (8 GB300: 37,556 / 36,108) and 5.9% (405B, 128 B200:
661 / 624). The scenarios of each pair differ only in ``fp8_recipe`` (tests/validation/test_nemo2511_mxfp8_twins.py).

Tolerances, both from the published pairs:
- the model's current-scaling step is shorter than its MXFP8 twin's (one-sided, the page's sign in all four pairs).
  The model's margin is 1.8-3.7% of the step; charging TE's two one-element kernels per quantization the fitted
  per-kernel gap (25 us each, 16 a dense layer and microbatch) costs 2.5-3.7% and fails it, so the test guards
  against counting those launches for current scaling alone (MXFP8's per-GEMM scale swizzles are the same kind of
  launch, round 18);
- the model's advantage of current scaling is not above the page's (+0.5 point for rounding the printed tokens/s):
  charging current scaling's quantize kernels (amax passes, casts, transposes, their gaps) at half their present
  time fails it on the B200 and GB300 pairs (ratios 1.055 / 1.058 against 1.042 / 1.045); dropping the amax passes
  alone does not (1.025: on Blackwell they are 0.7% of the 8B step). The model's advantage is below the page's by
  1.9-4.0 points today; round 18 ("MXFP8 against current scaling") reads that as MXFP8 charged short, and a fuller
  MXFP8 charge moves the model toward the page, not past it.

The pairs' tokens/s are checked against the rows' step times in data/validation.yaml (global batch x sequence /
(step x GPUs), within the printed rounding), so a transcription slip on either side fails.

And the H100 Llama 3 70B FP8-CS rows (held out: nemo2511 -10.5%, nemo2604 -10.4%): current scaling costs more than
delayed scaling on them (TE's guide: current scaling reads the tensor twice, the amax pass and the cast; delayed
scaling casts with the previous amax in one pass). How much of their error the recipe's premium is (0.53 s and 0.75 s,
under half of it, round 29) is a diagnostic in docs/calibration.md, not asserted here: a test pinning a held-out
row's error would fail when the model improves (round 29 review).
"""

import copy

import pytest

from simcluster import engine
from simcluster.spec import config
from simcluster.studies import validation

# (current-scaling scenario, its MXFP8 twin, published tokens/s per GPU of each): 25.11 page, "FP8-CS (FP8-MX)"
PAIRS = {
    "nemo2511-llama3-8b-8-b200-fp8": ("nemo2511-llama3-8b-8-b200-mxfp8", 30624, 29521),
    "nemo2511-llama3-8b-8-gb200-fp8": ("nemo2511-llama3-8b-8-gb200-mxfp8", 31508, 29789),
    "nemo2511-llama3-8b-8-gb300-fp8": ("nemo2511-llama3-8b-8-gb300-mxfp8", 37556, 36108),
    "nemo2511-llama3-405b-128-b200-fp8": ("nemo2511-llama3-405b-128-b200-mxfp8", 661, 624),
}
PRINTED_ROUNDING = 0.005    # tokens/s printed to 3-5 digits: the ratio of two of them to about half a point
H100_70B = ("nemo2511-llama3-70b-64-h100-fp8", "nemo2604-llama3-70b-64-h100-fp8")
# one worker runs the module, so the what-ifs are simulated once (module fixture) under `make test`
pytestmark = pytest.mark.xdist_group("fp8-current-scaling-te2")


def _case(name: str) -> dict:
    return next(c for c in (*validation.cases(), *validation.held_out_cases()) if c["scenario"] == name)


def _step_s(case_result, name: str, **training) -> float:
    """The simulated step of a validation row (every scenario here is one), or of its what-if with ``training``
    changed. The row as published is its ``case_result`` (tests/validation/conftest.py): the run the per-run tests
    simulate once a session, the same step to the bit as ``engine.simulate`` of the scenario (run_case drops the
    link windows only, which no step reads; round 32 checked all ten rows of this file equal)."""
    if not training:
        return case_result(_case(name)).step_time_s
    data = copy.deepcopy(config.load(name).model_dump(mode="json", exclude_none=True))
    data["training"].update(training)
    data["name"] = f"{name}-what-if"
    return float(engine.simulate(config.from_dict(data)).summary["step_time_s"])


def _published_step_s(name: str) -> float:
    return float(_case(name)["step_time_s"])


@pytest.fixture(scope="module")
def pair_ratios(case_result) -> dict[str, tuple[float, float]]:
    """{current-scaling scenario: (model's MXFP8 / current-scaling step ratio, the page's tokens/s ratio)}."""
    out = {}
    for current, (mxfp8, current_tokens, mxfp8_tokens) in PAIRS.items():
        out[current] = (_step_s(case_result, mxfp8) / _step_s(case_result, current), current_tokens / mxfp8_tokens)
    return out


@pytest.mark.parametrize("current", sorted(PAIRS))
def test_the_pairs_are_the_validation_rows_and_current_scaling_is_faster(current):
    mxfp8, current_tokens, mxfp8_tokens = PAIRS[current]
    assert current_tokens > mxfp8_tokens          # the page's sign in every pair
    for name, tokens in ((current, current_tokens), (mxfp8, mxfp8_tokens)):
        scenario = config.load(name)
        t = scenario.training
        from_tokens = t.global_batch_size * t.seq_len / (tokens * scenario.cluster.gpus)
        assert _published_step_s(name) == pytest.approx(from_tokens, rel=PRINTED_ROUNDING)


@pytest.mark.parametrize("current", sorted(PAIRS))
def test_current_scaling_is_faster_than_its_mxfp8_twin_as_published(pair_ratios, current):
    model, _published = pair_ratios[current]
    assert model > 1.0


@pytest.mark.parametrize("current", sorted(PAIRS))
def test_the_models_advantage_of_current_scaling_is_not_above_the_pages(pair_ratios, current):
    model, published = pair_ratios[current]
    assert model <= published + PRINTED_ROUNDING


@pytest.mark.parametrize("name", H100_70B)
def test_current_scaling_costs_more_than_delayed_on_the_h100_70b_rows(case_result, name):
    assert _step_s(case_result, name) > _step_s(case_result, name, fp8_recipe="delayed")
