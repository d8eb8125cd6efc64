"""Every ```yaml snippet in docs/ is accepted by the loader it illustrates.

A snippet with `cluster` and `model` is a whole scenario (``spec.config.from_dict``); one with `jobs` a scenario
of several jobs (a `scenario:` file reference takes the first job's sections: the page's file does not exist);
one with `nodes` and `links` a fabric file (``fabric.files.from_spec``); any other (a `cluster`, `reliability`
or `variability` section) is merged into a small valid scenario. A block offering alternatives ("# or" on a line
of its own) is split there. Booleans are strict, so a snippet writing `1` or `"true"` for a flag fails here as it
would for a user.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from simcluster.core import inputs
from simcluster.fabric import files
from simcluster.spec import config, jobs

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.M | re.S)
BASE = {"name": "snippet", "cluster": {"gpu": "h100-sxm", "nodes": 8}, "model": "gpt3-125m",
        "training": {"global_batch_size": 64}, "parallelism": {"dp": 64}}


def snippets() -> list[tuple[str, str]]:
    found = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 2
            for k, part in enumerate(re.split(r"^# or\n", match.group(1), flags=re.M)):
                found.append((f"{page.name}:{line}" + (f"#{k}" if k else ""), part))
    return found


def test_docs_have_yaml_snippets():
    assert len(snippets()) >= 6


@pytest.mark.parametrize(("where", "text"), snippets(), ids=[w for w, _ in snippets()])
def test_snippet_loads(where, text):
    data = inputs.parse_yaml(text, where)
    assert isinstance(data, dict), where
    if "links" in data and "nodes" in data:
        files.from_spec(data, where)
    elif "jobs" in data:
        first = data["jobs"][0]
        for job in data["jobs"]:
            if job.pop("scenario", None) is not None:   # the page's file: the first job's sections stand in
                for key in ("model", "training", "parallelism"):
                    job.setdefault(key, first[key])
        jobs.from_dict(data, where)
    elif "cluster" in data and "model" in data:
        config.from_dict(data, where)
    else:
        merged = {**BASE, **data}
        if "cluster" in data:   # a cluster of its own: a layout for its GPUs
            gpus = data["cluster"].get("nodes", 1) * data["cluster"].get("gpus_per_node", 8)
            merged["parallelism"], merged["training"] = {"dp": gpus}, {"global_batch_size": gpus}
        config.from_dict(merged, where)
