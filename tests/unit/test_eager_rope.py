"""Megatron-Core's unfused RoPE (workload/eager_rope.py; data/mcore_versions.yaml ``unfused_rope``) against a count
by hand from its source, megatron-core 0.9.0's ``apply_rotary_pos_emb_bshd`` (rot_dim = d, so t_pass is empty):

forward, per rotated tensor of E elements, elements read + written: t * cos_ 2E, -x2 (half) E, cat((-x2, x1)) 2E,
* sin_ 2E, + 3E, cat((t, t_pass)) 2E: 12E in 6 kernels, plus cos, cast, sin, cast on the [s, 1, 1, d] fp32
frequencies; backward (autograd): grad * sin_ 2E, neg (half) E, chunk's cat 2E, grad * cos_ 2E, add_ of the two
branches 3E, the empty slice's zero-filled gradient E and its add_ 3E: 14E in 7 kernels. Fused RoPE moves 2E a phase
in one kernel for q and k together (ops.layer_ops). Fails if a kernel or a byte is dropped or double counted, if the
eager path reaches a run with rope fusion or another stack, or if k's GQA width is taken as q's.
"""

import pytest

from simcluster.spec import config
from simcluster.workload import eager_rope
from simcluster.workload.ops import layer_ops, shard_for

ROPE = "rope"


def rope_ops(ops):
    return [op for op in ops if op.name.startswith(ROPE)]


def test_release_run_rotates_q_and_k_with_the_eager_kernels():
    scenario = config.load("mcore09-mixtral-8x22b-128-h100")   # --no-rope-fusion, TP 2, sequence 4096
    shard = shard_for(scenario)
    assert shard.eager_rope
    m = scenario.model
    q = 4096 * (m.heads // 2) * m.d_head          # 24 query heads a TP rank
    k = 4096 * (m.kv_heads // 2) * m.d_head       # 4 key heads a TP rank (GQA 8 groups)
    freqs = 4096 * m.d_head
    layer = layer_ops(m, shard)
    forward, backward = rope_ops(layer["forward"]), rope_ops(layer["backward_input"])
    assert len(forward) == 2 * (6 + 4) and len(backward) == 2 * 7
    e = 2
    freq_bytes = 2 * ((2 * 4) + (4 + e) + (2 * 4) + (4 + e)) * freqs   # cos, cast, sin, cast, for q and for k
    assert sum(op.hbm_bytes for op in forward) == pytest.approx(12 * (q + k) * e + freq_bytes)
    assert sum(op.hbm_bytes for op in backward) == pytest.approx(14 * (q + k) * e)
    assert all(op.kind == "memory" for op in forward + backward)


@pytest.mark.parametrize("name", ["mcore-mixtral-8x7b-64-h100", "moezoo-mixtral-8x22b-128-h100"])
def test_fused_rope_stays_one_kernel_a_phase(name):
    scenario = config.load(name)   # rope fusion on (Megatron-LM's default; the zoo's 0.14)
    shard = shard_for(scenario)
    assert not shard.eager_rope and not eager_rope.runs(scenario)
    m = scenario.model
    tp = scenario.parallelism.tp
    elements = 4096 * (m.heads // tp + m.kv_heads // tp) * m.d_head
    layer = layer_ops(m, shard)
    for phase in (layer["forward"], layer["backward_input"]):
        (op,) = rope_ops(phase)
        assert op.hbm_bytes == pytest.approx(2 * elements * 2)


def test_eager_rope_is_megatron_cores_only():
    data = config.load("mcore09-mixtral-8x7b-64-h100").model_dump(mode="json", exclude_none=True)
    assert eager_rope.runs(config.from_dict(data))
    data["training"]["rope_fusion"] = True
    assert not eager_rope.runs(config.from_dict(data))


def test_mscale_multiplies_from_release_0_10():
    """0.10 on, ``cos_ = (torch.cos(freqs) * mscale).to(t.dtype)`` (rope_utils, read in the 0.10.0, 0.13.0 and 0.16.0
    wheels; 0.8.0 and 0.9.0 have no mscale): one fp32 mul (read + write, 8 bytes a frequency) after cos and one after
    sin, per rotated tensor; the tensor kernels and the backward unchanged."""
    data = config.load("mcore09-mixtral-8x7b-64-h100").model_dump(mode="json", exclude_none=True)
    runs = {}
    for version in ("0.9", "0.10"):
        data["training"]["mcore_version"] = version
        scenario = config.from_dict(data)
        shard = shard_for(scenario)
        assert shard.eager_rope == version
        layer = layer_ops(scenario.model, shard)
        runs[version] = rope_ops(layer["forward"]), rope_ops(layer["backward_input"])
    (fwd9, bwd9), (fwd10, bwd10) = runs["0.9"], runs["0.10"]
    assert len(fwd10) - len(fwd9) == 2 * 2 and len(bwd10) == len(bwd9) == 2 * 7
    freqs = scenario.training.seq_len // scenario.parallelism.cp * scenario.model.d_head
    extra = sum(op.hbm_bytes for op in fwd10) - sum(op.hbm_bytes for op in fwd9)
    assert extra == pytest.approx(2 * 2 * (2 * 4) * freqs)   # q and k, cos and sin, fp32 read + write
    assert [op.name for op in fwd10[:6]] == ["rope_cos", "rope_mscale", "rope_cast", "rope_sin", "rope_mscale",
                                             "rope_cast"]


def test_eager_rope_needs_megatron_cores_stack():
    """rope_fusion false stated on torchtitan (rotary, not Megatron-Core): not Megatron-Core's eager RoPE."""
    data = config.load("torchtitan-llama31-405b-128-h100-fp8").model_dump(mode="json", exclude_none=True)
    data["training"]["rope_fusion"] = False
    scenario = config.from_dict(data)
    assert scenario.model.position == "rope" and not scenario.megatron_core
    assert not eager_rope.runs(scenario) and eager_rope.release(scenario) is None
