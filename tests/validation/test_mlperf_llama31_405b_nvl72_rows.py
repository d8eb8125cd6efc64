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
Training v5.0's Llama 3.1 405B on GB200 NVL72 (NVIDIA Tyche)".
"""

import statistics
from dataclasses import dataclass

import pytest

from simcluster.parallel import memory
from simcluster.spec import config
from simcluster.studies import validation

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
        Span(242_816, 279_552, 1745753054231, 1745753847983)), 93.521),
    Submission("mlperf50-llama31-405b-1024-gb200-carina-fp8", 1024, 48, True, (
        Span(245_760, 276_480, 1745774650981, 1745774991025),
        Span(245_760, 276_480, 1745778631023, 1745778971001),
        Span(245_760, 276_480, 1745783200891, 1745783540694)), 92.1),
    Submission("mlperf50-llama31-405b-1536-gb200-carina-fp8", 1536, 48, True, (
        Span(230_400, 276_480, 1745731490315, 1745731831829, (1745731832188, 8.546823379799752)),
        Span(276_480, 322_560, 1745734706599, 1745735048571, (1745735048971, 8.559287919924827)),
        Span(230_400, 276_480, 1745737510242, 1745737853038, (1745737853311, 8.576723896375006))), 91.631),
    Submission("mlperf50-llama31-405b-2048-gb200-carina-fp8", 2048, 40, True, (
        Span(276_480, 322_560, 1746163373732, 1746163632393, (1746163632838, 7.197367058416906)),
        Span(276_480, 322_560, 1746169836616, 1746170095109, (1746170095520, 7.191737546556396)),
        Span(276_480, 322_560, 1746177088078, 1746177346613, (1746177347012, 7.192603479941479))), 92.802),
    Submission("mlperf50-llama31-405b-2496-gb200-carina-fp8", 2496, 32, True, (
        Span(277_056, 323_232, 1746153100087, 1746153315470, (1746153316051, 5.836846968567713)),
        Span(277_056, 323_232, 1746155447064, 1746155662183, (1746155662748, 5.829284512567274)),
        Span(277_056, 323_232, 1746158804181, 1746159020058, (1746159020548, 5.847753050136128))), 92.422),
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


def test_the_simulated_peaks_sit_above_the_logged_ones():
    """The logged max_memory_usage is nearly flat over DP 8 to 39 (91.6-93.5), where the model's allocated peak
    falls with the distributed optimizer's shards (106.1 -> 99.1 GiB): read as GiB the model is 1.07-1.14x the log
    on every Carina row, above the 1.06x of the H100 / H200 rows of round 33. A lead, not a fit: the full-iteration
    CUDA graph's static pool is one candidate for the flat logged peak."""
    for s in CARINA:
        over = memory.per_gpu_memory(config.load(s.scenario)).allocated_bytes / (s.max_memory_usage * 2**30)
        assert 1.05 < over < 1.16


@BY_SCENARIO
def test_the_scenario_runs_the_submitted_configuration(sub):
    """GPUs and batch as logged; GB200 NVL72 racks of 64 GPUs in the job; TP 4, PP 8, VP 8, CP 2, DP the rest, the
    rank order from TP_PP_DP_MAPPING; FP8 delayed scaling with fp8 parameters; 200-parameter buckets; TP overlap,
    deferral 50; the full-iteration CUDA graph; Megatron-Core 0.12 and Transformer Engine 2 (ngc25.04); MLPerf's
    405B with the Mixtral tokenizer's 32,000 entries."""
    s = config.load(sub.scenario)
    m, t, p = s.model, s.training, s.parallelism
    assert (s.cluster.gpus, s.cluster.gpus_per_node, s.cluster.gpu.name) == (sub.gpus, 64, "gb200")
    assert (t.global_batch_size, t.seq_len, t.micro_batch_size) == (sub.gbs, 8192, 1)
    assert (p.tp, p.pp, p.virtual_stages, p.cp, p.dp) == (4, 8, 8, 2, sub.gpus // 64)
    assert p.order == ("tp-cp-pp-dp" if sub.dp_last else "tp-cp-dp-pp")
    assert (m.layers, m.hidden, m.n_kv_heads, m.vocab) == (126, 16384, 8, 32000)
    assert (t.precision, t.fp8_recipe, t.fp8_param_gather, t.activation_recompute) == ("fp8", "delayed", True, "none")
    assert (t.cuda_graph_scope, t.mcore_version, p.te_version, t.cross_entropy) == (
        "full_iteration", "0.12", 2, "megatron_fused")
    assert (p.zero_stage, p.grad_buckets, p.grad_bucket_size / 2, p.average_in_collective) == (
        1, "megatron_core", 200, True)
    assert p.sequence_parallel and p.tp_comm_overlap and p.overlap_param_gather
    assert p.defer_embedding_wgrad and p.wgrad_deferral_limit == 50
