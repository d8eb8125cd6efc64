"""The loss kernel over the logits: Megatron-LM's unfused vocab-parallel cross entropy or one fused kernel.

Sources: Megatron-LM megatron/core/tensor_parallel/cross_entropy.py (pass by pass in fp32, ops.output_ops);
flash-attention flash_attn/losses/cross_entropy.py (one kernel forward, one backward over the 16-bit logits), which
llm-foundry's MPT uses by default (ComposerMPTCausalLM: om_model_config.get('loss_fn', 'fused_crossentropy')).
Closed forms: HBM bytes per logit in bf16 training, unfused 42 forward + 18 backward, fused 2 + 4.
"""

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.spec import config
from simcluster.spec.model import TransformerSpec
from simcluster.workload.ops import Shard, output_ops

MODEL = TransformerSpec(layers=2, hidden=1024, heads=8, vocab=50368, dropout=False)


def _loss_bytes_per_logit(kernel: str) -> tuple[float, float]:
    shard = Shard(seq_len=2048, micro_batch=2, cross_entropy=kernel, precision="bf16")
    ops = output_ops(MODEL, shard)
    logits = shard.tokens * MODEL.vocab
    forward = sum(op.hbm_bytes for op in ops["forward"] if op.name.startswith("ce_"))
    backward = sum(op.hbm_bytes for op in ops["backward_input"] if op.name.startswith("ce_"))
    return forward / logits, backward / logits


@pytest.mark.parametrize(("kernel", "forward", "backward", "kernels"), [("unfused", 42, 18, 10), ("fused", 2, 4, 2)])
def test_cross_entropy_hbm_bytes_per_logit(kernel, forward, backward, kernels):
    assert _loss_bytes_per_logit(kernel) == (forward, backward)
    shard = Shard(seq_len=2048, micro_batch=2, cross_entropy=kernel)
    ops = output_ops(MODEL, shard)
    assert sum(op.name.startswith("ce_") for phase in ops.values() for op in phase) == kernels


def test_llm_foundry_scenarios_use_the_fused_loss_and_megatron_ones_the_unfused():
    assert config.load("mpt-7b-8-h100").training.cross_entropy == "fused"
    assert config.load("megatron-16b-h100").training.cross_entropy == "unfused"


def test_unknown_cross_entropy_kernel_is_refused_naming_the_field():
    data = {"name": "x", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1},
            "model": {"layers": 2, "hidden": 1024, "heads": 8, "vocab": 50368},
            "training": {"global_batch_size": 8, "cross_entropy": "triton"}}
    with pytest.raises(ScenarioError, match="cross_entropy"):
        config.from_dict(data)
