"""Round 22 (issue 15): the A100 Megatron/DeepSpeed rows simulated fast (docs/calibration/round-22.md "Round 22: the
A100 Megatron/DeepSpeed rows simulated fast").

1. Megatron's fused scale-mask-softmax, as its source gates it, runs for every bundled scenario with unfused
   attention, so the one fused softmax pass ``workload.ops.attention_core`` charges is what those runs executed (the
   torch fallback, several fp32 passes, is not needed for any row; a head count that breaks the gate, as the BLOOM
   prequel's 108 heads at tp 4 and micro batch 2, is shown to break it). The gate, read from source:
   NVIDIA/Megatron-LM megatron/model/fused_softmax.py (0cb36de, 2021: ``key_seq_len > 16 and key_seq_len <= 2048
   and query_seq_len % 4 == 0 and attn_batch_size % 4 == 0`` with a mask) and bigscience-workshop/Megatron-DeepSpeed
   megatron/model/fused_softmax.py ``is_kernel_available`` (the same, then ``attn_batches % batch_per_block == 0``
   for the causal kernel, ``sq % batch_per_block`` for the padding one); ``get_batch_per_block`` in
   scaled_masked_softmax.h: 128 threads a block, warps of min(32, 2^ceil(log2 sk)) threads, 2 rows a warp up to 128
   keys, else 1.
2. ``scripts/mbs_pairs.py``: twins found by name, the per-(layer, microbatch) cost against its closed form, refusals.
"""

from __future__ import annotations

import json
import math

import pytest
from scripts_loader import load_script

from simcluster.core.errors import ScenarioError
from simcluster.spec import config

THREADS_PER_BLOCK = 128
WARP = 32


def batch_per_block(sk: int) -> int:
    """scaled_masked_softmax.h ``get_batch_per_block``: rows of the score matrix one thread block handles."""
    pow2 = 1 << math.ceil(math.log2(sk))
    warp = min(pow2, WARP)
    return (THREADS_PER_BLOCK // warp) * (2 if pow2 <= 128 else 1)


def fused_softmax_runs(micro_batch: int, local_heads: int, sq: int, sk: int, causal: bool = True) -> bool:
    """Megatron's ``FusedScaleMaskSoftmax`` takes its fused kernel (module doc) rather than the torch fallback."""
    attn_batches = micro_batch * local_heads
    if not (16 < sk <= 2048 and sq % 4 == 0 and attn_batches % 4 == 0):
        return False
    return (attn_batches if causal else sq) % batch_per_block(sk) == 0


def naive_attention_scenarios():
    for name in config.bundled_names():
        try:
            scenario = config.load(name)
        except ScenarioError:        # multi-job scenarios load through `simcluster run` only
            continue
        if scenario.training.attention == "naive":
            yield name, scenario


def test_batch_per_block_closed_form():
    assert [batch_per_block(sk) for sk in (32, 64, 128, 256, 1024, 2048)] == [8, 8, 8, 4, 4, 4]


def test_every_unfused_attention_row_runs_megatrons_fused_softmax():
    rows = list(naive_attention_scenarios())
    assert len(rows) >= 50      # the 2020-22 A100 rows: Megatron-LM, DeepSpeed (MT-NLG, BLOOM), MegaScale
    for name, s in rows:
        t, p = s.training, s.parallelism
        assert s.model.heads % p.tp == 0, name
        assert fused_softmax_runs(t.micro_batch_size, s.model.heads // p.tp, t.seq_len // p.cp, t.seq_len), name


def test_the_gate_fails_where_the_prequel_says_it_does():
    # "NHEADS=108 breaks constraints for invoking optimized fused softmax kernel" (chronicles-prequel.md): 27 heads a
    # rank at tp 4, 54 score rows a microbatch of 2
    assert not fused_softmax_runs(2, 108 // 4, 2048, 2048)
    # the prequel's stated rule, (HEADS/TP)*MBS % 4 == 0, is met by the 104-head row: it ran the fused kernel
    assert fused_softmax_runs(2, 104 // 4, 2048, 2048)
    assert fused_softmax_runs(2, 64 // 8, 2048, 2048) and fused_softmax_runs(4, 64 // 8, 2048, 2048)
    assert not fused_softmax_runs(1, 8, 4096, 4096)          # the 2021-22 kernel stops at 2048 keys
    # up to 128 keys a block takes 8 rows: the causal kernel then needs 8 | attention batches, the padding-mask one
    # 8 | query length
    assert fused_softmax_runs(1, 4, 64, 64, causal=False) and not fused_softmax_runs(1, 4, 64, 64)


@pytest.fixture(scope="module")
def pairs():
    return load_script("mbs_pairs")


def _row(pairs, name, published, simulated, m, micro_batch, pp=6, tp=8, layers=17):
    return pairs.Row(name, simulated, published, m, pp, tp, layers, micro_batch)


def test_per_layer_microbatch_cost_closed_form(pairs):
    # a cost c on every (layer, microbatch) adds c L (m + pp - 1) to each step: the twins' missing difference
    # recovers c whatever the model's own times
    c, layers, pp = 0.0123, 17, 6
    small_sim, large_sim = 119.0, 114.0
    small = _row(pairs, "x-mbs2-y", small_sim + c * layers * (128 + pp - 1), small_sim, 128, 2)
    large = _row(pairs, "x-mbs4-y", large_sim + c * layers * (64 + pp - 1), large_sim, 64, 4)
    assert pairs.per_layer_microbatch_s(small, large) == pytest.approx(c, rel=1e-12)
    # a cost per step (the same at either micro batch) gives none
    small = _row(pairs, "x-mbs2-y", small_sim + 3.0, small_sim, 128, 2)
    large = _row(pairs, "x-mbs4-y", large_sim + 3.0, large_sim, 64, 4)
    assert pairs.per_layer_microbatch_s(small, large) == pytest.approx(0.0, abs=1e-15)


def test_twins_by_name_and_layout(pairs):
    rows = [_row(pairs, "a-tp8-pp6-mbs2-a100", 1, 1, 128, 2), _row(pairs, "a-tp8-pp6-mbs4-a100", 1, 1, 64, 4),
            _row(pairs, "b-tp4-pp12-mbs2-a100", 1, 1, 128, 2, pp=12, tp=4, layers=6),
            _row(pairs, "c-tp4-pp12-mbs4-a100", 1, 1, 64, 4, pp=12, tp=4, layers=6)]
    found = [(s.name, big.name) for s, big in pairs.twins(rows)]
    assert found == [("a-tp8-pp6-mbs2-a100", "a-tp8-pp6-mbs4-a100")]


def test_the_script_reads_a_validate_output(pairs, tmp_path, capsys):
    cases = [{"scenario": "bigscience-prequel-184b-h64-tp8-pp6-mbs2-a100", "step_time_s": 100.0, "error": 0.2},
             {"scenario": "bigscience-prequel-184b-h64-tp8-pp6-mbs4-a100", "step_time_s": 100.0, "error": 0.1}]
    path = tmp_path / "ho.json"
    path.write_text(json.dumps({"cases": cases}))
    assert pairs.main([str(path)]) == 0
    out = capsys.readouterr().out
    # published 120 / 110 s, simulated 100 / 100 s: 10 s over 17 layers x (128 - 64) microbatches
    assert f"{1e3 * 10.0 / (17 * 64):7.2f}" in out and "128/64" in out


def test_the_script_refuses_bad_input_in_one_line(pairs, tmp_path, capsys):
    with pytest.raises(SystemExit) as usage:   # argparse: no file named
        pairs.main([])
    assert usage.value.code == 2
    capsys.readouterr()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert pairs.main([str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.json" in err[0] and "not JSON" in err[0]


def test_prequel_diagnostic_runs_are_the_stated_layouts():
    layouts = load_script("prequel_layouts")
    for _, layers, nodes, pp, dp, mbs, batch, published in layouts.RUNS:
        s = config.from_dict(layouts.scenario_dict(layers, nodes, pp, dp, mbs, batch))
        p, t = s.parallelism, s.training
        assert (s.model.layers, s.cluster.nodes * s.cluster.gpus_per_node) == (layers, p.tp * pp * dp)
        assert (p.tp, p.pp, p.dp, t.micro_batch_size, t.global_batch_size) == (8, pp, dp, mbs, batch)
        assert (s.model.hidden, s.model.heads, t.seq_len) == (14336, 64, 2048) and published
        assert (p.pipeline_engine, p.grad_reduce_dtype) == ("deepspeed", "bf16")  # before the BF16_Optimizer
        # Megatron-DeepSpeed's TFLOPs column of the first one-node run (157.02 at 119.19 s) fixes 512 samples:
        # 96 B s l h^2 (1 + s/6h + V/16lh) / (T x GPUs), V = 250,880
    b, sq, h, v = 512, 2048, 14336, 250880
    tflops = 96 * b * sq * 6 * h**2 * (1 + sq / (6 * h) + v / (16 * 6 * h)) / (119.19 * 8) / 1e12
    assert tflops == pytest.approx(157.02, rel=1e-3)
    with pytest.raises(SystemExit) as usage:   # argparse: it takes no arguments
        layouts.main(["x"])
    assert usage.value.code == 2
