"""The loss kernel over the logits: Megatron-LM's unfused vocab-parallel cross entropy or one fused kernel.

Sources: Megatron-LM megatron/core/tensor_parallel/cross_entropy.py (pass by pass in fp32, ops.output_ops);
flash-attention flash_attn/losses/cross_entropy.py (one kernel forward, one backward over the 16-bit logits), which
llm-foundry's MPT uses by default (ComposerMPTCausalLM: om_model_config.get('loss_fn', 'fused_crossentropy')).
Closed forms, HBM bytes per logit (e = the logits' bytes, f = 4 for fp32), from the source lines (round 26):
- unfused, megatron/core/tensor_parallel/cross_entropy.py (00611e6e): forward ``.float()`` (e + f, none when
  e = f), ``torch.max`` (f), in-place ``-= logits_max`` (2f), ``torch.exp(out=)`` (2f), ``sum`` (f), in-place
  ``div_`` (2f); backward in-place ``mul_`` (2f) and the autograd engine's cast back (f + e, none when e = f).
  bf16: 38 + 14 in 6 + 2 kernels; fp32: 32 + 8 in 5 + 1. No contiguous copy of the logits either way.
- fused (flash-attention 2.x ops/triton/cross_entropy.py; Transformer Engine's parallel_cross_entropy,
  pytorch/triton/cross_entropy.py 02965d2e: online_softmax_kernel reads X, cross_entropy_backward_kernel reads X and
  writes the gradient in place): e forward, 2e backward, one kernel each: 2 + 4 in bf16.
- megatron_fused (megatron/core/fusions/fused_cross_entropy.py, core 0.7-0.9): (e + f) + 2f + 2f + 2f forward,
  (2f + e) + 2f backward: 30 + 18 in bf16, 4 + 2 kernels.
"""

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.spec import config
from simcluster.spec.model import TransformerSpec
from simcluster.workload.ops import Shard, output_ops

MODEL = TransformerSpec(layers=2, hidden=1024, heads=8, vocab=50368, dropout=False)


def _loss_bytes_per_logit(kernel: str, precision: str = "bf16") -> tuple[float, float]:
    shard = Shard(seq_len=2048, micro_batch=2, cross_entropy=kernel, precision=precision)
    ops = output_ops(MODEL, shard)
    logits = shard.tokens * MODEL.vocab
    forward = sum(op.hbm_bytes for op in ops["forward"] if op.name.startswith("ce_"))
    backward = sum(op.hbm_bytes for op in ops["backward_input"] if op.name.startswith("ce_"))
    return forward / logits, backward / logits


E, F = 2, 4  # bytes of a 16-bit logit, of an fp32 one
CLOSED_FORMS = [
    ("unfused", "bf16", (E + F) + F + 2 * F + 2 * F + F + 2 * F, 2 * F + (F + E), 6 + 2),
    ("unfused", "fp8", (E + F) + F + 2 * F + 2 * F + F + 2 * F, 2 * F + (F + E), 6 + 2),  # the output layer is bf16
    ("unfused", "fp32", F + 2 * F + 2 * F + F + 2 * F, 2 * F, 5 + 1),  # .float() of fp32 logits returns them
    ("fused", "bf16", E, 2 * E, 1 + 1),
    ("megatron_fused", "bf16", (E + F) + 2 * F + 2 * F + 2 * F, (2 * F + E) + 2 * F, 4 + 2),
]


@pytest.mark.parametrize(("kernel", "precision", "forward", "backward", "kernels"), CLOSED_FORMS)
def test_cross_entropy_hbm_bytes_per_logit(kernel, precision, forward, backward, kernels):
    assert _loss_bytes_per_logit(kernel, precision) == (forward, backward)
    shard = Shard(seq_len=2048, micro_batch=2, cross_entropy=kernel, precision=precision)
    ops = output_ops(MODEL, shard)
    assert sum(op.name.startswith("ce_") for phase in ops.values() for op in phase) == kernels


def test_unfused_cross_entropy_copies_no_16_bit_logits():
    """Round 26: Megatron-LM's unfused loss has no contiguous copy of the logits (the 2 + 2 B a logit each way that
    commit 9869462 charged without a source line); every pass but the casts touches fp32 only."""
    ops = output_ops(MODEL, Shard(seq_len=2048, micro_batch=2, cross_entropy="unfused", precision="bf16"))
    names = [op.name for phase in ops.values() for op in phase if op.name.startswith("ce_")]
    assert "ce_copy" not in names
    assert names.count("ce_cast") == 2


def test_llm_foundry_scenarios_use_the_fused_loss_and_megatron_ones_the_unfused():
    assert config.load("mpt-7b-8-h100").training.cross_entropy == "fused"
    assert config.load("megatron-16b-h100").training.cross_entropy == "unfused"


def test_unknown_cross_entropy_kernel_is_refused_naming_the_field():
    data = {"name": "x", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1},
            "model": {"layers": 2, "hidden": 1024, "heads": 8, "vocab": 50368},
            "training": {"global_batch_size": 8, "cross_entropy": "triton"}}
    with pytest.raises(ScenarioError, match="cross_entropy"):
        config.from_dict(data)
