"""The MLPerf Training v4.0 GPT-3 row (round 31) is what its three result logs measured, on the layout they state.

Source: mlcommons/training_results_v4.0 @ 62f111b7, NVIDIA/results/eos_n64_ngc24.04_nemo/gpt3/result_{0,1,2}.txt.
Each log times evaluation intervals ("blocks") with MLLOG `block_start` / `block_stop` (milliseconds since the epoch);
every block carries `epoch_count` 51,904,512 tokens. The logs also state global_batch_size 2304,
max_sequence_length 2048, gradient_accumulation_steps 72, the SYSJSON's 64 nodes x 8 H100, and `trained_samples`
(1,245,708,288 / 1,193,803,776 / 1,193,803,776 tokens). Copied here as published, every block of every log.
"""

import statistics

import pytest

from simcluster.spec import config
from simcluster.studies import validation

SCENARIO = "mlperf40-gpt3-175b-512-h100-fp8"
HELD_OUT = {c["scenario"]: c for c in validation.held_out_cases()}

BLOCK_TOKENS = 51_904_512
EVAL_INTERVAL_SEQUENCES = 24_576  # custom.yaml val_check_interval: ceil_div(24576, GBS) steps a block
LOG_GBS, LOG_SEQ, LOG_GRAD_ACCUMULATION, LOG_GPUS = 2304, 2048, 72, 64 * 8

# (trained_samples, [(block_start, block_stop), ...]) per result file, in order.
LOGS = {
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


def _steps_per_block():
    return -(-EVAL_INTERVAL_SEQUENCES // LOG_GBS)


def test_every_block_is_one_evaluation_interval_of_whole_steps_and_the_logs_are_complete():
    """A block is ceil(24576 / 2304) = 11 steps of 2304 x 2048 tokens, and each log's blocks add up to its
    trained_samples: no block is missing from the copy, so the median below is over the whole of each run."""
    assert _steps_per_block() * LOG_GBS * LOG_SEQ == BLOCK_TOKENS
    for trained, blocks in LOGS.values():
        assert len(blocks) * BLOCK_TOKENS == trained
        assert all(stop > start for start, stop in blocks)
        assert all(nxt[0] >= prev[1] for prev, nxt in zip(blocks, blocks[1:], strict=False))


def test_the_row_is_the_median_block_after_each_logs_first_over_eleven_steps():
    durations = [(stop - start) / 1000 for _, blocks in LOGS.values() for start, stop in blocks[1:]]
    assert len(durations) == 67
    assert HELD_OUT[SCENARIO]["step_time_s"] == pytest.approx(
        statistics.median(durations) / _steps_per_block(), abs=5e-5
    )


def test_the_scenario_runs_the_logged_batch_on_the_logged_gpus():
    """GBS, sequence and GPU count as logged; tp 4 x pp 8 (the config file) leaves dp 16, and dp x MBS 2 x 72
    accumulation steps is the logged batch (a wrong micro batch or layout fails it)."""
    s = config.load(SCENARIO)
    t, p = s.training, s.parallelism
    assert (t.global_batch_size, t.seq_len, s.cluster.gpus) == (LOG_GBS, LOG_SEQ, LOG_GPUS)
    assert (p.tp, p.pp, p.virtual_stages) == (4, 8, 4)
    assert p.dp == s.cluster.gpus // (p.tp * p.pp)
    assert p.dp * t.micro_batch_size * LOG_GRAD_ACCUMULATION == LOG_GBS
    assert s.model.layers % (p.pp * p.virtual_stages) == 0
