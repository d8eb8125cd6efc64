"""`simcluster collective`: one collective over a range of sizes, reported like nccl-tests.

Columns: size, time, algbw, busbw.

Sizes double from --min-bytes to --max-bytes (nccl-tests' -b/-e/-f); --json prints the rows of DESIGN.md:
``{bytes, time_s, algbw_bytes_per_s, busbw_bytes_per_s}`` (plus the algorithm and protocol that ran).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from simcluster import collectives, network
from simcluster.cli.app import app, check_count, fail
from simcluster.cli.outputs import check_name
from simcluster.cli.terminal import Terminal
from simcluster.collectives.nccl import PROTOCOLS
from simcluster.collectives.schedule import ALIASES
from simcluster.core import limits, outputs, units
from simcluster.core.errors import ScenarioError, unknown_name
from simcluster.spec import config, hardware


def message_sizes(min_bytes: float, max_bytes: float, step_factor: int) -> list[int]:
    """nccl-tests' size sweep: min, min*f, min*f^2, ... up to max inclusive."""
    sizes, size = [], int(min_bytes)
    while size <= max_bytes:
        sizes.append(size)
        size *= step_factor
    return sizes


def _size(text: str, option: str) -> float:
    try:
        value = units.parse_message_size(text)
    except ScenarioError as err:
        try:  # a bare number the unit parser refused ('-1', '1e30', 'nan'): bytes, judged below
            value = float(text)
        except ValueError:
            raise ScenarioError(option, err.message) from None
    high = units.PLAUSIBLE[units.BYTES][1]  # no buffer outgrows a device's memory
    if value > high:  # infinity too: '1' and 400 zeros reads as inf, and int(inf) was a traceback (round 31)
        fail(option, f"expected at most {high:.0e} bytes (1 PB, over 3,000 times a B300's HBM), got {text[:60]!r}")
    if not value >= 1 or value != int(value):  # NaN and -inf fail the first test
        fail(option, f"expected a whole number of bytes >= 1, got {text[:60]!r}")
    return value


def _topology_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail("--topology-option", f"expected KEY=VALUE, got {pair!r}")
        if key in options:  # the last would win unsaid
            fail("--topology-option", f"{key} is given twice")
        try:
            options[key] = json.loads(value)
        except ValueError:  # not JSON (JSONDecodeError), or an integer of more than 4,300 digits (round 31)
            options[key] = value
    return options


def _row(op: str, group: list[int], size: int, algorithm: str, protocol: str, fabric, network_name: str,
         gpu) -> dict:
    """One nccl-tests row (DESIGN.md's contract): the collective of ``size`` bytes timed on ``fabric``."""
    try:
        call = collectives.Collective(op=op, group=group, size_bytes=float(size), algorithm=algorithm,
                                      protocol=protocol)
        outcome = collectives.run(call, fabric, network_name, gpu=gpu)
    except ScenarioError as err:
        raise ScenarioError(f"--{err.field}" if not err.field.startswith("-") else err.field, err.message) from None
    return {"bytes": size, "time_s": outcome.time_s, "algbw_bytes_per_s": outcome.algbw_bytes_per_s,
            "busbw_bytes_per_s": outcome.busbw_bytes_per_s, "algorithm": outcome.algorithm,
            "protocol": outcome.protocol}


@app.command()
def collective(
    op: str = typer.Option("allreduce", "--op", help=f"collective: {', '.join(collectives.OPS)}"),
    gpus: int = typer.Option(8, "--gpus", help="GPUs in the group (all GPUs of the fabric)"),
    gpus_per_node: int = typer.Option(8, "--gpus-per-node", help="GPUs per node (NVSwitch domain)"),
    topology_name: str = typer.Option(
        "rail-fat-tree", "--topology", help="builtin fabric or a YAML/GraphML file"
    ),
    topology_option: list[str] = typer.Option(
        [], "--topology-option", help="fabric option KEY=VALUE, repeatable"
    ),
    gpu_name: str = typer.Option("h100-sxm", "--gpu", help="GPU catalog name"),
    nic_name: str = typer.Option("connectx-7", "--nic", help="NIC catalog name"),
    min_bytes: str = typer.Option("8", "--min-bytes", help="smallest message, e.g. 8, 128K, 1M"),
    max_bytes: str = typer.Option("128M", "--max-bytes", help="largest message, e.g. 8G"),
    step_factor: int = typer.Option(2, "--step-factor", help="size multiplier between rows (nccl-tests -f)"),
    network_name: str = typer.Option("flow", "--network", help="network model: analytic | flow | chunk"),
    algorithm: str = typer.Option(
        "auto", "--algorithm", help=f"algorithm: {', '.join(collectives.ALGORITHMS)}"
    ),
    protocol: str = typer.Option("auto", "--protocol", help="NCCL protocol: auto | LL | LL128 | Simple"),
    sharp: str | None = typer.Option(
        None, "--sharp", help="IB SHARP in the switches: off (NCCL's default; auto with --algorithm sharp) | auto "
        "(where the fabric has it) | on", show_default=False
    ),
    as_json: bool = typer.Option(False, "--json", help="print the rows as JSON"),
) -> None:
    """Time one collective over doubling message sizes, like nccl-tests."""
    from simcluster.fabric import topology  # networkx: loaded by the commands that build a fabric

    op = ALIASES.get(op, op)
    if op not in collectives.OPS:
        raise unknown_name("--op", "collective", op, collectives.OPS)
    if algorithm not in collectives.ALGORITHMS:
        raise unknown_name("--algorithm", "algorithm", algorithm, collectives.ALGORITHMS)
    if protocol != "auto" and protocol not in PROTOCOLS:
        raise unknown_name("--protocol", "protocol", protocol, ["auto", *PROTOCOLS])
    if sharp is None:  # forcing the algorithm asks for the capability
        sharp = "auto" if algorithm == "sharp" else "off"
    if sharp not in topology.SHARP_MODES:
        fail("--sharp", f"expected one of {', '.join(topology.SHARP_MODES)}, got {sharp!r}")
    if network_name not in network.MODELS:
        raise unknown_name("--network", "network model", network_name, network.MODELS)
    check_count(gpus, "--gpus", config.MAX_GPUS, "a plausibility bound: about fifty times the largest clusters")
    if gpus < 2:  # one GPU sends nothing: 0 ns and an infinite algbw were printed (round 35)
        fail("--gpus", f"a collective needs at least 2 GPUs, got {gpus} (one GPU has nothing to send or receive)")
    check_count(gpus_per_node, "--gpus-per-node", config.MAX_GPUS_PER_NODE, "the largest NVLink domain announced")
    limits.check_cluster_memory(gpus, "--gpus")  # before the fabric is built
    if not topology_name.strip() or not topology_name.isprintable():
        fail("--topology", f"expected a builtin fabric or a file, got {topology_name!r}")
    check_name(Path(topology_name), "--topology")
    if step_factor < 2:
        fail("--step-factor", f"expected an integer >= 2, got {step_factor}")
    low, high = _size(min_bytes, "--min-bytes"), _size(max_bytes, "--max-bytes")
    if low > high:
        fail("--max-bytes", f"{max_bytes} is below --min-bytes {min_bytes}")
    gpu = hardware.gpu(gpu_name, field="--gpu")
    nic = hardware.nic(nic_name, field="--nic")
    try:
        fabric = topology.build(
            topology_name,
            gpus=gpus,
            gpus_per_node=min(gpus_per_node, gpus),
            gpu=gpu,
            nic=nic,
            options=_topology_options(topology_option),
            sharp=sharp,
        )
    except ScenarioError as err:
        if err.field == "cluster.sharp":
            raise ScenarioError("--sharp", err.message) from None
        if err.field.startswith("cluster.topology_options"):
            raise ScenarioError("--topology-option", f"{err.field.rsplit('.', 1)[-1]}: {err.message}") from None
        if err.field.startswith("--"):  # an option's own error (--topology-option foo): as it is
            raise
        raise ScenarioError("--topology", str(err) if not err.field.startswith("cluster") else err.message) from None
    group = list(range(gpus)) if op != "sendrecv" else [0, gpus - 1]
    rows = [_row(op, group, size, algorithm, protocol, fabric, network_name, gpu)
            for size in message_sizes(low, high, step_factor)]
    if as_json:
        typer.echo(outputs.dumps(rows))
        return
    table = Table(title=f"{op} on {len(group)} x {gpu.name}, {fabric.name}, {network_name} model")
    for column in ("size", "time", "algbw", "busbw", "algorithm"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            units.fmt(row["bytes"], units.BYTES),
            units.fmt(row["time_s"], units.SECONDS),
            units.fmt(row["algbw_bytes_per_s"], units.BYTES_PER_S),
            units.fmt(row["busbw_bytes_per_s"], units.BYTES_PER_S),
            f"{row['algorithm']}/{row['protocol']}",
        )
    Terminal().print(table)
