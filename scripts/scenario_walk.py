"""Walk from one validation row's scenario to another's one setting at a time: which setting moves the simulated step,
beside the published ratio of the two rows (docs/calibration/round-29.md, "Round 29: the Mixtral rows side by side").

    PYTHONPATH=. python scripts/scenario_walk.py mcore09-mixtral-8x22b-128-h100 moezoo-mixtral-8x22b-128-h100

The two scenarios are compared leaf by leaf (``differences``: cluster, model, training, parallelism, ...; the name,
description and the model's source text left out). Starting from the first row, each differing leaf is set to the
second row's value in turn (``--order PATH,PATH`` first, the rest in the listed order) and the scenario simulated;
a setting the scenario refuses alone (a layout that needs two keys changed together) is carried into the next one.
The last scenario is the second row's own settings, so the walk's steps sum to the two rows' simulated difference
(``walk`` checks it). A diagnostic: nothing is fitted or written.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable

from simcluster.core.errors import ScenarioError
from simcluster.engine import simulate
from simcluster.spec import config
from simcluster.studies import grid, validation

# Leaves that name or describe a scenario rather than set it
IGNORED = frozenset({"name", "description", "model.source"})


def flatten(data: dict, prefix: str = "") -> dict[str, object]:
    """The leaves of a nested scenario dict by dotted path."""
    out: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def differences(a: dict, b: dict) -> list[tuple[str, object, object]]:
    """(path, value in ``a``, value in ``b``) for every leaf that differs, sorted by path; a leaf only one side has
    is absent (None) on the other."""
    fa, fb = flatten(a), flatten(b)
    paths = sorted(p for p in set(fa) | set(fb) if p not in IGNORED and fa.get(p) != fb.get(p))
    return [(p, fa.get(p), fb.get(p)) for p in paths]


def with_leaf(data: dict, path: str, value: object) -> dict:
    """A copy of ``data`` with the leaf at ``path`` set (``grid.set_path``, as ``sweep --vary`` sets one; None:
    removed)."""
    out = copy.deepcopy(data)
    if value is not None:
        grid.set_path(out, path, value)
        return out
    *parents, leaf = path.split(".")
    node = out
    for key in parents:
        node = node.get(key) or {}
    node.pop(leaf, None)
    return out


def ordered(diffs: list[tuple[str, object, object]], first: list[str]) -> list[tuple[str, object, object]]:
    """``diffs`` with the paths of ``first`` at the front, in that order."""
    rank = {path: i for i, path in enumerate(first)}
    return sorted(diffs, key=lambda d: rank.get(d[0], len(rank)))


def walk(row: dict, twin: dict, step_s: Callable[[dict], float], first: list[str] | None = None) -> list[tuple]:
    """[(paths changed, step s)]: the row, then each setting of ``twin`` applied in turn (``step_s`` simulates a
    scenario dict; one ``config.from_dict`` refuses is carried into the next). Ends at the twin's settings."""
    state, pending = dict(row), []
    rows = [((), step_s(state))]
    for path, _, value in ordered(differences(row, twin), first or []):
        state = with_leaf(state, path, value)
        pending.append(path)
        try:
            config.from_dict(state)
        except ScenarioError:
            continue
        rows.append((tuple(pending), step_s(state)))
        pending = []
    if pending:
        raise ScenarioError("twin", f"the walk ends on settings the scenario refuses: {', '.join(pending)}")
    return rows


def main(argv: list[str]) -> int:
    first: list[str] = []
    if "--order" in argv:
        i = argv.index("--order")
        first = argv[i + 1].split(",") if i + 1 < len(argv) else []
        argv = argv[:i] + argv[i + 2:]
    if len(argv) != 2:
        raise ScenarioError("arguments", "two validation rows: ROW TWIN [--order PATH,PATH]")
    row, twin = argv
    cases = {c["scenario"]: c for c in validation.held_out_cases() + validation.cases()}
    for name in (row, twin):
        if name not in cases:
            raise ScenarioError(name, "not a validation row (calibration or held out; simcluster validate lists them)")
    scenarios = {name: config.load(name) for name in (row, twin)}
    dumps = {name: s.model_dump(mode="json", exclude_none=True) for name, s in scenarios.items()}
    published = {name: validation.published_step_s(cases[name], s) for name, s in scenarios.items()}

    def step_s(data: dict) -> float:
        return simulate(config.from_dict(data)).summary["step_time_s"]

    rows = walk(dumps[row], dumps[twin], step_s, first)
    print(f"{row} -> {twin}: published {published[row]:.4f} s -> {published[twin]:.4f} s "
          f"(ratio {published[row] / published[twin]:.3f})")
    previous = rows[0][1]
    print(f"  {'start':58s} {previous:8.4f} s")
    for paths, step in rows[1:]:
        label = ", ".join(f"{p}={flatten(dumps[twin]).get(p)}" for p in paths)
        print(f"  {label:58s} {step:8.4f} s  {step - previous:+.4f} s ({step / previous - 1:+.1%})")
        previous = step
    ratio = published[row] / published[twin]
    print(f"  simulated ratio {rows[0][1] / rows[-1][1]:.3f} against the published {ratio:.3f}")
    return 0


if __name__ == "__main__":
    from simcluster.core.script_entry import run

    sys.exit(run(main, sys.argv[1:], __doc__, options=("--order",), words=(2, 3),
                 usage="ROW TWIN [--order PATH,PATH]"))
