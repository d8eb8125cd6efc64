"""The line-rate floor of one expert-parallel dispatch (``deepep.line_rate_floor_s``) against closed forms written
out here from the combinatorics (not through ``TokenRouting``), the engine's all-to-all never beating it, and the
pipeline-stage count ``scripts/ep_floor.py`` multiplies it by."""

from __future__ import annotations

import math

import pytest
from scenario_data import with_changes
from scripts_loader import load_script

from simcluster import collectives
from simcluster.collectives import Collective, deepep
from simcluster.core import catalog
from simcluster.core.token_routing import TokenRouting
from simcluster.fabric import topology
from simcluster.spec import config, hardware

H100, CX7 = hardware.gpu("h100-sxm"), hardware.nic("connectx-7")
TOKENS, TOKEN_BYTES = 2048, 4096 * 2   # Qwen3-235B, TP 2 with sequence parallelism, sequence 4096, bf16
NIC, NVLINK = 50e9, 450e9               # CX7 400 Gb/s; NVLink 4, per direction


def _miss(experts: int, share: int, top_k: int) -> float:
    """Probability that top_k distinct experts of ``experts`` avoid a given ``share``: prod (E - s - i)/(E - i)."""
    return math.prod((experts - share - i) / (experts - i) for i in range(top_k))


def test_qwen3_on_four_nodes_is_bound_by_the_nic():
    """EP 32 on 4 nodes of 8, 128 experts top-8: a token reaches each other node with P = 1 - prod(96-i)/(128-i),
    2.72 of 3, 45.7 MB a GPU on its NIC, 0.913 ms at 50 GB/s; NVLink (7 x 4 nodes' tokens x P(GPU)) carries 107 MB,
    0.24 ms at 450 GB/s: the NIC binds."""
    p_node = 1 - _miss(128, 32, 8)
    p_gpu = 1 - _miss(128, 4, 8)
    network = 3 * TOKENS * TOKEN_BYTES * p_node
    nvlink = 7 * 4 * TOKENS * TOKEN_BYTES * p_gpu
    floor = deepep.line_rate_floor_s(4, 8, TOKENS, TOKEN_BYTES, 128, 8, NIC, NVLINK)
    assert floor == pytest.approx(network / NIC, rel=1e-12)
    assert floor == pytest.approx(0.913e-3, abs=1e-6)
    assert nvlink / NVLINK < 0.3 * floor


def test_inside_one_node_only_nvlink_carries_the_distinct_gpus():
    """EP 8 in one node: 7 peers x P(GPU holds one of the token's 8 experts, 16 of 128), nothing on the NIC."""
    p_gpu = 1 - _miss(128, 16, 8)
    floor = deepep.line_rate_floor_s(1, 8, TOKENS, TOKEN_BYTES, 128, 8, NIC, NVLINK)
    assert floor == pytest.approx(7 * TOKENS * TOKEN_BYTES * p_gpu / NVLINK, rel=1e-12)


def test_group_limited_deepseek_v3_on_eight_nodes_sends_a_token_to_four():
    """DeepSeek-V3's router (8 groups of 32 experts, 4 chosen) on EP 64 over 8 nodes, a group a node: a token reaches
    4 of the 8 nodes, 1 - C(7, 4)/C(8, 4) = 1/2 each, against 1 - prod(224-i)/(256-i) = 0.662 uniformly; each chosen
    node's own expert lands on a given GPU of it with 4/32, the other 4 on it among the chosen nodes' other 124
    experts. The NIC binds either way; the floor falls with the node count."""
    p_gpu = 0.5 * (1 - (1 - 4 / 32) * _miss(124, 4, 4))
    network, nvlink = 7 * TOKENS * TOKEN_BYTES * 0.5, 7 * 8 * TOKENS * TOKEN_BYTES * p_gpu
    floor = deepep.line_rate_floor_s(8, 8, TOKENS, TOKEN_BYTES, 256, 8, NIC, NVLINK, groups=8, group_limit=4)
    assert floor == pytest.approx(max(network / NIC, nvlink / NVLINK), rel=1e-12)
    uniform = deepep.line_rate_floor_s(8, 8, TOKENS, TOKEN_BYTES, 256, 8, NIC, NVLINK)
    assert floor / uniform == pytest.approx(0.5 / (1 - _miss(256, 32, 8)), rel=1e-12)


def test_every_copy_without_deduplication():
    """The alltoall dispatcher (NCCL's direct all-to-all) sends each of the 8 copies to its GPU: in one node 7/8 of
    them over NVLink; over 4 nodes 3/4 over the NIC (the NVLink share, 7/32, does not bind)."""
    copies = TOKENS * 8 * TOKEN_BYTES
    assert deepep.line_rate_floor_s(1, 8, TOKENS, TOKEN_BYTES, 128, 8, NIC, NVLINK, deduplicated=False) == (
        pytest.approx(7 / 8 * copies / NVLINK, rel=1e-12))
    assert deepep.line_rate_floor_s(4, 8, TOKENS, TOKEN_BYTES, 128, 8, NIC, NVLINK, deduplicated=False) == (
        pytest.approx(3 / 4 * copies / NIC, rel=1e-12))


def test_the_engines_deepep_alltoall_never_beats_the_line_rate():
    """The simulated deduplicated all-to-all over 4 H100 nodes (balanced routing, idle fabric) takes at least the
    floor and at most the floor at NCCL's network efficiency (47 of 50 GB/s) plus its latencies: within 12%."""
    fabric = topology.build("rail-fat-tree", gpus=32, gpus_per_node=8, gpu=H100, nic=CX7)
    routing = TokenRouting(128, 8)
    elapsed = collectives.run(Collective("alltoall", range(32), TOKENS * 8 * TOKEN_BYTES, algorithm="hierarchical",
                                         routing=routing), fabric).time_s
    floor = deepep.line_rate_floor_s(4, 8, TOKENS, TOKEN_BYTES, 128, 8, CX7.rate, H100.nvlink_bandwidth)
    assert floor <= elapsed <= 1.12 * floor


@pytest.mark.parametrize("args", [(0, 8, 1, 1, 8, 2), (4, 8, -1, 1, 8, 2), (4, 8, 1, 1, 0, 2)])
def test_bad_input_is_refused(args):
    with pytest.raises(ValueError):
        deepep.line_rate_floor_s(*args, NIC, NVLINK)
    with pytest.raises(ValueError):
        deepep.line_rate_floor_s(4, 8, 1, 1, 8, 2, 0.0, NVLINK)


def test_the_script_counts_each_stages_moe_layers_and_their_mean():
    """94 layers with the embedding and loss each a layer's slot: PP 8 x VPP 4 chunks of 2-3 layers put 12 on a
    middle stage (4 chunks of 3), 11 on the first and last; every layer once, so the mean over stages is 94 / PP (the
    engine's summary is a mean over GPUs, every stage the same number)."""
    script = load_script("ep_floor")
    deepep_row = config.load("moezoo-qwen3-235b-256-h100-deepep")
    per_stage = script.stage_moe_layers(deepep_row)
    assert per_stage == [11, 12, 12, 12, 12, 12, 12, 11]
    assert script.mean_stage_moe_layers(deepep_row) == pytest.approx(94 / 8, rel=1e-12)
    assert script.mean_stage_moe_layers(config.load("moezoo-qwen3-235b-256-h100-a2a")) == pytest.approx(94 / 32)


def test_the_script_counts_the_multi_token_prediction_layer():
    """DeepSeek-V3: 61 layers, the first 3 dense, so 58 MoE layers, and its MTP module's layer (of the last layer's
    type, MoE) on the last stage: 59 over PP 8."""
    per_stage = load_script("ep_floor").stage_moe_layers(config.load("nemo2509-deepseek-v3-1024-h100-fp8"))
    assert len(per_stage) == 8 and sum(per_stage) == 58 + 1


def _refused(capsys, *names) -> str:
    """The one-line error ``scripts/ep_floor.py`` exits with (code 2), nothing printed before it."""
    with pytest.raises(SystemExit) as exit_:
        load_script("ep_floor").main(list(names))
    out, err = capsys.readouterr()
    assert exit_.value.code == 2 and out == ""
    message = err.strip().splitlines()[-1]
    assert len(message) < 200
    return message


def test_the_script_refuses_unknown_and_non_validation_names_before_simulating(capsys, monkeypatch):
    """Every name is checked before the header or any simulation: a bad last name stops the whole run."""
    script = load_script("ep_floor")
    monkeypatch.setattr(script, "row", lambda name: pytest.fail("simulated before every name was checked"))
    assert "nosuchrow: not a validation case" in _refused(capsys, "moezoo-qwen3-235b-256-h100-a2a", "nosuchrow")
    assert "mixtral-8x22b-256-h100: not a validation case" in _refused(capsys, "mixtral-8x22b-256-h100")
    assert "no expert parallelism" in _refused(capsys, "nemo2409-gpt3-175b-128-h100-bf16")


def test_the_script_refuses_ep_groups_its_shape_does_not_fit(capsys, monkeypatch):
    """The floor's EP group is nodes x local consecutive GPUs of its own: expert tensor parallelism, or an EP group
    neither dividing nor a multiple of the GPUs a node, is refused (exit 2, the field named)."""
    name = "moezoo-qwen3-235b-256-h100-a2a"
    etp = with_changes(catalog.load(f"scenarios/{name}"), parallelism__ep=4, parallelism__etp=2)
    monkeypatch.setattr(config, "load", lambda _: etp)
    assert "parallelism.etp 2 > 1" in _refused(capsys, name)
    bundled = catalog.load(f"scenarios/{name}")
    base = config.from_dict(bundled)
    six = base.model_copy(update={"cluster": base.cluster.model_copy(update={"gpus_per_node": 6})})
    monkeypatch.setattr(config, "load", lambda _: six)
    assert "parallelism.ep 8 neither divides nor is a multiple of gpus_per_node 6" in _refused(capsys, name)
