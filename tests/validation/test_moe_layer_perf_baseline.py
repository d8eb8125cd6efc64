"""One MoE layer on 8 H100, forward and backward, against Megatron-Core's own layer performance baseline
(docs/calibration/round-31.md "Round 31: one MoE layer on 8 H100 against Megatron-Core's moe_perf baseline").

Independent truth: NVIDIA/Megatron-LM @ 32f2c9cfdd167616597fbe628ce9f9d4d64de601,
``tests/functional_tests/test_cases/common/moe_perf/baseline.json`` (the figures below, ms) with the cases'
configurations in ``test_cases.py`` and the harness in ``__main__.py`` of the same folder. The harness builds one
``MoELayer`` (Transformer Engine spec, grouped GEMM, ``num_layers=1``, no bias, bf16 parameters) on 8 H100 with
TP 1, EP 8, and times it with CUDA events on the current stream: ``forward`` = ``layer(input)``, ``backward`` =
``output.backward(grad)``, 5 warm-up and 20 measured iterations, each after a barrier and an 8192^3 fp32
``torch.matmul`` "to hide the router launch overhead", the mean of the 20 (std/mean <= 2% required, a 2% regression
allowed). No CUDA graphs. The input: 4,096 tokens (sequence 4096, micro batch 1). Every case: router forced to
balance (``moe_router_force_load_balancing``: random logits, RandomSTE), permute and router fusion, aux-loss load
balancing (``moe_router_load_balancing_type="aux_loss"`` whatever the proxy states), fp32 router; the
``TransformerConfig`` sets no ``gated_linear_unit`` and no activation, so the experts are Megatron-Core's default
GeLU MLP (two matrices), and it passes no ``moe_shared_expert_intermediate_size``: the DeepSeek proxy runs without
its shared expert. Container, Transformer Engine and DeepEP releases are not stated in those files.

Proxies: Mixtral (hidden 4096, expert ffn 14336, 8 experts, top 2: one local expert) and DeepSeek (hidden 7168,
expert ffn 2048, 32 experts, top 8, sigmoid group-limited routing with expert bias: four local experts).

Tolerance: the model's layer must land within 10% of each measured phase (the issue's bound on a published run; the
benchmark's own spread, std/mean <= 2%, and the same folder's ``baseline_dev.json`` @ 8a7527dd, within 3.0% of these
on every case, are far inside it), so that a change of the model past the measurement on either side fails. Round
31 carried the DeepEP DeepSeek forward as a known gap (+19.3%); counting the proxy's group-limited routing (a token
to at most 4 of the 8 GPUs, not 5.64) closed it (docs/calibration/round-31.md "Round 31: DeepEP's rows under
group-limited routing"), and DeepEP's lead over the all-to-all dispatcher is asserted against its measured size.
"""

from __future__ import annotations

import pytest

from simcluster.parallel import plan
from simcluster.spec import config
from simcluster.studies.moe_layer import moe_layer_time
from simcluster.workload.moe import permutation_rows

SOURCE = (
    "NVIDIA/Megatron-LM 32f2c9cfdd167616597fbe628ce9f9d4d64de601 "
    "tests/functional_tests/test_cases/common/moe_perf/baseline.json"
)
# baseline.json as stored, (forward_ms, backward_ms), all twelve cases
MEASURED_MS = {
    "mixtral_a2a_tp1ep8_bf16": (4.261713600158691, 7.825059199333191),
    "mixtral_deepep_tp1ep8_bf16": (4.609353613853455, 8.030219149589538),
    "mixtral_hybridep_tp1ep8_bf16": (4.41397442817688, 7.8396320104598995),
    "deepseek_a2a_tp1ep8_bf16": (6.942623972892761, 10.452603197097778),
    "deepseek_deepep_tp1ep8_bf16": (5.424827194213867, 9.059416055679321),
    "deepseek_hybridep_tp1ep8_bf16": (5.245569634437561, 8.845854425430298),
    "mixtral_a2a_tp1ep8_fp8": (3.6756880044937135, 6.719020819664001),
    "mixtral_deepep_tp1ep8_fp8": (4.02881760597229, 6.941707181930542),
    "mixtral_hybridep_tp1ep8_fp8": (3.7378703594207763, 6.641488075256348),
    "deepseek_a2a_tp1ep8_fp8": (7.413806390762329, 10.08771367073059),
    "deepseek_deepep_tp1ep8_fp8": (5.840974426269531, 8.589135932922364),
    "deepseek_hybridep_tp1ep8_fp8": (5.0010079622268675, 7.715760040283203),
}
# test_cases.py MIXTRAL_PROXY / DEEPSEEK_PROXY: hidden, expert ffn, experts, top-k
PROXIES = {"mixtral": (4096, 14336, 8, 2), "deepseek": (7168, 2048, 32, 8)}
# test_cases.py DEEPSEEK_PROXY: moe_router_num_groups=8, moe_router_group_topk=4, which the harness passes to the
# TransformerConfig and the router applies after the forced random logits (group-limited top-k): 8 groups of 4
# consecutive experts, one per EP rank, so a token reaches at most 4 of the 8 GPUs
ROUTER_GROUPS = {"deepseek": (8, 4)}
TOKENS, EP, GPUS = 4096, 8, 8
TOLERANCE = 0.10
# The benchmark's reproducibility: the same folder's baseline_dev.json (@ 8a7527dd) lies within 3.0% of baseline.json
# on every case; a difference of two cases may err by that share of each
SPREAD = 0.03

# Cases the model cannot express, and why (listed, skipped)
NOT_EXPRESSIBLE = {
    "hybridep": "the flex dispatcher's intranode rate is DeepEP's measured kernels (data/moe.yaml deepep_intranode); "
    "HybridEP's kernels have no measurement in the model",
    "fp8": "Transformer Engine's blockwise fp8 recipe (1x128 / 128x128 block scales on Hopper) is not a "
    "training.fp8_recipe of the model (delayed, current, mxfp8, torchao_tensorwise)",
}


def _parts(case: str) -> tuple[str, str, str]:
    shape, dispatcher, _layout, precision = case.split("_")
    return shape, dispatcher, precision


def _skip_reason(case: str) -> str | None:
    _shape, dispatcher, precision = _parts(case)
    reasons = [NOT_EXPRESSIBLE[key] for key in (dispatcher, precision) if key in NOT_EXPRESSIBLE]
    return "; ".join(reasons) or None


def benchmark_scenario(case: str, proxy: tuple[int, int, int, int] | None = None):
    """The benchmark's layer as a scenario: one MoE layer of the proxy on one node of 8 H100, TP 1, EP 8, 4,096
    tokens a GPU, the router forced to balance, fused and in fp32, GeLU experts, no shared expert. ``proxy``: another
    layer shape (hidden, ffn, experts, top-k) under the same harness (scripts/moe_fixed_cost.py), PROXIES left alone."""
    shape, dispatcher, precision = _parts(case)
    hidden, ffn, experts, top_k = proxy or PROXIES[shape]
    groups = dict(zip(("groups", "group_topk"), ROUTER_GROUPS[shape], strict=True)) if shape in ROUTER_GROUPS else {}
    parallelism = {
        "tp": 1,
        "pp": 1,
        "dp": GPUS,
        "cp": 1,
        "ep": EP,
        "etp": 1,
        "te_version": 2,
        "sequence_parallel": False,
    }
    if dispatcher == "deepep":
        parallelism.update(moe_dispatcher="flex", ep_alltoall="hierarchical")
    return config.from_dict(
        {
            "name": case,
            "cluster": {
                "gpu": "h100-sxm",
                "gpus_per_node": GPUS,
                "nodes": 1,
                "nic": "connectx-7",
                "topology": "rail-fat-tree",
            },
            # attention, vocabulary and norm are the proxy's surroundings, outside the timed MoELayer
            "model": {
                "layers": 1,
                "hidden": hidden,
                "heads": 8,
                "ffn_hidden": ffn,
                "vocab": 32000,
                "mlp": "gelu",
                "tied_embeddings": False,
                "norm": "rmsnorm",
                "position": "rope",
                "dropout": False,
                "max_seq_len": TOKENS,
                "moe": {"experts": experts, "top_k": top_k, "ffn_hidden": ffn, "load": "balanced", **groups},
            },
            "training": {
                "seq_len": TOKENS,
                "global_batch_size": GPUS,
                "micro_batch_size": 1,
                "precision": precision,
                "moe_router": "fused",
                "moe_router_dtype": "fp32",
                "moe_load_balancing": "aux_loss",
                "activation_recompute": "none",
            },
            "parallelism": parallelism,
        }
    )


def model_ms(case: str) -> tuple[float, float]:
    layer = moe_layer_time(benchmark_scenario(case))
    return layer.forward_s * 1e3, layer.backward_s * 1e3


EXPRESSIBLE = [case for case in MEASURED_MS if _skip_reason(case) is None]


def test_every_case_is_compared_or_listed_with_its_reason():
    assert len(MEASURED_MS) == 12
    skipped = [case for case in MEASURED_MS if _skip_reason(case)]
    assert sorted(EXPRESSIBLE) == [
        "deepseek_a2a_tp1ep8_bf16",
        "deepseek_deepep_tp1ep8_bf16",
        "mixtral_a2a_tp1ep8_bf16",
        "mixtral_deepep_tp1ep8_bf16",
    ]
    assert len(skipped) == 8


@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=pytest.mark.skip(reason=_skip_reason(c))) for c in MEASURED_MS if _skip_reason(c)]
)
def test_not_expressible(case):
    raise AssertionError("skipped: listed for the record")


def test_the_scenario_is_the_benchmarks_layer():
    """Rows an expert and the all-to-all bytes follow from the proxy alone: 4,096 tokens x top-k x 8 GPUs / experts
    rows an expert (8,192 for both proxies); each rank dispatches at least its 4,096 x top-k rows of hidden x 2 bytes
    (the busiest rank's sampling load above it, the router forced to balance but drawing at random)."""
    for shape, (hidden, _ffn, experts, top_k) in PROXIES.items():
        scenario = benchmark_scenario(f"{shape}_a2a_tp1ep8_bf16")
        m, p = scenario.model, scenario.parallelism
        assert (p.tp, p.ep, p.dp, scenario.cluster.gpus, m.layers) == (1, EP, GPUS, GPUS, 1)
        assert m.moe.experts // p.ep == experts // EP and m.mlp == "gelu" and not m.moe.shared_experts
        assert TOKENS * top_k * EP / experts == 8192
        assert 1.0 <= plan.dispatch_bytes(scenario) / (TOKENS * top_k * hidden * 2) < 1.05


# Known misses past TOLERANCE (strict: a model that comes back inside the band fails here and the entry goes)
KNOWN_MISSES = {
    "mixtral_deepep_tp1ep8_bf16": "round 34: the refit of the host overheads (19 us / 460 us -> 17 us / 500 us a "
    "kernel / pipeline step, fitted on the calibration rows) took the model's forward from 4.164 ms (-9.7%) to 4.120 "
    "ms against the measured 4.609 ms (-10.6%); backward 7.304 ms against 8.030 ms (-9.0%, -8.5% before). The "
    "model's eager MoE layer is fast by about the gaps it lost; not closed",
}


@pytest.mark.parametrize(
    "case",
    [pytest.param(c, marks=[pytest.mark.xfail(strict=True, reason=KNOWN_MISSES[c])] if c in KNOWN_MISSES else [])
     for c in EXPRESSIBLE],
)
def test_layer_against_the_measurement(case):
    measured = MEASURED_MS[case]
    for phase, simulated, published in zip(("forward", "backward"), model_ms(case), measured, strict=True):
        assert abs(simulated / published - 1) <= TOLERANCE, (
            f"{case} {phase}: model {simulated:.3f} ms, measured {published:.3f} ms ({SOURCE})"
        )


def test_deepep_is_faster_than_the_alltoall_dispatcher_on_the_deepseek_proxy():
    """Measured: on the DeepSeek proxy (4,096 tokens x 8 experts of 7,168 wide) DeepEP beats NCCL's all-to-all
    dispatcher by 1.52 ms forward and 1.39 ms backward; the model must order them the same way in both phases."""
    a2a, deepep = model_ms("deepseek_a2a_tp1ep8_bf16"), model_ms("deepseek_deepep_tp1ep8_bf16")
    assert all(d < a for d, a in zip(deepep, a2a, strict=True))


def test_deepeps_lead_over_the_alltoall_dispatcher_on_the_deepseek_proxy_has_its_measured_size():
    """Measured: DeepEP leads by 1.518 ms forward and 1.394 ms backward. The model's lead must match within the
    benchmark's spread of both cases (SPREAD of each: 0.37 ms forward, 0.59 ms backward). Round 31's model, which
    sent every token to 5.64 GPUs as if routing were uniform, led by 0.98 and 0.58 ms and fails this."""
    a2a, deepep = model_ms("deepseek_a2a_tp1ep8_bf16"), model_ms("deepseek_deepep_tp1ep8_bf16")
    measured_a2a, measured_deepep = MEASURED_MS["deepseek_a2a_tp1ep8_bf16"], MEASURED_MS["deepseek_deepep_tp1ep8_bf16"]
    for phase in range(2):
        lead, measured_lead = a2a[phase] - deepep[phase], measured_a2a[phase] - measured_deepep[phase]
        assert abs(lead - measured_lead) <= SPREAD * (measured_a2a[phase] + measured_deepep[phase]), (
            f"phase {phase}: model lead {lead:.3f} ms, measured {measured_lead:.3f} ms ({SOURCE})"
        )


def test_the_deepseek_proxy_reaches_at_most_four_gpus():
    """test_cases.py: 8 router groups of 4 experts, group top-k 4, on EP 8 (one group a GPU): a token's 8 experts lie
    on at most 4 GPUs, against 8 (1 - C(28, 8) / C(32, 8)) = 5.64 for uniform top-8 of 32."""
    moe = benchmark_scenario("deepseek_deepep_tp1ep8_bf16").model.moe
    assert (moe.groups, moe.group_topk) == (8, 4)
    rows = permutation_rows(benchmark_scenario("deepseek_deepep_tp1ep8_bf16").model, TOKENS, EP)
    assert rows == pytest.approx(4 * TOKENS)
