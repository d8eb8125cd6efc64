"""Helpers the CLI robustness tests share: a scenario written to a file, and the one-line-error assertion."""

from __future__ import annotations

from pathlib import Path

import yaml


def write_scenario(tmp_path: Path, data: dict, name: str = "s.yaml") -> Path:
    """``data`` as a scenario YAML file in ``tmp_path``."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def assert_one_line(code: int, err: str, expected_code: int) -> None:
    """The command exited ``expected_code`` with exactly one line on stderr and no traceback."""
    assert code == expected_code and err.count("\n") == 1 and "Traceback" not in err, (code, err)
