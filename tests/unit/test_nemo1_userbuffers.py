"""NeMo 1.x (NeMo-Framework-Launcher) userbuffers configurations as their files state them, which runs take them,
and Transformer Engine's fp8 reduce-scatter buffer (fp8_buf) in closed form (data/userbuffers.yaml)."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from simcluster.parallel import plan
from simcluster.spec import config
from simcluster.spec.hardware import BYTES_PER_ELEMENT
from simcluster.workload import userbuffers
from simcluster.workload.ops import Op, layer_ops, shard_for
from simcluster.workload.userbuffers import Gemm

SMS = 132  # H100 SXM

# NVIDIA/NeMo-Framework-Launcher launcher_scripts/conf/training/tp_overlap/ub_cfg_h100_h12288_tp4_mbs2_seqlen2048.yaml
# (commit 5d302f86), as written there (set_sm_margin 0/1, aggregate 0/1, fp8_buf 1; ring exchanges hold one flag CTA)
GPT3_MBS2 = {
    "qkv_dgrad": Gemm("bulk", 4), "qkv_wgrad": Gemm("bulk", 4), "fc1_dgrad": Gemm("bulk", 2),
    "fc1_wgrad": Gemm("bulk", 4),
    "qkv_fprop": Gemm("ring_exchange", 1), "proj_dgrad": Gemm("ring_exchange", 1),
    "fc1_fprop": Gemm("ring_exchange", 1), "fc2_dgrad": Gemm("ring_exchange", 1),
    "proj_fprop": Gemm("pipeline", 24, set_sm_margin=True, fp8_buf=True),
    "fc2_fprop": Gemm("ring_exchange", 1, set_sm_margin=True),
}
# ... ub_cfg_h100_h8192_tp4_mbs1_seqlen4096.yaml (commit e5abe838)
LLAMA2_70B = {
    "qkv_dgrad": Gemm("bulk", 8), "qkv_wgrad": Gemm("bulk", 16), "fc1_dgrad": Gemm("bulk", 2),
    "fc1_wgrad": Gemm("bulk", 4),
    "qkv_fprop": Gemm("ring_exchange", 1), "proj_dgrad": Gemm("ring_exchange", 1),
    "fc1_fprop": Gemm("ring_exchange", 1), "fc2_dgrad": Gemm("ring_exchange", 1, aggregate=True),
    "proj_fprop": Gemm("pipeline", 24, set_sm_margin=True),
    "fc2_fprop": Gemm("pipeline", 16, set_sm_margin=True),
}


def test_gpt3_175b_micro_batch_2_configuration_reads_as_the_launcher_file():
    assert userbuffers.config(12288, 4, 4096, SMS) == GPT3_MBS2


def test_llama2_70b_configuration_reads_as_the_launcher_file():
    assert userbuffers.config(8192, 4, 4096, SMS) == LLAMA2_70B


@pytest.mark.parametrize(("name", "expected"), [
    ("nemo2407-gpt3-175b-512-h100-fp8", GPT3_MBS2),
    ("nemo2407-llama2-70b-64-h100-fp8", LLAMA2_70B),
])
def test_the_nemo_1_rows_take_their_launcher_configuration(name, expected):
    assert userbuffers.scenario_config(config.load(name)) == expected


def test_nemo_2_gpt3_rows_keep_nemo_2s_configuration():
    """The NeMo 2.x GPT-3 calibration rows (gpt3-175b-nemo, micro batch 1) keep NeMo 2.x's h12288 tp4 mbs1
    configuration (no fp8_buf); the same preset at micro batch 2 is not a model the launcher file names."""
    nemo2 = config.load("nemo2409-gpt3-175b-128-h100-bf16")
    assert userbuffers.scenario_config(nemo2) == userbuffers.config(12288, 4, 2048, SMS)
    assert not userbuffers.scenario_config(nemo2)["proj_fprop"].fp8_buf
    mbs2 = nemo2.model_copy(update={"training": nemo2.training.model_copy(update={"micro_batch_size": 2})})
    assert userbuffers.scenario_config(mbs2) == userbuffers.config(te_version=1)


# NVIDIA/NeMo tp_overlap_configs/userbuffers.py (commit 26005325): the fp8 twins, the bf16 values with fp8_buf=True on
# proj_fprop and on fc2_fprop where it is a pipeline
@pytest.mark.parametrize(("shape", "fp8_buffers"), [
    ((12288, 4, 2048), {"proj_fprop"}),               # userbuffers_fp8_h100_h12288_tp4_mbs1_seqlen2048
    ((8192, 4, 8192), {"proj_fprop", "fc2_fprop"}),   # userbuffers_fp8_h100_h8192_tp4_mbs1_seqlen8192
    ((16384, 8, 4096), {"proj_fprop", "fc2_fprop"}),  # userbuffers_fp8_h100_h16384_tp8_cp2_mbs1_seqlen8192
    ((6144, 2, 4096), {"proj_fprop", "fc2_fprop"}),   # userbuffers_fp8_h100_h6144_tp2_mbs2_seqlen2048
])
def test_nemo_2_fp8_twins_are_the_bf16_configurations_with_fp8_buffers(shape, fp8_buffers):
    bf16, fp8 = userbuffers.config(*shape, SMS, "bf16"), userbuffers.config(*shape, SMS, "fp8")
    assert bf16 == userbuffers.config(*shape, SMS) and bf16 != userbuffers.config()
    assert {name for name, gemm in fp8.items() if gemm.fp8_buf} == fp8_buffers
    assert {name: dataclasses.replace(gemm, fp8_buf=False) for name, gemm in fp8.items()} == bf16


def test_fp8_runs_take_the_fp8_twin_bf16_runs_the_bf16_configuration():
    """NeMo 2.x's scripts pick the file by compute dtype: the nemo2409 GPT-3 BF16 calibration rows keep the bf16
    file, the micro batch 1 GPT-3 FP8 row (its launcher file not stored) takes the fp8 twin."""
    bf16 = userbuffers.scenario_config(config.load("nemo2409-gpt3-175b-128-h100-bf16"))
    fp8 = userbuffers.scenario_config(config.load("nemo2407-gpt3-175b-128-h100-fp8"))
    assert bf16 == userbuffers.config(12288, 4, 2048, SMS) and not bf16["proj_fprop"].fp8_buf
    assert fp8 == userbuffers.config(12288, 4, 2048, SMS, "fp8") and fp8["proj_fprop"].fp8_buf


def test_fp8_buffer_halves_the_projection_reduce_scatter_in_closed_form():
    """TE honours fp8_buf on its pipeline GEMMs only, in fp8 training only: the reduce-scatter of a 16-bit output of
    B bytes moves B x 1/2 bytes (fp8 elements)."""
    cfg, size = userbuffers.config(12288, 4, 4096, SMS), 3.0e6
    assert userbuffers.reduce_scatter_bytes("proj_fprop", size, 2, "fp8", cfg) == size * 1 / 2
    assert userbuffers.reduce_scatter_bytes("proj_fprop", size, 2, "bf16", cfg) == size
    assert userbuffers.reduce_scatter_bytes("fc2_fprop", size, 2, "fp8", cfg) == size  # no fp8_buf stated
    forced = dict(cfg, qkv_wgrad=Gemm("bulk", 4, fp8_buf=True))  # not a pipeline GEMM: TE ignores it
    assert userbuffers.reduce_scatter_bytes("qkv_wgrad", size, 2, "fp8", forced) == size
    assert userbuffers.fp8_chunk_bytes(size, 2, "fp8", cfg) == size / 2
    assert userbuffers.fp8_chunk_bytes(size, 2, "fp8", userbuffers.config(8192, 4, 4096, SMS)) is None


def test_fp8_buffer_charges_the_fp8_chunk_for_its_exposed_reduce_scatter():
    """Forward of one layer with the mbs 2 configuration: proj (pipeline, fp8_buf) leaves its last chunk exposed at
    the fp8 chunk time; fc2 is a ring exchange (no exposed chunk)."""
    ops = {"forward": [Op("attn_out", "gemm", 1.0, 1.0, m=8, n=8, k=8),
                       Op("mlp_down", "gemm", 1.0, 1.0, m=8, n=8, k=8)]}
    cfg = userbuffers.config(12288, 4, 4096, SMS)
    assert userbuffers.exposed_stream(ops, ("forward",), 2e-5, cfg, 1e-5, "fp8").device_s == pytest.approx(1e-5)
    assert userbuffers.exposed_stream(ops, ("forward",), 2e-5, cfg, 1e-5, "bf16").device_s == pytest.approx(2e-5)
    assert userbuffers.exposed_stream(ops, ("forward",), 2e-5, cfg).device_s == pytest.approx(2e-5)


def test_fp8_buffer_writes_the_gemm_output_in_fp8():
    """A chunk of the projection GEMM (m x n output) with an fp8 userbuffer writes m x n bytes less than in 16 bits."""
    op = Op("attn_out", "gemm", 1.0, 1.0, m=4096, n=12288, k=3072)
    m, n = 4096, 3072
    sixteen = userbuffers.chunk_bytes(op, m, n, "fp8")
    eight = userbuffers.chunk_bytes(op, m, n, "fp8", BYTES_PER_ELEMENT["fp8"])
    assert sixteen - eight == m * n * (BYTES_PER_ELEMENT["bf16"] - BYTES_PER_ELEMENT["fp8"])


def test_fp8_all_gathers_move_half_the_bytes_whatever_fp8_buf_says():
    """TE 1.x: all-gather userbuffers are fp8 in fp8 training (layers_all_gather_overlap), so the all-gathers move
    half the 16-bit activation's bytes; the reduce-scatters keep them (plan.tp_collective_bytes)."""
    scenario = config.load("nemo2407-gpt3-175b-512-h100-fp8")
    sizes = plan.tp_collective_bytes(scenario, 1000.0)
    assert sizes["all_gather"] == 1000.0 * BYTES_PER_ELEMENT["fp8"] / BYTES_PER_ELEMENT["bf16"] == 500.0
    assert sizes["reduce_scatter"] == 1000.0


def test_a_num_splits_other_than_the_modelled_one_is_refused():
    with pytest.raises(ValueError, match="num_splits 2"):
        userbuffers._gemm_of("proj_fprop", {"method": "pipeline", "num_sm": 24, "num_splits": 2})


def test_a_setting_the_model_does_not_run_is_refused():
    """TE's atomic_gemm (one GEMM with atomic counters) is not modelled: a configuration stating it is refused."""
    with pytest.raises(ValueError, match="atomic_gemm not modelled"):
        userbuffers._gemm_of("proj_fprop", {"method": "pipeline", "num_sm": 24, "atomic_gemm": 1})


def test_two_configurations_of_one_shape_are_refused(monkeypatch):
    entries = copy.deepcopy(userbuffers.constants()["nemo_configs"])
    entries.append(dict(entries[-1], name="a twin"))
    monkeypatch.setitem(userbuffers.constants(), "nemo_configs", entries)
    userbuffers._configs.cache_clear()
    try:
        with pytest.raises(ValueError, match="a twin"):
            userbuffers._configs()
    finally:
        userbuffers._configs.cache_clear()
        userbuffers.config.cache_clear()
        userbuffers._config_models.cache_clear()


def _gpt3_mbs2_fp8_forward(settings=None) -> tuple[dict, dict, int]:
    """The forward of one layer of the NeMo 1.x GPT-3 175B micro batch 2 fp8 row, as written and as userbuffers runs
    it with ``settings`` (None: the row's own, ub_cfg_h100_h12288_tp4_mbs2_seqlen2048)."""
    scenario = config.load("nemo2407-gpt3-175b-512-h100-fp8")
    shard = shard_for(scenario)
    settings = settings or userbuffers.scenario_config(scenario)
    assert settings == GPT3_MBS2 or settings["fc2_fprop"].fp8_buf
    layer = layer_ops(scenario.model, shard)
    ub = userbuffers.apply(layer, 4, "fp8", shard.activation_bytes_per_element, SMS, settings,
                            scenario.parallelism.te_version)
    return ({op.name: op for op in layer["forward"]}, {op.name: op for op in ub["forward"]},
            shard.activation_bytes_per_element)


def test_fp8_buffer_pipeline_chunks_write_fp8_in_the_applied_layer():
    """proj_fprop (pipeline, fp8_buf) of the mbs 2 fp8 row: 4 chunk GEMMs of m x n/4 outputs, each reading its fp8
    operands (m x k, k x n/4) and writing its output into the fp8 userbuffer, one byte an element:
    hbm = 4 x ((m k + k n/4) + m n/4) x 1 byte (= count x chunk_bytes(..., out_element=1))."""
    written, applied, _ = _gpt3_mbs2_fp8_forward()
    op, chunk = written["attn_out"], applied["attn_out"]
    splits = userbuffers.constants()["pipeline_splits"]
    n = op.n // splits
    assert (chunk.m, chunk.n, chunk.k) == (op.m, n, op.k) and op.n % splits == 0
    assert chunk.hbm_bytes == splits * ((op.m * op.k + op.k * n) + op.m * n) * 1
    assert chunk.hbm_bytes == splits * userbuffers.chunk_bytes(op, op.m, n, "fp8", out_element=1)


def test_fp8_buffer_ring_exchange_reduce_scatter_reduces_fp8_chunks():
    """fc2_fprop as a ring-exchange reduce-scatter with fp8_buf (TE honours it: fc2_fprop is a default pipeline
    GEMM): each of the tp chunk GEMMs writes its m/tp x n output in fp8, and the reduce after the last send reads tp
    received fp8 chunks and writes one in 16 bits: (tp x 1 + 2) x m/tp x n bytes."""
    settings = dict(GPT3_MBS2, fc2_fprop=Gemm("ring_exchange", 1, set_sm_margin=True, fp8_buf=True))
    written, applied, element = _gpt3_mbs2_fp8_forward(settings)
    op, tp = written["mlp_down"], 4
    assert element == 2
    assert applied["ub_reduce"].hbm_bytes == (tp * 1 + element) * (op.m // tp) * op.n
    m = op.m // tp
    assert applied["mlp_down"].hbm_bytes == tp * ((m * op.k + op.k * op.n) + m * op.n) * 1


def test_plan_times_the_exposed_fp8_buffer_chunk_at_half_the_bytes():
    """The NeMo 1.x GPT-3 175B micro batch 2 fp8 row: per layer the forward leaves one reduce-scatter chunk exposed,
    proj_fprop's (pipeline, fp8_buf; fc2_fprop is a ring exchange), of tokens x hidden / splits elements moved as
    fp8: 4096 x 12288 x 1 byte / 4. With reduce-scatters timed at a size-proportional rate, the forward's device time
    grows by that chunk per layer, the backward (no pipeline) not at all."""
    scenario = config.load("nemo2407-gpt3-175b-512-h100-fp8")
    t, m = scenario.training, scenario.model
    assert (t.seq_len * t.micro_batch_size, m.hidden, scenario.parallelism.tp) == (4096, 12288, 4)
    rate = 1e11  # bytes/s, any

    def timed(rs_rate: float | None):
        def time_s(op, group, size):
            return size / rs_rate if op == "reduce_scatter" and rs_rate else 0.0
        return plan.plan(scenario, time_s).chunks[0]

    slow, free = timed(rate), timed(None)
    chunk_bytes = 4096 * 12288 * BYTES_PER_ELEMENT["fp8"] / userbuffers.constants()["pipeline_splits"]
    assert slow.forward_stream.device_s - free.forward_stream.device_s == pytest.approx(
        slow.layers * chunk_bytes / rate, rel=1e-9)
    assert slow.backward_stream.device_s == pytest.approx(free.backward_stream.device_s, rel=1e-12)


def _clear_caches():
    for cached in (userbuffers._configs, userbuffers.config, userbuffers._config_models):
        cached.cache_clear()


def test_an_fp8_run_of_a_model_only_the_bf16_entry_names_keeps_the_bf16_entry(monkeypatch):
    """The fp8 twin of GPT-3's h12288 tp4 mbs1 shape naming gpt3-175b only: an fp8 run of gpt3-175b-nemo (named by the
    entry without a precision) takes that entry, not TE's defaults; gpt3-175b still takes the twin; a model neither
    names gets TE's defaults."""
    entries = copy.deepcopy(userbuffers.constants()["nemo_configs"])
    twin = next(entry for entry in entries if entry["match"].get("precision") == ["fp8"]
                and entry["match"]["hidden"] == 12288 and entry["match"]["tokens"] == 2048)
    twin["match"]["models"] = ["gpt3-175b"]
    monkeypatch.setitem(userbuffers.constants(), "nemo_configs", entries)
    _clear_caches()
    try:
        nemo2 = config.load("nemo2409-gpt3-175b-128-h100-bf16")
        fp8 = nemo2.model_copy(update={"training": nemo2.training.model_copy(update={"precision": "fp8"})})
        assert fp8.model.name == "gpt3-175b-nemo" and fp8.megatron_core
        te = fp8.parallelism.te_version
        bf16_entry, twin_entry = (userbuffers.config(12288, 4, 2048, SMS, precision, te_version=te)
                                  for precision in (None, "fp8"))
        assert bf16_entry != twin_entry != userbuffers.config(te_version=te)
        assert userbuffers.scenario_config(fp8) == bf16_entry
        named = fp8.model_copy(update={"model": fp8.model.model_copy(update={"name": "gpt3-175b"})})
        assert userbuffers.scenario_config(named) == twin_entry
        other = fp8.model_copy(update={"model": fp8.model.model_copy(update={"name": "another"})})
        assert userbuffers.scenario_config(other) == userbuffers.config(te_version=te)
    finally:
        _clear_caches()
