"""The fp32 router's GEMMs and casts (``moe.router_gemms``; Round 26, docs/calibration/round-26.md "Round 26: the MoE
zoo's Qwen3-235B rows on 256 H100").

Source: Megatron-Core moe_utils.py ``RouterGatingLinearFunction`` (2025 releases, NVIDIA/Megatron-LM e61c384 and the
stored 0.13-0.15 versions): forward ``te_general_gemm(weight, inp, router_dtype, layout="TN")`` (16-bit operands,
fp32 logits); backward ``te_general_gemm(weight.to(router_dtype), grad_output, router_dtype, layout="NN",
grad=True)`` and ``te_general_gemm(inp.to(router_dtype), grad_output, router_dtype, layout="NT", grad=True)``, then
``grad_input[0].to(ctx.input_dtype)`` and ``grad_weight[0].to(ctx.weight_dtype)``. Transformer Engine's cuBLASLt
GEMM runs fp32 operands and output with CUBLAS_COMPUTE_32F_FAST_TF32 ("Use TF32 only for pure FP32 GEMM",
transformer_engine/common/gemm/cublaslt_gemm.cu, TE 2.x). The closed forms below are written from those lines, not
from the model's code.
"""

from __future__ import annotations

from simcluster.spec import model
from simcluster.workload import moe
from simcluster.workload.ops import Shard

FP32 = moe.Router("fused", "fp32", "aux_loss")
MODEL_DTYPE = moe.Router("fused", "model", "aux_loss")
HIDDEN, EXPERTS, SEQ, TP = 1024, 32, 4096, 4


def _moe() -> model.TransformerSpec:
    return model.TransformerSpec(layers=4, hidden=HIDDEN, heads=8, kv_heads=8, ffn_hidden=2048, vocab=1000,
                                 mlp="swiglu", norm="rmsnorm", position="rope", dropout=False,
                                 tied_embeddings=False, moe={"experts": EXPERTS, "top_k": 4, "ffn_hidden": 256})


def _block(router: moe.Router, precision: str = "bf16"):
    shard = Shard(seq_len=SEQ, micro_batch=1, tp=TP, sequence_parallel=True, precision=precision)
    return moe.moe_block(_moe(), shard, ep=8, router=router)


def _bytes(block, phase: str) -> float:
    return sum(op.hbm_bytes for op in getattr(block, phase))


def test_fp32_router_backward_gemms_run_in_tf32_on_fp32_operands():
    """The dgrad and wgrad of the fp32 router are TF32 GEMMs (fp32 operands); its forward GEMM stays 16-bit."""
    block = _block(FP32)
    forward = next(op for op in block.forward if op.name == "router")
    dgrad = next(op for op in block.backward_input if op.name == "router")
    wgrad = next(op for op in block.backward_weight if op.name == "router")
    assert forward.precision is None                       # the run's bf16
    assert (dgrad.precision, wgrad.precision) == ("tf32", "tf32")
    plain = _block(MODEL_DTYPE)
    assert all(op.precision != "tf32" for op in plain.backward_input + plain.backward_weight)


def test_fp32_router_moves_the_closed_form_bytes_more():
    """Against the model-dtype router, per layer and microbatch: four casts of 2 + 4 bytes an element (the weight
    E x h and the input T x h up, their gradients down); the two backward GEMMs read and write fp32 (2 bytes more an
    element of grad_output T x E, weight or input, and output); the logits written in fp32 (forward) and the
    softmax/top-k's scores in fp32 (2 elementwise passes forward, 3 backward)."""
    t = SEQ // TP                                          # sequence-parallel tokens a rank routes
    e, h = EXPERTS, HIDDEN
    casts = (2 * e * h + 2 * t * h) * (4 + 2)
    dgrad = (t * e + e * h + t * h) * (4 - 2)
    wgrad = (t * e + t * h + e * h) * (4 - 2)
    forward = t * e * (4 - 2) + 2 * t * e * (4 - 2)        # logits; top-k reads and writes the scores
    backward_topk = 3 * t * e * (4 - 2)
    fp32, plain = _block(FP32), _block(MODEL_DTYPE)
    assert _bytes(fp32, "forward") - _bytes(plain, "forward") == forward
    assert _bytes(fp32, "backward_input") - _bytes(plain, "backward_input") == casts + dgrad + backward_topk
    assert _bytes(fp32, "backward_weight") - _bytes(plain, "backward_weight") == wgrad


def test_fp32_router_keeps_its_kernel_count():
    """The casts were counted as zero-work launches (data/moe.yaml fp32_casts: 4); they are now device ops with
    bytes, so the backward launches exactly as many kernels as before: 4 more than the model-dtype router."""
    fp32, plain = _block(FP32), _block(MODEL_DTYPE)
    assert sum(op.name == "router_cast" for op in fp32.backward_input) == 4
    assert len(fp32.backward_input) - len(plain.backward_input) == 4
    assert sum(op.name == "moe_launch" for op in fp32.backward_input) == sum(
        op.name == "moe_launch" for op in plain.backward_input)


def test_fp32_router_in_fp8_and_in_an_fp32_run():
    """In fp8 the router is still a 16-bit GEMM forward and a TF32 one backward, with the same casts; in a run whose
    GEMMs are fp32 already nothing is cast."""
    fp8 = _block(FP32, "fp8")
    assert next(op for op in fp8.forward if op.name == "router").precision == "bf16"
    assert sum(op.name == "router_cast" for op in fp8.backward_input) == 4
    assert moe.router_cast_kernels(FP32, "fp32") == 0
    assert moe.router_cast_kernels(MODEL_DTYPE, "bf16") == 0


def test_graphed_fp32_router_carries_the_cast_bytes_without_more_ops():
    """Under CUDA graphs the casts replay inside the router's graph: the same bytes as eager, no more device ops than
    the model-dtype graphed router (each device op of a graphed router is charged one kernel gap)."""
    shard = Shard(seq_len=SEQ, micro_batch=1, tp=TP, sequence_parallel=True)
    eager, graphed, plain = (moe.moe_block(_moe(), shard, ep=8, cuda_graphs=g, router=r)
                             for g, r in ((False, FP32), (True, FP32), (True, MODEL_DTYPE)))
    assert _bytes(graphed, "backward_input") == _bytes(eager, "backward_input")
    assert len(graphed.backward_input) == len(plain.backward_input)


def test_the_scenario_states_the_router_dtype_and_the_flop_stay():
    """Review (Round 26): the fp32 router reaches the engine's MoE block only through the scenario's
    ``training.moe_router_dtype`` (the zoo's TP 4 row states fp32: four casts a layer-microbatch, the two backward
    GEMMs in TF32); the same row with the model-dtype router has neither. The dtype changes no FLOP: the same two
    backward GEMMs of 2 T E h each, so the block's GEMM FLOP are equal."""
    import yaml

    from simcluster.parallel import plan
    from simcluster.spec import config
    from simcluster.workload.ops import MATMUL_KINDS, flop, shard_for

    d = yaml.safe_load(open(config.resolve_path("moezoo-qwen3-235b-256-h100-tp4")))
    assert d["training"]["moe_router_dtype"] == "fp32"
    blocks = {}
    for dtype in ("fp32", "model"):
        d["training"]["moe_router_dtype"] = dtype
        scenario = config.from_dict(d)
        blocks[dtype] = plan.busiest_moe_block(scenario, shard_for(scenario))
    fp32, plain = blocks["fp32"], blocks["model"]
    assert sum(op.name == "router_cast" for op in fp32.backward_input) == 4
    assert [op.precision for op in fp32.backward_input + fp32.backward_weight if op.name == "router"] == ["tf32"] * 2
    assert not any(op.name == "router_cast" or op.precision == "tf32"
                   for op in plain.forward + plain.backward_input + plain.backward_weight)
    for phase in ("forward", "backward_input", "backward_weight"):
        assert flop(getattr(fp32, phase), MATMUL_KINDS) == flop(getattr(plain, phase), MATMUL_KINDS)
