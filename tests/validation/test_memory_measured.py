"""Per-GPU peak memory against peaks measured on real runs: torchtitan (pytorch/torchtitan,
benchmarks/llama3_h100_202412_torchtitan.md at commit 31a17bfd; torchtitan 9dec370, torch 1963fc8, December 2024),
Llama 3.1 on H100 96 GB with FSDP2, torch.compile and Float8. Its "Memory(GiB)" is the caching allocator's peak
reserved bytes (torchtitan/metrics.py: ``memory_stats()["reserved_bytes.all.peak"]``), the maximum over GPUs.

The model counts tensors: ``MemoryBreakdown.allocated_bytes`` (the peak less the runtime's own CUDA context and NCCL
buffers, which the allocator never holds). Reserved is at least that, since the allocator keeps freed blocks cached
and a cached block too small or too large for the next request stays reserved beside it. Each measured peak therefore
bounds the model from above, and what is left below it is the allocator's share, not modelled
(docs/compute-and-memory.md, "Against measured peaks").
"""

import pytest

from simcluster.parallel import memory
from simcluster.spec import config
from simcluster.studies import validation

GIB = 2**30
# The allocator's share left unmodelled: the widest measured gap (Table 6's FSDP 1 row, 17.5% above the model's
# tensors, round 19) plus 2 points. A gap to explain, not a target: before torchtitan's loss was modelled the model
# sat 35-45% below.
RESERVED_OVER_ALLOCATED = 0.20


def _held_out_rows():
    return [pytest.param(c["scenario"], c["peak_reserved_gib"], id=c["scenario"])
            for c in validation.held_out_cases() if "peak_reserved_gib" in c]


def _variant(name: str, training: dict | None = None, parallelism: dict | None = None, nodes: int | None = None):
    """A torchtitan scenario with the keys one table row changes."""
    data = config.load(name).model_dump(mode="json")
    data["training"].update(training or {})
    data["parallelism"].update(parallelism or {})
    if nodes is not None:
        data["cluster"]["nodes"] = nodes
    return config.from_dict(data)


# Table 2: FSDP + CP, Llama 3.1 8B, 8 GPUs, local batch 1, full activation checkpointing; the sequence grows with CP so
# that every GPU holds 32,768 tokens (torchtitan shards states over dp_shard x cp, as zero_stage 3 over dp x cp does).
# (fsdp, cp, sequence, measured GiB)
TABLE_2 = [(8, 1, 32768, 83.9), (4, 2, 65536, 84.2), (2, 4, 131072, 84.0), (1, 8, 262144, 84.5)]
# Table 6: Llama 3.1 405B, 512 GPUs, TP 8, PP 8 (1F1B), FSDP x CP = 8, local batch 8 sequences, full activation
# checkpointing, 8 microbatches of one sequence. (fsdp, cp, sequence, measured GiB)
TABLE_6 = [(8, 1, 32768, 75.3), (4, 2, 65536, 75.9), (2, 4, 131072, 77.1), (1, 8, 262144, 84.9)]


def _table_2(fsdp: int, cp: int, seq: int):
    return _variant("torchtitan-llama31-8b-8-h100-fp8-32k", {"seq_len": seq, "global_batch_size": fsdp},
                    {"dp": fsdp, "cp": cp})


def _table_6(fsdp: int, cp: int, seq: int):
    return _variant("torchtitan-llama31-405b-512-h100-fp8",
                    {"seq_len": seq, "global_batch_size": 8 * fsdp, "micro_batch_size": 1}, {"dp": fsdp, "cp": cp})


def _measured_rows():
    rows = [pytest.param(lambda n=p.values[0]: config.load(n), p.values[1], id=p.values[0]) for p in _held_out_rows()]
    rows += [pytest.param(lambda r=row: _table_2(*r[:3]), row[3], id=f"table2-fsdp{row[0]}-cp{row[1]}")
             for row in TABLE_2]
    rows += [pytest.param(lambda r=row: _table_6(*r[:3]), row[3], id=f"table6-fsdp{row[0]}-cp{row[1]}")
             for row in TABLE_6]
    return rows


def test_the_held_out_rows_carry_the_measured_peaks():
    assert {p.values[0] for p in _held_out_rows()} == {
        "torchtitan-llama31-8b-8-h100-fp8-32k", "torchtitan-llama31-70b-256-h100-fp8",
        "torchtitan-llama31-70b-256-h100-fp8-asynctp", "torchtitan-llama31-405b-512-h100-fp8"}


@pytest.mark.parametrize(("build", "measured_gib"), _measured_rows())
def test_allocated_peak_is_below_the_measured_reserved_peak_by_at_most_the_allocators_share(build, measured_gib):
    allocated = memory.per_gpu_memory(build()).allocated_bytes / GIB
    assert allocated <= measured_gib                                        # reserved >= allocated
    assert allocated >= (1 - RESERVED_OVER_ALLOCATED) * measured_gib


def test_context_parallelism_keeps_the_peak_flat_when_the_sequence_grows_with_it_as_measured():
    # measured: 83.9-84.5 GiB while CP and the sequence go 1 -> 8 and 32K -> 256K (spread 0.7 %); the model must
    # hold the same per-GPU peak (activations and logits scale with s/cp, states shard over dp x cp). Without CP
    # splitting the stored activations and the loss the 256K row would need several times the 32K row's.
    measured = [row[3] for row in TABLE_2]
    modelled = [memory.per_gpu_memory(_table_2(*row[:3])).total_bytes / GIB for row in TABLE_2]
    measured_spread = max(measured) / min(measured) - 1
    assert max(modelled) / min(modelled) - 1 <= measured_spread + 0.01   # tolerance: 1 point beyond the measured


# Tables 1 and 3: Llama 3.1 8B, local batch 2, sequence 8192, selective activation checkpointing, on 8 GPUs (FSDP 8)
# and on 128 (FSDP 128); the per-GPU activations are the same, so the difference is what FSDP sharding over 8 rather
# than 128 ranks leaves of the model states. (technique, precision, measured on 8, measured on 128) in GiB.
TABLES_1_AND_3 = [("FSDP", "bf16", 82.4, 67.0), ("FSDP + torch.compile", "bf16", 77.0, 62.0),
                  ("FSDP + torch.compile + Float8", "fp8", 76.8, 61.8)]


def _table_1_or_3(fsdp: int, precision: str):
    return _variant("torchtitan-llama31-8b-8-h100-fp8-32k",
                    {"seq_len": 8192, "global_batch_size": 2 * fsdp, "micro_batch_size": 2, "precision": precision,
                     "activation_recompute": "selective",
                     "fp8_recipe": "torchao_tensorwise" if precision == "fp8" else "delayed"},  # delayed: the default
                    {"dp": fsdp}, nodes=fsdp // 8)


@pytest.mark.parametrize(("technique", "precision", "on_8", "on_128"), TABLES_1_AND_3)
def test_fsdp_sharding_frees_what_was_measured_between_8_and_128_gpus(technique, precision, on_8, on_128):
    # model: 2 + 4 + 12 bytes per parameter over dp (Megatron's fp32 gradient accounting) gives 15.8 GiB; torchtitan
    # holds 4 + 4 + 8 (fp32 sharded parameters, gradients, Adam) and the allocator caches the freed gradient blocks:
    # measured 15.0-15.4 GiB. Tolerance 10%. Sharding the optimizer states alone would free 10.5 GiB, nothing sharded
    # nothing.
    freed = (memory.per_gpu_memory(_table_1_or_3(8, precision)).total_bytes
             - memory.per_gpu_memory(_table_1_or_3(128, precision)).total_bytes) / GIB
    assert freed == pytest.approx(on_8 - on_128, rel=0.10)
