"""Transformer Engine's set_sm_margin (workload.userbuffers.math_sms, kernels' SM count per GEMM) and the TE major
version that decides its default (parallelism.te_version): a GEMM on SMs - num_sm in closed form, TE's
get_default_config per version, NeMo's per-GEMM flags, and the communication kernels not charged twice."""

from __future__ import annotations

import copy
import math

import pytest

from simcluster.engine import overlap, simulate
from simcluster.spec import config, hardware
from simcluster.workload import interference, kernels, userbuffers
from simcluster.workload.ops import Op, Shard, layer_ops, shard_for

H100 = hardware.gpu("h100-sxm")
SMS = kernels.sm_count("h100-sxm")  # 132
TILE_M, TILE_N = 128, 256


@pytest.fixture
def one_tile(monkeypatch):
    """The GEMM model with one tile shape (128 x 256, relative throughput 1), so that its time is closed form."""
    monkeypatch.setitem(kernels._table()["gemm"], "tiles", [[TILE_M, TILE_N, 1.0]])


def _gemm(tiles_m: int, tiles_n: int, k: int, sms: int = 0) -> Op:
    m, n = tiles_m * TILE_M, tiles_n * TILE_N
    return Op("gemm", "gemm", 2.0 * m * n * k, 0.0, m=m, n=n, k=k, sms=sms)


def _tile_s(k: int) -> float:
    """One 128 x 256 output tile of depth k on one SM: its MACs over the GPU's sustained bf16 rate per SM (peak x
    large-GEMM ceiling x the per-tile prologue's k / (k + k0) x the training clock, over all its SMs)."""
    rate = (H100.peak_flop_per_s("bf16") * kernels.gemm_ceiling("bf16") * k / (k + kernels.k_overhead("bf16", H100))
            * kernels.clock_ratio(H100.name) * kernels.ceiling_ratio(H100.name))
    return 2.0 * TILE_M * TILE_N * k / (rate / SMS)


@pytest.mark.parametrize("tiles", [(4, 29), (11, 12), (33, 40)])  # 116, 132 and 1320 tiles
def test_a_gemm_on_a_margin_runs_whole_waves_of_the_sms_it_keeps(one_tile, tiles):
    """TE launches the GEMM with _math_sms = 132 - 16 = 116 (cuBLASLt's SM-count target): its tiles run in
    ceil(tiles / 116) waves, each a tile's time on one SM, the GPU's other 16 SMs idle for it. 116 tiles: one wave
    on either; 132: one wave on all SMs, two on 116; 1320: 10 waves against 12."""
    k = 12288
    count = tiles[0] * tiles[1]
    for sms in (0, SMS - 16):
        compute_s, _ = kernels.roofline_s(_gemm(*tiles, k, sms), H100, "bf16")
        assert compute_s == pytest.approx(math.ceil(count / (sms or SMS)) * _tile_s(k), rel=1e-12)
    assert kernels.gemm_waves(_gemm(*tiles, k, SMS - 16), H100.name) == math.ceil(count / 116)


def test_the_gpus_own_sm_count_is_no_margin():
    """sms = the GPU's SMs (or more) is the full GPU, as sms = 0."""
    op = _gemm(11, 12, 4096)
    full = kernels.roofline_s(op, H100, "bf16")[0]
    for sms in (SMS, 2 * SMS):
        assert kernels.roofline_s(_gemm(11, 12, 4096, sms), H100, "bf16")[0] == full


@pytest.mark.parametrize("te_version", [1, 2])
def test_margin_defaults_follow_tes_get_default_config(te_version):
    """TE 1.x initialize_ub: set_sm_margin = ub_cfg.get("set_sm_margin", 0), add_ub(set_sm_margin=0): none. TE 2.x
    get_default_config: "set_sm_margin": not method == "ring_exchange", "num_sm": 1 if ring_exchange else 16."""
    defaults = userbuffers.config(te_version=te_version)
    assert set(defaults) == {f"{layer}_{phase}" for layer in ("qkv", "proj", "fc1", "fc2")
                             for phase in ("fprop", "dgrad", "wgrad")} - {"proj_wgrad", "fc2_wgrad"}
    for name, gemm in defaults.items():
        assert gemm.num_sm == (1 if gemm.method == "ring_exchange" else 16), name
        assert gemm.set_sm_margin == (te_version == 2 and gemm.method != "ring_exchange"), name
        assert userbuffers.math_sms(gemm, SMS) == (116 if gemm.set_sm_margin else SMS)


@pytest.mark.parametrize("te_version", [1, 2])
def test_nemo_configuration_states_its_margins_in_either_te(te_version):
    """NeMo's userbuffers_bf16_h100_h12288_tp4_mbs1_seqlen2048: proj_fprop PipelineOverlapCfg(num_sm=24,
    set_sm_margin=True), fc2_fprop RingExchangeOverlapCfg(num_sm=1, set_sm_margin=True), the bulk overlaps
    BulkOverlapCfg(set_sm_margin=False): initialize_ub takes them over its defaults in TE 1.x and 2.x alike. Applied
    to GPT-3 175B at tp 4 and 2048 tokens: proj's chunk GEMMs on 132 - 24 = 108 SMs, fc2's on 131, the bulk dgrad
    and wgrad GEMMs and the ring-exchange all-gathers on all 132."""
    gpt3 = userbuffers.config(12288, 4, 2048, SMS, te_version=te_version)
    assert [gpt3[name].set_sm_margin for name in ("proj_fprop", "fc2_fprop", "qkv_dgrad", "qkv_wgrad", "fc1_dgrad",
                                                  "fc1_wgrad", "qkv_fprop", "proj_dgrad")] == [True, True] + [False] * 6
    model = config.load("nemo2409-gpt3-175b-128-h100-bf16").model
    shard = Shard(seq_len=2048, micro_batch=1, tp=4, precision="bf16", recompute="none")
    ub = userbuffers.apply(layer_ops(model, shard), 4, "bf16", 2, SMS, gpt3, te_version)
    launched = {(phase, op.name): op.sms for phase, ops in ub.items() for op in ops
                if op.kind == "gemm" and op.name in userbuffers.LAYERS}
    assert launched[("forward", "attn_out")] == 108
    assert launched[("forward", "mlp_down")] == 131
    assert {launched[key] for key in [("forward", "qkv"), ("forward", "mlp_up"), ("backward_input", "qkv"),
                                      ("backward_weight", "qkv"), ("backward_input", "mlp_down")]} == {0}


def test_te2_defaults_put_the_pipeline_and_bulk_gemms_on_116_sms():
    """TE 2.x's defaults on a tp 8 layer: the pipeline GEMMs (proj, fc2 fprop) and the bulk ones (qkv, fc1 dgrad and
    wgrad) on 116 SMs; the ring exchanges on all. TE 1.x: every GEMM on all SMs."""
    model = config.load("megatron-177b-h100").model
    shard = Shard(seq_len=4096, micro_batch=1, tp=8, precision="bf16", recompute="none")
    layer = layer_ops(model, shard)
    on_margin = {("forward", "attn_out"), ("forward", "mlp_down"), ("backward_input", "qkv"),
                 ("backward_input", "mlp_up"), ("backward_weight", "qkv"), ("backward_weight", "mlp_up")}
    for te_version in (1, 2):
        ub = userbuffers.apply(layer, 8, "bf16", 2, SMS, userbuffers.config(te_version=te_version), te_version)
        for phase, ops in ub.items():
            for op in ops:
                if op.kind == "gemm" and op.name in userbuffers.LAYERS:
                    margin = te_version == 2 and (phase, op.name) in on_margin
                    assert op.sms == (116 if margin else 0), (te_version, phase, op.name)


def test_communication_on_the_margin_takes_no_sm_from_its_gemm(small_scenario, rebalancing_grids):
    """TE 2.x's defaults at tp 8, compute-bound (memory share 0): the pipeline and bulk kernels run on the 16 SMs
    their GEMMs leave out, so only the ring exchanges' flag CTA slows the compute: forward and backward
    1/f = 1/2 * 131/132 (ring exchange) + 1/2 * 1. TE 1.x: their 16 SMs are taken from the compute."""
    data = copy.deepcopy(small_scenario)
    data["parallelism"].update(tp=8, pp=1, dp=2, sequence_parallel=True, tp_comm_overlap=True)
    data["training"]["precision"] = "bf16"
    data["parallelism"]["te_version"] = 2
    te2 = config.from_dict(data)
    for phase in ("forward", "backward"):
        assert 1 / overlap._userbuffers_slowdown(te2, phase, 300e9, 0.0) == pytest.approx(0.5 * 131 / 132 + 0.5)
    data["parallelism"]["te_version"] = 1
    te1 = config.from_dict(data)
    assert 1 / overlap._userbuffers_slowdown(te1, "backward", 300e9, 0.0) == pytest.approx(
        0.5 * 131 / 132 + 0.5 * 116 / 132)
    # the HBM bandwidth the margin's kernels take is still charged (memory-bound share 1)
    assert overlap._userbuffers_slowdown(te2, "backward", 300e9, 1.0) > 1.0


def test_te_version_defaults_to_1_on_hopper_and_dumps_as_unset(small_scenario):
    """Left unset on H100, parallelism.te_version resolves to 1 (NeMo 24.09 ran TE 1.10, NeMo 25.02 the 1.14 of its
    PyTorch 25.01 base: config.LATEST_TE_VERSION's comment) and serialises as null where defaults are rebuilt; a
    stated 2 is kept."""
    scenario = config.from_dict(copy.deepcopy(small_scenario))
    assert scenario.parallelism.te_version == 1
    assert scenario.model_dump(mode="json")["parallelism"]["te_version"] == 1
    assert config.rebuildable(scenario)["parallelism"]["te_version"] is None
    data = copy.deepcopy(small_scenario)
    data["parallelism"]["te_version"] = 2
    assert config.from_dict(data).parallelism.te_version == 2


@pytest.mark.parametrize("gpu, training, expected", [
    ("h100-sxm", {"precision": "fp8"}, 1),                              # delayed scaling: TE 1.x had it
    ("h100-sxm", {"precision": "fp8", "fp8_recipe": "current"}, 2),     # current scaling: a TE 2.x recipe
    ("b200", {"precision": "bf16"}, 2),                                 # Blackwell: NeMo 25.04+ / TE 2.x containers
    ("b200", {"precision": "fp8", "fp8_recipe": "mxfp8"}, 2),
])
def test_te_version_default_follows_what_the_run_needs(small_scenario, gpu, training, expected):
    """TE 2.x where the run needs it: on Blackwell (a GPU with an fp4 peak) and with the TE 2.x fp8 recipes."""
    data = copy.deepcopy(small_scenario)
    data["cluster"]["gpu"] = gpu
    data["training"].update(training)
    assert config.from_dict(data).parallelism.te_version == expected


def test_fused_moe_router_needs_te_2():
    """Megatron-Core's --moe-router-fusion needs TE >= 2.6, so a run stating the fused router ran TE 2.x."""
    h100 = hardware.gpu("h100-sxm")
    assert config.default_te_version(h100, "bf16", "delayed", "fused") == 2
    assert config.default_te_version(h100, "bf16", "delayed", "unfused") == 1


@pytest.mark.parametrize("value", [3, 0, True, 2.0, "2", "te2", [2]])
def test_bad_te_version_is_refused_naming_the_field(small_scenario, value):
    data = copy.deepcopy(small_scenario)
    data["parallelism"]["te_version"] = value
    with pytest.raises(config.ScenarioError, match=r"parallelism\.te_version"):
        config.from_dict(data)


def test_te2_margin_gemms_lose_no_wave_beside_their_kernels_te1s_do(small_scenario, rebalancing_grids, monkeypatch):
    """TE 2.x launches the pipeline and bulk GEMMs on 116 SMs (set_sm_margin, cuBLASLt's SM-count target picks their
    tile for 116) and runs the 16-SM communication kernels on the SMs left out: no wave lost beside them. TE 1.x
    launches the same GEMMs on all 132 SMs with the tile picked for 132, and the kernels' 16 CTAs hold SMs while they
    run: the GEMM runs ceil(tiles / 116) waves where it was launched for ceil(tiles / 132)
    (``interference.slowdown`` per kernel, ``kernels.tensor_core_waves``). Retiling for 116 is never slower than
    the 132-SM tile in waves of 116 (that tile is one of cuBLAS's candidates), so each TE 2.x GEMM alone takes at
    most its TE 1.x twin beside the kernels. The tp 8 GPT-3 1.3B layer's margin GEMMs have 128 tiles (one wave on
    132, two on 116) or fit 116: TE 1.x's run is the longer one, by less than 132/116. TE 2.x's buffer copies
    (userbuffers.yaml main_stream_copies; tests/unit/test_userbuffers.py) are set to TE 1.x's here: the margin alone."""
    copies = userbuffers.constants()["main_stream_copies"]
    monkeypatch.setitem(copies, 2, copies[1])
    data = copy.deepcopy(small_scenario)
    data["parallelism"].update(tp=8, pp=1, dp=2, sequence_parallel=True, tp_comm_overlap=True)
    data["cluster"]["nodes"] = 2
    steps, scenarios = {}, {}
    for te_version in (1, 2):
        data["parallelism"]["te_version"] = te_version
        scenarios[te_version] = config.from_dict(data)
        steps[te_version] = simulate(scenarios[te_version], steps=1).summary["step_time_s"]
    scenario = scenarios[2]
    precision, ctas = scenario.training.precision, interference.CommKernel(16, 0.0)  # SMs only: no HBM share
    layer = layer_ops(scenario.model, shard_for(scenario))
    gemms = {version: {(phase, op.name): op for phase, ops in userbuffers.apply(
        layer, 8, precision, 2, SMS, userbuffers.config(te_version=version), version).items()
        for op in ops if op.kind == "gemm" and op.name in userbuffers.LAYERS} for version in (1, 2)}
    margin = [key for key, op in gemms[2].items() if op.sms == SMS - 16]
    assert len(margin) == 6
    wave_factors = []
    for key in margin:
        te1, te2 = gemms[1][key], gemms[2][key]
        assert te1.sms == 0
        tiles = kernels._best_tile(te1.m, te1.n, te1.batch, H100.name)[2]
        q = math.ceil(tiles / (SMS - 16)) / math.ceil(tiles / SMS)
        wave_factors.append(q)
        alone_1, memory_1 = kernels.roofline_s(te1, H100, precision)
        alone_2, _ = kernels.roofline_s(te2, H100, precision)
        assert memory_1 < alone_1  # compute-bound: the SMs decide
        assert interference.slowdown(H100, ctas, interference.memory_bound_share([te1], H100, precision)) == (
            pytest.approx(q, rel=1e-12))
        assert interference.slowdown(H100, ctas, interference.memory_bound_share([te2], H100, precision)) == 1.0
        assert alone_1 <= alone_2 <= alone_1 * q * (1 + 1e-12)
    assert sorted(wave_factors) == [1.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    assert steps[2] < steps[1] < steps[2] * SMS / 116


def test_communication_on_the_margin_still_takes_its_hbm_share(small_scenario):
    """A kernel on the margin holds no compute SM but still moves its bytes through HBM. Memory-bound compute (share
    1), TE 2.x's defaults at tp 8, h = interference.slowdown(gpu, CommKernel(0, wire), 1) (= the HBM factor, whatever
    the kernel's SMs): backward, the ring-exchange all-gathers and the bulk reduce-scatters on the margin,
    1/f = 1/2 * 1/h + 1/2 * 1/h; forward, the pipeline's last chunk (1/splits of its reduce-scatter) runs after
    the compute: 1/f = 1/2 * 1/h + 1/2 * ((splits - 1) / splits * 1/h + 1 / splits)."""
    data = copy.deepcopy(small_scenario)
    data["parallelism"].update(tp=8, pp=1, dp=2, sequence_parallel=True, tp_comm_overlap=True)
    data["training"].update(precision="bf16", activation_recompute="none")
    scenario = config.from_dict(data)
    wire = 300e9
    h = interference.slowdown(H100, interference.CommKernel(0, wire), 1.0)
    assert h > 1.0
    splits = userbuffers.constants()["pipeline_splits"]
    assert 1 / overlap._userbuffers_slowdown(scenario, "backward", wire, 1.0) == pytest.approx(1 / h, rel=1e-12)
    assert 1 / overlap._userbuffers_slowdown(scenario, "forward", wire, 1.0) == pytest.approx(
        0.5 / h + 0.5 * ((splits - 1) / splits / h + 1 / splits), rel=1e-12)
