"""Round 19 (docs/calibration/round-19.md, "Round 19: the MPT rows on H100, row by row"): the llm-foundry H100 rows that
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
about three collectives over the whole bf16 parameter set per microbatch (3 x 2 B x N x microbatches of collective
buffers, less the root's backward gather below), one reduce-scatter per unit and microbatch.

FSDP1's ``_post_forward_reshard`` does not free the ROOT unit's parameters after forward under FULL_SHARD
(``not state._is_root``), so the root unit (MPT's tied embedding and final norm) is not gathered again in backward:
FSDP1 runs 2 x units - 1 all-gathers a microbatch (round 19, "FSDP1 keeps the root unit gathered";
parallel/fsdp_runtime.py ``units_kept_after_forward``). Units are equal shares of the parameters in the engine, so
the gathered bytes are 2 N - N / units, where FSDP1 gathers 2 N - N_root (the embedding is 0.6% of N for MPT-70B,
8% for MPT-1B).
"""

import pytest
from llmfoundry_h100 import assert_published_tflops_are_the_rows, assert_scenario_is_row

from simcluster.engine import simulate
from simcluster.parallel import fsdp_runtime, memory
from simcluster.spec import config

# scenario -> (GPUs, micro batch, accumulation steps, global batch, activation checkpointing, tokens/s per GPU,
#              NumParams), as the README's H100 BF16 table prints them (sequence 2048 in every row)
TABLE = {
    "mpt-70b-64-h100": (64, 8, 4, 2048, True, 1039, 64862437376),
    "mpt-7b-8-h100": (8, 6, 1, 48, False, 10643, 6658859008),
    "mpt-1b-64-h100": (64, 20, 1, 1280, False, 44402, 1315950592),
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_scenario_is_the_tables_row(name):
    assert_scenario_is_row(name, TABLE[name])


@pytest.mark.parametrize("name", sorted(TABLE))
def test_published_tflops_are_the_tables_tokens_per_second_in_llm_foundrys_count(name):
    assert_published_tflops_are_the_rows(name, TABLE[name])


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
    assert len(gathers) == (2 * units - 1) * microbatches  # the root unit stays gathered into the backward
    assert len(reduces) == units * microbatches
    params = scenario.model.params
    assert gathers["bytes"].sum() == pytest.approx(2 * (2 - 1 / units) * params * microbatches, rel=1e-6)
    assert reduces["bytes"].sum() == pytest.approx(2 * params * microbatches, rel=1e-6)


def test_only_full_shard_fsdp1_keeps_its_root_unit_gathered():
    # torch 2.0-2.3 _post_forward_reshard: the root is kept under FULL_SHARD (zero_stage 3); SHARD_GRAD_OP
    # (zero_stage 2) keeps every unit, so nothing is gathered in the backward at all
    full_shard = config.load("mpt-13b-8-h100")
    assert fsdp_runtime.units_kept_after_forward(full_shard, 42) == 1
    shard_grad_op = full_shard.model_copy(update={"parallelism": full_shard.parallelism.model_copy(
        update={"zero_stage": 2})})
    assert fsdp_runtime.units_kept_after_forward(shard_grad_op, 42) == 0
