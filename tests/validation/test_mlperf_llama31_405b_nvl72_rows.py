"""The MLPerf Training v5.0 Llama 3.1 405B rows on GB200 NVL72 (round 33) are what their result logs measured.

Source: NVIDIA's closed-division submissions on Tyche (tyche_ngpu256 / tyche_ngpu512), read in the copy
prishajain1/training_results_v5.0 @ 0fdc28f0: NVIDIA/results/*_ngc25.04_nemo/llama31_405b/result_0.txt .. result_2.txt
(IBM + CoreWeave + NVIDIA's five Carina rows, held here in round 33 with their memory checks, were removed by
docs/calibration/round-34.md "Round 34: one admission rule for the MLPerf rows", rule (M4)), configurations in
*/benchmarks/llama31_405b/implementations/*_ngc25.04_nemo/config_GB200_*.sh. Each log writes one MLLOG
``tracked_stats`` line per training step (``time_ms``, a ``step`` metadata in samples). Each log was read at its last
stored page (16,000 characters), where the last evaluation block does not fit: from the page's first whole step line
to the last step line before the final evaluation (rule (a'''')). Copied here: the span's first and last samples and
the two ``time_ms`` (the Carina rows' whole-block spans and summary lines went with them). docs/calibration/round-33.md
"Round 33: MLPerf Training v5.0's Llama 3.1 405B on GB200 NVL72 (NVIDIA Tyche)" and "Round 33: review of the MLPerf
v5.0 Llama 3.1 405B GB200 NVL72 rows" (the whole intervals, the memory figure's stage and warmup, the callbacks file
each log names).
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
    first: int  # samples at the span's start: the first whole step line's `step`
    last: int  # the last step line's `step`
    t_first: int  # time_ms of that first step line
    t_last: int  # time_ms of the last step line


@dataclass(frozen=True)
class Submission:
    scenario: str
    gpus: int
    minibs: int  # MINIBS: microbatches of one sequence a replica
    dp_last: bool  # TP_PP_DP_MAPPING
    logs: tuple

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
]
BY_SCENARIO = pytest.mark.parametrize("sub", SUBMISSIONS, ids=lambda s: s.scenario)
ROW = {s.scenario: HELD_OUT[s.scenario]["step_time_s"] for s in SUBMISSIONS}


def _steps(sub, span):
    return (span.last - span.first) // sub.gbs


def _step_s(sub, span):
    return (span.t_last - span.t_first) / 1000 / _steps(sub, span)


@BY_SCENARIO
def test_every_span_is_whole_steps_inside_one_evaluation_interval(sub):
    """custom.yaml evaluates every ceil_div(46080, GBS) steps (103 at 448, 52 at 896); each copied span is whole
    steps of the logged batch, ends at an evaluation (a whole number of intervals) and starts inside that interval."""
    interval = -(-46_080 // sub.gbs)
    assert interval == {448: 103, 896: 52}[sub.gbs]
    span_samples = interval * sub.gbs
    for span in sub.logs:
        assert (span.last - span.first) % sub.gbs == 0 and span.last % span_samples == 0
        assert 0 < span.last - span.first <= span_samples


@BY_SCENARIO
def test_the_row_is_the_median_of_the_logs_spans(sub):
    """Three separate runs of one system, each log's span time_ms over its steps; the runs agree to 1% and the row
    is their median to the fourth decimal."""
    assert len(sub.logs) == 3 and len({span.t_first for span in sub.logs}) == 3
    steps = [_step_s(sub, span) for span in sub.logs]
    assert max(steps) / min(steps) < 1.01
    assert ROW[sub.scenario] == pytest.approx(statistics.median(steps), abs=6e-5)


def test_the_two_tyche_runs_share_their_microbatches_a_replica():
    """Tyche's 256- and 512-GPU runs state MINIBS 112 (DP 4 and 8, the same microbatches a replica): 19.2754 s against
    19.5366 s, the 512-GPU run 1.36% slower (its data-parallel groups cross racks, TP_PP_DP_MAPPING)."""
    assert ROW["mlperf50-llama31-405b-512-gb200-fp8"] / ROW["mlperf50-llama31-405b-256-gb200-fp8"] == pytest.approx(
        1.0136, abs=5e-4)


@BY_SCENARIO
def test_the_worst_stage_fits_in_the_gb200s_hbm(sub):
    """The runs ran: the model's worst pipeline stage fits in a GB200's HBM on both layouts."""
    memory.check_fits(config.load(sub.scenario))  # raises OutOfMemoryError if the worst stage does not fit


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
