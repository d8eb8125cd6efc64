"""Every bundled scenario loads, and fits its GPUs unless it is a published run the memory model is known to
over-count (a held-out case marked ``memory_check: false``, docs/calibration.md). A validation case that restates
its published layout for memory (``memory_layout``) must fit as published."""

import re
from pathlib import Path

import pytest

from simcluster.parallel import memory
from simcluster.spec import config, jobs
from simcluster.studies import scenarios, validation

OVER_COUNTED = {c["scenario"] for c in validation.held_out_cases() if not c.get("memory_check", True)}
CASES = {c["scenario"]: c for c in validation.cases() + validation.held_out_cases()}


JOBS = [name for name in config.bundled_names() if jobs.is_jobs_file(name)]


@pytest.mark.parametrize("name", [name for name in config.bundled_names() if name not in JOBS])
def test_bundled_scenario_loads_and_fits_unless_a_known_over_count(name):
    scenario = config.load(name)
    if name in CASES:
        scenario = validation.published_layout(CASES[name], scenario)
    fits = memory.per_gpu_memory(scenario).total_bytes <= scenario.cluster.gpu.hbm_capacity
    assert fits != (name in OVER_COUNTED), name


def test_every_validation_case_is_a_bundled_scenario():
    names = set(config.bundled_names())
    assert {c["scenario"] for c in validation.cases() + validation.held_out_cases()} <= names


@pytest.mark.parametrize("name", JOBS)
def test_bundled_jobs_scenario_loads_and_every_job_fits(name):
    for job in jobs.load(name).jobs:
        assert memory.per_gpu_memory(job.scenario).total_bytes <= job.scenario.cluster.gpu.hbm_capacity, job.name
# --- labels: what each scenario is for, grouped by the question it answers (README, `simcluster run --list`) ---

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_bundled_scenario_says_in_one_line_what_it_is_for():
    for name in config.bundled_names():
        text = scenarios.description(name)
        assert 20 <= len(text) <= config.MAX_DESCRIPTION_CHARS and "\n" not in text, name


def test_every_bundled_scenario_answers_exactly_one_question():
    grouped = [name for group in scenarios.groups() for name, _ in group.scenarios]
    assert sorted(grouped) == config.bundled_names()  # groups() also asserts no scenario is in two


def test_the_validation_groups_are_the_calibration_and_held_out_sets():
    by_command = {group.command: {name for name, _ in group.scenarios} for group in scenarios.groups()}
    assert by_command["simcluster validate"] == {c["scenario"] for c in validation.cases()}
    assert by_command["simcluster validate --held-out"] == {c["scenario"] for c in validation.held_out_cases()}


def test_readme_section_is_the_generated_one_and_names_every_bundled_scenario():
    text = README.read_text()
    start, end = text.index(scenarios.README_BEGIN), text.index(scenarios.README_END) + len(scenarios.README_END)
    section = text[start:end]
    assert section == scenarios.readme_section(), (
        "README.md's scenario section drifted: regenerate it with `python -m simcluster.studies.scenarios`")
    named = set(re.findall(r"`([a-z0-9][\w.-]*)`", section.split("\n\n", 1)[1]))
    named -= {w for group in scenarios.groups() for w in re.findall(r"`([^`]+)`", group.question)}
    assert named == set(config.bundled_names())


def test_run_list_prints_every_scenario_under_its_question(cli):
    code, stdout, _ = cli("run", "--list")
    assert code == 0
    for group in scenarios.groups():
        assert group.question.split("?")[0] in " ".join(stdout.split())
        for name, _ in group.scenarios:
            assert name in stdout
    assert cli("run", "gpt3-175b-1024-h100", "--list")[0] == 2
