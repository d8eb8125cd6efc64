"""bf16 Adam moments under ``optimizer: adam`` (Megatron-Core's own fp32 master shards, TE's FusedAdam holding the
moments) by Megatron-Core release, read from the released wheels (data/mcore_versions.yaml [wheel-master]):

- 0.11.0 and 0.12.0 (megatron/core/optimizer/__init__.py) pass TE ``master_weights: True`` whenever
  ``use_precision_aware_optimizer``: bf16 moments there are ``adam_precision_aware``, never ``adam``;
- 0.13.0 first has OptimizerConfig.fp8_recipe and ``use_precision_aware_optimizer_no_fp8_or_ds_fp8``: with an fp8
  recipe neither None nor delayed (current scaling, MXFP8) and fp32 main params Megatron-Core keeps the master;
- a bf16 run gets such a recipe on its optimizer config only from Megatron-Bridge (0.14 on).
docs/calibration/round-29.md, "Round 29: bf16 Adam moments by release".
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from simcluster.core import catalog
from tests.conftest import SMALL


def _write(tmp_path: Path, training: dict) -> Path:
    data = copy.deepcopy(SMALL)
    data["training"] |= training
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


FP8_CURRENT = {"precision": "fp8", "fp8_recipe": "current"}


@pytest.mark.parametrize(("release", "training"), [
    ("0.11", {}),
    ("0.12", {}),
    ("0.13", {}),  # a bf16 run: the optimizer config's tensorwise recipe is Megatron-Bridge's (0.14)
    ("0.11", FP8_CURRENT),
    ("0.12", FP8_CURRENT),
])
def test_bf16_moments_under_adam_before_the_release_that_keeps_its_own_master_are_refused(cli, tmp_path, release,
                                                                                         training):
    path = _write(tmp_path, {"mcore_version": release, "optimizer": "adam", "adam_moments_dtype": "bf16", **training})
    code, _, err = cli("run", path, "--network", "analytic", "--out", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: training.adam_moments_dtype:"), err
    first = "0.14" if not training else "0.13"
    assert f"{release!r}" in err and f"{first!r}" in err and "adam_precision_aware" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("training", [
    {"mcore_version": "0.13", "optimizer": "adam", "adam_moments_dtype": "bf16", **FP8_CURRENT},
    {"mcore_version": "0.14", "optimizer": "adam", "adam_moments_dtype": "bf16"},
    {"mcore_version": "0.12", "optimizer": "adam_precision_aware", "adam_moments_dtype": "bf16"},
    {"mcore_version": "0.11", "optimizer": "adam", "adam_moments_dtype": "fp32"},
])
def test_bf16_moments_where_the_release_runs_them_still_run(cli, tmp_path, training):
    code, out, err = cli("run", _write(tmp_path, training), "--network", "analytic", "--json", "--out", tmp_path / "o")
    assert code == 0, err
    assert json.loads(out)["step_time_s"] > 0


def test_the_boundaries_sit_between_the_precision_aware_optimizer_and_megatron_bridge():
    """The wheels' order: the precision-aware optimizer (0.11) before Megatron-Core's own master with bf16 moments
    (0.13), which is not after the first Megatron-Bridge release (0.14)."""
    table = catalog.load("mcore_versions")
    order = table["releases"]
    assert (order.index(table["precision_aware_optimizer"]) < order.index(table["own_master_bf16_moments"])
            <= order.index(table["megatron_bridge"]))
