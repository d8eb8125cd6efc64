"""FSDP1's side-stream gradient kernels for a stated ``parallelism.fsdp: fsdp1`` (IBM's fms-fsdp:
``FullyShardedDataParallel``, bfSixteen, use_orig_params False, torch 2.2/2.3), as for Composer's FSDP1
(parallel/fsdp_runtime.py): per unit and microbatch autograd's ``SplitWithSizesBackward`` cat of the unsharded bf16
gradient (unshard stream), ``_get_reduce_scatter_tensors``' ``F.pad`` when the unit's parameter count is not a
multiple of the world, and ``_div_if_needed``'s pre-divide (post-backward stream). Checked against hand counts of a
Llama 2 70B block."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from simcluster.parallel import fsdp_runtime, memory, plan
from simcluster.spec import config
from simcluster.workload import interference, kernels
from simcluster.workload.ops import layer_ops, shard_for

H100 = "fmsfsdp-llama2-70b-96-h100"    # 96 ranks: 96 = 3 x 32 divides no Llama 2 unit
A100 = "fmsfsdp-llama2-70b-128-a100"   # 128 ranks: divides every unit


def _llama2_70b_block() -> int:
    """One Llama 2 70B block by hand: wq, wo 8192 x 8192; wk, wv 8192 x 1024 (8 key/value heads of 128); w1, w2, wg
    8192 x 28672; two RMSNorm weights of 8192."""
    hidden, kv, ffn = 8192, 1024, 28672
    return 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * ffn + 2 * hidden


def test_one_units_kernels_are_the_cat_the_pad_and_the_pre_divide_by_hand():
    """A 70B block on 96 ranks, bf16 parameters and reduction: the cat reads and writes 2 B an element, ``F.pad``
    reads n and writes 96 x ceil(n / 96) elements (855,654,400 -> 855,654,432), the pre-divide (factor 16) 2 + 2 B;
    on 128 ranks the block is 6,684,800 elements a rank exactly: no pad."""
    n = _llama2_70b_block()
    assert n == 855_654_400 and n % 96 == 64 and n % 128 == 0
    ops = fsdp_runtime.backward_ops(n, 1, 2.0, 2.0, world=96, numels=[n])
    assert [op.name for op in ops] == [fsdp_runtime.BACKWARD_KERNELS[0][0], fsdp_runtime.POST_BACKWARD_KERNELS[0][0],
                                       fsdp_runtime.PAD_KERNEL]
    cat, divide, pad = (op.hbm_bytes for op in ops)
    assert cat == divide == 4 * n
    assert pad == 2 * (n + 855_654_432) == 2 * (n + 96 * math.ceil(n / 96))
    assert all(op.kind == "memory" and op.flop == 0.0 for op in ops)
    assert fsdp_runtime.predivide_factor(96) == 16
    assert [op.name for op in fsdp_runtime.backward_ops(n, 1, 2.0, 2.0, world=128, numels=[n])] == [
        fsdp_runtime.BACKWARD_KERNELS[0][0], fsdp_runtime.POST_BACKWARD_KERNELS[0][0]]


def test_fms_units_are_its_blocks_and_one_root_with_embedding_norm_and_output():
    """``LLaMABlock`` units and the root (untied embedding and output of 32,000 x 8192, final norm 8192): 80 + 1."""
    m = config.load(H100).model
    params = memory.chunk_params(m, 1, m.layers, True, True, 1)
    numels = fsdp_runtime.unit_numels(memory.layer_params_per_rank(m, 1), m.layers, params)
    assert numels == [_llama2_70b_block()] * 80 + [2 * 32000 * 8192 + 8192]
    assert len(fsdp_runtime.pad_ops(numels, 96, 2.0)) == 81   # no unit a multiple of 96
    assert fsdp_runtime.pad_ops(numels, 128, 2.0) == []        # every unit a multiple of 128


def _backward(name: str, monkeypatch=None):
    scenario = config.load(name)
    if monkeypatch is not None:
        monkeypatch.setattr(fsdp_runtime, "runs_fsdp1", lambda s: False)
    return scenario, plan.plan(scenario, lambda op, group, size: 0.0).chunks[0].backward_stream


@pytest.mark.parametrize(("name", "pads"), [(H100, True), (A100, False)])
def test_a_stated_fsdp1_row_pays_the_kernels_beside_compute_not_on_its_stream(monkeypatch, name, pads):
    """The fms row's backward gains the kernels' HBM time in its HBM-bound share only (side streams): more than
    nothing, less than the kernels run in series, and no compute-stream kernel."""
    scenario, on = _backward(name)
    _, off = _backward(name, monkeypatch)
    assert fsdp_runtime.stated_fsdp1(scenario) and not fsdp_runtime.applies(scenario)
    n, root, world = _llama2_70b_block(), 2 * 32000 * 8192 + 8192, scenario.parallelism.dp
    gpu = scenario.cluster.gpu
    serial = kernels.stream_time(   # the kernels in series: their HBM rooflines
        fsdp_runtime.backward_ops(80 * n + root, 81, 2.0, 2.0, world, [n] * 80 + [root]), gpu, "bf16").device_s
    added = on.device_s - off.device_s
    assert on.kernels == off.kernels
    assert 0.0 < added < serial
    # exactly the serial HBM time in the share of the layer's backward in HBM-bound kernels (round 37 test audit: the
    # bounds alone let half the charge, or the units unpadded, pass)
    layer = layer_ops(scenario.model, shard_for(scenario))
    share = interference.memory_bound_share([op for phase in plan.BACKWARD_PHASES for op in layer[phase]], gpu,
                                            scenario.training.precision)
    assert added == pytest.approx(share * serial, rel=1e-9)
    # the pad is a third of the bytes on 96 ranks, none on 128
    unpadded = kernels.stream_time(fsdp_runtime.backward_ops(80 * n + root, 81, 2.0, 2.0, world), gpu, "bf16").device_s
    assert serial / unpadded == (pytest.approx(1.5, rel=1e-6) if pads else 1.0)


def test_runs_fsdp1_is_the_key_or_composers_optimizer_not_fsdp2():
    assert fsdp_runtime.runs_fsdp1(config.load(H100)) and fsdp_runtime.runs_fsdp1(config.load("mpt-13b-8-h100"))
    assert not fsdp_runtime.runs_fsdp1(config.load("torchtitan-llama31-405b-128-h100-bf16"))


MPT_ROWS = sorted(p.stem for p in (Path(config.__file__).parents[1] / "data" / "scenarios").glob("mpt-*.yaml"))


@pytest.mark.parametrize("name", MPT_ROWS)
def test_composer_mpt_rows_pad_nothing_and_keep_their_units(name):
    """Round 36 review: the pad and the merged root leave every llm-foundry MPT row as it was. Each unit (a block,
    and the root with the tied embedding and the final norm) is a multiple of the row's power-of-two world, so
    ``_get_reduce_scatter_tensors`` pads nothing (with ``use_orig_params=True`` FSDP1 would have padded the flat
    parameter at construction instead: no ``F.pad`` either way), and a tied, unpipelined model has one root unit
    whether or not it is counted merged."""
    scenario = config.load(name)
    m, p = scenario.model, scenario.parallelism
    assert fsdp_runtime.runs_fsdp1(scenario) and m.tied_embeddings and p.pp == 1
    numels = fsdp_runtime.unit_numels(memory.layer_params_per_rank(m, p.tp), m.layers,
                                      memory.chunk_params(m, p.tp, m.layers, True, True, 1))
    assert len(numels) == m.layers + 1
    assert fsdp_runtime.pad_ops(numels, p.dp * p.cp, 2.0) == []
    assert (memory.zero3_units(m, m.layers, True, True, 1, merged_root=True)
            == memory.zero3_units(m, m.layers, True, True, 1) == m.layers + 1)
