"""The accuracy tables of docs/accuracy.md, from the JSON of ``simcluster validate --json`` (calibration) and
``simcluster validate --held-out --json`` (held out).

    python scripts/accuracy_tables.py CAL.json HELDOUT.json [--label 'main @ COMMIT'] [--write docs/accuracy.md]
        [--write-data simcluster/data/accuracy.yaml]
        [--trend-plot docs/img/trend-series.png]

Prints markdown: calibration per series, held out per family and precision, the totals, the BF16/FP8 pairs
(``validation.BF16_FP8_PAIRS``, the pairs the validation test asserts), the ten worst held-out rows and issue 15's
targets, met or not. With
``--write PAGE`` the tables replace only the text between the page's ``<!-- accuracy-tables:start -->`` and
``<!-- accuracy-tables:end -->`` lines; the prose around them is kept byte for byte. With ``--write-data FILE`` it
also writes the snapshot of every run's error and traits that ``simcluster run``'s expected error reads
(``outcomes.accuracy_card``; data/accuracy.yaml), ``--label`` as its ``measured_on``; the tables are then printed
only with neither ``--write`` nor ``--write-data``.
The last table is the scaling trend series of each set (``studies.trends``: layouts read from the bundled
scenarios by name, so any earlier validate JSON serves); ``--trend-plot PNG`` draws them.

Error sign as in ``validate``: error = simulated / published throughput - 1 (negative = simulated too slow).
Bad input (a missing file, invalid JSON, a case without its fields or with a non-finite error, markers missing or
in reverse order, a page that cannot be written, a case whose scenario is not a bundled one with --write-data): one
line, exit 2.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import yaml

from simcluster.core import inputs, outputs, script_entry
from simcluster.core.errors import ScenarioError
from simcluster.outcomes import accuracy_card
from simcluster.spec import config
from simcluster.studies import trends as trend_series
from simcluster.studies import validation
from simcluster.studies.validation import BF16_FP8_PAIRS, PAIR_DEFAULT_TOLERANCE, PAIR_TOLERANCE

START = "<!-- accuracy-tables:start -->"
END = "<!-- accuracy-tables:end -->"
BANDS = (0.05, 0.10, 0.15)
WORST_ROWS = 10
# Issue 15's "done when": calibration and held out each median <= 4% and max <= 10%; BF16 and FP8 of the same
# model within 5 points (validation.PAIR_DEFAULT_TOLERANCE); no published run refused by the memory model.
TARGET_MEDIAN = 0.04
TARGET_MAX = 0.10
CASE_FIELDS = {"scenario": str, "family": str, "precision": str, "error": (int, float)}
# The lowest value each number of a validate --json case can take, exclusive: error = published / simulated throughput
# - 1 is above -1 (both are positive), a step time above 0 (round 32: -1 s and its +inf% were tabulated); the
# throughputs, where a script reads them, above 0 (round 34 review: graphed_rows_gap.py divided by a published 0).
CASE_LOWER_BOUNDS = {"error": -1.0, "step_time_s": 0.0, "published_tflops": 0.0, "simulated_tflops": 0.0}


class InputError(Exception):
    """Bad input, reported as one line with exit code 2."""


def load_cases(path: str | Path, fields: dict = CASE_FIELDS, whole: bool = False) -> list[dict]:
    """The cases of one ``validate --json`` file, each checked for ``fields`` ({name: type}; the tables' by default,
    other scripts name theirs): InputError, one line naming the field, otherwise. ``whole``: refuse an output of
    a validate interrupted (``partial: true``, its cases only those finished), as the tables and the snapshot
    every run reads its expected error from need the whole set (round 35 review: it was tabulated unsaid)."""
    try:  # read_text: a regular file within the JSON bound (round 33: a FIFO waited forever, /dev/zero filled memory)
        data = json.loads(inputs.read_text(Path(path), inputs.MAX_JSON_BYTES, "validate --json output"))
    except ScenarioError as exc:
        raise InputError(str(exc)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not JSON ({exc})") from None
    except ValueError as exc:  # an integer of more than 4,300 digits: a traceback before round 31
        raise InputError(f"{path}: {inputs.unreadable_value(exc)}") from None
    cases = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(cases, list) or not cases:
        raise InputError(f"{path}: expected an object with a non-empty list 'cases' (validate --json)")
    if whole and data.get("partial") is True:
        raise InputError(f"{path}: partial: the validate run was interrupted ({len(cases)} case(s) finished, "
                         f"{data.get('pending', '?')} pending); run it again to the end")
    for index, case in enumerate(cases):
        for field, kind in fields.items():
            value = case.get(field) if isinstance(case, dict) else None
            if not isinstance(value, kind) or isinstance(value, bool):
                raise InputError(f"{path}: cases[{index}].{field}: missing or not a {_kind_name(kind)}")
            if kind == (int, float) and not math.isfinite(value):   # json reads NaN and Infinity
                raise InputError(f"{path}: cases[{index}].{field}: {value} is not a finite number")
            if field in CASE_LOWER_BOUNDS and not value > CASE_LOWER_BOUNDS[field]:
                raise InputError(f"{path}: cases[{index}].{field}: {value} is not above "
                                 f"{CASE_LOWER_BOUNDS[field]:g}")
    return cases


def _kind_name(kind) -> str:
    return "number" if kind == (int, float) else "string"


def stats(errors: list[float]) -> dict[str, float]:
    """Runs, median and max |error|, mean signed error, and how many runs lie within each band."""
    signed = np.asarray(errors, dtype=float)
    absolute = np.abs(signed)
    return {"runs": len(signed), "median": float(np.median(absolute)), "max": float(absolute.max()),
            "mean": float(signed.mean()), **{f"within_{band}": int((absolute <= band).sum()) for band in BANDS}}


def by_group(cases: list[dict]) -> dict[str, dict[str, float]]:
    """Statistics per 'family/precision', in the order the groups first appear."""
    groups: dict[str, list[float]] = {}
    for case in cases:
        groups.setdefault(f"{case['family']}/{case['precision']}", []).append(case["error"])
    return {key: stats(errors) for key, errors in groups.items()}


def pct(value: float, signed: bool = False) -> str:
    return f"{value:+.1%}" if signed else f"{value:.1%}"


def group_table(groups: dict[str, dict[str, float]], label: str) -> list[str]:
    lines = [f"| {label} | runs | median \\|error\\| | max \\|error\\| | mean error |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {key} | {s['runs']} | {pct(s['median'])} | {pct(s['max'])} | {pct(s['mean'], True)} |"
              for key, s in groups.items()]
    return lines


def totals_table(calibration: list[dict], held_out: list[dict]) -> list[str]:
    lines = ["| set | runs | median \\|error\\| | max \\|error\\| | mean error | within 5% | within 10% | within 15% |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, cases in (("calibration", calibration), ("held out", held_out)):
        s = stats([c["error"] for c in cases])
        bands = " | ".join(str(s[f"within_{band}"]) for band in BANDS)
        lines.append(f"| {name} | {s['runs']} | {pct(s['median'])} | {pct(s['max'])} | {pct(s['mean'], True)} | "
                     f"{bands} |")
    return lines


def pairs_table(calibration: list[dict], held_out: list[dict]) -> list[str]:
    cal = {c["scenario"]: c["error"] for c in calibration}
    held = {c["scenario"]: c["error"] for c in held_out}
    lines = ["| BF16 (calibration) | FP8 (held out) | BF16 error | FP8 error | gap, points | allowed |",
             "|---|---|---:|---:|---:|---:|"]
    for bf16, fp8 in BF16_FP8_PAIRS:
        if bf16 not in cal or fp8 not in held:
            lines.append(f"| {bf16} | {fp8} | {_maybe(cal.get(bf16))} | {_maybe(held.get(fp8))} | n/a | |")
            continue
        gap_points = abs(cal[bf16] - held[fp8]) * 100
        allowed = PAIR_TOLERANCE.get(fp8, PAIR_DEFAULT_TOLERANCE) * 100
        lines.append(f"| {bf16} | {fp8} | {pct(cal[bf16], True)} | {pct(held[fp8], True)} | {gap_points:.1f} | "
                     f"{allowed:.0f} |")
    return lines


def _maybe(error: float | None) -> str:
    return "not run" if error is None else pct(error, True)


def worst_table(held_out: list[dict]) -> list[str]:
    worst = sorted(held_out, key=lambda c: -abs(c["error"]))[:WORST_ROWS]
    lines = ["| held-out run | family/precision | published TFLOP/s | simulated TFLOP/s | error |",
             "|---|---|---:|---:|---:|"]
    for c in worst:
        published = c.get("published_tflops")
        simulated = c.get("simulated_tflops")
        lines.append(f"| {c['scenario']} | {c['family']}/{c['precision']} | {_number(published)} | "
                     f"{_number(simulated)} | {pct(c['error'], True)} |")
    return lines


def _number(value) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) else ""


def targets_table(calibration: list[dict], held_out: list[dict]) -> list[str]:
    """Issue 15's targets against the two sets: met or not, with the value (three decimals: a maximum of 9.997%
    is met, 10.004% is not)."""
    lines = ["| target (issue 15) | value | met |", "|---|---:|---|"]
    for name, cases in (("calibration", calibration), ("held out", held_out)):
        s = stats([c["error"] for c in cases])
        lines.append(f"| {name}: median \\|error\\| <= {TARGET_MEDIAN:.0%} | {s['median']:.3%} | "
                     f"{_yes(s['median'] <= TARGET_MEDIAN)} |")
        lines.append(f"| {name}: max \\|error\\| <= {TARGET_MAX:.0%} | {s['max']:.3%} | "
                     f"{_yes(s['max'] <= TARGET_MAX)} |")
    cal = {c["scenario"]: c["error"] for c in calibration}
    held = {c["scenario"]: c["error"] for c in held_out}
    for bf16, fp8 in BF16_FP8_PAIRS:
        if bf16 in cal and fp8 in held:
            gap = abs(cal[bf16] - held[fp8])
            lines.append(f"| {bf16} vs {fp8}: within {PAIR_DEFAULT_TOLERANCE * 100:.0f} points | "
                         f"{gap * 100:.1f} | {_yes(gap <= PAIR_DEFAULT_TOLERANCE)} |")
    refused = [c["scenario"] for c in calibration + held_out if c.get("fits") is False]
    lines.append(f"| no published run refused by the memory model | {len(refused)} refused | {_yes(not refused)} |")
    return lines


def _yes(met: bool) -> str:
    return "yes" if met else "no"


def tables(calibration: list[dict], held_out: list[dict], label: str | None = None) -> str:
    """The markdown block: seven tables under their own bold titles, after a line naming what was measured (label)."""
    parts = [("Calibration per series", group_table(by_group(calibration), "series/precision")),
             ("Held out per family and precision", group_table(by_group(held_out), "family/precision")),
             ("Totals", totals_table(calibration, held_out)),
             ("BF16/FP8 pairs (same model, same GPUs)", pairs_table(calibration, held_out)),
             (f"The {WORST_ROWS} worst held-out runs", worst_table(held_out)),
             ("Issue 15 targets", targets_table(calibration, held_out)),
             ("Scaling trends (per-GPU throughput at N / at the smallest N)", trend_table(calibration, held_out))]
    measured = [f"Measured on: {label}.\n\n"] if label else []
    return "".join(measured) + "\n\n".join(f"**{title}**\n\n" + "\n".join(lines) for title, lines in parts) + "\n"


def trend_sets(calibration: list[dict], held_out: list[dict]) -> list[tuple[str, dict]]:
    """The trend series of each set (``studies.trends``; layouts read from the bundled scenarios by name, so an
    older validate JSON serves): ('calibration', trends), ('held out', trends)."""
    return [("calibration", trend_series.trends(calibration)), ("held out", trend_series.trends(held_out))]


def trend_table(calibration: list[dict], held_out: list[dict]) -> list[str]:
    """One row per trend series: GPU counts, published and simulated efficiency and the trend error at every count
    after the first (percent), the trend error at the end of the range and its sign; then the runs of one source and
    model at several GPU counts that no series holds, with the layout keys that differ."""
    lines = ["| series | set | GPUs | published efficiency, % | simulated efficiency, % | trend error, % | end | "
             "sign |", "|---|---|---|---|---|---|---:|---|"]
    apart = []
    for name, found in trend_sets(calibration, held_out):
        for s in found["series"]:
            later = s["points"][1:]
            lines.append(f"| {s['series']} | {name} | {', '.join(str(p['gpus']) for p in s['points'])} | "
                         f"{_percents(p['published_efficiency'] for p in later)} | "
                         f"{_percents(p['simulated_efficiency'] for p in later)} | "
                         f"{_percents((p['trend_error'] for p in later), signed=True)} | "
                         f"{pct(s['end_trend_error'], True)} | {s['sign']} |")
        apart += [f"{', '.join(a['runs'])} ({a['model']}: {', '.join(a['differ'])})" for a in found["not_grouped"]]
    if len(lines) == 2:
        return ["No trend series among these runs (runs of one source and model at two or more GPU counts)."]
    if apart:
        lines += ["", "Not trend series (the layout differs): " + "; ".join(apart) + "."]
    return lines


def _percents(values, signed: bool = False) -> str:
    return ", ".join(f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}" for v in values)


def write_trend_plot(calibration: list[dict], held_out: list[dict], path: str) -> None:
    """docs/img's trend figure (``analysis.scaling.trend_efficiency``), one panel per set that has a series."""
    from matplotlib.backend_bases import FigureCanvasBase

    from simcluster.analysis import plots, scaling

    panels = [(name, found["series"]) for name, found in trend_sets(calibration, held_out) if found["series"]]
    if not panels:
        raise InputError("--trend-plot: no trend series among these runs")
    target = Path(path)
    kind = target.suffix[1:] or "png"
    if kind not in FigureCanvasBase.get_supported_filetypes():
        raise InputError(f"--trend-plot: {target}: .{kind} is not an image format matplotlib writes (.png, .pdf, .svg)")
    try:
        plots.save(scaling.trend_efficiency(panels), target.parent, target.stem, formats=(kind,))
    except (OSError, ScenarioError) as exc:
        raise InputError(f"{target}: cannot write ({exc})") from None


def replace_block(page: str, block: str) -> str:
    """The page with the text between the marker lines replaced by block; everything else unchanged."""
    if page.count(START) != 1 or page.count(END) != 1:
        raise InputError(f"expected one '{START}' and one '{END}' line")
    if page.index(END) < page.index(START):
        raise InputError(f"'{END}' comes before '{START}'")
    head, rest = page.split(START, 1)
    _, tail = rest.split(END, 1)
    if not head.endswith("\n") and head:
        raise InputError(f"'{START}' must start a line")
    return f"{head}{START}\n{block}{END}{tail}"


DATA_HEADER = """\
# The validation harness's error per published run, with the traits simcluster run's expected error matches on
# (simcluster/outcomes/accuracy_card.py; docs/calibration/round-20.md, "Round 20: every run states the error to
# expect").
# Written by scripts/accuracy_tables.py from `simcluster validate --json` (set calibration) and
# `simcluster validate --held-out --json` (set held-out); do not edit by hand. Regenerate:
#   python scripts/accuracy_tables.py CAL.json HELDOUT.json --label 'main @ COMMIT' \\
#       --write-data simcluster/data/accuracy.yaml
# error = simulated / published throughput - 1 (positive: simulated fast); family: the run's series
# (validation.yaml); model to gflop_per_token: accuracy_card.traits of the bundled scenario (gflop_per_token: model
# FLOP per token, simcluster's count; stack: its software stack family, simcluster/spec/stack.py). calibrated_stacks:
# the stacks of the calibration runs (docs/calibration/round-22.md, "Round 22: the expected-error card names the
# stack").
"""


def data_entries(calibration: list[dict], held_out: list[dict]) -> list[dict]:
    """One snapshot entry per case, calibration first: scenario, set, family, its scenario's traits, error (4
    decimals: 0.01 point)."""
    entries = []
    for name, cases in (("calibration", calibration), ("held-out", held_out)):
        for case in cases:
            try:
                scenario = config.load(case["scenario"])
            except (ScenarioError, OSError) as exc:
                raise InputError(f"--write-data: {case['scenario']}: not a bundled scenario ({exc})") from None
            entries.append({"scenario": case["scenario"], "set": name, "family": case["family"],
                            **accuracy_card.traits(scenario), "error": round(case["error"], 4)})
    return entries


def data_text(entries: list[dict], label: str | None) -> str:
    """The snapshot file: header, ``measured_on``, ``calibrated_stacks`` (the stacks of the calibration entries,
    sorted), then one flow mapping a line per run."""
    calibrated = sorted({e["stack"] for e in entries if e["set"] == "calibration"})
    lines = [DATA_HEADER + f"measured_on: {json.dumps(label or '')}",
             f"{accuracy_card.CALIBRATED_STACKS}: {json.dumps(calibrated)}", "runs:"]
    lines += [f"  - {yaml.safe_dump(e, default_flow_style=True, sort_keys=False, width=10_000).strip()}"
              for e in entries]
    return "\n".join(lines) + "\n"


def check_sets(given: tuple[str, str], calibration: list[dict], held_out: list[dict]) -> None:
    """InputError when a file's cases hold a row of the other set (validation.yaml's ``cases`` or ``held_out``):
    the two files given in the wrong order, or one file twice (round 35: ``HO.json CAL.json`` tabulated the
    held-out runs as the calibration set and, with ``--write-data``, gave every ``run`` a wrong expected error). A
    row of neither set (one since removed, in an older output) passes."""
    sets = {"calibration": {case["scenario"] for case in validation.cases()},
            "held-out": {case["scenario"] for case in validation.held_out_cases()}}
    for path, which, other, cases in ((given[0], "calibration", "held-out", calibration),
                                      (given[1], "held-out", "calibration", held_out)):
        for index, case in enumerate(cases):
            if case["scenario"] in sets[other] and case["scenario"] not in sets[which]:
                raise InputError(f"{path}: cases[{index}].scenario {case['scenario']!r} is a {other} row, given as "
                                 f"the {which} output: the files in the wrong order, or one given twice? (expected "
                                 "CALIBRATION.json HELD_OUT.json)")


def _refuse_overwriting_inputs(given: tuple[str, str], **written: str | None) -> None:
    """InputError when a file to write (``--write-data``, ``--trend-plot``, ``--write``) is one of the validate
    outputs read (round 33: ``--write-data HO.json`` replaced the held-out output with the snapshot)."""
    for option, path in written.items():
        for source in given:
            if path is not None and Path(path).exists() and Path(path).samefile(source):
                raise InputError(f"--{option.replace('_', '-')}: {path!r} is the input {source!r}: writing it would "
                                 "overwrite the validate output; give another path")


def main(argv: list[str] | None = None) -> int:
    parser = script_entry.Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("calibration", help="JSON of `simcluster validate --json`")
    parser.add_argument("held_out", help="JSON of `simcluster validate --held-out --json`")
    parser.add_argument("--label", help="what the JSON was measured on, printed first (e.g. 'main @ 5b4abeb')")
    parser.add_argument("--trend-plot", metavar="PNG", help="also draw the trend series (docs/img/trend-series.png)")
    parser.add_argument("--write", metavar="PAGE", help="replace the marked block of PAGE (docs/accuracy.md)")
    parser.add_argument("--write-data", metavar="FILE",
                        help="write the per-run snapshot simcluster run's expected error reads "
                        "(simcluster/data/accuracy.yaml)")
    args = parser.parse_args(argv)
    try:
        calibration, held_out = load_cases(args.calibration, whole=True), load_cases(args.held_out, whole=True)
        _refuse_overwriting_inputs((args.calibration, args.held_out), write_data=args.write_data,
                                   trend_plot=args.trend_plot, write=args.write)
        check_sets((args.calibration, args.held_out), calibration, held_out)
        block = tables(calibration, held_out, args.label)
        if args.write_data:
            text = data_text(data_entries(calibration, held_out), args.label)
            try:
                outputs.write_text(Path(args.write_data), text)  # atomic: Ctrl-C leaves the old snapshot whole
            except OSError as exc:
                raise InputError(f"{args.write_data}: cannot write ({exc.strerror or exc})") from None
        if args.trend_plot:
            write_trend_plot(calibration, held_out, args.trend_plot)
        if args.write:
            page = Path(args.write)
            try:  # read_text: bounded, a FIFO without a writer refused (round 33 review: it waited forever)
                text = inputs.read_text(page, inputs.MAX_FABRIC_BYTES, "page")
            except ScenarioError as exc:
                raise InputError(str(exc)) from None
            try:
                new_text = replace_block(text, block)
            except InputError as exc:
                raise InputError(f"{page}: {exc}") from None
            try:
                outputs.write_text(page, new_text)  # atomic: Ctrl-C leaves the page whole
            except OSError as exc:
                raise InputError(f"{page}: cannot write ({exc.strerror or exc})") from None
        elif not args.write_data:
            sys.stdout.write(block)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
