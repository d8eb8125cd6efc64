"""CPU time, step time and chunk-hop events of ``--network chunk`` runs (round 27, docs/performance.md).

By default the three engine paths of tests/unit/test_speed_keeps_results.py that take about a second each with the
chunk model (``interleaved-cp-tp-overlap``, ``zero3-pp``, ``gpipe-zero2``); ``--layout ID`` adds a NeMo recipe layout
of tests/validation/test_nemo_recipe_layouts.py by its id (e.g. nemo2-llama3-8b-64k-32g-bf16: about 2 minutes).
Per run it prints the step time (repr: speed work must leave it the same float), the CPU seconds of the simulation
(``resource.getrusage``, user + system), the chunk-hop events kept (``StoreForwardNetwork.events``) and those the
event loop ran (kept plus those look-aheads ran and undid).

    python benchmarks/chunk_network.py [--layout ID ...]
"""

from __future__ import annotations

import importlib.util
import resource
import sys
from pathlib import Path

from simcluster.core import script_entry
from simcluster.core.errors import ScenarioError, unknown_name
from simcluster.engine import Simulation
from simcluster.network import store_forward
from simcluster.parallel import memory
from simcluster.spec import config

ROOT = Path(__file__).resolve().parents[1]


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(scenario: config.Scenario) -> tuple[float, float, int, int]:
    """(step time, CPU seconds, events kept, events run) of one chunk-model step."""
    ran = [0]
    original = store_forward.StoreForwardNetwork._run

    def counted(self, *args):
        events = original(self, *args)
        ran[0] += events
        return events

    store_forward.StoreForwardNetwork._run = counted
    try:
        started = _cpu_s()
        simulation = Simulation(scenario, "chunk")
        step_s = simulation.run(1).summary["step_time_s"]
        return step_s, _cpu_s() - started, simulation.model.events, ran[0]
    finally:
        store_forward.StoreForwardNetwork._run = original


def main(argv: list[str] | None = None) -> int:
    parser = script_entry.Parser(description=__doc__.splitlines()[0])   # usage errors in one line, exit 2
    parser.add_argument("--layout", action="append", default=[], help="a recipe layout id (repeatable)")
    args = parser.parse_args(argv)
    layouts = {name: data for name, data, _row in _module(ROOT / "tests" / "validation" /
                                                          "test_nemo_recipe_layouts.py").LAYOUTS} if args.layout else {}
    chosen = {}
    for name in args.layout:   # every id read (and its layout validated) before minutes of simulation
        if name not in layouts:
            parser.error(str(unknown_name("--layout", "recipe layout", name, layouts)))
        try:
            chosen[name] = config.from_dict(layouts[name], source=name)
            memory.check_fits(chosen[name])   # the memory model's refusal, before the other runs
        except ScenarioError as err:
            parser.error(f"--layout {name}: {err}")
    speed = _module(ROOT / "tests" / "unit" / "test_speed_keeps_results.py")
    cases = {name: speed.CASES[name][0]() for name in ("interleaved-cp-tp-overlap", "zero3-pp", "gpipe-zero2")}
    for name, scenario in {**cases, **chosen}.items():
        step_s, cpu_s, kept, ran = measure(scenario)
        print(f"{name}: step {step_s!r} s, cpu {cpu_s:.2f} s, chunk-hop events {kept:,} kept / {ran:,} run",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
