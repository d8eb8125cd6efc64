"""The held-out MoE-on-Hopper rows added for issue 15 are compared by step time; each step time is checked here against
the other figure its source published, in the publishing framework's own FLOP count, so that a wrong batch, GPU
count, model shape or FLOP convention in a scenario cannot pass unseen.

Megatron-LM's count (megatron/training/training.py ``num_floating_point_operations``, the GPT/MoE branch) per token:
12 l h^2 [(1 + g/a + s/(c h)) q + (f_moe / h) k 3/2 + V / (2 l h)], with q = a d / h the query projection ratio, k
the routed experts per token, 3/2 for SwiGLU and c = 2 where causal attention is counted halved ("Only half of the
attention matrix is non-zero"), as the Megatron-Core MoE zoo's runs do (its Qwen3 rows' TFLOP/s per tokens/s give
1.478e11 FLOP a token for Qwen3-235B, this formula with c = 2 gives 1.480e11), c = 1 in MCore v0.9 (2024), whose
468 TFLOP/s for Mixtral 8x7B the Megatron-LM MoE README quotes (MaxText PR 537, March 2024: Megatron counted
attention whole). The NeMo rows publish tokens/s per GPU beside TFLOP/s: the step time is the scenario's tokens
over tokens/s x GPUs, and the page's TFLOP/s per tokens/s is Megatron-Bridge's count (attention halved).
"""

import pytest

from simcluster.spec import config
from simcluster.spec import model as model_spec
from simcluster.studies import validation

HELD_OUT = {c["scenario"]: c for c in validation.held_out_cases()}

# scenario -> (published TFLOP/s per GPU, causal attention halved in the publisher's count)
PUBLISHED_TFLOPS = {
    "moezoo-mixtral-8x22b-128-h100": (455.0, True),
    "moezoo-mixtral-8x22b-128-h100-drop": (470.0, True),
    "mcore-mixtral-8x7b-64-h100": (468.0, False),
}
# scenario -> (published tokens/s per GPU, published TFLOP/s per GPU or None where the count is not re-derived here)
PUBLISHED_TPS = {
    "nemo2511-qwen3-235b-256-h100-fp8": (1575.0, 233.0),
    "nemo2509-deepseek-v3-1024-h100-fp8": (1297.0, None),
}


def megatron_flop_per_token(model, seq_len: int, causal_halved: bool) -> float:
    """Megatron-LM's model FLOP per token (fwd + bwd) of a GPT model with routed SwiGLU experts and no dense layers."""
    h, layers, heads = model.hidden, model.layers, model.heads
    query_ratio = heads * model.d_head / h
    attention = (1 + model.n_kv_heads / heads + seq_len / h / (2 if causal_halved else 1)) * query_ratio
    experts = model.moe.ffn_hidden / h * model.moe.top_k * 1.5
    logits = model.vocab / (2 * layers * h)
    return 12 * layers * h * h * (attention + experts + logits)


@pytest.mark.parametrize("name", sorted(PUBLISHED_TFLOPS))
def test_step_time_is_the_published_tflops_in_the_publishers_count(name):
    scenario = config.load(name)
    t, model = scenario.training, scenario.model
    assert model.moe.shared_experts == 0 and model.moe.dense_layers == 0 and model.mlp == "swiglu"
    tflops, halved = PUBLISHED_TFLOPS[name]
    flop = t.global_batch_size * t.seq_len * megatron_flop_per_token(model, t.seq_len, halved)
    assert HELD_OUT[name]["step_time_s"] == pytest.approx(flop / (tflops * 1e12 * scenario.cluster.gpus), rel=1e-4)


@pytest.mark.parametrize("name", sorted(PUBLISHED_TPS))
def test_step_time_is_the_published_tokens_per_second_of_the_scenarios_batch(name):
    scenario = config.load(name)
    tokens = scenario.training.global_batch_size * scenario.training.seq_len
    tps, _ = PUBLISHED_TPS[name]
    assert HELD_OUT[name]["step_time_s"] == pytest.approx(tokens / (tps * scenario.cluster.gpus), rel=1e-4)


def test_nemo_qwen3_tflops_per_token_is_megatrons_halved_count():
    """The 25.11 Qwen3-235B H100 row lacks its GBS cell; its TFLOP/s / tokens/s must still be the model's FLOP per
    token in Megatron-Bridge's count (attention halved), which pins the model and sequence the scenario runs."""
    name = "nemo2511-qwen3-235b-256-h100-fp8"
    scenario = config.load(name)
    tps, tflops = PUBLISHED_TPS[name]
    per_token = megatron_flop_per_token(scenario.model, scenario.training.seq_len, causal_halved=True)
    assert tflops * 1e12 / tps == pytest.approx(per_token, rel=0.003)
    assert tflops * 1e12 / tps != pytest.approx(
        megatron_flop_per_token(scenario.model, scenario.training.seq_len, causal_halved=False), rel=0.003)


def test_zoo_overlap_row_step_time_and_tflops_agree_in_the_halved_count():
    """The zoo's "+1f1b overlap" row publishes both a step time (17.6 s) and TFLOP/s (276): their product must be the
    step's FLOP in Megatron-LM's halved count, within the rounding of the 3-digit figures (0.4%)."""
    name = "moezoo-qwen3-235b-256-h100-deepep-overlap"
    scenario = config.load(name)
    t = scenario.training
    flop = t.global_batch_size * t.seq_len * megatron_flop_per_token(scenario.model, t.seq_len, causal_halved=True)
    assert HELD_OUT[name]["step_time_s"] * 276e12 * scenario.cluster.gpus == pytest.approx(flop, rel=0.006)


# Megatron-Core 0.9.0's own Mixtral release runs on H100 (NVIDIA/Megatron-LM tests/functional_tests/test_cases/
# mixtral/, golden_values_0.9.0.json of mixtral_8x7b_tp1pp4ep8vpp8_release at a040e193 and of
# mixtral_8x22b_tp2pp8ep8vpp1_release at 7b5b8b44; docs/calibration.md "Round 27"): every fifth step's
# `iteration-time` (s) and `throughput` (TFLOP/s per GPU, --log-throughput) as logged, GBS 256, sequence 4096,
# Llama2Tokenizer (vocabulary 32,000). Per run: a checkpoint-load step, an early, a middle and the last sample.
MCORE09_RELEASE_SAMPLES = {
    "mixtral-8x7b": [(174.32498, 7.79399), (3.36681, 403.55313), (3.26154, 416.57834), (3.19899, 424.72318)],
    "mixtral-8x22b": [(309.57425, 6.63203), (7.41416, 276.91702), (6.62512, 309.89725), (6.57179, 312.41217)],
}


def release_gpus(preset: str, seconds: float, tflops: float, causal_halved: bool) -> float:
    """The GPU count a logged (iteration time, TFLOP/s per GPU) pair implies in Megatron-LM's count."""
    model = model_spec.preset(preset).model_copy(update={"vocab": 32000})
    return 256 * 4096 * megatron_flop_per_token(model, 4096, causal_halved) / (tflops * 1e12 * seconds)


@pytest.mark.parametrize("preset, gpus", [("mixtral-8x7b", 64), ("mixtral-8x22b", 128)])
def test_mcore_09_release_runs_count_attention_whole(preset, gpus):
    """Megatron-Core 0.9.0 logged its TFLOP/s with causal attention counted whole: each logged pair, whatever its step
    time (a 174 s checkpoint load as much as a 3.2 s step), gives one whole number of GPUs, the layout's 64 / 128,
    within the 6 significant digits of the figures; counted halved they give 61.5 / 123.7 GPUs, no layout. This is
    the convention the Megatron-LM MoE README row assumes for its "MCore v0.9" 468 TFLOP/s (PUBLISHED_TFLOPS)."""
    for seconds, tflops in MCORE09_RELEASE_SAMPLES[preset]:
        assert release_gpus(preset, seconds, tflops, causal_halved=False) == pytest.approx(gpus, rel=2e-5)
        halved = release_gpus(preset, seconds, tflops, causal_halved=True)
        # 61.5 / 123.68: more than 3% off the layout and at least 0.25 from any whole count (no other layout)
        assert abs(halved - gpus) > 0.03 * gpus and abs(halved - round(halved)) > 0.25
    assert PUBLISHED_TFLOPS["mcore-mixtral-8x7b-64-h100"] == (468.0, False)
