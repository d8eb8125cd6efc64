"""docs/scenario.md documents every key a scenario accepts: each field of the cluster, model, MoE, training,
parallelism and economics sections has a row of its section's table, and every key of the nested specs (inline GPU
and NIC, MLA, variability, reliability) is named on the page. A key added to ``simcluster.spec`` without a line here
fails."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest

from simcluster.spec import config, hardware, model, reliability, variability

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
