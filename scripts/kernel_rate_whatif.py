"""Validation rows with every fused attention kernel slower, or the sustained clock lower, than the model has them
(issue 15; docs/calibration/round-35.md "Round 35: Llama 3 8B on H100, calibration against held out"). A diagnostic:
nothing is fitted, written or kept; the model's own numbers are restored after each setting.

    PYTHONPATH=. python scripts/kernel_rate_whatif.py ROW [ROW ...] [--attention 1,1.2,1.5] [--clock 1,0.95]

For each attention factor K (>= 1) and clock factor F (0 < F <= 1), every row (a bundled calibration or held-out
validation case, simulated as ``simcluster validate`` runs it) is printed with its simulated step and signed error:

- K divides the achievable fraction of every fused attention kernel, forward and backward
  (``workload.kernels.attention_efficiency``): each attention kernel takes K times its time (the what-if of an
  attention cost the model leaves out, e.g. attention dropout inside cuDNN's or FlashAttention's kernel, which the
  model does not charge);
- F multiplies the sustained clock (``workload.kernels.clock_ratio``) of every kernel on every GPU: a GPU running
  slower than the model's sustained clock (power cap, clocks), which no FlagPerf file states.

A row's BF16 / FP8 step ratio under each setting is the quotient of its two printed steps. Default factors: 1.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from simcluster.core import script_entry
from simcluster.core.errors import ScenarioError
from simcluster.studies import validation
from simcluster.workload import kernels

MAX_ATTENTION = 10.0


@contextmanager
def rates(attention: float = 1.0, clock: float = 1.0) -> Iterator[None]:
    """Attention kernels ``attention`` times slower and the sustained clock ``clock`` times the model's, inside the
    block; the model's own functions are put back on leaving it, also on an error."""
    fraction, ratio = kernels.attention_efficiency, kernels.clock_ratio

    def slower_attention(op, gpu_name):
        value, executed = fraction(op, gpu_name)
        return value / attention, executed

    kernels.attention_efficiency = slower_attention
    kernels.clock_ratio = lambda gpu_name: ratio(gpu_name) * clock
    try:
        yield
    finally:
        kernels.attention_efficiency, kernels.clock_ratio = fraction, ratio


def factors(text: str, name: str, low: float, high: float, low_open: bool = False) -> list[float]:
    """Comma-separated factors within [low, high] ((low, high] with ``low_open``); anything else is one line."""
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        values = []
    if not values or any(not (low < v <= high if low_open else low <= v <= high) for v in values):
        bound = f"({low:g}, {high:g}]" if low_open else f"[{low:g}, {high:g}]"
        raise ScenarioError(name, f"comma-separated factors in {bound}, got {text!r}")
    return values


def rows(names: list[str]) -> list[dict]:
    """The validation cases of ``names``, every name checked before the first simulation: none, an unknown or a
    repeated name is a ScenarioError."""
    if not names:
        raise ScenarioError("scenario", "no validation row given (see --help)")
    found = [validation.named_case(n) for n in names]
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        raise ScenarioError("scenario", f"{repeated[0]}: given twice; each row is reported once")
    return found


def main(argv: list[str]) -> int:
    parser = script_entry.Parser(prog="kernel_rate_whatif.py", description=__doc__, allow_abbrev=False,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="*", metavar="ROW", help="a calibration or held-out validation row")
    parser.add_argument("--attention", default="1", metavar="K,K,...",
                        help=f"attention kernels K times slower, 1 <= K <= {MAX_ATTENTION:g} (default 1)")
    parser.add_argument("--clock", default="1", metavar="F,F,...",
                        help="the sustained clock times F, 0 < F <= 1 (default 1)")
    args = parser.parse_args(argv)   # an option given twice: the Parser's one line (script_entry._StoreOnce)
    attention = factors(args.attention, "--attention", 1.0, MAX_ATTENTION)
    clock = factors(args.clock, "--clock", 0.0, 1.0, low_open=True)
    cases = rows(args.rows)   # every name checked before the first simulation
    for k, f in itertools.product(attention, clock):
        with rates(k, f):
            for case in cases:
                run = validation.run_case(case)
                print(f"attention x{k:g} clock x{f:g}  {case['scenario']:40s} {run.step_time_s:10.4f} s "
                      f"{run.error:+.2%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
