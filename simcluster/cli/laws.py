"""`simcluster laws`: scaling laws, loss over wall-clock time for a scenario, and the multi-year projection.

    simcluster laws eval --law chinchilla --params 70e9 --tokens 1.4e12 --json
    simcluster laws optimal --law chinchilla --flop 5.76e23 --json
    simcluster laws relative-loss --gamma 1 --kappa 0.05 --years 5 --json
    simcluster laws plot --out figures/
    simcluster laws project [--json] [--out DIR]
    simcluster laws loss-vs-time [SCENARIO] --target-loss 2.0 [--law chinchilla] [--json] [--out DIR]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import typer
from rich.table import Table

from simcluster.cli.app import MAX_TARGET_LOSS, Typer, app, check_at_least, check_target_loss, fail, finite
from simcluster.cli.outputs import NEVER_OVERWRITTEN, folder, fresh_folder, output_dir
from simcluster.cli.run import NETWORK_HELP, check_network
from simcluster.cli.terminal import Terminal, styled
from simcluster.core import catalog, inputs, outputs, units
from simcluster.core.errors import ScenarioError, shown
from simcluster.outcomes import economics, laws, projection
from simcluster.spec import config

laws_app = Typer(
    name="laws", no_args_is_help=True,
    help="Scaling laws: loss, compute-optimal allocation, loss over wall-clock time, cost and energy to a "
         "target, and the multi-year projection.")
app.add_typer(laws_app, name="laws")

LAW_HELP = "chinchilla | chinchilla-refit | kaplan | custom (with --fit)"
FIT_HELP = "custom law E + A/N^alpha + B/D^beta, e.g. 'E=1.69,A=406.4,B=410.7,alpha=0.34,beta=0.28'"
# Bounds of the numbers the laws take (docs/robustness.md): a model has at least one parameter and is trained on at
# least one token, so at least 6 FLOP (C = 6ND); 10^40 FLOP is ten trillion times the largest run of 2025 (~5e26).
ONE = "a model has at least one parameter and sees at least one token"
MAX_FLOP = 1e40
# A run's budget: ten times world GDP (~1.1e14 USD in 2024, World Bank); a site's power: humanity's primary energy
# use (economics.MAX_POWER_W); tokens: 10^18, over a thousand times the stock of human-written text (~3e14 tokens,
# Villalobos et al. 2024).
MAX_BUDGET_USD = 1e15
MAX_POWER_W = economics.MAX_POWER_W
MAX_TOKENS = 1e18


def _law(name: str, fit: str | None) -> laws.Law:
    if fit is not None and name != "custom":
        fail("--fit", "only applies with --law custom")
    if name != "custom":
        return laws.get(name, custom_too=True)
    if fit is None:
        fail("--fit", "--law custom needs --fit 'E=..,A=..,B=..,alpha=..,beta=..'")
    values = {}
    for item in fit.split(","):
        key, _, text = item.partition("=")
        if key.strip() in values:  # the last would win unsaid
            fail("--fit", f"{key.strip()} is given twice")
        try:
            values[key.strip()] = finite(text)
        except ValueError:
            fail("--fit", f"cannot read {item.strip()!r} as name=finite number")
    expected = {"E", "A", "B", "alpha", "beta"}
    if set(values) != expected:
        got = ", ".join(sorted(values)) or "nothing"
        fail("--fit", f"needs exactly {', '.join(sorted(expected))}; got {got}")
    if values["E"] > MAX_TARGET_LOSS:  # E=1e308 printed a loss of 309 digits
        fail("--fit", f"E (the irreducible loss) must be at most {MAX_TARGET_LOSS:g} nats/token, got {values['E']:g} "
             "(a uniform guess over 10^8 tokens scores 18.4)")
    return laws.custom(**values)


def _echo_json(data) -> None:
    typer.echo(outputs.dumps(data, indent=2))


def _warn_below_fit(law: laws.Law, params: float, tokens: float) -> None:
    """On stderr (stdout keeps the result, --json too): N or D below the runs the law was fitted on."""
    warning = laws.below_fit(law, params, tokens)
    if warning is not None:
        print(f"warning: {warning}", file=sys.stderr)


@laws_app.command("eval")
def eval_(
    law: str = typer.Option(laws.DEFAULT_LAW, "--law", help=LAW_HELP),
    params: float = typer.Option(..., "--params", parser=finite,
                                 help="parameters N (non-embedding for kaplan)"),
    tokens: float = typer.Option(..., "--tokens", parser=finite,
                                 help="training tokens D"),
    fit: str | None = typer.Option(None, "--fit", help=FIT_HELP),
    as_json: bool = typer.Option(False, "--json", help="print {law, params, tokens, loss} as JSON"),
) -> None:
    """Loss L(N, D) of one law."""
    chosen = _law(law, fit)
    params = check_at_least(params, 1.0, "--params", ONE)
    tokens = check_at_least(tokens, 1.0, "--tokens", ONE)
    loss = float(chosen.loss(params, tokens))
    _warn_below_fit(chosen, params, tokens)
    if as_json:
        _echo_json({"law": chosen.name, "params": params, "tokens": tokens, "loss": loss})
    else:
        typer.echo(f"{chosen.name}: L(N={params:.4g}, D={tokens:.4g}) = {loss:.4f} nats/token")


@laws_app.command()
def optimal(
    law: str = typer.Option(laws.DEFAULT_LAW, "--law", help=LAW_HELP),
    flop: float = typer.Option(..., "--flop", parser=finite,
                               help="training compute C in FLOP (C = 6ND)"),
    fit: str | None = typer.Option(None, "--fit", help=FIT_HELP),
    as_json: bool = typer.Option(False, "--json", help="print {params, tokens, loss, ...} as JSON"),
) -> None:
    """Compute-optimal parameters and tokens for a FLOP budget (closed form)."""
    chosen = _law(law, fit)
    check_at_least(flop, 6.0, "--flop", ONE + ": C = 6ND")
    if flop > MAX_FLOP:
        fail("--flop", f"expected at most {MAX_FLOP:.0e} FLOP, got {flop:g} (ten trillion times the largest run)")
    best = chosen.optimal(flop)
    _warn_below_fit(chosen, float(best.params), float(best.tokens))
    result = {"law": chosen.name, "flop": flop, "params": float(best.params), "tokens": float(best.tokens),
              "loss": float(best.loss), "tokens_per_param": float(best.tokens_per_param)}
    if as_json:
        _echo_json(result)
    else:
        typer.echo(f"{chosen.name} at C = {flop:.3g} FLOP: N_opt = {best.params:.4g} params, "
                   f"D_opt = {best.tokens:.4g} tokens ({best.tokens_per_param:.3g} tokens/param), "
                   f"loss = {best.loss:.4f} nats/token")


@laws_app.command("relative-loss")
def relative_loss(
    gamma: float = typer.Option(..., "--gamma", parser=finite,
                                help="efficiency doublings per year (2: every 6 mo)"),
    kappa: float | None = typer.Option(None, "--kappa", parser=finite,
                                       help="compute exponent (default 0.05, Lu 2025)"),
    years: float = typer.Option(..., "--years", parser=finite,
                                help="time t in years"),
    as_json: bool = typer.Option(False, "--json", help="print {relative_loss, gamma, kappa, years} as JSON"),
) -> None:
    """Lu 2025's relative loss R(t) = (1 + (2^(gamma t) - 1)/(gamma ln2 * 1 yr))^-kappa."""
    kappa = catalog.load("scaling_laws")["lu_2025"]["kappa"] if kappa is None else kappa
    try:  # the law checks kappa, gamma and years: name the options
        value = float(laws.relative_loss(years, gamma, kappa))
        efficiency = float(laws.efficiency(years, gamma))
    except ScenarioError as err:
        raise ScenarioError(f"--{err.field}", err.message) from None
    if as_json:
        _echo_json({"relative_loss": value, "gamma": gamma, "kappa": kappa, "years": years,
                    "efficiency": efficiency})
    else:
        typer.echo(f"R({years:g} y) = {value:.5f} at gamma = {gamma:g}/y, kappa = {kappa:g}")


@laws_app.command()
def plot(
    out: Path = typer.Option(Path("runs/laws"), "--out", parser=folder,
                              help="output folder for the PNG and PDF files "
                             f"({NEVER_OVERWRITTEN})"),
    min_flop: float = typer.Option(1e18, "--min-flop", parser=finite,
                                   help="smallest compute on the x axis (FLOP)"),
    max_flop: float = typer.Option(1e27, "--max-flop", parser=finite,
                                   help="largest compute on the x axis (FLOP)"),
) -> None:
    """Loss vs compute per law, the compute-optimal frontier, and L(t) for several gamma (Lu 2025)."""
    from simcluster.analysis import plots

    check_at_least(min_flop, 6.0, "--min-flop", ONE + ": C = 6ND")
    if max_flop > MAX_FLOP:
        fail("--max-flop", f"expected at most {MAX_FLOP:.0e} FLOP, got {max_flop:g} (ten trillion times the "
             "largest run)")
    if max_flop <= min_flop:
        fail("--max-flop", f"must exceed --min-flop ({min_flop:g})")
    out = output_dir(out)
    all_laws = [laws.get(name) for name in laws.LAW_NAMES]
    lu = catalog.load("scaling_laws")["lu_2025"]
    written = []
    with fresh_folder(out) as out_dir:
        written += plots.save(plots.loss_vs_compute(all_laws, min_flop, max_flop), out_dir, "loss_vs_compute")
        written += plots.save(plots.compute_optimal(all_laws, min_flop, max_flop), out_dir, "compute_optimal")
        written += plots.save(plots.relative_loss(lu["gammas_plotted"], lu["kappa"]), out_dir, "relative_loss")
    for path in written:
        typer.echo(str(path))


# The projection inputs ``laws project`` sets, by the option that sets them (its errors name the option).
# the unset options of `laws project` take the planning defaults of this file
PROJECTION_DEFAULT = "simcluster/data/projection.yaml's"
_PROJECT_OPTIONS = {"start_year": "--start-year", "years": "--years", "gamma": "--gamma"}


@laws_app.command()
def project(
    as_json: bool = typer.Option(False, "--json", help="print the yearly rows and the phase map as JSON"),
    out: Path | None = typer.Option(None, "--out", parser=folder,
                                    help="also write projection.png/.pdf into this folder "
                                    f"({NEVER_OVERWRITTEN})"),
    law: str = typer.Option(laws.DEFAULT_LAW, "--law", help="chinchilla | chinchilla-refit | kaplan"),
    start_year: int | None = typer.Option(None, "--start-year", help="first year of the projection; default: "
                                          f"{PROJECTION_DEFAULT}"),
    years: int | None = typer.Option(None, "--years", help=f"number of years; default: {PROJECTION_DEFAULT}"),
    budget_usd: float | None = typer.Option(None, "--budget-usd", parser=finite,
                                            help=f"start-year budget of one run (USD); default: {PROJECTION_DEFAULT}"),
    power_cap_w: float | None = typer.Option(None, "--power-cap-w", parser=finite,
                                             help=f"power cap of the site (W); default: {PROJECTION_DEFAULT}"),
    gamma: float | None = typer.Option(None, "--gamma", parser=finite,
                                       help="algorithmic efficiency doublings per year; default: "
                                       f"{PROJECTION_DEFAULT}"),
    phase: str | None = typer.Option(None, "--phase", help="phase-map axis: budget | power | compute | data; "
                                        f"default: {PROJECTION_DEFAULT}"),
) -> None:
    """Which constraint caps the largest run each year: compute, memory, network, budget, energy or data."""
    if law is not None:
        laws.get(law)
    if budget_usd is not None and not 1.0 <= budget_usd <= MAX_BUDGET_USD:
        fail("--budget-usd", f"expected 1 to {MAX_BUDGET_USD:.0e} USD, got {budget_usd:g} (ten times world GDP)")
    if power_cap_w is not None and not 1.0 <= power_cap_w <= MAX_POWER_W:
        fail("--power-cap-w", f"expected 1 to {MAX_POWER_W:.0e} W, got {power_cap_w:g} (humanity's primary power)")
    if phase is not None and not phase:
        fail("--phase", "expected budget, power, compute or data, got ''")
    if out is not None:
        out = output_dir(out)
    try:
        inputs = projection.defaults(law=law, start_year=start_year, years=years, budget_usd=budget_usd,
                                     power_cap_w=power_cap_w, gamma=gamma)
    except ScenarioError as err:  # name the option the user wrote, not the projection's input
        if err.field not in _PROJECT_OPTIONS:
            raise
        raise ScenarioError(_PROJECT_OPTIONS[err.field], err.message) from None
    try:
        rows = projection.project(inputs)
        phase_map = projection.phase_map(inputs, parameter=phase)
    except ScenarioError as err:  # the effective compute's overflow names gamma: name the option
        raise ScenarioError(_PROJECT_OPTIONS.get(err.field, err.field), err.message) from None
    if out is not None:
        from simcluster.analysis import plots

        figure = plots.projection(rows, phase_map, projection.CONSTRAINTS)
        with fresh_folder(out) as out_dir:
            paths = plots.save(figure, out_dir, "projection")
    if as_json:
        _echo_json({"inputs": vars(inputs), "years": rows, "phase_map": phase_map})
        return
    table = Table(title=f"Largest run per year: log10 FLOP ceilings ({inputs.law}, gamma {inputs.gamma:g}/y)")
    letters = [projection.LETTERS[name] for name in projection.CONSTRAINTS]
    for column in ("year", *letters, "binding", "eff.", "loss"):
        table.add_column(column, justify="right")
    for row in rows:
        cells = [f"{math.log10(row[f'{name}_flop']):.1f}" for name in projection.CONSTRAINTS]
        cells = [styled(cell, "bold") if name == row["binding"] else cell
                 for cell, name in zip(cells, projection.CONSTRAINTS, strict=True)]
        table.add_row(str(row["year"]), *cells, row["binding"], f"{math.log10(row['effective_flop']):.1f}",
                      f"{row['loss']:.3f}")
    console = Terminal()
    console.print(table)
    console.print("log10 of the FLOP each constraint allows one run; the smallest binds; "
                  "eff. = x 2^(gamma t) for algorithmic progress. "
                  + "  ".join(f"{projection.LETTERS[name]} {name}" for name in projection.CONSTRAINTS)
                  + ". Inputs and sources: simcluster/data/projection.yaml")
    typer.echo("")
    typer.echo(projection.ascii_phase(phase_map))
    if out is not None:
        for path in paths:
            typer.echo(str(path))


def _busy(text: str | None) -> float | str | None:
    if text is None or text == "mfu":
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # checked before the run it would follow (nan and inf too)
        fail("--busy-fraction", f"expected a number in [0, 1] or 'mfu', got {text!r}")
    return value


def _summary(scenario_spec, network: str | None, summary_file: Path | None) -> dict:
    if summary_file is not None:
        try:
            data = inputs.load_json(summary_file, what="summary.json")
        except ScenarioError as err:
            fail("--summary", str(err))
        if not isinstance(data, dict):
            fail("--summary", "expected a JSON object (summary.json of `simcluster run`)")
        return _checked_summary(data)
    try:
        from simcluster.engine import simulate
    except ImportError:
        fail("SCENARIO", "the training engine (simcluster.engine.simulate) is not available in this build; "
             "pass --summary with the summary.json of a run instead")
    result = simulate(scenario_spec, network=network)
    return result.summary if hasattr(result, "summary") else result


# The figures of a summary.json that loss-vs-time reads: (key, must be > 0 rather than >= 0).
_SUMMARY_NUMBERS = (("step_time_s", True), ("tokens_per_s", True), ("mfu", False), ("exposed_comm_s", False),
                    ("pipeline_bubble_s", False))


def _checked_summary(data: dict) -> dict:
    """A summary.json read from a file: every figure loss-vs-time uses is a finite number of the right sign, and
    ``gpus`` a whole number within the plausibility bound of a scenario."""
    for key, positive in _SUMMARY_NUMBERS:
        value = data.get(key)
        if value is None and key not in ("step_time_s", "tokens_per_s"):
            continue
        number = units.finite_float(value)  # None for an integer past a float's range (round 31: OverflowError)
        if number is None or number < 0 or (positive and number == 0):
            fail("--summary", f"{key} must be a finite number {'>' if positive else '>='} 0, got {shown(value)}")
    gpus = data.get("gpus")
    if isinstance(gpus, bool) or not isinstance(gpus, int) or not 1 <= gpus <= config.MAX_GPUS:
        fail("--summary", f"gpus must be a whole number from 1 to {config.MAX_GPUS:,}, got {shown(gpus)}")
    if data.get("partial") is True:  # an interrupted `run --samples` (round 30): said, not refused
        print(f"note: --summary: a partial run, {data.get('samples')} of {data.get('samples_requested')} samples "
              "finished before it was interrupted: its step time is the lower median of those", file=sys.stderr)
    return data


@laws_app.command("loss-vs-time")
def loss_vs_time(
    scenario: str | None = typer.Argument(None, help="scenario YAML file or bundled name; default: the bundled "
                                          "demo (gpt3-175b-1024-h100)"),
    target_loss: float | None = typer.Option(None, "--target-loss", parser=finite,
                                             help="loss to reach (nats/token); this or --tokens"),
    tokens: float | None = typer.Option(None, "--tokens", parser=finite,
                                        help="or: a token budget to train on"),
    law: str = typer.Option(laws.DEFAULT_LAW, "--law", help="chinchilla | chinchilla-refit | kaplan"),
    goodput: float | None = typer.Option(
        None, "--goodput", parser=finite, help="fraction of wall-clock time spent on useful steps; default: the "
        "run's, from failures, checkpoints and restarts (docs/reliability.md)"),
    busy_fraction: str | None = typer.Option(
        None, "--busy-fraction", help="GPU busy fraction for power: a number, 'mfu'; default: from the step"),
    network: str | None = typer.Option(None, "--network", help=NETWORK_HELP),
    summary_file: Path | None = typer.Option(None, "--summary", help="summary.json of a run (no simulation)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as JSON"),
    out: Path | None = typer.Option(None, "--out", parser=folder,
                                    help="folder for loss_vs_time.png/.pdf (default "
                                    f"runs/<name>-loss-vs-time/; {NEVER_OVERWRITTEN})"),
) -> None:
    """Run the scenario; time, GPU-hours, cost, energy and CO2 to reach a target loss; loss vs days."""
    check_network(network)
    if (target_loss is None) == (tokens is None):
        fail("--target-loss", "give exactly one of --target-loss and --tokens")
    check_target_loss(target_loss)
    if tokens is not None and not 1.0 <= tokens <= MAX_TOKENS:
        fail("--tokens", f"expected 1 to {MAX_TOKENS:.0e} tokens, got {tokens:g} (the text ever written is ~3e14)")
    if goodput is not None and not 0.0 < goodput <= 1.0:  # before the run, not after it
        fail("--goodput", f"expected a fraction in (0, 1], got {goodput:g}")
    spec = config.load(scenario)
    chosen = laws.get(law)
    economics.check_target_reachable(spec, chosen, target_loss, field="--target-loss")  # before the run
    busy = _busy(busy_fraction)
    out_dir = None
    if out is not None or not as_json:
        out_dir = output_dir(out if out is not None else Path("runs") / f"{spec.name}-loss-vs-time")
    summary = _summary(spec, network, summary_file)
    try:
        report = economics.time_to_target(summary, spec, chosen, target_loss=target_loss, tokens=tokens,
                                          goodput=goodput, busy_fraction=busy)
    except ScenarioError as err:  # name the options the user wrote
        options = {"goodput": "--goodput", "busy_fraction": "--busy-fraction", "tokens": "--tokens",
                   "target_loss": "--target-loss"}
        raise ScenarioError(options.get(err.field, err.field), err.message) from None
    _warn_below_fit(chosen, report["params"], report["tokens_to_target"])
    if out_dir is not None:
        from simcluster.analysis import plots

        curve = economics.loss_curve(summary, spec, chosen, 3.0 * report["time_to_target_s"], goodput=goodput)
        figure = plots.loss_vs_time(curve, report, f"{spec.name}: loss over wall-clock time")
        with fresh_folder(out_dir) as out_dir:
            paths = plots.save(figure, out_dir, "loss_vs_time")
    if as_json:
        _echo_json(report if out_dir is None else {**report, "out_dir": str(out_dir)})
        return
    goal = f"loss {report['loss']:.4f}" if target_loss is not None else f"{units.fmt_count(tokens)} tokens"
    table = Table(title=f"{spec.name}: to {goal}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    rows = [
        ("law", f"{report['law']} (N = {units.fmt_count(report['params'], 4)} params)"),
        ("loss", f"{report['loss']:.4f} nats/token"),
        ("tokens", f"{units.fmt_count(report['tokens_to_target'], 4)} ({report['tokens_per_param']:.3g} per param)"),
        ("throughput", f"{units.fmt_count(report['tokens_per_s'], 4)} tokens/s x goodput {report['goodput']:.4g} "
                       f"({report['goodput_basis']})"),
        ("time", units.fmt_days(report["time_to_target_s"], 4)),
        ("GPU-hours", f"{units.fmt_count(report['gpu_hours'], 4)} on {report['gpus']:,} GPUs"),
        ("cost", f"{units.fmt_usd(report['cost_usd'], 4)} (network {units.fmt_usd(report['fabric_cost_usd'], 3)})"),
        ("power", f"{units.fmt(report['facility_power_w'], units.WATTS)} "
                  f"(busy {report['busy_fraction']:.2f}: {report['busy_fraction_basis']})"),
        ("energy", units.fmt_energy(report["energy_j"], 4)),
        ("CO2", f"{units.fmt_count(report['co2_kg'] / 1000.0, 4)} t (grid {spec.economics.grid_kg_co2_per_kwh:g} "
                "kg/kWh)"),
        ("energy / Landauer bound", f"{units.fmt_count(report['energy_over_landauer'], 3)} x"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    Terminal().print(table)
    typer.echo(f"wrote {', '.join(p.name for p in paths)} to {out_dir}/")
