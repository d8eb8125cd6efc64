"""Round 32: the DeepSpeed pipeline rows' published steps split into a slot per microbatch and a once-a-step part
(scripts/batch_slopes.py; docs/calibration/round-32.md "Round 32: the DeepSpeed pipeline rows split into slot and
step").

Independent truths: the 1F1B closed form T = (m + pp - 1) t + d (a synthetic line is recovered exactly, and the
engine's own steps of one layout at four global batches lie on a line); the source's second column (each prequel
point's TFLOPs, Megatron-DeepSpeed's count after bigscience-workshop/Megatron-DeepSpeed#251, fixes its shape, batch and
seconds: a mis-copied figure fails); the published 02-26 series itself is a line within its snapshots' noise."""

from __future__ import annotations

import pytest
from scripts_loader import load_script

from simcluster.engine import simulate

slopes = load_script("batch_slopes")


def test_the_split_recovers_a_pipeline_line_exactly():
    pp, t, d = 12, 0.7, 3.5
    ms = [32, 64, 96, 128]
    s = slopes.split(ms, [(m + pp - 1) * t + d for m in ms], pp)
    assert (s.slot_s, s.step_s, s.intercept_s) == pytest.approx((t, d, (pp - 1) * t + d), abs=1e-12)
    assert s.residual_s < 1e-12
    model = slopes.split(ms, [(m + pp - 1) * 0.65 + 3.0 for m in ms], pp)
    in_slots, once = slopes.missing(s, model, 128, pp)
    assert in_slots == pytest.approx((128 + pp - 1) * 0.05) and once == pytest.approx(0.5)
    assert in_slots + once == pytest.approx(((128 + pp - 1) * t + d) - ((128 + pp - 1) * 0.65 + 3.0))
    with pytest.raises(ValueError, match="two microbatch counts"):
        slopes.split([64, 64], [1.0, 2.0], pp)


def _prequel_points():
    for label, points in slopes.SERIES.items():
        if label.startswith("prequel"):
            yield from points


def test_each_prequel_point_is_its_source_row():
    """TFLOPs = 96 B s l h^2 (1 + s/6h + V/16lh) / (T x GPUs) with V = 250,880 (round 20's check of the same file),
    for every point: the shape, global batch and seconds as copied."""
    n = 0
    for point in _prequel_points():
        s = slopes.scenario_of(point)
        b, sq, layers, h, v = (s.training.global_batch_size, s.training.seq_len, s.model.layers, s.model.hidden,
                               s.model.vocab)
        gpus = s.cluster.nodes * s.cluster.gpus_per_node
        assert gpus == s.parallelism.tp * s.parallelism.pp * s.parallelism.dp == 384
        assert sum(s.parallelism.layers_per_stage) == layers
        tflops = 96 * b * sq * layers * h**2 * (1 + sq / (6 * h) + v / (16 * layers * h)) / (point.published_s * gpus)
        assert tflops / 1e12 == pytest.approx(point.tflops, rel=5e-4), s.name
        assert s.parallelism.grad_reduce_dtype == "bf16"   # before the BF16_Optimizer: 16-bit gradients
        n += 1
    assert n == 8


def test_the_02_26_series_is_a_line_and_so_is_the_engines():
    """Four snapshots of one layout (02-26) lie within 0.2 s of one line (0.5% of the smallest step), so its slope
    and intercept are the source's; the engine's steps of the same four scenarios lie on a line too (1F1B: every
    term but the slots is independent of m), within 1 ms."""
    label = next(k for k in slopes.SERIES if "02-26" in k)
    points = slopes.SERIES[label]
    scenarios = [slopes.scenario_of(p) for p in points]
    ms = [s.training.global_batch_size // (s.parallelism.dp * s.training.micro_batch_size) for s in scenarios]
    assert ms == [32, 64, 96, 128]
    published = slopes.split(ms, [p.published_s for p in points], 12)
    assert published.residual_s < 0.2
    assert published.slot_s == pytest.approx(0.742, abs=0.002)
    simulated = slopes.split(ms, [simulate(s).summary["step_time_s"] for s in scenarios], 12)
    assert simulated.residual_s < 1e-3


def test_the_script_takes_no_arguments(capsys):
    with pytest.raises(SystemExit) as helped:
        slopes.main(["--help"])
    assert helped.value.code == 0 and capsys.readouterr().out.startswith("usage:")
    with pytest.raises(SystemExit) as usage:
        slopes.main(["x"])
    assert usage.value.code == 2

