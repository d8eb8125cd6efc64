"""training.moe_token_drop at the command line: only a boolean is read (a loose "yes" or 1 is refused in one line,
exit 2, as every other boolean option), the refusals of true where NeMo's callback cannot run are one line, and
compare shows the token drop each run resolved with a note when it differs (a varied all-to-all switches it)."""

from __future__ import annotations

import copy

import pytest
from scenario_data import MIXTRAL

from tests.cli.test_hostile_inputs import one_line_refusal


def _mixtral(training=None, **parallelism) -> dict:
    data = copy.deepcopy(MIXTRAL)
    data["training"].update(training or {})
    data["parallelism"].update(parallelism)
    return data


@pytest.mark.parametrize(("training", "parallelism"), [
    ({"moe_token_drop": "yes"}, {}),
    ({"moe_token_drop": 1}, {}),
    ({"moe_token_drop": True}, {"ep_alltoall": "hierarchical"}),
    ({"moe_token_drop": True, "logits_memory": "torch_fp32"}, {}),
])
def test_loose_values_and_impossible_token_drop_are_refused_in_one_line(cli, write_scenario, tmp_path, training,
                                                                        parallelism):
    code, _out, err = cli("run", write_scenario(_mixtral(training, **parallelism)), "--out", tmp_path / "out")
    one_line_refusal(code, err, "training.moe_token_drop")


def test_compare_shows_each_runs_token_drop_and_notes_when_it_differs(cli, write_scenario, tmp_path):
    direct = write_scenario({**_mixtral(), "name": "direct"}, "direct.yaml")
    hierarchical = write_scenario({**_mixtral(ep_alltoall="hierarchical"), "name": "hier"}, "hier.yaml")
    code, out, err = cli("compare", direct, hierarchical, "--out", tmp_path / "out")
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("│ MoE token drop"))
    assert [cell.strip() for cell in row.split("│")[2:4]] == ["yes", "no"]
    assert "training.moe_token_drop differs" in " ".join(out.split())
    assert "moe_token_drop" in (tmp_path / "out" / "compare.csv").read_text().splitlines()[0]
