"""Package data files (hardware, models, efficiency curves): loaded once, read-only."""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml


@cache
def load(name: str) -> dict:
    """The parsed YAML file ``simcluster/data/<name>.yaml``."""
    text = resources.files("simcluster").joinpath("data", f"{name}.yaml").read_text(encoding="utf-8")
    # libyaml's parser when installed (several times faster; the same safe constructors build the data)
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
