"""Helpers the CLI robustness tests share: a small scenario, one written to a file, a validate output of one case, the
one-line-error assertion."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

# One node, eight GPUs, a 1.3B model: the scenario the robustness tests edit (copy it: it is shared).
SMALL = {
    "name": "small",
    "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1, "topology": "nvswitch-node"},
    "model": "gpt3-1.3b",
    "training": {"seq_len": 1024, "global_batch_size": 16, "micro_batch_size": 1, "precision": "bf16"},
    "parallelism": {"tp": 2, "pp": 1, "dp": 4},
}


def write_scenario(tmp_path: Path, data: dict, name: str = "s.yaml") -> Path:
    """``data`` as a scenario YAML file in ``tmp_path``."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def write_validate_output(tmp_path: Path) -> Path:
    """A ``validate --json`` output of one calibration case (what the residual scripts read): tmp_path/cal.json."""
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({"cases": [{"scenario": "megatron-1.7b-h100", "source": "s", "family": "f",
                                           "error": 0.01, "step_time_s": 1.0}]}))
    return path


def assert_one_line(code: int, err: str, expected_code: int) -> None:
    """The command exited ``expected_code`` with exactly one line on stderr and no traceback."""
    assert code == expected_code and err.count("\n") == 1 and "Traceback" not in err, (code, err)
