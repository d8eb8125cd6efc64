"""Context-parallel attention is charged alike in the Llama 3 8B BF16/FP8 pair, because Transformer Engine 1.8 and
1.10/1.11 run the same bf16 p2p loop (docs/calibration/round-20.md "Round 20: context-parallel attention as each
Transformer Engine release runs it").

Read in NVIDIA/TransformerEngine ``transformer_engine/pytorch/attention.py``: a TE 1.7/1.8-era copy
(``AttnFuncWithCP``, flash-attn 2.0.6-2.5.8) and the 1.10/1.11-era commit 001b736 (``AttnFuncWithCPAndKVP2P``). At
cp 2 with a causal mask both run the same steps on cuDNN's ``F16_arbitrary_seqlen`` (FusedAttention preferred on
sm90 in both): the same half-sequence copies, the fp64 LSE merges and one output correction per step, two streams,
the same waits. With ``fp8_dpa`` off (NeMo's recipes) the 1.8 CP function takes no fp8 argument and 1.10/1.11
passes ``fp8=self.fp8 and fp8_dpa`` = False, so the FP8 row's attention is the BF16 row's bf16 loop. 1.10/1.11 only
adds a few int32 ``cu_seqlens`` divisions and ``torch.equal`` checks, on the BF16 (24.09) side.

So nothing keyed on the release, the container or the GEMM precision may separate the two rows' CP attention; a
change that does needs a source and this test updated with it."""

from __future__ import annotations

from simcluster.spec import config
from simcluster.workload import kernels
from simcluster.workload.ops import attention_core, shard_for

BF16_TE_1_10 = "nemo2409-llama31-8b-8-h100-bf16"   # NeMo 24.09 container: TE 1.10 / 1.11
FP8_TE_1_8 = "nemo2407-llama3-8b-8-h100-fp8"       # NeMo 24.07 container: TE 1.8


def _core(name: str):
    scenario = config.load(name)
    forward, backward = attention_core(scenario.model, shard_for(scenario))
    return scenario, forward, backward


def test_pair_runs_the_same_cp_attention_kernels():
    bf16, bf16_fwd, bf16_bwd = _core(BF16_TE_1_10)
    fp8, fp8_fwd, fp8_bwd = _core(FP8_TE_1_8)
    # the layout the loop sees: cp 2 of sequence 8192 on one H100 node, TE 1.x, the same attention kernel (cuDNN)
    for s in (bf16, fp8):
        assert (s.parallelism.cp, s.training.seq_len, s.parallelism.te_version) == (2, 8192, 1)
    assert bf16.training.attention == fp8.training.attention
    assert bf16_fwd == fp8_fwd and bf16_bwd == fp8_bwd


def test_fp8_gemms_do_not_time_the_cp_attention():
    """fp8_dpa off: the FP8 row's attention is timed as the BF16 row's, to the last bit."""
    times = {}
    for name in (BF16_TE_1_10, FP8_TE_1_8):
        scenario, forward, backward = _core(name)
        gpu, precision = scenario.cluster.gpu, scenario.training.precision
        times[name] = (kernels.ops_time_s(forward, gpu, precision), kernels.ops_time_s(backward, gpu, precision))
    assert times[BF16_TE_1_10] == times[FP8_TE_1_8]
    assert all(t > 0 for t in times[FP8_TE_1_8])
