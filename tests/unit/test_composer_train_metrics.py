"""Composer's training metrics after every microbatch's backward (workload/composer_train_metrics.py): llm-foundry's
2023 ComposerMPTCausalLM keeps LanguageCrossEntropy and LanguagePerplexity as train metrics; each update runs
torch's cross entropy over the step's bf16 logits, which autocast computes in fp32 (a cast, read 2 B and write 4 B
a logit, and log_softmax, read 4 B and write 4 B): 28 B a logit a microbatch, counted here by hand."""

from __future__ import annotations

import pytest

from simcluster.parallel import plan
from simcluster.spec import config
from simcluster.workload import composer_train_metrics

TOKENS, VOCAB = 40960.0, 50368   # MPT-1B at micro batch 20, sequence 2048; llm-foundry's padded GPT-NeoX vocabulary


def test_two_metric_updates_read_and_write_28_bytes_a_bf16_logit():
    ops = composer_train_metrics.microbatch_ops(TOKENS, VOCAB, 2.0)
    logits = TOKENS * VOCAB
    # by hand: per metric (2 + 4) + (4 + 4) B a logit; per token the labels' shift (2 x (8 + 8) B), and per metric
    # nll_loss (8 + 4), target != ignore (8 + 1), sum (1)
    per_token = 2 * 16 + 2 * (12 + 9 + 1)
    assert sum(op.hbm_bytes for op in ops) == pytest.approx(28.0 * logits + per_token * TOKENS)
    assert composer_train_metrics.logit_bytes_per_metric(2.0) == 14.0
    # three label-shift kernels, seven a metric update (cast, log_softmax, nll_loss, ne, sum, two accumulations)
    assert len(ops) == 3 + 7 * len(composer_train_metrics.METRICS) == 17


def test_fp32_logits_would_skip_nothing_but_read_more():
    """An fp32 logit (no autocast) still pays the cast's read and write of 4 B (``.to(float32)`` of an fp32 tensor is
    a no-op in torch, so this bounds the model from above for fp32 logits; the MPT rows' logits are bf16)."""
    ops16 = composer_train_metrics.microbatch_ops(TOKENS, VOCAB, 2.0)
    ops32 = composer_train_metrics.microbatch_ops(TOKENS, VOCAB, 4.0)
    assert sum(op.hbm_bytes for op in ops32) - sum(op.hbm_bytes for op in ops16) == pytest.approx(
        2 * 2.0 * TOKENS * VOCAB)


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


def test_share_of_the_mpt_1b_step_follows_tokens_times_vocab():
    """Per token the metrics cost 28 B x vocab, against the 6N FLOP of the step: MPT-1B (N 1.3 G) pays a share about
    10x MPT-13B's (N 12.9 G) at the same vocabulary; each under 3% of its simulated step."""
    shares = {}
    for name in ("mpt-1b-64-h100", "mpt-13b-8-h100"):
        scenario = config.load(name)
        t, gpu = scenario.training, scenario.cluster.gpu
        tokens = t.seq_len * t.micro_batch_size * scenario.microbatches
        step_flop_s = 6 * memory_params(scenario) * tokens / (gpu.peak_flop_per_s("bf16") * 0.45)   # MFU about 45%
        shares[name] = 28.0 * tokens * scenario.model.vocab / gpu.hbm_bandwidth / step_flop_s
    assert 0.015 < shares["mpt-1b-64-h100"] < 0.03
    assert 0.0015 < shares["mpt-13b-8-h100"] < 0.003
    assert shares["mpt-1b-64-h100"] / shares["mpt-13b-8-h100"] == pytest.approx(12.85 / 1.316, rel=0.02)


def memory_params(scenario) -> float:
    """N to first order: 12 L d^2 of the layers, the tied word embedding and the learned position table."""
    m = scenario.model
    return 12 * m.layers * m.hidden ** 2 + m.vocab * m.hidden + m.max_seq_len * m.hidden
