"""Package data files (hardware, models, efficiency curves): loaded once, read-only."""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml


@cache
def load(name: str) -> dict:
    """The parsed YAML file ``simcluster/data/<name>.yaml``."""
    text = resources.files("simcluster").joinpath("data", f"{name}.yaml").read_text()
    return yaml.safe_load(text)
