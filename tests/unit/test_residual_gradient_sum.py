"""The residual stream's gradient sum, with and without dropout (round 33, ``ops.residual_gradient_sum``).

Each residual branch point of a pre-norm layer (the layer's input, and the first residual add's output) feeds two
consumers: the norm (Megatron-Core ``TransformerLayer``: ``residual = hidden_states``, ``input_layernorm`` or
Transformer Engine's LayerNormLinear) and the residual add (``bias_dropout_add(..., residual, ...)``,
megatron/core/fusions/fused_bias_dropout.py: ``out = residual + dropout(x + bias)``; Megatron-LM and
Megatron-DeepSpeed's ``ParallelTransformerLayer.forward`` the same). The add's backward hands dy to the residual
unchanged; the norm's backward writes a fresh input gradient (TE's ``layernorm_bwd`` and ATen's
``layer_norm_backward`` accumulate into nothing); autograd's ``InputBuffer::add`` then adds the two in an elementwise
kernel of its own: 2 reads and 1 write of tokens/sp x h, twice a layer, whether or not the add drops out. A stored
PyTorch-profiler trace shows the mechanism (HolisticTraceAnalysis test data, pp-128rank-sampled.rank0, A100):
inside ``autograd::engine::evaluate_function: NativeLayerNormBackward0`` an ``aten::add_`` of two [2048, 128] tensors
launching ``vectorized_elementwise_kernel<4, CUDAFunctor_add<float>>``; no transformer layer is among the stored
traces, so the per-layer count with and without dropout rests on the source. Dropout adds only its mask multiply
(dy and the 1-byte mask read, dx written). flash-attention's DropoutAddLayerNorm (``dropout_add_norm: fused``) takes
the incoming residual gradient into its own backward kernel (``dropout_add_ln_bwd(dz, dx, ...)``,
flash_attn/ops/layer_norm.py): no sum kernel there.
"""

import pytest
import yaml

from simcluster.core.errors import ScenarioError
from simcluster.spec import config
from simcluster.spec.hardware import BYTES_PER_ELEMENT
from simcluster.spec.model import TransformerSpec
from simcluster.workload import kernels
from simcluster.workload.ops import MASK_BYTES_PER_ELEMENT, Shard, layer_ops

SEQ, BATCH, TP, H = 512, 2, 2, 256
ELEMENTS = SEQ * BATCH / TP * H     # the sequence-parallel share of the residual stream
E = 2                               # bf16
SUMS = ["mlp_residual_grad_sum", "attn_residual_grad_sum"]


def _backward(dropout: bool, **shard) -> list:
    model = TransformerSpec(layers=1, hidden=H, heads=4, vocab=1000, dropout=dropout)
    return layer_ops(model, Shard(seq_len=SEQ, micro_batch=BATCH, tp=TP, sequence_parallel=True,
                                  **shard))["backward_input"]


@pytest.mark.parametrize("dropout", [True, False])
def test_each_residual_branch_point_sums_its_two_gradients_dropout_or_not(dropout):
    backward = _backward(dropout)
    sums = [op for op in backward if op.name.endswith("residual_grad_sum")]
    assert [op.name for op in sums] == SUMS
    for op in sums:   # read the two gradients, write their sum; one add an element
        assert op.kind == "memory" and op.hbm_bytes == 3 * E * ELEMENTS and op.flop == ELEMENTS
    # each sum runs once the norm's backward has written the branch's gradient
    names = [op.name for op in backward]
    assert names.index("mlp_residual_grad_sum") == names.index("mlp_norm") + 1
    assert names.index("attn_residual_grad_sum") == names.index("attn_norm") + 1


def test_dropout_adds_only_its_mask_multiply_to_the_backward():
    """Conservation: with dropout the backward has exactly one more kernel per residual add, the mask multiply
    (dy and the mask read, dx written), and no other byte changes; the sums are the same kernels either way."""
    with_dropout, without = _backward(True), _backward(False)
    mask_multiply = [op for op in with_dropout if op.name in ("attn_residual", "mlp_residual")]
    assert len(mask_multiply) == 2 and not [op for op in without if op.name in ("attn_residual", "mlp_residual")]
    assert all(op.hbm_bytes == (2 * E + MASK_BYTES_PER_ELEMENT) * ELEMENTS for op in mask_multiply)
    assert len(with_dropout) - len(without) == 2
    assert sum(op.hbm_bytes for op in with_dropout) - sum(op.hbm_bytes for op in without) == pytest.approx(
        2 * (2 * E + MASK_BYTES_PER_ELEMENT) * ELEMENTS)


@pytest.mark.parametrize("dropout", [True, False])
def test_fused_dropout_add_norm_runs_no_sum_kernel(dropout):
    separate, fused = _backward(dropout), _backward(dropout, dropout_add_norm="fused")
    assert [op for op in separate if op.name not in SUMS] == fused
    # on the stream: two kernels fewer (each with its per-kernel gap), their bytes at the elementwise HBM rate
    gpu = config.from_dict(yaml.safe_load(config.resolve_path("dao2023-gpt3-1.3b-2k-8-a100").read_text())).cluster.gpu
    a, b = (kernels.stream_time(ops, gpu, "bf16") for ops in (separate, fused))
    assert a.kernels - b.kernels == 2
    rate = gpu.hbm_bandwidth * kernels.hbm_fraction(gpu.name)
    assert a.device_s - b.device_s == pytest.approx(2 * 3 * BYTES_PER_ELEMENT["bf16"] * ELEMENTS / rate, rel=1e-9)


def test_the_flash_attention_gpt_rows_fuse_it_and_a_bad_value_names_the_field():
    data = yaml.safe_load(config.resolve_path("dao2023-gpt3-1.3b-2k-8-a100").read_text())
    assert data["training"]["dropout_add_norm"] == "fused"
    data["training"]["dropout_add_norm"] = "apex"
    with pytest.raises(ScenarioError) as err:
        config.from_dict(data)
    assert err.value.field == "training.dropout_add_norm"
