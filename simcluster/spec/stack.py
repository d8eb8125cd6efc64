"""The software stack a scenario describes, read from its config (not its name): the family a published run's
framework belongs to, as the validation harness groups its runs (docs/calibration/round-22.md "Round 22: what the
held-out error tracks": the held-out error tracks whether a run's stack has calibration runs more than any other
feature).

The config keys that tell the stacks apart, first match wins:

- ``parallelism.pipeline_engine: deepspeed``: DeepSpeed's pipeline engine (Megatron-DeepSpeed, MT-NLG, BLOOM);
- ``training.optimizer: megatron2020 / megatron2021``: Megatron-LM's fp16 optimizer wrapper of those releases;
- ``parallelism.zero_stage: 3`` with ``training.optimizer: decoupled_adamw``: llm-foundry's FSDP with Composer's
  decoupled AdamW (the MPT runs);
- ``training.logits_memory: torch_fp32`` or ``torch_16bit`` (torch's loss on the whole logits, torch.distributed
  pipelining): torchtitan and the PyTorch-native stacks like it (NeMo AutoModel);
- Megatron's pipeline engine without 2020-21 local DDP (``Parallelism.megatron_core``) but not Megatron-Core's
  optimizer, loss memory and fp8 (``Scenario.megatron_core``): flash-attention's GPT training scripts (PyTorch AdamW);
- Megatron-Core with its unfused attention (``training.attention: naive``): Megatron-LM 2022-23 (A100);
- else Megatron-Core / NeMo with Transformer Engine 1.x or 2.x (``parallelism.te_version``).

A scenario none of these describe is ``other``. The finer release (NeMo 24.07 or 25.11) is the validation source's.
"""

from __future__ import annotations

from simcluster.spec.config import TORCH_LOGITS

# The families in words, as the expected-error card names them.
NAMES = {
    "deepspeed-pipeline": "DeepSpeed pipeline engine",
    "megatron-lm-2020": "Megatron-LM 2020",
    "megatron-lm-2021": "Megatron-LM 2021",
    "llm-foundry-fsdp": "llm-foundry FSDP",
    "torchtitan": "torchtitan",
    "flash-attn-gpt": "flash-attention GPT",
    "megatron-lm-2022-23": "Megatron-LM 2022-23",
    "mcore-te1": "Megatron-Core with TE 1.x",
    "mcore-te2": "Megatron-Core with TE 2.x",
    "other": "another stack",
}


def family(scenario) -> str:
    """The stack family of a resolved scenario (see the module doc): one of ``NAMES``."""
    p, t = scenario.parallelism, scenario.training
    if p.pipeline_engine == "deepspeed":
        return "deepspeed-pipeline"
    if t.optimizer.startswith("megatron20"):
        return f"megatron-lm-{t.optimizer.removeprefix('megatron')}"
    if p.zero_stage == 3 and t.optimizer == "decoupled_adamw":
        return "llm-foundry-fsdp"
    if t.logits_memory in TORCH_LOGITS:
        return "torchtitan"
    if not p.megatron_core:
        return "other"
    if not scenario.megatron_core:
        return "flash-attn-gpt"
    if t.attention == "naive":
        return "megatron-lm-2022-23"
    return f"mcore-te{p.te_version}"


def name(stack: str) -> str:
    """The family in words ('llm-foundry FSDP'); an unknown family's id as it is."""
    return NAMES.get(stack, stack)
