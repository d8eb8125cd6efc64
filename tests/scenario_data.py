"""Scenario dictionaries with ``section__key=value`` changes applied (shared by the tests; ``tests/`` is on the path
as the conftest's folder)."""

from __future__ import annotations

import copy

from simcluster.spec import config


def with_changes(data: dict, **changes) -> config.Scenario:
    """The scenario of ``data`` (left unchanged) with each ``section__key=value`` of ``changes`` set."""
    data = copy.deepcopy(data)
    for path, value in changes.items():
        section, key = path.split("__")
        data[section][key] = value
    return config.from_dict(data)
