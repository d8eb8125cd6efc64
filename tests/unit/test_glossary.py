"""The glossary (data/glossary.yaml): docs/glossary.md is generated from it, its entries name real summary keys, and
`simcluster explain` finds a term by any alias."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from simcluster import simulate
from simcluster.core import glossary
from simcluster.core.errors import ScenarioError
from simcluster.spec import config, hardware

DOCS = Path(__file__).resolve().parents[2] / "docs" / "glossary.md"


def test_docs_page_is_the_generated_glossary():
    # regenerate with: python -m simcluster.core.glossary > docs/glossary.md
    assert DOCS.read_text() == glossary.markdown()


def test_every_summary_key_an_entry_names_is_in_a_run_summary(small_scenario):
    summary = simulate(config.from_dict(small_scenario), network="analytic").summary
    named = {key for entry in glossary.terms().values()
             for key in re.findall(r"summary\.([a-z_]+)", entry.get("where", ""))}
    assert named and named <= set(summary)


def _keys(value) -> set[str]:
    """Every key of a nested summary (dicts in dicts and lists)."""
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in _keys(item)}
    return {key for item in value for key in _keys(item)} if isinstance(value, list) else set()


def test_every_key_an_entry_lists_after_summary_is_in_a_run_summary(small_scenario):
    """'summary.exposed_comm_s, exposed_comm_by_parallelism_s, ...' and 'summary.symmetry: lower_bound_s, ...': the
    names after the first are summary keys too (a sub-key of the entry named before its colon), up to a name of
    another file ('links.csv ...'); the variability entry's keys appear with a variability section."""
    spec = config.from_dict({**small_scenario, "variability": "measured"})
    keys = _keys(simulate(spec, network="analytic").summary)
    listed = set()
    for entry in glossary.terms().values():
        where = entry.get("where", "")
        if where.startswith("summary.") or where.startswith("the summary's"):
            listed |= set(re.findall(r"\b[a-z]+_[a-z_]+\b", where.split("links.csv")[0].split("compare ")[0]))
    assert len(listed) >= 20 and sorted(listed - keys) == []


def test_the_mfu_entry_quotes_the_catalog_peak():
    peak_tflops = hardware.gpu("h100-sxm").peak_flop_per_s("bf16") / 1e12
    assert f"{peak_tflops:.0f} TFLOP/s" in glossary.lookup("MFU")[1]["text"]


@pytest.mark.parametrize("alias, name", [("mfu", "MFU"), ("Exposed_Comm_S", "exposed communication"),
                                         ("peak utilisation", "peak link utilisation"), ("PXN", "rail-only")])
def test_lookup_ignores_case_underscores_and_finds_aliases(alias, name):
    assert glossary.lookup(alias)[0] == name


def test_unknown_term_is_one_line_naming_the_closest(cli):
    with pytest.raises(ScenarioError, match="did you mean .MFU."):
        glossary.lookup("mfx")
    code, _, err = cli("explain", "mfx")
    assert code == 2 and "did you mean 'MFU'" in err


def test_explain_prints_the_entry_and_where_it_is(cli):
    code, out, _ = cli("explain", "exposed", "communication")
    assert code == 0 and "exposed_comm_by_link_class_s" in out


@pytest.mark.parametrize("words, name", [("busiest link", "busiest link utilisation"),
                                         ("exposed comm", "exposed communication"), ("fabric cap", "fabric capex")])
def test_the_start_of_one_term_finds_it_as_a_table_row_names_it(words, name):
    assert glossary.lookup(words)[0] == name


def test_the_start_of_several_terms_is_not_guessed():
    with pytest.raises(ScenarioError):
        glossary.lookup("p")  # pipeline bubble, peak link utilisation, pp, ...
