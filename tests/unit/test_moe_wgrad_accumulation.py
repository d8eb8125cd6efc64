"""The grouped expert GEMMs' weight gradients accumulate into the fp32 main gradient in the GEMM's epilogue
(Transformer Engine GroupedLinear with fuse_wgrad_accumulation, Megatron-Core's gradient_accumulation_fusion):
the epilogue reads and writes main_grad, workload/ops.py ``wgrad_output_bytes``. Checked against the closed form of the
bytes, the scenario's switches, and the roofline of the MoE zoo's TP 4 layer (16 local experts of 512 rows)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import moe_layer_terms  # noqa: E402

from simcluster.parallel.plan import shard_for  # noqa: E402
from simcluster.spec import config, hardware, model  # noqa: E402
from simcluster.workload import kernels, moe  # noqa: E402
from simcluster.workload.ops import Shard  # noqa: E402

QWEN3 = model.preset("qwen3-235b-a22b")


def _expert_wgrads(shard: Shard, ep: int = 8, load: float = 1.0) -> dict:
    block = moe.moe_block(QWEN3, shard, ep=ep, load=load, dispatcher="flex")
    return {op.name: op for op in block.backward_weight if op.name.startswith("expert_")}


@pytest.mark.parametrize("main_grad_bytes", [4, 2])
def test_expert_wgrad_reads_and_writes_the_main_gradient_at_its_width(main_grad_bytes):
    """Closed form: X^T (h x rows) and dY (rows x out) read at 2 bytes, the h x out main gradient read and written
    at its width, per local expert; FLOP unchanged."""
    tp4 = Shard(seq_len=4096, micro_batch=1, tp=4)
    fused = dataclasses.replace(tp4, main_grad_bytes=main_grad_bytes)
    plain, accumulating = _expert_wgrads(tp4), _expert_wgrads(fused)
    experts, h, f = 128 // 8, QWEN3.hidden, QWEN3.moe.ffn_hidden
    rows = 8 * (4096 / 4) * 8 / 128            # ep x tokens a rank x top-k / experts = 512
    for name, (inner, outer) in {"expert_up": (h, 2 * f), "expert_down": (f, h)}.items():
        reads = experts * rows * (inner + outer) * 2
        assert plain[name].hbm_bytes == pytest.approx(reads + experts * inner * outer * 2)
        assert accumulating[name].hbm_bytes == pytest.approx(reads + experts * inner * outer * 2 * main_grad_bytes)
        assert accumulating[name].flop == plain[name].flop == pytest.approx(2 * experts * rows * inner * outer)


def test_the_tp4_rows_expert_wgrad_is_bound_by_the_main_gradient_not_by_its_flop():
    """16 experts of 512 rows (the MoE zoo's TP 4 Qwen3 row): fc1's wgrad moves 16 x 4096 x 3072 x 8 B = 1.6 GB
    of fp32 main gradient against 206 GFLOP: HBM-bound on H100 (3.35 TB/s against 989 TFLOP/s dense bf16), where
    the 16-bit output alone left it compute-bound. At 4,096 rows an expert (the DeepEP row) it stays compute-bound."""
    gpu = hardware.gpu("h100-sxm")
    tp4 = Shard(seq_len=4096, micro_batch=1, tp=4, main_grad_bytes=4)
    compute, memory = kernels.roofline_s(_expert_wgrads(tp4)["expert_up"], gpu, "bf16")
    assert memory > 1.3 * compute
    plain = dataclasses.replace(tp4, main_grad_bytes=0)
    compute, memory = kernels.roofline_s(_expert_wgrads(plain)["expert_up"], gpu, "bf16")
    assert memory < compute
    deepep = Shard(seq_len=4096, micro_batch=1, tp=2, main_grad_bytes=4)
    compute, memory = kernels.roofline_s(_expert_wgrads(deepep, ep=32)["expert_up"], gpu, "bf16")
    assert memory < compute


def test_scenarios_accumulate_into_the_main_gradient_they_reduce_unless_the_fusion_is_off():
    """Megatron-Core's gradient_accumulation_fusion: main_grad at grad_reduce_dtype's width; off, the separate
    accumulation kernel (grad_accumulation.py) and a 16-bit wgrad output."""
    tp4 = config.load("moezoo-qwen3-235b-256-h100-tp4")
    assert tp4.parallelism.grad_reduce_dtype == "fp32"
    assert shard_for(tp4).main_grad_bytes == 4
    bf16 = tp4.model_copy(update={"parallelism": tp4.parallelism.model_copy(update={"grad_reduce_dtype": "bf16"})})
    assert shard_for(bf16).main_grad_bytes == 2
    unfused = tp4.model_copy(update={"training": tp4.training.model_copy(
        update={"gradient_accumulation_fusion": False})})
    assert shard_for(unfused).main_grad_bytes == 0
    assert shard_for(unfused).grad_accumulation_bytes > 0


def test_the_layer_terms_script_shows_the_tp4_rows_expert_wgrad_hbm_bound_and_the_deepep_rows_not():
    """scripts/moe_layer_terms.py: the zoo's TP 4 row (16 experts x 512 rows) spends more time moving the wgrad's
    main gradient than computing it; the DeepEP row (4 experts x 4,096 rows) the other way round."""
    compute, memory = moe_layer_terms.expert_wgrad_roofline(config.load("moezoo-qwen3-235b-256-h100-tp4"))
    assert memory > 1.2 * compute
    compute, memory = moe_layer_terms.expert_wgrad_roofline(config.load("moezoo-qwen3-235b-256-h100-deepep"))
    assert compute > 2 * memory
