"""Megatron-Core's flex token dispatcher (DeepEP) against the alltoall dispatcher, and the load DeepEP's network
phase carries.

Sources: Megatron-Core token_dispatcher.py (``MoEFlexTokenDispatcher`` / ``_DeepepManager``: DeepEP's fused dispatch
sends the token rows unpermuted, then ``get_permuted_hidden_states_by_experts`` permutes the received rows by local
expert once; ``MoEAlltoAllTokenDispatcher``: permute into top_k copies, all-to-all, sort by local expert, and the
reverse); Yao et al. 2025, NVIDIA/Megatron-LM docs/discussions/deepseek-v3-gb200-optimization, sections 2.1.1 ("The
AlltoAll dispatcher using the NCCL backend requires one global and one local permute ... The Flex Dispatcher of
DeepEP or HybridEP fuses the global permute into the communication kernel") and 2.2.1 (router and preprocess kernels
down to 17 with DeepEP). Expected values are computed here independently: the probability that a GPU holding s of
E experts is missed by k distinct draws is the product of (E - s - i) / (E - i), i < k.
"""

import math

import pytest

from simcluster.collectives.closed_form import hierarchical_alltoall_bytes
from simcluster.core.token_routing import TokenRouting
from simcluster.spec import model
from simcluster.workload import moe
from simcluster.workload.ops import Shard

H = 512


def _spec(experts=128, top_k=8, load="balanced"):
    return model.TransformerSpec(layers=4, hidden=H, heads=8, vocab=1000, mlp="swiglu", norm="rmsnorm",
                                 position="rope", dropout=False,
                                 moe=model.MoESpec(experts=experts, top_k=top_k, ffn_hidden=256, load=load))


def _missed(experts, top_k, share):
    return math.prod((experts - share - i) / (experts - i) for i in range(top_k))


def _named(block, phase, name):
    return [op for op in getattr(block, phase) if op.name == name]


@pytest.mark.parametrize("ep", [8, 32])
def test_flex_permutes_the_received_rows_once_and_never_sorts_them(ep):
    """Tokens routed per rank T = 4096 / tp 2; the flex permutation reads T x (distinct GPUs a token reaches) rows
    and writes k T, where the alltoall one reads T; no sort by local expert in any phase."""
    spec, shard = _spec(), Shard(seq_len=4096, micro_batch=1, tp=2)
    flex = moe.moe_block(spec, shard, ep=ep, dispatcher="flex")
    alltoall = moe.moe_block(spec, shard, ep=ep)
    tokens, e = 2048, 2
    gpus = ep * (1 - _missed(128, 8, 128 // ep))
    for phase in ("forward", "backward_input", "backward_weight"):
        assert _named(flex, phase, "moe_sort_chunks") == []
    assert len(_named(alltoall, "forward", "moe_sort_chunks")) == 2
    (permute,) = _named(flex, "forward", "permute")
    assert permute.hbm_bytes == pytest.approx((gpus + 8) * tokens * H * e, rel=1e-12)
    (unpermute,) = _named(flex, "forward", "unpermute")
    assert unpermute.hbm_bytes == pytest.approx((gpus + 8) * tokens * H * e, rel=1e-12)
    (permute_a2a,) = _named(alltoall, "forward", "permute")
    assert permute_a2a.hbm_bytes == pytest.approx((1 + 8) * tokens * H * e, rel=1e-12)


def test_flex_fuses_the_router_preprocess_into_17_forward_kernels():
    """Eager router and preprocess: 31 kernels forward with the alltoall dispatcher, 17 with the flex one (the
    device ops stand for 2 of them, the rest are launches before the host sync)."""
    spec, shard = _spec(), Shard(seq_len=4096, micro_batch=1)

    def router_launches(block):
        forward = block.forward
        return sum(op.name == "moe_launch" for op in forward[:forward.index(_named(block, "forward", "host_sync")[0])])

    assert router_launches(moe.moe_block(spec, shard, ep=8)) == 31 - 2
    assert router_launches(moe.moe_block(spec, shard, ep=8, dispatcher="flex")) == 17 - 2
    assert router_launches(moe.moe_block(spec, shard, ep=8, cuda_graphs=True, dispatcher="flex")) == 0


def test_flex_without_expert_parallelism_is_the_alltoall_block():
    spec, shard = _spec(), Shard(seq_len=4096, micro_batch=1)
    assert moe.moe_block(spec, shard, ep=1, dispatcher="flex") == moe.moe_block(spec, shard, ep=1)


def test_busiest_load_is_the_expected_maximum_over_equal_groups_of_experts():
    """1 + CV / sqrt(E / G) z(G), z by Blom's formula written out here; busiest_rank_load is the same with G = ep;
    a capacity factor caps it."""
    cv = moe.load_cv(_spec(load="measured").moe)
    z = {4: 1.0491, 32: 2.0667}   # Phi^-1((G - 0.375) / (G + 0.25)) to 4 decimals
    routing = moe.token_routing(_spec(load="measured").moe)
    for groups in (4, 32):
        assert routing.busiest_load(groups) == pytest.approx(1 + cv / math.sqrt(128 / groups) * z[groups], rel=1e-4)
    assert moe.busiest_rank_load(_spec(load="measured").moe, 32) == routing.busiest_load(32)
    assert TokenRouting(128, 8, load_cv=cv, capacity_factor=1.1).busiest_load(32) == 1.1
    assert TokenRouting(128, 8).busiest_load(32) == 1.0


def test_deepeps_network_phase_carries_the_busiest_nodes_load_not_the_busiest_gpus():
    """4 nodes x 8 GPUs, 128 experts: a rank (b, l) receives over RDMA every token bound for node b, so the NIC
    bytes scale with the busiest of 4 nodes of 32 experts, the NVLink bytes with the busiest of 32 GPUs of 4; the
    all-to-all's size carries the GPU's. Balanced routing changes nothing."""
    cv = 0.3
    loaded, balanced = TokenRouting(128, 8, load_cv=cv), TokenRouting(128, 8)
    node = 1 + cv / math.sqrt(32) * 1.0491
    gpu = 1 + cv / math.sqrt(4) * 2.0667
    assert loaded.network_load(4, 8) == pytest.approx(node / gpu, rel=1e-4)
    assert 0.75 < loaded.network_load(4, 8) < 0.85
    size = 1e9
    network, nvlink = hierarchical_alltoall_bytes(4, 8, size, loaded)
    network_balanced, nvlink_balanced = hierarchical_alltoall_bytes(4, 8, size, balanced)
    assert network == pytest.approx(network_balanced * node / gpu, rel=1e-4)
    assert nvlink == nvlink_balanced
    assert balanced.network_load(4, 8) == 1.0


def test_the_scheduled_network_phase_carries_the_nodes_load():
    """The engine's schedule (algorithms.alltoall_hierarchical) puts the closed form's network bytes, node load
    included, on the NICs of 4 nodes x 8 GPUs."""
    from simcluster.fabric import topology
    from tests.unit.test_token_routing import B200, CX7, SIZE, _nic_bytes

    fabric = topology.build("rail-fat-tree", gpus=32, gpus_per_node=8, gpu=B200, nic=CX7)
    loaded = TokenRouting(128, 8, load_cv=0.3)
    _, nic_bytes, _ = _nic_bytes(fabric, loaded)
    _, nic_balanced, _ = _nic_bytes(fabric, TokenRouting(128, 8))
    assert nic_bytes == pytest.approx(32 * hierarchical_alltoall_bytes(4, 8, SIZE, loaded)[0], rel=1e-9)
    assert nic_bytes == pytest.approx(nic_balanced * loaded.network_load(4, 8), rel=1e-9)


def test_flex_without_deepeps_alltoall_is_refused_naming_the_field(tmp_path):
    """The flex dispatcher's all-to-all is DeepEP's (a token once per destination): a direct one is a one-line
    error naming parallelism.moe_dispatcher, exit code 2."""
    import subprocess
    import sys

    import yaml

    from simcluster.spec import config

    raw = yaml.safe_load(config.bundled_dir().joinpath("moezoo-qwen3-235b-256-h100-deepep.yaml").read_text())
    raw["parallelism"]["ep_alltoall"] = "direct"
    path = tmp_path / "flex-direct.yaml"
    path.write_text(yaml.safe_dump(raw))
    run = subprocess.run([sys.executable, "-m", "simcluster.cli", "run", str(path)], capture_output=True, text=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(config.bundled_dir().parents[2]), "PATH": ""})
    assert run.returncode == 2
    assert "parallelism.moe_dispatcher" in run.stderr and "Traceback" not in run.stderr


def test_flex_permutation_carries_the_busiest_ranks_load():
    """The flex permutation runs after the dispatch, on the rows this rank received: at load L its bytes and the
    unpermutation's FLOP are L times the balanced ones; the alltoall permutation (before the dispatch, on the
    rank's own tokens) does not change with the load."""
    spec, shard = _spec(), Shard(seq_len=4096, micro_batch=1, tp=2)
    for phase in ("forward", "backward_input"):
        for name in ("permute", "unpermute"):
            (even,) = _named(moe.moe_block(spec, shard, ep=8, dispatcher="flex"), phase, name)
            (busy,) = _named(moe.moe_block(spec, shard, ep=8, load=1.3, dispatcher="flex"), phase, name)
            assert busy.hbm_bytes == pytest.approx(1.3 * even.hbm_bytes, rel=1e-12)
            assert busy.flop == pytest.approx(1.3 * even.flop, rel=1e-12)
    (even,) = _named(moe.moe_block(spec, shard, ep=8), "forward", "permute")
    (busy,) = _named(moe.moe_block(spec, shard, ep=8, load=1.3), "forward", "permute")
    assert busy.hbm_bytes == even.hbm_bytes


def test_routed_forward_issues_each_grouped_gemms_launches_with_it():
    """After the host sync the routed forward is in issue order: permute, sort map and sort, fc1's launches, fc1,
    act, fc2's launches, fc2, sort map and sort back, unpermute (kernels.synced_stall_s races the host over this
    order)."""
    spec, shard = _spec(), Shard(seq_len=4096, micro_batch=1, tp=2)
    block = moe.moe_block(spec, shard, ep=8)
    forward = block.forward
    routed = [op.name for op in forward[forward.index(_named(block, "forward", "host_sync")[0]) + 1:]]
    fc1, fc2 = routed.index("expert_up"), routed.index("expert_down")
    assert routed[:3] == ["permute", "moe_sort_map", "moe_sort_chunks"]
    assert routed[-3:] == ["moe_sort_map", "moe_sort_chunks", "unpermute"]
    assert 3 < fc1 < fc2 < len(routed) - 3
    before_fc1 = [n for n in routed[3:fc1] if n != "moe_launch"]
    between = [n for n in routed[fc1 + 1:fc2] if n not in ("moe_launch",)]
    assert "moe_launch" in routed[3:fc1] and "moe_launch" in routed[fc1 + 1:fc2]
    assert set(before_fc1) <= {"host_launch"} and set(between) <= {"host_launch", "expert_act"}


@pytest.mark.parametrize("change", [{"model": "dense"}, {"ep": 1}])
def test_flex_where_no_tokens_are_dispatched_is_refused_naming_the_field(change):
    import yaml

    from simcluster.core.errors import ScenarioError
    from simcluster.spec import config

    raw = yaml.safe_load(config.bundled_dir().joinpath("moezoo-qwen3-235b-256-h100-deepep.yaml").read_text())
    raw["parallelism"]["ep"] = 1
    if change.get("model") == "dense":
        raw["model"] = "llama3-70b"
    with pytest.raises(ScenarioError, match="parallelism.moe_dispatcher"):
        config.from_dict(raw)
