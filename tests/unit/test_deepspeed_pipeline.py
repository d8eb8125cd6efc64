"""DeepSpeed's PipelineEngine (``parallelism.pipeline_engine: deepspeed``, parallel/deepspeed_pipeline.py) against
closed forms: the bytes of its gradient accumulation, the collective its BF16_Optimizer reduces with, the sender's
re-gather of its partitioned output, and its exchanges in series; the key's strict validation; the default engine
unchanged."""

from __future__ import annotations

import copy
import dataclasses

import pytest
from scenario_data import with_changes

from simcluster.collectives import timing
from simcluster.core.errors import ScenarioError
from simcluster.engine import Simulation
from simcluster.parallel import deepspeed_pipeline, memory, schedules
from simcluster.spec import config
from simcluster.workload import embedding_grad, kernels, optimizer_step, te_flash_layout
from simcluster.workload.ops import embedding_ops, layer_ops, shard_for

# a small GPT over two 4-GPU A100 nodes: tp 4 inside a node, pp 2 across them, no sequence parallelism (2022's
# Megatron-DeepSpeed had none); the loss and output layer as Megatron-DeepSpeed ran them, so that the Megatron twin
# of ``plans`` differs in the engine alone (not in Megatron-Core's fused loss or deferred wgrad, its defaults)
BASE = {
    "name": "deepspeed-pipeline",
    "cluster": {"gpu": "a100-80gb-sxm", "gpus_per_node": 4, "nodes": 2, "nic": "connectx-6",
                "topology": "rail-fat-tree"},
    "model": {"layers": 8, "hidden": 4096, "heads": 32, "vocab": 51200},
    "training": {"seq_len": 2048, "global_batch_size": 8, "micro_batch_size": 1, "precision": "bf16",
                 "activation_recompute": "full", "cross_entropy": "unfused"},
    "parallelism": {"tp": 4, "pp": 2, "dp": 1, "sequence_parallel": False, "overlap_grad_reduce": False,
                    "pipeline_engine": "deepspeed", "defer_embedding_wgrad": False},
}


def scenario(**changes) -> config.Scenario:
    """BASE with ``section__key=value`` changes."""
    return with_changes(BASE, **changes)


def plans(**changes):
    """The plan of BASE (with ``changes``) under Megatron's engine and under DeepSpeed's. The Megatron twin runs
    Megatron-Core, whose attention adds q/k/v layout copies on the A100 (``te_flash_layout``, round 27) and the QKV
    split's backward concatenation (round 32) that the Megatron-DeepSpeed scenario does not model: they are left out
    of the twin, so that the two differ in the engine alone."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(te_flash_layout, "layout", lambda _scenario: None)
        patch.setattr(te_flash_layout, "split_backward_copies", lambda _scenario: False)
        megatron = Simulation(scenario(parallelism__pipeline_engine="megatron", **changes)).plan
    return megatron, Simulation(scenario(**changes)).plan


# ---- the gradients --------------------------------------------------------------------------------------------

def test_bf16_optimizer_moves_18_bytes_per_parameter_and_microbatch():
    """update_hp_grads: the bf16 gradient read (2), its fp32 copy written and read (4 + 4), the fp32 gradient read
    and written (4 + 4); autograd's in-place 16-bit accumulation reads two gradients and writes one (3 x 2)."""
    assert deepspeed_pipeline.accumulation_bytes_per_param("bf16", "fp32") == 18
    assert deepspeed_pipeline.accumulation_bytes_per_param("bf16", "bf16") == 6
    assert deepspeed_pipeline.accumulation_bytes_per_param("fp16", "fp16") == 6


def test_accumulation_lengthens_each_backward_by_its_bytes_at_most_at_the_hbm_rate():
    """Every parameter of a chunk (the embedding's too) passes through the accumulation each microbatch: the
    backward grows by at least 18 B x params over the datasheet HBM bandwidth, and the forward not at all; with
    16-bit gradients the growth is a third of that (both memory-bound, one kernel each), 12 B x params less."""
    one_rank = {"parallelism__tp": 1, "cluster__gpus_per_node": 1}  # no partitioned messages: the accumulation alone
    megatron, deepspeed = plans(**one_rank)
    _, sixteen_bit = plans(parallelism__grad_reduce_dtype="bf16", parallelism__zero_stage=1, **one_rank)
    hbm_bytes_per_s = scenario().cluster.gpu.hbm_bandwidth
    weight_bytes = memory.state_bytes_per_param("bf16")["weights"]
    for before, after, low in zip(megatron.chunks, deepspeed.chunks, sixteen_bit.chunks, strict=True):
        params = before.param_bytes / weight_bytes
        grown_s = after.backward_compute_s - before.backward_compute_s
        assert grown_s >= 18 * params / hbm_bytes_per_s
        assert grown_s < 2 * 18 * params / hbm_bytes_per_s  # a memory-bound pass, not slower than half the rate
        assert after.forward_compute_s == before.forward_compute_s
        low_s = low.backward_compute_s - before.backward_compute_s
        assert 12 * params / hbm_bytes_per_s <= grown_s - low_s < 2 * 12 * params / hbm_bytes_per_s
        # closed form: the bytes at the achievable HBM rate, and the stream's per-kernel time for each kernel: two
        # per parameter tensor of the chunk's layers with the BF16_Optimizer (cast, add), one with autograd's
        tensors = before.layers * 12   # QKV, attention output, MLP up and down: weights and biases; two LayerNorms
        gap_s = kernels.host_model().kernel_gap_s
        rate = hbm_bytes_per_s * kernels.hbm_fraction(scenario().cluster.gpu.name)
        # the Megatron twin's first stage also adds the embedding's dense .grad into its main gradient (one kernel,
        # workload.embedding_grad, round 25); DeepSpeed's accumulation above covers the embedding instead
        twin = scenario(parallelism__pipeline_engine="megatron", **one_rank)
        add = {op.name: op for op in embedding_ops(twin.model, shard_for(twin))["backward_weight"]}.get(
            embedding_grad.ACCUMULATE_OP)
        twin_add_s = add.hbm_bytes / rate + gap_s if add is not None and before.stage == 0 else 0.0
        # both reduce the biases Megatron adds outside the GEMM in kernels of their own
        # (eager_backward.megatron_autograd_biases): Megatron-Core the three skip_bias_add linears' (round 32), the
        # Megatron-DeepSpeed layer those and the QKV bias, which its ColumnParallelLinear adds outside the GEMM
        # (round 33): one [tokens, 3h/tp] reduction a layer more
        bias_ops = {name: [op for op in layer_ops(s.model, shard_for(s))["backward_input"]
                           if op.name.endswith("_bias_grad")]
                    for name, s in (("twin", twin), ("ds", scenario(**one_rank)))}
        assert sorted(op.name for op in bias_ops["ds"]) == sorted(
            [op.name for op in bias_ops["twin"]] + ["qkv_bias_grad"])
        extra_bias_s = before.layers * (sum(op.hbm_bytes / rate + gap_s for op in bias_ops["ds"])
                                        - sum(op.hbm_bytes / rate + gap_s for op in bias_ops["twin"]))
        assert grown_s == pytest.approx(18 * params / rate + 2 * tensors * gap_s - twin_add_s + extra_bias_s, rel=1e-6)
        assert low_s == pytest.approx(6 * params / rate + tensors * gap_s - twin_add_s + extra_bias_s, rel=1e-6)


def test_accumulation_runs_kernels_per_parameter_tensor():
    """BF16_Optimizer.update_hp_grads loops over the parameter tensors, ``hp_grad.data.add_(lp.grad.data.to(...))``:
    two kernels each; autograd's AccumulateGrad one in-place add each. A GPT layer with biases and LayerNorm holds
    12 tensors (4 weights, 4 biases, 2 x 2 norm parameters); RMSNorm without biases 6."""
    model = scenario().model
    assert optimizer_step.parameter_tensors_per_layer(model.norm, model.linear_biases) == 12
    lean = model.model_copy(update={"norm": "rmsnorm", "bias": False})
    assert optimizer_step.parameter_tensors_per_layer(lean.norm, lean.linear_biases) == 6
    assert deepspeed_pipeline.accumulation_kernels_per_tensor("bf16", "fp32") == 2
    assert deepspeed_pipeline.accumulation_kernels_per_tensor("bf16", "bf16") == 1
    ops = deepspeed_pipeline.accumulation_ops(1e9, 36, 18, 2)
    assert len(ops) == 72
    assert sum(op.hbm_bytes for op in ops) == pytest.approx(18e9)


def test_bf16_optimizer_passes_over_the_fp32_gradients_once_per_step(monkeypatch):
    """allreduce_bucket's cast of the fp32 gradient to bf16 (4 + 2), the post-scaling mul_ of the bf16 copy (2 + 2)
    and its copy back (2 + 4) around the all-reduce, then the norm (read) and clear_hp_grads (write) of every 4 B
    gradient of the stage: 24 B per parameter added to the optimizer, memory-bound; none with 16-bit gradients
    (no BF16_Optimizer). Megatron-Core's own norm and zeroed buffer are then not counted too: the rest of the step is
    FusedAdam and the weight copy, at least the zeroing's 4 B a local parameter below Megatron-Core's step."""
    megatron, deepspeed = plans()
    monkeypatch.setattr(deepspeed_pipeline, "BF16_STEP_BYTES_PER_PARAM", 0)
    monkeypatch.setattr(deepspeed_pipeline, "allreduce_bucket_bytes_per_param", lambda grad, comm: 0.0)
    _, adam_only = plans()
    monkeypatch.undo()
    hbm_bytes_per_s = scenario().cluster.gpu.hbm_bandwidth
    assert deepspeed_pipeline.BF16_STEP_BYTES_PER_PARAM == 8
    assert deepspeed_pipeline.allreduce_bucket_bytes_per_param("fp32", "bf16") == 16
    for stage, params in enumerate(deepspeed.stage_params):
        grown_s = deepspeed.optimizer_s[stage] - adam_only.optimizer_s[stage]
        assert 24 * params / hbm_bytes_per_s <= grown_s < 2 * 24 * params / hbm_bytes_per_s
        assert megatron.optimizer_s[stage] - adam_only.optimizer_s[stage] >= 4 * params / hbm_bytes_per_s
    low_megatron, low = plans(parallelism__grad_reduce_dtype="bf16", parallelism__zero_stage=1)
    assert low.optimizer_s == low_megatron.optimizer_s


def test_bf16_optimizer_copies_the_gathered_parameters_out_once_per_step(monkeypatch):
    """all_gather_dp_groups' list all-gather: ProcessGroupNCCL copies every gathered bf16 parameter out of its flat
    buffer, a read and a write of 2 B each: 4 B per parameter of the stage, memory-bound, in the optimizer's time."""
    assert deepspeed_pipeline.BF16_PARAM_GATHER_COPY_BYTES_PER_PARAM == 4
    _, deepspeed = plans()
    monkeypatch.setattr(deepspeed_pipeline, "BF16_PARAM_GATHER_COPY_BYTES_PER_PARAM", 0)
    _, no_copy = plans()
    rate = scenario().cluster.gpu.hbm_bandwidth * kernels.hbm_fraction(scenario().cluster.gpu.name)
    for stage, params in enumerate(deepspeed.stage_params):
        assert deepspeed.optimizer_s[stage] - no_copy.optimizer_s[stage] == pytest.approx(4 * params / rate, rel=1e-6)


@pytest.mark.parametrize(("phase", "first", "last", "syncs", "fulls"), [
    ("forward", True, False, 1, 0),    # the output's to_meta; nothing received
    ("forward", False, False, 1, 1),   # + the received input rebuilt
    ("forward", False, True, 0, 1),    # the last stage sends nothing
    ("backward", True, False, 1, 2),   # the gradient's from_meta after the output's re-gather; no SendGrad
    ("backward", False, False, 2, 2),  # + SendGrad's to_meta of the input gradient
    ("backward", False, True, 1, 0),   # the last stage receives no gradient and re-gathers nothing
])
def test_partitioned_messages_sync_and_rebuild_per_block(phase, first, last, syncs, fulls):
    assert deepspeed_pipeline.partition_syncs(phase, first, last) == syncs
    assert deepspeed_pipeline.partition_fulls(phase, first, last) == fulls


@pytest.mark.parametrize(("phase", "first", "last", "clones"), [
    ("forward", True, False, 1),    # the output's partitioning
    ("forward", False, False, 3),   # + the received part cloned by _exec_recv_activations and _exec_forward_pass
    ("forward", False, True, 2),    # the last stage partitions nothing
    ("backward", True, False, 0),   # no SendGrad on the first stage; the received gradient is not copied
    ("backward", False, False, 1),  # SendGrad's partitioning of the input gradient
    ("backward", False, True, 1),
])
def test_partitioned_messages_are_cloned_per_block(phase, first, last, clones):
    assert deepspeed_pipeline.partition_clones(phase, first, last) == clones


def test_each_host_sync_costs_a_pipeline_step_and_each_rebuild_five_and_two_tpths_bytes_per_message_byte():
    """pp 2, tp 4: the first stage's forward grows by one drained step's host time (its output's to_meta) and the
    clone of its 1/tp part (2/tp B per message byte, two launches: the part and the meta); the last stage's by the
    received activation's rebuild, no sync: PartitionedTensor.full() zero-fills the message (1 B per byte), copies
    the rank's own part into it (2/tp B, one kernel), the list all-gather's copy-out reads and writes it
    (ProcessGroupNCCL: 2 B, its tp copies one op), the clone reads and writes it (2 B), and the received part is
    cloned twice (4/tp B); memory-bound, each launch with the stream's per-kernel time. With one rank per stage (no
    partitioned messages) neither grows."""
    megatron, deepspeed = plans()
    tp = scenario().parallelism.tp
    step_s = kernels.pipeline_step_overhead_s()
    gap_s = kernels.host_model().kernel_gap_s
    rate = scenario().cluster.gpu.hbm_bandwidth * kernels.hbm_fraction(scenario().cluster.gpu.name)
    message = megatron.p2p_gather_bytes
    first, last = deepspeed.chunks
    assert first.forward_compute_s - megatron.chunks[0].forward_compute_s == pytest.approx(
        step_s + 2 / tp * message / rate + 2 * gap_s, rel=1e-6)
    assert first.forward_stream.kernels == megatron.chunks[0].forward_stream.kernels + 2
    full_kernels, clone_kernels = 4, 2 * 2
    assert last.forward_compute_s - megatron.chunks[1].forward_compute_s == pytest.approx(
        (5 + 6 / tp) * message / rate + (full_kernels + clone_kernels) * gap_s, rel=1e-6)
    assert last.forward_stream.kernels == megatron.chunks[1].forward_stream.kernels + full_kernels + clone_kernels
    one_megatron, one = plans(parallelism__tp=1, cluster__gpus_per_node=1)
    for before, after in zip(one_megatron.chunks, one.chunks, strict=True):
        assert after.forward_compute_s == before.forward_compute_s


@pytest.mark.parametrize(("grad_dtype", "zero_stage", "op"), [
    ("fp32", 1, "allreduce"),           # BF16_Optimizer: _bf16_reduce_grads -> buffered_allreduce_fallback
    ("bf16", 1, "reduce_scatter"),      # ZeRO-1: each partition reduced to its owner
    ("bf16", 0, "allreduce"),
])
def test_data_parallel_reduction(grad_dtype, zero_stage, op):
    spec = scenario(parallelism__grad_reduce_dtype=grad_dtype, parallelism__zero_stage=zero_stage)
    assert Simulation(spec).plan.dp_grad_op == op


# ---- the pipeline messages ------------------------------------------------------------------------------------

def test_every_stage_but_the_last_gathers_its_sent_output_again_before_its_backward():
    """One more all-gather of the whole activation over the TP group in each backward of a stage that sent its
    output (PartitionedTensor.full in _exec_backward_pass), timed as the receiver's gather of the same message."""
    megatron, deepspeed = plans()
    sim = Simulation(scenario())
    gather_s = timing.isolated_time_s(sim.fabric, "all_gather", tuple(range(4)), megatron.p2p_gather_bytes)
    assert megatron.p2p_gather_bytes == 2048 * 4096 * 2  # the bf16 activation, rebuilt whole
    first, last = deepspeed.chunks
    # Megatron's backward splits its calls into async and blocking ones (workload.async_backward), DeepSpeed's none
    own = megatron.chunks[0]
    assert not first.tp_async_backward and own.tp_async_backward
    counts: dict[str, int] = {}
    for op, count in (*own.tp_collectives["backward"], *own.tp_blocking["backward"]):
        counts[op] = counts.get(op, 0) + count
    assert first.tp_collectives["backward"][-1] == ("all_gather", 1)
    assert sum(count for op, count in first.tp_collectives["backward"][:-1]) == sum(counts.values())
    blocking_s = sum(count * timing.isolated_time_s(sim.fabric, op, tuple(range(4)), own.tp_bytes)
                     for op, count in own.tp_blocking["backward"] if count)
    assert first.backward_tp_comm_s == pytest.approx(own.backward_tp_comm_s + blocking_s + gather_s, rel=1e-9)
    other = megatron.chunks[1]
    assert last.tp_collectives["forward"] == other.tp_collectives["forward"]
    assert sum(n for _, n in last.tp_collectives["backward"]) == sum(
        n for _, n in (*other.tp_collectives["backward"], *other.tp_blocking["backward"]))
    assert first.tp_collectives["forward"] == megatron.chunks[0].tp_collectives["forward"]


def test_exchanges_in_series_add_one_transfer_per_steady_state_exchange():
    """pp 2, m microbatches, identical stages, no TP traffic: Megatron's batched exchange moves the activation and
    the gradient at once, DeepSpeed's one after the other, both neighbours waiting for both. Stage 0 exchanges
    after each of its forwards F1 .. F(m-1), all on the critical path: the step grows by (m - 1) transfers."""
    spec = scenario(parallelism__tp=1, cluster__gpus_per_node=1, parallelism__pipeline_engine="megatron")
    steps = {}
    for sequential in (False, True):
        sim = Simulation(spec)
        middle = dataclasses.replace(sim.plan.chunks[1], tp_collectives={}, forward_tp_comm_s=0.0,
                                     backward_tp_comm_s=0.0)
        sim.plan.chunks = [dataclasses.replace(middle, chunk=c.chunk, stage=c.stage) for c in sim.plan.chunks]
        sim.plan.embedding_grad_bytes, sim.plan.grad_norm_axes = 0.0, ()
        sim.plan.p2p_sequential = sequential
        steps[sequential] = sim.run().summary["step_time_s"]
    wire_s = timing.isolated_time_s(sim.fabric, "sendrecv_ring", (0, 1), sim.plan.p2p_bytes)
    m = spec.microbatches
    assert steps[True] - steps[False] == pytest.approx((m - 1) * wire_s, rel=1e-6)


def test_the_held_out_runs_finish_collapsed_as_expanded():
    """A deadlock would leave SimPy without events before the step ends; one agent per stage and one per GPU agree
    with DeepSpeed's exchanges, gathers and reductions on two nodes with data parallelism."""
    spec = scenario(cluster__nodes=4, parallelism__dp=2, training__global_batch_size=16,
                    parallelism__zero_stage=1)
    collapsed = Simulation(spec).run().summary
    expanded = Simulation(spec, expand=True).run().summary
    assert collapsed["step_time_s"] == pytest.approx(expanded["step_time_s"], rel=1e-9)


# ---- the key ----------------------------------------------------------------------------------------------------

def test_megatron_is_the_default_and_changes_nothing():
    data = copy.deepcopy(BASE)
    del data["parallelism"]["pipeline_engine"]
    default = config.from_dict(data)
    assert default.parallelism.pipeline_engine == "megatron"
    assert Simulation(default).run().summary["step_time_s"] == Simulation(
        scenario(parallelism__pipeline_engine="megatron")).run().summary["step_time_s"]


@pytest.mark.parametrize("changes", [
    {"parallelism__pipeline_engine": "colossal"},
    {"parallelism__overlap_grad_reduce": True},
    {"parallelism__virtual_stages": 2},
    {"parallelism__sequence_parallel": True},
    {"parallelism__zero_stage": 2},
    {"parallelism__p2p": "async"},
    {"training__precision": "fp8", "cluster__gpu": "h100-sxm"},   # on an A100 the GPU refuses fp8 first
    {"training__gradient_accumulation_fusion": False},
    {"parallelism__zero_stage": 0},                      # fp32 gradients are BF16_Optimizer's, which shards
])
def test_what_deepspeeds_engine_did_not_run_is_a_one_line_error_naming_the_field(changes):
    with pytest.raises(ScenarioError) as caught:
        scenario(**changes)
    assert caught.value.field == "parallelism.pipeline_engine"
    assert "\n" not in str(caught.value)


def test_the_held_out_scenarios_run_deepspeeds_engine():
    for name in ("smith2022-mtnlg-530b-280-a100", "smith2022-mtnlg-530b-350-a100", "smith2022-mtnlg-530b-420-a100",
                 "bigscience-bloom-176b-384-a100"):
        assert config.load(name).parallelism.pipeline_engine == "deepspeed"


# ---- fewer microbatches than stages ----------------------------------------------------------------------------
# DeepSpeed's TrainSchedule (deepspeed/runtime/pipe/schedule.py, 2021-2022) runs any micro_batches >= 1: 2 (m + pp - 1)
# steps, stage s's forward j at step 2j + s and backward j at 2j + 2pp - 1 - s, a step whose microbatch lies outside
# [0, m) computing nothing but still sending what the step before produced. With m <= pp - s - 1 every forward of
# stage s is a warm-up one: the last one's SendActivation goes alone (its backward step has no RecvGrad), the first
# backward's RecvGrad comes 2 (pp - m - s) - 1 steps later. BLOOM's ramp-up ran one microbatch a replica on 12 stages.

FEW = [(2, 1), (3, 1), (3, 2), (4, 1), (4, 2), (4, 3)]


def uniform_pipeline(pp: int, m: int, engine: str = "deepspeed", transfers: bool = True):
    """BASE on ``pp`` one-GPU stages (no TP traffic) with ``m`` microbatches, every chunk the middle one (t_f, t_b
    alike on every stage), the step's collectives and optimizer off: the pipeline alone. Returns the simulation, t_f,
    t_b and one pipeline message's time on the wire."""
    sim = Simulation(scenario(parallelism__tp=1, cluster__gpus_per_node=1, cluster__nodes=pp, parallelism__pp=pp,
                              training__global_batch_size=m, parallelism__pipeline_engine=engine))
    plan = sim.plan
    middle = dataclasses.replace(plan.chunks[1], tp_collectives={}, forward_tp_comm_s=0.0, backward_tp_comm_s=0.0)
    plan.chunks = [dataclasses.replace(middle, chunk=c.chunk, stage=c.stage) for c in plan.chunks]
    plan.embedding_grad_bytes, plan.grad_norm_axes = 0.0, ()
    plan.optimizer_s = [0.0] * len(plan.optimizer_s)
    if not transfers:
        plan.p2p_bytes = 0.0
    wire_s = timing.isolated_time_s(sim.fabric, "sendrecv_ring", (0, 1), plan.p2p_bytes) if transfers else 0.0
    return sim, middle.forward_compute_s, middle.backward_compute_s, wire_s


@pytest.mark.parametrize("engine", ["deepspeed", "megatron"])
@pytest.mark.parametrize(("pp", "m"), FEW)
def test_fewer_microbatches_than_stages_take_m_plus_pp_minus_1_passes(pp, m, engine):
    """Uniform stages, free transfers: the forward of microbatch 0 down pp - 1 stages, m forward/backward pairs on the
    last stage, the backward of microbatch m - 1 up pp - 1 stages, no stage busy when its input arrives (stage s ends
    its forwards at (m + s) t_f): (m + pp - 1)(t_f + t_b), the 1F1B step for any m >= 1, with m < pp as with more."""
    assert m < pp
    sim, f, b, _ = uniform_pipeline(pp, m, engine, transfers=False)
    assert sim.plan.microbatches == m
    assert sim.run(1).summary["step_time_s"] == pytest.approx((m + pp - 1) * (f + b), rel=1e-9)


@pytest.mark.parametrize(("pp", "m"), FEW)
@pytest.mark.parametrize(("f", "b"), [(1.0, 2.5), (2.5, 1.0)])
def test_trainschedules_replay_takes_m_plus_pp_minus_1_pairs_below_pp_microbatches(pp, m, f, b):
    """The replay of TrainSchedule itself (scripts/deepspeed_replay.py, from _step_to_micro_batch), free transfers:
    (m + pp - 1)(t_f + t_b) with m < pp, whichever pass is the longer, every stage idle (pp - 1)(t_f + t_b)."""
    from scripts_loader import load_script

    r = load_script("deepspeed_replay").replay(pp, m, [f] * pp, [b] * pp)
    assert r.step_s == pytest.approx((m + pp - 1) * (f + b), rel=1e-12)
    for s in range(pp):
        assert r.idle_s(s) == pytest.approx((pp - 1) * (f + b), rel=1e-12)


@pytest.mark.parametrize("engine", ["deepspeed", "megatron"])
@pytest.mark.parametrize("pp", [2, 3, 5])
def test_one_microbatch_crosses_the_pipeline_down_and_up(pp, engine):
    """One microbatch (BLOOM's global batch 16 over dp 8 at micro batch 2): its forward on each stage in turn, the
    activation over pp - 1 links, its backward back up, the gradient over pp - 1 links, nothing overlapping:
    pp (t_f + t_b) + 2 (pp - 1) transfers, under either engine (one message at a time, series or batched alike)."""
    sim, f, b, wire_s = uniform_pipeline(pp, 1, engine)
    assert wire_s > 0
    assert sim.run(1).summary["step_time_s"] == pytest.approx(pp * (f + b) + 2 * (pp - 1) * wire_s, rel=1e-9)


@pytest.mark.parametrize(("pp", "m"), [*FEW, (4, 4), (4, 6)])
def test_the_engine_runs_trainschedule_with_blocking_transfers_at_any_microbatch_count(pp, m):
    """Against the event-by-event replay of TrainSchedule (scripts/deepspeed_replay.py: every send and receive
    blocking and matched, each transfer holding both ranks): the engine's step equals the replay's with the message's
    wire time for each activation and gradient, for m < pp (the idle steps' lone sends) and m >= pp."""
    from scripts_loader import load_script

    replay = load_script("deepspeed_replay").replay
    sim, f, b, wire_s = uniform_pipeline(pp, m)
    expected = replay(pp, m, [f] * pp, [b] * pp, wire_s, wire_s).step_s
    assert sim.run(1).summary["step_time_s"] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("pp", "stage", "m"), [(4, 0, 1), (4, 0, 3), (4, 1, 2), (4, 0, 4), (4, 2, 1), (4, 0, 8),
                                                (4, 3, 1), (12, 0, 1), (12, 5, 7)])
def test_warm_up_sends_go_alone(pp, stage, m):
    """w = min(pp - stage - 1, m) warm-up forwards, whose sends go alone (Megatron-LM send_forward; TrainSchedule's
    SendActivation in a backward step without a RecvGrad); each of the m - w steady iterations batches its forward's
    send with the next backward's receive and, all but the last, its backward's send with the next forward's
    receive: max(0, 2 (m - w) - 1) batched exchanges, none when every forward is a warm-up one."""
    w = schedules.warmup_forwards("1f1b", pp, stage, m)
    assert w == min(pp - stage - 1, m)
    order = schedules.pipeline_order("1f1b", pp, stage, m)
    batched = [i for i in range(len(order)) if schedules.batches_next_receive(order, i, w)]
    assert len(batched) == max(0, 2 * (m - w) - 1)
    assert all(i >= w for i in batched)


def _engine_pairs(pp: int, stage: int, m: int) -> set[tuple[str, int, int]]:
    """The engine's batched exchanges of ``stage``: (phase sent, its microbatch, the microbatch received with it),
    only where the send exists (no activation leaves the last stage, no gradient the first)."""
    order = schedules.pipeline_order("1f1b", pp, stage, m)
    w = schedules.warmup_forwards("1f1b", pp, stage, m)
    pairs = set()
    for i, work in enumerate(order):
        sends = stage < pp - 1 if work.phase == "forward" else stage > 0
        if sends and schedules.batches_next_receive(order, i, w):
            pairs.add((work.phase, work.microbatch, order[i + 1].microbatch))
    return pairs


def _trainschedule_pairs(pp: int, stage: int, m: int) -> set[tuple[str, int, int]]:
    """From TrainSchedule's own instruction stream (scripts/deepspeed_replay.py ``train_schedule``, built from
    ``_step_to_micro_batch``, not from ``pipeline_order``): a backward step's SendActivation with the same step's
    RecvGrad, a forward step's SendGrad with the same step's RecvActivation; a send whose step has no receive goes
    alone."""
    from scripts_loader import load_script

    stream = load_script("deepspeed_replay").train_schedule(pp, m, stage)
    received = {(ins.step, ins.name): ins.microbatch for ins in stream if ins.name.startswith("Recv")}
    pairs = set()
    for ins in stream:
        partner = {"SendActivation": ("forward", "RecvGrad"), "SendGrad": ("backward", "RecvActivation")}.get(ins.name)
        if partner and (ins.step, partner[1]) in received:
            pairs.add((partner[0], ins.microbatch, received[(ins.step, partner[1])]))
    return pairs


def _megatron_pairs(pp: int, stage: int, m: int) -> set[tuple[str, int, int]]:
    """Megatron-LM forward_backward_pipelining_without_interleaving's batched calls, loop by loop: warm-up
    ``send_forward`` alone; steady iteration i (forward w + i, backward i) ``send_forward_recv_backward`` and, but
    for the last, ``send_backward_recv_forward`` (forward w + i + 1); cool-down ``send_backward`` alone. The
    first stage sends no gradient, the last no activation (the p2p calls return at once)."""
    w = min(pp - stage - 1, m)  # num_warmup_microbatches
    pairs = set()
    for i in range(m - w):
        if stage < pp - 1:
            pairs.add(("forward", w + i, i))
        if stage > 0 and i < m - w - 1:
            pairs.add(("backward", i, w + i + 1))
    return pairs


@pytest.mark.parametrize("pp", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("m", [1, 2, 3, 5, 6, 9])
def test_batched_exchanges_are_the_ones_trainschedule_and_megatron_issue(pp, m):
    """Round 20 review: every stage at m < pp, m == pp, m > pp and pp 1 (no exchange), the engine's batched
    exchanges equal, send for send, those of DeepSpeed's TrainSchedule (a send and a receive in one step) and of
    Megatron's 1F1B loops (send_forward_recv_backward, send_backward_recv_forward), which agree with each other."""
    for stage in range(pp):
        engine = _engine_pairs(pp, stage, m)
        assert engine == _trainschedule_pairs(pp, stage, m) == _megatron_pairs(pp, stage, m), (stage, engine)
    if pp == 1:
        assert not _engine_pairs(pp, 0, m)


def test_fewer_microbatches_than_stages_finish_collapsed_as_expanded():
    """pp 4, dp 2, one microbatch a replica: one agent per stage and one per GPU agree (no deadlock in either)."""
    spec = scenario(cluster__nodes=8, parallelism__pp=4, parallelism__dp=2, training__global_batch_size=2,
                    parallelism__zero_stage=1)
    assert spec.microbatches == 1
    collapsed = Simulation(spec).run().summary
    expanded = Simulation(spec, expand=True).run().summary
    assert collapsed["step_time_s"] == pytest.approx(expanded["step_time_s"], rel=1e-9)


@pytest.mark.parametrize("global_batch", [1, 3])
def test_interleaving_with_microbatches_not_a_multiple_of_pp_is_refused_in_one_line(global_batch, tmp_path, capsys):
    """Megatron's interleaved schedule refuses a microbatch count that pp does not divide: Megatron-LM 2022
    (megatron/schedules.py get_forward_backward_func, NVIDIA/Megatron-LM 0504208: ``assert get_num_microbatches() %
    args.pipeline_model_parallel_size == 0``); Megatron-Core's forward_backward_pipelining_with_interleaving (2023-24:
    RuntimeError "number of microbatches (m) is not divisible by pipeline-model-parallel-size"; at 00611e6 a ValueError
    when microbatch_group_size_per_vp_stage, pp when unset, exceeds m, and a RuntimeError when 0 < m mod it < pp).
    m < pp (1) and m between multiples (3) at pp 2: one line naming parallelism.virtual_stages, exit 2; m = pp (all
    warm-up) and 2 pp run."""
    import yaml

    from simcluster.cli import main

    interleaved = {"parallelism__pipeline_engine": "megatron", "parallelism__virtual_stages": 2}
    with pytest.raises(ScenarioError) as caught:
        scenario(training__global_batch_size=global_batch, **interleaved)
    assert caught.value.field == "parallelism.virtual_stages" and "\n" not in str(caught.value)
    data = copy.deepcopy(BASE)
    data["training"]["global_batch_size"] = global_batch
    data["parallelism"].update(pipeline_engine="megatron", virtual_stages=2)
    path = tmp_path / "interleaved.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path), "--network", "analytic", "--json", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "parallelism.virtual_stages" in err[0]
    for runs in (2, 4):
        assert Simulation(scenario(training__global_batch_size=runs, **interleaved)).run(1).summary["step_time_s"] > 0
