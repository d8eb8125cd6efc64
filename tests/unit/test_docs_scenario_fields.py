"""docs/scenario.md documents every key a scenario accepts: each field of the cluster, model, MoE, training,
parallelism and economics sections has a row of its section's table, and every key of the nested specs (inline GPU
and NIC, MLA, variability, reliability) is named on the page. A key added to ``simcluster.spec`` without a line here
fails."""

from __future__ import annotations

import re
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
