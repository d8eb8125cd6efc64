"""Validation rows written with the scenario contract's keys only, against the rows as bundled.

A tool outside the project writes a published run with the scenario keys every simcluster release keeps (cluster,
model, seq_len, batch sizes, precision, recompute, tp/pp/dp/cp/ep/etp, schedule, virtual stages, sequence
parallelism, ZeRO stage): everything else takes simcluster's defaults (docs/scenario.md, "Framework defaults").
This prints, for each calibration and held-out row whose scenario name contains one of the patterns, the error of
the bundled scenario and of its contract-only twin (error = simulated / published throughput - 1), and the keys the
twin drops. An inline model keeps the contract's inline keys only (``MODEL_KEYS``; a preset name stays a name): the
keys it drops are listed as ``model.KEY``.

    python scripts/contract_only.py nemo2409 nemo2407 nemotron4

``--each`` adds, per dropped key, the error of the bundled scenario without that key alone and of the twin with that
key alone put back. ``--attribute`` adds, per dropped key, the twin's step time with that key alone put back and its
change from the twin's (positive: the bundled value makes the step slower than the default does), and under them the
sum of those changes against the bundled-minus-twin change (what is left is the keys' interplay).

A key that makes an invalid scenario alone (``local_ddp: flattened`` without its fp16 optimizer) is put back, or left
out, together with the other dropped keys its validation needs (printed ``key + partner``, ``first_valid``); where
none do, the line says ``(invalid alone: <the validation error>)`` and the table goes on. A twin that is invalid
without some dropped key (an inline MoE model's ``moe``: ``ep`` needs it, and the contract names an MoE model only as
a preset) keeps it, said on its row.
"""

from __future__ import annotations

import copy
import sys

from simcluster.core import catalog, script_entry
from simcluster.core.errors import ScenarioError
from simcluster.engine import simulate
from simcluster.spec import config
from simcluster.studies import validation

TRAINING_KEYS = {"seq_len", "global_batch_size", "micro_batch_size", "precision", "activation_recompute"}
PARALLELISM_KEYS = {"tp", "pp", "dp", "cp", "ep", "etp", "schedule", "virtual_stages", "sequence_parallel",
                    "zero_stage"}
MODEL_KEYS = {"layers", "hidden", "heads", "kv_heads", "ffn_hidden", "vocab"}  # DESIGN.md: an inline model's keys
MODEL = "model."  # the prefix of a dropped inline-model key


def contract_only(raw: dict) -> tuple[dict, list[str]]:
    """The scenario dict with the training, parallelism and inline-model keys outside the contract dropped, and those
    keys (an inline model's as ``model.KEY``)."""
    data = copy.deepcopy(raw)
    data["training"] = {k: v for k, v in raw["training"].items() if k in TRAINING_KEYS}
    data["parallelism"] = {k: v for k, v in raw["parallelism"].items() if k in PARALLELISM_KEYS}
    dropped = sorted(set(raw["training"]) - TRAINING_KEYS) + sorted(set(raw["parallelism"]) - PARALLELISM_KEYS)
    if isinstance(raw.get("model"), dict):
        data["model"] = {k: v for k, v in raw["model"].items() if k in MODEL_KEYS}
        dropped += [MODEL + k for k in sorted(set(raw["model"]) - MODEL_KEYS)]
    return data, dropped


def section(raw: dict, key: str) -> tuple[str, str]:
    """The scenario section ("training", "parallelism" or "model") that states ``key``, and its name there."""
    if key.startswith(MODEL):
        return "model", key[len(MODEL):]
    return ("training" if key in raw["training"] else "parallelism"), key


def one_key(raw: dict, twin: dict, key: str | list[str]) -> tuple[dict, dict]:
    """The bundled scenario dict without ``key`` alone, and the contract twin with ``key`` alone put back (a list of
    keys: without, and with, those keys together)."""
    without, with_key = copy.deepcopy(raw), copy.deepcopy(twin)
    for one in [key] if isinstance(key, str) else key:
        where, name = section(raw, one)
        del without[where][name]
        with_key[where][name] = raw[where][name]
    return without, with_key


def first_valid(build, keys: list[str], candidates: list[str], source: str) -> tuple[list[str], config.Scenario | str]:
    """``keys`` and the valid scenario ``build(keys)`` makes, else ``keys`` with the fewest ``candidates`` that make it
    valid, found greedily (first one candidate that makes it valid, else the first that changes the validation error,
    up to three rounds); if none does, ``keys`` and the one-line validation error of ``build(keys)``."""
    chosen, first = list(keys), None

    def attempt(keys: list[str]) -> config.Scenario | str:
        try:
            return config.from_dict(build(keys), source=source)
        except ScenarioError as err:
            return str(err)

    for _ in range(3):
        found = attempt(chosen)
        if not isinstance(found, str):
            return chosen, found
        first = first or found
        tries = {other: attempt(chosen + [other]) for other in candidates if other not in chosen}
        valid = next((other for other, got in tries.items() if not isinstance(got, str)), None)
        if valid is not None:
            return chosen + [valid], tries[valid]
        progress = next((other for other, got in tries.items() if got != found), None)
        if progress is None:
            break
        chosen.append(progress)
    return list(keys), first


def valid_variant(raw: dict, twin: dict, key: str, dropped: list[str], source: str,
                  which: int) -> tuple[list[str], config.Scenario | str]:
    """The keys and the valid scenario of ``one_key``'s variant ``which`` (0: bundled without, 1: twin with) for
    ``key``: ``key`` alone, else with the other dropped keys that its validation needs (``first_valid``); else
    ``[key]`` and the one-line validation error of ``key`` alone."""
    return first_valid(lambda keys: one_key(raw, twin, keys)[which], [key], [k for k in dropped if k != key], source)


def valid_twin(raw: dict, source: str) -> tuple[dict, list[str], list[str], config.Scenario | str]:
    """The contract twin, the keys it drops, the dropped keys it keeps because it is invalid without them (an MoE
    model's ``model.moe`` that ``parallelism.ep`` needs: the contract can name an MoE model only as a preset) and its
    scenario (or the validation error of the twin without them)."""
    twin, dropped = contract_only(raw)
    kept, scenario = first_valid(lambda keys: one_key(raw, twin, keys)[1], [], dropped, source)
    if kept:
        twin = one_key(raw, twin, kept)[1]
        dropped = [k for k in dropped if k not in kept]
    return twin, dropped, kept, scenario


def label(keys: list[str]) -> str:
    return " + ".join(keys)


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
    total, partnered = 0.0, []
    for key in dropped:
        keys, scenario = valid_variant(raw, twin, key, dropped, name, 1)
        if isinstance(scenario, str):
            print(f"{'':11}   + {key:40} (invalid alone: {scenario})", flush=True)
            continue
        with_key = error_and_step(case, scenario)[1]
        if len(keys) > 1:   # put back with partners that have rows of their own: summing it would count them twice
            partnered.append(label(keys))
        else:
            total += with_key / twin_s - 1
        print(f"{'':11}   + {label(keys):40} {with_key:8.4f} s ({with_key / twin_s - 1:+6.1%} step time)", flush=True)
    left_out = f"; rows with partners left out: {', '.join(partnered)}" if partnered else ""
    print(f"{'':11}   {'sum of the one-key changes':42} {total:+8.1%} "
          f"(bundled {bundled_s / twin_s - 1:+.1%}{left_out})")


def main(argv: list[str] | None = None) -> int:
    parser = script_entry.Parser(description=__doc__.splitlines()[0])
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
        twin, dropped, kept, twin_scenario = valid_twin(raw, name)
        bundled, bundled_s = error_and_step(case, config.from_dict(raw, source=name))
        if isinstance(twin_scenario, str):
            print(f"{kind:11} {name:44} {bundled:+8.1%} {'invalid':>9}  (contract twin: {twin_scenario})", flush=True)
            continue
        contract, twin_s = error_and_step(case, twin_scenario)
        keeps = f"; kept, the twin is invalid without: {' + '.join(kept)}" if kept else ""
        print(f"{kind:11} {name:44} {bundled:+8.1%} {contract:+9.1%}  {', '.join(dropped) or '-'}{keeps}", flush=True)
        for key in dropped if args.each else ():
            (keys_without, without), (keys_with, with_key) = (valid_variant(raw, twin, key, dropped, name, which)
                                                              for which in (0, 1))
            if isinstance(without, str) or isinstance(with_key, str):
                print(f"{'':11}   {key:42} (invalid alone: {without if isinstance(without, str) else with_key})",
                      flush=True)
                continue
            without, with_key = error(case, without), error(case, with_key)
            print(f"{'':11}   {key:42} {without:+8.1%} {with_key:+9.1%}  "
                  f"(bundled without {label(keys_without)} {without - bundled:+.1%}, "
                  f"twin with {label(keys_with)} {with_key - contract:+.1%})", flush=True)
        if args.attribute and dropped:
            attribute(case, name, raw, twin, dropped, bundled_s, twin_s)
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
