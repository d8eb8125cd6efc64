"""The layer backward of the 2021-22 Megatron stacks on A100: ``training.layer_backward: eager``.

The runs: Megatron-LM's README of January 2021 (calibration, ``megatron-*-a100-*``), the SC21 runs (Narayanan et al.
2021, ``narayanan2021-*``), and the Megatron-DeepSpeed forks of that code that trained MT-NLG 530B (``smith2022-*``)
and BLOOM 176B (``bigscience-*``). Their backward, read from the source of that time:

- LayerNorm: Megatron's ``MixedFusedLayerNorm`` (megatron/fused_kernels/layer_norm_cuda_kernel.cu,
  ``HostLayerNormGradient``; the same structure in apex csrc/layer_norm_cuda_kernel.cu of 2020-2021) launches
  ``cuComputePartGradGammaBeta(dout, input, ...)`` and ``cuComputeGradGammaBeta`` for the weight and bias
  gradients, then ``cuComputeGradInput(dout, input, ...)``: dy and x are read twice, once by a kernel of its own.
- Linear biases: autograd reduces each bias gradient by a kernel of its own. ``GeLUFunction.backward``
  (megatron/model/fused_bias_gelu.py) returns the full [tokens, 4h/tp] gradient for the bias (``return tmp, tmp``),
  which autograd sums to the bias's shape; the jit-scripted bias-dropout-add's broadcast bias and ``F.linear``'s
  bias (QKV) likewise.

- QKV bias, forward: ``query_key_value`` is a ``ColumnParallelLinear`` without ``skip_bias_add``, whose forward runs
  ``F.linear(input_parallel, self.weight, bias)`` on the 3-D [s, b, h] input; PyTorch 1.x's ``linear`` takes
  ``addmm`` (bias in the GEMM) only for 2-D input, else ``output = at::matmul(input, weight.t());
  output.add_(*bias)`` (aten/src/ATen/native/Linear.cpp before the 2.x ``_flatten_3d_linear``): an
  elementwise kernel over the [tokens, 3h/tp] output, in the forward and in the full recompute.

That is what ``layer_backward: eager`` with ``attention: naive`` charges (workload/eager_backward.py). Closed form for
one layer of the SC21 7.5B run (tp 4, no sequence parallelism, micro batch 16 x sequence 2048 = 32,768 tokens, hidden
4096, fp16: e = 2 B): the four bias reductions read tokens x (3h/tp + h + 4h/tp + h) x e (the row-parallel outputs are
full width and, with no sequence parallelism, see every token), the two norms' weight passes read dy and x, 2 x 2 x
tokens x h x e, each pass two kernels (partials: 16 rows x 2h fp32 written and read back): eight kernels, 1.07 + 1.07
GB; the QKV bias add reads and writes tokens x 3h/tp x e, 0.40 GB, once in the forward and once in the recompute.
"""

import pytest

from simcluster.spec import config
from simcluster.workload import ops

MEGATRON_2021_A100 = [
    *(f"megatron-{size}-a100-{kind}" for size in ("1.2b", "2.5b", "4.2b", "8.3b") for kind in ("node", "dp")),
    *(f"narayanan2021-{size}-a100" for size in ("1.7b", "3.6b", "7.5b", "18.4b", "39.1b", "76.1b", "145.6b",
                                                 "310.1b", "529.6b", "1008b")),
    "megatronlm-gpt3-175b-1024-a100",
    *(f"smith2022-mtnlg-530b-{nodes}-a100" for nodes in (280, 350, 420)),
    "bigscience-bloom-176b-384-a100",
]


@pytest.mark.parametrize("name", MEGATRON_2021_A100)
def test_each_2021_22_megatron_run_has_the_eager_layer_backward(name):
    assert config.load(name).training.layer_backward == "eager"


def _backward_input(scenario):
    return ops.layer_ops(scenario.model, ops.shard_for(scenario))["backward_input"]


def test_the_sc21_7_5b_layer_reads_its_bias_and_norm_gradients_once_more():
    eager = config.load("narayanan2021-7.5b-a100")
    fused = eager.model_copy(update={"training": eager.training.model_copy(update={"layer_backward": "fused"})})
    names = {op.name for op in _backward_input(fused)}
    added = [op for op in _backward_input(eager) if op.name not in names]

    h, tp, e = 4096, 4, 2
    tokens = 16 * 2048
    assert (eager.model.hidden, eager.parallelism.tp, eager.training.micro_batch_size) == (h, tp, 16)
    assert eager.parallelism.sequence_parallel is False
    bias_reads = tokens * (3 * h // tp + h + 4 * h // tp + h) * e
    norm_reads = 2 * 2 * tokens * h * e
    written = (3 * h // tp + h + 4 * h // tp + h) * e + 2 * (2 * h) * e   # the biases' and norms' gradients, once
    partials = 2 * 2 * (16 * 2 * h * 4)   # apex's fp32 partials of dgamma and dbeta, written and read, per norm
    assert len(added) == 8
    assert sum(op.hbm_bytes for op in added) == pytest.approx(bias_reads + norm_reads + written + partials)
    assert sum(op.name.endswith("_weight_grad_finalize") for op in added) == 2   # cuComputeGradGammaBeta, per norm


def test_the_sc21_7_5b_layer_adds_its_qkv_bias_by_a_forward_kernel_of_its_own():
    scenario = config.load("narayanan2021-7.5b-a100")
    layer = ops.layer_ops(scenario.model, ops.shard_for(scenario))
    h, tp, e, tokens = 4096, 4, 2, 16 * 2048
    assert scenario.training.activation_recompute == "full" and scenario.training.attention == "naive"
    for phase in ("forward", "recompute"):   # the full recompute re-runs the forward, the add with it
        (add,) = [op for op in layer[phase] if op.name == "qkv_bias_add"]
        assert add.kind == "memory"
        assert add.hbm_bytes == pytest.approx(2 * tokens * 3 * h // tp * e + 3 * h // tp * e)
        names = [op.name for op in layer[phase]]
        assert names.index("qkv_bias_add") == names.index("qkv") + 1   # right after the GEMM


@pytest.mark.parametrize("name, bias_add", [("mpt-7b-8-a100-80gb", False), ("korthikanti2022-22b-a100", True)])
def test_the_2021_kernels_stay_with_the_2021_layer(name, bias_add):
    """MPT (PyTorch 2.x: a contiguous 3-D input flattened into addmm, the bias in cuBLASLt's epilogue; ATen's one
    dgamma/dbeta kernel) launches neither the add nor apex's finalize. Korthikanti et al. 2022's rows run
    ``layer_backward: fused`` (Megatron-LM 2022's mixed state, docs/calibration/round-15.md round 15): no apex finalize,
    but their forward adds the QKV bias after the GEMM (``qkv_bias_add: separate``, tests/unit/test_qkv_bias_add.py)."""
    scenario = config.load(name)
    layer = ops.layer_ops(scenario.model, ops.shard_for(scenario))
    names = {op.name for phase in layer.values() for op in phase}
    assert ("qkv_bias_add" in names) == bias_add and not any(n.endswith("_weight_grad_finalize") for n in names)
