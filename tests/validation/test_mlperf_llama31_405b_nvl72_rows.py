"""The MLPerf Training v5.0 Llama 3.1 405B rows on GB200 NVL72 (round 33) are what their result logs measured.

Source: NVIDIA's closed-division submissions on Tyche (tyche_ngpu256 / tyche_ngpu512) and IBM + CoreWeave + NVIDIA's
on Carina (carina_ngpu512 .. carina_ngpu2496), read in the copy prishajain1/training_results_v5.0 @ 0fdc28f0:
{NVIDIA,IBM+CoreWeave+NVIDIA}/results/*_ngc25.04_nemo/llama31_405b/result_0.txt .. result_2.txt, configurations in
*/benchmarks/llama31_405b/implementations/*_ngc25.04_nemo/config_GB200_*.sh. Each log writes one MLLOG
``tracked_stats`` line per training step (``time_ms``, a ``step`` metadata in samples). Each log was read at its last
stored page (16,000 characters): where the last evaluation block fits in it, from its ``block_start`` to its last step
line (rule (a''')); where it does not, from the page's first whole step line to the last step line before the final
evaluation (rule (a'''')). Copied here: the span's first and last samples, the two ``time_ms`` and, where the page
holds them, the block's ``block_stop`` and its summary line's ``train_step_time``. docs/calibration.md "Round 33: MLPerf
Training v5.0's Llama 3.1 405B on GB200 NVL72 (NVIDIA Tyche)" and "Round 33: review of the MLPerf v5.0 Llama 3.1 405B
GB200 NVL72 rows" (the whole intervals, the memory figure's stage and warmup, the callbacks file each log names).
"""

import statistics
from dataclasses import dataclass

import pytest

from simcluster.parallel import memory
from simcluster.spec import config
from simcluster.studies import validation
from tests.validation.test_mlperf_llama31_405b_rows import assert_the_405b_recipe

HELD_OUT = {c["scenario"]: c for c in validation.held_out_cases()}


@dataclass(frozen=True)
class Span:
    first: int  # samples at the span's start: block_start's samples_count, or the first whole step line's `step`
    last: int  # the last step line's `step`
    t_first: int  # time_ms of block_start or of that first step line
    t_last: int  # time_ms of the last step line
    block: tuple | None = None  # (block_stop time_ms, summary train_step_time) where the span is the whole block


@dataclass(frozen=True)
class Submission:
    scenario: str
    gpus: int
    minibs: int  # MINIBS: microbatches of one sequence a replica
    dp_last: bool  # TP_PP_DP_MAPPING
    logs: tuple
    max_memory_usage: float | None = None  # the block summary lines' (unit not read); Tyche's last pages hold none
    callbacks_line: int | None = None  # custom_callbacks.py's line in the logs' step lines: which callbacks file ran

    @property
    def gbs(self):
        return self.minibs * self.gpus // 64  # MINIBS x DP, DP = GPUs / (TP 4 x PP 8 x CP 2)


SUBMISSIONS = [
    Submission("mlperf50-llama31-405b-256-gb200-fp8", 256, 112, False, (
        Span(259_840, 276_864, 1745220012116, 1745220741954),
        Span(259_840, 276_864, 1745259794767, 1745260527602),
        Span(259_840, 276_864, 1745272962042, 1745273694506))),
    Submission("mlperf50-llama31-405b-512-gb200-fp8", 512, 112, True, (
        Span(241_024, 279_552, 1745521123207, 1745521970315),
        Span(241_024, 279_552, 1745672894292, 1745673734260),
        Span(241_024, 279_552, 1745679922195, 1745680762269))),
    Submission("mlperf50-llama31-405b-512-gb200-carina-fp8", 512, 112, True, (
        Span(242_816, 279_552, 1745745871631, 1745746672389),
        Span(242_816, 279_552, 1745745799647, 1745746593379),
        Span(242_816, 279_552, 1745753054231, 1745753847983)), 93.521, 488),
    Submission("mlperf50-llama31-405b-1024-gb200-carina-fp8", 1024, 48, True, (
        Span(245_760, 276_480, 1745774650981, 1745774991025),
        Span(245_760, 276_480, 1745778631023, 1745778971001),
        Span(245_760, 276_480, 1745783200891, 1745783540694)), 92.1, 488),
    Submission("mlperf50-llama31-405b-1536-gb200-carina-fp8", 1536, 48, True, (
        Span(230_400, 276_480, 1745731490315, 1745731831829, (1745731832188, 8.546823379799752)),
        Span(276_480, 322_560, 1745734706599, 1745735048571, (1745735048971, 8.559287919924827)),
        Span(230_400, 276_480, 1745737510242, 1745737853038, (1745737853311, 8.576723896375006))), 91.631, 488),
    Submission("mlperf50-llama31-405b-2048-gb200-carina-fp8", 2048, 40, True, (
        Span(276_480, 322_560, 1746163373732, 1746163632393, (1746163632838, 7.197367058416906)),
        Span(276_480, 322_560, 1746169836616, 1746170095109, (1746170095520, 7.191737546556396)),
        Span(276_480, 322_560, 1746177088078, 1746177346613, (1746177347012, 7.192603479941479))), 92.802, 512),
    Submission("mlperf50-llama31-405b-2496-gb200-carina-fp8", 2496, 32, True, (
        Span(277_056, 323_232, 1746153100087, 1746153315470, (1746153316051, 5.836846968567713)),
        Span(277_056, 323_232, 1746155447064, 1746155662183, (1746155662748, 5.829284512567274)),
        Span(277_056, 323_232, 1746158804181, 1746159020058, (1746159020548, 5.847753050136128))), 92.422, 512),
]
BY_SCENARIO = pytest.mark.parametrize("sub", SUBMISSIONS, ids=lambda s: s.scenario)
ROW = {s.scenario: HELD_OUT[s.scenario]["step_time_s"] for s in SUBMISSIONS}
CARINA = [s for s in SUBMISSIONS if "carina" in s.scenario]


def _steps(sub, span):
    return (span.last - span.first) // sub.gbs


def _step_s(sub, span):
    return (span.t_last - span.t_first) / 1000 / _steps(sub, span)


@BY_SCENARIO
def test_every_span_is_whole_steps_inside_one_evaluation_interval(sub):
    """custom.yaml evaluates every ceil_div(46080, GBS) steps (103 at 448, 52 at 896, 60 at 768, 40 at 1,152, 36 at
    1,280, 37 at 1,248); each copied span is whole steps of the logged batch, ends at an evaluation (a whole number of
    intervals) and starts inside that interval; a span copied from block_start is the whole interval."""
    interval = -(-46_080 // sub.gbs)
    assert interval == {448: 103, 896: 52, 768: 60, 1152: 40, 1280: 36, 1248: 37}[sub.gbs]
    span_samples = interval * sub.gbs
    for span in sub.logs:
        assert (span.last - span.first) % sub.gbs == 0 and span.last % span_samples == 0
        assert 0 < span.last - span.first <= span_samples
        if span.block:
            assert span.first % span_samples == 0 and _steps(sub, span) == interval


@BY_SCENARIO
def test_the_row_is_the_median_of_the_logs_spans(sub):
    """Three separate runs of one system, each log's span time_ms over its steps; the runs agree to 1% (carina 512:
    0.9%, its result_0 19.53 s against 19.36 s) and the row is their median to the fourth decimal."""
    assert len(sub.logs) == 3 and len({span.t_first for span in sub.logs}) == 3
    steps = [_step_s(sub, span) for span in sub.logs]
    assert max(steps) / min(steps) < 1.01
    assert ROW[sub.scenario] == pytest.approx(statistics.median(steps), abs=6e-5)


@pytest.mark.parametrize("sub", [s for s in SUBMISSIONS if s.logs[0].block], ids=lambda s: s.scenario)
def test_a_block_summary_line_is_its_block_with_the_pause_before_the_evaluation(sub):
    """Where the page holds the whole block, its summary line's train_step_time is (block_stop - block_start) /
    steps: the row leaves out the 0.3-0.6 s between the last step line and block_stop (a fail: a miscopied time)."""
    for span in sub.logs:
        stop, summary = span.block
        assert (stop - span.t_first) / 1000 / _steps(sub, span) == pytest.approx(summary, abs=1e-4)
        assert 0.2 < (stop - span.t_last) / 1000 < 0.7


# Rule (a''''): the copied span is the last page's part of a longer interval. Where the log's block summary line (and,
# for carina 1,024 result_0, the block_start on the page before) was read (review, round 33): (scenario, log index,
# block_start time_ms or None where not read, block_stop time_ms, the summary's train_step_time).
WHOLE_INTERVALS = [
    ("mlperf50-llama31-405b-1024-gb200-carina-fp8", 0, 1745774481133, 1745774991281, 8.502456512966697),
    ("mlperf50-llama31-405b-512-gb200-carina-fp8", 0, None, 1745746672635, 19.533898631134296),
]


@pytest.mark.parametrize("scenario, log, block_start, block_stop, summary", WHOLE_INTERVALS)
def test_the_last_page_s_steps_run_as_the_whole_interval(scenario, log, block_start, block_stop, summary):
    """The steps a last page leaves out (the interval's first 20 of 60 at 1,024 GPUs, 11 of 52 at 512) run within
    0.2% of the steps it keeps (8.4924 against 8.5011 s, -0.10%; 19.5235 against 19.5307 s, -0.04%): the page's
    span is the interval's steady state, with no stall in it and none left out (the step after the evaluation,
    8.566 s at 1,024 GPUs, is 0.8% slow). Where block_start was read, the summary is (block_stop - block_start) /
    steps to 0.1 ms (the pause before the evaluation included); where not, block_start is implied by the summary."""
    sub = next(s for s in SUBMISSIONS if s.scenario == scenario)
    span = sub.logs[log]
    interval = -(-46_080 // sub.gbs)
    implied = block_stop - summary * 1000 * interval
    if block_start is not None:
        assert implied == pytest.approx(block_start, abs=interval * 0.1)
        implied = block_start
    left_out = (span.first - (span.last - interval * sub.gbs)) // sub.gbs
    assert 0 < left_out < interval
    early = (span.t_first - implied) / 1000 / left_out
    assert early == pytest.approx(_step_s(sub, span), rel=0.002)


def test_the_carina_steps_are_linear_in_the_microbatches_a_replica():
    """One recipe on one system at 112, 48, 48, 40 and 32 microbatches a replica (DP 8 to 39): the step is m t + c.
    The line through the 112- and 32-microbatch rows (t = 0.1692 s, c = 0.406 s) puts the other three within 0.5%
    (8.529 s against 8.499 and 8.549; 7.175 against 7.182): the copied times are one system's."""
    by_m = {}
    for s in CARINA:
        by_m.setdefault(s.minibs, []).append(ROW[s.scenario])
    t = (by_m[112][0] - by_m[32][0]) / 80
    c = by_m[32][0] - 32 * t
    assert t == pytest.approx(0.1692, abs=2e-4) and c == pytest.approx(0.406, abs=0.01)
    for m in (48, 40):
        for row in by_m[m]:
            assert row == pytest.approx(m * t + c, rel=0.005)


def test_the_two_512_gpu_systems_run_the_same_recipe_within_one_percent():
    """Tyche's and Carina's 512-GPU runs state the same configuration file name and values (MINIBS 112, DP last):
    19.5366 s against 19.3598 s, 0.9% apart; Tyche's 256-GPU run (DP 4, same microbatches a replica) 1.3% faster."""
    tyche, carina = ROW["mlperf50-llama31-405b-512-gb200-fp8"], ROW["mlperf50-llama31-405b-512-gb200-carina-fp8"]
    assert tyche / carina == pytest.approx(1.0091, abs=5e-4)
    assert tyche / ROW["mlperf50-llama31-405b-256-gb200-fp8"] == pytest.approx(1.0136, abs=5e-4)


def _stage0_before_and_after_adam(sub):
    """The model's allocated peak on pipeline stage 0, without and with Adam's two fp32 moments (8 of the distributed
    optimizer's 12 bytes a parameter, the fp32 main parameters the other 4)."""
    s0 = memory.per_gpu_memory(config.load(sub.scenario), stage=0)
    moments = s0.optimizer_bytes * 8 / memory.optimizer_state_bytes_per_param("fp8")
    return s0.allocated_bytes - moments, s0.allocated_bytes


def test_the_logged_peak_falls_with_dp_as_the_fp32_main_parameters_alone():
    """max_memory_usage is global rank 0's (mlperf_common logs on rank 0 only; TP_PP_DP_MAPPING's tp-cp-pp-dp order
    puts rank 0 on pipeline stage 0, as the default order does). On the three Carina scales whose logs name
    custom_callbacks.py line 488 (carina_ngpu1536's file: its warmup runs forward and backward, no optimizer step)
    the figure falls 1.421 GiB from DP 8 to 16 and 0.469 from 16 to 24: stage 0's fp32 main-parameter shard (4 bytes
    a parameter over DP x CP) falls 1.407 and 0.469 in the model, the whole optimizer state (12 bytes) 4.221 and
    1.407. The peak is reached before the Adam moments exist (Transformer Engine's FusedAdam creates exp_avg and
    exp_avg_sq at a parameter's first step), in the warmup's eager steps and the full-iteration graph's capture,
    after which the graph's activations sit in its private pool and later eager allocations stay below it (review,
    round 33). A fail: a DP-sharded state the model gains or loses, or a miscopied figure."""
    by_gpus = {s.gpus: s for s in CARINA if s.callbacks_line == 488}
    for small, large in ((512, 1024), (1024, 1536)):
        before = [_stage0_before_and_after_adam(by_gpus[g])[0] / 2**30 for g in (small, large)]
        after = [_stage0_before_and_after_adam(by_gpus[g])[1] / 2**30 for g in (small, large)]
        logged = by_gpus[small].max_memory_usage - by_gpus[large].max_memory_usage
        assert before[0] - before[1] == pytest.approx(logged, abs=0.03)
        assert logged < 0.5 * (after[0] - after[1])


def test_the_logged_peak_is_the_model_s_first_stage_with_the_state_its_warmup_held():
    """The 2,048- and 2,496-GPU logs name custom_callbacks.py line 512: carina_ngpu2496's file, whose warmup also runs
    optimizer.step() (betas set to 1 for it), so their peak holds the moments, and the figure rises 1.17 GiB from DP
    24 to 32 where the fp32 shard alone would fall 0.23. Against the state each warmup held, the model's stage 0 is
    0.9789-0.9792x every logged figure read as GiB (within 0.1% of one another; the H100 / H200 rows, eager, sit at
    0.992-0.993x, test_mlperf_llama31_405b_rows.py); counting the moments on all five it spreads over 0.979-1.039x.
    The worst stage (stage 1) fits in the GB200's HBM on every row, as the runs did."""
    level = []
    for s in CARINA:
        before, after = _stage0_before_and_after_adam(s)
        level.append((after if s.callbacks_line == 512 else before) / (s.max_memory_usage * 2**30))
    assert all(0.975 < x < 0.985 for x in level) and max(level) / min(level) < 1.001
    with_moments = [_stage0_before_and_after_adam(s)[1] / (s.max_memory_usage * 2**30) for s in CARINA]
    assert max(with_moments) / min(with_moments) > 1.05
    for s in SUBMISSIONS:
        memory.check_fits(config.load(s.scenario))  # raises OutOfMemoryError if the worst stage does not fit


@BY_SCENARIO
def test_the_scenario_runs_the_submitted_configuration(sub):
    """The 405B recipe (``assert_the_405b_recipe``, test_mlperf_llama31_405b_rows.py) at the logged GPUs and batch;
    GB200 NVL72 racks of 64 GPUs in the job; TP 4, DP the rest, the rank order from TP_PP_DP_MAPPING; the
    full-iteration CUDA graph; Megatron-Core 0.12 and Transformer Engine 2 (ngc25.04); one ConnectX-7 NDR 400 a GPU
    (the systems files' 4 a node of 4)."""
    s = config.load(sub.scenario)
    t, p = s.training, s.parallelism
    assert_the_405b_recipe(s, sub.gbs)
    assert (s.cluster.gpus, s.cluster.gpus_per_node, s.cluster.gpu.name) == (sub.gpus, 64, "gb200")
    assert (p.tp, p.dp) == (4, sub.gpus // 64)
    assert p.order == ("tp-cp-pp-dp" if sub.dp_last else "tp-cp-dp-pp")
    assert (t.cuda_graph_scope, t.mcore_version, p.te_version) == ("full_iteration", "0.12", 2)
