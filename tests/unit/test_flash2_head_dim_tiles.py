"""FlashAttention-2 runs a head dimension in the kernel compiled for the next head-dim tile (static_switch.h
HEADDIM_SWITCH: 32, 64, 96, 128, 160, 192, 224, 256) and computes the whole tile: executed FLOP scale by tile / d
(efficiency.yaml attention.flash2_head_dim_tiles)."""

import dataclasses

import pytest

from simcluster.workload import kernels
from simcluster.workload.ops import Op

A100, H100 = "a100-80gb-sxm", "h100-sxm"


def _attention(d: int, kernel: str = "flash", name: str = "attention") -> Op:
    heads, b, s = 2560 // d, 2, 8192
    flop = 4.0 * b * s * s * heads * d
    return Op(name, "attention", flop, 0.0, s, s, d, b * heads, kernel=kernel)


@pytest.mark.parametrize("d, tile", [(32, 32), (64, 64), (80, 96), (96, 96), (112, 128), (128, 128), (160, 160),
                                     (200, 224), (256, 256)])
def test_the_tile_is_the_smallest_compiled_head_dim_at_least_d(d, tile):
    assert kernels.head_dim_tile_ratio(_attention(d), A100) == pytest.approx(tile / d)
    assert kernels.head_dim_tile_ratio(_attention(d, "flash2"), H100) == pytest.approx(tile / d)


def test_only_flashattention_2_pads():
    op = _attention(80)
    assert kernels.head_dim_tile_ratio(op, H100) == 1.0      # the flash kernel on Hopper is FlashAttention-3's curve
    assert kernels.head_dim_tile_ratio(dataclasses.replace(op, kernel="flash_triton"), A100) == 1.0
    assert kernels.head_dim_tile_ratio(dataclasses.replace(op, kernel="naive"), A100) == 1.0


@pytest.mark.parametrize("name", ["attention", "attention_backward"])
def test_head_dim_80_takes_the_time_of_96_on_the_same_counted_flop(name):
    """Same sequence and counted FLOP: 32 heads of 80 run as 32 heads of 96 would, i.e. 96/80 of the time of the
    head-dim-128 layout (the curve has no head-dim term on A100)."""
    fraction_80, executed_80 = kernels.attention_efficiency(_attention(80, name=name), A100)
    fraction_128, executed_128 = kernels.attention_efficiency(_attention(128, name=name), A100)
    assert fraction_80 == fraction_128
    assert executed_80 / executed_128 == pytest.approx(96 / 80)
