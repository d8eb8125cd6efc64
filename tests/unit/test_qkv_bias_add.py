"""The forward's QKV bias add as a kernel of its own (``training.qkv_bias_add``; workload/eager_backward.py):
Megatron-LM 2020-22 adds the bias of ``query_key_value`` (its one column-parallel linear without skip_bias_add)
after the GEMM, ``output = output + bias`` in 2022's LinearWithGradAccumulationAndAsyncCommunication.forward and
F.linear on a 3-D input under PyTorch 1.x before; Transformer Engine's GEMM epilogue adds it."""

from __future__ import annotations

import pytest

from simcluster.spec import config
from simcluster.workload import ops

KORTHIKANTI_22B = "korthikanti2022-22b-a100"   # layer_backward fused (the default), qkv_bias_add: separate
NARAYANAN_2021 = "narayanan2021-7.5b-a100"     # layer_backward eager, attention naive: the 2021-22 Megatron layer


def _bias_adds(scenario):
    layer = ops.layer_ops(scenario.model, ops.shard_for(scenario))
    return [op for op in layer["forward"] if op.name == "qkv_bias_add"]


def test_korthikanti_2022_adds_the_qkv_bias_by_a_kernel_reading_and_writing_the_qkv_output():
    """22B GPT at tp 8, micro batch 4 x 2048 tokens: the [8192, 3 x 6144 / 8] bf16 output read and written, the
    2304-wide bias read, in every forward."""
    scenario = config.load(KORTHIKANTI_22B)
    assert scenario.training.layer_backward == "fused"
    (add,) = _bias_adds(scenario)
    tokens, width = 4 * 2048, 3 * 6144 // 8
    assert add.hbm_bytes == pytest.approx(2 * tokens * width * 2 + width * 2, rel=1e-12)


def test_unset_the_2021_megatron_layer_adds_it_and_an_epilogue_stack_does_not():
    row = config.load(NARAYANAN_2021)
    assert row.training.qkv_bias_add is None and len(_bias_adds(row)) == 1
    epilogue = row.model_copy(update={"training": row.training.model_copy(update={"qkv_bias_add": "epilogue"})})
    assert _bias_adds(epilogue) == []
    fused = config.load(KORTHIKANTI_22B)
    fused = fused.model_copy(update={"training": fused.training.model_copy(update={"qkv_bias_add": None})})
    assert _bias_adds(fused) == []
