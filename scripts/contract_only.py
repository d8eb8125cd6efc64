"""Validation rows written with the scenario contract's keys only, against the rows as bundled.

A tool outside the project writes a published run with the scenario keys every simcluster release keeps (cluster,
model, seq_len, batch sizes, precision, recompute, tp/pp/dp/cp/ep/etp, schedule, virtual stages, sequence
parallelism, ZeRO stage): everything else takes simcluster's defaults (docs/scenario.md, "Framework defaults").
This prints, for each calibration and held-out row whose scenario name contains one of the patterns, the error of
the bundled scenario and of its contract-only twin (error = simulated / published throughput - 1), and the keys the
twin drops.

    python scripts/contract_only.py nemo2409 nemo2407 nemotron4

``--each`` adds, per dropped key, the error of the bundled scenario without that key alone and of the twin with that
key alone put back. ``--attribute`` adds, per dropped key, the twin's step time with that key alone put back and its
change from the twin's (positive: the bundled value makes the step slower than the default does), and under them the
sum of those changes against the bundled-minus-twin change (what is left is the keys' interplay).
"""

from __future__ import annotations

import argparse
import copy

from simcluster.core import catalog
from simcluster.engine import simulate
from simcluster.spec import config
from simcluster.studies import validation

TRAINING_KEYS = {"seq_len", "global_batch_size", "micro_batch_size", "precision", "activation_recompute"}
PARALLELISM_KEYS = {"tp", "pp", "dp", "cp", "ep", "etp", "schedule", "virtual_stages", "sequence_parallel",
                    "zero_stage"}


def contract_only(raw: dict) -> tuple[dict, list[str]]:
    """The scenario dict with the training and parallelism keys outside the contract dropped, and those keys."""
    data = copy.deepcopy(raw)
    data["training"] = {k: v for k, v in raw["training"].items() if k in TRAINING_KEYS}
    data["parallelism"] = {k: v for k, v in raw["parallelism"].items() if k in PARALLELISM_KEYS}
    dropped = sorted(set(raw["training"]) - TRAINING_KEYS) + sorted(set(raw["parallelism"]) - PARALLELISM_KEYS)
    return data, dropped


def section(raw: dict, key: str) -> str:
    """The scenario section ("training" or "parallelism") that states ``key``."""
    return "training" if key in raw["training"] else "parallelism"


def one_key(raw: dict, twin: dict, key: str) -> tuple[dict, dict]:
    """The bundled scenario dict without ``key`` alone, and the contract twin with ``key`` alone put back."""
    where = section(raw, key)
    without, with_key = copy.deepcopy(raw), copy.deepcopy(twin)
    del without[where][key]
    with_key[where][key] = raw[where][key]
    return without, with_key


def error(case: dict, scenario: config.Scenario) -> float:
    return error_and_step(case, scenario)[0]


def error_and_step(case: dict, scenario: config.Scenario) -> tuple[float, float]:
    """The row's error (simulated / published throughput - 1) and the simulated step time in seconds."""
    key = "model_tflops_per_gpu" if case["metric"] == "model" else "hardware_tflops_per_gpu"
    summary = simulate(scenario, check_memory=False).summary
    return summary[key] / validation.published_tflops(case, scenario) - 1.0, summary["step_time_s"]


def attribute(case: dict, name: str, raw: dict, twin: dict, dropped: list[str], bundled_s: float,
              twin_s: float) -> None:
    """Per dropped key, the twin's step time with that key alone put back, against the twin's and the bundled one's."""
    print(f"{'':11}   {'step time: contract twin':42} {twin_s:8.4f} s, bundled {bundled_s:.4f} s "
          f"({bundled_s / twin_s - 1:+.1%})")
    total = 0.0
    for key in dropped:
        with_key = error_and_step(case, config.from_dict(one_key(raw, twin, key)[1], source=name))[1]
        total += with_key / twin_s - 1
        print(f"{'':11}   + {key:40} {with_key:8.4f} s ({with_key / twin_s - 1:+6.1%} step time)", flush=True)
    print(f"{'':11}   {'sum of the one-key changes':42} {total:+8.1%} (bundled {bundled_s / twin_s - 1:+.1%})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("patterns", nargs="+", help="parts of scenario names (e.g. nemo2409)")
    parser.add_argument("--each", action="store_true",
                        help="also, per dropped key: bundled without it alone, twin with it alone put back")
    parser.add_argument("--attribute", action="store_true",
                        help="also, per dropped key: the twin's step time with it alone put back, and its change")
    args = parser.parse_args(argv)
    rows = [(case, "calibration") for case in validation.cases()]
    rows += [(case, "held-out") for case in validation.held_out_cases()]
    rows = [(case, kind) for case, kind in rows if any(pattern in case["scenario"] for pattern in args.patterns)]
    if not rows:
        parser.error(f"no calibration or held-out row's scenario name contains {' or '.join(args.patterns)}")
    print(f"{'set':11} {'scenario':44} {'bundled':>8} {'contract':>9}  keys dropped")
    for case, kind in rows:
        name = case["scenario"]
        raw = catalog.load(f"scenarios/{name}")
        twin, dropped = contract_only(raw)
        (bundled, bundled_s), (contract, twin_s) = (error_and_step(case, config.from_dict(d, source=name))
                                                    for d in (raw, twin))
        print(f"{kind:11} {name:44} {bundled:+8.1%} {contract:+9.1%}  {', '.join(dropped) or '-'}", flush=True)
        for key in dropped if args.each else ():
            without, with_key = (error(case, config.from_dict(d, source=name)) for d in one_key(raw, twin, key))
            print(f"{'':11}   {key:42} {without:+8.1%} {with_key:+9.1%}  "
                  f"(bundled without it {without - bundled:+.1%}, twin with it {with_key - contract:+.1%})", flush=True)
        if args.attribute and dropped:
            attribute(case, name, raw, twin, dropped, bundled_s, twin_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
