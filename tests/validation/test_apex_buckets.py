"""NeMo 1.x's Apex distributed Adam bucket layout (``grad_buckets: apex``) against Apex's and NeMo's arithmetic.

Apex DistributedFusedAdam (apex/contrib/optimizers/distributed_fused_adam.py): bucket_size = 1 MiB x bucket_cap_mb
/ grad dtype size elements (bucket_cap_mb 100 by default and in NeMo-Framework-Launcher's nemotron_15b.yaml), the
shard per rank floored to a multiple of 128 B, bucket = shard x ranks, every bucket communicated whole. NeMo 1.x's
``configure_optimizers`` (megatron_gpt_model.py) hands it one ``init_params_bucket`` group per Transformer layer and
adds the parameters of no layer to the first layer's group; Apex opens new buckets for each group. NeMo 1.x runs
Apex with grad_sync_dtype left at its fp32 state dtype and param_sync_dtype bf16 under megatron_amp_O2
(``setup_optimization``). So for Nemotron-4 15B at TP 8 (shape from arXiv 2402.16819, Table 1, counted here) each
layer's group is whole 100 MiB fp32 buckets, the first one also holding the embedding, output layer and final norm.
"""

from __future__ import annotations

import copy
import math

import pytest
from scripts_loader import load_script

from simcluster.core import catalog
from simcluster.core.errors import ScenarioError
from simcluster.engine import simulate
from simcluster.spec import config

TP = 8
CAP_BYTES = 100 * 2**20
H, FFN, LAYERS, VOCAB, KV = 6144, 24576, 32, 256_000, 8 * 128
LAYER = (H * (H + 2 * KV) + H * H + 2 * H * FFN) // TP + 2 * 2 * H   # split GEMM weights + two replicated LayerNorms
REST = 2 * VOCAB * H // TP + 2 * H                                  # input embedding, output layer, final norm


def apex_bucket(ranks: int, width: int = 4) -> int:
    shard = CAP_BYTES // width // ranks
    return (shard - shard % (128 // width)) * ranks


def expected_groups(ranks: int) -> list[int]:
    """Elements of each group in backward order: layers 31..1, then the first layer with the rest."""
    bucket = apex_bucket(ranks)
    return [math.ceil(LAYER / bucket) * bucket] * (LAYERS - 1) + [math.ceil((LAYER + REST) / bucket) * bucket]


def apex_scenario(gpus: int) -> config.Scenario:
    data = copy.deepcopy(catalog.load(f"scenarios/nemotron4-15b-{gpus}-h100"))
    data["parallelism"].pop("grad_bucket_size")
    data["parallelism"]["grad_buckets"] = "apex"
    return config.from_dict(data)


def test_apex_bucket_arithmetic_at_96_ranks():
    # 26,214,400 / 96 = 273,066.7 -> 273,066 -> 273,056 (multiple of 32 fp32 elements) -> x 96
    assert apex_bucket(96) == 26_213_376
    groups = expected_groups(96)
    assert groups[0] == 2 * 26_213_376                      # a layer's 48.8M: two buckets
    assert groups[-1] == 17 * 26_213_376                    # 442.0M with the embedding and output layer
    assert sum(groups) == 2_070_856_704


@pytest.fixture(scope="module")
def apex_768():
    scenario = apex_scenario(768)
    return scenario, simulate(scenario)


def test_resolved_bucket_is_apex_default(apex_768):
    scenario, _ = apex_768
    assert scenario.parallelism.grad_bucket_size == CAP_BYTES


def test_engine_reduces_and_gathers_the_padded_groups(apex_768):
    _, result = apex_768
    events = result.events
    comm = events[(events["rank"] == 0) & (events["kind"] == "comm")]
    rs = comm[comm["name"].str.startswith("grad reduce_scatter")]
    ag = comm[comm["name"].str.startswith("param all_gather")]
    groups = expected_groups(96)
    assert list(rs["bytes"]) == pytest.approx([4 * g for g in groups], rel=1e-9)
    # gathered in forward order: the first layer's group (with the embedding) first, as bf16
    assert list(ag["bytes"]) == pytest.approx([2 * g for g in reversed(groups)], rel=1e-9)


def test_megatron_cores_own_layout_by_default_and_equal_buckets_on_request():
    # the default on Megatron-Core (round 23): its own reverse walk, 34 buckets of the rank's parameters (counted
    # here; no padding at 96 ranks); grad_buckets: megatron keeps 32 equal ones
    total = LAYERS * LAYER + REST
    for buckets, expected in ((None, 34), ("megatron", LAYERS)):
        data = copy.deepcopy(catalog.load("scenarios/nemotron4-15b-768-h100"))
        if buckets:
            data["parallelism"]["grad_buckets"] = buckets
        events = simulate(config.from_dict(data)).events
        rs = events[(events["rank"] == 0) & events["name"].str.startswith("grad reduce_scatter")]
        assert len(rs) == expected
        assert rs["bytes"].sum() == pytest.approx(4 * total, rel=1e-12)
        if buckets:
            assert list(rs["bytes"]) == pytest.approx([4 * total / LAYERS] * LAYERS, rel=1e-9)


@pytest.mark.parametrize("change", [{"zero_stage": 0}, {"overlap_grad_reduce": False}])
def test_apex_refused_without_overlapped_distributed_optimizer(change):
    data = copy.deepcopy(catalog.load("scenarios/nemotron4-15b-768-h100"))
    data["parallelism"] |= {"grad_buckets": "apex", **change}
    data["parallelism"].pop("overlap_param_gather", None)
    with pytest.raises(ScenarioError, match="parallelism.grad_buckets"):
        config.from_dict(data)


def test_engine_matches_closed_form_chains(apex_768):
    """The step's exposed data-parallel time is the two chains against one forward and one backward: the script's
    closed form (all-gathers against the first forward split by layer, Apex's one-group prefetch; reduce-scatters as
    each layer's backward ends) over the same groups gives the engine's exposed time within 2 ms (0.7 ms found)."""
    script = load_script("dp_ring_scaling")
    _, result = apex_768
    fabric, group = script._rail(96)
    split = script.chain_split(result.events, 96, script.CX7.rate)
    groups = expected_groups(96)
    rs = [script._time_ms(fabric, group, "reduce_scatter", 4 * g)[0] / 1e3 for g in groups]
    ag = [script._time_ms(fabric, group, "all_gather", 2 * g)[0] / 1e3 for g in reversed(groups)]
    ag_exposed, rs_exposed = script.chain_exposed(split["fwd"], split["bwd"], ag, rs[::-1], prefetch_one=True)
    engine = result.summary["exposed_comm_by_parallelism_s"]["dp"]
    assert ag_exposed + rs_exposed == pytest.approx(engine, abs=2e-3)
    assert script.apex_groups(96) == groups[::-1]
