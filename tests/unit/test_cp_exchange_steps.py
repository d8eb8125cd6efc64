"""Context parallelism's key/value exchange as Transformer Engine's p2p loop hides it (parallel/plan.py
``context_parallel_exchange``; docs/calibration/round-19.md "Round 19").

TE 1.x ``AttnFuncWithCP`` (transformer_engine/pytorch/attention.py): cp attention steps of equal work; forward, step
i posts the exchange of the K/V block step i+1 needs and step i+1 waits for it, the last step has none; backward, each
step posts its exchange (K/V, K/V with dK/dV, dK/dV) and waits for it before it ends. So a forward exchange hides
behind one step, (cp - 1) / cp of the attention in all; the backward's behind all cp steps."""

from __future__ import annotations

import pytest
import yaml
from scenario_data import with_changes

from simcluster.collectives import timing
from simcluster.engine import Simulation
from simcluster.parallel import plan
from simcluster.spec import config
from simcluster.workload import kernels
from simcluster.workload.ops import attention_core, shard_for

# Llama 3 8B: 8 key/value heads of 128 (GQA), bf16 activations
LLAMA3_8B_KV_HIDDEN = 8 * 128
BF16_BYTES = 2
LLAMA3_8B_FP8 = "nemo2407-llama3-8b-8-h100-fp8"


def _bundled(name: str) -> dict:
    return yaml.safe_load(config.resolve_path(name).read_text())


def _attention_s(scenario) -> dict[str, float]:
    """One layer's core attention time per phase on the scenario's GPU, as the kernel model times it."""
    forward, backward = attention_core(scenario.model, shard_for(scenario))
    gpu, precision = scenario.cluster.gpu, scenario.training.precision
    return {"forward": kernels.ops_time_s(forward, gpu, precision),
            "backward": kernels.ops_time_s(backward, gpu, precision)}


def test_llama3_8b_cp2_exchange_in_closed_form():
    """nemo2407-llama3-8b-8-h100-fp8 (sequence 8192, cp 2): one ring step a phase; forward the rank's K and V
    (2 x 4,096 tokens x 1,024 x 2 bytes) behind half the attention (the first of two steps), backward twice the
    bytes behind all of it."""
    scenario = config.load(LLAMA3_8B_FP8)
    exchange = plan.context_parallel_exchange(scenario)
    kv_bytes = 2 * (8192 // 2) * LLAMA3_8B_KV_HIDDEN * BF16_BYTES
    attention = _attention_s(scenario)
    assert exchange["forward"] == pytest.approx((attention["forward"] / 2, 1, kv_bytes), rel=1e-12)
    assert exchange["backward"] == pytest.approx((attention["backward"], 1, 2 * kv_bytes), rel=1e-12)


@pytest.mark.parametrize("cp", [2, 4, 8])
def test_forward_exchange_hides_behind_all_but_the_last_step(cp):
    """cp-1 forward exchanges, each beside one of cp equal steps: (cp - 1) / cp of the attention; the backward's
    2(cp-1) K/V blocks of bytes behind all of it."""
    scenario = with_changes(_bundled(LLAMA3_8B_FP8), parallelism__cp=cp, parallelism__dp=8 // cp)
    exchange = plan.context_parallel_exchange(scenario)
    attention = _attention_s(scenario)
    assert exchange["forward"][0] == pytest.approx(attention["forward"] * (cp - 1) / cp, rel=1e-12)
    assert exchange["forward"][1] == cp - 1
    assert exchange["backward"][0] == pytest.approx(attention["backward"], rel=1e-12)
    assert exchange["backward"][1] * exchange["backward"][2] == pytest.approx(
        2 * (cp - 1) * exchange["forward"][2], rel=1e-12)


def test_te_per_step_exposure_equals_the_charged_one():
    """TE's exposure, step by step (each exchange against its own step's attention a/cp), equals what the charge
    gives (the ring's cp-1 steps against the attention passed) for exchanges all shorter or all longer than a step:
    forward sum_{i < cp-1} max(0, x - a/cp) = max(0, (cp-1) x - (cp-1)/cp a); backward x, 2x .. 2x, x against a/cp
    each = max(0, (cp-1) 2x - a)."""
    a = 1.0
    for cp in (2, 4, 8):
        step = a / cp
        hidden_fwd = (cp - 1) / cp * a
        for x in (0.1 * step, 0.9 * step, 1.5 * step, 3.0 * step):
            te_forward = (cp - 1) * max(0.0, x - step)
            assert max(0.0, (cp - 1) * x - hidden_fwd) == pytest.approx(te_forward, abs=1e-12)
            backward = [x] + [2 * x] * (cp - 2) + [x]
            te_backward = sum(max(0.0, b - step) for b in backward)
            if all(b <= step for b in backward) or all(b >= step for b in backward):
                assert max(0.0, (cp - 1) * 2 * x - a) == pytest.approx(te_backward, abs=1e-12)


def test_cross_node_forward_exchange_exposed_beyond_one_step(small_scenario):
    """Two nodes of one GPU, cp 2 (the exchange on the NIC): each microbatch's forward exposes its exchange minus
    half the layers' forward attention, timed independently of the plan's tuple; with the whole attention (the
    charge before round 19) less would be exposed."""
    spec = with_changes(small_scenario, cluster__nodes=2, cluster__gpus_per_node=1, parallelism__tp=1,
                        parallelism__pp=1, parallelism__dp=1, parallelism__cp=2, parallelism__tp_comm_overlap=False,
                        parallelism__overlap_grad_reduce=False, parallelism__overlap_param_gather=False,
                        training__seq_len=8192, training__global_batch_size=2)
    sim = Simulation(spec)
    summary = sim.run().summary
    attention = _attention_s(spec)
    layers = spec.model.layers
    expected = whole = 0.0
    for chunk in sim.plan.chunks:
        for phase, (_, steps, step_bytes) in chunk.cp_exchange.items():
            exchange_s = steps * timing.isolated_time_s(sim.fabric, "sendrecv_ring", (0, 1), step_bytes)
            share = 0.5 if phase == "forward" else 1.0
            expected += max(0.0, exchange_s - share * layers * attention[phase])
            whole += max(0.0, exchange_s - layers * attention[phase])
    expected *= sim.plan.microbatches
    whole *= sim.plan.microbatches
    assert expected > whole
    assert summary["exposed_comm_by_parallelism_s"]["cp"] == pytest.approx(expected, rel=1e-9)
