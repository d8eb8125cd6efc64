"""Round 26's variants of the Nemotron-4 15B rows (scripts/dp_ring_scaling.py ``--angles``;
docs/calibration/round-26.md, "Round 26: Nemotron-4 15B's data-parallel time, five more angles"): each variant changes
the keys it names and no other, against the bundled scenario read here; an unknown variant is refused rather than run as
the bundled row."""

from __future__ import annotations

import copy

import pytest
from scripts_loader import load_script

from simcluster.core import catalog
from simcluster.spec import config

dp_ring_scaling = load_script("dp_ring_scaling")
RAW = catalog.load("scenarios/nemotron4-15b-768-h100")

# variant -> the (section, key, value) it sets and the keys it drops; everything else must stay as the bundled row's
EXPECTED = {
    "bundled": ((), ()),
    "apex": ((("parallelism", "grad_buckets", "apex"),), ("grad_bucket_size",)),
    "apex bf16": (
        (("parallelism", "grad_buckets", "apex"), ("parallelism", "grad_reduce_dtype", "bf16")),
        ("grad_bucket_size",),
    ),
    "no param gather": ((("parallelism", "overlap_param_gather", False),), ()),
    "sharp": ((("cluster", "sharp", "on"),), ()),
    "bf16 grads": ((("parallelism", "grad_reduce_dtype", "bf16"),), ()),
    "micro batch 2": ((("training", "micro_batch_size", 2),), ()),
}


@pytest.mark.parametrize("change", sorted(EXPECTED))
def test_each_variant_changes_its_keys_only(change):
    sets, drops = EXPECTED[change]
    want = copy.deepcopy(RAW)
    for section, key, value in sets:
        want[section][key] = value
    for key in drops:
        want["parallelism"].pop(key)
    assert dp_ring_scaling._variant(RAW, change) == config.from_dict(want)
    if change != "bundled":
        assert dp_ring_scaling._variant(RAW, change) != config.from_dict(RAW)


def test_every_angle_names_a_known_variant():
    for _, change, rings in dp_ring_scaling.ANGLES:
        assert (change or "bundled") in EXPECTED
        assert set(rings) <= {"simple_only", "step_latency_s"}


def test_an_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="unknown variant"):
        dp_ring_scaling._variant(RAW, "bf16 gradients")


def test_angles_is_exclusive_with_the_other_tables(capsys):
    with pytest.raises(SystemExit) as refused:
        dp_ring_scaling.main(["--angles", "--growth"])
    assert refused.value.code == 2
