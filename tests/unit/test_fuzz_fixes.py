"""The defects round 19's fuzzing of the bundled scenarios found (tests/unit/test_fuzz_scenarios.py), one test each:
the exact exit code, and the field the one-line message names."""

from __future__ import annotations

import copy

import pytest
import yaml
from rich.console import Console

from simcluster.core.errors import ScenarioError
from simcluster.spec import config


def _bundled(name: str) -> dict:
    return yaml.safe_load(config.resolve_path(name).read_text())


def test_a_valid_tiny_sequence_runs_instead_of_failing_an_assertion(cli, write_scenario, tmp_path):
    """Mixtral 8x7B on 64 H100 at seq_len 16: the flow model's clock ran 1.2e-12 (relative) ahead of the event loop's
    through rounding, and 'a class cannot start in the past' ended the run with a traceback and exit 1."""
    data = _bundled("mcore-mixtral-8x7b-64-h100")
    data["training"]["seq_len"] = 16
    code, _, err = cli("run", write_scenario(data), "--json", "--out", tmp_path / "o")
    assert code == 0 and "Traceback" not in err, err
    assert (tmp_path / "o" / "summary.json").is_file()


@pytest.mark.parametrize("vary", ["parallelism=1", "training=x", "cluster=[1]"])
def test_sweep_varying_a_whole_section_exits_2_naming_it(cli, write_scenario, small_scenario, tmp_path, vary):
    """``--vary parallelism=1`` replaced the section by a number: AttributeError traceback, exit 1."""
    section = vary.partition("=")[0]
    code, _, err = cli("sweep", write_scenario(small_scenario), "--gpus", "16", "--vary", vary, "--network",
                       "analytic", "--jobs", "1", "--no-plots", "--out", tmp_path / "s")
    assert code == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: sweep: all 1 runs failed") and f"): {section}: expected a mapping of {section} " \
        f"fields" in last, err


@pytest.mark.parametrize(("written", "read"), [("on", "on"), ("off", "off"), ("'on'", "on"), ("auto", "auto")])
def test_sharp_written_bare_is_the_word_not_a_boolean(write_scenario, small_scenario, written, read):
    """YAML 1.1 reads the documented ``sharp: on`` / ``off`` as true / false: they were refused ('got True')."""
    text = yaml.safe_dump(small_scenario).replace("cluster:\n", f"cluster:\n  sharp: {written}\n", 1)
    assert config.load(write_scenario(text)).cluster.sharp == read


def test_sharp_on_where_the_fabric_has_none_names_the_field(cli, write_scenario, small_scenario, tmp_path):
    small_scenario["cluster"]["topology"] = "nvswitch-node"
    small_scenario["cluster"]["nodes"] = 1
    small_scenario["cluster"]["gpus_per_node"] = 16
    text = yaml.safe_dump(small_scenario).replace("cluster:\n", "cluster:\n  sharp: on\n", 1)
    code, _, err = cli("run", write_scenario(text), "--json", "--out", tmp_path / "o")
    assert code == 2 and err.startswith("error: cluster.sharp: on needs InfiniBand switches") \
        and err.count("\n") == 1, err


@pytest.mark.parametrize("gpu", ["a100-80gb-sxm", "a100-40gb-sxm"])
def test_fp8_on_a_gpu_without_fp8_tensor_cores_is_refused_where_it_enters(cli, write_scenario, tmp_path, gpu):
    """fp8 on an A100 validated, built the simulation and was refused only when the run's MFU was computed."""
    data = _bundled("nemo2407-llama3-8b-8-h100-fp8")
    data["cluster"]["gpu"] = gpu
    with pytest.raises(ScenarioError) as caught:
        config.from_dict(copy.deepcopy(data))
    assert caught.value.field == "training.precision"
    assert str(caught.value) == (f"training.precision: {gpu} has no fp8 peak listed (has: bf16, fp16, fp32, "
                                 "tf32)")
    code, _, err = cli("run", write_scenario(data), "--json", "--out", tmp_path / "o")
    assert code == 2 and err == f"error: {caught.value}\n"


class _Clock:
    def __init__(self, times):
        self.times = list(times)

    def __call__(self):
        return self.times.pop(0)


@pytest.mark.parametrize(("steps", "second_step_s", "warned"), [(1000, 0.1, True), (1000, 0.05, False),
                                                                 (2, 100.0, False), (62, 1.01, True)])
def test_a_run_of_minutes_is_announced_after_its_second_step(steps, second_step_s, warned):
    """10^4 steps are valid (a plausibility bound) and each is simulated: 1,024 steps of an 8-GPU Llama 3 8B took
    40 s in round 19's fuzzing with nothing said. After its second step, a run whose remaining steps would take over
    LONG_RUN_S says so on one line; a shorter one says nothing."""
    from simcluster.cli import run

    console = Console(record=True, width=400)
    advanced = []
    notice = run.LongRunNotice(console, steps, advanced.append)
    notice._clock = _Clock([10.0, 10.0 + second_step_s])
    for index in range(min(steps, 5)):
        notice(index)
    assert advanced == list(range(min(steps, 5)))
    text = console.export_text()
    assert (text.count("warning:") == 1) is warned and text.count("\n") <= 1, text
    if warned:
        assert text.startswith(f"warning: {steps:,} steps to simulate at about {second_step_s:.2g} s each")
        assert "lower training.steps or --steps" in text


@pytest.mark.parametrize("as_json", [False, True])
def test_the_long_run_notice_goes_to_stderr_and_leaves_stdout_as_it_was(cli, write_scenario, small_scenario,
                                                                        tmp_path, monkeypatch, as_json):
    """The notice stands in for the progress bar: stderr, with or without --json; stdout keeps the summary (and
    parses as JSON with --json)."""
    import json

    from simcluster.cli import run

    monkeypatch.setattr(run, "LONG_RUN_S", -1.0)   # any pace announces itself
    args = ["run", write_scenario(small_scenario), "--steps", "3", "--network", "analytic", "--out", tmp_path / "o"]
    code, out, err = cli(*args, *(["--json"] if as_json else []))
    assert code == 0, err
    assert err.count("warning: 3 steps to simulate at about") == 1 and "warning: 3 steps" not in out, (out, err)
    if as_json:
        assert json.loads(out)["name"] == small_scenario["name"]


def test_interleaving_without_pipeline_parallelism_exits_2_naming_virtual_stages(cli, write_scenario, tmp_path):
    """virtual_stages: 3 with pp: 1 ran (step +1e-5); Megatron-Core's parallel_state.initialize_model_parallel raises
    'pipeline-model-parallel size should be greater than 1 with interleaved schedule'."""
    data = _bundled("nemo2409-llama31-8b-8-h100-bf16")
    data["parallelism"].update(pp=1, virtual_stages=3)
    code, _, err = cli("run", write_scenario(data), "--json", "--out", tmp_path / "o")
    assert code == 2 and err.startswith("error: parallelism.virtual_stages: 3 model chunks per pipeline rank need "
                                        "pp > 1") and err.count("\n") == 1, err
    data["parallelism"]["virtual_stages"] = 1
    config.from_dict(data)


def test_tp_comm_overlap_at_tp_1_is_accepted_and_changes_nothing():
    """Nothing to overlap at tp 1: the step is the same with the flag on or off (torchtitan ignores async TP without
    TP; Megatron-LM r0.8 ran the Megatron-Core README's tp-1 row with --tp-comm-overlap, megatron-1.7b-h100)."""
    from simcluster.engine import simulate

    data = _bundled("dao2023-gpt3-1.3b-2k-8-a100")
    assert data["parallelism"]["tp"] == 1
    data["training"]["steps"] = 1
    steps = {flag: simulate(config.from_dict({**data, "parallelism": {**data["parallelism"], "tp_comm_overlap": flag}}),
                            network="analytic").summary["step_time_s"] for flag in (True, False)}
    assert steps[True] == steps[False]
