"""Composer's training metrics after every microbatch's backward (workload/composer_train_metrics.py): llm-foundry's
2023 ComposerMPTCausalLM keeps LanguageCrossEntropy and LanguagePerplexity as train metrics; each update runs
torch's cross entropy over the step's bf16 logits, which autocast computes in fp32 (a cast, read 2 B and write 4 B
a logit, and log_softmax, read 4 B and write 4 B): 28 B a logit a microbatch, counted here by hand."""

from __future__ import annotations

import pytest

from simcluster.engine import simulate
from simcluster.parallel import plan
from simcluster.spec import config
from simcluster.workload import composer_train_metrics, kernels

TOKENS, VOCAB = 40960.0, 50368   # MPT-1B at micro batch 20, sequence 2048; llm-foundry's padded GPT-NeoX vocabulary


def test_two_metric_updates_read_and_write_28_bytes_a_bf16_logit():
    ops = composer_train_metrics.microbatch_ops(TOKENS, VOCAB, 2.0)
    logits = TOKENS * VOCAB
    # by hand: per metric (2 + 4) + (4 + 4) B a logit; per token the labels' shift (2 x (8 + 8) B), and per metric
    # nll_loss (8 + 4), target != ignore (8 + 1), sum (1)
    per_token = 2 * 16 + 2 * (12 + 9 + 1)
    assert sum(op.hbm_bytes for op in ops) == pytest.approx(28.0 * logits + per_token * TOKENS)
    # three label-shift kernels, seven a metric update (cast, log_softmax, nll_loss, ne, sum, two accumulations)
    assert len(ops) == 3 + 7 * len(composer_train_metrics.METRICS) == 17


def test_fp32_logits_skip_the_cast():
    """Autocast's ``cached_cast`` casts only a tensor of another dtype: fp32 logits (no 16-bit autocast) run no cast
    kernel, and log_softmax reads and writes 4 B a logit: 8 B a logit a metric, two kernels fewer a microbatch."""
    ops16 = composer_train_metrics.microbatch_ops(TOKENS, VOCAB, 2.0)
    ops32 = composer_train_metrics.microbatch_ops(TOKENS, VOCAB, 4.0)
    logits = TOKENS * VOCAB
    assert sum(op.hbm_bytes for op in ops16) - sum(op.hbm_bytes for op in ops32) == pytest.approx(2 * 6.0 * logits)
    assert len(ops16) - len(ops32) == len(composer_train_metrics.METRICS) == 2


def _chunk(name: str, monkeypatch=None, off: bool = False):
    scenario = config.load(name)
    if off:
        monkeypatch.setattr(composer_train_metrics, "applies", lambda s: False)
    return scenario, plan.plan(scenario, lambda op, group, size: 0.0).chunks[0]


@pytest.mark.parametrize("name", ["mpt-1b-64-h100", "mpt-7b-8-a100-80gb"])
def test_mpt_backward_grows_by_the_metrics_kernels_at_the_hbm_roofline_and_their_gaps(name, monkeypatch):
    scenario, with_metrics = _chunk(name)
    _, without = _chunk(name, monkeypatch, off=True)
    t, gpu = scenario.training, scenario.cluster.gpu
    tokens = t.seq_len * t.micro_batch_size
    added = with_metrics.backward_compute_s - without.backward_compute_s
    roofline = 28.0 * tokens * scenario.model.vocab / gpu.hbm_bandwidth   # the logit passes alone, at peak HBM
    launches = 17 * 100e-6        # each kernel's launch gap, at most 100 us (the fitted gap is 27-39 us)
    assert roofline < added < roofline / 0.7 + launches       # HBM efficiency of at least 0.7
    assert with_metrics.forward_compute_s == without.forward_compute_s   # after the backward, in its phase


@pytest.mark.parametrize("name", ["torchtitan-llama31-8b-8-h100-fp8-32k", "megatron-16b-h100",
                                  "nemo2511-llama3-70b-64-gb200-fp8"])
def test_other_stacks_do_not_run_composers_metrics(name):
    assert not composer_train_metrics.applies(config.load(name))


def test_every_mpt_row_runs_them():
    names = [name for name in config.bundled_names() if name.startswith("mpt-")]
    assert len(names) == 16
    assert all(composer_train_metrics.applies(config.load(name)) for name in names)


@pytest.mark.parametrize("name", ["mpt-1b-64-h100", "mpt-13b-64-h100"])
def test_the_step_pays_the_whole_charge_once_a_microbatch(name, monkeypatch):
    """Nothing overlaps the metrics in the runs: FSDP1's final backward callback makes the compute stream wait for
    the last reduce-scatter before them, and the next forward's root pre-forward makes the all-gather stream wait for
    them (torch/distributed/fsdp/_runtime_utils.py ``_wait_for_computation_stream``). So the simulated step grows by
    the microbatches times the metrics' stream time, in full, also in MPT-13B on 64 GPUs (the row whose FSDP
    collectives take the largest share of the step): the plan folds the kernels into the backward's units, and this
    fails if the engine hid any of them under communication."""
    scenario = config.load(name)
    t = scenario.training
    serial_s = scenario.microbatches * kernels.stream_time(composer_train_metrics.microbatch_ops(
        t.seq_len * t.micro_batch_size, scenario.model.vocab, 2.0), scenario.cluster.gpu, t.precision).elapsed_s()
    with_metrics = simulate(scenario).summary["step_time_s"]
    monkeypatch.setattr(composer_train_metrics, "applies", lambda s: False)
    without = simulate(scenario).summary["step_time_s"]
    assert with_metrics - without == pytest.approx(serial_s, rel=0.01)
