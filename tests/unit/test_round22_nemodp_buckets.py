"""Round 22 (issue 15): Nemotron-4 15B's data-parallel rings as Megatron-Core of early 2024 cuts them and NCCL 2.19
prices them, and the report's batch ramp against the scenarios (docs/calibration/round-22.md, "Round 22: Nemotron-4
15B's data-parallel growth").

- Buckets: Megatron-Core's GradBuffer (megatron/core/distributed/grad_buffer.py, NVIDIA/Megatron-LM a8a5512) walks
  the parameters in reverse registration order and closes a bucket as soon as it holds at least ``bucket_size``
  elements (40,000,000 by default then), padding its end to a multiple of the data-parallel size (distributed
  optimizer). The buckets below are that rule applied by hand to Nemotron-4 15B at TP 8 (arXiv 2402.16819, Table 1:
  hidden 6,144, FFN 24,576, 8 KV heads of 128, vocabulary 256,000, 32 layers, untied embeddings, no linear biases,
  LayerNorm with bias fused into the QKV and FC1 linears), in the registration order of a Megatron-Core layer with
  Transformer Engine modules: linear_proj, linear_qkv (LayerNorm weight, bias, weight), linear_fc1 (the same),
  linear_fc2.
- NCCL 2.19 (the NGC 23.11 containers' NCCL 2.19.3) chooses each ring's protocol by its tuning model, written out in
  tests/unit/test_nccl_one_gpu_per_node_choice.py (``_nccl_2_19_time``).
- The report's Table 2: batch 384 / 768 / 1,152 on DP 96 / 192 / 288 (768 / 1,536 / 2,304 GPUs at TP 8).
"""

from __future__ import annotations

import pytest
from scripts_loader import load_script

from simcluster.collectives import nccl
from simcluster.spec import config
from tests.unit.test_nccl_one_gpu_per_node_choice import _nccl_2_19_time

dp_ring_scaling = load_script("dp_ring_scaling")

H, FFN, KV, VOCAB, LAYERS, TP = 6144, 24576, 1024, 256_000, 32, 8
PROJ, QKV, FC = H * H // TP, (H + 2 * KV) * H // TP, FFN * H // TP
NORM2 = 2 * H                                   # a LayerNorm's weight and bias, replicated across TP
EMBED = VOCAB * H // TP                         # 196,608,000: the input embedding, and the output layer alike
# reverse order: the output layer alone (>= 40M at once); then the final norm, layer 31's fc2, fc1 (37.76M), its
# fc1 norm and qkv (44.06M: closed); layer 31's qkv norm and proj with layer 30's fc2 and fc1 (42.48M: closed); from
# then on each bucket is one layer's fc1 norm, qkv, qkv norm and proj with the next lower layer's fc2 and fc1 (48.78M),
# layers 29 to 0; the rest of layer 0 with the input embedding last (207.64M)
LAYER_BUCKET = NORM2 + QKV + NORM2 + PROJ + 2 * FC
BY_HAND = ([(31, EMBED), (31, NORM2 + 2 * FC + NORM2 + QKV), (30, NORM2 + PROJ + 2 * FC)]
           + [(layer, LAYER_BUCKET) for layer in range(29, -1, -1)] + [(0, NORM2 + QKV + NORM2 + PROJ + EMBED)])


def _buckets(dp: int):
    tensors = dp_ring_scaling.gpt_param_tensors(H, FFN, KV, VOCAB, LAYERS, TP)
    return dp_ring_scaling.megatron_core_buckets(tensors, 40_000_000, dp)


@pytest.mark.parametrize("dp", [96, 192])
def test_megatron_core_40m_buckets_of_nemotron4_15b(dp):
    # every bucket end of the hand list is a multiple of 96 and 192, so no padding there
    assert [size for _, size in BY_HAND][:3] == [196_608_000, 44_064_768, 42_479_616]
    assert LAYER_BUCKET == 48_783_360 and BY_HAND[-1][1] == 207_642_624
    assert _buckets(dp) == BY_HAND
    assert sum(size for _, size in BY_HAND) == 1_954_295_808   # the rank's parameters (test_dp_exposure_floor.py)


def test_buckets_padded_to_the_data_parallel_size():
    dp = 288
    buckets = _buckets(dp)
    ends, total = [], 0
    for _, size in buckets:
        total += size
        ends.append(total)
    assert len(buckets) == len(BY_HAND) and all(end % dp == 0 for end in ends)
    assert 0 <= total - 1_954_295_808 < len(buckets) * dp
    assert [layer for layer, _ in buckets] == [layer for layer, _ in BY_HAND]


def _choice(op: str, size_bytes: float, n: int) -> str:
    return nccl.choose(op, size_bytes, n=n, nodes=n, local=1, nvls=True, nvlink_bytes_per_s=450e9,
                       network_bytes_per_s=50e9)[1]


@pytest.mark.parametrize("n", [96, 192, 288])
def test_nccl_2_19_puts_the_layer_buckets_on_ll128_a_stage_earlier(n):
    # bf16 parameters gathered, fp32 gradients reduced; NCCL's own model decides, and the simulator agrees with it
    for op, size in (("all_gather", 2 * LAYER_BUCKET), ("reduce_scatter", 4 * LAYER_BUCKET),
                     ("all_gather", 2 * EMBED), ("reduce_scatter", 4 * EMBED)):
        expected = min(("LL128", "Simple"), key=lambda p, s=size: _nccl_2_19_time(s, n, p))
        assert _choice(op, size, n) == expected
    layer = {op: _choice(op, k * LAYER_BUCKET, n) for op, k in (("all_gather", 2), ("reduce_scatter", 4))}
    # the simulator's 32 equal buckets (61M) go LL128 at 192 (gathers) and 288 (reductions); these at 96 and 192
    assert layer == {96: {"all_gather": "LL128", "reduce_scatter": "Simple"},
                     192: {"all_gather": "LL128", "reduce_scatter": "LL128"},
                     288: {"all_gather": "LL128", "reduce_scatter": "LL128"}}[n]
    assert _choice("all_gather", 2 * EMBED, n) == _choice("reduce_scatter", 4 * EMBED, n) == "Simple"


@pytest.mark.parametrize("gpus,batch,dp", [(768, 384, 96), (1536, 768, 192), (2304, 1152, 288)])
def test_batch_ramp_stages_run_four_microbatches_a_replica(gpus, batch, dp):
    scenario = config.load(f"nemotron4-15b-{gpus}-h100")
    assert scenario.training.global_batch_size == batch and scenario.parallelism.dp == dp
    assert scenario.parallelism.tp * dp == gpus
    assert scenario.microbatches == batch // dp // scenario.training.micro_batch_size == 4
