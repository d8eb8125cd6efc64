"""docs/scripts.md lists every script of ``scripts/`` once, and no script that is gone (round 35: the five new
analysis scripts of that round were named only inside docs/calibration.md's long sections)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_every_script_is_listed_once():
    listed = re.findall(r"^\| `([a-z0-9_]+\.py)` \| \S", (ROOT / "docs" / "scripts.md").read_text(), re.M)
    on_disk = sorted(p.name for p in (ROOT / "scripts").glob("*.py"))
    assert sorted(set(listed)) == sorted(listed), "a script listed twice"
    assert sorted(listed) == on_disk
