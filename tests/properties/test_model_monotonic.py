"""FLOP and memory grow with layers, width and batch, whatever the shape (hypothesis)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from simcluster.parallel import memory
from simcluster.spec.model import TransformerSpec
from simcluster.workload import ops as workload
from simcluster.workload.ops import Shard

layers = st.integers(1, 64)
heads = st.sampled_from([4, 8, 16])
head_dims = st.sampled_from([32, 64, 128])
batches = st.integers(1, 16)
seq_lens = st.sampled_from([128, 512, 2048])
mlps = st.sampled_from(["gelu", "swiglu", "squared_relu"])
recomputes = st.sampled_from(["none", "selective", "full"])
attentions = st.sampled_from(["flash", "flash2", "naive"])


def spec(n_layers, n_heads, head_dim, mlp="gelu"):
    return TransformerSpec(layers=n_layers, hidden=n_heads * head_dim, heads=n_heads, vocab=32000, mlp=mlp,
                           norm="rmsnorm" if mlp == "swiglu" else "layernorm")


def gpu_bytes(model, seq_len, micro_batch, recompute, attention, tp=1, pp=1):
    """States of all parameters on this stage (no ZeRO) plus its peak activations under 1F1B."""
    shard = Shard(seq_len=seq_len, micro_batch=micro_batch, tp=tp, recompute=recompute, attention=attention)
    params = memory.stage_params(model, tp, pp, 0)
    activations = memory.stage_activation_bytes(model, shard, "1f1b", pp, 1, 8, 0)
    return 16 * params + activations + memory.workspace_bytes(model, shard)


settings_ = settings(max_examples=40, deadline=None)


@settings_
@given(layers, st.integers(1, 16), heads, head_dims, mlps, batches, seq_lens, recomputes)
def test_flop_increase_with_layers(n_layers, extra, n_heads, head_dim, mlp, batch, seq_len, recompute):
    small, large = spec(n_layers, n_heads, head_dim, mlp), spec(n_layers + extra, n_heads, head_dim, mlp)
    assert (workload.model_flop_per_step(large, seq_len, batch)
            > workload.model_flop_per_step(small, seq_len, batch))
    assert (workload.hardware_flop_per_step(large, seq_len, batch, recompute)
            > workload.hardware_flop_per_step(small, seq_len, batch, recompute))


@settings_
@given(layers, heads, head_dims, st.sampled_from([2, 3, 4]), mlps, batches, seq_lens)
def test_flop_increase_with_hidden(n_layers, n_heads, head_dim, factor, mlp, batch, seq_len):
    small, large = spec(n_layers, n_heads, head_dim, mlp), spec(n_layers, n_heads, head_dim * factor, mlp)
    assert (workload.model_flop_per_step(large, seq_len, batch)
            > workload.model_flop_per_step(small, seq_len, batch))


@settings_
@given(layers, heads, head_dims, mlps, batches, st.integers(1, 16), seq_lens, recomputes)
def test_flop_increase_with_batch(n_layers, n_heads, head_dim, mlp, batch, extra, seq_len, recompute):
    m = spec(n_layers, n_heads, head_dim, mlp)
    assert (workload.model_flop_per_step(m, seq_len, batch + extra)
            > workload.model_flop_per_step(m, seq_len, batch))
    phases = [workload.layer_ops(m, Shard(seq_len, mb, recompute=recompute)) for mb in (batch, batch + extra)]
    per_layer = [workload.flop(sum(ops.values(), [])) for ops in phases]
    assert per_layer[1] > per_layer[0]


@settings_
@given(layers, st.integers(1, 16), heads, head_dims, mlps, batches, seq_lens, recomputes, attentions)
def test_memory_increases_with_layers(n_layers, extra, n_heads, head_dim, mlp, batch, seq_len, recompute,
                                      attention):
    small, large = spec(n_layers, n_heads, head_dim, mlp), spec(n_layers + extra, n_heads, head_dim, mlp)
    assert (gpu_bytes(large, seq_len, batch, recompute, attention)
            > gpu_bytes(small, seq_len, batch, recompute, attention))


@settings_
@given(layers, heads, head_dims, st.sampled_from([2, 3, 4]), mlps, batches, seq_lens, recomputes, attentions)
def test_memory_increases_with_hidden(n_layers, n_heads, head_dim, factor, mlp, batch, seq_len, recompute,
                                      attention):
    small, large = spec(n_layers, n_heads, head_dim, mlp), spec(n_layers, n_heads, head_dim * factor, mlp)
    assert (gpu_bytes(large, seq_len, batch, recompute, attention)
            > gpu_bytes(small, seq_len, batch, recompute, attention))


@settings_
@given(layers, heads, head_dims, mlps, batches, st.integers(1, 16), seq_lens, recomputes, attentions)
def test_memory_increases_with_micro_batch(n_layers, n_heads, head_dim, mlp, batch, extra, seq_len, recompute,
                                          attention):
    m = spec(n_layers, n_heads, head_dim, mlp)
    assert (gpu_bytes(m, seq_len, batch + extra, recompute, attention)
            > gpu_bytes(m, seq_len, batch, recompute, attention))
