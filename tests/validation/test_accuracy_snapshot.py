"""data/accuracy.yaml (what ``simcluster run``'s expected error reads, outcomes/accuracy_card.py) holds today's
validation errors: each run's snapshot error within SNAPSHOT_TOLERANCE of the error the validation suite computes
for it now.

Costs no simulation of its own: each run is the ``case_result`` the per-run tests of test_training_calibration.py
simulate (tests/validation/conftest.py: once per session, shared by the pytest-xdist workers through the session's
folder), so whichever test reaches a run first simulates it and the other reads it.
"""

from __future__ import annotations

import pytest

from simcluster.outcomes import accuracy_card
from simcluster.studies import validation

# Half a point: the card quotes errors to 0.1 point and the snapshot stores them to 0.01; a change that moves a run by
# more than this should reach the card (regenerate), one that moves it less does not change what a user reads.
SNAPSHOT_TOLERANCE = 0.005
REGENERATE = ("regenerate the snapshot: simcluster validate --json > CAL.json; simcluster validate --held-out --json "
              "> HELDOUT.json; python scripts/accuracy_tables.py CAL.json HELDOUT.json --label 'main @ COMMIT' "
              "--write-data simcluster/data/accuracy.yaml")

CASES = {c["scenario"]: c for c in validation.cases() + validation.held_out_cases()}
SNAPSHOT = {r["scenario"]: r for r in accuracy_card.snapshot()["runs"]}


@pytest.mark.parametrize("case", list(CASES))
def test_snapshot_error_is_todays_validation_error(case_result, case):
    assert case in SNAPSHOT, f"{case} has no entry in data/accuracy.yaml; {REGENERATE}"
    error = case_result(CASES[case]).error
    stored = SNAPSHOT[case]["error"]
    assert abs(error - stored) <= SNAPSHOT_TOLERANCE, (
        f"{case}: validation error now {error:+.2%}, data/accuracy.yaml says {stored:+.2%} (more than "
        f"{SNAPSHOT_TOLERANCE * 100:.1f} points apart); {REGENERATE}")
