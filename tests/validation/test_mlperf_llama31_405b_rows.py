"""The MLPerf Training v5.0 Llama 3.1 405B rows (round 33) are what their result logs measured, on the stated layouts.

Source: Nebius's closed-division Llama 3.1 405B submissions on H200 and NVIDIA's on Eos-dfw H100, read in the copy
prishajain1/training_results_v5.0 @ 0fdc28f0: Nebius/results/nebius_soperator_8xH200_n64_ngc25.01_nemo/llama31_405b/ and
..._n128_.../llama31_405b/ result_1.txt .. result_3.txt, NVIDIA/results/eos-dfw_n64_ngc25.01_nemo/llama31_405b/ and
eos-dfw_n256_.../llama31_405b/ result_0.txt .. result_2.txt; configurations in {Nebius,NVIDIA}/benchmarks/llama31_405b/
implementations/ (config_DGXH200_*.sh, config_DGXH100_*.sh, config_common.sh, conf/custom.yaml). Each log writes one
MLLOG ``tracked_stats`` line per training step (``time_ms``, a ``step`` metadata in samples, 1,152 a step) and
``block_start`` / ``block_stop`` around every evaluation interval. Each log was read at its last block (the one that
ends in ``run_stop``; the stored text's last pages), copied here: the block's first and last samples, its
``block_start``, its last step line, its ``block_stop`` and the block summary line's ``train_step_time``.
docs/calibration/round-33.md "Round 33: MLPerf Training v5.0's Llama 3.1 405B on Nebius's H200 InfiniBand clusters"; the
review (the logging rank's memory, the kept slow steps): "Round 33: review of the MLPerf v5.0 Llama 3.1 405B rows".
"""

import statistics
from dataclasses import dataclass

import pytest

from simcluster.parallel import memory
from simcluster.spec import config
from simcluster.studies import validation

HELD_OUT = {c["scenario"]: c for c in validation.held_out_cases()}
GBS = 1152  # the 512-, 1,024- and 2,048-GPU runs' (the others 1,216, 1,120 and 1,536)
LAST_BLOCK = (230_400, 276_480)  # samples: block_start and the last step line of the last block, unless a log says

# result_i: (block_start time_ms, time_ms of the last step line, block_stop time_ms, summary train_step_time[, block]).
LOGS_H200_N64 = {
    1: (1746065485089, 1746067490444, 1746067491925, 50.17088309497503),
    2: (1746065462889, 1746067468422, 1746067469860, 50.17422401879994),
    3: (1746079374468, 1746081380569, 1746081381956, 50.18715919919996),
}
LOGS_H200_N128 = {
    1: (1746037188651, 1746038207968, 1746038208969, 25.507905404949998),
    2: (1746044846779, 1746045865158, 1746045866244, 25.48659699687505),
    3: (1746052497009, 1746053514033, 1746053515064, 25.45133206084993),
}
LOGS_H100_N64 = {  # result_0 and result_1 ran at the same time on Eos-dfw
    0: (1744824153066, 1744826360589, 1744826362581, 55.23786748055136),
    1: (1744826027317, 1744828237681, 1744828239387, 55.30174680955243),
    2: (1744888497178, 1744890705844, 1744890707810, 55.26579346817452),
}
LOGS_H100_N256 = {  # result_1 evaluated once more: its last block is the next interval
    0: (1745961367130, 1745961951473, 1745961952589, 14.636466559278778),
    1: (1745964581400, 1745965151594, 1745965152708, 14.28268515628297, (276_480, 322_560)),
    2: (1745963983562, 1745964577639, 1745964578795, 14.880798634863458),
}
LOGS_H100_N304 = {  # GBS 1,216: ceil(46,080 / 1,216) = 38 steps an evaluation interval (46,208 samples)
    0: (1746123723818, 1746124221995, 1746124223243, 13.14275259779472, (277_248, 323_456)),
    1: (1746126810520, 1746127324661, 1746127326129, 13.56863411905636, (277_248, 323_456)),
    2: (1746127438523, 1746127942479, 1746127943715, 13.294504774954953, (277_248, 323_456)),
}
LOGS_H100_N320 = {  # GBS 1,120: ceil(46,080 / 1,120) = 42 steps (47,040 samples)
    0: (1746191410822, 1746191916459, 1746191917684, 12.068131147839484, (235_200, 282_240)),
    1: (1746194926704, 1746195397139, 1746195398370, 11.230112256193976, (235_200, 282_240)),
    2: (1746215544641, 1746216014752, 1746216016059, 11.224208047048055, (235_200, 282_240)),
}
LOGS_H100_N1024 = {  # GBS 1,536: 30 steps an evaluation interval; every log evaluated at 322,560
    0: (1745951398371, 1745951554758, 1745951556553, 5.272731022474667, (276_480, 322_560)),
    1: (1745953150671, 1745953307051, 1745953308915, 5.274772288370878, (276_480, 322_560)),
    2: (1745954933127, 1745955088768, 1745955090832, 5.256814338142673, (276_480, 322_560)),
}


@dataclass(frozen=True)
class Submission:
    scenario: str
    logs: dict
    gpu: str
    nodes: int
    tp: int  # TENSOR_MODEL_PARALLEL of the config whose DGXNNODES is `nodes`
    minibs: int  # its MINIBS: the microbatches a replica (MBS 1)
    max_memory_usage: float  # the block summary lines' max_memory_usage: global rank 0's (GiB, by the model)
    gbs: int = GBS  # MINIBS x DP, the `step` metadata's growth a line


SUBMISSIONS = [
    Submission("mlperf50-llama31-405b-512-h200-fp8", LOGS_H200_N64, "h200-sxm", 64, 4, 144, 109.067),
    Submission("mlperf50-llama31-405b-1024-h200-fp8", LOGS_H200_N128, "h200-sxm", 128, 4, 72, 104.846),
    Submission("mlperf50-llama31-405b-512-h100-fp8", LOGS_H100_N64, "h100-sxm", 64, 8, 288, 58.817),
    Submission("mlperf50-llama31-405b-2048-h100-fp8", LOGS_H100_N256, "h100-sxm", 256, 8, 72, 52.484),
    Submission("mlperf50-llama31-405b-8192-h100-fp8", LOGS_H100_N1024, "h100-sxm", 1024, 8, 24, 50.901, 1536),
    Submission("mlperf50-llama31-405b-2432-h100-fp8", LOGS_H100_N304, "h100-sxm", 304, 8, 64, 52.151, 1216),
    Submission("mlperf50-llama31-405b-2560-h100-fp8", LOGS_H100_N320, "h100-sxm", 320, 8, 56, 52.062, 1120),
]
# the logs of a system agree to 0.5% but where their blocks hold slow steps (2-3x a step, kept by the rule)
SPREAD = {256: 1.05, 304: 1.04, 320: 1.08}
PAIRS = [SUBMISSIONS[:2], SUBMISSIONS[2:4]]  # one recipe and system each, DP doubled / quadrupled at the same batch
BY_SCENARIO = pytest.mark.parametrize("sub", SUBMISSIONS, ids=lambda s: s.scenario)


def _block(log):
    return log[4] if len(log) > 4 else LAST_BLOCK


def _steps(log, gbs=GBS):
    first, last = _block(log)
    return (last - first) // gbs


def _block_step_s(log, gbs=GBS):
    start, last = log[:2]
    return (last - start) / 1000 / _steps(log, gbs)


@BY_SCENARIO
def test_every_block_is_one_whole_evaluation_interval_of_the_logged_batch(sub):
    """custom.yaml evaluates every ceil_div(46080, GBS) steps (40 at 1,152, 30 at 1,536, 38 at 1,216, 42 at 1,120);
    each block copied runs from one evaluation (a whole number of intervals) to the next, whole steps of the logged
    batch."""
    interval = -(-46_080 // sub.gbs)
    assert interval == {1152: 40, 1536: 30, 1216: 38, 1120: 42}[sub.gbs]
    for log in sub.logs.values():
        first, last = _block(log)
        span = interval * sub.gbs
        assert first % span == 0 and last == first + span and _steps(log, sub.gbs) == interval


@BY_SCENARIO
def test_the_row_is_the_median_of_the_logs_last_blocks(sub):
    """Three runs of one system, each log's last block from block_start to its last step line; the runs are separate
    and agree to 0.5%, or to SPREAD where blocks hold slow steps (2,048 H100: 28.0 and 37.7 s among 14.2-14.4 s;
    2,432: one in each block; 2,560: five in result_0's), kept as the rule keeps every step."""
    assert len(sub.logs) == 3 and len({log[0] for log in sub.logs.values()}) == 3
    steps = [_block_step_s(log, sub.gbs) for log in sub.logs.values()]
    assert max(steps) / min(steps) < SPREAD.get(sub.nodes, 1.005)
    assert HELD_OUT[sub.scenario]["step_time_s"] == pytest.approx(statistics.median(steps), abs=6e-5)  # 4 decimals


@BY_SCENARIO
def test_the_summary_line_is_the_block_with_the_pause_before_the_evaluation(sub):
    """The block summary line's train_step_time is (block_stop - block_start) / 40: it includes the 1.0-1.5 s between
    the last step and block_stop, which the row leaves out (a fail here means a miscopied time)."""
    for log in sub.logs.values():
        start, last, stop, summary = log[:4]
        assert (stop - start) / 1000 / _steps(log, sub.gbs) == pytest.approx(summary, abs=1e-4)  # two timers, ms apart
        assert 0.9 < (stop - last) / 1000 < 2.1


def test_the_published_steps_scale_with_the_gpus_at_the_same_batch():
    """Published at GBS 1,152: 512 -> 1,024 H200 (144 -> 72 microbatches a replica) cuts the step 1.969x, 512 ->
    2,048 H100 (288 -> 72) 3.780x; at 512 GPUs the H200 run (TP 4) is 1.101x the H100 run (TP 8)."""
    row = {s.scenario: HELD_OUT[s.scenario]["step_time_s"] for s in SUBMISSIONS}
    (h200_512, h200_1024), (h100_512, h100_2048) = ([row[s.scenario] for s in pair] for pair in PAIRS)
    assert h200_512 / h200_1024 == pytest.approx(1.969, abs=0.001)
    assert h100_512 / h100_2048 == pytest.approx(3.780, abs=0.001)
    assert h100_512 / h200_512 == pytest.approx(1.101, abs=0.001)


def test_the_logging_rank_s_peak_is_the_model_s_first_stage():
    """mlperf_common's MLLoggerWrapper logs on global rank 0 only (``unique_log_rank`` 0; NVIDIA/mlperf-common
    mlperf_common/logging.py), and Megatron-Core's default rank order (tp-cp-ep-dp-pp; the runs leave
    TP_PP_DP_MAPPING False) puts global rank 0 on pipeline stage 0. So max_memory_usage is compared with the model's
    stage 0 (review, round 33): its allocated peak is 0.992-0.993x each logged figure read as GiB on all seven rows
    (within 1.5%: without sequence parallelism 1.32-1.70, without fp8 parameters 1.18-1.20; read as GB 1.065-1.067)
    and falls with DP by the logged ratio within 0.5% on both pairs (109.067 -> 104.846 on H200 DP 8 -> 16, 0.9613;
    58.817 -> 52.484 on H100 DP 4 -> 16, 0.8923: the distributed optimizer's states shrink). The worst stage (stage
    1: 16 layers to stage 0's 15 and the embedding) is 1.062-1.064x the logged rank-0 figure, the factor round 33
    first read as a constant of the memory model; it fits in HBM on every row, as the runs did."""
    stage0 = {s.scenario: memory.per_gpu_memory(config.load(s.scenario), stage=0).allocated_bytes
              for s in SUBMISSIONS}
    for small, large in PAIRS:
        assert stage0[large.scenario] / stage0[small.scenario] == pytest.approx(
            large.max_memory_usage / small.max_memory_usage, rel=0.005)
    level = [stage0[s.scenario] / (s.max_memory_usage * 2**30) for s in SUBMISSIONS]
    assert all(abs(x - 1) < 0.015 for x in level) and max(level) / min(level) < 1.005
    for s in SUBMISSIONS:
        memory.check_fits(config.load(s.scenario))  # raises OutOfMemoryError if the worst stage does not fit


# The slow steps the 2,048- and 2,432-GPU rows keep (review, round 33): (the job's first MLLOG line, the step line
# before the slow step, the slow step's line, its `step` samples), time_ms, read in the same logs (result_i.txt from
# character 0 and the last block's pages).
STALLS = {
    ("mlperf50-llama31-405b-2048-h100-fp8", 0): (1745958042702, 1745961895008, 1745961923035, 274_176),
    ("mlperf50-llama31-405b-2048-h100-fp8", 2): (1745960650651, 1745964497160, 1745964534886, 273_024),
    ("mlperf50-llama31-405b-2432-h100-fp8", 0): (1746120338861, 1746124182203, 1746124208740, 322_240),
    ("mlperf50-llama31-405b-2432-h100-fp8", 1): (1746123382361, 1746127218114, 1746127260946, 317_376),
    ("mlperf50-llama31-405b-2432-h100-fp8", 2): (1746123916365, 1746127761522, 1746127787851, 308_864),
}
BY_NAME = {s.scenario: s for s in SUBMISSIONS}


def test_the_kept_slow_steps_are_one_job_clock_event():
    """Every slow step the 2,048- and 2,432-GPU rows keep lies inside its log's copied block, lasts 26-43 s (2.0-3.4x
    the block's other steps) and starts 3,836-3,852 s (63.9-64.2 min) after its job's first MLLOG line, on two
    systems, five jobs and steps 237-265 of the run: an event of the job's clock, once a job, not a cost of the step
    the model times (the 2,560-GPU result_0, whose run stopped 56.6 min in, slowed at other times: not copied here).
    The rows keep it (the last-block rule keeps every step); the median of the logs does not remove it, as it falls in
    the last block of two of three 2,048-GPU logs and of all three 2,432-GPU ones."""
    starts, steps = [], set()
    for (scenario, i), (job, before, after, samples) in STALLS.items():
        sub = BY_NAME[scenario]
        log = sub.logs[i]
        first, last = _block(log)
        assert log[0] < before < after <= log[1] and first < samples <= last and samples % sub.gbs == 0
        others = (log[1] - log[0] - (after - before)) / (_steps(log, sub.gbs) - 1)
        assert 1.8 < (after - before) / others < 3.5
        starts.append((before - job) / 1000)
        steps.add(samples // sub.gbs)
    assert 3_830 < min(starts) and max(starts) < 3_860 and max(steps) - min(steps) > 20


def test_without_the_stalls_the_logs_agree_as_the_others_do():
    """The block without its slow step ((span - slow step) / (steps - 1)): 2,048 GPUs 14.2645, 14.2549, 14.2654 s
    (median 14.2645 s; the row, 14.6086 s, is 2.4% above it), 2,432 GPUs 12.7470, 12.7381, 12.9088 s (median 12.7470
    s; the row, 13.2620 s, is 4.0% above): the logs then agree within 0.1% and 1.4%, where with the slow steps they
    spread 4.2% and 3.2%. Not applied to the rows (their rule was committed before the first simulation): the lead's
    choice, docs/calibration/round-33.md "Round 33: review of the MLPerf v5.0 Llama 3.1 405B rows"."""
    expected = {"mlperf50-llama31-405b-2048-h100-fp8": (14.2645, 0.001),
                "mlperf50-llama31-405b-2432-h100-fp8": (12.7470, 0.014)}
    for scenario, (median, spread) in expected.items():
        sub = BY_NAME[scenario]
        clean = []
        for i, log in sub.logs.items():
            stall = STALLS.get((scenario, i))
            slow = (stall[2] - stall[1]) if stall else 0
            clean.append((log[1] - log[0] - slow) / 1000 / (_steps(log, sub.gbs) - (1 if stall else 0)))
        assert statistics.median(clean) == pytest.approx(median, abs=6e-5)
        assert max(clean) / min(clean) - 1 < spread


def assert_the_405b_recipe(s, gbs: int) -> None:
    """What every MLPerf v5.0 Llama 3.1 405B submission runs, on H100, H200 and GB200 NVL72 alike
    (test_mlperf_llama31_405b_nvl72_rows.py reads it too): the logged batch of 8,192-token sequences, MBS 1; PP 8, VP
    8, CP 2; FP8 delayed scaling with fp8 parameters, no recompute; Megatron-Core's buckets of 200 parameters (one a
    parameter on stage 0's first chunk) averaged in the collective, the distributed optimizer; sequence parallelism,
    TP overlap and the deferred output-layer wgrad (limit 50); Megatron's fused cross entropy; MLPerf's Llama 3.1
    405B (126 layers, 16,384 / 53,248, 128 heads and 8 KV heads, the Mixtral tokenizer's 32,000 entries); one
    ConnectX-7 NDR 400 a GPU (the systems JSON; no topology stated: assumed rail-optimised)."""
    m, t, p = s.model, s.training, s.parallelism
    assert (t.global_batch_size, t.seq_len, t.micro_batch_size) == (gbs, 8192, 1)
    assert (p.pp, p.virtual_stages, p.cp) == (8, 8, 2)
    assert (m.layers, m.hidden, m.heads, m.n_kv_heads, m.ffn_hidden, m.vocab, m.mlp, m.norm, m.position,
            m.tied_embeddings) == (126, 16384, 128, 8, 53248, 32000, "swiglu", "rmsnorm", "rope", False)
    assert (s.cluster.nic.name, s.cluster.nic.rate * 8, s.cluster.topology) == ("connectx-7", 400e9, "rail-fat-tree")
    assert (t.precision, t.fp8_recipe, t.fp8_param_gather, t.activation_recompute) == ("fp8", "delayed", True, "none")
    assert (p.zero_stage, p.grad_buckets, p.grad_bucket_size / 2, p.average_in_collective) == (
        1, "megatron_core", 200, True)  # 200 bf16 elements
    assert p.sequence_parallel and p.tp_comm_overlap and p.overlap_param_gather
    assert p.defer_embedding_wgrad and p.wgrad_deferral_limit == 50 and t.cross_entropy == "megatron_fused"


@BY_SCENARIO
def test_the_scenario_runs_the_submitted_configuration(sub):
    """The 405B recipe (``assert_the_405b_recipe``) at the logged GBS and GPU count; TP 4 (H200) or 8 (H100) from
    the config, DP the rest and MINIBS microbatches a replica; bf16 gradient reduction; Megatron-Core 0.11 and
    Transformer Engine 1.x (ngc25.01) on 8 GPUs a node."""
    s = config.load(sub.scenario)
    t, p = s.training, s.parallelism
    assert_the_405b_recipe(s, sub.gbs)
    assert (s.cluster.nodes, s.cluster.gpus_per_node, s.cluster.gpu.name) == (sub.nodes, 8, sub.gpu)
    assert p.tp == sub.tp and p.dp == s.cluster.gpus // (sub.tp * 8 * 2) and p.dp * sub.minibs == sub.gbs
    assert (t.mcore_version, p.te_version, p.grad_reduce_dtype) == ("0.11", 1, "bf16")
