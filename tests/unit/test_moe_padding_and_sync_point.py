"""MoE padding to capacity (``step_load``'s ``pad_to_capacity`` branch) and where the forward's host sync falls
without expert parallelism (``forward_order`` at ep x etp == 1)."""

from __future__ import annotations

import pytest

from simcluster.spec import model
from simcluster.workload import moe
from simcluster.workload.ops import Shard


def _moe(**moe_fields) -> model.TransformerSpec:
    fields = {"experts": 8, "top_k": 2, "ffn_hidden": 1024, **moe_fields}
    return model.TransformerSpec(layers=4, hidden=512, heads=8, kv_heads=8, ffn_hidden=2048, vocab=1000,
                                 mlp="swiglu", norm="rmsnorm", position="rope", dropout=False,
                                 tied_embeddings=False, moe=fields)


def _expert_rows(spec: model.TransformerSpec, shard: Shard, ep: int, load: float) -> float:
    block = moe.moe_block(spec, shard, ep=ep, load=load)
    (up,) = [op for op in block.forward if op.name == "expert_up"]
    return up.m


def test_padding_to_capacity_runs_every_expert_at_its_capacity():
    """Padded (--moe-pad-expert-input-to-capacity), every expert processes capacity = capacity_factor x the mean
    tokens an expert (Megatron-Core moe_utils.get_capacity), whatever the routing: step_load is the capacity factor
    and the expert GEMM has capacity_factor x the mean rows (etp x ep x routed x k / E)."""
    shard = Shard(seq_len=4096, micro_batch=1, tp=2)
    padded = _moe(capacity_factor=1.5, pad_to_capacity=True)
    dropless = _moe()
    ep = 4
    assert moe.step_load(padded, shard, ep) == 1.5
    assert moe.step_load(dropless, shard, ep) != 1.5     # the dropless load is the sampled busiest rank's
    mean_rows = ep * (4096 / 2) * 2 / 8
    assert _expert_rows(padded, shard, ep, moe.step_load(padded, shard, ep)) == pytest.approx(1.5 * mean_rows)
    assert _expert_rows(padded, shard, ep, 1.0) == pytest.approx(mean_rows)


def _order(spec: model.TransformerSpec, ep: int, etp: int = 1, tp: int = 1) -> list[str]:
    block = moe.moe_block(spec, Shard(seq_len=4096, micro_batch=1, tp=tp), ep=ep, etp=etp)
    names = ["shared" if op.name.startswith("shared_expert") else op.name for op in block.forward]
    return [name for name in dict.fromkeys(names) if name in ("host_sync", "permute", "shared", "expert_up")]


@pytest.mark.parametrize("capacity, ep, etp, expected", [
    (None, 1, 1, ["permute", "shared", "host_sync", "expert_up"]),   # before_finish / before_permutation_2
    (None, 2, 1, ["host_sync", "permute", "shared", "expert_up"]),   # before_ep_alltoall
    (None, 1, 2, ["host_sync", "permute", "shared", "expert_up"]),   # expert TP: the dispatcher's tp_size > 1
    (1.0, 1, 1, ["host_sync", "permute", "shared", "expert_up"]),    # capacity, no padding: before_permutation_1
])
def test_without_expert_parallelism_the_dropless_sync_falls_after_the_shared_experts(capacity, ep, etp, expected):
    """Megatron-Core's MoEAlltoAllTokenDispatcher.preprocess: with ep_size == tp_size == 1 (its tp group the
    expert-TP one) there are no all-to-all splits, the sync point is "before_finish" ("before_permutation_2" with
    unfused permute), both in dispatch_postprocess, after MoELayer.experts_compute issued the shared experts; a
    capacity factor without padding syncs before the first permutation for num_out_tokens."""
    spec = _moe(shared_experts=1, capacity_factor=capacity)
    assert _order(spec, ep, etp, tp=etp) == expected


@pytest.mark.parametrize("change", [
    {"parallelism": {"ep_alltoall": "hierarchical"}},   # padded rows are per expert: no one copy per node
    {"parallelism": {"moe_dispatcher": "flex", "ep_alltoall": "hierarchical"}},   # Megatron-Core's flex asserts it
    {"model": {"capacity_factor": None}},               # nothing to pad to
])
def test_padding_refusals_name_the_padding_field(tmp_path, change):
    """A one-line error naming model.moe.pad_to_capacity, exit code 2, no traceback (run from a folder without
    the package, as a user would)."""
    import subprocess
    import sys

    import yaml

    from simcluster.spec import config

    raw = yaml.safe_load(config.bundled_dir().joinpath("moezoo-mixtral-8x22b-128-h100-drop.yaml").read_text())
    raw["parallelism"].update(change.get("parallelism", {}))
    raw["model"]["moe"].update(change.get("model", {}))
    path = tmp_path / "pad.yaml"
    path.write_text(yaml.safe_dump(raw))
    run = subprocess.run([sys.executable, "-m", "simcluster.cli", "run", str(path)], capture_output=True, text=True,
                         cwd=tmp_path, env={"PYTHONPATH": str(config.bundled_dir().parents[2]), "PATH": ""})
    assert run.returncode == 2
    assert run.stderr.strip().startswith("error: model.moe.pad_to_capacity:") and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
