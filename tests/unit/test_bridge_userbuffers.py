"""Megatron-Bridge's userbuffers configurations (round 27, docs/calibration/round-27.md "Round 27: the pipelined 70B
recipes' last stage"; data/userbuffers.yaml megatron_bridge_configs).

Megatron-Bridge's ``src/megatron/bridge/training/comm_overlap.py`` (NVIDIA-NeMo/Megatron-Bridge @ 0685ff5d; the 26.04
page's copy radixark/Megatron-Bridge @ d063066b; ananthsub/Megatron-Bridge @ 5200461f) defines
``userbuffers_fp8_h100_h8192_tp4_mbs1_seqlen8192`` with proj_fprop and fc2_fprop as
``RingExchangeOverlapCfg(num_sm=1, set_sm_margin=True)``, where NeMo 2.x's file of the same name (NVIDIA/NeMo @
0594a700) has ``PipelineOverlapCfg(num_sm=24 / 16, num_splits=4, set_sm_margin=True, fp8_buf=True)``; its Llama 3.1
405B ring exchanges do not aggregate. A run stating a Megatron-Bridge release (mcore_version 0.14 on) takes the
Bridge's; one stating a NeMo 2.x release, or none, keeps NeMo's. Fails if the release stops selecting, if a Bridge
copy of a NeMo configuration takes other runs than it or a Bridge-only entry (the Blackwell ones) a NeMo
configuration's (either would silently add a configuration), or if the ring exchange still leaves a pipeline's
exposed last reduce-scatter chunk.
"""

import pytest

from simcluster.spec import config
from simcluster.workload import userbuffers
from simcluster.workload.ops import layer_ops, shard_for

ROW = "nemo2511-llama3-70b-64-h100-fp8"


def _with_release(name, release):
    data = config.load(name).model_dump(mode="json", exclude_none=True)
    if release is None:
        data["training"].pop("mcore_version")
    else:
        data["training"]["mcore_version"] = release
    return config.from_dict(data, source=f"{name} at {release}")


@pytest.mark.parametrize("release", ["0.14", "0.15", "0.17"])
def test_a_megatron_bridge_release_reduce_scatters_proj_and_fc2_by_ring_exchange(release):
    settings = userbuffers.scenario_config(_with_release(ROW, release))
    for gemm in ("proj_fprop", "fc2_fprop"):
        assert settings[gemm] == userbuffers.Gemm("ring_exchange", 1, set_sm_margin=True, aggregate=False,
                                                  fp8_buf=False)
    # the rest as NeMo 2.x's file has them (the same values in both)
    nemo = userbuffers.scenario_config(_with_release(ROW, "0.9"))
    assert {k: v for k, v in settings.items() if k not in ("proj_fprop", "fc2_fprop")} == {
        k: v for k, v in nemo.items() if k not in ("proj_fprop", "fc2_fprop")}


@pytest.mark.parametrize("release", ["0.9", "0.13", None])
def test_a_nemo_2_release_or_none_keeps_nemos_pipelines(release):
    settings = userbuffers.scenario_config(_with_release(ROW, release))
    assert (settings["proj_fprop"].method, settings["proj_fprop"].num_sm, settings["proj_fprop"].fp8_buf) == (
        "pipeline", 24, True)
    assert (settings["fc2_fprop"].method, settings["fc2_fprop"].num_sm) == ("pipeline", 16)


def test_bridge_405b_ring_exchanges_do_not_aggregate():
    bridge = userbuffers.config(16384, 8, 4096, 132, "fp8", bridge=True)
    nemo = userbuffers.config(16384, 8, 4096, 132, "fp8")
    assert all(not bridge[g].aggregate and nemo[g].aggregate
               for g in ("qkv_fprop", "proj_dgrad", "fc1_fprop", "fc2_dgrad"))


def test_every_bridge_copy_replaces_the_nemo_entry_of_its_name_and_the_bridges_own_add_theirs():
    nemo = {entry["name"]: set(userbuffers._match_keys(entry["match"]))
            for entry in userbuffers.constants()["nemo_configs"]}
    nemo_keys = set(userbuffers._configs(2))
    entries = userbuffers.constants()["megatron_bridge_configs"]
    own = {key for entry in entries if entry["name"] not in nemo for key in userbuffers._match_keys(entry["match"])}
    assert set(userbuffers._configs(2, True)) == nemo_keys | own and own and not own & nemo_keys
    assert all(set(userbuffers._match_keys(entry["match"])) == nemo[entry["name"]]
               for entry in entries if entry["name"] in nemo)


def test_no_pipeline_tail_and_tp_chunk_gemms_under_the_bridges_ring_exchange():
    # TE's split_overlap_rs_p2p: tp chunk GEMMs of tokens / tp rows, each chunk's reduce-scatter step under the next
    # GEMM; no last chunk left after the GEMM as split_overlap_rs's pipeline leaves (1/4 of the collective)
    scenario = config.load(ROW)
    settings = userbuffers.scenario_config(scenario)
    shard = shard_for(scenario)
    layer = layer_ops(scenario.model, shard)
    assert userbuffers.exposed_reduce_scatters(layer, settings) == {phase: 0 for phase in layer}
    nemo = userbuffers.scenario_config(_with_release(ROW, "0.9"))
    assert userbuffers.exposed_reduce_scatters(layer, nemo)["forward"] == 2
    tp = scenario.parallelism.tp
    assert userbuffers.chunks("ring_exchange", tp, aggregate=False) == tp
    assert userbuffers.chunks("ring_exchange", tp, aggregate=True) == tp // 2


def _copy_with_another_match():
    first = userbuffers.constants()["megatron_bridge_configs"][0]
    return [{**first, "match": {**first["match"], "hidden": 4321}}], "not the NeMo configuration's"


def _bridge_only_entry_with_a_nemo_match():   # a Bridge-only name (the Blackwell ones) may not take a NeMo shape
    nemo = userbuffers.constants()["nemo_configs"][0]
    return [{"name": "userbuffers_not_in_nemo", "match": nemo["match"], "gemms": {}}], "another name has its match"


@pytest.mark.parametrize("bridge_entries", [_copy_with_another_match, _bridge_only_entry_with_a_nemo_match],
                         ids=lambda f: f.__name__.strip("_"))
def test_a_bridge_entry_taking_other_runs_than_nemo_says_is_refused(monkeypatch, bridge_entries):
    entries, message = bridge_entries()
    monkeypatch.setitem(userbuffers.constants(), "megatron_bridge_configs", entries)
    userbuffers._configs.cache_clear()
    try:
        with pytest.raises(ValueError, match=message):
            userbuffers._configs(2, True)
    finally:
        userbuffers._configs.cache_clear()


# Megatron-Bridge's userbuffers_fp8_h100_h8192_tp4_mbs1_seqlen8192 as its comm_overlap.py states it (the stored copies
# above; re-read in round 36, docs/calibration/round-36.md "Round 36: NeMo's Llama 70B on 64 H100"): BulkOverlapCfg
# num_sm 4 / 24 / 2 / 4 without the margin, RingExchangeOverlapCfg(aggregate=False) for the four all-gather GEMMs (TE's
# one flag CTA), RingExchangeOverlapCfg(num_sm=1, set_sm_margin=True) for proj / fc2 fprop. The performance scripts name
# it for H100 fp8 (llama3_70b_pretrain_config_h100, scripts/performance/configs/llama/llama3_llm_pretrain.py, round 27;
# an earlier helper's COMM_OVERLAP_CONFIG_MAP["llama3_70b"]["h100"]["fp8"]).
BRIDGE_70B_H100_FP8 = {
    "qkv_dgrad": userbuffers.Gemm("bulk", 4), "qkv_wgrad": userbuffers.Gemm("bulk", 24),
    "fc1_dgrad": userbuffers.Gemm("bulk", 2), "fc1_wgrad": userbuffers.Gemm("bulk", 4),
    **{name: userbuffers.Gemm("ring_exchange", 1) for name in ("qkv_fprop", "proj_dgrad", "fc1_fprop", "fc2_dgrad")},
    **{name: userbuffers.Gemm("ring_exchange", 1, set_sm_margin=True) for name in ("proj_fprop", "fc2_fprop")}}


@pytest.mark.parametrize("name", [ROW, "nemo2604-llama3-70b-64-h100-fp8"])
def test_the_h100_fp8_70b_rows_run_the_recipes_configuration_gemm_by_gemm(name):
    settings = userbuffers.scenario_config(config.load(name))
    assert settings == BRIDGE_70B_H100_FP8
    # none of them at Transformer Engine's 16-SM default (interference.yaml ctas.userbuffers)
    assert all(gemm.num_sm != 16 for gemm in settings.values())
