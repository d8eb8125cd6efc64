"""Round 22's facts audit of the A100 Megatron/DeepSpeed rows (docs/calibration/round-22.md, "Round 22: facts audit of
the MT-NLG, BLOOM and 530B rows"): facts the scenarios carry, held to a second figure their source prints.

- Activation checkpoints: BigScience's 02-28-2022 table (bigscience-workshop/bigscience train/tr11-176B-ml/
  chronicles-prequel.md, "Rebalancing layers") prints each run's memory ("Mem", nvidia-smi's maximum on the nodes that
  hold the embedding). Between a run at micro batch 2 and its twin at 4 only the activations change. With
  DeepSpeed's per-layer checkpointing unpartitioned (the production slurm passes ``--checkpoint-activations
  --deepspeed-activation-checkpointing`` and no ``--partition-activations``), stage 0 keeps each of its layers'
  input, s b h x 2 bytes, for each of the pp microbatches in flight, and recomputes one layer at a time (Korthikanti
  et al. 2022, section 4: sbh(10 + 24/t + 5as/(ht)) bytes under tensor parallelism without sequence parallelism).
  The published difference is that count or a little more (the caching allocator keeps freed blocks), never the
  count with the checkpoints split over the TP ranks, as ``partition_activations`` stores them.
- The same scenarios state what the source states about the run's software: bf16 through DeepSpeed's PipelineEngine
  and the BF16_Optimizer with fp32 gradients, full recompute, Megatron's unfused attention.
"""

import pytest

from simcluster.parallel import memory
from simcluster.spec import config

# (micro batch 2 scenario, micro batch 4 scenario) -> (Mem at micro batch 2, Mem at micro batch 4), GB as printed
TWINS = {
    ("bigscience-prequel-184b-h64-tp8-pp6-mbs2-a100", "bigscience-prequel-184b-h64-tp8-pp6-mbs4-a100"): (61, 72),
    ("bigscience-prequel-178b-h64-tp4-pp12-mbs2-a100", "bigscience-prequel-178b-h64-tp4-pp12-mbs4-a100"): (63, 74),
    ("bigscience-prequel-176b-h64-tp4-pp12-mbs2-a100", "bigscience-prequel-176b-h64-tp4-pp12-mbs4-a100"): (59, 73),
    ("bigscience-prequel-195b-h96-tp4-pp12-mbs2-a100", "bigscience-prequel-195b-h96-tp4-pp12-mbs4-a100"): (65, 79),
}
BF16_BYTES = 2
GIB = 2**30


def stage0_activation_bytes(scenario: config.Scenario, partitioned: bool) -> float:
    """Stage 0's activations at the peak of a step: its layers' checkpointed inputs for pp microbatches in flight
    (1F1B), split over the TP ranks when ``partitioned``, plus one layer's activations while it is recomputed."""
    m, t, p = scenario.model, scenario.training, scenario.parallelism
    s, b, h, a = t.seq_len, t.micro_batch_size, m.hidden, m.heads
    checkpoint = s * b * h * BF16_BYTES / (p.tp if partitioned else 1)
    in_flight = min(p.pp, t.global_batch_size // (b * p.dp))
    recomputed = s * b * h * (10 + 24 / p.tp + 5 * a * s / (h * p.tp))
    return p.layers_per_stage[0] * in_flight * checkpoint + recomputed


@pytest.mark.parametrize("pair", sorted(TWINS))
def test_published_memory_step_is_the_unpartitioned_checkpoints(pair):
    small, large = (config.load(name) for name in pair)
    mem_small, mem_large = TWINS[pair]
    published = (mem_large - mem_small) * GIB  # nvidia-smi reports MiB: read as GiB (1e9 would lower it 7%)
    unpartitioned = stage0_activation_bytes(large, False) - stage0_activation_bytes(small, False)
    partitioned = stage0_activation_bytes(large, True) - stage0_activation_bytes(small, True)
    assert 1.0 <= published / unpartitioned <= 1.8  # measured 1.11-1.74; each Mem is printed to 1 GB
    assert partitioned < 0.45 * published
    # the simulator's memory model on the same twins keeps the checkpoints unpartitioned too: its stage-0 growth is
    # near the hand count (0.89-0.94 of it: its recompute term differs), far above the partitioned one, and no
    # more than the printed growth (a run that ran is never modelled above what it used)
    simulated = memory.per_gpu_memory(large, 0).activations_bytes - memory.per_gpu_memory(small, 0).activations_bytes
    assert 0.8 * unpartitioned <= simulated <= published
    assert simulated > 2 * partitioned


@pytest.mark.parametrize("name", [
    "bigscience-prequel-178b-h104-tp4-pp12-mbs2-a100",
    "bigscience-prequel-176b-h64-tp8-pp12-mbs2-a100",
    "bigscience-prequel-184b-h64-tp8-pp6-mbs2-a100",
])
def test_audited_bloom_rows_state_the_sources_stack(name):
    scenario = config.load(name)
    t, p = scenario.training, scenario.parallelism
    assert (t.precision, t.activation_recompute, t.attention) == ("bf16", "full", "naive")
    assert (p.pipeline_engine, p.zero_stage, p.sequence_parallel, p.overlap_grad_reduce) == ("deepspeed", 1, False,
                                                                                             False)
    # the constraint the prequel states for Megatron's fused softmax ("NHEADs comparison"): (HEADS/TP)*MBS % 4 = 0
    assert (scenario.model.heads // p.tp) * t.micro_batch_size % 4 == 0


@pytest.mark.parametrize("name", ["korthikanti2022-530b-a100", "korthikanti2022-530b-dp8-a100"])
def test_korthikanti_530b_runs_the_attention_its_activation_count_describes(name):
    """Section 4's per-layer count, sbh(34 + 5as/h), keeps the s x s scores, softmax output and dropout mask: the
    unfused attention, which selective recompute re-runs."""
    t = config.load(name).training
    assert (t.attention, t.activation_recompute) == ("naive", "selective")
