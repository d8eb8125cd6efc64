"""Composer's training metrics, recomputed on every microbatch's logits (llm-foundry's MPT, 2023; the stack of
``training.optimizer: decoupled_adamw``, docs/calibration/round-24.md "Round 24").

**What runs.** Composer's trainer, after each microbatch's ``loss.backward()``, updates the model's training metrics
when it has any (composer/trainer/trainer.py ``_train_microbatch``: "Use microbatch outputs to update training
metrics", ``if state.train_metrics is not None and len(state.train_metrics) != 0``: ``_eval_train_metrics``). That
runs under ``torch.no_grad()`` and the precision context (``torch.autocast`` bf16 for ``amp_bf16``):
``HuggingFaceModel.eval_forward(batch, outputs)`` reuses the step's outputs (no second forward) and takes their
logits; ``update_metric`` calls ``metric.update(logits, labels)`` per metric. llm-foundry's ``ComposerMPTCausalLM``
of 2023 (llmfoundry/models/mpt/modeling_mpt.py) sets ``train_metrics = [LanguageCrossEntropy(),
LanguagePerplexity()]`` (later behind ``use_train_metrics``, default True), ``use_logits=True``,
``shift_labels=True``. Composer's ``LanguageCrossEntropy.update`` (composer/metrics/nlp.py) runs
``torch.nn.CrossEntropyLoss(reduction='sum')`` over the [tokens, vocab] logits, ``(target != ignore_index).sum()``
and two scalar accumulations; ``LanguagePerplexity`` subclasses it and overrides only ``compute``, so its
``update`` runs the same cross entropy again: two full passes over the logits a microbatch.

**Bytes.** ``cross_entropy`` is on autocast's float32 list (PyTorch AMP docs, "CUDA Ops that can autocast to
float32": cross_entropy, log_softmax, nll_loss): the bf16 logits are cast to an fp32 copy (read 2 B, write 4 B a
logit; not cached: autocast caches only leaf weights), ``log_softmax`` reads it and writes fp32 log-probabilities
(4 + 4 B; the row's max and sum re-reads are counted as cache hits, a lower bound), ``nll_loss`` gathers one of them
a token with its int64 target. 14 B a logit a metric, 28 B a logit a microbatch: the flash-attention loss the model
already charges reads 2 B forward and 4 B backward (workload/ops.py ``output_ops``, ``cross_entropy: fused``).
``HuggingFaceModel.eval_forward`` also shifts the labels (``labels[:, :-1] = labels[:, 1:].clone()``,
``labels[:, -1] = -100``): three small int64 kernels. Every kernel is charged its launch (the stream's gap).
Autocast casts a tensor only when its dtype differs (``cached_cast``): fp32 logits skip the cast kernel.

**Where it runs** (review, docs/calibration/round-24.md "Round 24: review of Composer's training metrics"). On the host
after ``loss.backward()`` returns, so on the GPU after the microbatch's backward kernels and behind FSDP1's
``_post_backward_final_callback``, which makes the compute stream wait for the last reduce-scatter; the next
microbatch's root pre-forward makes the all-gather streams wait for the compute stream
(torch/distributed/fsdp/_runtime_utils.py ``_wait_for_computation_stream``), so the next forward's first all-gather
is issued behind these kernels. Nothing overlaps them: the whole charge is on the critical path, once per
microbatch. The plan folds it into the last chunk's backward; the engine then adds it to the step in full (the last
unit's reduce-scatter and the next first all-gather are exposed either way; tests/unit/test_composer_train_metrics.py
checks the step grows by exactly the serial charge).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simcluster.spec.hardware import BYTES_PER_ELEMENT
from simcluster.workload.ops import Op

if TYPE_CHECKING:
    from simcluster.spec.config import Scenario

FP32 = BYTES_PER_ELEMENT["fp32"]
INT64 = 8          # the labels' dtype (torch.long)
BOOL = 1
# llm-foundry's ComposerMPTCausalLM train_metrics (2023): each runs LanguageCrossEntropy.update
METRICS = ("LanguageCrossEntropy", "LanguagePerplexity")


def applies(scenario: Scenario) -> bool:
    """Whether the scenario runs Composer's trainer with llm-foundry's MPT (its training metrics on): the stack
    ``training.optimizer: decoupled_adamw`` names (workload.composer_adamw)."""
    return scenario.training.optimizer == "decoupled_adamw"


def microbatch_ops(tokens: float, vocab: int, logit_element_bytes: float) -> list[Op]:
    """The kernels Composer's training metrics run after one microbatch's backward, over ``tokens`` rows of
    ``vocab`` logits of ``logit_element_bytes`` each, in issue order: the labels' shift, then per metric the cast
    (16-bit logits), log_softmax, nll_loss, the count of counted targets and the two accumulations."""
    logits = tokens * vocab
    shift = [Op("eval_forward labels[:, 1:].clone", "memory", 0.0, 2 * INT64 * tokens),
             Op("eval_forward labels[:, :-1] copy", "memory", 0.0, 2 * INT64 * tokens),
             Op("eval_forward labels[:, -1] fill", "memory", 0.0, 0.0)]
    cast = ([Op("train metric autocast cast to fp32", "memory", logits, (logit_element_bytes + FP32) * logits)]
            if logit_element_bytes != FP32 else [])   # autocast's cached_cast skips a tensor already fp32
    per_metric = [*cast,
                  Op("train metric log_softmax fp32", "memory", 4.0 * logits, 2 * FP32 * logits),
                  Op("train metric nll_loss", "memory", tokens, (INT64 + FP32) * tokens),
                  Op("train metric target != ignore_index", "memory", tokens, (INT64 + BOOL) * tokens),
                  Op("train metric sum", "memory", tokens, BOOL * tokens),
                  Op("train metric total_items +=", "memory", 1.0, 0.0),
                  Op("train metric sum_loss +=", "memory", 1.0, 0.0)]
    return shift + per_metric * len(METRICS)
