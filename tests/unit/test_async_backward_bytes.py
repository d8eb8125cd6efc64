"""Byte widths of the TP backward's collectives with TP overlap off (workload.async_backward), fp8 against bf16,
against the closed form tokens x hidden x bytes per element of the tensor each moves (tokens: the microbatch's
sequence, the gathered size). From Transformer Engine's backward (TE 1.x ``module/layernorm_linear.py``
``_LayerNormLinear.backward``, ``layernorm_mlp.py`` alike; ``module/base.py`` ``grad_output_preprocess``):
- the column-parallel linears' async input re-gather ``gather_along_first_dim(ln_out, ..., async_op=True)``
  ("Overlap input AG with dgrad") gathers the saved norm output, which fp8 training keeps in fp8 (the wgrad GEMM
  reads it as ``tex.fp8_transpose(ln_out_total, fp8_dtype_forward)``): 1 byte an element in fp8, 2 in bf16;
- their async dgrad reduce-scatter ("Overlap dgrad-RS/AR with wgrad") sums the dgrad GEMM's output, allocated
  ``torch.empty(dgrad_size, dtype=ctx.activation_dtype)`` (16-bit also in fp8; an fp8 dgrad only with userbuffers'
  fp8 bulk-wgrad buffer, i.e. TP overlap on): 2 bytes an element either way;
- the row-parallel linears' blocking dY all-gather casts dY to fp8 first ("FP8 case with gather"): 1 byte in fp8.
Checked where the bytes are used: the sizes the engine's backward blocks hand to their TP collectives, and the
sizes the plan times the async exposure with (``ChunkCost.tp_async_exposed_s``)."""

from __future__ import annotations

import pytest

from simcluster.engine import Simulation
from simcluster.parallel import plan
from simcluster.spec import config
from simcluster.spec.model import TransformerSpec

MODEL = TransformerSpec(layers=2, hidden=4096, heads=32, kv_heads=8, ffn_hidden=14336, vocab=32000, mlp="swiglu",
                        norm="rmsnorm", position="rope", dropout=False)
SEQ, MICRO, TP = 4096, 1, 8
WIDTH = {"fp8": {"all_gather": 1, "reduce_scatter": 2}, "bf16": {"all_gather": 2, "reduce_scatter": 2}}


def _scenario(precision: str) -> config.Scenario:
    return config.from_dict({
        "name": f"async-backward-bytes-{precision}",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1, "topology": "nvswitch-node"},
        "model": MODEL.model_dump(mode="json"),
        "training": {"seq_len": SEQ, "global_batch_size": MICRO, "micro_batch_size": MICRO, "precision": precision},
        "parallelism": {"tp": TP, "dp": 1, "sequence_parallel": True, "zero_stage": 1, "tp_comm_overlap": False}})


def _closed_form(precision: str) -> dict[str, float]:
    return {op: SEQ * MICRO * MODEL.hidden * width for op, width in WIDTH[precision].items()}


@pytest.mark.parametrize("precision", ["fp8", "bf16"])
def test_engine_backward_collectives_move_the_tensors_te_gathers_and_scatters(precision):
    sim = Simulation(_scenario(precision))
    seen: dict[str, set[float]] = {}
    run = sim.tensor_parallel

    def record(agent, calls, size_bytes, name, tag="tp", op_bytes=None):
        if name.startswith("backward"):
            for op, _count in calls:
                seen.setdefault(op, set()).add((op_bytes or {}).get(op, size_bytes))
        return run(agent, calls, size_bytes, name, tag=tag, op_bytes=op_bytes)

    sim.tensor_parallel = record
    sim.run(1)
    chunk = sim.plan.chunks[0]
    assert chunk.tp_async_backward and dict(chunk.tp_blocking["backward"])["all_gather"] > 0
    # async re-gathers and blocking dY gathers alike (one width), async dgrad reduce-scatters
    assert seen == {op: {size} for op, size in _closed_form(precision).items()}


@pytest.mark.parametrize("precision", ["fp8", "bf16"])
def test_plan_times_the_async_exposure_at_those_widths(precision):
    sizes: dict[str, set[float]] = {}

    def timed(op, group, size):
        sizes.setdefault(op, set()).add(size)
        return 1e-6

    plan.plan(_scenario(precision), timed)
    assert {op: sizes[op] for op in WIDTH[precision]} == {op: {size} for op, size in _closed_form(precision).items()}
