"""Round 24's new held-out rows (docs/calibration.md, "Round 24: new held-out runs"): the Megatron-LM 1F1B Baseline
of Balancing Pipeline Parallelism with Vocabulary Parallelism (Yeung, Qi, Lin and Wan, MLSys 2025, arXiv
2411.05288v2) at vocabularies 64K and 128K, the block of twelve Table 5 rows that round 23's rule left out and
admitted only whole. Everything but the vocabulary is round 23's (tests/validation/test_round23_new_held_out.py,
whose setup, FLOP count and memory count are reused here, not restated):

- Table 5 (Appendix F), Baseline, MFU % and peak memory GB at 64K and 128K, as printed (read in a PDF extraction
  and an HTML-table rendering of the paper, which agree on every figure).
- The step: the artifact's FLOP (artifact/quick_exp.sh) over MFU x GPUs x 320 TFLOP/s, Table 5's peak.
- Source against source: the artifact's exp_one_host.csv prints the four 8-GPU runs' own steps and TFLOP/s; their
  TFLOP/s over 320 is Table 5's MFU to the printed digit and their steps are the held-out steps within it.
"""

import pytest

from simcluster.parallel import memory
from simcluster.spec import config
from simcluster.studies import validation
from tests.validation.test_round23_new_held_out import (
    CSV_STEP,
    MICROBATCHES,
    TABLE_1,
    TABLE_5_PEAK,
    artifact_flop,
    first_stage_gib,
)

HELD_OUT = {c["scenario"]: c for c in validation.held_out_cases()}
SOURCE = "vocabpar2024_megatron_64k128k"
# Table 5, Baseline: (GPUs, sequence, vocabulary) -> (MFU %, peak memory GB as the artifact prints it: MiB / 1024)
TABLE_5 = {(8, 2048, 64000): (40.48, 16.32), (8, 2048, 128000): (33.11, 19.25),
           (8, 4096, 64000): (41.87, 22.85), (8, 4096, 128000): (35.00, 25.78),
           (16, 2048, 64000): (40.09, 25.98), (16, 2048, 128000): (32.44, 29.92),
           (16, 4096, 64000): (41.21, 38.94), (16, 4096, 128000): (33.88, 42.85),
           (32, 2048, 64000): (37.28, 35.89), (32, 2048, 128000): (28.97, 41.17),
           (32, 4096, 64000): (38.11, 57.41), (32, 4096, 128000): (30.05, 62.29)}
ROWS = {f"vocabpar2024-1f1b-{TABLE_1[p][3]}-{p}-a100-s{s}-v{v // 1000}k": (p, s, v) for p, s, v in TABLE_5}
EIGHT_GPU = sorted((s, v) for p, s, v in TABLE_5 if p == 8)


def published_step(p: int, s: int, v: int) -> float:
    return artifact_flop(p, s, v) / (TABLE_5[(p, s, v)][0] / 100 * p * TABLE_5_PEAK)


def test_round_24_rows_are_the_whole_block_held_out_with_their_source():
    rows = {name for name, case in HELD_OUT.items() if case["source"] == SOURCE}
    assert rows == set(ROWS)  # all twelve, as the rule requires
    assert all(HELD_OUT[name]["metric"] == "model" for name in rows)
    assert SOURCE in validation.sources()
    assert not any(c["scenario"] in ROWS for c in validation.cases())  # never calibration


@pytest.mark.parametrize("name", sorted(ROWS))
def test_step_time_is_table_5s_mfu_of_the_artifacts_flop(name):
    assert HELD_OUT[name]["step_time_s"] == pytest.approx(published_step(*ROWS[name]), rel=1e-4)


@pytest.mark.parametrize(("s", "v"), EIGHT_GPU)
def test_table_5s_mfu_is_the_csv_throughput_over_320_tflops(s, v):
    tflops, mfu = CSV_STEP[(s, v)][1], TABLE_5[(8, s, v)][0]
    assert 100 * tflops * 1e12 / TABLE_5_PEAK == pytest.approx(mfu, abs=0.005 + 0.005 * 100 / 320)


@pytest.mark.parametrize(("s", "v"), EIGHT_GPU)
def test_held_out_step_is_the_csvs_step(s, v):
    step_ms, mfu = CSV_STEP[(s, v)][0], TABLE_5[(8, s, v)][0]
    name = f"vocabpar2024-1f1b-4b-8-a100-s{s}-v{v // 1000}k"
    assert HELD_OUT[name]["step_time_s"] == pytest.approx(step_ms * 1e-3, rel=0.005 / mfu + 0.05 / step_ms)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_simclusters_model_flop_is_the_artifacts(name):
    p, s, v = ROWS[name]
    tflops = validation.published_tflops(HELD_OUT[name], config.load(name))
    assert tflops * 1e12 / TABLE_5_PEAK * 100 == pytest.approx(TABLE_5[(p, s, v)][0], rel=1e-4)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_scenario_is_its_32k_twin_with_only_the_vocabulary_changed(name):
    p, s, v = ROWS[name]
    scenario, twin = config.load(name), config.load(name.rsplit("-v", 1)[0] + "-v32k")
    assert scenario.model.vocab == v and twin.model.vocab == 32000
    assert scenario.model.model_dump() | {"vocab": 32000} == twin.model.model_dump()
    assert (scenario.training, scenario.parallelism, scenario.cluster) == (twin.training, twin.parallelism,
                                                                           twin.cluster)
    assert (scenario.parallelism.tp, scenario.parallelism.pp, scenario.parallelism.dp) == (1, p, 1)
    assert (scenario.training.seq_len, scenario.training.global_batch_size) == (s, MICROBATCHES)


@pytest.mark.parametrize("setup", sorted(TABLE_5))
def test_published_peak_memory_is_flashattentions_count(setup):
    published = TABLE_5[setup][1]
    assert 0.95 < first_stage_gib(*setup, scores=False) / published < 1.0
    assert first_stage_gib(*setup, scores=True) / published > 1.5


@pytest.mark.parametrize("name", sorted(ROWS))
def test_memory_model_is_table_5s_peak_and_refuses_none(name):
    scenario = config.load(name)
    total = memory.per_gpu_memory(scenario).total_bytes
    assert total <= scenario.cluster.gpu.hbm_capacity  # every row ran
    assert total / 2**30 / TABLE_5[ROWS[name]][1] == pytest.approx(1, abs=0.12)
