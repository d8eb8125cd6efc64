"""The small NCCL collectives of an MoE layer beyond its token all-to-alls (``moe.layer_collectives``; Round 20).

Source: Megatron-Core's router ``_apply_aux_loss`` all-reduces the tokens per expert over the TP x CP group in every
MoE layer's forward (``reduce_from_tensor_model_parallel_region(tokens_per_expert, self.tp_cp_group)``; with one
rank it returns the input, no kernel); the alltoall dispatcher's ``dispatch_all_to_all`` sends the permuted routing
probabilities in an all-to-all of their own beside the tokens' (``global_probs = all_to_all(self.ep_group,
permuted_probs, ...)``, token_dispatcher.py stored version 0014f137), whose backward is another; the flex dispatcher
carries them inside DeepEP's dispatch (``topk_weights``). The router launch counts of data/moe.yaml were taken at
TP 1, CP 1 (NVIDIA's DeepSeek-V3 guide, TP1/PP8/VPP4/EP32), so none of these is in them.
"""

from __future__ import annotations

from simcluster.spec import model
from simcluster.workload import moe
from simcluster.workload.ops import Shard

FUSED = moe.Router("fused", "fp32", "aux_loss")


def _moe() -> model.TransformerSpec:
    return model.TransformerSpec(layers=4, hidden=512, heads=8, kv_heads=8, ffn_hidden=2048, vocab=1000,
                                 mlp="swiglu", norm="rmsnorm", position="rope", dropout=False,
                                 tied_embeddings=False, moe={"experts": 16, "top_k": 4, "ffn_hidden": 256})


def _kernels(block, phase: str) -> int:
    """The block's zero-work kernel launches in ``phase`` (the host-only launches on other streams excluded)."""
    return sum(op.name == "moe_launch" for op in getattr(block, phase))


def test_aux_loss_allreduce_only_with_a_tp_or_cp_group():
    """One all-reduce in the router's forward whenever tp x cp > 1, none at tp = cp = 1 (Megatron-Core's
    reduce over a one-rank group is the identity), whatever the dispatcher; nothing backward (identity)."""
    for flex in (False, True):
        assert moe.layer_collectives(Shard(seq_len=4096, micro_batch=1), 8, flex, FUSED)["router_forward"] == 0
        for tp, cp in ((4, 1), (2, 1), (1, 2)):
            counts = moe.layer_collectives(Shard(seq_len=4096, micro_batch=1, tp=tp, cp=cp), 8, flex, FUSED)
            assert counts["router_forward"] == 1


def test_aux_loss_allreduce_for_every_router_and_load_balancing_loss():
    """Round 20 review: every router version reduces its tokens per expert over TP x CP (r0.9-r0.12 inside
    switch_load_balancing_loss_func over the sequence_partition_group; 2025 _apply_aux_loss and
    _apply_seq_aux_loss over tp_cp_group), for aux_loss and seq_aux_loss alike (the only two a scenario states)."""
    shard = Shard(seq_len=4096, micro_batch=1, tp=2)
    for kernels in ("fused", "unfused", "unfused_v0.9"):
        for balancing in ("aux_loss", "seq_aux_loss"):
            router = moe.Router(kernels, "fp32", balancing)
            assert moe.layer_collectives(shard, 8, False, router)["router_forward"] == 1


def test_probs_alltoall_only_on_the_alltoall_dispatcher_with_expert_parallelism():
    """The probabilities' all-to-all, one forward and one backward, on the alltoall dispatcher with ep > 1 and the
    2025 (fused-router) Megatron-Core; none on the flex dispatcher (DeepEP's dispatch carries them), at ep 1 (no
    all-to-all) or before Megatron Core 0.13 (v0.9, r0.10-r0.12: the outputs weighted on the source rank)."""
    shard = Shard(seq_len=4096, micro_batch=1, tp=2)
    counts = moe.layer_collectives(shard, 8, False, FUSED)
    assert (counts["forward"], counts["backward_input"]) == (1, 1)
    for ep, flex, router in ((8, True, FUSED), (1, False, FUSED), (8, False, moe.Router("unfused_v0.9")),
                             (8, False, moe.Router("unfused"))):
        counts = moe.layer_collectives(shard, ep, flex, router)
        assert (counts["forward"], counts["backward_input"]) == (0, 0)


def test_moe_block_launches_each_collective_once_where_megatron_core_does():
    """The MoE block carries one kernel more in the router's forward at TP 4 than at TP 1 (flex dispatcher, as the
    MoE zoo's TP 4 row), and on the alltoall dispatcher at TP 2 one more in the forward and one in the data-gradient
    backward again: exactly the counts above, on top of the same router and grouped-GEMM launches."""
    spec = _moe()
    tp1, tp4 = Shard(seq_len=4096, micro_batch=1), Shard(seq_len=4096, micro_batch=1, tp=4)
    flex1 = moe.moe_block(spec, tp1, ep=8, dispatcher="flex", router=FUSED)
    flex4 = moe.moe_block(spec, tp4, ep=8, dispatcher="flex", router=FUSED)
    assert _kernels(flex4, "forward") - _kernels(flex1, "forward") == 1
    assert _kernels(flex4, "backward_input") == _kernels(flex1, "backward_input")

    tp2 = Shard(seq_len=4096, micro_batch=1, tp=2)
    a2a = moe.moe_block(spec, tp2, ep=8, dispatcher="alltoall", router=FUSED)
    a2a_v09 = moe.moe_block(spec, tp2, ep=8, dispatcher="alltoall", router=moe.Router("unfused_v0.9"))
    v09_backward = moe.router_backward_kernels(moe.Router("unfused_v0.9")) - moe.router_backward_kernels(FUSED)
    v09_backward += moe.router_cast_kernels(FUSED, "bf16")   # the fp32 router's casts: device ops (Round 26)
    assert _kernels(a2a, "forward") - _kernels(a2a_v09, "forward") == 1     # the probabilities' all-to-all
    assert _kernels(a2a, "backward_input") - (_kernels(a2a_v09, "backward_input") - v09_backward) == 1


def test_cuda_graphs_capture_the_router_collective_not_the_dispatch():
    """Under --cuda-graph-scope moe_router moe_preprocess the aux-loss all-reduce replays inside the router's graph
    (no launch of its own), while the dispatch's probabilities all-to-all stays eager."""
    spec = _moe()
    shard = Shard(seq_len=4096, micro_batch=1, tp=2)
    graphed = moe.launch_counts(16 // 8, True, router=FUSED,
                                collectives=moe.layer_collectives(shard, 8, False, FUSED))
    assert graphed["router_forward"]["collectives"] == 0
    assert graphed["forward"]["collectives"] == 1 and graphed["backward_input"]["collectives"] == 1
    eager = moe.moe_block(spec, shard, ep=8, router=FUSED)
    graphed_block = moe.moe_block(spec, shard, ep=8, cuda_graphs=True, router=FUSED)
    assert _kernels(graphed_block, "forward") >= 1      # the probabilities' all-to-all, still launched
    assert _kernels(eager, "forward") - _kernels(graphed_block, "forward") == (
        moe.launch_counts(2, router=FUSED)["router_forward"]["router"] + 1)   # router launches + its all-reduce
