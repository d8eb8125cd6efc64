"""The MLPerf Training v5.1 Llama 3.1 8B rows (round 32) are what their result logs measured, on the layouts they state.

Source: Cisco's closed-division Llama 3.1 8B pre-training submissions, mlcommons/training_results_v5.1 @ 4da2d1cd,
Cisco/results/hpf_n8/llama31_8b/ and Cisco/results/hpf_n16/llama31_8b/ result_0.txt .. result_9.txt, configurations in
Cisco/benchmarks/llama31_8b/implementations/nemo/ (config_DGXH100_8x8x1xtp1pp1cp1.sh,
config_DGXH100_16x8x1xtp2pp1cp1.sh, config_common.sh, conf/custom.yaml, pretrain.py, Dockerfile).
Each log writes one MLLOG `tracked_stats` line per training step with its `time_ms` (milliseconds since the epoch) and
a `step` metadata in samples (64 a step). Each log was read at one place, the stored text from character 500,000 (one
16,000-character page); copied here: the first and last whole step line of that page, (samples, time_ms) each.

Review (round 32, docs/calibration/round-32.md "Round 32: review of the MLPerf v5.1 Llama 3.1 8B rows"): the evaluation
pauses are read from the logs, not from custom.yaml's default. ``eval_start`` / ``eval_stop`` lines sit every 342 steps
on hpf_n8 (samples 65,664, 87,552, 109,440, ..., 196,992, 218,880 in result_3) and every 192 steps on hpf_n16 (86,016,
98,304, ..., 208,896, 221,184 in result_0): hpf_n8's launch set an interval the stored files do not (custom.yaml's
VAL_CHECK_INTERVAL default, ceil(12288 / 64) = 192, holds on hpf_n16 only). Three whole evaluation blocks were read
besides (the block holding the window, from its ``block_start`` to its last step line), and the logged peak memory
(``max_memory_usage`` of the block summary line, the same in every block of a log).
"""

import statistics
from dataclasses import dataclass

import pytest

from simcluster.engine import Simulation
from simcluster.parallel import memory
from simcluster.spec import config
from simcluster.studies import validation

HELD_OUT = {c["scenario"]: c for c in validation.held_out_cases()}
GBS = 64

# result_i: ((samples, time_ms) of the first whole step line, (samples, time_ms) of the last), in file order.
WINDOWS_N8 = {
    0: ((99_008, 1759989192939), (102_336, 1759989230491)),
    1: ((99_008, 1759992045366), (102_336, 1759992082826)),
    2: ((99_008, 1759994895941), (102_336, 1759994933738)),
    3: ((99_008, 1759997747533), (102_336, 1759997785192)),
    4: ((99_008, 1760000594630), (102_336, 1760000632107)),
    5: ((99_008, 1760003697637), (102_336, 1760003735124)),
    6: ((99_008, 1760006550772), (102_336, 1760006588113)),
    7: ((99_008, 1760009655259), (102_336, 1760009692989)),
    8: ((99_008, 1760012505596), (102_336, 1760012543161)),
    9: ((99_008, 1760015609391), (102_336, 1760015647000)),
}
WINDOWS_N16 = {
    0: ((91_584, 1760028626188), (94_912, 1760028651297)),
    1: ((91_584, 1760030761271), (94_912, 1760030787002)),
    2: ((91_584, 1760032907981), (94_912, 1760032933621)),
    3: ((91_584, 1760035049409), (94_912, 1760035074663)),
    4: ((91_584, 1760037303580), (94_912, 1760037329359)),
    5: ((91_584, 1760056603283), (94_912, 1760056628878)),
    6: ((91_584, 1760058740727), (94_912, 1760058766174)),
    7: ((91_584, 1760060882310), (94_912, 1760060907798)),
    8: ((91_584, 1760063031059), (94_912, 1760063056528)),
    9: ((91_584, 1760065270668), (94_912, 1760065295625)),
}


# Evaluations read in the logs, in samples (eval_start samples_count, and the block summary lines' block starts):
# hpf_n8 result_3, hpf_n16 result_0 and result_5.
EVALS_N8 = (65_664, 87_552, 109_440, 196_992, 218_880)  # 218,880: the last (run_stop), the target reached
EVALS_N16 = (86_016, 98_304, 208_896, 221_184)  # 221,184: the last (run_stop)

# Whole blocks: (log, block_start time_ms (= the eval_stop before it), time_ms of the block's last step line,
# steps, the block summary line's train_step_time and time_ms (tracked_stats with throughput, logged at block_stop)).
BLOCKS_N8 = [(3, 1759997617280, 1759997865154, 342, 0.7422459640701701, 1759997871128)]  # samples 87,552-109,440
BLOCKS_N16 = [(0, 1760028583177, 1760028676637, 192, 0.5223859381927317, 1760028683476),  # samples 86,016-98,304
              (5, 1760056560010, 1760056654377, 192, 0.5299246867343754, 1760056661759)]


# validation_step_time of the 15 validation steps after the first (its setup) of three evaluations a system, forward
# only (no gradients, no data-parallel traffic): hpf_n8 result_3 at samples 87,552, 109,440 and 218,880; hpf_n16
# result_0 at 98,304 and 221,184 and result_5 at 98,304 (one sequence a GPU a step, limit_val_batches 16).
VALIDATION_N8 = (0.19959, 0.18931, 0.18794, 0.18777, 0.17909, 0.17647, 0.18952, 0.18950, 0.18305, 0.18060, 0.17145,
                 0.17314, 0.18861, 0.18017, 0.17302, 0.23193, 0.20719, 0.18344, 0.17913, 0.17810, 0.17171, 0.17503,
                 0.17749, 0.18769, 0.19643, 0.17138, 0.18891, 0.20033, 0.16988, 0.17503, 0.19569, 0.17583, 0.17769,
                 0.19678, 0.17006, 0.17478, 0.17294, 0.17285, 0.17588, 0.17751, 0.17610, 0.18159, 0.18386, 0.16877,
                 0.17815)
VALIDATION_N16 = (0.16617, 0.14127, 0.12462, 0.11402, 0.10869, 0.11088, 0.10879, 0.11100, 0.10609, 0.10758, 0.11079,
                  0.12227, 0.10484, 0.11266, 0.10474, 0.15767, 0.11752, 0.11285, 0.11006, 0.10846, 0.10383, 0.10494,
                  0.11152, 0.10478, 0.10691, 0.11164, 0.11154, 0.11369, 0.13122, 0.11079, 0.14887, 0.11128, 0.10613,
                  0.11720, 0.10817, 0.11054, 0.10488, 0.10512, 0.11908, 0.12273, 0.10592, 0.11022, 0.11378, 0.10823,
                  0.11411)


@dataclass(frozen=True)
class Submission:
    scenario: str
    windows: dict
    nodes: int
    tp: int  # TENSOR_MODEL_PARALLEL of the config whose DGXNNODES is `nodes`
    evals: tuple  # eval_start samples read in the logs
    eval_interval_steps: int
    blocks: list
    max_memory_usage: float  # the logs' block summary lines (all blocks of all logs read: 71.229 / 35.706)


SUBMISSIONS = [
    Submission("mlperf51-llama31-8b-64-h100-fp8", WINDOWS_N8, 8, 1, EVALS_N8, 342, BLOCKS_N8, 71.229),
    Submission("mlperf51-llama31-8b-128-h100-fp8", WINDOWS_N16, 16, 2, EVALS_N16, 192, BLOCKS_N16, 35.706),
]
BY_SCENARIO = pytest.mark.parametrize("sub", SUBMISSIONS, ids=lambda s: s.scenario)


def _window_step_s(window):
    (first, t_first), (last, t_last) = window
    return (t_last - t_first) / 1000 / ((last - first) // GBS)


@BY_SCENARIO
def test_every_window_is_the_same_whole_steps_inside_one_evaluation_block(sub):
    """All ten logs, the same sample range, whole steps of the logged batch, within one evaluation block (no
    validation pause inside the span: the evaluations the logs show fall on whole multiples of the logged interval
    and none between the window's ends), each log later than the one before (ten separate runs)."""
    assert sorted(sub.windows) == list(range(10))
    ranges = {(w[0][0], w[1][0]) for w in sub.windows.values()}
    assert len(ranges) == 1
    (first, last), = ranges
    assert first % GBS == 0 and last % GBS == 0 and last > first
    interval = sub.eval_interval_steps * GBS
    assert all(e % interval == 0 for e in sub.evals)
    assert first // interval == last // interval and last % interval  # no evaluation at or inside the window
    starts = [sub.windows[i][0][1] for i in range(10)]
    assert all(later > earlier for earlier, later in zip(starts, starts[1:], strict=False))


def test_custom_yamls_default_interval_holds_on_hpf_n16_only():
    """custom.yaml: val_check_interval ceil_div(12288, GBS) = 192 steps unless VAL_CHECK_INTERVAL is set; the
    hpf_n8 logs evaluate every 342 steps (87,552 is no multiple of 192 x 64), so its launch set the variable."""
    default = -(-12_288 // GBS)
    assert all(e % (default * GBS) == 0 for e in EVALS_N16)
    assert any(e % (default * GBS) for e in EVALS_N8)


@BY_SCENARIO
def test_a_whole_block_agrees_with_the_window_and_the_row(sub):
    """The block holding the window, from block_start to its last step line, is within 1% of the row and of that
    log's window; the block summary line's train_step_time is (block_stop - block_start) / steps, i.e. it includes the
    6-7 s between the last step and the evaluation (the first validation step's setup), which the row leaves out."""
    row = HELD_OUT[sub.scenario]["step_time_s"]
    for log, start, last, steps, summary, stop in sub.blocks:
        block = (last - start) / 1000 / steps
        assert (stop - start) / 1000 / steps == pytest.approx(summary, abs=5e-5)  # the timer: a few ms apart
        assert 5.0 < (stop - last) / 1000 < 8.0
        assert block == pytest.approx(row, rel=0.01)
        assert block == pytest.approx(_window_step_s(sub.windows[log]), rel=0.01)


def test_the_simulated_peaks_scale_as_the_logged_ones():
    """The logs' peak memory halves from TP 1 to TP 2 (71.229 -> 35.706, ratio 0.501); the model's allocated peak
    must too, within 2% (sequence parallelism, fp8 parameters and no recompute as the configs set them), and lie
    within 8% of each logged figure, read as GB or GiB (mlperf_common's unit not read here)."""
    n8, n16 = SUBMISSIONS
    peaks = {s.scenario: memory.per_gpu_memory(config.load(s.scenario)).allocated_bytes for s in SUBMISSIONS}
    assert peaks[n16.scenario] / peaks[n8.scenario] == pytest.approx(n16.max_memory_usage / n8.max_memory_usage,
                                                                     rel=0.02)
    for s in SUBMISSIONS:
        assert 0.92 * s.max_memory_usage * 2**30 < peaks[s.scenario] < 1.08 * s.max_memory_usage * 1e9


@BY_SCENARIO
def test_the_row_is_the_median_of_the_logs_window_step_times(sub):
    steps = [_window_step_s(w) for w in sub.windows.values()]
    assert max(steps) / min(steps) < 1.05  # ten runs of one system, one place in each
    assert HELD_OUT[sub.scenario]["step_time_s"] == pytest.approx(statistics.median(steps), abs=5e-5)


@BY_SCENARIO
def test_the_scenario_runs_the_submitted_configuration(sub):
    """GBS, sequence and GPU count as logged; TP from the config, DP the rest, one microbatch of one sequence a step
    (MINIBS 1, MBS 1); FP8 delayed scaling with fp8 parameters; Megatron-Core's buckets of 64 parameters (bucket_size
    64, i.e. one bucket a parameter), bf16 reduction averaged in the collective; no TP overlap (pretrain.py adds no
    comm-overlap callback); TE 2.5, Megatron-Core 0.13; Llama 3.1 8B; an Ethernet fabric."""
    s = config.load(sub.scenario)
    m, t, p = s.model, s.training, s.parallelism
    assert (t.global_batch_size, t.seq_len, t.micro_batch_size) == (GBS, 8192, 1)
    assert (s.cluster.nodes, s.cluster.gpus_per_node, s.cluster.gpus) == (sub.nodes, 8, sub.nodes * 8)
    assert (p.tp, p.pp, p.cp, p.dp) == (sub.tp, 1, 1, sub.nodes * 8 // sub.tp)
    assert p.dp * t.micro_batch_size == GBS
    assert p.sequence_parallel is (sub.tp > 1)
    assert (m.layers, m.hidden, m.n_kv_heads, m.vocab, m.mlp, m.position) == (32, 4096, 8, 128256, "swiglu", "rope")
    assert (t.precision, t.fp8_recipe, t.fp8_param_gather, t.activation_recompute) == ("fp8", "delayed", True, "none")
    assert (t.cross_entropy, t.mcore_version, p.te_version) == ("megatron_fused", "0.13", 2)
    assert (p.zero_stage, p.grad_buckets, p.grad_reduce_dtype, p.average_in_collective) == (
        1, "megatron_core", "bf16", True)
    assert p.grad_bucket_size / 2 == 64  # 64 bf16 elements
    assert p.tp_comm_overlap is False and p.overlap_param_gather is True
    assert s.cluster.topology_options.get("protocol") == "ethernet"


def test_the_forward_scales_from_tp_1_to_tp_2_as_the_logged_validation_steps_do():
    """The validation steps are a forward alone at each layout, with TP 2's sequence-parallel collectives unoverlapped
    as in training: their medians fall 0.1791 -> 0.1109 s (ratio 0.619). The model's training forward (compute and
    TP communication of the plan) must fall by the same ratio within 10% (it is 0.582; with three times the modelled
    TP communication 0.689, with none 0.529, both outside): an evaluation forward skips the saved activations and the
    transposed fp8 copies and carries a step's host and data work, so only the ratio compares. (The TP 2 row's excess
    is therefore not in its forward: docs/calibration/round-32.md "Round 32: review of the MLPerf v5.1 Llama 3.1 8B
    rows".)"""
    assert len(VALIDATION_N8) == len(VALIDATION_N16) == 45
    logged = statistics.median(VALIDATION_N16) / statistics.median(VALIDATION_N8)
    forward = {}
    for s in SUBMISSIONS:
        plan = Simulation(config.load(s.scenario)).plan
        forward[s.nodes] = sum(c.forward_compute_s + c.forward_tp_comm_s for c in plan.chunks)
    assert forward[16] / forward[8] == pytest.approx(logged, rel=0.10)
