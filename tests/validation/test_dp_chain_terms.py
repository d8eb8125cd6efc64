"""What grows with the data-parallel size in Nemotron-4 15B's batch ramp (docs/calibration/round-30.md, "Round 30: what
grows with the data-parallel size"; ``scripts/dp_ring_scaling.py --terms``).

Table 2 of the report (arXiv 2402.16819) ramps the batch with DP (384 / 768 / 1,152 on DP 96 / 192 / 288), four
sequences a replica at every stage, so the per-GPU work is fixed and only the rings widen. Each data-parallel group has
one GPU a node (TP 8), so every collective is a ring of n = DP ranks through one NIC. Closed forms written here:
- wire: a ring reduce-scatter or all-gather moves (n-1)/n of the buffer through each NIC (Patarasuk and Yuan 2009), at
  47 GB/s a 400 Gb/s NIC (NVIDIA/nccl-tests#290); the rank's bytes are 4 B (fp32 gradients) and 2 B (bf16 parameters)
  of its parameters, counted from the model's shape in test_dp_exposure_floor.py;
- ring latency of an LL128 ring at one GPU a node: NCCL's baseLat Ring LL128 14.0 us once, and per network step the
  Tree row's NET LL128 latency 8.5 us ("With ppn=1 latencies are fully exposed, use the Tree network latency",
  NVIDIA/nccl src/graph/tuning.cc, 2.23-2.28), n-1 steps each, nothing hidden (one slice a step);
- a Simple ring whose step transfer c exceeds twice NCCL's 14 us NET latency hides it in every step but the first
  (two slices a chunk, round 15): about base 8.4 us + one 14 us step above its wire time.
The tests fail if the chains' growth came from anything but these rings' latency (the wire growing beyond (n-1)/n,
compute or host gaps moving with DP, or part of the chains hidden behind compute)."""

from __future__ import annotations

import pytest
from scripts_loader import load_script
from test_dp_exposure_floor import nemotron4_15b_params_per_rank

from simcluster.engine import simulate
from simcluster.spec import config

dp_ring_scaling = load_script("dp_ring_scaling")

NIC_BUSBW = 47e9
LL128_BASE_S, LL128_PPN1_STEP_S = 14.0e-6, 8.5e-6
SIMPLE_BASE_S, SIMPLE_STEP_S = 8.4e-6, 14.0e-6
ROWS = {96: "nemotron4-15b-768-h100", 192: "nemotron4-15b-1536-h100", 288: "nemotron4-15b-2304-h100"}


@pytest.fixture(scope="module")
def runs():
    out = {}
    for ranks, name in ROWS.items():
        scenario = config.load(name)
        result = simulate(scenario, check_memory=False)
        out[ranks] = (result.summary, dp_ring_scaling.chain_terms(scenario, result.events))
    return out


@pytest.mark.parametrize("ranks", sorted(ROWS))
def test_wire_is_the_ring_bytes_at_the_nic_rate(runs, ranks):
    params = nemotron4_15b_params_per_rank()
    terms = runs[ranks][1]
    for op, width in (("reduce_scatter", 4), ("all_gather", 2)):
        want = width * params * (ranks - 1) / ranks / NIC_BUSBW
        assert terms[op]["wire"] == pytest.approx(want, rel=5e-3), op   # buckets padded to a multiple of DP


@pytest.mark.parametrize("ranks", sorted(ROWS))
def test_latency_is_the_ll128_rings_steps(runs, ranks):
    """The chains' time above wire and protocol discount is the LL128 buckets' base + (n-1) network steps, plus at
    most one unhidden Simple step and base for each Simple bucket."""
    for op, terms in runs[ranks][1].items():
        ll128 = terms["protocols"].get("LL128", 0)
        simple = terms["protocols"].get("Simple", 0)
        want = ll128 * (LL128_BASE_S + (ranks - 1) * LL128_PPN1_STEP_S)
        assert want <= terms["latency"] <= want + simple * (SIMPLE_BASE_S + 2 * SIMPLE_STEP_S), op


def test_what_grows_is_exposed_ring_latency(runs):
    """From 96 to 192 to 288 ranks the compute, host gaps, interference and wire stay (wire by (n-1)/n only) and the
    exposed data-parallel time grows by the chains' growth: both chains outlast the compute they overlap."""
    base_summary, base_terms = runs[96]
    for ranks in (192, 288):
        summary, terms = runs[ranks]
        assert summary["compute_s"] == pytest.approx(base_summary["compute_s"], rel=1e-3)
        assert summary["comm_interference_s"] == pytest.approx(base_summary["comm_interference_s"], rel=1e-3)
        chain_growth = sum(terms[op]["chain"] - base_terms[op]["chain"] for op in terms)
        wire_growth = sum(terms[op]["wire"] - base_terms[op]["wire"] for op in terms)
        exposed = summary["exposed_comm_by_parallelism_s"]["dp"]
        exposed_growth = exposed - base_summary["exposed_comm_by_parallelism_s"]["dp"]
        assert wire_growth < 2e-3
        assert exposed_growth == pytest.approx(chain_growth, abs=1e-3)
        assert chain_growth > 0.04   # the published steps grow 10 ms (192 ranks) and 70 ms (288): the model more
