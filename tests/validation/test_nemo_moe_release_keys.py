"""Two NeMo Qwen3-235B rows run the MoE execution keys of the release their figure comes from
(docs/calibration/round-37.md, "Round 37: audit of the NeMo MoE rows' overlap and dispatcher keys").

Independent truths (Megatron-Bridge, read from source):
- NeMo 25.11 on 64 B200, MXFP8 (page: PP 8, VP 2, EP 8, GBS 1024, 3269 tokens/s = 20.048 s): the B200 preset of the
  25.11 window (scripts/performance/configs/qwen3/workload_base_configs.py @ 767255d2) sets
  ``virtual_pipeline_model_parallel_size=2`` and ``moe_a2a_overlap=True`` on B200 BF16 / FP8 (FP8-MX aliases FP8-CS),
  ``set_workload_base_configs`` (utils/helpers.py @ 767255d2) turns that into ``overlap_moe_expert_parallel_comm`` and
  ``delay_wgrad_compute``. PR #1760 ("MXFP8 step time improved from 20.1s
  to 16.9s ... Disable `moe_a2a_overlap` due to CPU overhead") and issue #1705 ("Fixed by disabling EP A2A overlap in
  config (PR #1760)") say the recipe that measured the page's step had the overlap on.
- NeMo 26.04 on 256 B300, MXFP8 (page: MBS 2, PP 8, EP 8, 4865 tokens/s): the B300 builder before PR #3490 sets
  ``moe_token_dispatcher_type = "alltoall"`` (qwen3_llm_pretrain.py, search id 19629787215) and the preset
  ``moe_token_dispatcher_type="alltoall"``, ``moe_a2a_overlap=False`` (qwen3_workload_base_configs.py @ 01b2977e);
  HybridEP came with PR #3490 ("Use HybridEP flex dispatcher for Qwen3 235B B300 perf configs") for 26.04.01 (issue
  #3399, labelled 26.04.01: "On B300, we moved to hybridep as it helped boosted perf but moe_a2a_overlap and VP
  degraded perf"), whose page prints the same layout at 5984 tokens/s.
"""

from simcluster.spec import config

QWEN3_B200_2511 = "nemo2511-qwen3-235b-64-b200-fp8"
QWEN3_B300_2604 = "nemo2604-qwen3-235b-256-b300-mxfp8"


def test_qwen3_b200_25_11_runs_the_recipes_expert_overlap():
    s = config.load(QWEN3_B200_2511)
    p = s.parallelism
    assert (p.pp, p.virtual_stages, p.ep, p.tp) == (8, 2, 8, 1)
    assert p.ep_overlap is True
    assert (p.moe_dispatcher, p.ep_alltoall) == ("alltoall", "direct")
    assert s.training.fp8_recipe == "mxfp8"


def test_qwen3_b300_26_04_runs_the_alltoall_dispatcher_not_26_04_01s_hybridep():
    s = config.load(QWEN3_B300_2604)
    p = s.parallelism
    assert (p.moe_dispatcher, p.ep_alltoall) == ("alltoall", "direct")
    assert p.ep_overlap is False and p.virtual_stages == 1
    assert (p.pp, p.ep, s.training.micro_batch_size) == (8, 8, 2)
