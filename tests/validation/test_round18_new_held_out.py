"""Round 18's new held-out rows (docs/calibration/round-18.md, "Round 18: new held-out runs"): the FlashAttention-2
paper's end-to-end GPT training rows (Dao 2023, arXiv 2307.08691, section 4.2, Table 1, column FlashAttention-2) against
the figures and conventions their sources publish, so that a wrong shape, batch or conversion cannot pass unseen:

- The paper publishes TFLOP/s per GPU in its own count, 6 x seqlen x params + 12 x layers x hidden x seqlen^2 a
  sequence; the rows hold step times, global batch x that count / (TFLOP/s x 8 GPUs), with the scenario's own
  parameter count. That count must stay within 1% of simcluster's model FLOP (Narayanan et al. 2021: the same
  unhalved attention; the position table, which the parameters count and the FLOP do not, is the difference).
- The authors' training README (Dao-AILab/flash-attention training/README.md, FlashAttention-1 era) publishes for
  the same configs "GPT3-1.3B | 1M | 169k" and "GPT3-2.7B | 1M | 85k" tokens/s on 8 A100 80GB at sequence 2,048:
  with the paper's count and the scenarios' shapes these are the paper's FlashAttention column (189 TFLOP/s for
  both) within 2.5%, which ties the scenarios' batch (1M tokens) and shapes (2.7B with head dim 128) to the runs.
"""

import pytest

from simcluster.spec import config
from simcluster.studies import validation
from simcluster.workload import moe

HELD_OUT = {c["scenario"]: c for c in validation.held_out_cases()}
GPUS = 8

# scenario -> (Table 1's FlashAttention-2 TFLOP/s per GPU, layers, hidden, sequence)
TABLE_1 = {
    "dao2023-gpt3-1.3b-2k-8-a100": (196.0, 24, 2048, 2048),
    "dao2023-gpt3-1.3b-8k-8-a100": (220.0, 24, 2048, 8192),
    "dao2023-gpt3-2.7b-2k-8-a100": (205.0, 32, 2560, 2048),
    "dao2023-gpt3-2.7b-8k-8-a100": (225.0, 32, 2560, 8192),
}
# scenario -> (training README tokens/s on 8 GPUs, Table 1's FlashAttention (v1) TFLOP/s per GPU)
README_TOKENS = {
    "dao2023-gpt3-1.3b-2k-8-a100": (169e3, 189.0),
    "dao2023-gpt3-2.7b-2k-8-a100": (85e3, 189.0),
}


def paper_flop_per_sequence(scenario: config.Scenario) -> float:
    m, s = scenario.model, scenario.training.seq_len
    return 6 * s * m.params + 12 * m.layers * m.hidden * s**2


def test_round_18_rows_are_held_out_with_their_source():
    assert set(TABLE_1) <= set(HELD_OUT)
    for name in TABLE_1:
        assert HELD_OUT[name]["source"] == "dao2023_flashattention2"
        assert HELD_OUT[name]["source"] in validation.sources()


@pytest.mark.parametrize("name", sorted(TABLE_1))
def test_step_time_is_table_1s_tflops_in_the_papers_count(name):
    scenario = config.load(name)
    tflops, layers, hidden, seq = TABLE_1[name]
    t = scenario.training
    shape = (scenario.model.layers, scenario.model.hidden, t.seq_len, scenario.cluster.gpus)
    assert shape == (layers, hidden, seq, GPUS)
    assert t.global_batch_size * t.seq_len == 2**20  # the configs' 1M-token batch (512 x 2k, 128 x 8k)
    step = t.global_batch_size * paper_flop_per_sequence(scenario) / (tflops * 1e12 * GPUS)
    assert HELD_OUT[name]["step_time_s"] == pytest.approx(step, rel=1e-4)


@pytest.mark.parametrize("name", sorted(TABLE_1))
def test_papers_flop_count_is_simclusters_model_flop(name):
    scenario = config.load(name)
    t = scenario.training
    paper = t.global_batch_size * paper_flop_per_sequence(scenario)
    assert moe.model_flop_per_step(scenario.model, t.seq_len, t.global_batch_size) == pytest.approx(paper, rel=0.01)


@pytest.mark.parametrize("name", sorted(README_TOKENS))
def test_training_readmes_tokens_per_second_is_table_1s_flashattention_column(name):
    scenario = config.load(name)
    tokens_per_s, fa1_tflops = README_TOKENS[name]
    tflops = tokens_per_s * paper_flop_per_sequence(scenario) / scenario.training.seq_len / GPUS / 1e12
    assert tflops == pytest.approx(fa1_tflops, rel=0.025)
