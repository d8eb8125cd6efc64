"""Megatron-Bridge's Blackwell Llama 3.1 405B userbuffers configurations (round 27, docs/calibration/round-27.md "Round
27: Megatron-Bridge's Blackwell userbuffers configurations"; data/userbuffers.yaml megatron_bridge_configs).

Truth, read in the stored text: NVIDIA-NeMo/Megatron-Bridge src/megatron/bridge/training/comm_overlap.py @ 0685ff5d
(``userbuffers_{bf16,fp8}_b200_h16384_tp4_cp2_mbs1_seqlen8192``, the table below; a ring exchange stating no num_sm or
set_sm_margin takes RingExchangeOverlapCfg's defaults num_sm=1, set_sm_margin=False) and
scripts/performance/configs/llama/llama31_llm_pretrain.py @ 0013c9a8, whose llama31_405b_pretrain_config_b200 /
_gb200 / _gb300 pass the bf16 one for precision "bf16", else the fp8 one, whatever the layout. Fails if an entry's
value drifts from the source, if a 25.11 Blackwell 405B row (B200 fp8 and MXFP8, GB200, GB300) runs anything else, or
if a run of a NeMo 2.x release (or none) takes them (the data file holds no NeMo entry of these names).
"""

import pytest

from simcluster.spec import config
from simcluster.workload import userbuffers
from simcluster.workload.userbuffers import Gemm

RING = Gemm("ring_exchange", 1, set_sm_margin=False, aggregate=False)
# comm_overlap.py @ 0685ff5d: (method, num_sm, set_sm_margin) per GEMM; aggregate=False on every ring exchange
SOURCE = {
    "bf16": {"qkv_dgrad": Gemm("bulk", 8), "qkv_wgrad": Gemm("bulk", 24), "fc1_dgrad": Gemm("bulk", 2),
             "fc1_wgrad": Gemm("bulk", 2), "qkv_fprop": RING, "proj_dgrad": RING, "fc1_fprop": RING, "fc2_dgrad": RING,
             "proj_fprop": Gemm("pipeline", 32, set_sm_margin=True),
             "fc2_fprop": Gemm("pipeline", 8, set_sm_margin=True)},
    "fp8": {"qkv_dgrad": Gemm("bulk", 8), "qkv_wgrad": Gemm("bulk", 32), "fc1_dgrad": Gemm("bulk", 2),
            "fc1_wgrad": Gemm("bulk", 8), "qkv_fprop": RING, "proj_dgrad": RING, "fc1_fprop": RING, "fc2_dgrad": RING,
            "proj_fprop": Gemm("ring_exchange", 1, set_sm_margin=True),
            "fc2_fprop": Gemm("ring_exchange", 1, set_sm_margin=True)},
}
# the Llama 3 70B pair, same file (scripts/performance/configs/llama/llama3_llm_pretrain.py @ 2a0d46e2 passes them on
# B200 / GB200 / GB300 / B300)
SOURCE_70B = {
    "bf16": {"qkv_dgrad": Gemm("bulk", 16), "qkv_wgrad": Gemm("bulk", 24), "fc1_dgrad": Gemm("bulk", 2),
             "fc1_wgrad": Gemm("bulk", 4), "qkv_fprop": RING, "proj_dgrad": RING, "fc1_fprop": RING, "fc2_dgrad": RING,
             "proj_fprop": Gemm("pipeline", 32, set_sm_margin=True),
             "fc2_fprop": Gemm("pipeline", 16, set_sm_margin=True)},
    "fp8": {"qkv_dgrad": Gemm("bulk", 4), "qkv_wgrad": Gemm("bulk", 24), "fc1_dgrad": Gemm("bulk", 2),
            "fc1_wgrad": Gemm("bulk", 4), "qkv_fprop": RING, "proj_dgrad": RING, "fc1_fprop": RING, "fc2_dgrad": RING,
            "proj_fprop": Gemm("ring_exchange", 1, set_sm_margin=True),
            "fc2_fprop": Gemm("ring_exchange", 1, set_sm_margin=True)},
}
B200_SMS = 148
ROWS = ["nemo2511-llama3-405b-128-b200-fp8", "nemo2511-llama3-405b-128-b200-mxfp8",
        "nemo2511-llama3-405b-256-gb200-fp8", "nemo2511-llama3-405b-256-gb300-fp8"]


@pytest.mark.parametrize("precision", ["bf16", "fp8"])
@pytest.mark.parametrize("te_version", [1, 2])
def test_each_configuration_reads_back_as_its_source_states_it(precision, te_version):
    # every GEMM stated in the source, so the run's TE defaults do not show through
    found = userbuffers.config(16384, 4, 4096, B200_SMS, precision, te_version=te_version, bridge=True)
    assert found == SOURCE[precision]


@pytest.mark.parametrize("precision", ["bf16", "fp8"])
@pytest.mark.parametrize("sms", [148, 152])
def test_the_70b_pair_reads_back_as_its_source_states_it(precision, sms):
    assert userbuffers.config(8192, 2, 8192, sms, precision, bridge=True) == SOURCE_70B[precision]


def test_a_tp_2_gb200_70b_run_takes_the_70b_fp8_configuration_the_bundled_tp_1_one_has_no_tp_overlap():
    bundled = config.load("nemo2511-llama3-70b-64-gb200-fp8")
    assert bundled.parallelism.tp == 1 and not bundled.parallelism.tp_comm_overlap
    data = bundled.model_dump(mode="json", exclude_none=True)
    data["parallelism"].update(tp=2, dp=bundled.parallelism.dp // 2, sequence_parallel=True, tp_comm_overlap=True)
    data["training"]["micro_batch_size"] = 1
    tp2 = config.from_dict(data, source="70B GB200 at tp 2")
    assert userbuffers.scenario_config(tp2) == SOURCE_70B["fp8"]


@pytest.mark.parametrize("name", ROWS)
def test_the_25_11_blackwell_405b_rows_take_the_fp8_configuration(name):
    scenario = config.load(name)
    assert scenario.training.precision == "fp8" and scenario.parallelism.tp > 1
    assert userbuffers.scenario_config(scenario) == SOURCE["fp8"]


# Round 28's 26.x rows (docs/calibration/round-28.md "Round 28: new held-out runs"): llama31_llm_pretrain.py and
# llama3_llm_pretrain.py @ d063066b pass the same fp8 configurations for fp8_cs and fp8_mx on GB300 / GB200.
ROUND28_405B = ["nemo2604-llama3-405b-256-gb300-mxfp8", "nemo2604-llama3-405b-256-gb200-mxfp8",
                "nemo2604-llama3-405b-256-gb300-fp8"]


@pytest.mark.parametrize("name", ROUND28_405B)
def test_the_26_04_blackwell_405b_rows_take_the_fp8_configuration(name):
    scenario = config.load(name)
    assert scenario.training.fp8_recipe in ("current", "mxfp8") and scenario.parallelism.tp_comm_overlap
    assert userbuffers.scenario_config(scenario) == SOURCE["fp8"]


def test_the_26_04_70b_rows_tp_2_takes_the_70b_fp8_configuration_tp_1_has_no_tp_overlap():
    gb200 = config.load("nemo2604-llama3-70b-64-gb200-mxfp8")
    assert gb200.parallelism.tp == 2 and gb200.parallelism.tp_comm_overlap
    assert userbuffers.scenario_config(gb200) == SOURCE_70B["fp8"]
    gb300 = config.load("nemo2604-llama3-70b-64-gb300-mxfp8")  # CommOverlapConfig turns TP overlap off below TP 2
    assert gb300.parallelism.tp == 1 and not gb300.parallelism.tp_comm_overlap


def _with(name, **training):
    data = config.load(name).model_dump(mode="json", exclude_none=True)
    for key, value in training.items():
        if value is None:
            data["training"].pop(key)
        else:
            data["training"][key] = value
    return config.from_dict(data, source=f"{name} {training}")


def test_a_bf16_run_takes_the_bf16_configuration():
    scenario = _with("nemo2511-llama3-405b-128-b200-fp8", precision="bf16", fp8_recipe=None, fp8_param_gather=None)
    assert userbuffers.scenario_config(scenario) == SOURCE["bf16"]


@pytest.mark.parametrize("release", ["0.13", None])
def test_no_megatron_bridge_release_no_blackwell_configuration(release):
    # NeMo 2.x releases: the data file holds no NeMo configuration of this shape, so TE's defaults
    scenario = _with("nemo2511-llama3-405b-128-b200-fp8", mcore_version=release)
    assert userbuffers.scenario_config(scenario) == userbuffers.config(te_version=scenario.parallelism.te_version)

