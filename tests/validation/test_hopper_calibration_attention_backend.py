"""Which attention kernel each Hopper calibration series ran, and that the model charges that kernel (round 29).

docs/calibration/round-29.md, "Round 29: which attention kernel the Hopper calibration rows ran".

Transformer Engine's backend choice, as its ``get_attention_backend`` makes it (transformer_engine/pytorch/
attention.py, the stored TE 1.x copy of about 1.11; TE 1.2's release notes for the Hopper preference before that):
- ``NVTE_FLASH_ATTN`` and ``NVTE_FUSED_ATTN`` (both default 1) switch FlashAttention and FusedAttention (cuDNN) off;
- both need bf16 or fp16 and compute capability 8.0+; FlashAttention needs a head dim that is a multiple of 8 and at
  most 256; cuDNN's arbitrary-sequence-length sub-backend (1) runs the causal self-attention of these rows (head dim
  128, sequences 2,048-8,192, no bias, no dropout, no sliding window);
- a deterministic run (``NVTE_ALLOW_NONDETERMINISTIC_ALGO=0``, default 1) drops that sub-backend only below sm90 or
  cuDNN 8.9.5;
- with both left and sub-backend 1, on sm90 and later FlashAttention is disabled "to give FusedAttention preference
  on Hopper+ for performance reasons". In TE 1.6-1.10 FlashAttention is the flash-attn package, FlashAttention-2.

What each recipe set (the run's environment):
- Megatron-Core r0.8.0's H100 table (NVIDIA/Megatron-LM README, July 2024): no attention variable stated, TE's
  defaults;
- GPT-3 175B (NVIDIA/dgxc-benchmarking v24.11.1 nemo_megatron/launch.sh, NeMo 24.05, TE 1.6): ``NVTE_FUSED_ATTN=0``;
- Llama 3.1 8B (dgxc-benchmarking llama3.1/configure.sh for the 24.09 container, TE 1.10): ``NVTE_FLASH_ATTN=0``,
  ``NVTE_FUSED_ATTN=1``.

The model's kernels: ``flash2`` is FlashAttention-2's own H100 curve (efficiency.yaml attention.flash2), ``flash`` on
Hopper is cuDNN's (the unmasked curve times cuDNN's causal loss, attention.causal_loss). The cuDNN series predate
cuDNN 9.4.0, the first release after 9.0 with a Hopper attention speed-up in its notes ("Speedup may vary from 5% to
30%"; public by 2024-09-10, ROCm/HIPIFY#1645): the Megatron-Core table is of July 2024 and NeMo 24.09 sits on a
PyTorch 2.4.0a0 NGC base. They ran cuDNN 9.0-9.3, the release generation of the 2024 causal measurement, so they take
the 2024 kernel and not 9.19's.
"""

import pytest

from simcluster.spec import config
from simcluster.spec.model import TransformerSpec
from simcluster.studies import validation
from simcluster.workload import kernels
from simcluster.workload.ops import Shard, attention_core, shard_for

HOPPER = (9, 0)
# The environment each calibration series' recipe set (module docstring); scenario-name prefix -> variables
RECIPE_ENVIRONMENT = {
    "megatron-": {},
    "nemo2409-gpt3-": {"NVTE_FUSED_ATTN": "0"},
    "nemo2409-llama31-": {"NVTE_FLASH_ATTN": "0", "NVTE_FUSED_ATTN": "1"},
}
# Transformer Engine 1.x's backends as the model names their kernels on Hopper
MODEL_KERNEL = {"FlashAttention": "flash2", "FusedAttention": "flash"}


def te_backend(environment: dict[str, str], capability: tuple[int, int], precision: str, head_dim: int,
               deterministic: bool = False) -> str:
    """The backend Transformer Engine 1.x selects for causal self-attention without bias, dropout or sliding window
    (the module docstring's rules)."""
    flash = environment.get("NVTE_FLASH_ATTN", "1") != "0"
    fused = environment.get("NVTE_FUSED_ATTN", "1") != "0"
    if precision not in ("bf16", "fp16") or capability < (8, 0):
        return "UnfusedDotProductAttention"
    flash = flash and head_dim % 8 == 0 and head_dim <= 256
    fused = fused and head_dim % 8 == 0 and head_dim <= 128 and not (deterministic and capability < HOPPER)
    if flash and fused and capability >= HOPPER:
        flash = False
    return "FlashAttention" if flash else "FusedAttention" if fused else "UnfusedDotProductAttention"


def hopper_calibration_rows() -> list[str]:
    return [case["scenario"] for case in validation.cases()
            if config.load(case["scenario"]).cluster.gpu.name.startswith("h100")]


def recipe_environment(name: str) -> dict[str, str]:
    (environment,) = [env for prefix, env in RECIPE_ENVIRONMENT.items() if name.startswith(prefix)]
    return environment


def test_every_hopper_calibration_row_has_one_stated_recipe():
    """Each Hopper calibration row falls under exactly one recipe (``recipe_environment`` unpacks one match)."""
    rows = hopper_calibration_rows()
    assert rows
    assert all(isinstance(recipe_environment(name), dict) for name in rows)


@pytest.mark.parametrize("name", hopper_calibration_rows())
def test_the_model_runs_the_kernel_transformer_engine_selected(name):
    scenario = config.load(name)
    backend = te_backend(recipe_environment(name), HOPPER, scenario.training.precision, scenario.model.d_head)
    assert MODEL_KERNEL[backend] == scenario.training.attention


@pytest.mark.parametrize("environment, expected", [({}, "FusedAttention"),
                                                   ({"NVTE_FUSED_ATTN": "0"}, "FlashAttention"),
                                                   ({"NVTE_FLASH_ATTN": "0"}, "FusedAttention"),
                                                   ({"NVTE_FLASH_ATTN": "0", "NVTE_FUSED_ATTN": "0"},
                                                    "UnfusedDotProductAttention")])
def test_the_selection_rules_on_hopper_at_head_dim_128(environment, expected):
    assert te_backend(environment, HOPPER, "bf16", 128) == expected


def test_ampere_keeps_flash_attention_and_large_heads_leave_cudnn_1x():
    """The preference is Hopper's: on A100 both backends available leave FlashAttention; a head dim above TE 1.x's
    cuDNN limit of 128 leaves FlashAttention on Hopper; a deterministic run keeps cuDNN on Hopper only."""
    assert te_backend({}, (8, 0), "bf16", 128) == "FlashAttention"
    assert te_backend({}, HOPPER, "bf16", 256) == "FlashAttention"
    assert te_backend({"NVTE_FLASH_ATTN": "0"}, (8, 0), "bf16", 128, deterministic=True) == \
        "UnfusedDotProductAttention"
    assert te_backend({}, HOPPER, "bf16", 128, deterministic=True) == "FusedAttention"


def _causal_shares(scenario: config.Scenario, cudnn_release: str | None) -> tuple[float, float]:
    shard = shard_for(scenario)
    spec = TransformerSpec(layers=1, hidden=scenario.model.hidden, heads=scenario.model.heads, vocab=32000,
                           dropout=False, max_seq_len=scenario.training.seq_len)
    (forward,), (backward,) = attention_core(spec, Shard(seq_len=shard.seq_len, micro_batch=1, tp=shard.tp,
                                                         cp=shard.cp, attention=shard.attention, precision="bf16",
                                                         cudnn_release=cudnn_release))
    gpu = scenario.cluster.gpu.name
    return kernels.causal_share(forward, gpu, 238), kernels.causal_share(backward, gpu, 238)


@pytest.mark.parametrize("name", [row for row in hopper_calibration_rows()
                                  if config.load(row).training.attention == "flash"])
def test_the_cudnn_rows_take_the_2024_causal_kernel(name):
    """Their containers name no cuDNN release (shard_for gives None: data/mcore_versions.yaml lists 25.09 on), so
    they keep the 2024 kernel; the 9.19 kernel would lose less at their key lengths (4,096, or the cp-2 ring's)."""
    scenario = config.load(name)
    assert shard_for(scenario).cudnn_release is None
    measured_2024 = _causal_shares(scenario, None)
    newer = _causal_shares(scenario, "9.19.1")
    assert all(n > m for n, m in zip(newer, measured_2024, strict=True))
