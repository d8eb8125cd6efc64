"""The MLPerf Training v5.0 Llama 3.1 405B rows (round 33) are what their result logs measured, on the layouts they state.

Source: Nebius's closed-division Llama 3.1 405B submissions on H200, read in the copy prishajain1/training_results_v5.0
@ 0fdc28f0: Nebius/results/nebius_soperator_8xH200_n64_ngc25.01_nemo/llama31_405b/ and ..._n128_.../llama31_405b/
result_1.txt .. result_3.txt; configurations in Nebius/benchmarks/llama31_405b/implementations/ (the two
config_DGXH200_*.sh, config_common.sh, conf/custom.yaml). Each log writes one MLLOG ``tracked_stats`` line per training
step (``time_ms``, a ``step`` metadata in samples, 1,152 a step) and ``block_start`` / ``block_stop`` around every
evaluation interval. Each log was read at its last block (the one that ends in ``run_stop``; the stored text's last
16,000 characters), copied here: the block's ``block_start`` (samples 230,400), its last step line (276,480), its
``block_stop`` and the block summary line's ``train_step_time``. docs/calibration.md "Round 33: MLPerf Training v5.0's
Llama 3.1 405B on Nebius's H200 InfiniBand clusters".
"""

import statistics
from dataclasses import dataclass

import pytest

from simcluster.parallel import memory
from simcluster.spec import config
from simcluster.studies import validation

HELD_OUT = {c["scenario"]: c for c in validation.held_out_cases()}
GBS = 1152
FIRST, LAST = 230_400, 276_480  # samples: the last block's block_start and its last step line, in every log

# result_i: (block_start time_ms, time_ms of the step line at LAST, block_stop time_ms, summary train_step_time).
LOGS_N64 = {
    1: (1746065485089, 1746067490444, 1746067491925, 50.17088309497503),
    2: (1746065462889, 1746067468422, 1746067469860, 50.17422401879994),
    3: (1746079374468, 1746081380569, 1746081381956, 50.18715919919996),
}
LOGS_N128 = {
    1: (1746037188651, 1746038207968, 1746038208969, 25.507905404949998),
    2: (1746044846779, 1746045865158, 1746045866244, 25.48659699687505),
    3: (1746052497009, 1746053514033, 1746053515064, 25.45133206084993),
}


@dataclass(frozen=True)
class Submission:
    scenario: str
    logs: dict
    nodes: int
    minibs: int  # MINIBS of the config whose DGXNNODES is `nodes`: the microbatches a replica (MBS 1)
    max_memory_usage: float  # the block summary lines' max_memory_usage (unit not read)


SUBMISSIONS = [
    Submission("mlperf50-llama31-405b-512-h200-fp8", LOGS_N64, 64, 144, 109.067),
    Submission("mlperf50-llama31-405b-1024-h200-fp8", LOGS_N128, 128, 72, 104.846),
]
BY_SCENARIO = pytest.mark.parametrize("sub", SUBMISSIONS, ids=lambda s: s.scenario)


def _steps():
    return (LAST - FIRST) // GBS


def _block_step_s(log):
    start, last, _stop, _summary = log
    return (last - start) / 1000 / _steps()


def test_the_block_is_one_whole_evaluation_interval_of_the_logged_batch():
    """custom.yaml evaluates every ceil_div(46080, GBS) = 40 steps; the block copied runs from one evaluation
    (230,400 = 5 x 46,080 samples) to the next, 40 whole steps of 1,152 sequences."""
    interval = -(-46_080 // GBS)
    assert interval == 40 == _steps()
    assert (LAST - FIRST) % GBS == 0 and FIRST % (interval * GBS) == 0 and LAST == FIRST + interval * GBS


@BY_SCENARIO
def test_the_row_is_the_median_of_the_logs_last_blocks(sub):
    """Three runs of one system, each log's last block from block_start to its last step line over 40 steps; the runs
    are separate (each later than the one before) and agree to 0.5%."""
    assert sorted(sub.logs) == [1, 2, 3]
    starts = [sub.logs[i][0] for i in sorted(sub.logs)]
    assert starts[0] != starts[1] != starts[2]
    steps = [_block_step_s(log) for log in sub.logs.values()]
    assert max(steps) / min(steps) < 1.005
    assert HELD_OUT[sub.scenario]["step_time_s"] == pytest.approx(statistics.median(steps), abs=5e-5)


@BY_SCENARIO
def test_the_summary_line_is_the_block_with_the_pause_before_the_evaluation(sub):
    """The block summary line's train_step_time is (block_stop - block_start) / 40: it includes the 1.0-1.5 s between
    the last step and block_stop, which the row leaves out (a fail here means a miscopied time)."""
    for start, last, stop, summary in sub.logs.values():
        assert (stop - start) / 1000 / _steps() == pytest.approx(summary, abs=1e-4)  # two timers, ms apart
        assert 0.9 < (stop - last) / 1000 < 1.6


def test_doubling_the_nodes_at_the_same_batch_nearly_halves_the_step():
    """Published: 512 -> 1,024 H200 at GBS 1,152 (144 -> 72 microbatches a replica) cuts the step 1.969x."""
    ratio = HELD_OUT[SUBMISSIONS[0].scenario]["step_time_s"] / HELD_OUT[SUBMISSIONS[1].scenario]["step_time_s"]
    assert ratio == pytest.approx(1.969, abs=0.001)


def test_the_simulated_peaks_scale_as_the_logged_ones():
    """The logged peak falls 109.067 -> 104.846 from DP 8 to DP 16 (ratio 0.9613: the distributed optimizer's states
    halve); the model's allocated peak must fall by the same ratio within 0.5% (0.9616; without sequence parallelism
    0.971, without fp8 parameters 0.968, without the distributed optimizer 1.0) and lie at most 10% above each logged
    figure read as GiB (the model's 124.6 / 119.8 GB against 117.1 / 112.6 GB; read as GB the logs sit 14% lower)."""
    n64, n128 = SUBMISSIONS
    peaks = {s.scenario: memory.per_gpu_memory(config.load(s.scenario)).allocated_bytes for s in SUBMISSIONS}
    assert peaks[n128.scenario] / peaks[n64.scenario] == pytest.approx(
        n128.max_memory_usage / n64.max_memory_usage, rel=0.005)
    for s in SUBMISSIONS:
        assert 1.0 < peaks[s.scenario] / (s.max_memory_usage * 2**30) < 1.10


@BY_SCENARIO
def test_the_scenario_runs_the_submitted_configuration(sub):
    """GBS, sequence and GPU count as logged; TP 4, PP 8, VP 8, CP 2 from the config, DP the rest and MINIBS
    microbatches of one sequence a replica; FP8 delayed scaling with fp8 parameters; Megatron-Core's buckets of 200
    parameters (one a parameter), bf16 reduction averaged in the collective; TP overlap and the deferred output-layer
    wgrad (limit 50); Megatron-Core 0.11; MLPerf's Llama 3.1 405B with the Mixtral tokenizer's 32,000 entries."""
    s = config.load(sub.scenario)
    m, t, p = s.model, s.training, s.parallelism
    assert (t.global_batch_size, t.seq_len, t.micro_batch_size) == (GBS, 8192, 1)
    assert (s.cluster.nodes, s.cluster.gpus_per_node, s.cluster.gpu.name) == (sub.nodes, 8, "h200-sxm")
    assert (p.tp, p.pp, p.virtual_stages, p.cp) == (4, 8, 8, 2)
    assert p.dp == s.cluster.gpus // (4 * 8 * 2) and p.dp * sub.minibs == GBS
    assert (m.layers, m.hidden, m.n_kv_heads, m.vocab, m.mlp, m.position, m.tied_embeddings) == (
        126, 16384, 8, 32000, "swiglu", "rope", False)
    assert (t.precision, t.fp8_recipe, t.fp8_param_gather, t.activation_recompute) == ("fp8", "delayed", True, "none")
    assert (t.cross_entropy, t.mcore_version, p.te_version) == ("megatron_fused", "0.11", 1)
    assert (p.zero_stage, p.grad_buckets, p.grad_reduce_dtype, p.average_in_collective) == (
        1, "megatron_core", "bf16", True)
    assert p.grad_bucket_size / 2 == 200  # 200 bf16 elements
    assert p.sequence_parallel and p.tp_comm_overlap and p.overlap_param_gather
    assert p.defer_embedding_wgrad and p.wgrad_deferral_limit == 50
