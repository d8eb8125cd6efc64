"""The MLPerf Training GPT-3 rows (round 31) are what their result logs measured, on the layouts they state.

Sources: NVIDIA's closed-division GPT-3 175B submissions on Eos.
- v4.0, 64 DGX H100: mlcommons/training_results_v4.0 @ 62f111b7, NVIDIA/results/eos_n64_ngc24.04_nemo/gpt3/
  result_{0,1,2}.txt (global_batch_size 2304, max_sequence_length 2048, gradient_accumulation_steps 72, SYSJSON 64 x 8
  H100; config TP 4, PP 8, VP 4).
- v4.1, 32 DGX H100: the copy swsok/training_results_v4.1 @ 8821c703 (mlcommons/training_results_v4.1 is not stored),
  NVIDIA/results/eos_n32_ngc24.09_nemo/gpt3/result_{0,1,2}.txt (global_batch_size 2048, max_sequence_length 2048,
  gradient_accumulation_steps 128, submission_platform "32xNVIDIA DGX H100"; config TP 4, PP 8, VP 6).
Each log times evaluation intervals ("blocks") with MLLOG `block_start` / `block_stop` (milliseconds since the epoch);
every block carries the same `epoch_count` in tokens, and each log ends with `trained_samples` in tokens. Copied here as
published, every block of every log.
"""

import statistics
from dataclasses import dataclass

import pytest

from simcluster.spec import config
from simcluster.studies import validation

HELD_OUT = {c["scenario"]: c for c in validation.held_out_cases()}
EVAL_INTERVAL_SEQUENCES = 24_576  # custom.yaml val_check_interval: ceil_div(24576, GBS) steps a block (v4.0 and v4.1)

# (trained_samples, [(block_start, block_stop), ...]) per result file, in order.
LOGS_V40 = {
    "result_0": (
        1_245_708_288,
        [
            (1715043830078, 1715043949934),
            (1715043961195, 1715044081144),
            (1715044092342, 1715044212207),
            (1715044223414, 1715044343299),
            (1715044354506, 1715044474393),
            (1715044485586, 1715044605526),
            (1715044616732, 1715044736677),
            (1715044747883, 1715044867853),
            (1715044879057, 1715044998978),
            (1715045010175, 1715045130128),
            (1715045141330, 1715045261262),
            (1715045272463, 1715045392379),
            (1715045403579, 1715045523545),
            (1715045534740, 1715045654689),
            (1715045665894, 1715045785828),
            (1715045797043, 1715045916965),
            (1715045928164, 1715046048037),
            (1715046059236, 1715046179118),
            (1715046190321, 1715046310304),
            (1715046321503, 1715046441429),
            (1715046452629, 1715046572572),
            (1715046583780, 1715046703728),
            (1715046714919, 1715046834856),
            (1715046846057, 1715046965916),
        ],
    ),
    "result_1": (
        1_193_803_776,
        [
            (1715083329942, 1715083450822),
            (1715083462319, 1715083583149),
            (1715083594633, 1715083715388),
            (1715083726868, 1715083847693),
            (1715083859174, 1715083980032),
            (1715083991524, 1715084112339),
            (1715084123814, 1715084244621),
            (1715084256102, 1715084376899),
            (1715084388385, 1715084509227),
            (1715084520709, 1715084641498),
            (1715084652976, 1715084773760),
            (1715084785237, 1715084906091),
            (1715084917577, 1715085038345),
            (1715085049829, 1715085170651),
            (1715085182131, 1715085302974),
            (1715085314452, 1715085435298),
            (1715085446781, 1715085567566),
            (1715085579044, 1715085699891),
            (1715085711384, 1715085832198),
            (1715085843680, 1715085964518),
            (1715085976001, 1715086096805),
            (1715086108288, 1715086229037),
            (1715086240518, 1715086361317),
        ],
    ),
    "result_2": (
        1_193_803_776,
        [
            (1715118989491, 1715119110286),
            (1715119121603, 1715119242339),
            (1715119253594, 1715119374326),
            (1715119385568, 1715119506335),
            (1715119517601, 1715119638406),
            (1715119649660, 1715119770517),
            (1715119781770, 1715119902573),
            (1715119913819, 1715120034627),
            (1715120045881, 1715120166711),
            (1715120177979, 1715120298817),
            (1715120310062, 1715120430826),
            (1715120442077, 1715120562897),
            (1715120574146, 1715120695009),
            (1715120706261, 1715120827032),
            (1715120838285, 1715120959027),
            (1715120970283, 1715121091067),
            (1715121102328, 1715121223209),
            (1715121234467, 1715121355271),
            (1715121366522, 1715121487299),
            (1715121498546, 1715121619310),
            (1715121630569, 1715121751426),
            (1715121762676, 1715121883482),
            (1715121894732, 1715122015540),
        ],
    ),
}

LOGS_V41 = {
    "result_0": (
        1_258_291_200,
        [
            (1728322508892, 1728322731569),
            (1728322751739, 1728322972598),
            (1728322992635, 1728323213549),
            (1728323233590, 1728323454416),
            (1728323474463, 1728323695277),
            (1728323715322, 1728323936170),
            (1728323956250, 1728324177082),
            (1728324197124, 1728324418035),
            (1728324438104, 1728324659031),
            (1728324679067, 1728324899951),
            (1728324920011, 1728325140855),
            (1728325160889, 1728325381788),
            (1728325401846, 1728325622768),
            (1728325642801, 1728325863754),
            (1728325883808, 1728326104652),
            (1728326124691, 1728326345609),
            (1728326365656, 1728326586564),
            (1728326606613, 1728326827573),
            (1728326847640, 1728327068508),
            (1728327088554, 1728327309423),
            (1728327329451, 1728327550325),
            (1728327570383, 1728327791312),
            (1728327811369, 1728328032337),
            (1728328052398, 1728328273289),
            (1728328293321, 1728328514161),
        ],
    ),
    "result_1": (
        1_207_959_552,
        [
            (1728322512090, 1728322734387),
            (1728322754513, 1728322975367),
            (1728322995378, 1728323216210),
            (1728323236233, 1728323457083),
            (1728323477075, 1728323697952),
            (1728323717961, 1728323938774),
            (1728323958794, 1728324179604),
            (1728324199629, 1728324420518),
            (1728324440530, 1728324661446),
            (1728324681455, 1728324902407),
            (1728324922430, 1728325143353),
            (1728325163375, 1728325384268),
            (1728325404275, 1728325625130),
            (1728325645122, 1728325865989),
            (1728325885997, 1728326106858),
            (1728326126862, 1728326347839),
            (1728326367866, 1728326588868),
            (1728326608874, 1728326829852),
            (1728326849861, 1728327070823),
            (1728327090836, 1728327311703),
            (1728327331696, 1728327552520),
            (1728327572528, 1728327793385),
            (1728327813391, 1728328034296),
            (1728328054299, 1728328275196),
        ],
    ),
    "result_2": (
        1_207_959_552,
        [
            (1728322852409, 1728323074457),
            (1728323094611, 1728323316107),
            (1728323336161, 1728323557595),
            (1728323577681, 1728323799241),
            (1728323819317, 1728324040883),
            (1728324060955, 1728324282459),
            (1728324302519, 1728324523998),
            (1728324544089, 1728324765670),
            (1728324785736, 1728325007254),
            (1728325027324, 1728325248799),
            (1728325268869, 1728325490423),
            (1728325510514, 1728325731952),
            (1728325752025, 1728325973614),
            (1728325993723, 1728326215220),
            (1728326235266, 1728326456793),
            (1728326476883, 1728326698435),
            (1728326718509, 1728326940070),
            (1728326960144, 1728327181676),
            (1728327201759, 1728327423326),
            (1728327443405, 1728327664995),
            (1728327685077, 1728327906563),
            (1728327926634, 1728328148081),
            (1728328168157, 1728328389627),
            (1728328409704, 1728328631197),
        ],
    ),
}


@dataclass(frozen=True)
class Submission:
    scenario: str
    logs: dict
    block_tokens: int  # the logs' epoch_count
    gbs: int
    seq: int
    grad_accumulation: int
    gpus: int
    layout: tuple  # (tp, pp, virtual stages) from the configuration file the README names
    timed_blocks: int  # blocks after each log's first

    @property
    def steps_per_block(self):
        return -(-EVAL_INTERVAL_SEQUENCES // self.gbs)


SUBMISSIONS = [
    Submission("mlperf40-gpt3-175b-512-h100-fp8", LOGS_V40, 51_904_512, 2304, 2048, 72, 64 * 8, (4, 8, 4), 67),
    Submission("mlperf41-gpt3-175b-256-h100-fp8", LOGS_V41, 50_331_648, 2048, 2048, 128, 32 * 8, (4, 8, 6), 70),
]
BY_SCENARIO = pytest.mark.parametrize("sub", SUBMISSIONS, ids=lambda s: s.scenario)


@BY_SCENARIO
def test_every_block_is_one_evaluation_interval_of_whole_steps_and_the_logs_are_complete(sub):
    """A block is ceil(24576 / GBS) steps of GBS x 2048 tokens (11 at 2304, 12 at 2048), and each log's blocks add up
    to its trained_samples: no block is missing from the copy, so the median below is over the whole of each run."""
    assert sub.steps_per_block * sub.gbs * sub.seq == sub.block_tokens
    for trained, blocks in sub.logs.values():
        assert len(blocks) * sub.block_tokens == trained
        assert all(stop > start for start, stop in blocks)
        assert all(nxt[0] >= prev[1] for prev, nxt in zip(blocks, blocks[1:], strict=False))


@BY_SCENARIO
def test_the_row_is_the_median_block_after_each_logs_first_over_its_steps(sub):
    durations = [(stop - start) / 1000 for _, blocks in sub.logs.values() for start, stop in blocks[1:]]
    assert len(durations) == sub.timed_blocks
    assert HELD_OUT[sub.scenario]["step_time_s"] == pytest.approx(
        statistics.median(durations) / sub.steps_per_block, abs=5e-5
    )


@BY_SCENARIO
def test_the_scenario_runs_the_logged_batch_on_the_logged_gpus(sub):
    """GBS, sequence and GPU count as logged; tp x pp from the config file leaves dp, and dp x MBS x the logged
    accumulation steps is the logged batch (a wrong micro batch or layout fails it)."""
    s = config.load(sub.scenario)
    t, p = s.training, s.parallelism
    assert (t.global_batch_size, t.seq_len, s.cluster.gpus) == (sub.gbs, sub.seq, sub.gpus)
    assert (p.tp, p.pp, p.virtual_stages) == sub.layout
    assert p.dp == s.cluster.gpus // (p.tp * p.pp)
    assert p.dp * t.micro_batch_size * sub.grad_accumulation == sub.gbs
    assert s.model.layers % (p.pp * p.virtual_stages) == 0


# What the submissions' files state beside the layout (round 31 review). The model: MLPerf's GPT-3 175B, 96 layers,
# hidden 12288, 96 heads, FFN 4h, sequence 2048, hidden_dropout and attention_dropout 0.0 (v3.1's official
# conf/custom.yaml, eos_n32's in the v4.1 copy, and MLCommons' reference mlcommons/training
# large_language_model/megatron-lm/run_gpt3.sh), vocabulary 50,257 (the reference's README: "vocab size (value is
# 50257)"). config_fp8.sh (v3.1 official): FP8 with amax history 1024, algorithm max: delayed scaling. The Dockerfiles:
# Transformer Engine 1.x, Megatron-Core core_v0.7.0.beta (v4.0) and NeMo 24.09's 0.9 (v4.1). Per config file:
# v4.0 custom.yaml (third-party copy) defers the embedding wgrad only at MBS 1 (this run: 2), BUCKET_CAP_MB 200
# (third-party config_common.sh); v4.1 config_DGXH100_32x8x256x4x8_mbs2.sh DEFER_EMBEDDING_WGRAD_COMPUTE True,
# WGRAD_DEFERRAL_LIMIT 65, BUCKET_CAP_MB 125 (set after config_common.sh is sourced).
MIB = 2**20
STATED = {
    "mlperf40-gpt3-175b-512-h100-fp8": {"mcore_version": "0.7", "defer": (False, None), "bucket": 200 * MIB},
    "mlperf41-gpt3-175b-256-h100-fp8": {"mcore_version": "0.9", "defer": (True, 65), "bucket": 125 * MIB},
}


@BY_SCENARIO
def test_the_scenario_runs_mlperfs_model_and_the_configuration_files_settings(sub):
    """MLPerf's model has no dropout: the gpt3-175b preset's default (dropout on) charged masks the run never wrote
    (fails on ``model: gpt3-175b``), and the fp8 recipe, TP overlap, release, deferral and buckets the files state."""
    s = config.load(sub.scenario)
    m, t, p = s.model, s.training, s.parallelism
    assert (m.layers, m.hidden, m.heads, m.n_kv_heads, m.ffn, m.vocab) == (96, 12288, 96, 96, 4 * 12288, 50257)
    assert (m.mlp, m.norm, m.position, m.tied_embeddings, m.dropout) == ("gelu", "layernorm", "learned", True, False)
    assert (t.precision, t.fp8_recipe, t.activation_recompute) == ("fp8", "delayed", "none")
    layout_settings = (p.sequence_parallel, p.tp_comm_overlap, p.te_version, p.zero_stage, p.grad_buckets)
    assert layout_settings == (True, True, 1, 1, "apex")
    stated = STATED[sub.scenario]
    assert t.mcore_version == stated["mcore_version"]
    deferred, limit = stated["defer"]
    assert p.defer_embedding_wgrad is deferred and (limit is None or p.wgrad_deferral_limit == limit)
    assert p.grad_bucket_size == stated["bucket"]


# Round 34: rows whose logs are too long to copy whole (2.6 M characters: a line per rank at start-up and a line per
# step), each read at its end. Per log: trained_samples and its last two evaluation blocks as (block_start,
# block_stop, first_epoch_num), all in the MLLOG lines as published.
# - v3.1, Azure + NVIDIA, 1,344 ND H100 v5 (10,752 H100): mlcommons/training_results_v3.1 @ f33f9444,
#   Azure+NVIDIA/results/ND_H100_v5_n1344_pytorch/gpt3/result_{0,1,2}.txt (global_batch_size 2688,
#   max_sequence_length 2048, gradient_accumulation_steps 8, epoch_count 55,050,240; config TP 4, PP 8, MBS 1, the
#   virtual stages conf/custom.yaml's default 12).
TAIL_LOGS_V31_AZURE = {
    "result_0": (
        1_211_105_280,
        [(1696579971700, 1696579981497, 1_101_004_800), (1696579982563, 1696579992601, 1_156_055_040)],
    ),
    "result_1": (
        1_211_105_280,
        [(1696581033500, 1696581043227, 1_101_004_800), (1696581044320, 1696581054126, 1_156_055_040)],
    ),
    "result_2": (
        1_211_105_280,
        [(1696583387819, 1696583397554, 1_101_004_800), (1696583398623, 1696583408630, 1_156_055_040)],
    ),
}


@dataclass(frozen=True)
class TailSubmission:
    scenario: str
    logs: dict
    block_tokens: int
    gbs: int
    seq: int
    grad_accumulation: int
    gpus: int
    layout: tuple  # (tp, pp, virtual stages)

    @property
    def steps_per_block(self):
        return -(-EVAL_INTERVAL_SEQUENCES // self.gbs)


TAIL_SUBMISSIONS = [
    TailSubmission(
        "mlperf31-gpt3-175b-10752-h100-azure-fp8", TAIL_LOGS_V31_AZURE, 55_050_240, 2688, 2048, 8, 1344 * 8, (4, 8, 12)
    ),
]
BY_TAIL = pytest.mark.parametrize("sub", TAIL_SUBMISSIONS, ids=lambda s: s.scenario)


@BY_TAIL
def test_the_tail_blocks_are_the_logs_last_whole_evaluation_intervals(sub):
    """A block is ceil(24576 / GBS) steps of GBS x 2048 tokens; the two blocks read follow each other and the second
    ends at the log's trained_samples, so they are the run's last two blocks, not a sample chosen among them."""
    assert sub.steps_per_block * sub.gbs * sub.seq == sub.block_tokens
    for trained, blocks in sub.logs.values():
        assert len(blocks) == 2
        (s0, e0, f0), (s1, e1, f1) = blocks
        assert f1 - f0 == sub.block_tokens and f1 + sub.block_tokens == trained
        assert s0 < e0 <= s1 < e1


@BY_TAIL
def test_the_tail_row_is_the_median_log_of_its_last_two_blocks_over_their_steps(sub):
    per_log = [
        sum(stop - start for start, stop, _ in blocks) / 1000 / (2 * sub.steps_per_block)
        for _, blocks in sub.logs.values()
    ]
    assert HELD_OUT[sub.scenario]["step_time_s"] == pytest.approx(statistics.median(per_log), abs=5e-5)


@BY_TAIL
def test_the_tail_scenario_runs_the_logged_batch_on_the_logged_gpus_and_mlperfs_model(sub):
    s = config.load(sub.scenario)
    m, t, p = s.model, s.training, s.parallelism
    assert (t.global_batch_size, t.seq_len, s.cluster.gpus) == (sub.gbs, sub.seq, sub.gpus)
    assert (p.tp, p.pp, p.virtual_stages) == sub.layout
    assert p.dp == s.cluster.gpus // (p.tp * p.pp)
    assert p.dp * t.micro_batch_size * sub.grad_accumulation == sub.gbs
    assert s.model.layers % (p.pp * p.virtual_stages) == 0
    assert (m.layers, m.hidden, m.heads, m.ffn, m.vocab, m.dropout) == (96, 12288, 96, 4 * 12288, 50257, False)
    assert (t.precision, t.fp8_recipe, t.activation_recompute) == ("fp8", "delayed", "none")
    assert (p.sequence_parallel, p.tp_comm_overlap, p.zero_stage, p.grad_buckets) == (True, True, 1, "apex")
