"""The Llama 3.1 405B layer's FP8 GEMMs on B200 against the measured maximum sustained matmul rate
(docs/calibration/round-28.md, "Round 28: the Blackwell Llama 3.1 405B rows, what is not under-charged").

The held-out Blackwell 405B rows are simulated 10-13% fast. One way they could be: GEMMs of the 405B's deep shapes
(k up to 26,624) modelled above what a B200 sustains at its power cap. S. Bekman's mamf-finder MSMF is the best
shape of a sweep held at the cap with every GPU of the node computing: 2788 TFLOP/s fp8 on B200 (3072x18944x6144;
scripts/blackwell_kernels.py, efficiency.yaml sustained_share_source). A GEMM of the training stream cannot sustain
more than that best shape by more than the benchmark's own repeatability, so the model's GEMMs of the row's layer
(tp 4, cp 2: 4,096 tokens a microbatch) must stay at or below it. Tolerance 2% (the model plateaus over the
deep shapes; the node's slowest GPU sits 1.3% below its median in the same benchmark). Fails with Blackwell's GEMM
sustained share at 1 (the deepest GEMM 1.048 of MSMF) or a fp8 ceiling 2% higher. It holds today at 1.012 at most
and 0.93-1.012 over the layer: the rows' excess is not in their GEMM shapes.
"""

import pytest

from simcluster.spec import config
from simcluster.workload import kernels
from simcluster.workload.ops import layer_ops, shard_for

MSMF_B200_FP8_FLOP_PER_S = 2788e12  # mamf-finder v4 MSMF, B200 fp8, 975-982 W (scripts/blackwell_kernels.py)
SCENARIO = "nemo2511-llama3-405b-128-b200-fp8"


def layer_fp8_gemms(name: str) -> dict[tuple[str, str], tuple[float, float]]:
    """(FLOP/s, FLOP) of each fp8 GEMM of one layer of scenario ``name`` in training (the model's sustained regime),
    by (phase, op); test_gb200_sustained_gemm.py reads it too."""
    scenario = config.load(name)
    gpu, precision = scenario.cluster.gpu, scenario.training.precision
    gemms = {}
    for phase, ops in layer_ops(scenario.model, shard_for(scenario)).items():
        for op in ops:
            if op.kind == "gemm" and kernels.op_precision(op, precision) == "fp8":
                gemms[(phase, op.name)] = (op.flop / kernels.roofline_s(op, gpu, precision)[0], op.flop)
    return gemms


def weighted_rate(name: str) -> float:
    """The layer's fp8 GEMM FLOP over their time."""
    gemms = layer_fp8_gemms(name).values()
    return sum(f for _, f in gemms) / sum(f / r for r, f in gemms)


def layer_gemm_rates() -> dict[tuple[str, str], float]:
    """FLOP/s of each GEMM of one 405B layer in training on B200."""
    return {key: rate for key, (rate, _) in layer_fp8_gemms(SCENARIO).items()}


def test_the_405b_layer_has_its_twelve_fp8_gemms():
    assert len(layer_gemm_rates()) == 12


@pytest.mark.parametrize("key", sorted(layer_gemm_rates()))
def test_no_405b_fp8_gemm_on_b200_is_modelled_above_the_measured_sustained_maximum(key):
    assert layer_gemm_rates()[key] <= MSMF_B200_FP8_FLOP_PER_S * 1.02


def test_the_layers_gemms_sit_near_that_maximum_not_far_below_it():
    """The other side: the deep GEMMs are not charged far below the plateau either (an over-charge would hide a
    different error): the layer's FLOP-weighted rate within 5% of MSMF."""
    assert weighted_rate(SCENARIO) == pytest.approx(MSMF_B200_FP8_FLOP_PER_S, rel=0.05)
