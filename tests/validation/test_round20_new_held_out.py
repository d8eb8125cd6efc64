"""Round 20's new held-out rows (docs/calibration/round-20.md, "Round 20: new held-out runs"): BigScience's 02-28-2022
layout benchmarks for BLOOM on 48 Jean Zay nodes of 8 A100 80GB (bigscience-workshop/bigscience,
train/tr11-176B-ml/chronicles-prequel.md, section "Rebalancing layers"), held to the other figures their source
publishes, so that a wrong shape, layout, batch or partition cannot pass unseen:

- Each row publishes Sec/it beside TFLOPs; Megatron-DeepSpeed's TFLOPs count the hardware FLOP with the recomputed
  forward, 96 B s l h^2 (1 + s/6h + V/16lh), which simcluster's ``hardware_flop_per_step`` equals for these GPT
  shapes: TFLOPs x 384 GPUs x the row's step time must be the scenario's FLOP a step (B = 2,048, s = 2,048,
  V = 250,880). Both columns carry 5 digits: 0.05% tolerance. It fails if a layer count, hidden size, vocabulary,
  batch, sequence or the recompute flag changes.
- The section's runs used the 'type:transformer|embedding' partition: each tied embedding takes a block's slot, so
  the first and last stage hold (layers + 2) / pp - 1 blocks and the others (layers + 2) / pp.
- The section's own twin of the production layout (70 x 14336, 112 heads, tp 4 pp 12 dp 8, micro batch 2; 104.50 s at
  iteration 2, 150.05 TFLOPs) is not a row: it is the production run, held out as bigscience-bloom-176b-384-a100
  (104.70 s at iteration 85,376, 149.77 TFLOPs), and both figures are the same FLOP a step within 0.05%.
"""

import pytest

from simcluster.spec import config
from simcluster.studies import validation
from simcluster.workload import moe

HELD_OUT = {c["scenario"]: c for c in validation.held_out_cases()}
GPUS = 384

# scenario -> (layers, hidden, heads, dp, tp, pp, micro batch, Sec/it, TFLOPs), the section's rows as published
ROWS = {
    "bigscience-prequel-195b-h64-tp4-pp12-mbs2-a100": (106, 12288, 64, 8, 4, 12, 2, 116.54, 149.75),
    "bigscience-prequel-195b-h96-tp4-pp12-mbs2-a100": (106, 12288, 96, 8, 4, 12, 2, 118.79, 146.90),
    "bigscience-prequel-195b-h128-tp4-pp12-mbs2-a100": (106, 12288, 128, 8, 4, 12, 2, 121.42, 143.73),
    "bigscience-prequel-195b-h96-tp4-pp12-mbs4-a100": (106, 12288, 96, 8, 4, 12, 4, 120.34, 145.01),
    "bigscience-prequel-184b-h64-tp8-pp6-mbs2-a100": (100, 12288, 64, 8, 8, 6, 2, 139.72, 117.91),
    "bigscience-prequel-184b-h64-tp8-pp6-mbs4-a100": (100, 12288, 64, 8, 8, 6, 4, 120.96, 136.20),
    "bigscience-prequel-178b-h64-tp8-pp12-mbs4-a100": (82, 13312, 64, 4, 8, 12, 4, 111.79, 141.76),
    "bigscience-prequel-178b-h64-tp4-pp12-mbs2-a100": (82, 13312, 64, 8, 4, 12, 2, 104.45, 151.71),
    "bigscience-prequel-178b-h104-tp4-pp12-mbs2-a100": (82, 13312, 104, 8, 4, 12, 2, 123.71, 128.10),
    "bigscience-prequel-178b-h128-tp4-pp12-mbs2-a100": (82, 13312, 128, 8, 4, 12, 2, 108.78, 145.68),
    "bigscience-prequel-178b-h64-tp4-pp12-mbs4-a100": (82, 13312, 64, 8, 4, 12, 4, 104.82, 151.18),
    "bigscience-prequel-203b-h128-tp4-pp12-mbs2-a100": (94, 13312, 128, 8, 4, 12, 2, 124.10, 146.12),
    "bigscience-prequel-176b-h64-tp8-pp12-mbs2-a100": (70, 14336, 64, 4, 8, 12, 2, 121.63, 128.92),
    "bigscience-prequel-176b-h64-tp4-pp12-mbs2-a100": (70, 14336, 64, 8, 4, 12, 2, 102.03, 153.68),
    "bigscience-prequel-176b-h128-tp4-pp12-mbs2-a100": (70, 14336, 128, 8, 4, 12, 2, 105.89, 148.08),
    "bigscience-prequel-176b-h64-tp4-pp12-mbs4-a100": (70, 14336, 64, 8, 4, 12, 4, 102.27, 153.33),
}
PRODUCTION = "bigscience-bloom-176b-384-a100"
TWIN_STEP_S, TWIN_TFLOPS = 104.50, 150.05  # the section's 70 x 14336, 112 heads, tp 4 pp 12 dp 8, micro batch 2


def flop_per_step(scenario: config.Scenario) -> float:
    t = scenario.training
    return moe.hardware_flop_per_step(scenario.model, t.seq_len, t.global_batch_size, t.activation_recompute)


def test_round_20_rows_are_held_out_with_their_source():
    prequel = {name for name in HELD_OUT if name.startswith("bigscience-prequel-")}
    assert prequel == set(ROWS)
    for name in ROWS:
        assert HELD_OUT[name]["source"] == "bigscience_bloom_prequel"
    assert "bigscience_bloom_prequel" in validation.sources()


@pytest.mark.parametrize("name", sorted(ROWS))
def test_scenario_is_the_published_row(name):
    layers, hidden, heads, dp, tp, pp, micro, step_s, _ = ROWS[name]
    scenario = config.load(name)
    m, t, p = scenario.model, scenario.training, scenario.parallelism
    assert (m.layers, m.hidden, m.heads, m.vocab) == (layers, hidden, heads, 250880)
    assert (p.dp, p.tp, p.pp, t.micro_batch_size) == (dp, tp, pp, micro)
    assert (t.global_batch_size, t.seq_len, scenario.cluster.gpus) == (2048, 2048, GPUS)
    assert (t.precision, t.activation_recompute, p.zero_stage, p.pipeline_engine) == ("bf16", "full", 1, "deepspeed")
    assert HELD_OUT[name]["step_time_s"] == step_s


@pytest.mark.parametrize("name", sorted(ROWS))
def test_published_tflops_are_the_hardware_flop_of_the_published_step(name):
    *_, step_s, tflops = ROWS[name]
    assert flop_per_step(config.load(name)) == pytest.approx(tflops * 1e12 * GPUS * step_s, rel=5e-4)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_partition_gives_each_embedding_a_blocks_slot(name):
    layers, *_ = ROWS[name]
    p = config.load(name).parallelism
    per = (layers + 2) // p.pp
    assert per * p.pp == layers + 2
    assert list(p.layers_per_stage) == [per - 1] + [per] * (p.pp - 2) + [per - 1]


def test_the_sections_twin_of_the_production_layout_is_the_production_runs_flop():
    production = config.load(PRODUCTION)
    flop = flop_per_step(production)
    assert flop == pytest.approx(TWIN_TFLOPS * 1e12 * GPUS * TWIN_STEP_S, rel=5e-4)
    assert HELD_OUT[PRODUCTION]["step_time_s"] == pytest.approx(TWIN_STEP_S, rel=0.002)  # iteration 2 vs 85,376


def test_deepspeeds_engine_runs_fewer_microbatches_than_stages():
    """BLOOM's ramp-up ran global batch 16 on the production layout (tr11 README: 15.23 s at iteration 3,707), one
    microbatch a replica on 12 stages; DeepSpeed's TrainSchedule runs it. The scenario that row needs must simulate."""
    import yaml
    from scenario_data import with_changes

    from simcluster.engine import simulate

    data = yaml.safe_load((config.bundled_dir() / f"{PRODUCTION}.yaml").read_text())
    assert simulate(with_changes(data, training__global_batch_size=16)).summary["step_time_s"] > 0


GBS16 = "bigscience-bloom-176b-384-a100-gbs16"


def test_the_gbs16_row_is_the_production_scenario_at_the_logged_batch():
    """README log line: 15.23 s and 8.04 TFLOPs at global batch 16 on the production layout; the scenario differs
    from the production one only in the global batch (one microbatch of 2 a replica)."""
    row, production = config.load(GBS16), config.load(PRODUCTION)
    assert HELD_OUT[GBS16]["step_time_s"] == 15.23
    assert HELD_OUT[GBS16]["source"] == "bigscience_bloom_gbs16"
    assert row.training.global_batch_size == 16
    assert row.training.global_batch_size == row.parallelism.dp * row.training.micro_batch_size
    assert row.microbatches == 1 < row.parallelism.pp
    # but for BLOOM's layer-norm syncs, on in the production run from 2022-03-24 (round 29), after the batch-16 run
    assert row.parallelism.model_copy(update={"layernorm_tp_auto_sync": True}) == production.parallelism
    assert production.parallelism.layernorm_tp_auto_sync and not row.parallelism.layernorm_tp_auto_sync
    assert row.model == production.model
    assert row.cluster == production.cluster
    assert flop_per_step(row) == pytest.approx(8.04 * 1e12 * GPUS * 15.23, rel=1e-3)
