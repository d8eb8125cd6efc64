"""mosaicml/llm-foundry's benchmarking table "H100 80GB BF16" (scripts/train/benchmarking/README.md, commit
061f2c7c) as the validation tests hold the MPT scenarios against it (tests/validation/test_round16_llmfoundry_h100.py,
tests/validation/test_round19_mpt_h100_rows.py, and with the GPU given, the A100 tables' rows in
tests/validation/test_round37_mpt_a100_rows.py; ``tests/`` is on the path as the conftest's folder).

A row, as the table prints it: (GPUs, micro batch, gradient accumulation steps, global batch, activation
checkpointing, tokens/s per GPU ("Throughput (T/s/GPU)", an integer), "NumParams"); sequence 2048 in every row.
"""

from __future__ import annotations

import pytest

from simcluster.spec import config
from simcluster.studies import validation

SEQ = 2048
# tokens/s per GPU printed as an integer (882 at the smallest of the table's H100 rows: 0.06%), MFU to 2 decimals
TOKENS_ROUNDING = 0.003

HELD_OUT = {c["scenario"]: c for c in validation.held_out_cases()}


def flop_per_token(model, params: int) -> float:
    """llm-foundry's model FLOP per token, the README's MFU formula: 6 N + 12 L d s."""
    return 6 * params + 12 * model.layers * model.hidden * SEQ


def assert_scenario_is_row(name: str, row: tuple, gpu: str = "h100-sxm") -> None:
    """The bundled scenario ``name`` runs the table's row on ``gpu`` (the A100 tables' rows too, round 37): held out
    with its source, its GPUs, batch, checkpointing and parameter count, FULL_SHARD over every GPU, and global batch
    = GPUs x micro batch x accumulation steps."""
    gpus, micro, accum, global_batch, checkpointing, _, params = row
    assert HELD_OUT[name]["source"] == "llmfoundry" and HELD_OUT[name]["metric"] == "model", name
    scenario = config.load(name)
    t, p = scenario.training, scenario.parallelism
    assert scenario.cluster.gpus == gpus and scenario.cluster.gpu.name == gpu
    assert (t.seq_len, t.micro_batch_size, t.global_batch_size, t.precision) == (SEQ, micro, global_batch, "bf16")
    assert global_batch == gpus * micro * accum
    assert t.activation_recompute == ("full" if checkpointing else "none")
    assert (p.tp, p.pp, p.dp, p.zero_stage) == (1, 1, gpus, 3)  # FULL_SHARD over all GPUs
    assert scenario.model.params == params


def assert_published_tflops_are_the_rows(name: str, row: tuple) -> float:
    """The held-out TFLOP/s per GPU is the row's tokens/s per GPU in llm-foundry's FLOP count, within the rounding
    of the printed integer; returns the FLOP per token."""
    *_, tokens_per_gpu, params = row
    per_token = flop_per_token(config.load(name).model, params)
    assert tokens_per_gpu * per_token / 1e12 == pytest.approx(HELD_OUT[name]["tflops_per_gpu"], rel=TOKENS_ROUNDING)
    return per_token
