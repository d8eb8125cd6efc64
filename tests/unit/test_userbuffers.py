"""Transformer Engine's userbuffers overlap (workload.userbuffers): chunk GEMM shapes and counts in closed form from
TE's split_overlap_ag / split_overlap_rs, the waves they share, the SMs per method, and what the plan charges."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from simcluster.core import catalog
from simcluster.engine import overlap
from simcluster.parallel import plan
from simcluster.spec import config, hardware
from simcluster.spec.model import TransformerSpec
from simcluster.workload import interference, kernels, userbuffers
from simcluster.workload.ops import Shard, layer_ops

H100 = hardware.gpu("h100-sxm")
SMS = kernels.sm_count("h100-sxm")  # 132
# Megatron-LM's 177B GPT (models.yaml): hidden 12288, 96 heads, ffn 4h
MODEL = TransformerSpec(name="gpt-177b", layers=96, hidden=12288, heads=96, vocab=131072, max_seq_len=4096)
# TE 1.x's defaults (no GEMM on an SM margin), which the tests of the chunking and of the SMs beside the compute use;
# TE 2.x's margin: tests/unit/test_sm_margin.py
TE1 = userbuffers.config(te_version=1)


def _ops(tp: int, precision: str = "bf16", recompute: str = "none") -> tuple[dict, dict]:
    shard = Shard(seq_len=4096, micro_batch=1, tp=tp, precision=precision, recompute=recompute)
    layer = layer_ops(MODEL, shard)
    return layer, userbuffers.apply(layer, tp, precision, shard.activation_bytes_per_element, SMS, TE1, te_version=1)


def _gemm(ops: dict, phase: str, name: str):
    (op,) = [op for op in ops[phase] if op.name == name and op.kind == "gemm"]
    return op


@pytest.fixture
def packing(monkeypatch):
    """Set data/userbuffers.yaml's ``packing`` of both chunked methods for one test."""

    def set_packing(value: bool):
        monkeypatch.setitem(userbuffers.constants(), "packing", {"ring_exchange": value, "pipeline": value})

    return set_packing


def test_chunk_counts_follow_te_defaults():
    """Ring exchange: tp chunk GEMMs (aggregate off); pipeline: num_splits = 4; bulk: the whole GEMM."""
    assert [userbuffers.chunks("ring_exchange", tp) for tp in (2, 4, 8)] == [2, 4, 8]
    assert [userbuffers.chunks("pipeline", tp) for tp in (2, 4, 8)] == [4, 4, 4]
    assert userbuffers.chunks("bulk", 8) == 1


def test_chunk_shapes_at_tp8_in_closed_form():
    """tp 8, 4096 tokens: ring-exchange chunks of 4096/8 = 512 rows (qkv, fc1 fprop; proj, fc2 dgrad), pipeline chunks
    of 12288/4 = 3072 output columns (proj, fc2 fprop), bulk GEMMs whole (qkv, fc1 dgrad and wgrad)."""
    layer, ub = _ops(8)
    shapes = {(phase, name): (op.m, op.n, op.k)
              for phase in ("forward", "backward_input", "backward_weight") for op in ub[phase] if op.kind == "gemm"
              for name in [op.name] if name in userbuffers.LAYERS}
    assert shapes[("forward", "qkv")] == (512, 3 * 12288 // 8, 12288)
    assert shapes[("forward", "mlp_up")] == (512, 4 * 12288 // 8, 12288)
    assert shapes[("forward", "attn_out")] == (4096, 3072, 12288 // 8)
    assert shapes[("forward", "mlp_down")] == (4096, 3072, 4 * 12288 // 8)
    assert shapes[("backward_input", "attn_out")] == (512, 12288 // 8, 12288)
    assert shapes[("backward_input", "mlp_down")] == (512, 4 * 12288 // 8, 12288)
    for phase, name in (("backward_input", "qkv"), ("backward_input", "mlp_up"), ("backward_weight", "qkv"),
                        ("backward_weight", "mlp_up"), ("backward_weight", "attn_out")):
        assert _gemm(ub, phase, name) == _gemm(layer, phase, name)
    # FLOP are conserved phase by phase; a ring chunk re-reads the weight, a pipeline chunk the activation
    for phase in layer:
        assert sum(op.flop for op in ub[phase]) == pytest.approx(sum(op.flop for op in layer[phase]), rel=1e-12)
    qkv = _gemm(ub, "forward", "qkv")
    assert qkv.hbm_bytes == 2 * (4096 * 12288 + 8 * 12288 * 4608 + 4096 * 4608)
    proj = _gemm(ub, "forward", "attn_out")
    assert proj.hbm_bytes == 2 * (4 * 4096 * 1536 + 1536 * 12288 + 4096 * 12288)


def test_dy_is_copied_into_the_userbuffer_in_16_bit_only():
    """TE grad_output_preprocess: bf16 copies dY's shard (tokens/tp x h) before each ring-exchange dgrad (proj,
    fc2): two copies a layer, each reading and writing 512 x 12288 bf16 elements; fp8 casts into the buffer."""
    _, ub = _ops(8)
    copies = [op for op in ub["backward_input"] if op.name == "ub_copy"]
    assert [op.hbm_bytes for op in copies] == [2 * 2 * 512 * 12288] * 2
    _, ub8 = _ops(8, "fp8")
    assert not [op for op in ub8["backward_input"] if op.name == "ub_copy"]


def _copies(ub: dict) -> dict[str, list[float]]:
    return {phase: [op.hbm_bytes for op in ops if op.name == "ub_copy"] for phase, ops in ub.items()}


@pytest.mark.parametrize("precision", ["bf16", "fp8"])
def test_te2_copies_every_gathered_shard_into_the_buffer_and_the_bulk_reduce_scatter_out(precision):
    """TE 2.x (NVIDIA/TransformerEngine#1711): fill_userbuffers_buffer_for_all_gather copies the norm output's shard
    into the buffer before qkv's and fc1's forward ring exchanges (again in a full recompute) and dY's before proj's
    and fc2's dgrad ring exchanges, in the fp8 bytes the all-gather moves (1 an element in fp8, 2 in bf16); the bulk
    wgrad's reduce-scattered dgrad output is cloned out of its 16-bit buffer after qkv's and fc1's wgrad. Each copy
    reads and writes tokens/tp x h: 4096/8 x 12288 here. TE 1.x: the bf16 dY copies only, none in fp8."""
    shard_elements, e = 4096 // 8 * 12288, {"bf16": 2, "fp8": 1}[precision]
    shard = Shard(seq_len=4096, micro_batch=1, tp=8, precision=precision, recompute="full")
    layer = layer_ops(MODEL, shard)
    te2 = userbuffers.apply(layer, 8, precision, shard.activation_bytes_per_element, SMS, TE1, te_version=2)
    gathered, cloned = 2 * shard_elements * e, 2 * shard_elements * 2
    assert _copies(te2) == {"forward": [gathered] * 2, "recompute": [gathered] * 2,
                            "backward_input": [gathered] * 2, "backward_weight": [cloned] * 2}
    # before the ring exchange it fills, after the bulk wgrad it empties
    for phase, before in (("forward", "qkv"), ("backward_input", "attn_out")):
        names = [op.name for op in te2[phase]]
        assert names[names.index(before) - 1] == "ub_copy"
    names = [op.name for op in te2["backward_weight"]]
    assert names[names.index("qkv") + 1] == "ub_copy"
    te1 = userbuffers.apply(layer, 8, precision, shard.activation_bytes_per_element, SMS, TE1, te_version=1)
    assert _copies(te1) == {"forward": [], "recompute": [],
                            "backward_input": [2 * shard_elements * 2] * 2 if precision == "bf16" else [],
                            "backward_weight": []}


def test_te2_copies_once_per_gemm_when_the_projections_are_split():
    """One TE LayerNormLinear fills the buffer once, however many GEMMs the model writes for its projections."""
    split = Shard(seq_len=4096, micro_batch=1, tp=8, precision="bf16", recompute="none", projections="separate")
    layer = layer_ops(MODEL, split)
    assert len([op for op in layer["forward"] if op.name == "qkv"]) == 3
    ub = userbuffers.apply(layer, 8, "bf16", 2, SMS, TE1, te_version=2)
    assert len(_copies(ub)["forward"]) == 2 and len(_copies(ub)["backward_weight"]) == 2


def test_the_plan_charges_the_copies_by_the_scenarios_te_release(small_scenario):
    """The plan passes parallelism.te_version: at TE 2.x a bf16 tp 8 layer runs 4 more copies than at TE 1.x (qkv
    and fc1 forward, qkv and fc1 wgrad outputs), each one kernel on the compute stream."""
    kernels_by_version = {}
    for te_version in (1, 2):
        data = copy.deepcopy(small_scenario)
        data["parallelism"].update(tp=8, pp=1, dp=2, sequence_parallel=True, tp_comm_overlap=True,
                                   te_version=te_version)
        data["cluster"]["nodes"] = 2
        data["training"].update(precision="bf16", activation_recompute="none")
        chunk = plan.plan(config.from_dict(data), lambda op, group, size: 0.0).chunks[0]
        kernels_by_version[te_version] = (chunk.forward_stream.kernels, chunk.backward_stream.kernels, chunk.layers)
    (fwd1, bwd1, layers), (fwd2, bwd2, _) = kernels_by_version[1], kernels_by_version[2]
    assert (fwd2 - fwd1, bwd2 - bwd1) == (2 * layers, 2 * layers)


def test_chunks_share_waves_when_the_streams_in_flight_hold_a_wave():
    """Largest model tile 256x128: a 512 x 4608 chunk has 2*36 = 72 tiles, three streams 216 >= 132 SMs: all 8
    chunks pack; a 512 x 1536 chunk has 24, three streams 72 < 132: the three in flight; packing off: alone."""
    assert userbuffers.sharing(512, 4608, 8, SMS) == 8
    assert userbuffers.sharing(512, 1536, 8, SMS) == 3
    assert userbuffers.sharing(512, 1536, 2, SMS) == 2


def test_pipeline_chunks_run_one_after_another_ring_exchange_chunks_share_waves():
    """TE split_overlap_rs (pipeline_rs_overlap_first_gemm False, its default) makes the communication stream wait
    for chunk GEMM i before chunk GEMM i+1 is issued: with one hardware queue (CUDA_DEVICE_MAX_CONNECTIONS=1) GEMM
    i+1 starts after GEMM i, each chunk quantised alone (FLUX, arXiv 2406.06858, section 2.3: TE's split GEMMs "in
    AllGather might run concurrently [...], but ReduceScatter cannot"). Ring-exchange chunks still pack."""
    assert userbuffers.sharing(4096, 3072, 4, SMS, "pipeline") == 1
    assert userbuffers.sharing(512, 4608, 8, SMS, "ring_exchange") == 8
    # 177B at tp 4 with 2048 tokens: a pipeline chunk of 2048 x 3072 is 16 x 12 = 192 tiles of 128x256, 1.45 waves of
    # 132 SMs: alone (data) it runs two waves, 8% longer than the whole GEMM (768 tiles, 5.8 waves); packed, the same
    shard = Shard(seq_len=2048, micro_batch=1, tp=4, precision="bf16", recompute="none")
    layer = layer_ops(MODEL, shard)
    ub = userbuffers.apply(layer, 4, "bf16", shard.activation_bytes_per_element, SMS, TE1)
    whole, chunked = _gemm(layer, "forward", "attn_out"), _gemm(ub, "forward", "attn_out")
    assert (chunked.m, chunked.n, chunked.batch) == (2048, 3072, 1)
    whole_s = kernels.roofline_s(whole, H100, "bf16")[0]
    assert kernels.roofline_s(chunked, H100, "bf16")[0] > 1.05 * whole_s
    packed = dataclasses.replace(chunked, batch=4)
    assert kernels.roofline_s(packed, H100, "bf16")[0] == pytest.approx(whole_s, rel=0.01)


def test_packed_chunks_of_whole_tiles_run_as_the_whole_gemm(packing):
    """Packed into shared waves, chunks of whole tiles give the GEMM model the tiles of the whole GEMM: same time."""
    packing(True)
    layer, ub = _ops(8)
    before, after = _gemm(layer, "forward", "qkv"), _gemm(ub, "forward", "qkv")
    assert after.batch == 8
    assert (kernels.roofline_s(after, H100, "bf16")[0]
            == pytest.approx(kernels.roofline_s(before, H100, "bf16")[0], rel=1e-12))


def test_chunks_in_flight_follow_how_te_issues_them():
    """One hardware queue: a pipeline that waits for chunk GEMM i before issuing GEMM i+1 has one chunk in flight; one
    that issues GEMM i+1 first (TE 1.x fp8_gemm's gemm_overlap, split_overlap_rs_p2p's ring reduce-scatter) two; a
    ring all-gather's GEMMs wait only for their ring step's receive: its three compute streams."""
    assert userbuffers.in_flight("pipeline") == 1
    assert userbuffers.in_flight("pipeline", first_gemm=True) == 2
    assert userbuffers.in_flight("ring_exchange") == 3
    assert userbuffers.in_flight("ring_exchange", reduce_scatter=True) == 2
    # a 512 x 3072 chunk is 2 x 24 = 48 tiles of 256x128: three in flight hold 144 >= 132 SMs (all 8 chunks share
    # waves), two hold 96 < 132 (the two in flight share)
    assert userbuffers.sharing(512, 3072, 8, SMS) == 8
    assert userbuffers.sharing(512, 3072, 8, SMS, reduce_scatter=True) == 2


@pytest.mark.parametrize(("precision", "te_version", "packed"),
                         [("fp8", 1, True), ("bf16", 1, False), ("fp8", 2, False), ("bf16", 2, False)])
def test_pipeline_chunks_share_waves_only_where_te_issues_the_next_gemm_first(precision, te_version, packed):
    """TE 1.x's fp8_gemm calls split_overlap_rs with gemm_overlap true (GEMM i+1 issued before the communication
    stream's wait for GEMM i), its 16-bit gemm with false; TE 2.x takes that branch only with
    pipeline_rs_overlap_first_gemm (default False). Where it does, the four column chunks (2048 x 3072 at tp 4: 192
    tiles of 256x128 each, two in flight hold a wave of 132 SMs) run in the time of the whole GEMM on the same SMs
    (768 tiles, 6 waves); elsewhere each chunk is quantised alone (2 waves each, 8 in all)."""
    shard = Shard(seq_len=2048, micro_batch=1, tp=4, precision=precision, recompute="none")
    layer = layer_ops(MODEL, shard)
    settings = userbuffers.config(te_version=1)   # no SM margin: the chunks and the whole GEMM on all SMs
    ub = userbuffers.apply(layer, 4, precision, shard.activation_bytes_per_element, SMS, settings, te_version)
    whole, chunked = _gemm(layer, "forward", "attn_out"), _gemm(ub, "forward", "attn_out")
    assert (chunked.m, chunked.n, chunked.batch) == (2048, 3072, 4 if packed else 1)
    assert userbuffers.pipeline_overlaps_first_gemm(te_version, precision) is packed
    whole_s = kernels.roofline_s(whole, H100, precision)[0]
    chunked_s = kernels.roofline_s(chunked, H100, precision)[0]
    if packed:
        assert chunked_s == pytest.approx(whole_s, rel=0.01)
    else:
        assert chunked_s > 1.05 * whole_s


def test_ring_reduce_scatter_runs_tp_chunks_whether_or_not_aggregate():
    """TE's split_overlap_rs_p2p (TE 1.x UbufP2PCommOverlap, TE 2.x CommOverlapP2PBase) loops over tp_size chunk GEMMs
    of tokens/tp rows and never reads aggregate, which only split_overlap_ag does (tp/2 GEMMs of 2 tokens/tp rows):
    a reduce-scatter stated with aggregate still runs tp chunks of 4096/4 = 1024 rows, an all-gather 2 of 2048."""
    layer, _ = _ops(4)
    op = _gemm(layer, "forward", "attn_out")
    scatter = userbuffers.chunked(op, "ring_exchange", 4, "bf16", SMS, aggregate=True, reduce_scatter=True)
    gather = userbuffers.chunked(op, "ring_exchange", 4, "bf16", SMS, aggregate=True)
    assert (scatter.m, gather.m) == (1024, 2048)
    assert userbuffers.ring_reduce(op, 4, 2).hbm_bytes == (4 + 1) * scatter.m * op.n * 2  # its tp received chunks


def test_te_version_moves_an_fp8_pipeline_on_hopper():
    """On H100 the SM margin changes nothing (persistent grids: both versions charged on SMs - num_sm), but the chunk
    concurrency does: the NeMo 24.07 Llama 2 70B fp8 row's pipelined proj/fc2 forwards (4 column chunks, 4096 tokens
    at tp 4; the launcher file of its shape, though the row itself runs without TP overlap since round 37) share waves
    in TE 1.x (fp8_gemm's gemm_overlap) and not in TE 2.x, so the same GEMMs take longer."""
    scenario = config.load("nemo2407-llama2-70b-64-h100-fp8")
    p, t = scenario.parallelism, scenario.training
    shard = plan.shard_for(scenario)
    settings = userbuffers.scenario_charged(scenario)
    assert {settings[name].method for name in ("proj_fprop", "fc2_fprop")} == {"pipeline"}
    times = {}
    for te_version in (1, 2):
        ub = userbuffers.apply(layer_ops(scenario.model, shard), p.tp, t.precision,
                               shard.activation_bytes_per_element, SMS, settings, te_version)
        ops = [_gemm(ub, "forward", name) for name in userbuffers.REDUCE_SCATTER_OPS]
        assert [op.batch for op in ops] == ([4, 4] if te_version == 1 else [1, 1])
        times[te_version] = sum(kernels.op_time_s(op, H100, t.precision) for op in ops)
    assert times[2] > 1.05 * times[1]


def test_chunking_slows_tp8_more_than_tp2(packing):
    """Each chunk quantised alone (packing off), the GEMM shape model charges tp 8's 512-row chunks more than tp 2's
    2048-row chunks of the same model: the forward GEMMs' device time grows more at tp 8."""
    packing(False)

    def growth(tp: int) -> float:
        layer, ub = _ops(tp)
        gemms = [name for name in userbuffers.LAYERS]
        time = {key: sum(kernels.roofline_s(_gemm(ops, "forward", name), H100, "bf16")[0] for name in gemms)
                for key, ops in (("whole", layer), ("chunked", ub))}
        return time["chunked"] / time["whole"]

    assert growth(8) > growth(2) >= 1.0
    assert growth(8) > 1.05  # 512-row qkv chunks: 72 tiles, one wave of 132 SMs at 55% occupancy


def test_full_recompute_reruns_the_chunked_forward():
    """A full recompute re-runs the forward's overlaps: its GEMMs are chunked and its two pipeline reduce-scatters
    leave their last chunks exposed, as the forward's do."""
    _, ub = _ops(8, recompute="full")
    assert _gemm(ub, "recompute", "qkv").m == 512
    assert userbuffers.exposed_reduce_scatters(ub) == {"forward": 2, "recompute": 2, "backward_input": 0,
                                                       "backward_weight": 0}


def test_ring_exchange_holds_one_sm_pipeline_num_sm_but_not_its_last_chunk():
    """TE: UbufP2PCommOverlap sms = 1 (copy engines move the data); pipeline and bulk hold num_sm = 16; the
    pipeline's last reduce-scatter chunk runs after the compute (None: no kernel beside it). TE 1.x: no margin."""
    num_sm = catalog.load("interference")["ctas"]["userbuffers"]
    assert userbuffers.collective_sms("forward", "all_gather", TE1) == [(1.0, 1)]
    assert userbuffers.collective_sms("forward", "reduce_scatter", TE1) == [(0.75, num_sm), (0.25, None)]
    assert userbuffers.collective_sms("backward", "reduce_scatter", TE1) == [(1.0, num_sm)]
    assert userbuffers.collective_sms("backward", "all_gather", TE1) == [(1.0, 1)]


def test_phase_factor_is_the_harmonic_mix_of_its_kernels(small_scenario, rebalancing_grids):
    """Compute-bound (memory share 0), bf16, equal all-gather and reduce-scatter bytes: forward 1/f = 1/2 * 131/132
    (ring) + 1/2 * (3/4 * 116/132 + 1/4) (pipeline); backward 1/f = 1/2 * 131/132 + 1/2 * 116/132 (bulk). TE 1.x:
    no GEMM on a margin."""
    data = copy.deepcopy(small_scenario)
    data["parallelism"].update(tp=8, pp=1, dp=2, sequence_parallel=True, tp_comm_overlap=True, te_version=1)
    data["training"]["precision"] = "bf16"
    scenario = config.from_dict(data)
    wire = 300e9
    forward = overlap._userbuffers_slowdown(scenario, "forward", wire, 0.0)
    backward = overlap._userbuffers_slowdown(scenario, "backward", wire, 0.0)
    assert 1 / forward == pytest.approx(0.5 * 131 / 132 + 0.5 * (0.75 * 116 / 132 + 0.25))
    assert 1 / backward == pytest.approx(0.5 * 131 / 132 + 0.5 * 116 / 132)
    # all 16 SMs throughout, as before the round: a larger factor
    all_sms = interference.comm_kernel("userbuffers", wire, H100)
    assert interference.slowdown(H100, all_sms, 0.0) > max(forward, backward)


def test_plan_charges_chunks_one_gap_each_and_the_exposed_reduce_scatter_chunks(small_scenario):
    """With tp_comm_overlap the forward keeps its kernel count (the chunks of one GEMM share one gap) and gains the
    exposed last reduce-scatter chunk of its two pipeline overlaps per layer, timed alone at 1/4 of the bytes."""
    def chunk(overlap_on: bool) -> plan.ChunkCost:
        data = copy.deepcopy(small_scenario)
        data["parallelism"].update(tp=8, pp=1, dp=2, sequence_parallel=True, tp_comm_overlap=overlap_on)
        data["cluster"]["nodes"] = 2
        data["training"].update(precision="bf16", activation_recompute="none")
        scenario = config.from_dict(data)
        sizes.clear()

        def timed(op, group, size):
            sizes.append((op, size))
            return 1e-3 if op == "reduce_scatter" else 0.0

        return plan.plan(scenario, timed).chunks[0]

    sizes: list[tuple[str, float]] = []
    off, on = chunk(False), chunk(True)
    assert sizes[-1] == ("reduce_scatter", 2048 * 2048 * 2 / 4)  # gpt3-1.3b: 2048 tokens x 2048 hidden, bf16, / 4
    layers = off.layers
    assert on.forward_stream.kernels == off.forward_stream.kernels
    assert on.backward_stream.kernels == off.backward_stream.kernels + 2 * layers  # the two dY copies
    # the small model's GEMMs are whole tiles at tp 8, packed: the device time grows by the exposed chunks (1 ms
    # each here) plus the weight re-reads of the chunks (memory-bound only if small): at least 2 ms per layer
    assert on.forward_stream.device_s - off.forward_stream.device_s >= 2 * layers * 1e-3


def test_the_overlap_needs_sequence_parallelism_as_megatron_asserts():
    from simcluster.spec import config
    from simcluster.spec.config import ScenarioError

    data = config.load("megatron-177b-h100").model_dump(mode="json")
    data["parallelism"]["sequence_parallel"] = False
    with pytest.raises((ScenarioError, ValueError), match="tp_comm_overlap"):
        config.Scenario.model_validate(data)


def test_nemo_configuration_of_gpt3_175b_at_tp4_and_te_defaults_elsewhere():
    """NeMo's userbuffers_bf16_h100_h12288_tp4_mbs1_seqlen2048 (tp_overlap_configs/userbuffers.py): bulk num_sm
    4/4/2/4, proj_fprop a pipeline on 24 SMs with set_sm_margin, fc2_fprop a ring-exchange reduce-scatter on one SM;
    the ring-exchange all-gathers keep TE's defaults. Another shape (8192 tokens; 4096 is the NeMo 1.x launcher's
    micro batch 2 file, test_nemo1_userbuffers) takes TE's defaults."""
    gpt3 = userbuffers.config(12288, 4, 2048, SMS)
    assert [gpt3[name].num_sm for name in ("qkv_dgrad", "qkv_wgrad", "fc1_dgrad", "fc1_wgrad")] == [4, 4, 2, 4]
    assert gpt3["proj_fprop"] == userbuffers.Gemm("pipeline", 24, set_sm_margin=True)
    assert gpt3["fc2_fprop"] == userbuffers.Gemm("ring_exchange", 1, set_sm_margin=True)
    assert gpt3["qkv_fprop"] == userbuffers.Gemm("ring_exchange", 1)
    defaults = TE1
    assert userbuffers.config(12288, 4, 8192, SMS, te_version=1) == defaults
    assert defaults["fc2_fprop"] == userbuffers.Gemm("pipeline", 16) and defaults["qkv_wgrad"].num_sm == 16
    # Llama 3.1 405B at tp 8 (cp 2, 4096 tokens per rank) aggregates the ring-exchange chunks in pairs: 4 of 1024
    assert userbuffers.config(16384, 8, 4096, SMS)["qkv_fprop"].aggregate
    assert userbuffers.chunks("ring_exchange", 8, aggregate=True) == 4


def test_ring_exchange_reduce_scatter_chunks_tokens_and_reduces_the_received_chunks():
    """TE split_overlap_rs_p2p at tp 4, 2048 tokens: fc2's GEMM runs as 4 chunks of 512 rows (each the output rows one
    rank owns), then reduce_bf16 reads the 4 received 512 x 12288 chunks and writes one; proj stays a pipeline, so
    the forward leaves one reduce-scatter chunk exposed, not two."""
    shard = Shard(seq_len=2048, micro_batch=1, tp=4, precision="bf16", recompute="none")
    layer = layer_ops(MODEL, shard)
    gpt3 = userbuffers.config(12288, 4, 2048, SMS)
    ub = userbuffers.apply(layer, 4, "bf16", shard.activation_bytes_per_element, SMS, gpt3)
    fc2 = _gemm(ub, "forward", "mlp_down")
    assert (fc2.m, fc2.n, fc2.k) == (512, 12288, 4 * 12288 // 4)
    (reduce,) = [op for op in ub["forward"] if op.name == "ub_reduce"]
    assert reduce.hbm_bytes == (4 + 1) * 512 * 12288 * 2
    assert userbuffers.exposed_reduce_scatters(ub, gpt3)["forward"] == 1
    assert userbuffers.exposed_reduce_scatters(userbuffers.apply(layer, 4, "bf16", 2, SMS, TE1))["forward"] == 2


def test_collective_sms_follow_each_gemms_num_sm():
    """GPT-3 175B's NeMo configuration: the forward reduce-scatters are half proj's pipeline (3 of its 4 chunks
    beside the GEMM, the exposed last after it: None) and half fc2's ring exchange, both with set_sm_margin: their
    GEMMs run on SMs - num_sm, so their kernels take no SM from them (0); backward, the bulk reduce-scatters beside
    qkv and fc1 wgrad (no margin) hold 4 SMs each. The same in TE 1.x and 2.x (the configuration states them)."""
    for te_version in (1, 2):
        gpt3 = userbuffers.config(12288, 4, 2048, SMS, te_version=te_version)
        assert userbuffers.collective_sms("forward", "reduce_scatter", gpt3) == [(0.875, 0), (0.125, None)]
        assert userbuffers.collective_sms("backward", "reduce_scatter", gpt3) == [(1.0, 4)]


@pytest.mark.parametrize(("name", "nemo"), [("nemo2409-gpt3-175b-128-h100-bf16", True),
                                            ("moezoo-mixtral-8x22b-128-h100", False),
                                            ("megatron-177b-h100", False), ("nemotron4-15b-768-h100", False)])
def test_only_the_recipes_nemo_tuned_get_its_configuration(name, nemo):
    """NeMo passes its tuned configuration to the recipes it was written for; a Megatron-LM run, or another model
    of the same hidden size, tp and tokens (Mixtral 8x22B at tp 2 matches GPT-3 20B's shape), gets TE's defaults."""
    scenario = config.load(name)
    settings = userbuffers.scenario_config(scenario)
    assert (settings != userbuffers.config(te_version=scenario.parallelism.te_version)) is nemo


def test_a_recipe_shape_off_megatron_core_gets_tes_defaults():
    """NeMo's GPT-3 175B shape and preset, but not run on Megatron-Core (its loss memory torch's fp32): TE's
    defaults, not NeMo's configuration."""
    nemo = config.load("nemo2409-gpt3-175b-128-h100-bf16")
    other = nemo.model_copy(update={"training": nemo.training.model_copy(update={"logits_memory": "torch_fp32"})})
    assert nemo.megatron_core and not other.megatron_core
    assert userbuffers.scenario_config(nemo) != TE1 and nemo.parallelism.te_version == 1
    assert userbuffers.scenario_config(other) == TE1


@pytest.mark.parametrize(("gpu", "precision", "fc2"), [("b200", "bf16", userbuffers.Gemm("pipeline", 24, True)),
                                                        ("b200", "fp8", userbuffers.Gemm("ring_exchange", 1, True)),
                                                        ("h100-sxm", "bf16", None)])
def test_nemotron4_340b_takes_nemos_b200_configuration_and_tes_defaults_on_h100(gpu, precision, fc2):
    """NeMo 2.x tunes Nemotron-4 340B's userbuffers for B200 only (userbuffers_bf16/fp8_b200_h18432_tp8_mbs1_
    seqlen4096: fc2_fprop a pipeline on 24 SMs in bf16, a ring-exchange reduce-scatter in fp8; qkv_wgrad bulk on 32);
    on H100 its performance scripts pass none, so TE's defaults of the run's TE run (data/userbuffers.yaml)."""
    data = catalog.load("scenarios/nemotron4-340b-1536-h100")
    data["cluster"]["gpu"] = gpu
    data["training"]["precision"] = precision
    data["parallelism"].update(tp_comm_overlap=True, te_version=2)
    settings = userbuffers.scenario_config(config.from_dict(data, source="test"))
    if fc2 is None:
        assert settings == userbuffers.config(te_version=2)
        return
    assert settings["fc2_fprop"] == fc2 and settings["qkv_wgrad"] == userbuffers.Gemm("bulk", 32)
    assert settings["proj_fprop"] == userbuffers.Gemm("ring_exchange", 1, True)


@pytest.mark.parametrize("recompute", ["none", "full"])
def test_mxfp8_gathers_each_userbuffers_all_gathers_scales_blocking(small_scenario, recompute):
    """TE 2.x fill_userbuffers_buffer_for_all_gather with an MXFP8 quantizer all-gathers the shard's E8M0
    scale-inverses with a blocking torch.distributed.all_gather_into_tensor on the compute stream: qkv's and fc1's
    forward ring exchanges, proj's and fc2's dY ring exchanges and qkv's and fc1's bulk re-gather of the norm output
    (6 a layer-microbatch; a full recompute's grad-free first forward gathers over NCCL instead, its recompute
    gathers through userbuffers again). Each moves one byte per 32 elements of the
    microbatch's tokens x hidden (2048 x 2048 / 32 here); the compute stream waits for each. Current scaling gathers
    no scales (its amax all-reduces are timed as all-reduces)."""
    scale_bytes = 2048 * 2048 / 32

    def timed(op, group, size):   # only the scale gathers take time: 1 s each
        return 1.0 if op == "all_gather" and size == scale_bytes else 0.0

    streams = {}
    for recipe in ("current", "mxfp8"):
        data = copy.deepcopy(small_scenario)
        data["cluster"].update(gpu="b200")
        data["parallelism"].update(tp=8, pp=1, dp=2, sequence_parallel=True, tp_comm_overlap=True, te_version=2)
        data["training"].update(precision="fp8", fp8_recipe=recipe, activation_recompute=recompute)
        chunk = plan.plan(config.from_dict(data), timed).chunks[0]
        streams[recipe] = (chunk.forward_stream.device_s, chunk.backward_stream.device_s, chunk.layers)
    (fwd_c, bwd_c, layers), (fwd_mx, bwd_mx, _) = streams["current"], streams["mxfp8"]
    forward_gathers, backward_gathers = (0, 6) if recompute == "full" else (2, 4)
    assert fwd_mx - fwd_c == pytest.approx(forward_gathers * layers, abs=0.01)
    assert bwd_mx - bwd_c == pytest.approx(backward_gathers * layers, abs=0.01)


def test_full_recompute_first_forward_gathers_over_nccl(small_scenario):
    """Full recompute runs the first forward without autograd; TE (1.x and 2.x) then turns qkv's and fc1's userbuffers
    all-gather off (ub_overlap_ag_fprop requires is_grad_enabled) and gathers over NCCL before the GEMM: the forward
    keeps whole GEMMs and no buffer copy there, its 2 all-gathers a layer blocking; the recompute's forward, run with
    autograd on, keeps the ring exchanges and their copies; the reduce-scatters keep userbuffers."""
    shard = Shard(seq_len=4096, micro_batch=1, tp=8, precision="bf16", recompute="full")
    layer = layer_ops(MODEL, shard)
    ub = userbuffers.apply(layer, 8, "bf16", 2, SMS, TE1, te_version=2, grad_free_forward=True)
    assert _gemm(ub, "forward", "qkv") == _gemm(layer, "forward", "qkv")
    assert _gemm(ub, "recompute", "qkv") != _gemm(layer, "recompute", "qkv")
    assert _gemm(ub, "forward", "attn_out") != _gemm(layer, "forward", "attn_out")   # the pipeline reduce-scatter
    assert len(_copies(ub)["forward"]) == 0 and len(_copies(ub)["recompute"]) == 2
    blocking = {}
    for recompute in ("none", "full"):
        data = copy.deepcopy(small_scenario)
        data["parallelism"].update(tp=8, pp=1, dp=2, sequence_parallel=True, tp_comm_overlap=True, te_version=2)
        data["cluster"]["nodes"] = 2
        data["training"].update(precision="bf16", activation_recompute=recompute)
        chunk = plan.plan(config.from_dict(data), lambda op, group, size: 0.0).chunks[0]
        blocking[recompute] = (chunk.tp_blocking, dict(chunk.tp_collectives["forward"]), chunk.layers)
    (none_blocking, _, _), (full_blocking, full_forward, layers) = blocking["none"], blocking["full"]
    assert none_blocking == {}
    assert full_blocking == {"forward": (("all_gather", 2 * layers),)}
    assert full_forward == {"reduce_scatter": 2 * layers, "all_gather": 0}
