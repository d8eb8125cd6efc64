"""The last stage's deferred output-layer wgrad buffers (Megatron-Core defer_embedding_wgrad_compute): what they hold
(memory.deferred_wgrad_buffer_bytes), when they peak against the schedule's in-flight activations
(memory.deferred_wgrad_peak, checked against a step-by-step walk of Megatron's interleaved 1F1B order), and that a
deferral left to the framework default never refuses a layout (memory.deferred_output_wgrads)."""

import pytest

from simcluster.core.errors import OutOfMemoryError
from simcluster.parallel import memory
from simcluster.spec import config
from simcluster.workload.ops import shard_for

GIB = 2**30
# tp 1, 4096 tokens a microbatch, hidden 4096, vocabulary 128000: the closed-form sizes of one deferred microbatch
TOKENS, HIDDEN, VOCAB = 4096, 4096, 128000
GRAD = 2 * TOKENS * VOCAB       # bf16 [tokens, vocab] logits gradient (grad_output_buffer)
INPUT = 2 * TOKENS * HIDDEN     # bf16 [tokens, hidden] output-layer input (embedding_activation_buffer)


def _scenario(tp=1, pp=4, batch=16, virtual_stages=1, **parallelism):
    return config.from_dict({
        "name": "deferral", "cluster": {"gpu": "h100-sxm", "gpus_per_node": tp * pp, "nodes": 1},
        "model": {"layers": 8, "hidden": HIDDEN, "heads": 32, "vocab": VOCAB, "tied_embeddings": False},
        "training": {"seq_len": TOKENS, "global_batch_size": batch, "micro_batch_size": 1, "precision": "bf16"},
        "parallelism": {"tp": tp, "pp": pp, "dp": 1, "cp": 1, "virtual_stages": virtual_stages, **parallelism}})


def _last(scenario):
    return memory.per_gpu_memory(scenario, scenario.parallelism.pp - 1)


def test_one_deferred_microbatch_holds_its_16_bit_logits_gradient_and_its_input():
    s = _scenario()
    assert memory.deferred_wgrad_buffer_bytes(s.model, shard_for(s)) == (GRAD, INPUT)
    # sequence parallel: the input is the rank's sequence shard, the gradient spans the gathered sequence
    s = _scenario(tp=2, sequence_parallel=True)
    assert memory.deferred_wgrad_buffer_bytes(s.model, shard_for(s)) == (GRAD / 2, INPUT / 2)


@pytest.mark.parametrize(("limit", "held"), [(5, 5), (22, 16), (0, 16)])
def test_the_last_stage_holds_the_limits_buffers_beside_its_one_microbatch(limit, held):
    """1F1B, 16 microbatches: the last stage holds one microbatch at a time; the first ``limit`` (0: all) leave their
    gradient and input behind. With all 16 the peak is the last backward's output layer: 16 gradients and 15 inputs
    beside that microbatch's activations."""
    on_scenario = _scenario(defer_embedding_wgrad=True, wgrad_deferral_limit=limit)
    off, on = _last(_scenario(defer_embedding_wgrad=False, wgrad_deferral_limit=limit)), _last(on_scenario)
    inputs = held if held < 16 else held - 1
    assert on.activations_bytes - off.activations_bytes == pytest.approx(held * GRAD + inputs * INPUT, rel=1e-12)
    # with all 16 deferred the loss's transient 16-bit gradient is the buffers' newest entry, no longer in the
    # workspace; with fewer the later microbatches still make it beside the full buffers
    working = memory.backward_working_bytes(on_scenario.model, shard_for(on_scenario))
    transient = working if held == 16 else max(working, GRAD)
    assert on.workspace_bytes == memory.WORKSPACE_FIXED_BYTES + transient
    assert off.workspace_bytes == memory.WORKSPACE_FIXED_BYTES + max(working, GRAD)
    assert memory.per_gpu_memory(_scenario(defer_embedding_wgrad=True), 0) == memory.per_gpu_memory(
        _scenario(defer_embedding_wgrad=False), 0)                      # only the last stage


def _walk(pp, v, m, limit, per_chunk, grad, inp):
    """The last rank's activations + buffers over Megatron's interleaved 1F1B order, step by step: warm-up
    (v - 1)*pp forwards (all of them when m == pp), then one forward and one backward, then the cool-down; chunk of
    forward k (k // pp) % v, of backward k v - 1 - (k // pp) % v; the buffers take an input at the last chunk's forward
    and a gradient at its backward's output layer (its first op) while they hold fewer than ``limit``."""
    total = m * v
    warm = total if m == pp else min((v - 1) * pp, total)
    held, inputs, grads, done_inputs, peak = 0, 0, 0, 0, 0.0

    def forward(k):
        nonlocal held, inputs, peak
        held += 1
        if (k // pp) % v == v - 1 and inputs < limit:
            inputs += 1
        peak = max(peak, held * per_chunk + grads * grad + done_inputs * inp)

    def backward(k):
        nonlocal held, grads, done_inputs, peak
        last_chunk = (k // pp) % v == 0
        if last_chunk and grads < limit:
            grads += 1
        peak = max(peak, held * per_chunk + grads * grad + done_inputs * inp)
        held -= 1
        if last_chunk and done_inputs < inputs:
            done_inputs += 1        # its input now lives in the buffer only
        peak = max(peak, held * per_chunk + grads * grad + done_inputs * inp)

    for k in range(warm):
        forward(k)
    for i in range(total - warm):
        forward(warm + i)
        backward(i)
    for k in range(total - warm, total):
        backward(k)
    return peak


@pytest.mark.parametrize(("pp", "v", "m", "limit"), [(4, 1, 16, 5), (4, 1, 16, 16), (4, 2, 8, 3), (4, 2, 8, 8),
                                                     (4, 4, 4, 4), (9, 7, 63, 50), (8, 12, 32, 22), (4, 10, 16, 16),
                                                     (2, 3, 10, 7)])
def test_the_peak_matches_a_step_by_step_walk_of_megatrons_order(pp, v, m, limit):
    per_chunk, grad, inp = 1.0, 0.37, 0.05
    in_flight = len(memory.in_flight_chunks("1f1b", pp, v, m, pp - 1))
    assert _walk(pp, v, m, 0, per_chunk, 0.0, 0.0) == pytest.approx(in_flight * per_chunk)  # in_flight_chunks' count
    modelled = memory.deferred_wgrad_peak(in_flight * per_chunk, in_flight, m * v, pp, v, limit, grad, inp)
    assert modelled == pytest.approx(_walk(pp, v, m, limit, per_chunk, grad, inp), rel=1e-12)


def _recipe(name, **parallelism):
    """A NeMo recipe layout of tests/data/nemo_recipe_layouts.yaml, contract keys only (plus ``parallelism``)."""
    layouts = {
        # NeMo-Framework-Launcher nemotron_22b.yaml (NeMo 1.x: defer_embedding_wgrad_compute unset, off)
        "nemotron3-22b-8": ("nemotron3-22b", 8, 2, 4, 1, 10, 1, 32, 4096),
        # NeMo 2.x llama31_405b performance recipe (wgrad_deferral_limit 50), 576 GPUs
        "llama3.1-405b-576": ("llama3-405b", 576, 8, 9, 2, 7, 1, 252, 8192),
    }
    model, gpus, tp, pp, cp, vp, mbs, gbs, seq = layouts[name]
    return config.from_dict({
        "name": name, "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": gpus // 8, "nic": "connectx-7",
                                  "topology": "rail-fat-tree"},
        "model": model, "training": {"seq_len": seq, "global_batch_size": gbs, "micro_batch_size": mbs,
                                     "precision": "bf16", "activation_recompute": "none"},
        "parallelism": {"tp": tp, "pp": pp, "dp": gpus // (tp * pp * cp), "cp": cp, "schedule": "1f1b",
                        "virtual_stages": vp, "sequence_parallel": True, "zero_stage": 1, **parallelism}})


def test_a_defaulted_deferral_whose_buffers_would_not_fit_is_off_and_a_set_one_is_refused():
    # Nemotron-3 22B on 8 GPUs: 22 deferred [4096, 128000] bf16 gradients are 22 GiB on the last stage
    defaulted = _recipe("nemotron3-22b-8")
    assert defaulted.parallelism.defer_embedding_wgrad is True          # the framework default asks for it
    assert memory._requested_deferrals(defaulted) == 22
    assert memory.deferred_output_wgrads(defaulted) == 0                # the run that fit did not defer
    assert memory.check_fits(defaulted).total_bytes <= defaulted.cluster.gpu.hbm_capacity
    explicit = _recipe("nemotron3-22b-8", defer_embedding_wgrad=True)
    assert memory.deferred_output_wgrads(explicit) == 22
    with pytest.raises(OutOfMemoryError, match="deferred output-layer wgrad buffers"):
        memory.check_fits(explicit)
    # what runs says so: the resolved scenario has it off, a dump of it reloads to the same run, and a note names it
    effective = memory.with_fitting_deferral(defaulted)
    assert effective.parallelism.defer_embedding_wgrad is False and effective != defaulted
    reloaded = config.Scenario.model_validate(effective.model_dump(mode="json"))
    assert reloaded == effective and memory.check_fits(reloaded).total_bytes <= defaulted.cluster.gpu.hbm_capacity
    assert "off" in memory.dropped_deferral_note(defaulted, effective)
    assert memory.with_fitting_deferral(explicit) is explicit
    assert memory.dropped_deferral_note(explicit, explicit) is None


def test_the_llama_405b_recipes_last_stage_holds_its_50_deferred_microbatches_and_fits():
    """NeMo 2.x's Llama 3.1 405B recipe (wgrad_deferral_limit 50; 63 microbatches): 50 x ([4096, 16032] + [512,
    16384]) bf16 = 6.9 GiB on the last stage, which fits the H100's 79.65 GiB (the "~83 GB" of the issue is this
    77.4 GiB in decimal gigabytes)."""
    s = _recipe("llama3.1-405b-576")
    assert memory.deferred_output_wgrads(s) == 50
    off = _last(_recipe("llama3.1-405b-576", defer_embedding_wgrad=False))
    on = _last(s)
    buffers = 50 * 2 * (4096 * 16032 + 512 * 16384)
    assert on.activations_bytes - off.activations_bytes == pytest.approx(buffers, rel=1e-12)
    assert on.total_bytes <= s.cluster.gpu.hbm_capacity
    assert on.total_bytes / GIB == pytest.approx(77.4, abs=0.2)   # regression pin of the model's own figure
