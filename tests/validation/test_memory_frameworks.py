"""Per-GPU memory as the frameworks hold it: capacities as NVML reports them, Megatron's distributed-optimizer
bytes per parameter, and every published run that ran fits.

Sources: GPU memory totals as nvidia-smi/NVML reports them (Modal, "Why does an NVIDIA H100 80GB card offer 85.52
GB?", 2025, and modal-labs/modal-client#2797: H100 81,559 MiB, A100 80GB 81,920 MiB, A100 40GB 40,960 MiB, H200
143,771 MiB; B200 183,359 MiB in nvidia-smi output quoted in NVIDIA/TensorRT-LLM#10278; GB200 189,471 MiB and GB300
284,208 MiB in public nvidia-smi outputs of NVL72 trays, drivers 580.x); Megatron-LM
docs/source/api-guide/dist_optimizer.md (bytes per parameter with bf16 parameters and fp32 main
gradients: 18 without the distributed optimizer, 6 + 12/d with it; fp32: 16 and 8 + 8/d).
"""

import pytest

from simcluster.parallel import memory
from simcluster.spec import config, hardware
from simcluster.studies import validation

MIB = 2**20


@pytest.mark.parametrize(("gpu", "mib"), [("h100-sxm", 81559), ("a100-80gb-sxm", 81920),
                                          ("a100-40gb-sxm", 40960), ("h200-sxm", 143771),
                                          # Blackwell, nvidia-smi as recorded in public logs (conf S):
                                          ("b200", 183359), ("gb200", 189471), ("b300", 275040),
                                          ("gb300", 284208)])
def test_hbm_capacity_is_what_nvml_reports_not_the_decimal_marketing_size(gpu, mib):
    assert hardware.gpu(gpu).hbm_capacity == mib * MIB


def _scenario(dp: int, zero_stage: int, precision: str = "bf16"):
    return config.from_dict({
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": dp},
        "model": "gpt3-1.3b",
        "training": {"seq_len": 2048, "global_batch_size": 8 * dp, "micro_batch_size": 1, "precision": precision},
        "parallelism": {"tp": 8, "pp": 1, "dp": dp, "zero_stage": zero_stage, "grad_reduce_dtype": "fp32"},
    })


@pytest.mark.parametrize("dp", [1, 8, 64])
@pytest.mark.parametrize(("precision", "replicated", "distributed"), [("bf16", 18, (6, 12)), ("fp32", 16, (8, 8))])
def test_model_states_match_megatron_distributed_optimizer_bytes_per_parameter(dp, precision, replicated,
                                                                              distributed):
    params = memory.stage_params(_scenario(dp, 0).model, 8, 1, 0)
    for zero_stage, expected in ((0, replicated), (1, distributed[0] + distributed[1] / dp)):
        b = memory.per_gpu_memory(_scenario(dp, zero_stage, precision))
        per_param = (b.weights_bytes + b.gradients_bytes + b.optimizer_bytes) / params
        assert per_param == pytest.approx(expected, rel=1e-9)


ALL_PUBLISHED = validation.cases() + validation.held_out_cases()
# Published runs that ran and that the memory model still refuses: known gaps (docs/compute-and-memory.md), expected
# to fail here (strict: the test says so when one starts to fit). Empty since the NeMo 25.11 Blackwell rows were
# fixed (issue 15): their HBM as NVML reports it, and the Llama 3 70B recipes' activation offloading
# (activation_offload_layers); and since round 29's NeMo AutoModel DeepSeek V3 row fits with AutoModel's bf16
# parameters and moments (training.master_weights false) and its 16-bit logits (logits_memory torch_16bit).
KNOWN_REFUSED: dict[str, str] = {}


def _published(case: dict):
    reason = KNOWN_REFUSED.get(case["scenario"])
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(case, id=case["scenario"], marks=marks)


@pytest.mark.parametrize("case", [_published(c) for c in ALL_PUBLISHED])
def test_no_published_run_that_ran_is_refused_by_the_memory_model(case):
    """Judged on the layout as published (``memory_layout`` restates what the simulation runs otherwise: NeMo 25.11's
    bf16 gradient reduction)."""
    scenario = validation.published_layout(case, config.load(case["scenario"]))
    assert memory.per_gpu_memory(scenario).total_bytes <= scenario.cluster.gpu.hbm_capacity
    memory.check_fits(scenario)  # raises OutOfMemoryError otherwise


def test_memory_layout_restates_only_the_published_keys_and_nothing_else():
    # the Llama 3 405B run is simulated with its published ZeRO-2; restated as ZeRO-1, a layout it did not run
    case = {"scenario": "llama3-405b-8k-h100-published", "memory_layout": {"zero_stage": 1}}
    simulated = config.load(case["scenario"])
    published = validation.published_layout(case, simulated)
    assert (simulated.parallelism.zero_stage, published.parallelism.zero_stage) == (2, 1)
    assert published.parallelism.model_dump(exclude={"zero_stage"}) == simulated.parallelism.model_dump(
        exclude={"zero_stage"})
    assert published.training == simulated.training and published.cluster == simulated.cluster
    # ZeRO-2 shards the gradients over dp: the simulated layout holds 1/dp of the restated one's
    dp = simulated.parallelism.dp
    assert memory.per_gpu_memory(simulated, 0).gradients_bytes == pytest.approx(
        memory.per_gpu_memory(published, 0).gradients_bytes / dp)
    with pytest.raises(AssertionError):
        validation.published_layout({"scenario": case["scenario"], "memory_layout": {"tp": 4}}, simulated)


# NeMo 25.11's Llama 3 70B FSDP recipes choose how many layers to offload in steps of 10 (Megatron-Bridge
# scripts/performance/configs/llama/llama3_workload_base_configs.py, *_V1, global batch 256 on 64 GPUs, micro batch
# 2, Megatron FSDP; llama3_llm_pretrain.py: grad_reduce_in_fp32 = False): (gpu, precision, cpu_offloading_num_layers)
OFFLOAD_RECIPES = [("gb200", "fp8", 40), ("gb300", "fp8", 20), ("gb300", "bf16", 30)]


@pytest.mark.parametrize(("gpu", "precision", "offload"), OFFLOAD_RECIPES)
def test_the_recipes_offload_count_fits_and_ten_layers_fewer_would_not(gpu, precision, offload):
    # independent truth: the recipe's own choice. What it offloads must fit; had ten layers fewer fitted, the recipe
    # would not pay for ten more layers of host copies.
    def layout(layers):
        return config.from_dict({
            "cluster": {"gpu": gpu, "gpus_per_node": 64, "nodes": 1}, "model": "llama3-70b",
            "training": {"seq_len": 8192, "global_batch_size": 256, "micro_batch_size": 2, "precision": precision,
                         "activation_offload_layers": layers,
                         # fp8: the recipe's bf16_with_fp8_current_scaling_mixed, fp8 parameters on
                         **({"fp8_recipe": "current", "fp8_param_gather": True} if precision == "fp8" else {})},
            "parallelism": {"tp": 1, "pp": 1, "dp": 64, "zero_stage": 3, "sequence_parallel": False,
                            "grad_reduce_dtype": "bf16"}})
    capacity = hardware.gpu(gpu).hbm_capacity
    assert memory.per_gpu_memory(layout(offload)).total_bytes <= capacity
    assert memory.per_gpu_memory(layout(offload - 10)).total_bytes > capacity
