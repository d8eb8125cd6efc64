"""Several jobs on one fabric (spec.jobs, engine.jobs): contention only where their traffic shares a link, the
max-min fair share where it does, and each job's slowdown against running alone on the same nodes."""

import copy
import json

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.engine import jobs as engine_jobs
from simcluster.engine import simulate
from simcluster.spec import config
from simcluster.spec import jobs as spec_jobs

# a bandwidth-bound job: two nodes of 2 GPUs, TP inside the node, the gradient all-reduce across the nodes after the
# backward (no overlap), so the step is compute + TP + DP communication one after the other
JOB = {"model": "gpt3-1.3b", "training": {"seq_len": 2048, "global_batch_size": 8, "micro_batch_size": 1},
       "parallelism": {"tp": 2, "dp": 2, "overlap_grad_reduce": False, "tp_comm_overlap": False,
                       "overlap_param_gather": False}}
# four 2-GPU nodes, two per leaf (hosts_per_leaf counts NICs), each leaf's one uplink to one spine 4:1 oversubscribed
# (4 NICs down, the capacity of 1 up): the one link a cross-leaf job must share
LEAF_SPINE = {"gpu": "h100-sxm", "gpus_per_node": 2, "nodes": 4, "topology": "leaf-spine",
              "topology_options": {"hosts_per_leaf": 4, "spines": 1, "oversubscription": 4}}
CONTIGUOUS = ({"first_node": 0}, {"first_node": 2})             # a: leaf 0, b: leaf 1
INTERLEAVED = ({"first_node": 0, "stride": 2}, {"first_node": 1, "stride": 2})  # a: nodes 0, 2; b: 1, 3


def document(cluster, placements, job=JOB):
    return {"name": "t", "cluster": copy.deepcopy(cluster),
            "jobs": [{"name": name, **copy.deepcopy(job), "placement": dict(placement)}
                     for name, placement in zip("ab", placements, strict=False)]}


def run(doc):
    return engine_jobs.run(spec_jobs.from_dict(doc))


NON_BLOCKING = [
    # rail-optimised fat-tree of radix 4: a rail's leaf takes 2 servers, so each job has its own leaves
    {"gpu": "h100-sxm", "gpus_per_node": 2, "nodes": 4, "topology": "rail-fat-tree", "topology_options": {"radix": 4}},
    # 1:1 leaf-spine, one node per leaf: each job's all-reduce crosses the spines, on its own leaves' uplinks
    {"gpu": "h100-sxm", "gpus_per_node": 2, "nodes": 4, "topology": "leaf-spine",
     "topology_options": {"hosts_per_leaf": 2, "oversubscription": 1}},
]


@pytest.mark.parametrize("cluster", NON_BLOCKING, ids=["rail-fat-tree", "leaf-spine"])
def test_jobs_on_disjoint_leaves_of_a_non_blocking_fat_tree_do_not_slow_each_other(cluster):
    result = run(document(cluster, CONTIGUOUS))
    # the independent truth: alone, the two jobs load disjoint sets of links (and some beyond their nodes' NICs)
    used = [set(alone.links["link_id"]) for alone in result.alone]
    assert used[0] and used[1] and not used[0] & used[1]
    for row in result.rows:
        assert row["slowdown"] == pytest.approx(1.0, rel=1e-12, abs=0)
        assert row["step_time_s"] > 0


def test_contiguous_jobs_on_an_oversubscribed_leaf_spine_share_no_link():
    result = run(document(LEAF_SPINE, CONTIGUOUS))
    assert [row["slowdown"] for row in result.rows] == pytest.approx([1.0, 1.0], rel=1e-12, abs=0)


def test_interleaved_jobs_each_get_half_the_shared_uplink():
    # both jobs' gradient all-reduces cross both leaves' one uplink at once: max-min fairness gives each job half
    # of it, so each job's data-parallel communication takes what it takes alone with half the uplink (8:1)
    together = run(document(LEAF_SPINE, INTERLEAVED))
    half = copy.deepcopy(LEAF_SPINE)
    half["topology_options"]["oversubscription"] = 8
    alone_on_half = run(document(half, INTERLEAVED[:1]))
    dp = [r.summary["exposed_comm_by_parallelism_s"]["dp"] for r in together.together]
    dp_alone = [r.summary["exposed_comm_by_parallelism_s"]["dp"] for r in together.alone]
    assert dp[0] == dp[1]  # identical jobs in phase: a fair share each
    assert dp[0] == pytest.approx(alone_on_half.together[0].summary["exposed_comm_by_parallelism_s"]["dp"], rel=1e-9)
    # closed form: the bandwidth part doubles, the latency part (alpha, under 1% here) does not
    assert 1.98 < dp[0] / dp_alone[0] <= 2.0
    # compute and the TP traffic inside the nodes are untouched; the step slows by the extra DP time only
    row = together.rows[0]
    assert row["step_time_s"] - row["step_time_alone_s"] == pytest.approx(dp[0] - dp_alone[0], rel=1e-9)
    assert row["slowdown"] > 1.2


def test_one_job_placed_on_its_own_cluster_equals_the_ordinary_simulation():
    doc = document({**LEAF_SPINE, "nodes": 2}, ({"first_node": 0},))
    placed = spec_jobs.from_dict(doc)
    result = engine_jobs.run(placed)
    plain = simulate(placed.jobs[0].scenario)
    assert result.rows[0]["step_time_s"] == plain.summary["step_time_s"]
    assert result.rows[0]["slowdown"] == 1.0


def test_placement_maps_ranks_to_nodes():
    placed = spec_jobs.from_dict(document(LEAF_SPINE, ({"nodes": [3, 0]}, {"first_node": 1})))
    assert placed.jobs[0].gpus == (6, 7, 0, 1)
    assert placed.jobs[1].nodes == (1, 2)
    assert placed.jobs[0].scenario.cluster.nodes == 2


@pytest.mark.parametrize(("edit", "field"), [
    (lambda d: d["jobs"][1]["placement"].update(first_node=1), "jobs.1.placement"),          # overlaps job a
    (lambda d: d["jobs"][1]["placement"].update(first_node=3), "jobs.1.placement"),          # node 4 of 4
    (lambda d: d["jobs"][0]["parallelism"].update(tp=1, dp=1), "jobs.0.parallelism"),         # 1 GPU: not a node
    (lambda d: d["jobs"][0]["parallelism"].update(dp=6), "jobs.0.parallelism"),               # 6 nodes of 4
    (lambda d: d["jobs"][0]["placement"].update(nodes=[0, 1]), "jobs.0.placement"),           # both forms
    (lambda d: d["jobs"][0].pop("model"), "jobs.0.model"),
    (lambda d: d["jobs"][1].update(name="a"), "jobs.1.name"),
    (lambda d: d["jobs"][0]["training"].update(global_batch_size=7), "jobs.0.training.global_batch_size"),
    (lambda d: d.update(network="fast"), "network"),
    (lambda d: d["jobs"][0].update(scenario="no-such-scenario"), "jobs.0.scenario"),
])
def test_bad_jobs_name_the_field(edit, field):
    doc = document(LEAF_SPINE, CONTIGUOUS)
    edit(doc)
    with pytest.raises(ScenarioError) as err:
        spec_jobs.from_dict(doc)
    assert err.value.field.startswith(field), err.value


def test_a_job_takes_a_scenario_file_with_its_cluster_replaced(write_scenario, small_scenario):
    path = write_scenario(small_scenario)   # 16 GPUs of 8 per node on its own cluster
    doc = document({**LEAF_SPINE, "gpus_per_node": 8, "topology_options": {}}, ({"first_node": 2},))
    doc["jobs"][0] = {"name": "a", "scenario": str(path), "placement": {"first_node": 2}}
    doc["cluster"]["nodes"] = 4
    placed = spec_jobs.from_dict(doc)
    job = placed.jobs[0]
    assert job.scenario.parallelism.tp == 2 and job.scenario.cluster.nodes == 2
    assert job.gpus == tuple(range(16, 32))


def test_single_job_commands_refuse_a_jobs_scenario():
    with pytest.raises(ScenarioError) as err:
        config.from_dict(document(LEAF_SPINE, CONTIGUOUS))
    assert err.value.field == "jobs"


def test_bundled_jobs_example_loads():
    placed = spec_jobs.load("two-jobs-8-nodes-roce")
    assert [job.nodes for job in placed.jobs] == [(0, 2, 4, 6), (1, 3, 5, 7)]


def test_run_prints_each_jobs_slowdown(cli, write_scenario, tmp_path):
    path = write_scenario(document(LEAF_SPINE, INTERLEAVED))
    code, out, _ = cli("run", path, "--json", "--out", tmp_path / "out")
    assert code == 0
    summary = json.loads(out)
    assert [row["name"] for row in summary["jobs"]] == ["a", "b"]
    assert all(row["slowdown"] > 1.2 for row in summary["jobs"])
    assert (tmp_path / "out" / "a" / "summary.json").is_file()
    code, out, _ = cli("run", path, "--out", tmp_path / "out2")
    assert code == 0 and "slowdown" in out
    code, _, err = cli("run", path, "--samples", "3")
    assert code == 2 and "--samples" in err


def test_jobs_share_the_fabric_cost_by_their_gpus():
    from simcluster.fabric import bom

    placed = spec_jobs.from_dict(document(LEAF_SPINE, ({"first_node": 0},)))   # one 2-node job on 4 nodes
    result = engine_jobs.run(placed)
    whole = bom.bill(engine_jobs.shared_fabric(placed))
    assert result.together[0].summary["fabric"]["capex_usd"] == pytest.approx(whole["capex_usd"] / 2, rel=1e-12)


def test_schema_of_a_jobs_scenario(cli):
    code, out, _ = cli("schema", "--jobs")
    assert code == 0 and "placement" in json.loads(out)["$defs"]["Job"]["properties"]
