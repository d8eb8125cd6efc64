"""Transformer Engine's context-parallel p2p ring beside its attention steps (workload/cp_ring.py;
docs/calibration/round-34.md "Round 34: the context-parallel ring, kernel by kernel").

Truth: the launches counted in TE's source, rank 0, causal sbhd at micro batch 1, bf16 ring, fused attention
(TE 2.x attention/dot_product_attention/context_parallel.py @015d2257; TE 1.x attention.py, stored ids 3102555733,
908186293, 55236154357). Forward, TE 2.x: the K/V cat, cp attention calls, the LSE clone, cp - 2 LSE merges beside
the next step and the last one after it, cp output corrections; TE 1.x adds the zero-filled output, the fp64 cast
and its fp32 cast back. Backward (one stream): the LSE half copy, the K/V copy, cp attention calls, cp + 1 dQ
copies / adds, and dK / dV moved as two tensors (TE 2.x: 2cp + 2) or concatenated and moved as one (TE 1.x: cp cats
and cp + 1 copies / adds). The cu_seqlens divisions by release: TE 1.10 on (NeMo 24.09's container, the 1.10/1.11-era
copy id 55236154357) forward 4 in series and 3 a later step beside the other stream's attention, backward cp - 1;
TE 1.7-1.9 (the 1.7/1.8-era copy) one a later forward step and cp - 1 backward."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest

from simcluster.core import catalog
from simcluster.core.errors import ScenarioError
from simcluster.spec import config
from simcluster.workload import cp_ring, kernels
from simcluster.workload.ops import cp_ring_ops, layer_ops, shard_for

# Llama 3.1 8B on one rank at tp 1: 32 query heads and 8 key/value heads of 128, bf16
B, Q_HIDDEN, KV_HIDDEN, HEADS, E = 1, 32 * 128, 8 * 128, 32, 2
CP_ROW = "nemo2409-llama31-8b-8-h100-bf16"   # TE 1.10 (NeMo 24.09), cp 2, seq 8192
TE18_ROW = "nemo2407-llama3-8b-8-h100-fp8"   # TE 1.8 (NeMo 24.07), cp 2, seq 8192


@contextlib.contextmanager
def ring_switch(on):
    """efficiency.yaml host_overhead.cp_ring_kernels set in the loaded table the simulator reads, restored after."""
    table = catalog.load("efficiency")["host_overhead"]
    saved = table.get("cp_ring_kernels", False)
    table["cp_ring_kernels"] = on
    try:
        yield
    finally:
        table["cp_ring_kernels"] = saved


def test_the_ring_is_off_in_the_data_and_its_switch_checked():
    """Round 34's decision: the count is sourced, the fitted gap is no price for it (cp_ring.applied)."""
    assert cp_ring.applied() is False
    assert shard_for(config.load(CP_ROW)).cp_ring_te == 0
    with ring_switch(True):
        assert shard_for(config.load(CP_ROW)).cp_ring_te == 1
    with ring_switch("false"), pytest.raises(ScenarioError, match="cp_ring_kernels"):
        cp_ring.applied()


def _ring(direction, cp, te, chunk=4096, blackwell=False):
    return getattr(cp_ring, direction)(cp, te, B, chunk, Q_HIDDEN, KV_HIDDEN, HEADS, E, blackwell)


def _launches(ring, nccl=False):
    return [k for k in ring if (k.name == cp_ring.NCCL_LAUNCH) == nccl]


# launches besides the first attention call, per layer: (forward all, forward in series, backward all), from source
SOURCE_COUNTS = {1: lambda cp: (3 * cp + 3, cp + 3, 4 * cp + 3), 2: lambda cp: (3 * cp, cp + 2, 4 * cp + 4)}


@pytest.mark.parametrize("te", [1, 2])
@pytest.mark.parametrize("cp", [2, 4, 8])
def test_launch_counts_match_the_source(te, cp):
    forward, backward = _launches(_ring("forward", cp, te)), _launches(_ring("backward", cp, te))
    total, serial, backward_total = SOURCE_COUNTS[te](cp)
    assert len(forward) == total
    assert sum(not k.hidden for k in forward) == serial
    assert len(backward) == backward_total
    assert all(not k.hidden for k in backward)          # the backward loop runs on one stream
    # the attention calls past the first: cp - 1 each way, hidden forward (the other stream), in series backward
    steps = [k for k in forward if k.name == cp_ring.ATTENTION_STEP]
    assert len(steps) == cp - 1 and all(k.hidden and k.hbm_bytes == 0 for k in steps)
    assert sum(k.name == cp_ring.ATTENTION_STEP for k in backward) == cp - 1


@pytest.mark.parametrize(("cp", "te", "blackwell", "calls"), [(2, 1, False, 1), (2, 2, False, 1), (2, 2, True, 2),
                                                               (4, 1, False, 2), (4, 2, False, 2)])
def test_nccl_calls_batched_only_at_cp2(cp, te, blackwell, calls):
    """batch_p2p_comm: TE 1.x at cp 2; TE 2.x at cp 2 below compute capability 10.0; else isend + irecv."""
    assert len(_launches(_ring("forward", cp, te, blackwell=blackwell), nccl=True)) == calls * (cp - 1)
    assert len(_launches(_ring("backward", cp, te, blackwell=blackwell), nccl=True)) == calls * cp


@pytest.mark.parametrize("te", [1, 2])
@pytest.mark.parametrize("cp", [2, 4, 8])
def test_backward_bytes_in_closed_form(te, cp):
    """Rank 0: dQ's second half copied then added cp - 2 times, at the last step its first half copied and second
    added: b c hq e (3cp + 1) / 2; dK and dV copied, added cp - 2 times, at the last step half added and half copied:
    b c hkv e (6cp - 3); TE 1.x's cat of dK and dV at every step, 4 b c hkv e each; the LSE half copy and the K/V
    copy into the send buffer."""
    c = 4096
    by_name = {}
    for k in _ring("backward", cp, te, c):
        by_name[k.name.split("_")[1]] = by_name.get(k.name.split("_")[1], 0.0) + k.hbm_bytes
    assert by_name["dq"] == pytest.approx(B * c * Q_HIDDEN * E * (3 * cp + 1) / 2)
    dkv = B * c * KV_HIDDEN * E * (6 * cp - 3) + (cp * 4 * B * c * KV_HIDDEN * E if te == 1 else 0)
    assert by_name["dkv"] == pytest.approx(dkv)
    assert by_name["kv"] == pytest.approx(4 * B * c * KV_HIDDEN * E)
    assert by_name["lse"] == pytest.approx(2 * B * HEADS * c / 2 * 4)


@pytest.mark.parametrize("cp", [2, 4, 8])
def test_forward_output_corrections_in_closed_form(cp):
    """TE 2.x rank 0: the first step's correction reads its output and writes out (2 O bytes); every later step's,
    on the second half, reads out and the step's and writes out (1.5 O); each reads the LSE and the step's (fp32).
    TE 1.x: the first reads the zero-filled out too (3 O), the later ones read the fp64 LSE's half."""
    c = 4096
    out, lse = B * c * Q_HIDDEN * E, B * HEADS * c
    corrections = {te: sum(k.hbm_bytes for k in _ring("forward", cp, te, c) if k.name == "cp_out_correction")
                   for te in (1, 2)}
    assert corrections[2] == pytest.approx(2 * out + 8 * lse + (cp - 1) * (1.5 * out + 8 * lse / 2))
    assert corrections[1] == pytest.approx(3 * out + 8 * lse + (cp - 1) * (1.5 * out + 12 * lse / 2))


def test_cp1_has_no_ring_and_layers_unchanged():
    assert _ring("forward", 1, 2) == [] and _ring("backward", 1, 1) == []
    scenario = config.load("nemo2409-llama31-8b-8-h100-bf16")
    shard = dataclasses.replace(shard_for(scenario), cp=1, cp_ring_te=1)
    assert layer_ops(scenario.model, shard) == layer_ops(scenario.model, dataclasses.replace(shard, cp_ring_te=0))


def test_cp_row_layer_carries_the_ring():
    """The TE 1.10 cp 2 row: a layer's forward stream has cp + 3 = 5 more kernels in series and 5 more host-only
    launches (an attention call, three merges' kernels at step 1, one NCCL call), plus TE 1.10's cu_seqlens divisions
    (4 in series, 3 beside step 0's attention); its backward 4cp + 3 = 11 more kernels, one division and 2 NCCL calls;
    the ring's bytes at the GPU's HBM rate."""
    scenario = config.load(CP_ROW)
    with ring_switch(True):
        shard = shard_for(scenario)
    assert (shard.cp, shard.cp_ring_te, shard.cp_ring_divisions) == (2, 1, cp_ring.Divisions(4, 3, 1))
    gpu, precision = scenario.cluster.gpu, scenario.training.precision
    with_ring, without = (layer_ops(scenario.model, s) for s in (shard, dataclasses.replace(shard, cp_ring_te=0)))
    for phase, serial, hidden in (("forward", 5 + 4, 5 + 3), ("backward_input", 11 + 1, 2)):
        added = [op for op in with_ring[phase] if op not in without[phase]]
        assert sum(op.name == kernels.HOST_ONLY_LAUNCH for op in added) == hidden
        more = kernels.stream_time(with_ring[phase], gpu, precision).kernels
        assert more - kernels.stream_time(without[phase], gpu, precision).kernels == serial
    ring = cp_ring.forward(2, 1, 1, 4096, Q_HIDDEN, KV_HIDDEN, HEADS, E, divisions=shard.cp_ring_divisions)
    ring_bytes = sum(k.hbm_bytes for k in ring)
    added_s = (kernels.stream_time(with_ring["forward"], gpu, precision).device_s
               - kernels.stream_time(without["forward"], gpu, precision).device_s)
    hidden_bytes = sum(k.hbm_bytes for k in ring if k.hidden)
    assert hidden_bytes > 0   # the zero-fill and the LSE clone and cast at step 1, under the other stream's attention
    assert added_s == pytest.approx((ring_bytes - hidden_bytes) / (gpu.hbm_bandwidth * kernels.hbm_fraction(gpu.name)),
                                    rel=1e-6)


def test_a_host_only_launch_has_no_stream_gap():
    """A launch onto another stream (the ring's hidden kernels, NCCL calls) costs the host, not this stream: no gap,
    as ``StreamTime`` counts it, while a kernel in series pays the fitted gap."""
    host = kernels.host_model()
    ring = cp_ring_ops(cp_ring.forward(2, 2, B, 4096, Q_HIDDEN, KV_HIDDEN, HEADS, E))
    gaps = [host.gap_s(op) for op in ring]
    assert gaps.count(0.0) == sum(op.name == kernels.HOST_ONLY_LAUNCH for op in ring) == 3
    assert [gap for gap in gaps if gap] == [host.kernel_gap_s] * 4


@pytest.mark.parametrize(("te", "release", "divisions"), [(1, "1.10", (4, 3, 1)), (1, "1.11", (4, 3, 1)),
                                                           (1, "1.8", (0, 1, 1)), (1, "1.7", (0, 1, 1)),
                                                           (1, "1.6", (0, 0, 0)), (1, None, (0, 0, 0)),
                                                           (2, "2.7", (0, 0, 0))])
def test_seqlens_divisions_by_release(te, release, divisions):
    """(in series before the first attention, a later forward step, a backward call but the last): the 1.10/1.11-era
    loop's entry, step-0 and per-step divisions; the 1.7/1.8-era loop's ``cu_seqlens_q // 2`` in the half-query calls;
    TE 2.x's cached lengths none; an unknown or earlier release not guessed."""
    assert cp_ring.seqlens_divisions(te, release) == cp_ring.Divisions(*divisions)


@pytest.mark.parametrize("cp", [2, 4, 8])
@pytest.mark.parametrize("release", ["1.8", "1.10"])
def test_seqlens_divisions_counted_from_the_source(cp, release):
    """Rank 0. TE 1.10: forward ``cu_seqlens_{q,kv}_padded // cp`` on entry and step 0's two ``// cp`` in series, each
    later step's ``cu_seqlens_q // (2 cp)``, ``cu_seqlens_kv // cp`` and ``cu_seqlens_q_padded // 2`` on its stream
    beside the other's attention; backward one ``// 2`` in each call but the last (one stream). TE 1.8: the ``// 2``
    alone, forward a later step, backward a call but the last. int32 lengths of b + 1 entries, read and written."""
    divisions = cp_ring.seqlens_divisions(1, release)
    added = {}
    for direction in ("forward", "backward"):
        plain = _ring(direction, cp, 1)
        divided = getattr(cp_ring, direction)(cp, 1, B, 4096, Q_HIDDEN, KV_HIDDEN, HEADS, E, False, divisions)
        extra = [k for k in divided if k.name == cp_ring.SEQLENS_DIVIDE]
        assert len(divided) - len(plain) == len(extra)
        assert all(k.hbm_bytes == 2 * (B + 1) * 4 for k in extra)
        added[direction] = (sum(not k.hidden for k in extra), sum(k.hidden for k in extra))
    expected = {"1.10": {"forward": (4, 3 * (cp - 1)), "backward": (cp - 1, 0)},
                "1.8": {"forward": (0, cp - 1), "backward": (cp - 1, 0)}}
    assert added == expected[release]


def test_te_1_8_row_runs_the_1_8_divisions():
    """NeMo 24.07's container runs TE 1.8, 24.09's 1.10 (NeMo 24.09 user guide, Software Component Versions)."""
    assert config.container_te("0.8") == "1.8" and config.container_te("0.9") == "1.10"
    with ring_switch(True):
        shard = shard_for(config.load(TE18_ROW))
    assert (shard.cp, shard.cp_ring_te, shard.cp_ring_divisions) == (2, 1, cp_ring.Divisions(0, 1, 1))
