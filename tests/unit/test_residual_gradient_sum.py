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
(dy and the 1-byte mask read, dx written). flash-attention's DropoutAddLayerNorm (``dropout_add_norm: fused``) runs
the branch's dropout, the residual add and the next norm in one kernel each way and takes the incoming residual
gradient into its backward kernel (``dropout_add_ln_bwd(dz, dx, ...)``, flash_attn/ops/layer_norm.py; csrc/layer_norm
``ln_fwd_kernel``, ``ln_bwd_kernel``): no residual, mask-multiply or sum kernel there (round 33 review,
``ops.dropout_add_norm_ops``).
"""

import pytest
import yaml

from simcluster.core.errors import ScenarioError
from simcluster.spec import config
from simcluster.spec.model import TransformerSpec
from simcluster.workload import kernels
from simcluster.workload.ops import MASK_BYTES_PER_ELEMENT, Shard, layer_ops

SEQ, BATCH, TP, H = 512, 2, 2, 256
ELEMENTS = SEQ * BATCH / TP * H     # the sequence-parallel share of the residual stream
E = 2                               # bf16
SUMS = ["mlp_residual_grad_sum", "attn_residual_grad_sum"]


def _layer(dropout: bool, **shard) -> dict:
    model = TransformerSpec(layers=1, hidden=H, heads=4, vocab=1000, dropout=dropout)
    return layer_ops(model, Shard(seq_len=SEQ, micro_batch=BATCH, tp=TP, sequence_parallel=True, **shard))


def _backward(dropout: bool, **shard) -> list:
    return _layer(dropout, **shard)["backward_input"]


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


RESIDUAL = ("attn_residual", "mlp_residual", *SUMS)
NORMS = ("attn_norm", "mlp_norm")


@pytest.mark.parametrize("dropout", [True, False])
def test_fused_dropout_add_norm_is_one_kernel_each_way_per_norm(dropout):
    """flash-attention's DropoutAddLayerNorm (csrc/layer_norm ln_fwd_kernel / ln_bwd_kernel): dropout, residual add
    and norm in one kernel, its backward adding the residual's incoming gradient and applying the mask; so no
    residual, mask-multiply or sum kernel, and each norm kernel moves what the kernel reads and writes. Forward: x0,
    the residual; x, the mask, z. Backward: dz, dx (the incoming residual gradient), x, the mask; dresidual, dx0."""
    separate, fused = _layer(dropout), _layer(dropout, dropout_add_norm="fused")
    mask = MASK_BYTES_PER_ELEMENT if dropout else 0
    for phase, per_element in (("forward", 4 * E + mask), ("backward_input", 5 * E + mask)):
        assert not [op for op in fused[phase] if op.name in RESIDUAL]
        norms = [op for op in fused[phase] if op.name in NORMS]
        assert len(norms) == 2 and all(op.hbm_bytes == per_element * ELEMENTS for op in norms)
        # everything else in the layer is the same kernels
        assert ([op for op in fused[phase] if op.name not in NORMS]
                == [op for op in separate[phase] if op.name not in (*RESIDUAL, *NORMS)])
    # conservation against the separate kernels: fusing drops the norm's read of the residual sum forward (e an
    # element a norm) and, backward, the norm's input gradient written and read back by the sum and, with dropout,
    # the sum read by the mask multiply (3e); without dropout the kernel writes dx0 beside dresidual, where autograd
    # passes the one sum to both (2e - e)
    for phase, saved in (("forward", 2 * E), ("backward_input", 2 * (3 if dropout else 1) * E)):
        before = sum(op.hbm_bytes for op in separate[phase] if op.name in (*RESIDUAL, *NORMS))
        after = sum(op.hbm_bytes for op in fused[phase] if op.name in NORMS)
        assert before - after == pytest.approx(saved * ELEMENTS)
    # on the stream: two kernels fewer forward, with dropout four fewer backward (two without: no mask multiply)
    gpu = config.from_dict(yaml.safe_load(config.resolve_path("dao2023-gpt3-1.3b-2k-8-a100").read_text())).cluster.gpu
    (a_f, a_b), (b_f, b_b) = ([kernels.stream_time(layer[p], gpu, "bf16") for p in ("forward", "backward_input")]
                              for layer in (separate, fused))
    assert (a_f.kernels - b_f.kernels, a_b.kernels - b_b.kernels) == (2, 4 if dropout else 2)


def test_the_fused_kernel_moves_an_fp32_residual_in_four_bytes():
    """residual_in_fp32: the kernel's residual type is fp32 (ln_api.cpp: rtype), so the residual and x forward, and
    dx, x and dresidual backward, take 4 bytes an element; z, x0, dz and dx0 stay 16-bit."""
    e16, e32 = _layer(True, dropout_add_norm="fused"), _layer(True, dropout_add_norm="fused", residual_in_fp32=True)
    for phase, tensors in (("forward", 2), ("backward_input", 3)):
        a, b = ([op.hbm_bytes for op in layer[phase] if op.name in NORMS] for layer in (e16, e32))
        assert [y - x for x, y in zip(a, b, strict=True)] == [tensors * (4 - E) * ELEMENTS] * 2
    # the separate kernels: memory only
    assert _layer(True) == _layer(True, residual_in_fp32=True)


def test_fused_dropout_add_norm_is_refused_in_fp8():
    data = yaml.safe_load(config.resolve_path("dao2023-gpt3-1.3b-2k-8-a100").read_text())
    data["training"]["precision"] = "fp8"
    data["cluster"]["gpu"] = "h100-sxm"
    data["training"].update(autocast_fp32_params=False, mlp_activation="separate")
    with pytest.raises(ScenarioError) as err:
        config.from_dict(data)
    assert err.value.field == "training.dropout_add_norm"


def test_the_flash_attention_gpt_rows_fuse_it_and_a_bad_value_names_the_field():
    data = yaml.safe_load(config.resolve_path("dao2023-gpt3-1.3b-2k-8-a100").read_text())
    assert data["training"]["dropout_add_norm"] == "fused"
    data["training"]["dropout_add_norm"] = "apex"
    with pytest.raises(ScenarioError) as err:
        config.from_dict(data)
    assert err.value.field == "training.dropout_add_norm"
