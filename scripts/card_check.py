"""How well the expected-error card (simcluster/outcomes/accuracy_card.py) anticipates a held-out run it has not seen:
each held-out run of a snapshot gets the card built from every other run, with and without matching on the stack
(docs/calibration/round-22.md "Round 22: the expected-error card names the stack"). Analysis only: nothing is written.

    PYTHONPATH=. python scripts/card_check.py [simcluster/data/accuracy.yaml]

Per basis rule, over the held-out runs: the median and mean of | |error| - the card's median |error| |, the median of
| error - the card's mean signed error |, how often the card's mean error has the run's sign, how often |error| is
within the card's max, and how many cards matched on the stack; then the stack row's signed median (held-out runs on
stacks of the same standing, calibrated or not) as a prediction of the signed error. Error sign as ``validate``:
simulated / published throughput - 1. A snapshot without stacks (written before round 22): one line, exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import yaml

from simcluster.core import inputs, script_entry
from simcluster.core.errors import ScenarioError, one_line
from simcluster.outcomes import accuracy_card


def leave_one_out(runs: list[dict], calibrated: list[str] | None) -> dict:
    """The card of each held-out run from the other runs (``calibrated`` None: the rule without the stack; else the
    stack-first basis, whatever ``accuracy_card.MATCH_STACK`` is)."""
    held = [r for r in runs if r["set"] == "held-out"]
    spread, signed, sign, inside, by_stack, coverage = [], [], [], [], 0, []
    for run in held:
        others = [r for r in runs if r is not run]
        card = accuracy_card.card_of(run, others, calibrated=calibrated, match_stack=calibrated is not None)
        figures = card["held_out"]
        spread.append(abs(abs(run["error"]) - figures["median_abs_error"]))
        signed.append(abs(run["error"] - figures["mean_error"]))
        sign.append(bool(np.sign(figures["mean_error"]) == np.sign(run["error"])))
        inside.append(abs(run["error"]) <= figures["max_abs_error"])
        by_stack += "stack" in card["matched_on"]
        if card["stack_coverage"]:
            coverage.append(abs(run["error"] - card["stack_coverage"]["alike_stacks_held_out"]["median_error"]))
    return {"runs": len(held), "median_spread": float(np.median(spread)), "mean_spread": float(np.mean(spread)),
            "median_signed": float(np.median(signed)), "sign_right": sum(sign), "within_max": sum(inside),
            "stack_matched": by_stack,
            "coverage_median_signed": float(np.median(coverage)) if coverage else None}


DEFAULT_SNAPSHOT = Path(__file__).resolve().parents[1] / "simcluster" / "data" / "accuracy.yaml"


def main(argv: list[str]) -> int:
    parser = script_entry.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("snapshot", nargs="?", type=Path, default=DEFAULT_SNAPSHOT,
                        help="an accuracy snapshot (accuracy_tables.py --write-data); default the bundled one")
    path = parser.parse_args(argv).snapshot
    try:
        # read_text: a regular file within the fabric files' bound (round 33: a FIFO waited forever, /dev/zero
        # filled memory)
        text = inputs.read_text(path, inputs.MAX_FABRIC_BYTES, "accuracy snapshot")
        data = accuracy_card.checked(yaml.safe_load(text), str(path))
    except ScenarioError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())   # a YAML error spans lines: one line
        print(f"error: {path}: cannot be read ({reason})", file=sys.stderr)
        return 2
    except accuracy_card.SnapshotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not accuracy_card.knows_stacks(data):
        print(f"error: {path}: calibrated_stacks: missing (a snapshot written before round 22)", file=sys.stderr)
        return 2
    for label, calibrated in (("generation, precision, MoE (round 20)", None),
                              ("stack first (round 22)", data["calibrated_stacks"])):
        r = leave_one_out(data["runs"], calibrated)
        line = (f"{label}: {r['runs']} held-out runs; | |error| - card median | median {r['median_spread']:.2%}, mean "
                f"{r['mean_spread']:.2%}; | error - card mean | median {r['median_signed']:.2%}; sign right "
                f"{r['sign_right']}; |error| <= card max {r['within_max']}; matched on the stack {r['stack_matched']}")
        if r["coverage_median_signed"] is not None:
            line += f"; | error - stack row's signed median | median {r['coverage_median_signed']:.2%}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
