"""A whole simulated MoE step never moves its blocking expert-parallel all-to-alls faster than the links allow.

For MoE zoo Qwen3-235B layouts whose dispatch and combine block the compute stream, the step's exposed EP time (the
engine's, on the flow network, with the model's routing and load; a mean over GPUs) is at least a stage's all-to-alls
on the mean over stages at the line-rate floor (``deepep.line_rate_floor_s`` x 4 a MoE layer and microbatch, 6 with
full recompute: ``scripts/ep_floor.py``), and within 2.5x of it (NCCL's link efficiencies, DeepEP's SM-bound
intranode rate, the busiest rank's load and the latencies are all the excess there is). Physics of the engine only:
no published figure enters (docs/calibration/round-15.md, "Round 15: the MoE zoo's Qwen3 rows"). The DeepEP rows only:
the alltoall dispatcher's row (PP 32, 86 s to simulate) is left out; its every-copy floor is
``tests/unit/test_deepep_floor.py::test_every_copy_without_deduplication``.
"""

from __future__ import annotations

import pytest
from scripts_loader import load_script


@pytest.mark.parametrize("name", ["moezoo-qwen3-235b-256-h100-deepep", "moezoo-qwen3-235b-256-h100-fsdp"])
def test_blocking_alltoalls_take_at_least_their_line_rate_floor(name):
    row = load_script("ep_floor").row(name)
    assert not row["overlap"]
    assert row["floor_step_s"] <= row["exposed_ep_s"] <= 2.5 * row["floor_step_s"]
