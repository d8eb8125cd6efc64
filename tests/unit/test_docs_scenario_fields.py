"""docs/scenario.md documents every key a scenario accepts: each field of the cluster, model, MoE, training,
parallelism and economics sections has a row of its section's table, and every key of the nested specs (inline GPU
and NIC, MLA, variability, reliability) is named on the page. A key added to ``simcluster.spec`` without a line here
fails."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from simcluster.spec import config, hardware, jobs, model, reliability, variability

PAGE = (Path(__file__).resolve().parents[2] / "docs" / "scenario.md").read_text()
TABLED = {"cluster": config.Cluster, "model": model.TransformerSpec, "model.moe": model.MoESpec,
          "training": config.Training, "parallelism": config.Parallelism, "economics": config.Economics}
NAMED = {"cluster.gpu": hardware.GpuSpec, "cluster.nic": hardware.NicSpec, "model.mla": model.MLASpec,
         "variability": variability.Variability, "variability.stragglers": variability.Straggler,
         "reliability": reliability.Reliability}


def _rows() -> set[str]:
    """Every key a table row of the page starts with (`a`, `b` and `c` in "| `a`, `b`, `c` | ...")."""
    keys = set()
    for line in PAGE.splitlines():
        first = re.match(r"\| ([^|]+) \|", line)
        if first:
            keys |= set(re.findall(r"`([a-z_0-9]+)`", first.group(1)))
    return keys


ROWS = _rows()


@pytest.mark.parametrize(("section", "key"), [(s, k) for s, spec in TABLED.items() for k in spec.model_fields])
def test_every_field_has_a_row(section, key):
    assert key in ROWS, f"docs/scenario.md has no row for {section}.{key}"


@pytest.mark.parametrize(("section", "key"), [(s, k) for s, spec in NAMED.items() for k in spec.model_fields])
def test_every_nested_key_is_named(section, key):
    assert re.search(rf"\b{key}\b", PAGE), f"docs/scenario.md does not name {section}.{key}"


def _defaults() -> list[tuple[str, str, str]]:
    """(section, key, the default as the page writes it) of every field whose default is a plain value."""
    out = []
    for section, spec in TABLED.items():
        for key, field in spec.model_fields.items():
            value = field.default
            if field.default_factory is not None or value is None or not isinstance(value, (str, int, float)):
                continue   # required, computed (null: see the row) or a collection
            if key in ("name", "source"):
                continue   # labels, one row for both
            out.append((section, key, str(value).lower() if isinstance(value, bool) else str(value)))
    return out


@pytest.mark.parametrize(("section", "key", "default"), _defaults())
def test_every_plain_default_is_the_codes(section, key, default):
    """The default column of the key's row (any of its rows: `ffn_hidden` is in two tables) is the code's."""
    cells = re.findall(rf"^\| [^|]*`{key}`[^|]* \| ([^|]*) \|", PAGE, re.M)
    assert default in [cell.strip().strip('`"') for cell in cells], f"{section}.{key}: default {default}, page {cells}"


def _literals(annotation) -> list:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [value for arg in typing.get_args(annotation) for value in _literals(arg)]


@pytest.mark.parametrize(("section", "key", "value"), [(s, k, v) for s, spec in TABLED.items()
                                                        for k, f in spec.model_fields.items()
                                                        for v in _literals(f.annotation)])
def test_every_allowed_value_is_in_its_row(section, key, value):
    rows = " ".join(re.findall(rf"^\| [^|]*`{key}`[^|]*\|.*$", PAGE, re.M))
    assert re.search(rf"(?<![\w.]){re.escape(str(value))}(?![\w.])", rows), f"{section}.{key}: {value!r} not documented"


# --- the other way: every key the page documents is one the code reads ----------------------------------------------

SECTIONS = {"cluster": [config.Cluster], "model": [model.TransformerSpec, model.MoESpec],
            "training": [config.Training], "parallelism": [config.Parallelism], "economics": [config.Economics]}


def _section_tables(section: str) -> list[set[str]]:
    """The keys of each `| field | default | meaning |` table under the page's "## `section`" heading, in order."""
    body = PAGE.split(f"\n## `{section}`\n", 1)[1].split("\n## ", 1)[0]
    tables = []
    for table in re.findall(r"^\| field \| default \| meaning \|\n\|[-|]+\|\n((?:\|.*\n?)+)", body, re.M):
        tables.append({key for line in table.splitlines()
                       for key in re.findall(r"`([a-z_0-9]+)`", line.split("|")[1])})
    return tables


@pytest.mark.parametrize("section", SECTIONS)
def test_every_documented_key_is_a_field_of_its_section(section):
    tables = _section_tables(section)
    assert len(tables) == len(SECTIONS[section])
    for keys, spec in zip(tables, SECTIONS[section], strict=True):
        assert keys and keys <= set(spec.model_fields), f"{section}: not fields {sorted(keys - set(spec.model_fields))}"


def test_every_top_level_key_has_its_heading():
    keys = set(config.Scenario.model_fields) | set(jobs.JobsScenario.model_fields)
    headings = set(re.findall(r"^## `([a-z_]+)`$", PAGE, re.M)) | {"jobs"}  # "## Several jobs on one fabric (`jobs`)"
    assert keys <= headings and "## Several jobs on one fabric (`jobs`)" in PAGE


def test_the_jobs_table_is_the_job_spec():
    rows = set(re.findall(r"^\| `jobs\[\]\.([a-z_]+)`", PAGE, re.M))
    assert rows <= set(jobs.Job.model_fields) and {"name", "scenario", "placement", "model"} <= rows
    for key in jobs.Placement.model_fields:
        assert re.search(rf"`\{{[^`]*\b{key}\b", PAGE), f"placement {key} is not documented"


@pytest.mark.parametrize(("spec", "key", "written"), [
    (hardware.GpuSpec, "nvlink_generation", "`nvlink_generation` (default {})"),
    (hardware.GpuSpec, "nvls", "`nvls` (NVSwitch in-network reduction, default {})"),
    (hardware.NicSpec, "latency", '`latency` (`"{}"`)'),
    (hardware.NicSpec, "host", "`{}` (default)"),
])
def test_nested_defaults_are_the_codes(spec, key, written):
    default = spec.model_fields[key].default
    assert written.format(str(default).lower() if isinstance(default, bool) else default) in PAGE


def test_every_fabric_builders_options_are_its_topologies_md_row():
    """`cluster.topology_options` keys: docs/topologies.md's table of builtin fabrics lists, per fabric, exactly the
    options its builder takes (fabric.builders.BUILDERS)."""
    from simcluster.fabric import builders

    page = (Path(__file__).resolve().parents[2] / "docs" / "topologies.md").read_text()
    table = page.split("\n## Builtin fabrics\n", 1)[1].split("\n## ", 1)[0]
    rows = {name: set(re.findall(r"`([a-z_]+)`", options))
            for name, options in re.findall(r"^\| `([a-z-]+)` \| [^|]* \| ([^|]*) \|$", table, re.M)}
    assert {name: set(options) for name, (_, options) in builders.BUILDERS.items()} == rows
