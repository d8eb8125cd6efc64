"""What a cost the two Llama 3 8B rows share can do to their pair (issue 15, round 25: docs/calibration/round-25.md
"Round 25: the Llama 3 8B pair outside FP8").

The pair is ``nemo2409-llama31-8b-8-h100-bf16`` (calibration: dgxc-benchmarking's NeMo 24.09 recipe) against
``nemo2407-llama3-8b-8-h100-fp8`` (held out: NeMo 24.07's launcher); the issue asks their errors within 5 points.
Round 24 showed the FP8-only work is the same per token as in the 7B FP8 row of the same container, which the model
meets; the leads left were costs outside FP8 that both 8B rows run: the 128K-vocabulary output layer and its loss,
and context-parallel attention at sequence 8192 (the same Transformer Engine loop in both containers, round 20).
This states, on the model, what such a shared cost would have to be:

- the two scenarios differ only in what their recipes state (precision, the loss kernel, the gradient reduction's
  dtype and bucket rule; NeMo-Framework-Launcher ``llama/llama3_8b.yaml`` 157ea78b and
  ``examples/training/llama/h100/llama3_8b_fp8.sh`` 329df4af against dgxc-benchmarking ``llama3.1/configure.sh``
  143b90dd), everything else equal: model, cluster, sequence, batches, tp / pp / cp / dp, ZeRO, overlaps,
  Transformer Engine generation, attention kernel;
- error = published step / simulated step - 1 (simulated throughput over published), so a cost of T seconds added
  to both steps moves the pair's gap by Pf / (Sf + T) - Pb / (Sb + T) (P published, S simulated, f FP8, b BF16):
  the FP8 step is shorter, so the same T narrows the gap, but slowly (about 3.4 points a second here);
- the output layer and loss, scaled by k in both rows as the engine times them, reach a 5-point gap only at k near
  3, where the calibration row would be simulated more than 10% slow; attention scaled alike needs k above 2. A
  common term of that size would break the calibration row long before it closed the pair, so the 10.8 points are
  not an under-charged cost the two 8B rows share.
"""

from __future__ import annotations

import pytest
from scripts_loader import load_script

from simcluster.spec import config
from simcluster.studies import validation

BF16 = "nemo2409-llama31-8b-8-h100-bf16"
FP8 = "nemo2407-llama3-8b-8-h100-fp8"
PAIR_TARGET = 0.05             # issue 15: the two precisions of a model within 5 points of error
CALIBRATION_BREAKS = -0.10     # a calibration row simulated more than 10% slow is no longer calibrated
OUTPUT_TERM = "chunk extras (embedding, output, loss)"
ATTENTION_TERMS = ("attention forward", "attention backward")
# the keys the two recipes set differently (module docstring), and the Megatron-Core release of their containers
# (NeMo 24.09: 0.9, 24.07: 0.8; round 25, data/mcore_versions.yaml) and what that release defaults to for the
# averaging of gradients in the collective (on from 0.9, NeMo 24.09's default; round 28, workload/grad_scaling.py):
# every other scenario value is the same
RECIPE_KEYS = {"training.precision", "training.cross_entropy", "parallelism.grad_reduce_dtype",
               "parallelism.grad_buckets", "parallelism.grad_bucket_size", "training.mcore_version",
               "parallelism.average_in_collective"}


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.fixture(scope="module")
def rows(case_result):
    """Per row: (published step, simulated step, its output/loss seconds, its attention seconds) a step. Each row's
    run is its ``case_result`` (tests/validation/conftest.py: ``validation.run_case``, simulated once a session)."""
    pipeline_terms = load_script("pipeline_terms")
    cases = {c["scenario"]: c for c in validation.cases() + validation.held_out_cases()}
    out = {}
    for name in (BF16, FP8):
        scenario = config.load(name)
        result = case_result(cases[name])
        published = validation.published_step_s(cases[name], scenario)
        terms, _ = pipeline_terms.stage_terms(scenario)
        out[name] = (published, result.step_time_s, terms[OUTPUT_TERM], sum(terms[k] for k in ATTENTION_TERMS),
                     result.error)
    return out


def _errors(rows, k: float, term: int) -> tuple[float, float]:
    """(BF16 error, FP8 error) with the given term (2: output and loss, 3: attention) scaled by k in both rows."""
    errors = []
    for name in (BF16, FP8):
        published, step, *terms, _ = rows[name]
        errors.append(published / (step + (k - 1) * terms[term - 2]) - 1)
    return errors[0], errors[1]


def _scale_closing_pair(rows, term: int) -> float:
    """The factor on ``term`` in both rows that brings the pair's gap to the issue's 5 points (bisection)."""
    lo, hi = 1.0, 20.0
    assert _gap(rows, lo, term) > PAIR_TARGET > _gap(rows, hi, term)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _gap(rows, mid, term) > PAIR_TARGET else (lo, mid)
    return (lo + hi) / 2


def _gap(rows, k: float, term: int) -> float:
    bf16, fp8 = _errors(rows, k, term)
    return fp8 - bf16


def test_the_rows_differ_only_in_what_their_recipes_state():
    bf16, fp8 = (_flat(config.load(name).model_dump(mode="json")) for name in (BF16, FP8))
    differing = {k for k in set(bf16) | set(fp8) if bf16.get(k) != fp8.get(k)} - {"name", "description"}
    assert differing == RECIPE_KEYS
    assert (bf16["training.precision"], fp8["training.precision"]) == ("bf16", "fp8")
    assert bf16["parallelism.cp"] == fp8["parallelism.cp"] == 2 and bf16["training.seq_len"] == 8192


def test_the_arithmetic_reproduces_the_pair(rows):
    for name in (BF16, FP8):
        published, step, *_, error = rows[name]
        assert published / step - 1 == pytest.approx(error, abs=1e-9)
    # 10.8 points on main 1862205; 9.9 after round 28 (cuDNN's causal attention on Hopper, attention.causal_loss: a
    # cost the two rows share, larger in the FP8 row's shorter step, narrowed it by 0.7 point)
    assert _gap(rows, 1.0, 2) > 0.095


def test_a_shared_output_and_loss_cost_cannot_close_the_pair(rows):
    k = _scale_closing_pair(rows, 2)
    assert k > 2.5                      # 2.97 on main 1862205
    bf16_error, _ = _errors(rows, k, 2)
    assert bf16_error < CALIBRATION_BREAKS   # the calibration row -13.7% there


def test_a_shared_attention_cost_cannot_close_the_pair(rows):
    k = _scale_closing_pair(rows, 3)
    assert k > 1.8
    bf16_error, _ = _errors(rows, k, 3)
    assert bf16_error < CALIBRATION_BREAKS


def test_a_common_additive_cost_narrows_the_gap_by_a_few_points_a_second(rows):
    (pb, sb, *_), (pf, sf, *_) = rows[BF16], rows[FP8]
    per_second = (pf / sf ** 2) - (pb / sb ** 2)   # minus the derivative of the gap at T = 0
    assert 0.02 < per_second < 0.05
    # the whole output layer and loss charged a second time narrows the 10.8 points by about 3 (3.3 to first order,
    # 3.3 exactly: 7.43 points at k = 2), less than the 5.8 the pair needs; round 26: 6.97 points at k = 2 (the FP8
    # row's own fp32 embedding buckets, NeMo 24.07's, narrowed the pair by 0.28 point to 10.4)
    assert 0.02 < per_second * rows[FP8][2] < _gap(rows, 1.0, 2) - PAIR_TARGET
    assert _gap(rows, 2.0, 2) > PAIR_TARGET + 0.015
