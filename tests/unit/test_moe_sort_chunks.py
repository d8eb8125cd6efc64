"""The alltoall dispatcher's second permutation (workload/moe.py sort_chunks_ops) against its closed form.

Source: Megatron-Core MoEAlltoAllTokenDispatcher (megatron/core/transformer/moe/token_dispatcher.py): after the
dispatch all-to-all, "Permutation 2: Sort tokens by local expert (if multiple local experts)" with
moe_utils.sort_chunks_by_idxs, and the inverse sort before the combine; autograd runs both on the gradients. Each is
one HBM pass (read + write) over the rows this rank's experts receive: local experts x ep x tokens/tp x top_k /
experts x load rows of h 16-bit elements. Exact (a closed form of the model's own bytes).
"""

import pytest

from simcluster.spec import model
from simcluster.workload import moe
from simcluster.workload.ops import Shard


def _spec(experts=64, top_k=4):
    return model.TransformerSpec(layers=4, hidden=512, heads=8, vocab=1000, mlp="swiglu", norm="rmsnorm",
                                 position="rope", dropout=False,
                                 moe=model.MoESpec(experts=experts, top_k=top_k, ffn_hidden=256, load="balanced"))


def _sorts(block, phase):
    return [op for op in getattr(block, phase) if op.name == "moe_sort_chunks"]


@pytest.mark.parametrize("ep", [2, 8, 32])
def test_two_sorts_forward_and_two_backward_over_the_received_rows(ep):
    spec, shard = _spec(), Shard(seq_len=4096, micro_batch=1, tp=2)
    block = moe.moe_block(spec, shard, ep=ep)
    rows = (64 // ep) * ep * (4096 / 2) * 4 / 64       # local experts x their mean rows (balanced)
    for phase in ("forward", "backward_input"):
        sorts = _sorts(block, phase)
        assert len(sorts) == 2
        assert all(op.kind == "memory" and op.flop == 0 for op in sorts)
        assert sum(op.hbm_bytes for op in sorts) == pytest.approx(2 * 2 * rows * 512 * 2)
    assert _sorts(block, "backward_weight") == []


@pytest.mark.parametrize("ep, experts", [(1, 64), (8, 8)])
def test_nothing_to_sort_without_expert_parallelism_or_with_one_local_expert(ep, experts):
    block = moe.moe_block(_spec(experts=experts, top_k=2), Shard(seq_len=4096, micro_batch=1), ep=ep)
    assert _sorts(block, "forward") == [] and _sorts(block, "backward_input") == []
