"""Round 37: what grows with the sequence on A100, controlled pairs (docs/calibration/round-37.md, "Round 37: what grows
with the sequence on A100 (controlled pairs)"). Held-out diagnosis: nothing here sets a constant.

A ratio of two published steps of one run family, twins that differ only in the sequence, cancels what they share
(host, clock, most of the GEMMs' efficiency). Independent truth:

- Table 5's Baseline steps (Yeung et al., arXiv 2411.05288; = the artifact csv's steps,
  ``test_round23_new_held_out.CSV_STEP``) at sequence 2048 and 4096, every vocabulary.
- The authors' re-run of the same 8-GPU Baseline in the stated container (sail-sg/VocabularyParallelism
  ``artifact/example-results/full-exp.txt`` @ 71f07270, MFU over 312 TFLOP/s, the artifact's FLOP): 2k 47.52 / 40.82 /
  33.70%, 4k 52.82 / 45.78 / 37.13% at 32K / 64K / 128K (its 2k / 256K row is its own outlier,
  ``test_round23_vocabpar_review.CONSISTENT``).
- Closed forms: attention FLOP grow 4x for twice the tokens, the layer's GEMM FLOP and elementwise bytes 2x, the gaps
  per kernel not at all; FlashAttention-2's causal A100 rate from 2k to 4k (Dao 2023, Figures 4d/5d: forward 187 ->
  198, backward 145 -> 165 TFLOP/s, ``test_flash2_a100_causal.py``) bounds the attention's growth at 4 x 187/198 =
  3.78 forward and 4 x 145/165 = 3.52 backward.
- Megatron's fused scale-mask-softmax runs only for 16 < key length <= 2048 in the older copies
  (``FusedScaleMaskSoftmax.is_kernel_available``; 4096 in later ones), beyond which it falls back to torch's
  softmax; the unfused-attention rate the model uses (efficiency.yaml attention.naive) is Megatron's fused kernels
  measured at 1024 and 2048 tokens.
"""

import json

import pytest
import yaml
from scripts_loader import load_script
from test_round23_new_held_out import CSV_STEP, artifact_flop
from test_round23_vocabpar_review import RERUN_PEAK

from simcluster.engine import simulate
from simcluster.spec import config
from simcluster.studies import validation
from simcluster.workload import kernels
from simcluster.workload.ops import layer_ops, output_ops, shard_for

seq_pairs = load_script("seq_pairs")
PUBLISHED = {c["scenario"]: c["step_time_s"] for c in validation.held_out_cases() if "step_time_s" in c}

# full-exp.txt, Baseline, 8 GPUs: (sequence, vocabulary) -> MFU % over 312 TFLOP/s
RERUN_MFU = {(2048, 32000): 47.52, (2048, 64000): 40.82, (2048, 128000): 33.70,
             (4096, 32000): 52.82, (4096, 64000): 45.78, (4096, 128000): 37.13}
VOCABS = (32000, 64000, 128000)
MODELS = {"4b": 8, "10b": 16, "21b": 32}
# FlashAttention-2, causal, head dim 128, A100 (Dao 2023): TFLOP/s at 2k and 4k, forward and backward
FA2_FORWARD, FA2_BACKWARD = (187.0, 198.0), (145.0, 165.0)


def name(size: str, s: int, v: int) -> str:
    return f"vocabpar2024-1f1b-{size}-{MODELS[size]}-a100-s{s}-v{v // 1000}k"


def table_5_ratio(v: int) -> float:
    return CSV_STEP[(4096, v)][0] / CSV_STEP[(2048, v)][0]


def rerun_step_s(s: int, v: int) -> float:
    return artifact_flop(8, s, v) / (RERUN_MFU[(s, v)] / 100 * 8 * RERUN_PEAK)


def rerun_ratio(v: int) -> float:
    return rerun_step_s(4096, v) / rerun_step_s(2048, v)


def simulated_ratio(size: str, v: int) -> float:
    short, long = (simulate(config.load(name(size, s, v))).summary["step_time_s"] for s in (2048, 4096))
    return long / short


@pytest.mark.parametrize("size", MODELS)
@pytest.mark.parametrize("v", (32000, 64000, 128000, 256000))
def test_vocabpar_twins_differ_only_in_the_sequence(size, v):
    """The pairs are controlled: the two scenarios' model, training, parallelism and cluster keys are equal but for
    seq_len and max_seq_len (the fork's pretrain_gpt.sh sets both from SEQ_LENGTH)."""
    assert seq_pairs.differing_keys(name(size, 2048, v), name(size, 4096, v)) == []


def test_dao2023_twins_are_controlled_only_at_1_3b():
    """flash-attention's GPT configs: the 1.3B pair keeps its heads (16 of 128) and changes only the batch split (the
    same 1M tokens a step); the 2.7B 8k config runs 32 heads of 80 where the 2k one runs 20 of 128."""
    assert seq_pairs.differing_keys("dao2023-gpt3-1.3b-2k-8-a100", "dao2023-gpt3-1.3b-8k-8-a100") == [
        "training.global_batch_size", "training.micro_batch_size"]
    assert "model.heads" in seq_pairs.differing_keys("dao2023-gpt3-2.7b-2k-8-a100", "dao2023-gpt3-2.7b-8k-8-a100")


def test_differing_keys_reads_a_preset_model_and_nested_settings(tmp_path):
    """A model named by its preset (a string, not a section) is one setting, and a nested one is named by its whole
    path (scenario_walk.differences; round 37's docs audit: the section-by-section loop failed on a string model)."""
    base = {"model": "llama3-8b", "training": {"seq_len": 2048, "global_batch_size": 64},
            "cluster": {"nodes": 2, "topology_options": {"protocol": "infiniband"}}}
    twin = {"model": "llama3-8b", "training": {"seq_len": 4096, "global_batch_size": 64},
            "cluster": {"nodes": 2, "topology_options": {"protocol": "ethernet"}}, "description": "not a setting"}
    paths = []
    for label, data in (("short", base), ("long", twin)):
        paths.append(tmp_path / f"{label}.yaml")
        paths[-1].write_text(yaml.safe_dump(data))
    assert seq_pairs.differing_keys(*paths) == ["cluster.topology_options.protocol"]
    twin["model"] = "llama3-70b"
    paths[1].write_text(yaml.safe_dump(twin))
    assert seq_pairs.differing_keys(*paths) == ["cluster.topology_options.protocol", "model"]


def test_twins_are_found_by_the_sequence_token():
    rows = [seq_pairs.Row(n, 1.0, 1.0) for n in (name("4b", 2048, 32000), name("4b", 4096, 32000),
                                                   name("4b", 2048, 64000), "dao2023-gpt3-1.3b-2k-8-a100",
                                                   "dao2023-gpt3-1.3b-8k-8-a100")]
    pairs = {(a.name, b.name) for a, b in seq_pairs.twins(rows)}
    assert pairs == {(name("4b", 2048, 32000), name("4b", 4096, 32000)),
                     ("dao2023-gpt3-1.3b-2k-8-a100", "dao2023-gpt3-1.3b-8k-8-a100")}


@pytest.mark.parametrize("v", VOCABS)
def test_table_5_grows_faster_with_the_sequence_than_the_rerun(v):
    """Source against source: Table 5's 4096 / 2048 step ratio is 2.154 / 2.118 / 2.064 at 32K / 64K / 128K, the
    re-run's in the stated container 1.975 / 1.953 / 1.981 (4-9% less; the 2048 steps agree within 1.7%)."""
    assert rerun_step_s(2048, v) / (CSV_STEP[(2048, v)][0] / 1e3) == pytest.approx(1.0, abs=0.02)
    assert 1.04 < table_5_ratio(v) / rerun_ratio(v) < 1.095
    assert 1.95 < rerun_ratio(v) < 1.99


@pytest.mark.parametrize("v", VOCABS)
def test_simulated_growth_is_the_reruns_not_table_5s(v):
    """The model's 8-GPU step grows 1.980-1.981x: within 1.5% of the re-run's at every vocabulary, 4-9% under Table
    5's. A diagnosis: nothing was changed to make it hold."""
    sim = simulated_ratio("4b", v)
    assert sim == pytest.approx(rerun_ratio(v), rel=0.015)
    assert table_5_ratio(v) / sim > 1.04


def test_slot_terms_conserve_the_ratio_and_keep_their_closed_forms():
    """The last stage's slot split into terms (4B, 32K): their contributions sum to the slot ratio less 2; the
    elementwise kernels and copies grow exactly 2x, the gaps not at all, the GEMMs at most 2x (wave quantisation at
    the shorter rows only loses), the attention between FlashAttention-2's measured backward and forward growth."""
    short, long = (seq_pairs.slot_terms(name("4b", s, 32000)) for s in (2048, 4096))
    ratio = sum(long.values()) / sum(short.values())
    pair = seq_pairs.Pair(seq_pairs.Row("a", 1, 1), seq_pairs.Row("b", 1, 1), 1.0, 1.0, short, long, 1.0)
    assert sum(pair.contributions.values()) == pytest.approx(ratio - 2.0, abs=1e-12)
    for term in ("layout copies", "layer memory-bound", "output norm+loss"):
        assert long[term] / short[term] == pytest.approx(2.0, rel=1e-3)
    assert long["gaps"] == pytest.approx(short["gaps"], rel=1e-12)
    # and the gaps are every kernel's one fitted gap: the last stage's 32 / 8 layers and the output layer, each kernel
    # once (round 37 test audit: the ratio alone let a slot counting one layer's gaps pass)
    scenario = config.load(name("4b", 2048, 32000))
    assert (scenario.model.layers, scenario.parallelism.pp) == (32, 8)
    shard = shard_for(scenario)
    per_layer, output = (sum(len(ops) for ops in table(scenario.model, shard).values())
                         for table in (layer_ops, output_ops))
    assert short["gaps"] == pytest.approx(kernels.host_model().kernel_gap_s * (32 // 8 * per_layer + output),
                                          rel=1e-12)
    assert long["layer GEMM"] / short["layer GEMM"] <= 2.0
    lower, upper = 4 * FA2_BACKWARD[0] / FA2_BACKWARD[1], 4 * FA2_FORWARD[0] / FA2_FORWARD[1]
    assert lower - 0.02 < long["attention core"] / short["attention core"] < upper + 0.02


def test_attention_alone_would_need_a_kernel_far_off_its_measurement():
    """What the Table 5 pairs at 32K ask of the attention at 4096 alone (2048 kept): x1.72 (4B), x1.61 (10B), x1.43
    (21B), where the model's kernel is within 4% of FlashAttention-2's measured one; the re-run's 4B pair asks about
    x1 (0.97)."""
    factors = {}
    for size in MODELS:
        rows = [seq_pairs.Row(name(size, s, 32000), simulate(config.load(name(size, s, 32000))).summary["step_time_s"],
                              PUBLISHED[name(size, s, 32000)]) for s in (2048, 4096)]
        factors[size] = seq_pairs.pair(*rows).attention_factor
        if size == "4b":
            rerun = [seq_pairs.Row(r.name, r.simulated_s, rerun_step_s(s, 32000))
                     for r, s in zip(rows, (2048, 4096), strict=True)]
            assert seq_pairs.pair(*rerun).attention_factor == pytest.approx(1.0, abs=0.1)
    assert all(f > 1.4 for f in factors.values()), factors
    assert factors["4b"] == pytest.approx(1.72, abs=0.05)


def test_dao2023_1_3b_pair_grows_as_published():
    """The controlled flash-attention pair (1.3B, 2k -> 8k, 1M tokens a step): published 7.627 / 6.087 = 1.253, the
    model within 2% (its attention 6.9x a microbatch slot); the 2.7B pair, not controlled, is left to the prose."""
    short, long = "dao2023-gpt3-1.3b-2k-8-a100", "dao2023-gpt3-1.3b-8k-8-a100"
    published = PUBLISHED[long] / PUBLISHED[short]
    sim = simulate(config.load(long)).summary["step_time_s"] / simulate(config.load(short)).summary["step_time_s"]
    assert published == pytest.approx(1.253, abs=0.001)
    assert sim == pytest.approx(published, rel=0.02)


def test_no_unfused_attention_row_runs_beyond_the_fused_softmax():
    """Every bundled scenario with ``attention: naive`` runs 16 < sequence <= 2048, inside the 2021-22 fused softmax's
    range and the measured rate's: a longer one would fall back to torch's softmax, which the model does not price."""
    folder = config.resolve_path("dao2023-gpt3-1.3b-2k-8-a100").parent
    naive = []
    for path in sorted(folder.glob("*.yaml")):
        training = (yaml.safe_load(path.read_text()) or {}).get("training") or {}
        if training.get("attention") == "naive":
            naive.append(training.get("seq_len", 2048))
    assert naive, "no unfused-attention scenario found"
    assert all(16 < s <= 2048 for s in naive)


def test_script_help_and_bad_input(tmp_path, capsys):
    """The project's rule for scripts: --help works; bad input is one line naming the file or scenario, exit 2."""
    with pytest.raises(SystemExit) as done:
        seq_pairs.main(["--help"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("usage:")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"cases": [{"scenario": f"vocabpar2024-none-s{s}-x", "error": 0.1, "step_time_s": 1.0}
                                             for s in (2048, 4096)]}))
    for path, word in ((tmp_path / "missing.json", "missing.json"), (bad, "not JSON"), (unknown, "vocabpar2024-none")):
        code = seq_pairs.main([str(path)])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and word in err and "Traceback" not in err, err
