"""How far each scenario's blocks are from host-bound, with Transformer Engine's module calls on the host side
(workload/host_dispatch.py; docs/calibration/round-17.md "Round 17: host time per Transformer Engine module").

    python scripts/te_host_margin.py [SCENARIO ...]     (default: every calibration case)

Per scenario, over its model chunks' forward and backward blocks (``ChunkCost.forward_stream`` /
``backward_stream``, the block the host issues between pipeline steps): the device side (roofline + gap + idle after
host syncs), the host side with the torch-level dispatch alone (every launch, those of other streams included: the
scenario planned as plain PyTorch layers, ``host_dispatch.transformer_engine_layers`` off), the host side with the
module calls' excess, and the
largest host / device ratio (>= 1: host-bound). ``headroom/layer`` is how much more host time per layer would make
the block with the largest ratio host-bound (device minus host side, over its layers). A diagnostic: nothing is
fitted or written; held-out scenarios may be read, never tuned to.
"""

from __future__ import annotations

import argparse
import sys
from unittest import mock

from simcluster.core import catalog, script_entry
from simcluster.core.errors import ScenarioError
from simcluster.parallel import plan as plan_module
from simcluster.spec import config
from simcluster.workload import host_dispatch


def _collective_time(op: str, group: tuple[int, ...], size_bytes: float) -> float:
    return 0.0   # the blocks' kernels only: collectives are the engine's


def margins(name: str) -> tuple[str, float, float, float, float, float]:
    """(block, device s, host s torch-level, host s with modules, host/device, headroom per layer s) of the block
    of ``name`` closest to host-bound."""
    scenario = config.load(name)
    step = plan_module.plan(scenario, _collective_time)
    with mock.patch.object(host_dispatch, "transformer_engine_layers", lambda _: False):
        plain = plan_module.plan(scenario, _collective_time)   # the same kernels, no module excess
    best = None
    for index, (chunk, plain_chunk) in enumerate(zip(step.chunks, plain.chunks, strict=True)):
        layers = max(1, chunk.layers)
        for phase, block, plain_block in (("forward", chunk.forward_stream, plain_chunk.forward_stream),
                                          ("backward", chunk.backward_stream, plain_chunk.backward_stream)):
            if not block.kernels:
                continue
            device = block.device_bound_s()
            host = block.host_bound_s()
            torch_level = plain_block.host_bound_s()
            row = (f"chunk {index} {phase}", device, torch_level, host, host / device, (device - host) / layers)
            if best is None or row[4] > best[4]:
                best = row
    return best


def main(argv: list[str] | None = None) -> int:
    parser = script_entry.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*")
    args = parser.parse_args(argv)
    names = args.scenarios or [case["scenario"] for case in catalog.load("validation")["cases"]]
    print("scenario | block | device ms | host ms (torch dispatch) | host ms (+ TE modules) | host/device | "
          "headroom/layer ms")
    for name in names:
        try:
            block, device, torch_level, host, ratio, headroom = margins(name)
        except ScenarioError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"{name} | {block} | {device * 1e3:.2f} | {torch_level * 1e3:.2f} | {host * 1e3:.2f} | {ratio:.3f} | "
              f"{headroom * 1e3:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
