"""spec/stack.py: the software stack family read from a scenario's config, on one bundled scenario per stack (the
framework each one's source ran: docs/calibration/round-22.md "Round 22: what the held-out error tracks"), the config
key that decides it (a scenario's name plays no part), and scripts/error_features.py using the same rule (no twin)."""

import pytest
from scripts_loader import load_script

from simcluster.spec import config, jobs, stack


@pytest.mark.parametrize(("name", "family"), [
    ("megatron-1.2b-a100-node", "megatron-lm-2020"), ("narayanan2021-1.7b-a100", "megatron-lm-2021"),
    ("smith2022-mtnlg-530b-280-a100", "deepspeed-pipeline"), ("mpt-7b-8-h100", "llm-foundry-fsdp"),
    ("torchtitan-llama31-8b-8-h100-fp8-32k", "torchtitan"), ("dao2023-gpt3-1.3b-2k-8-a100", "flash-attn-gpt"),
    ("korthikanti2022-22b-a100", "megatron-lm-2022-23"), ("nemo2409-gpt3-175b-128-h100-bf16", "mcore-te1"),
    ("nemo2511-llama3-8b-8-b200-fp8", "mcore-te2")])
def test_stack_family_from_config(name, family):
    assert stack.family(config.load(name)) == family
    assert stack.name(family) != family or family == "torchtitan"   # every family has words


def test_the_config_decides_not_the_name():
    # the same scenario with torchtitan's fp32 loss memory is torchtitan's, whatever it is called
    d = config.rebuildable(config.load("megatron-1.7b-h100"))   # defaults unset: they follow the new stack
    assert stack.family(config.from_dict(d)) == "mcore-te1"
    d["training"]["logits_memory"] = "torch_fp32"
    # the scenario states Megatron-Core DDP's NaN check (round 34); torchtitan has no such check, and the config
    # rightly refuses it on a stack whose buckets are not Megatron-Core's, so the variant leaves it unset
    d["parallelism"].pop("check_for_nan_in_grad")
    assert stack.family(config.from_dict(d)) == "torchtitan"


def test_error_features_uses_the_package_rule():
    assert load_script("error_features").stack_family is stack.family


# The stack each publication's runs used, by the prefix the bundled scenario names carry (the source's framework,
# docs/calibration/round-22.md "Round 22: what the held-out error tracks"): an independent check of the config rule,
# which never reads the name. Sources whose runs span stacks (NVIDIA's pages across TE 1 and 2) are left out.
SOURCE_STACK = {"bigscience": "deepspeed-pipeline", "smith2022": "deepspeed-pipeline", "dao2023": "flash-attn-gpt",
                "mpt": "llm-foundry-fsdp", "torchtitan": "torchtitan", "narayanan2021": "megatron-lm-2021",
                "megatronlm": "megatron-lm-2021", "korthikanti2022": "megatron-lm-2022-23", "nemo2407": "mcore-te1",
                "nemo2409": "mcore-te1", "nemo2509": "mcore-te2", "nemo2511": "mcore-te2"}


def _bundled_scenarios():
    """Every bundled training scenario: each single-job file, and each job of a jobs file."""
    for name in config.bundled_names():
        if jobs.is_jobs_file(name):
            yield from ((f"{name}/{job.name}", job.scenario) for job in jobs.load(name).jobs)
        else:
            yield name, config.load(name)


def test_every_bundled_scenario_has_a_named_stack():
    seen = {}
    for name, scenario in _bundled_scenarios():
        seen[name] = stack.family(scenario)
        assert seen[name] in stack.NAMES and seen[name] != "other", name
        source = name.split("-")[0]
        if source in SOURCE_STACK:
            assert seen[name] == SOURCE_STACK[source], name
    assert len(seen) > len(SOURCE_STACK)
    # every family the rule knows, but 'other', describes at least one bundled scenario
    assert set(seen.values()) == set(stack.NAMES) - {"other"}
