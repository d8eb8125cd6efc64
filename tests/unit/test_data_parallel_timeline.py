"""The distributed optimizer's step as Megatron-Core runs it (core_r0.5.0, megatron/core/distributed/
param_and_grad_buffer.py and megatron/core/optimizer/distrib_optimizer.py), checked on the engine's timeline:

- a bucket's gradient reduce-scatter is launched by the grad-ready hook of its last parameter, only on the last
  microbatch (``no_sync`` clears ``is_last_microbatch`` for the others), and all of them go to one NCCL
  communicator (the data-parallel process group), whose collectives run one after another;
- the updated parameters are all-gathered bucket by bucket on the same communicator: the first from
  ``zero_grad`` at the step's start, each next one from the forward pre-hook that waits for the one before, and
  each part of the first microbatch's forward waits for its own bucket; later microbatches wait for nothing;
- one collective of a group with one GPU per node takes NCCL's ring time: baseLat + (n - 1) hwLat[NET] per step
  + S (n - 1) / n / busbw (tuning.cc, Ring/Simple: 8.4 us and 14 us; busbw 47 GB/s per NDR NIC, nccl-tests#290),
  less what Simple's two slices per chunk hide: every step after the first takes max(c, hwLat + c/2) instead of
  hwLat + c, c = S / n / busbw (src/include/collectives.h SlicePerChunk = 4/2).
"""

from __future__ import annotations

import pytest

from simcluster.engine import simulate
from simcluster.spec import config

DP = 16
SIMPLE_BASE_S = 8.4e-6       # NCCL tuning.cc baseLat, Ring/Simple
SIMPLE_NET_STEP_S = 14.0e-6  # NCCL tuning.cc hwLat[NET], Ring/Simple
NIC_BUSBW = 47e9             # NDR 400 Gb/s: "46-48 GB/s per NIC" (AddyLaddy, NVIDIA/nccl-tests#290)
MICROBATCHES = 4


@pytest.fixture(scope="module")
def rank0():
    # TP 8 fills each node: every data-parallel group has one GPU on each of 16 nodes, one NIC per rank (a rail)
    spec = config.from_dict({
        "name": "t",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": DP, "nic": "connectx-7",
                    "topology": "rail-fat-tree"},
        "model": {"layers": 8, "hidden": 4096, "heads": 32, "vocab": 32000},
        "training": {"seq_len": 2048, "global_batch_size": DP * MICROBATCHES, "micro_batch_size": 1,
                     "precision": "bf16"},
        "parallelism": {"tp": 8, "pp": 1, "dp": DP, "sequence_parallel": True, "zero_stage": 1,
                        "overlap_param_gather": True, "grad_reduce_dtype": "fp32", "grad_bucket_size": "50 MB"},
        "network": "analytic",
    })
    events = simulate(spec).events
    return events[events["rank"] == 0].reset_index(drop=True)


def _named(frame, prefix, microbatch=None):
    rows = frame[frame["name"].str.startswith(prefix)]
    if microbatch is not None:
        rows = rows[rows["microbatch"] == microbatch]
    return rows.sort_values("start_s").reset_index(drop=True)


def _ring_s(size_bytes):
    step_s = size_bytes / DP / NIC_BUSBW
    first = SIMPLE_NET_STEP_S + step_s
    return SIMPLE_BASE_S + first + (DP - 2) * max(step_s, SIMPLE_NET_STEP_S + step_s / 2)


def test_each_collective_takes_nccl_ring_time_of_one_gpu_per_node(rank0):
    collectives = rank0[rank0["name"].str.startswith(("grad reduce_scatter", "param all_gather"))]
    assert len(collectives) > 0
    for _, row in collectives.iterrows():
        assert row["end_s"] - row["start_s"] == pytest.approx(_ring_s(row["bytes"]), rel=1e-6), row["name"]


# Megatron-Core's buckets of this model by hand (parameters per TP rank, registration order per layer: proj weight
# and bias, qkv's LayerNorm, qkv weight and bias, fc1's LayerNorm, fc1 weight and bias, fc2 weight and bias; tied
# embeddings with learned positions; the parameters walked in reverse, a bucket closed at >= 50 MB / 4 B = 12.5M
# elements; every end below a multiple of dp 16): mcore_buckets, docs/calibration/round-23.md "Round 23"
PROJ, QKV, FC1, FC2 = 4096 * 512 + 4096, 3 * 4096 * 512 + 1536, 4096 * 2048 + 2048, 2048 * 4096 + 4096
NORM = 2 * 4096                                  # a LayerNorm's weight and bias
EMBEDDING = 32000 // 8 * 4096 + 2048 * 4096      # word (vocabulary split by TP) and learned positions
TOP = NORM + QKV + NORM + PROJ                   # a layer above its fc1: fc1's norm, qkv, qkv's norm, proj
# (lowest layer, elements): the final norm with layer 7's fc2 and fc1; then a period of two layers, three buckets:
# layer k's top with layer k-1's fc2; layer k-1's fc1, its norm and qkv; its qkv norm and proj with layer k-2's MLP
BY_HAND = ([(7, NORM + FC2 + FC1)]
           + [bucket for k in (7, 5, 3, 1) for bucket in ((k - 1, TOP + FC2), (k - 1, FC1 + NORM + QKV),
                                                           (k - 2, NORM + PROJ + FC2 + FC1))][:-1]
           + [(0, NORM + PROJ + EMBEDDING)])


def test_the_buckets_by_hand_conserve_the_ranks_parameters():
    assert [n for _, n in BY_HAND[:4]] == [16_791_552, 16_803_328, 14_691_840, 18_892_800]
    assert len(BY_HAND) == 13 and all(n % DP == 0 for _, n in BY_HAND)
    assert sum(n for _, n in BY_HAND) == 8 * (2 * NORM + PROJ + QKV + FC1 + FC2) + NORM + EMBEDDING


def test_reduce_scatters_start_at_their_buckets_grad_ready_hook_one_at_a_time(rank0):
    last = MICROBATCHES - 1
    parts = _named(rank0, "backward c0 b", last)
    scatters = _named(rank0, "grad reduce_scatter")
    assert len(parts) == 8                            # one backward part a layer
    assert list(scatters["bytes"]) == pytest.approx([4 * n for _, n in BY_HAND])   # fp32, formation order
    # nothing is reduced before the last microbatch's backward (no_sync)
    assert scatters["start_s"].min() >= parts["start_s"].min()
    assert len(_named(rank0, "backward c0", 0)) == 1   # earlier microbatches: one block, no hooks
    previous_end = 0.0
    for k, (low, _) in enumerate(BY_HAND):
        # complete once the backward of its lowest layer (part 7 - low) ends, with its tensor-parallel communication
        part = 7 - low
        ready = rank0[(rank0["microbatch"] == last)
                      & rank0["name"].isin([f"backward c0 b{part}", f"tp comm backward c0 b{part}"])]["end_s"].max()
        assert scatters.loc[k, "start_s"] == pytest.approx(max(ready, previous_end), abs=1e-12)
        previous_end = scatters.loc[k, "end_s"]
    # the optimizer waits for every reduce-scatter (finish_grad_sync)
    assert _named(rank0, "optimizer")["start_s"].iloc[0] >= scatters["end_s"].max()


def test_all_gathers_chain_and_only_the_first_forward_waits(rank0):
    gathers = _named(rank0, "param all_gather")
    parts = _named(rank0, "forward c0 b", 0)
    assert len(parts) == 8 and len(gathers) == len(BY_HAND)
    assert list(gathers["bytes"]) == pytest.approx([2 * n for _, n in BY_HAND[::-1]])   # bf16, forward order
    assert gathers.loc[0, "start_s"] == 0.0          # dispatched by zero_grad at the step's start
    for k in range(1, len(gathers)):                 # one communicator: k+1 runs after k
        assert gathers.loc[k, "start_s"] == pytest.approx(gathers.loc[k - 1, "end_s"], abs=1e-12)
    for k, (low, _) in enumerate(BY_HAND[::-1]):     # the pre-hook of its lowest layer waits for bucket k's gather
        assert parts.loc[low, "start_s"] >= gathers.loc[k, "end_s"] - 1e-12
    for microbatch in range(1, MICROBATCHES):        # the parameters are whole: one block each
        assert len(_named(rank0, "forward c0", microbatch)) == 1
