"""scripts/fp8_twin_terms.py: an FP8 pipelined step against its BF16 twin, term by term on one stage.

Checks: both itemisations account for every block of the stage (the conservation check of ``pipeline_terms``); the
twin is the same layout in bf16 (same blocks, no fp8 term); the terms only FP8 has are positive; and the closed form
of the fitted kernel gaps FP8 adds per block, from Transformer Engine 1.x and Megatron-Core source
(docs/calibration/rounds-10-14.md "Transformer Engine 1.x fp8, kernel by kernel" and "the FP8 pipelined rows against
their BF16 twins"): one fused cast op per layer and phase (``ops.layer_ops``) and two kernels per autocast region, one
region per chunk, microbatch and direction (``torch.cat`` of the amaxes and
``fused_amax_and_scale_update_after_reduction``; TE fp8.py ``reduce_and_update_fp8_tensors``), on Llama 2 70B at tp 4,
pp 4, vp 20 (one layer a chunk) without userbuffers (whose bf16 dY copies would add kernels to the twin): (1 + 2) x gap
per block. Fails if the amax kernels or the casts were dropped, counted per tensor, or per layer instead of per chunk.
"""

import copy

import pytest
from scripts_loader import load_script

from simcluster.core import catalog
from simcluster.spec import config
from simcluster.workload import kernels

NAME = "nemo2407-llama2-70b-64-h100-fp8"


@pytest.fixture(scope="module")
def fp8_twin_terms():
    return load_script("fp8_twin_terms")


@pytest.fixture(scope="module")
def no_userbuffers():
    raw = copy.deepcopy(catalog.load(f"scenarios/{NAME}"))
    raw["parallelism"]["tp_comm_overlap"] = False
    return config.from_dict(raw, source=f"{NAME} without tp_comm_overlap")


@pytest.fixture(scope="module")
def terms(fp8_twin_terms, no_userbuffers):
    return fp8_twin_terms.twin_terms(no_userbuffers)


def test_both_account_for_every_block_and_share_the_layout(terms):
    rows, facts = terms
    fp8_check, bf16_check = rows["check: plan blocks - terms"]
    assert abs(fp8_check) < 1e-9 and abs(bf16_check) < 1e-9
    fp8_steps, bf16_steps = rows["pipeline steps (fitted)"]
    assert fp8_steps == pytest.approx(bf16_steps) and fp8_steps > 0      # same chunks and microbatches
    assert facts["blocks"] == 2 * facts["chunks"] * facts["microbatches"] == 2 * 20 * 32


def test_only_fp8_has_the_fp8_terms_and_its_gemms_are_faster(fp8_twin_terms, terms):
    rows, _ = terms
    for key in fp8_twin_terms.FP8_ONLY:
        fp8, bf16 = rows[key]
        assert fp8 > 0 and bf16 == 0
    for key in ("GEMM forward", "GEMM dgrad", "GEMM wgrad"):
        fp8, bf16 = rows[key]
        assert 0.4 * bf16 < fp8 < 0.8 * bf16
    fp8, bf16 = rows["attention forward"]          # attention stays 16-bit in fp8 training (ops.HIGH_PRECISION)
    assert fp8 == pytest.approx(bf16)


def test_fp8_adds_a_cast_op_per_layer_and_two_amax_kernels_per_region(terms):
    rows, facts = terms
    fp8, bf16 = rows["kernel gaps (fitted)"]
    layers_per_chunk = facts["layers"] / facts["chunks"]
    assert layers_per_chunk == 1
    per_block = (fp8 - bf16) / facts["blocks"]
    assert per_block == pytest.approx((layers_per_chunk + 2) * kernels.host_model().kernel_gap_s, rel=1e-9)


def test_a_bf16_scenario_is_refused_naming_the_field(fp8_twin_terms, capsys):
    assert fp8_twin_terms.main(["nemo2409-gpt3-175b-128-h100-bf16"]) == 2
    assert "training.precision" in capsys.readouterr().err
