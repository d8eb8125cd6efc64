"""docs/architecture.md names every module of the package in its layer's row of the layer table: a module added to
simcluster/ without a word on the page fails (round 38: 30 modules were unnamed there, among them engine/overlap,
engine/variability, core/table and replay/formats/protobuf)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "architecture.md").read_text()
ROWS = dict(re.findall(r"^\| `([a-z]+)/` \| (.*)$", PAGE, re.M))
PACKAGE = ROOT / "simcluster"
MODULES = sorted(path.relative_to(PACKAGE) for path in PACKAGE.rglob("*.py")
                 if path.name not in ("__init__.py", "__main__.py") and len(path.relative_to(PACKAGE).parts) > 1)


def test_the_table_has_a_row_per_layer_folder():
    folders = {path.name for path in (ROOT / "simcluster").iterdir() if (path / "__init__.py").exists()}
    assert set(ROWS) == folders


@pytest.mark.parametrize("module", MODULES, ids=str)
def test_every_module_is_named_in_its_layers_row(module):
    row = ROWS.get(module.parts[0], "")
    assert f"`{module.stem}`" in row or f"`{module}`" in row or f"`{module.parts[0]}/{module.name}`" in row, \
        f"docs/architecture.md's `{module.parts[0]}/` row does not name {module}"
