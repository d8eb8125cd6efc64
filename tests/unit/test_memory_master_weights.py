"""16-bit parameters stepped in place (``training.master_weights: false``) and torch's loss on 16-bit logits
(``logits_memory: torch_16bit``): NeMo AutoModel's DeepSeek-V3 benchmark (docs/calibration/round-29.md, "Round 29: NeMo
AutoModel's DeepSeek-V3 row from its source").

Sources (NVIDIA-NeMo/Automodel, 2025): ``DeepseekV3ForCausalLM.initialize_weights(dtype=torch.bfloat16)`` casts the
model (``self.to(dtype)`` in 0.2.0), called with its default by ``Checkpointer.load_base_model`` whatever its
``load_base_model`` flag (the benchmark config sets it false); torch.optim.Adam keeps
``exp_avg``/``exp_avg_sq`` as ``zeros_like(param)``; the MoE parallelizer leaves expert-parallel experts out of FSDP
(``ignored_params``) when ``ep_shard`` is 1; ``MaskedCrossEntropy(fp32_upcast=False)`` calls F.cross_entropy on the
model's uncast logits.
"""

import pytest

from simcluster.core.errors import ScenarioError
from simcluster.outcomes import reliability
from simcluster.parallel import memory
from simcluster.spec import config
from simcluster.workload.ops import shard_for

NAME = "automodel-deepseek-v3-256-h100-bf16"


@pytest.fixture(scope="module")
def scenario():
    return config.load(NAME)


def test_bf16_parameters_hold_2_plus_2_plus_4_bytes_a_parameter(scenario):
    """Experts outside FSDP whole on their EP rank (expert-DP 1), the rest FSDP-sharded over dp 64: weights, gradients
    and Adam's two moments all bf16, 8 bytes a parameter, against 2 + 4 + 12 = 18 with fp32 master weights."""
    m, p = scenario.model, scenario.parallelism
    assert scenario.expert_data_parallel == 1
    for stage in range(p.pp):
        dense = memory.stage_params(m, p.tp, p.pp, stage, p.virtual_stages, p.layers_per_stage)
        experts = memory.stage_expert_params(m, p.pp, stage, p.ep, p.etp, p.virtual_stages, p.layers_per_stage)
        b = memory.per_gpu_memory(scenario, stage)
        assert (b.weights_bytes, b.gradients_bytes, b.optimizer_bytes) == pytest.approx(
            tuple(n * (experts + dense / p.dp) for n in (2, 2, 4)), rel=1e-12)
    mixed = scenario.model_copy(update={"training": scenario.training.model_copy(update={"master_weights": True})})
    b, b_mixed = memory.per_gpu_memory(scenario, 3), memory.per_gpu_memory(mixed, 3)
    total = lambda x: x.weights_bytes + x.gradients_bytes + x.optimizer_bytes  # noqa: E731
    assert total(b_mixed) / total(b) == pytest.approx(18 / 8, rel=1e-12)


def test_the_stage_kept_gathered_still_accumulates_fp32_unsharded_gradients(scenario):
    """FSDP2 under pipelining keeps a stage's units gathered (bf16) and accumulates their unsharded gradients at the
    reduce dtype (fp32) until the last backward, whatever the parameter dtype: 2 + 4 bytes a dense parameter in the
    workspace with or without master weights."""
    mixed = scenario.model_copy(update={"training": scenario.training.model_copy(update={"master_weights": True})})
    assert memory.per_gpu_memory(scenario, 3).workspace_bytes == pytest.approx(
        memory.per_gpu_memory(mixed, 3).workspace_bytes, rel=1e-12)


def test_torch_16bit_logits_hold_half_the_pipelines_fp32_outputs(scenario):
    """torch.distributed.pipelining keeps each microbatch's output on the last stage (output_chunks): 8 microbatches
    of 4096 x 129,280 bf16 logits, 8.47 GB, half of torchtitan's fp32 ones."""
    m, t, p = scenario.model, scenario.training, scenario.parallelism
    shard = shard_for(scenario)
    held = memory.pipeline_output_bytes(m, shard, t.logits_memory, p.pp, scenario.microbatches)
    assert held == 8 * 2 * 4096 * 129280
    assert memory.pipeline_output_bytes(m, shard, "torch_fp32", p.pp, scenario.microbatches) == 2 * held


def test_the_published_layout_fits_with_its_margin_stated(scenario):
    """The run ran on 80 GB H100s (81,559 MiB): the last stage is the largest, 61.9 GiB with this model (59.2 GiB
    before round 36 gave the row AutoModel's own pipeline split, [2 x 29, 1, 1, 1] over the 32 stages: the last
    stage now holds a layer beside the output layer)."""
    worst = memory.check_fits(scenario)
    assert worst.stage == scenario.parallelism.pp - 1
    assert worst.total_bytes / 2**30 == pytest.approx(61.9, abs=0.1)


def _fsdp(**training):
    return config.from_dict({
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1},
        "model": "gpt3-1.3b",
        "training": {"seq_len": 2048, "global_batch_size": 8, "micro_batch_size": 1, "precision": "bf16",
                     "optimizer": "torch_adamw", **training},
        "parallelism": {"tp": 1, "pp": 1, "dp": 8, "zero_stage": 3, "grad_reduce_dtype": "fp32"},
    })


def test_16bit_parameters_save_10_bytes_a_parameter_on_plain_fsdp():
    with_master, without = _fsdp(), _fsdp(master_weights=False)
    params = memory.stage_params(with_master.model, 1, 1, 0)
    per = [(b.weights_bytes + b.gradients_bytes + b.optimizer_bytes) * 8 / params
           for b in (memory.per_gpu_memory(with_master), memory.per_gpu_memory(without))]
    assert per == pytest.approx([18.0, 8.0], rel=1e-12)


@pytest.mark.parametrize("training", [{"optimizer": "adam"}, {"precision": "fp32"}, {"autocast_fp32_params": True}])
def test_16bit_parameters_without_master_weights_need_torchs_adam_on_a_16bit_run(training):
    with pytest.raises(ScenarioError, match="training.master_weights"):
        _fsdp(master_weights=False, **training)


def test_a_checkpoint_without_master_weights_is_the_parameters_and_their_two_moments():
    """checkpoint_bytes saves what the ranks hold for the optimizer: bf16 parameters and Adam's two bf16 moments,
    2 + 2 + 2 = 6 bytes a parameter (torch.optim.Adam's state is zeros_like(param)), against 2 + 12 = 14 with fp32
    master weights and moments."""
    with_master, without = _fsdp(), _fsdp(master_weights=False)
    assert [reliability.checkpoint_bytes(s) / s.model.params for s in (with_master, without)] == \
        pytest.approx([14.0, 6.0], rel=1e-12)


@pytest.mark.parametrize("precision", ["fp32", "tf32"])
def test_16bit_logits_are_refused_on_an_fp32_run(precision):
    """An fp32 or tf32 run's logits are fp32: torch_16bit would halve them (review of round 29)."""
    with pytest.raises(ScenarioError, match="training.logits_memory"):
        _fsdp(precision=precision, logits_memory="torch_16bit")
