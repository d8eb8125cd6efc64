"""scripts/pipeline_terms.py with TP overlap off: the backward blocks hold the wait on the async TP collectives that
outlast their GEMMs (``ChunkCost.tp_async_exposed_s``, run by the engine inside the backward block after its
compute, engine.agents), so the stage's block time, its own term and the bubble's closed form (pp - 1)(t_f + t_b)
count it. Closed form: layers x microbatches x the per-layer exposure (``async_backward.exposed_s``)."""

import pytest
from scripts_loader import load_script

from simcluster.collectives import timing
from simcluster.engine import Simulation
from simcluster.spec import config
from simcluster.spec.model import TransformerSpec
from simcluster.workload import async_backward
from simcluster.workload.ops import layer_ops, shard_for

# hidden 2048 (8 KV heads) at tp 8: the input re-gathers outlast the QKV dgrad GEMMs beside them (test_async_backward)
SMALL = TransformerSpec(layers=8, hidden=2048, heads=16, kv_heads=8, ffn_hidden=8192, vocab=32000, mlp="gelu",
                        norm="layernorm", position="rope", dropout=False)


@pytest.fixture(scope="module")
def pipeline_terms():
    return load_script("pipeline_terms")


@pytest.fixture(scope="module")
def scenario():
    return config.from_dict({
        "name": "async-backward-pp",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2, "topology": "rail-fat-tree"},
        "model": SMALL.model_dump(mode="json"),
        "training": {"seq_len": 8192, "global_batch_size": 8, "micro_batch_size": 2, "precision": "bf16"},
        "parallelism": {"tp": 8, "pp": 2, "dp": 1, "sequence_parallel": True, "zero_stage": 1,
                        "tp_comm_overlap": False}})


def exposed_per_layer_s(scenario) -> float:
    """A layer's async TP exposure from its ops (``async_backward.exposed_s``): QKV and fc1 beside the input
    all-gather and the dgrad reduce-scatter of one microbatch's bf16 activation, each timed alone on the TP group."""
    sim = Simulation(scenario, check_memory=False)
    t = scenario.training
    activation_bytes = t.seq_len * t.micro_batch_size * scenario.model.hidden * 2
    group = tuple(sim.plan.layout.group(0, "tp"))
    comm_s = {op: timing.isolated_time_s(sim.fabric, op, group, activation_bytes)
              for op in ("all_gather", "reduce_scatter")}
    layer = layer_ops(scenario.model, shard_for(scenario))
    return async_backward.exposed_s(layer, 2, True, scenario.cluster.gpu, t.precision, comm_s)


def test_stage_terms_count_the_async_wait_and_still_sum_to_the_blocks(pipeline_terms, scenario):
    per_layer = exposed_per_layer_s(scenario)
    assert per_layer > 0
    terms, facts = pipeline_terms.stage_terms(scenario)
    assert terms[pipeline_terms.ASYNC_TP] == pytest.approx(facts["layers"] * facts["microbatches"] * per_layer,
                                                           rel=1e-9)
    check = terms.pop("check: plan blocks - terms")
    assert abs(check) <= 1e-9 * sum(terms.values())


def test_bubble_closed_form_blocks_hold_the_async_wait(pipeline_terms, scenario):
    terms, facts = pipeline_terms.bubble_terms(scenario)
    middle = Simulation(scenario, check_memory=False).plan.chunks[1]
    t_f, t_b = middle.forward_compute_s, middle.backward_compute_s + middle.tp_async_exposed_s
    assert middle.tp_async_exposed_s > 0
    assert middle.tp_async_exposed_s == pytest.approx(middle.layers * exposed_per_layer_s(scenario), rel=1e-9)
    assert dict(terms)["(a) closed form, plan blocks: (pp-1)(t_f+t_b)"] == pytest.approx((facts["pp"] - 1)
                                                                                       * (t_f + t_b), rel=1e-9)
