"""GPT-3 175B on TP8 x PP8 (the bundled default): memory against Korthikanti et al. 2022 and ZeRO-1 accounting."""

import pytest

from simcluster.core.errors import OutOfMemoryError
from simcluster.parallel import memory
from simcluster.spec import config

# GPT-3 175B (Brown et al. 2020): 96 layers, hidden 12288, 96 heads, vocab 50257, 2048 learned positions
L, h, a, V, POSITIONS = 96, 12288, 96, 50257, 2048
s, b, t, p, dp = 2048, 1, 8, 8, 16


@pytest.fixture(scope="module")
def default():
    # GPT-3 175B, 1024 H100, TP8 PP8 DP16, seq 2048, micro batch 1, sequence parallel, selective, ZeRO-1
    scenario = config.load()
    layout = scenario.parallelism
    assert (layout.tp, layout.pp, layout.dp, layout.zero_stage) == (t, p, dp, 1)
    assert layout.sequence_parallel
    assert (scenario.training.seq_len, scenario.training.micro_batch_size) == (s, b)
    assert scenario.training.activation_recompute == "selective"
    return scenario


def test_first_stage_activations_match_korthikanti_selective_recompute(default):
    # Korthikanti et al. 2022: with TP + SP and selective recompute a layer keeps 34*s*b*h/t bytes (section
    # 5); under 1F1B the first stage holds p microbatches of L/p layers, i.e. L layers' worth (section 4.2.3),
    # plus the embedding dropout mask s*b*h*p/t (section 4.3).
    paper = 34 * s * b * h / t * L + s * b * h * p / t
    activations = memory.per_gpu_memory(default, stage=0).activations_bytes
    assert activations == pytest.approx(paper, rel=0.01)   # tolerance: 1 %
    # the paper's headline term alone (it calls the rest negligible) is within 0.5 %
    assert activations == pytest.approx(34 * s * b * h / t * L, rel=0.005)


def test_first_stage_model_states_follow_zero1_accounting(default):
    # first stage: 12 of 96 layers, each 12h^2 weights (QKV 3h^2, out h^2, MLP 8h^2) split over t ranks,
    # plus the vocab-parallel word embedding V*h/t and the learned positions (biases and norms: < 0.1 %)
    params = (L // p) * 12 * h * h / t + V * h / t + POSITIONS * h
    breakdown = memory.per_gpu_memory(default, stage=0)
    assert breakdown.weights_bytes == pytest.approx(2 * params, rel=0.01)
    # gradients reduced in fp32 (Megatron-LM's default in bf16 training) live in an fp32 buffer: 2 + 4 + 12 bytes
    # per parameter (Megatron-LM docs, distributed optimizer); ZeRO's 2 + 2 + 12 with bf16 reduction
    grad_bytes = {"fp32": 4, "bf16": 2}[default.parallelism.grad_reduce_dtype]
    assert breakdown.gradients_bytes == pytest.approx(grad_bytes * params, rel=0.01)
    assert breakdown.optimizer_bytes == pytest.approx(12 * params / dp, rel=0.01)   # ZeRO-1 shards over dp


def test_whole_first_stage_fits_in_an_h100(default):
    breakdown = memory.check_fits(default)
    assert breakdown.total_bytes < 80e9


def test_gpt3_175b_on_one_gpu_fails_with_a_readable_out_of_memory_error():
    one_gpu = config.from_dict({
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 1, "nodes": 1},
        "model": "gpt3-175b",
        "training": {"seq_len": 2048, "global_batch_size": 8, "micro_batch_size": 1},
        "parallelism": {"tp": 1, "pp": 1, "dp": 1},
    })
    with pytest.raises(OutOfMemoryError) as caught:
        memory.check_fits(one_gpu)
    message = str(caught.value)
    assert caught.value.field == "parallelism"
    for words in ("gpt3-175b", "h100-sxm", "tp=1 pp=1 dp=1", "weights", "gradients", "optimizer states",
                  "activations", "workspace", "TiB"):
        assert words in message
    assert "\n" not in message   # one line for the CLI
