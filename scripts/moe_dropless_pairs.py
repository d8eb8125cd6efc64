"""The MoE zoo's Qwen3-235B-A22B on 256 H100: the four held-out layouts side by side, and the zoo's own long-context
forced-balance / dropless pairs against the model's load spread (docs/calibration/round-35.md "Round 35: the MoE layer
across layouts"). A diagnostic: nothing is fitted or written.

    PYTHONPATH=. python scripts/moe_dropless_pairs.py layouts     # the held-out rows, step terms side by side
    PYTHONPATH=. python scripts/moe_dropless_pairs.py pairs       # the long-context pairs, published and simulated
    PYTHONPATH=. python scripts/moe_dropless_pairs.py loads       # every dropless row at the tokens-per-group reading

Source: yanring/Megatron-MoE-ModelZoo ``best_practice/qwen3/readme.md`` (commit 020b8136; the table of the held-out
rows is the same as at c1ad0b5c). Its "Long Context" table states, for 32 nodes of H100, DeepEP, bf16, TP 4, EP 8,
PP 8, VPP 4 (its command), GBS 256, per-GPU TFLOP/s with ``--moe-router-force-load-balancing`` and dropless. The
zoo's TFLOP/s are Megatron-LM's count (``megatron_flop_per_token``), checked on the held-out rows, whose table gives
both a step time and TFLOP/s (``ZOO_ROWS``); a long-context row's step is that count over its TFLOP/s. Since
round 35 the pairs are held-out rows too (``moezoo-qwen3-235b-256-h100-lc*``, rule Z in docs/calibration/round-35.md
"Round 35: the moe, mlp and shared_experts recompute modules"); nothing here sets a constant.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from simcluster.core import script_entry
from simcluster.engine import simulate
from simcluster.spec import config
from simcluster.workload import moe

ROW_PREFIX = "moezoo-qwen3-235b-256-h100-"
GPUS = 256
# Megatron-LM pads the vocabulary to a multiple of --make-vocab-size-divisible-by x tp (_vocab_size_with_padding) and
# counts the logits of the padded vocabulary; the zoo's model_configs/benchmarking/Qwen3-235B-A22B.yaml (1ed4179f)
# passes 1187 (Qwen3's 151,936 = 128 x 1,187: no padding at tp 1, 2 or 4).
VOCAB_DIVISOR = 1187


@dataclass(frozen=True)
class ZooRow:
    name: str           # held-out scenario suffix
    tp: int
    seq_len: int
    global_batch: int
    step_s: float       # the table's "Step time (sec)"
    tflops: float       # the table's "Per GPU TF"


# best_practice/Qwen3/readme.md @ c1ad0b5c, "Performance Results" (every row 256 H100, sequence 4096, GBS 2048).
ZOO_ROWS = (
    ZooRow("deepep", 2, 4096, 2048, 19.7, 245),
    ZooRow("deepep-overlap", 2, 4096, 2048, 17.6, 276),
    ZooRow("fsdp", 2, 4096, 2048, 17.6, 276),
    ZooRow("a2a", 2, 4096, 2048, 24.2, 200),
    ZooRow("tp4", 4, 4096, 2048, 29.0, 167),
)


@dataclass(frozen=True)
class LongContext:
    seq_len: int
    cp: int
    balanced_tflops: float   # --moe-router-force-load-balancing
    dropless_tflops: float   # the router's own choice (aux loss 1e-3, as the held-out rows)


# best_practice/qwen3/readme.md @ 020b8136, "Long Context": 32 nodes, TP 4, GBS 256 (PP 8, VPP 4, EP 8: its command).
LONG_CONTEXT = (
    LongContext(16384, 1, 295, 237),
    LongContext(32768, 2, 335, 277),
    LongContext(65536, 4, 368, 320),
    LongContext(131072, 8, 389, 357),
)
LONG_CONTEXT_BATCH = 256


def padded_vocab(vocab: int, tp: int) -> int:
    """Megatron-LM's padded vocabulary: the next multiple of ``VOCAB_DIVISOR`` x tp."""
    multiple = VOCAB_DIVISOR * tp
    return -(-vocab // multiple) * multiple


def megatron_flop_per_token(model, seq_len: int, tp: int) -> float:
    """Model FLOP a token by Megatron-LM's ``num_floating_point_operations`` (megatron/training/training.py, the 2025
    form with grouped-query attention, the query projection's width and causal attention counted half): 12 (3 passes
    x 2 GEMMs x 2 FLOP a MAC) x layers x h x [routed experts' width x top-k x 3/2 (SwiGLU) + h x (1 + groups/heads
    + s / (2 h)) x (heads x head_dim) / h], plus the logits, 6 h V (padded V). No dense layers, no shared experts
    (Qwen3-235B-A22B)."""
    moe, h = model.moe, model.hidden
    assert moe is not None and not moe.shared_experts and model.mlp == "swiglu", "Qwen3-style MoE only"
    query_ratio = model.heads * model.head_dim / h
    mlp = moe.ffn_hidden * moe.top_k * 1.5
    attention = h * (1 + model.kv_heads / model.heads + seq_len / h / 2) * query_ratio
    return 12 * model.layers * h * (mlp + attention) + 6 * h * padded_vocab(model.vocab, tp)


def zoo_step_s(model, seq_len: int, global_batch: int, tp: int, tflops: float) -> float:
    """The step a published per-GPU TFLOP/s stands for, in Megatron-LM's count."""
    return megatron_flop_per_token(model, seq_len, tp) * seq_len * global_batch / (GPUS * tflops * 1e12)


def with_load(scenario, load, **training):
    """``scenario`` with the router load ``load`` and ``training`` fields replaced."""
    data = scenario.model_dump(mode="json", exclude_none=True)
    data["model"]["moe"]["load"] = load
    data["training"].update(training)
    data["model"]["max_seq_len"] = max(data["model"].get("max_seq_len", 0), data["training"]["seq_len"])
    return data


def long_context_scenario(row: LongContext, load):
    """The TP 4 held-out scenario at a long-context row's sequence, CP and batch, recomputing ``layernorm moe`` (the
    whole MoE layer) as the zoo's command does (round 35; before it ``layernorm moe_act`` stood in). The held-out
    rows ``moezoo-qwen3-235b-256-h100-lc*`` are these scenarios with the model's max_seq_len raised."""
    base = config.load(ROW_PREFIX + "tp4")
    data = with_load(base, load, seq_len=row.seq_len, global_batch_size=LONG_CONTEXT_BATCH,
                     recompute_modules=["layernorm", "moe"])
    data["parallelism"].update(cp=row.cp, dp=base.parallelism.dp // row.cp)
    return config.from_dict(data)


def pairs() -> None:
    model = config.load(ROW_PREFIX + "tp4").model
    print("seq      published step balanced / dropless (ratio)   simulated balanced / measured (ratio)   "
          "error balanced / dropless")
    for row in LONG_CONTEXT:
        pub_b = zoo_step_s(model, row.seq_len, LONG_CONTEXT_BATCH, 4, row.balanced_tflops)
        pub_d = zoo_step_s(model, row.seq_len, LONG_CONTEXT_BATCH, 4, row.dropless_tflops)
        sim_b, sim_d = (simulate(long_context_scenario(row, load), check_memory=False).summary["step_time_s"]
                        for load in ("balanced", "measured"))
        print(f"{row.seq_len:6d}   {pub_b:7.2f} / {pub_d:7.2f} s ({pub_d / pub_b:.3f})            "
              f"{sim_b:7.2f} / {sim_d:7.2f} s ({sim_d / sim_b:.3f})          "
              f"{pub_b / sim_b - 1:+.1%} / {pub_d / sim_d - 1:+.1%}", flush=True)


TERMS = ("compute_s", "pipeline_bubble_s", "comm_interference_s")
COMM = ("tp", "ep", "pp", "dp")


def fixed_and_per_token(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """The line through two rows' (tokens a rank routes per layer-microbatch, seconds per layer-microbatch): its
    intercept (what a layer-microbatch costs whatever its tokens) and slope (seconds a token)."""
    (ta, sa), (tb, sb) = a, b
    slope = (sa - sb) / (ta - tb)
    return sa - slope * ta, slope


def layouts() -> None:
    points: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {}
    print(f"{'row':15s} {'pub s':>6s} {'sim s':>6s} {'error':>7s} {'compute':>8s} {'bubble':>7s} {'interf':>7s} "
          + " ".join(f"{'x' + c:>6s}" for c in COMM) + "  layer-mb  pub ms/lmb  sim ms/lmb")
    for row in ZOO_ROWS:
        s = config.load(ROW_PREFIX + row.name)
        summary = simulate(s).summary
        p = s.parallelism
        layer_microbatches = s.model.layers / p.pp * s.training.global_batch_size / (
            p.dp * s.training.micro_batch_size)
        comm = summary["exposed_comm_by_parallelism_s"]
        step = summary["step_time_s"]
        print(f"{row.name:15s} {row.step_s:6.1f} {step:6.2f} {row.step_s / step - 1:+7.1%} "
              + " ".join(f"{summary[t]:7.2f}" for t in TERMS) + " "
              + " ".join(f"{comm[c]:6.2f}" for c in COMM)
              + f"  {layer_microbatches:8.0f}  {1e3 * row.step_s / layer_microbatches:9.2f}"
              f"  {1e3 * step / layer_microbatches:10.2f}", flush=True)
        tokens = s.training.micro_batch_size * s.training.seq_len / p.tp
        points[row.name] = ((tokens, row.step_s / layer_microbatches), (tokens, step / layer_microbatches))
    # The A2A and TP 4 rows: one code version (main 1e057005), EP 8 in a node, 16 local experts, micro batch 1; they
    # differ in TP (2 / 4), so in the tokens a rank routes per layer-microbatch (2,048 / 1,024).
    for label, i in (("published", 0), ("simulated", 1)):
        fixed, slope = fixed_and_per_token(points["a2a"][i], points["tp4"][i])
        print(f"a2a-tp4 line, {label}: {1e3 * fixed:.2f} ms a layer-microbatch + {1e6 * slope:.2f} us a token")


# Round 38 (docs/calibration/round-38.md "Round 38: dropless routing imbalance against measurements"): a WHAT-IF, not a
# constant. The long-context pairs route 32,768 tokens an EP group at every length (2 to 1/4 of a sequence) and their
# excess a microbatch is flat, so the load follows the tokens an EP group routes, not its sequences. The CV that the
# 16K pair reads (round 35: expert CV 1.65 at 32,768 tokens) is scaled as a sum over independent documents would
# scale it (variance over the tokens, CV ~ 1 / sqrt(tokens)) to every dropless zoo row; both readings are of held-out
# pairs, so nothing here may set data/moe.yaml.
READ_CV, READ_TOKENS = 1.65, 32768
DROPLESS_ROWS = ("tp4", "a2a", "fsdp", "deepep", "deepep-overlap", "lc16k-dropless", "lc32k-dropless",
                 "lc64k-dropless", "lc128k-dropless")
READ_EP = 8     # the pairs' expert-parallel size


def group_tokens(scenario) -> float:
    """Tokens one expert-parallel group routes a microbatch (``moe.ep_group_tokens``: ep x etp ranks, each its
    micro batch's tokens over TP and CP)."""
    p, t = scenario.parallelism, scenario.training
    return p.ep * (p.etp or 1) * t.micro_batch_size * t.seq_len / (p.tp * p.cp)


def tokens_law_cv(tokens: float, cv: float = READ_CV, at_tokens: float = READ_TOKENS) -> float:
    """The expert CV at ``tokens`` an EP group if its variance falls as 1 / tokens from ``cv`` at ``at_tokens``."""
    return cv * (at_tokens / tokens) ** 0.5


def cv_for_busiest(spec, ep: int, tokens: float, busiest: float) -> float:
    """The expert CV at which ``moe.busiest_rank_load`` of ``ep`` ranks routing ``tokens`` is ``busiest`` (bisection;
    the load rises with the CV): the EP-invariant reading, the busiest rank's share kept as at the pairs' EP size."""
    lo, hi = 0.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if moe.busiest_rank_load(spec.model_copy(update={"load": mid}), ep, tokens) < busiest:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def loads() -> None:
    print(f"{'row':16s} {'tokens':>7s} {'seqs':>5s} {'E/rank':>6s} {'pub s':>7s}   step (error) at: balanced | "
          "as held out | tokens law | tokens law, EP-invariant busiest rank")
    published = {r.name: r.step_s for r in ZOO_ROWS}
    model = config.load(ROW_PREFIX + "tp4").model
    for lc in LONG_CONTEXT:
        published[f"lc{lc.seq_len // 1024}k-dropless"] = zoo_step_s(model, lc.seq_len, LONG_CONTEXT_BATCH, 4,
                                                                   lc.dropless_tflops)
    for name in DROPLESS_ROWS:
        s = config.load(ROW_PREFIX + name)
        spec, ep, tokens = s.model.moe, s.parallelism.ep, group_tokens(s)
        cv = tokens_law_cv(tokens)
        at_pairs = moe.busiest_rank_load(spec.model_copy(update={"load": cv}), READ_EP, tokens)
        cells = []
        for load in ("balanced", "measured", cv, cv_for_busiest(spec, ep, tokens, at_pairs)):
            step = simulate(config.from_dict(with_load(s, load)), check_memory=False).summary["step_time_s"]
            busiest = moe.busiest_rank_load(spec.model_copy(update={"load": load}), ep, tokens)
            cells.append(f"{step:7.3f} ({published[name] / step - 1:+6.1%}, x{busiest:.2f})")
        print(f"{name:16s} {tokens:7.0f} {tokens / s.training.seq_len:5.2f} {spec.experts // ep:6d} "
              f"{published[name]:7.2f}   " + " | ".join(cells), flush=True)


main = script_entry.subcommands({"layouts": layouts, "pairs": pairs, "loads": loads})


if __name__ == "__main__":
    sys.exit(script_entry.run(main, sys.argv[1:], __doc__, words=(1, 1), usage="layouts | pairs | loads"))
