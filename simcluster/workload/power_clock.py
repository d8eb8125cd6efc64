"""The tensor-core clock under the power cap from how much of the time a GPU draws tensor-core power (issue 15).

A board at its power cap holds its time-averaged power at the cap (the controller acts over milliseconds: a B200
keeps its full clock for about 5 ms of back-to-back attention kernels, flashinfer-ai/flashinfer#2899). Over a
block of kernels of tensor-core time T (at the clock ``f``), other kernels' time O (HBM-bound, elementwise) and
idle gaps G:

    P_cap (T + O + G) = P_idle (T + O + G) + A (f / f_cap)^3 T + B O

with f_cap the measured clock of a saturated tensor-core stream (efficiency.yaml ``clock_ratio``, duty 1), A =
P_cap - P_idle its dynamic power there (the cube law of ``blackwell_clock_source``: dynamic power ~ C V^2 f with
V ~ f, ``capped_clock``), B = ``low_power_share`` x A the dynamic power of a kernel that is not tensor-core bound,
and the gaps at idle power. The tensor-core time scales as 1/f: with r = f / f_cap and T = T_cap / r,

    r^3 - c r - 1 = 0,   c = ((A - B) O + A G) / (A T_cap)

one real root r >= 1 (duty 1: c = 0, r = 1, the measured capped clock), capped at the boost clock (r <= 1 /
clock_ratio: the short-benchmark clock the GEMM ceilings were measured at). ``clock_model: fixed`` (efficiency.yaml,
the default) keeps ``clock_ratio`` for every block.

Round 30's second study (``clock_multiplier``'s ``power`` and ``comm``, ``pooled_terms``): the tensor-core time
draws its precision's power (``tensor_power``: fp8 more per clock than bf16 on Hopper), collectives beside the
block draw ``comm_power_share`` of A over the window (the anchor 0.80 was read with communication running; a lone
GPU runs faster), and a block shorter than the power controller's window runs nearer the clock of the phases it
alternates with. The root may then lie below 1.
"""

from __future__ import annotations

import math

from simcluster.core import catalog, units
from simcluster.core.errors import ScenarioError, shown

CLOCK_MODELS = ("fixed", "duty_cycle")


def _table() -> dict:
    return catalog.load("efficiency")


def clock_model() -> str:
    """efficiency.yaml ``clock_model``: ``fixed`` (``clock_ratio`` for every block) or ``duty_cycle`` (this module)."""
    model = _table().get("clock_model", "fixed")
    if model not in CLOCK_MODELS:
        raise ScenarioError("efficiency.yaml clock_model", f"{model!r} is not one of {', '.join(CLOCK_MODELS)}")
    return model


def _number(path: str, value, low: float, high: float) -> float:
    number = units.finite_float(value)  # an integer past a float's range too (round 31: an OverflowError)
    if number is None or not low <= number <= high:
        raise ScenarioError(f"efficiency.yaml {path}", f"{shown(value)} is not a number in [{low:g}, {high:g}]")
    return number


def _mapping(path: str, value) -> dict:
    """``value`` (a table of efficiency.yaml, None for absent) as a mapping; anything else refused naming ``path``
    (round 31: a list or a string for ``power_clock`` or ``tensor_power`` was an AttributeError)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ScenarioError(f"efficiency.yaml {path}", f"{shown(value)} is not a mapping")
    return value


def _settings() -> dict:
    return _mapping("power_clock", _table().get("power_clock"))


def low_power_share() -> float:
    """Dynamic power of a kernel that does not run the tensor cores at full rate (HBM-bound, elementwise) over a
    saturated tensor-core stream's at the capped clock (efficiency.yaml ``power_clock.low_power_share``): a finite
    share in [0, 1] (such a kernel draws no more than the tensor cores' full rate), else refused naming the key."""
    return _number("power_clock.low_power_share", _settings().get("low_power_share"), 0.0, 1.0)


SHARE_KINDS = ("gemm", "attention")


def sustained_share(gpu_name: str, kind: str, kernel: str = "", clock_ratio: float = 1.0) -> float:
    """What a stream of ``kind`` kernels keeps of its burst throughput at the power cap, over ``clock_ratio``
    (efficiency.yaml ``sustained_share``: per GPU, ``default`` for the others; 1 for kinds not listed there): a
    finite positive number, else refused naming the key. A kind's entry may instead map kernel names (``Op.kernel``,
    e.g. the A100's FlashAttention-2 ``flash``) to shares, with ``default`` (1 if absent) for the kind's other
    kernels: the burst curves of one kind can come from benchmarks run at different clocks. A stream at the cap runs
    no faster than its burst: ``clock_ratio`` (the GPU's, kernels.clock_ratio) x the share is at most 1, and a kind
    not in ``SHARE_KINDS`` (a misspelt ``gemm``, which was ignored unsaid) is refused (round 33 review: 1e9 made
    every GEMM 10^9 times faster)."""
    if kind not in SHARE_KINDS:
        return 1.0
    table = _mapping("sustained_share", _table().get("sustained_share"))  # 0.9 here was a TypeError traceback
    key = gpu_name if gpu_name in table else "default"
    entry = table.get(key) or {}
    if not isinstance(entry, dict):
        raise ScenarioError(f"efficiency.yaml sustained_share.{key}", f"{entry!r} is not a mapping of kind to share")
    unknown = sorted(str(name) for name in entry if name not in SHARE_KINDS)
    if unknown:
        raise ScenarioError(f"efficiency.yaml sustained_share.{key}.{unknown[0]}",
                            f"not a kernel kind with a sustained share ({', '.join(SHARE_KINDS)})")
    share = entry.get(kind, 1.0)
    path = f"sustained_share.{key}.{kind}"
    if isinstance(share, dict):
        name = kernel if kernel in share else "default"
        share, path = share.get(name, 1.0), f"{path}.{name}"
    number = units.finite_float(share)
    if number is None or number <= 0.0:
        raise ScenarioError(f"efficiency.yaml {path}", f"{shown(share)} is not a positive number")
    if number * clock_ratio > 1.0 + 1e-12:
        raise ScenarioError(f"efficiency.yaml {path}", f"{shown(share)} x the GPU's clock_ratio {clock_ratio:g} is "
                            f"above 1: a stream at the power cap faster than its burst (at most {1 / clock_ratio:.4g})")
    return number


def sustained_gemm_ceiling(gpu_name: str, precision: str) -> float | None:
    """The most ``gpu_name``'s GEMMs of ``precision`` were measured to sustain at its power cap, FLOP/s
    (efficiency.yaml ``sustained_gemm_ceiling_tflops``), or None where nothing was measured: a positive finite number,
    else refused naming the key."""
    table = _mapping("sustained_gemm_ceiling_tflops", _table().get("sustained_gemm_ceiling_tflops"))
    entry = _mapping(f"sustained_gemm_ceiling_tflops.{gpu_name}", table.get(gpu_name))
    if precision not in entry:
        return None
    return _number(f"sustained_gemm_ceiling_tflops.{gpu_name}.{precision}", entry[precision], 1e-9, 1e9) * 1e12


def capped_clock(reference_clock: float, power: float, reference_power: float) -> float:
    """The cube law: the clock at which a dynamic power ``power`` is drawn, from ``reference_clock`` at
    ``reference_power`` (dynamic power ~ C V^2 f, V ~ f over the DVFS range; efficiency.yaml
    ``blackwell_clock_source``)."""
    return reference_clock * (power / reference_power) ** (1.0 / 3.0)


def tensor_power(gpu_name: str, precision: str) -> float:
    """Dynamic power of a lone saturated tensor-core stream of ``precision`` at ``clock_ratio``, over tdp -
    idle_power (efficiency.yaml ``power_clock.tensor_power``: per GPU, ``default`` for the others; per precision,
    ``default`` for the others): 1 is the cube law's anchor (a lone stream at its cap runs at ``clock_ratio``)."""
    table = _mapping("power_clock.tensor_power", _settings().get("tensor_power"))
    key = gpu_name if gpu_name in table else "default"
    entry = _mapping(f"power_clock.tensor_power.{key}", table.get(key))
    name = precision if precision in entry else "default"
    return _number(f"power_clock.tensor_power.{key}.{name}", entry.get(name, 1.0), 0.1, 10.0)


def comm_power_share() -> float:
    """Dynamic power of communication kernels and links running beside compute, over tdp - idle_power
    (efficiency.yaml ``power_clock.comm_power_share``)."""
    return _number("power_clock.comm_power_share", _settings().get("comm_power_share", 0.0), 0.0, 0.9)


def comm_beside_compute() -> float:
    """Share of a training block's time with collectives in flight beside it (efficiency.yaml
    ``power_clock.comm_beside_compute``, 0 to 1)."""
    return _number("power_clock.comm_beside_compute", _settings().get("comm_beside_compute", 0.0), 0.0, 1.0)


def controller_window_s() -> float:
    """The power controller's averaging time (efficiency.yaml ``power_clock.controller_window_ms``), seconds."""
    return _number("power_clock.controller_window_ms", _settings().get("controller_window_ms", 0.0), 0.0, 1e3) / 1e3


def clock_multiplier(tensor_s: float, other_s: float, idle_s: float, ratio: float, share: float,
                     power: float = 1.0, comm: float = 0.0) -> float:
    """r = f / f_cap of a block with ``tensor_s`` of tensor-core-bound time at the capped clock (``ratio`` of the
    boost clock), ``other_s`` of other kernels and ``idle_s`` of gaps, ``share`` = B / A; ``power`` the tensor-core
    time's dynamic power at f_cap over A (``tensor_power``, time-weighted), ``comm`` the communication power drawn
    over the whole window, over A (``comm_power_share`` x ``comm_beside_compute``). The balance
    (1 - comm) (T_cap / r + O + G) = power T_cap r^2 + share O gives

        power r^3 - c r - d = 0,   c = ((d - share) O + d G) / T_cap,   d = 1 - comm

    (``power`` 1, ``comm`` 0: the module docstring's r^3 - c r - 1 = 0); one positive root (c may be negative),
    capped at 1 / ``ratio``. The terms must be finite and >= 0, ``power`` >= 0 and ``comm`` < 1 (an infinite or NaN
    term has no clock: refused, ValueError, not a NaN clock); no tensor-core time (a zero-duration block too): the
    boost clock, 1 / ``ratio``."""
    terms = (tensor_s, other_s, idle_s, power)
    if not (all(math.isfinite(t) and t >= 0.0 for t in terms) and 0.0 <= comm < 1.0 and 0.0 < ratio <= 1.0):
        raise ValueError(f"clock_multiplier: terms {terms}, comm {comm!r}, ratio {ratio!r} out of range")
    r_max = 1.0 / ratio
    if tensor_s <= 0.0:
        return r_max
    d = 1.0 - comm
    c = ((d - share) * other_s + d * idle_s) / tensor_s
    if power * r_max ** 3 - c * r_max - d <= 0.0:      # the cap does not bind at the boost clock
        return r_max
    r = r_max                                   # Newton from above the root: monotone (convex, rising there)
    for _ in range(100):
        step = (power * r ** 3 - c * r - d) / (3.0 * power * r * r - c)
        r -= step
        if abs(step) < 1e-13:
            break
    return min(r, r_max)


def pooled_terms(own: tuple[float, ...], pool: tuple[float, ...], duration_s: float, window_s: float
                 ) -> tuple[float, ...]:
    """A block's balance terms as the power controller sees them (``controller_window_s``): its own terms
    (per second of the block) mixed with those of the blocks it alternates with (``pool``, per second) with weight
    window / (window + duration) on the pool: a block much shorter than the window runs at the mix's clock, one
    much longer at its own (a first-order average of time constant ``window_s``; simplification)."""
    if window_s <= 0.0 or duration_s <= 0.0:
        return own
    w = window_s / (window_s + duration_s)
    return tuple((1.0 - w) * a + w * b for a, b in zip(own, pool, strict=True))


def duty_cycle(tensor_s: float, other_s: float, idle_s: float) -> float:
    """Share of a block's time the tensor cores are the bound: what the clock follows (reported, not used)."""
    total = tensor_s + other_s + idle_s
    return tensor_s / total if total > 0 else 0.0
