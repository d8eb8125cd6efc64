"""The A100 80GB against the A100 40GB on one stack (docs/calibration/round-28.md, "Round 28: the A100 80GB rows against
the A100 40GB, part or stack").

Independent truth: llm-foundry's own benchmark tables (mosaicml/llm-foundry scripts/train/benchmarking/README.md,
"A100 80GB ..." and "A100 40GB with 1600 Gbps node-node interconnect (RoCE)"), the same MPT code on 8 GPUs of each
part: the published 80GB / 40GB throughput ratio of each model and sequence. On the nine pairs whose activation
checkpointing is the same on both parts (``CLEAN``) the published ratios are 1.048-1.094, so the parts' relative speed
in training is a measurement the model's per-part inputs (HBM bandwidth and its achievable fraction, the same
SMs, clock and peak) must reproduce whatever the stack's absolute error.

Tolerances: the two tables differ beyond the part (FSDP PURE against DEFAULT mixed precision, different micro batches,
different software dates), so one pair is held to 7% and the median of the nine to 3%. The median is what the
A100 80GB held-out bias (+5.6% median, 89 of 96 rows fast) would need to be a property of the part: a model that
over-credited the 80GB part by that much would put the median ratio error near +5% and fail here. It fails too at
the opposite: a 0.95 clock on the 80GB part alone (the what-if of round 26) puts the median near -6%. Nothing was
fitted to these rows.
"""

import statistics

import pytest
from scripts_loader import load_script


@pytest.fixture(scope="module")
def pairs():
    mod = load_script("a100_part_pairs")
    return mod, mod.table(mod.CLEAN)


def test_the_clean_pairs_are_the_rows_with_the_same_checkpointing(pairs):
    mod, _ = pairs
    assert len(mod.CLEAN) == 9
    assert all(mod.PAIRS[k]["80"][2] == mod.PAIRS[k]["40"][2] for k in mod.CLEAN)


def test_the_published_ratio_is_read_from_the_tables(pairs):
    _, rows = pairs
    ratios = {(r["model"], r["seq"]): r["published_ratio"] for r in rows}
    assert ratios[("3b", 2048)] == pytest.approx(10811 / 10065)
    assert min(ratios.values()) > 1.04 and max(ratios.values()) < 1.10


def test_each_clean_pair_ratio_within_7_percent(pairs):
    _, rows = pairs
    for r in rows:
        assert abs(r["ratio_error"]) < 0.07, (r["model"], r["seq"], r["ratio_error"])


def test_the_model_does_not_over_credit_the_80gb_part(pairs):
    _, rows = pairs
    median = statistics.median(r["ratio_error"] for r in rows)
    assert abs(median) < 0.03, median


def test_a_pair_scenario_keeps_the_parts_stack_and_takes_the_rows_shape(pairs):
    mod, _ = pairs
    d = mod.scenario_dict("3b", 4096, "40", 2, 8, False)
    assert d["cluster"]["gpu"] == "a100-40gb-sxm" and d["cluster"]["nodes"] == 1
    assert (d["model"]["layers"], d["model"]["hidden"], d["model"]["heads"]) == (32, 2560, 20)
    assert d["training"]["global_batch_size"] == 2 * 8 * 8 and d["training"]["seq_len"] == 4096
    assert d["training"]["attention"] == "flash_triton" and d["parallelism"]["zero_stage"] == 3
