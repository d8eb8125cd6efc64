"""Megatron-Core's unfused rotary position embedding: the eager PyTorch kernels ``apply_rotary_pos_emb_bshd`` runs
when rope fusion is off (``training.rope_fusion: false``; Megatron-LM --no-rope-fusion), in place of the one fused
kernel a phase (``ops.layer_ops``'s ``rope`` op) that Apex's or Transformer Engine's fused RoPE runs.

Megatron-Core applies it to q and to k separately; per rotated tensor the forward is six tensor-sized kernels and
four on the [s, 1, 1, d] fp32 frequencies, the backward seven tensor-sized kernels, each a plain HBM-bound copy or
elementwise op (data/mcore_versions.yaml ``unfused_rope``: read in the megatron-core 0.9.0 wheel and counted with
torch.profiler on that code and its autograd graph). Fused, a phase moves the tensors once each way (2 elements a
tensor element); unfused the forward moves 12 and the backward 14, in 10 and 7 launches a tensor (0.8, 0.9). From 0.10
(``mscale_from``) cos and sin are each multiplied by ``mscale`` before their cast: 12 forward launches a tensor.
"""

from __future__ import annotations

from functools import cache

from simcluster.core import catalog
from simcluster.spec import config
from simcluster.spec.config import Scenario

FP32_BYTES = 4
Kernel = tuple[str, float, float]   # (name, FLOP, HBM bytes): a memory op for ops.layer_ops


@cache
def _table() -> dict:
    return catalog.load("mcore_versions")["unfused_rope"]


def runs(scenario: Scenario) -> bool:
    """Whether a run rotates q and k with Megatron-Core's eager RoPE: Megatron-Core, rotary positions, rope fusion
    off; not multi-latent attention (its rotary part is a slice of its heads, modelled with the fused kernel)."""
    m = scenario.model
    return (scenario.megatron_core and m.position == "rope" and m.mla is None
            and scenario.training.rope_fusion is False)


def release(scenario: Scenario) -> str | None:
    """The Megatron-Core release whose eager RoPE the run executes (``training.mcore_version``, resolved), or None
    where it does not run it (``runs``)."""
    return scenario.training.mcore_version if runs(scenario) else None


def multiplies_mscale(version: str) -> bool:
    """Whether a release's eager RoPE multiplies cos and sin by ``mscale`` before their cast (0.10 on)."""
    return config.mcore_release(version) >= config.mcore_release(_table()["mscale_from"])


def kernels(tensor_elements: list[float], freqs_elements: float, bytes_per_element: int,
            version: str) -> tuple[list[Kernel], list[Kernel]]:
    """(forward, backward) kernels of the eager RoPE over the rotated tensors (``tensor_elements``: q's and k's
    elements on this rank), each call turning the ``freqs_elements`` fp32 frequencies ([s, 1, 1, d]) into cos and
    sin in the tensors' dtype (``bytes_per_element``) again, scaled by mscale from 0.10 (``version``: the
    Megatron-Core release; their FLOP, a few per frequency, left at 0)."""
    table = _table()
    freqs = list(table["freqs_forward"])
    if multiplies_mscale(version):   # cos, mscale, cast, sin, mscale, cast
        freqs = [*freqs[:1], table["freqs_mscale"], *freqs[1:3], table["freqs_mscale"], *freqs[3:]]
    forward: list[Kernel] = []
    backward: list[Kernel] = []
    for elements in tensor_elements:
        forward += [(name, 0.0, (fp32 * FP32_BYTES + out * bytes_per_element) * freqs_elements)
                    for name, fp32, out in freqs]
        forward += [(name, flop * elements, moved * elements * bytes_per_element)
                    for name, moved, flop in table["tensor_forward"]]
        backward += [(name, flop * elements, moved * elements * bytes_per_element)
                     for name, moved, flop in table["tensor_backward"]]
    return forward, backward
