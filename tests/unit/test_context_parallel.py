"""Context-parallel attention as Transformer Engine's p2p ring steps (workload.context_parallel) against closed forms:
the load-balanced causal mask counted chunk by chunk, Megatron's FLOP count, the kernel counts read off TE 1.7-1.11's
AttnFuncWithCP, and the single kernel left unchanged without context parallelism."""

import pytest

from simcluster.core import catalog
from simcluster.spec import config, hardware, model
from simcluster.workload import context_parallel, kernels
from simcluster.workload import ops as workload
from simcluster.workload.ops import Shard, attention_core, layer_ops

LLAMA = model.preset("llama3-8b")
SEQ = 8192


def _mask_tiles(seq_len: int, cp: int, rank: int, source: int) -> float:
    """Unmasked (query, key) pairs of ``rank``'s queries against ``source``'s keys under causal load balancing (rank r
    holds chunks r and 2cp-1-r of 2cp), counted chunk by chunk: an earlier key chunk whole, the diagonal half (the
    triangle, as flash attention's tiles), in tokens squared."""
    chunk = seq_len // (2 * cp)
    mine, theirs = (rank, 2 * cp - 1 - rank), (source, 2 * cp - 1 - source)
    return sum(chunk * chunk * (1.0 if q > k else 0.5 if q == k else 0.0) for q in mine for k in theirs)


@pytest.mark.parametrize("cp", [2, 4, 8])
def test_each_step_covers_exactly_the_unmasked_pairs_of_the_keys_it_holds(cp):
    """Step i of rank r holds the keys of rank r-i: its kernel's tiles (queries x keys, halved when causal) are the
    causal mask's unmasked pairs for those two ranks, so the steps sum to the rank's 1/cp of the causal attention."""
    for rank in range(cp):
        steps = context_parallel.ring_steps(SEQ, cp, rank)
        assert len(steps) == cp
        for i, step in enumerate(steps):
            tiles = step.queries * step.keys * (context_parallel.CAUSAL_TILE_FRACTION if step.causal else 1.0)
            assert tiles == _mask_tiles(SEQ, cp, rank, (rank - i) % cp), (cp, rank, i)
        total = sum(step.tiles(1, 1) for step in steps)
        assert total == pytest.approx(context_parallel.CAUSAL_TILE_FRACTION * 4 * SEQ * SEQ / cp, rel=1e-12)


@pytest.mark.parametrize("cp", [2, 4])
def test_steps_executed_flop_sum_to_the_single_kernels_and_counted_flop_are_conserved(cp):
    """Megatron's count (4 b s_q s h forward, twice backward) is kept over the steps, and what the kernel model executes
    of them (executed_fraction) is the causal attention's tile work: 2 b s^2 h / cp forward, 2.5x backward."""
    shard = Shard(seq_len=SEQ, micro_batch=2, cp=cp)
    h_local = LLAMA.heads * LLAMA.d_head
    forward, backward = (phase.ops for phase in context_parallel.attention(LLAMA, shard))
    single = attention_core(LLAMA, shard)  # the one kernel each way
    assert workload.flop(forward, ("attention",)) == pytest.approx(4 * 2 * SEQ // cp * SEQ * h_local, rel=1e-12)
    assert workload.flop(forward, ("attention",)) == pytest.approx(workload.flop(single[0]), rel=1e-12)
    assert workload.flop(backward, ("attention",)) == pytest.approx(workload.flop(single[1]), rel=1e-12)
    gpu = hardware.gpu("h100-sxm")
    for ops, tiles in ((forward, 2 * 2 * SEQ**2 * h_local / cp), (backward, 2.5 * 2 * 2 * SEQ**2 * h_local / cp)):
        executed = sum(op.flop * kernels.efficiency(op, gpu).executed_flop_ratio
                       for op in ops if op.kind == "attention")
        assert executed == pytest.approx(tiles, rel=1e-12)


def test_causal_tile_fraction_is_the_kernel_models_causal_executed_fraction():
    """The step FLOP convention holds only while the kernel model executes half of a causal kernel's count."""
    assert catalog.load("efficiency")["attention"]["executed_fraction"]["forward"] == \
        context_parallel.CAUSAL_TILE_FRACTION


@pytest.mark.parametrize("cp", [2, 3, 4, 8])
def test_kernel_counts_follow_transformer_engines_ring(cp):
    """Forward on the critical path: K/V pack, per step (a half copy after step 0) the attention, the last lse merge,
    the lse cast and one output merge per step: 3cp + 2, of which the steps after the first (queued on the second
    stream while the step before computes) pay no stream gap: cp + 4 gaps. Backward, rank cp-1 (keys halved): K/V
    copy, lse half, per step attention, dQ, dK/dV concat and accumulation, plus a K/V half copy off the diagonal:
    5cp + 1; rank 0
    (queries halved: Q, O, dO copies; split dQ and dK/dV writes on the diagonal): 7cp + 1."""
    shard = Shard(seq_len=3 * SEQ if cp == 3 else SEQ, micro_batch=1, cp=cp)  # 2cp chunks
    for rank in (0, cp - 1):
        forward = context_parallel.forward(LLAMA, shard, rank)
        assert len(forward.ops) == 3 * cp + 2
        assert kernels.stream_time(forward.ops, hardware.gpu("h100-sxm"), "bf16").kernels == cp + 4
        assert [sum(op.kind == "attention" for op in step) for step in forward.steps] == [1] * cp
    assert len(context_parallel.backward(LLAMA, shard, cp - 1).ops) == 5 * cp + 1
    assert len(context_parallel.backward(LLAMA, shard, 0).ops) == 7 * cp + 1
    layer = layer_ops(LLAMA, shard)
    stepped = context_parallel.apply(LLAMA, shard, layer)  # the layer as the plan times it
    assert len(stepped["forward"]) == len(layer["forward"]) - 1 + 3 * cp + 2
    assert len(stepped["backward_input"]) == len(layer["backward_input"]) - 1 + 5 * cp + 1   # rank cp-1 paces
    assert stepped["backward_weight"] == layer["backward_weight"]


def test_backward_accumulates_each_gradient_once_per_step():
    """dQ (the rank's queries) and dK/dV (the keys of every step) are written once per step of the backward: the
    accumulation kernels move as many elements as the steps' outputs."""
    cp, shard = 4, Shard(seq_len=SEQ, micro_batch=1, cp=4)
    e = shard.activation_bytes_per_element
    for rank in range(cp):
        ops = context_parallel.backward(LLAMA, shard, rank).ops
        steps = context_parallel.ring_steps(SEQ, cp, rank)
        dq = sum(op.hbm_bytes / (2 if op.flop == 0 else 3) / e for op in ops if op.name == "cp_dq_accumulate")
        assert dq == sum(step.queries for step in steps) * LLAMA.heads * LLAMA.d_head
        dkv = sum(op.hbm_bytes / (2 if op.flop == 0 else 3) / e for op in ops if op.name == "cp_dkv_accumulate")
        assert dkv == sum(step.keys for step in steps) * 2 * workload.local_kv_hidden(LLAMA, 1)


def test_each_phase_is_paced_by_its_slowest_rank_on_the_calibration_shapes():
    """Forward, rank cp-1 (every later step halves the keys) is the slowest rank of the ring; backward, the ranks are
    within 1% and rank cp-1 within 0.1% of the slowest, for Llama 3 8B at 8k on H100 at the measured stream gap, as
    ``pacing_ranks`` assumes."""
    gpu = hardware.gpu("h100-sxm")
    for cp in (2, 4):
        shard = Shard(seq_len=SEQ, micro_batch=1, cp=cp)

        def time_s(phase, rank, shard=shard):
            return kernels.stream_time(phase(LLAMA, shard, rank).ops, gpu, "bf16").device_bound_s()

        forward_rank, backward_rank = context_parallel.pacing_ranks(cp)
        assert all(time_s(context_parallel.forward, forward_rank) >= time_s(context_parallel.forward, rank)
                   for rank in range(cp))
        slowest = max(time_s(context_parallel.backward, rank) for rank in range(cp))
        assert time_s(context_parallel.backward, backward_rank) >= 0.999 * slowest


def test_without_context_parallelism_or_transformer_engine_attention_the_layer_is_unchanged():
    """cp = 1, and cp > 1 with kernels Transformer Engine does not run (naive, Triton) or with multi-head latent
    attention: the layer keeps ``attention_core``'s kernels; with TE's fused attention every core op is replaced,
    in the recompute too."""
    for shard in (Shard(seq_len=SEQ, micro_batch=1), Shard(seq_len=SEQ, micro_batch=1, cp=2, attention="flash_triton"),
                  Shard(seq_len=SEQ, micro_batch=1, cp=2, attention="naive")):
        layer = layer_ops(LLAMA, shard)
        assert context_parallel.apply(LLAMA, shard, layer) == layer
    deepseek = config.load("nemo2511-deepseek-v3-256-gb300-fp8").model  # with its MLA widths
    mla_shard = Shard(seq_len=4096, micro_batch=1, cp=2)
    assert deepseek.mla is not None
    assert context_parallel.apply(deepseek, mla_shard, layer_ops(deepseek, mla_shard)) == layer_ops(deepseek, mla_shard)
    shard = Shard(seq_len=SEQ, micro_batch=1, cp=2, recompute="selective")
    stepped = context_parallel.apply(LLAMA, shard, layer_ops(LLAMA, shard))
    assert stepped["recompute"] == context_parallel.attention(LLAMA, shard)[0].ops
    assert sum(op.kind == "attention" for op in stepped["backward_input"]) == 2


def test_cp_exchange_runs_beside_the_steps_that_send():
    """Forward: cp-1 K/V blocks, beside steps 0..cp-2 (not the last); backward: K/V then K/V with their gradients then
    the gradients, 2(cp-1) blocks over cp steps, beside every step."""
    from simcluster.parallel.plan import context_parallel_exchange

    spec = config.load("nemo2409-llama31-8b-8-h100-bf16")
    for cp in (2, 4):
        parallelism = spec.parallelism.model_copy(update={"cp": cp, "dp": 8 // cp})
        scenario = spec.model_copy(update={"parallelism": parallelism})
        exchange = context_parallel_exchange(scenario)
        kv_bytes = 2 * SEQ / cp * workload.local_kv_hidden(LLAMA, 1) * 2
        (fwd_s, fwd_steps, fwd_bytes), (bwd_s, bwd_steps, bwd_bytes) = exchange["forward"], exchange["backward"]
        assert (fwd_steps, fwd_bytes) == (cp - 1, kv_bytes)
        assert bwd_steps == cp and bwd_steps * bwd_bytes == pytest.approx(2 * (cp - 1) * kv_bytes, rel=1e-12)
        shard = workload.shard_for(scenario)
        forward, backward = context_parallel.attention(LLAMA, shard)
        gpu, last = scenario.cluster.gpu, forward.steps[-1]
        assert fwd_s == pytest.approx(kernels.ops_time_s([op for step in forward.steps for op in step], gpu, "bf16")
                                      - kernels.ops_time_s(last, gpu, "bf16"), rel=1e-9)
        assert bwd_s == pytest.approx(kernels.ops_time_s([op for step in backward.steps for op in step], gpu, "bf16"),
                                      rel=1e-12)
