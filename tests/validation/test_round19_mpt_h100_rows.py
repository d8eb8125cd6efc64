"""Round 19 (docs/calibration.md, "Round 19: the MPT rows on H100, row by row"): the llm-foundry H100 rows that
round 16's table check does not cover, and the FSDP traffic per step that separates the rows simulated fast from
the ones that fit.

Source of the rows: mosaicml/llm-foundry, scripts/train/benchmarking/README.md (commit 061f2c7c), table "H100 80GB
BF16": GPUs, micro batch, gradient accumulation, global batch, activation checkpointing, tokens/s per GPU
("Throughput (T/s/GPU)", an integer) and "NumParams" as printed. The other eight H100 rows are checked by
tests/validation/test_round16_llmfoundry_h100.py.

The traffic: PyTorch FSDP1 (torch 2.1 torch/distributed/fsdp/_runtime_utils.py) under FULL_SHARD frees each unit's
gathered parameters after its forward (reshard after forward), so ``_pre_backward_hook`` all-gathers the unit again,
and ``_post_backward_hook`` reduce-scatters its gradient; Composer (composer/trainer/trainer.py
``_train_microbatches``, composer/distributed/dist_strategy.py ``ddp_sync_context``) skips gradient sync only for a
DistributedDataParallel model, so an FSDP model reduce-scatters on every microbatch. Per step a rank therefore runs
three collectives over the whole bf16 parameter set per microbatch: 3 x 2 B x N x microbatches of collective
buffers, and twice as many all-gathers as reduce-scatters, one of each per unit and microbatch.
"""

import pytest

from simcluster.engine import simulate
from simcluster.parallel import memory
from simcluster.spec import config
from simcluster.studies import validation

HELD_OUT = {c["scenario"]: c for c in validation.held_out_cases()}

# scenario -> (GPUs, micro batch, accumulation steps, global batch, activation checkpointing, tokens/s per GPU,
#              NumParams), as the README's H100 BF16 table prints them (sequence 2048 in every row)
TABLE = {
    "mpt-70b-64-h100": (64, 8, 4, 2048, True, 1039, 64862437376),
    "mpt-7b-8-h100": (8, 6, 1, 48, False, 10643, 6658859008),
    "mpt-1b-64-h100": (64, 20, 1, 1280, False, 44402, 1315950592),
}
SEQ = 2048
TOKENS_ROUNDING = 0.003  # tokens/s per GPU printed as an integer (1039 at the smallest: 0.05%), MFU to 2 decimals


@pytest.mark.parametrize("name", sorted(TABLE))
def test_scenario_is_the_tables_row(name):
    gpus, micro, accum, global_batch, checkpointing, _, params = TABLE[name]
    scenario = config.load(name)
    t, p = scenario.training, scenario.parallelism
    assert HELD_OUT[name]["source"] == "llmfoundry" and HELD_OUT[name]["metric"] == "model"
    assert scenario.cluster.gpus == gpus and scenario.cluster.gpu.name == "h100-sxm"
    assert (t.seq_len, t.micro_batch_size, t.global_batch_size, t.precision) == (SEQ, micro, global_batch, "bf16")
    assert global_batch == gpus * micro * accum
    assert t.activation_recompute == ("full" if checkpointing else "none")
    assert (p.tp, p.pp, p.dp, p.zero_stage) == (1, 1, gpus, 3)  # FULL_SHARD over all GPUs
    assert scenario.model.params == params


@pytest.mark.parametrize("name", sorted(TABLE))
def test_published_tflops_are_the_tables_tokens_per_second_in_llm_foundrys_count(name):
    *_, tokens_per_gpu, params = TABLE[name]
    model = config.load(name).model
    flop_per_token = 6 * params + 12 * model.layers * model.hidden * SEQ  # the README's MFU formula
    assert HELD_OUT[name]["tflops_per_gpu"] * 1e12 == pytest.approx(tokens_per_gpu * flop_per_token,
                                                                    rel=TOKENS_ROUNDING)


# one row per (transport, accumulation) kind: one node and one microbatch, two nodes and three, eight nodes and
# four, and an A100 row with two
@pytest.mark.parametrize("name", ["mpt-13b-8-h100", "mpt-30b-16-h100", "mpt-70b-64-h100", "mpt-7b-8-a100-80gb"])
def test_full_shard_gathers_and_reduces_every_parameter_on_every_microbatch(name):
    scenario = config.load(name)
    result = simulate(scenario, check_memory=False)
    microbatches = result.summary["microbatches"]
    assert microbatches == scenario.training.global_batch_size // (
        scenario.cluster.gpus * scenario.training.micro_batch_size)
    events = result.events
    fsdp = events[(events["rank"] == events["rank"].min()) & (events["stream"] == "dp")]
    gathers = fsdp[fsdp["name"].str.contains("all_gather")]
    reduces = fsdp[fsdp["name"].str.contains("reduce_scatter")]
    units = memory.zero3_units(scenario.model, scenario.model.layers, True, True, 1)
    assert len(gathers) == 2 * units * microbatches
    assert len(reduces) == units * microbatches
    params = scenario.model.params
    assert gathers["bytes"].sum() == pytest.approx(2 * 2 * params * microbatches, rel=1e-6)
    assert reduces["bytes"].sum() == pytest.approx(2 * params * microbatches, rel=1e-6)
