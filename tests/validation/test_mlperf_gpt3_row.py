"""The MLPerf Training GPT-3 row is what its result logs measured, on the layout they state.

Source: Azure + NVIDIA's closed-division MLPerf Training v3.1 GPT-3 175B submission on 1,344 ND H100 v5 (below).
Rounds 31-34 also held NVIDIA's v4.0 (512 H100) and v4.1 (256 H100) Eos rows here; docs/calibration/round-34.md "Round
34: one admission rule for the MLPerf rows" removed them (rule (M5): v4.0's VBOOST is set by a MINIBS conditional the
run changed; rule (M4): both rows' config_fp8.sh came from v3.1's folder, another round).
Each log times evaluation intervals ("blocks") with MLLOG `block_start` / `block_stop` (milliseconds since the epoch);
every block carries the same `epoch_count` in tokens, and each log ends with `trained_samples` in tokens.
"""

import statistics
from dataclasses import dataclass

import pytest

from simcluster.spec import config
from simcluster.studies import validation

HELD_OUT = {c["scenario"]: c for c in validation.held_out_cases()}
EVAL_INTERVAL_SEQUENCES = 24_576  # custom.yaml val_check_interval: ceil_div(24576, GBS) steps a block

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
