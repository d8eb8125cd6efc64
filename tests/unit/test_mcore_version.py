"""training.mcore_version: the Megatron-Core release a run used (docs/calibration/round-25.md, "Round 25: the
Megatron-Core release as a scenario key"; sources in data/mcore_versions.yaml).

What the releases do, read from the released wheels (PyPI megatron_core 0.8.0 and 0.9.0), not from simcluster:
- 0.8.0: ``DistributedOptimizer.zero_grad`` ends with ``self._dispatch_gather_model_params(all_gather_handle_index=0)``
  when ``overlap_param_gather``: the first parameter all-gather is dispatched at the step's start, before the
  pipeline schedule, so a later pipeline stage's gather runs while it waits for its first activations.
- 0.9.0: ``zero_grad`` dispatches nothing; ``_ParamAndGradBucketGroup.finish_param_sync``, called by DDP's forward
  pre-hook, dispatches a group "if ... not been dispatched" (the first one, ``align_param_gather`` False, as it is
  without a virtual pipeline) and waits for it: a later stage's gather starts when its first forward does, after the
  activations arrived, and is exposed whole (such a stage has one bucket: DDP turns bucketing off past the first
  stage).
Unset, the release is the GPU's era, as ``fp8_recipe``'s default reads it: NeMo 24.09's 0.9 (NeMo 24.09 user guide,
Software Component Versions) except on Blackwell, where it is the first Megatron-Bridge container's 0.14 (NeMo 25.09,
Megatron-Bridge docs/releases/software-versions.md), whose performance scripts run fp8 as current scaling.
"""

from __future__ import annotations

import pytest

from simcluster.core import catalog
from simcluster.core.errors import ScenarioError
from simcluster.engine import simulate
from simcluster.spec import config

NEMO_2409 = "0.9"          # NeMo 24.09 container: Megatron Core 0.9.0
MEGATRON_BRIDGE = "0.14"   # NeMo 25.09 container: Megatron Core 0.14.0 (Megatron-Bridge 0.1.0rc3)
PYPI_RELEASES = [f"0.{minor}" for minor in range(1, 20)]   # megatron-core 0.1.0 ... 0.19.2 on PyPI


def _data(gpu: str = "h100-sxm", training: dict | None = None, parallelism: dict | None = None) -> dict:
    return {
        "name": "mcore-version",
        "cluster": {"gpu": gpu, "gpus_per_node": 8, "nodes": 1},
        "model": "llama3-8b",
        "training": {"seq_len": 2048, "global_batch_size": 16, "micro_batch_size": 1, **(training or {})},
        "parallelism": {"tp": 1, "pp": 1, "dp": 8, "zero_stage": 1, **(parallelism or {})},
    }


def test_the_known_releases_are_pypis_and_hold_the_boundaries():
    data = catalog.load("mcore_versions")
    assert data["releases"] == PYPI_RELEASES == config.known_mcore_versions()
    for key in ("lazy_first_param_gather", "megatron_bridge"):
        assert data[key] in data["releases"]
    assert set(data["default"].values()) | set(data["nemo_containers"].values()) <= set(data["releases"])
    assert data["nemo_containers"]["24.09"] == data["default"]["other"] == NEMO_2409
    assert data["nemo_containers"]["25.09"] == data["default"]["blackwell"] == MEGATRON_BRIDGE


@pytest.mark.parametrize("value", [0.9, 0.10, 1, True, "0.9.0", "v0.9", "0.99", "1.0", "", "0.9 "])
def test_a_bad_release_names_the_field(value):
    with pytest.raises(ScenarioError) as error:
        config.from_dict(_data(training={"mcore_version": value}))
    assert error.value.field == "training.mcore_version"


def test_an_unquoted_release_is_explained():
    with pytest.raises(ScenarioError, match="YAML reads an unquoted 0.10 as the number 0.1"):
        config.from_dict(_data(training={"mcore_version": 0.10}))


def test_the_cli_refuses_a_bad_release_in_one_line(cli, write_scenario, tmp_path):
    path = write_scenario(_data(training={"mcore_version": "0.99"}))
    code, out, err = cli("run", path, "--out", tmp_path / "out")
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and err.startswith("error: training.mcore_version: '0.99' is not a known")


def test_another_stack_resolves_none_and_ignores_a_stated_release():
    """As te_version on a stack without Transformer Engine: a stated release is kept (a what-if that switches the
    stack keeps its keys) but not read; unset it resolves to none."""
    torchtitan = {"optimizer": "torch_adamw", "logits_memory": "torch_fp32"}
    assert config.from_dict(_data(training=torchtitan)).training.mcore_version is None
    stated = config.from_dict(_data(training={**torchtitan, "mcore_version": "0.14", "precision": "fp8"}))
    assert not stated.megatron_core and stated.training.fp8_recipe == "delayed"
    assert config.mcore_version_note(stated) is None


@pytest.mark.parametrize(("gpu", "release"), [("h100-sxm", NEMO_2409), ("a100-80gb-sxm", NEMO_2409),
                                              ("b200", MEGATRON_BRIDGE), ("gb200", MEGATRON_BRIDGE)])
def test_unset_the_release_is_the_gpus_era(gpu, release):
    assert config.from_dict(_data(gpu)).training.mcore_version == release


def test_a_rebuilt_scenario_resolves_the_release_anew():
    data = config.rebuildable(config.from_dict(_data("h100-sxm")))
    assert data["training"]["mcore_version"] is None
    data["cluster"]["gpu"] = "b200"
    assert config.from_dict(data).training.mcore_version == MEGATRON_BRIDGE
    stated = config.rebuildable(config.from_dict(_data("h100-sxm", training={"mcore_version": "0.8"})))
    assert stated["training"]["mcore_version"] == "0.8"


@pytest.mark.parametrize(("gpu", "release", "recipe"), [
    ("h100-sxm", None, "delayed"), ("b200", None, "current"),           # the GPU's era, as before
    ("h100-sxm", "0.14", "current"), ("h100-sxm", "0.15", "current"),   # Megatron-Bridge on Hopper: fp8_cs
    ("b200", "0.11", "delayed"), ("h100-sxm", "0.13", "delayed"),       # NeMo 2.x (25.02-25.07): delayed
])
def test_the_fp8_recipe_follows_a_stated_release(gpu, release, recipe):
    training = {"precision": "fp8", **({"mcore_version": release} if release else {})}
    assert config.from_dict(_data(gpu, training=training)).training.fp8_recipe == recipe


# ---- the era switch, against the exposure by hand -----------------------------------------------------------------
def _pipeline(version: str, virtual_stages: int = 1) -> dict:
    """Two pipeline stages over two nodes, two data-parallel replicas inside each node: the last stage's parameters
    in one bucket (untied output layer: no shared-embedding bucket), gathered over NVLink while the first stage's
    activations cross the network. Analytic network: each transfer's time is its own."""
    return {
        "name": "era",
        "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2, "nic": "connectx-7",
                    "topology": "rail-fat-tree"},
        "model": {"layers": 4, "hidden": 2048, "heads": 16, "vocab": 32000, "tied_embeddings": False},
        "training": {"seq_len": 2048, "global_batch_size": 8, "micro_batch_size": 1, "precision": "bf16",
                     "mcore_version": version},
        "parallelism": {"tp": 4, "pp": 2, "dp": 2, "sequence_parallel": True, "zero_stage": 1,
                        "virtual_stages": virtual_stages},
        "network": "analytic",
    }


@pytest.fixture(scope="module")
def eras():
    out = {}
    for version in ("0.8", "0.9"):
        data = _pipeline(version)
        # both average in the collective (0.8 on), so that no gradient-scaling pass (workload/grad_scaling.py, whose
        # default differs between them) tells the releases apart: only the gathers do
        data["parallelism"]["average_in_collective"] = True
        result = simulate(config.from_dict(data))
        events = result.events
        last = events[events["rank"] == events["rank"].max()].sort_values("start_s")
        first = events[events["rank"] == events["rank"].min()].sort_values("start_s")
        out[version] = (result.summary["step_time_s"], first, last)
    return out


def _gather_and_first_forward(stage):
    gathers = stage[stage["name"].str.startswith("param all_gather")]
    forwards = stage[stage["name"].str.startswith("forward") & (stage["microbatch"] == 0)]
    return gathers, forwards.iloc[0]


def test_before_0_9_the_last_stages_gather_hides_in_the_fill(eras):
    _step, first, last = eras["0.8"]
    gathers, forward = _gather_and_first_forward(last)
    arrived = first[first["name"].str.startswith("send forward") & (first["microbatch"] == 0)].iloc[0]["end_s"]
    assert len(gathers) == 1 and gathers.iloc[0]["start_s"] == 0.0          # zero_grad: the step's start
    assert gathers.iloc[0]["end_s"] < arrived                               # done before the activations arrive
    assert forward["start_s"] == pytest.approx(arrived, abs=1e-12)          # the forward waits for them only


def test_from_0_9_the_last_stages_gather_is_exposed_whole(eras):
    step_08, first_08, _ = eras["0.8"]
    step_09, first_09, last = eras["0.9"]
    gathers, forward = _gather_and_first_forward(last)
    arrived = first_09[first_09["name"].str.startswith("send forward") & (first_09["microbatch"] == 0)].iloc[0]["end_s"]
    gather_s = gathers.iloc[0]["end_s"] - gathers.iloc[0]["start_s"]
    # dispatched at the first forward pre-hook, after the activations arrived; the forward waits for all of it
    assert len(gathers) == 1 and gathers.iloc[0]["start_s"] == pytest.approx(arrived, abs=1e-12)
    assert forward["start_s"] == pytest.approx(arrived + gather_s, abs=1e-12)
    # by hand: the last stage's whole schedule, and the first stage's from its wait for the first gradient on, move
    # by the gather's seconds, nothing else does (the first stage's own gather and warm-up forwards are the same)
    assert step_09 - step_08 == pytest.approx(gather_s, rel=1e-9)
    head_08 = first_08[first_08["start_s"] < arrived][["name", "start_s", "end_s"]].reset_index(drop=True)
    head_09 = first_09[first_09["start_s"] < arrived][["name", "start_s", "end_s"]].reset_index(drop=True)
    assert head_08.equals(head_09)


@pytest.mark.parametrize("layout", [{"pp": 1}])
def test_the_release_changes_nothing_where_the_gathers_are_dispatched_at_the_start(layout):
    """One stage: its first forward is the step's start. (Interleaved stages: the releases differ from chunk 1 or 2
    on, tests/unit/test_round26_interleaved_gathers.py.)"""
    steps = []
    for version in ("0.8", "0.9"):
        data = _pipeline(version, layout.get("virtual_stages", 1))
        if "pp" in layout:
            data["parallelism"] = {**data["parallelism"], "pp": 1, "dp": 4}
        data["parallelism"]["average_in_collective"] = True   # no gradient-scaling pass in either (as ``eras``)
        steps.append(simulate(config.from_dict(data)).summary["step_time_s"])
    assert steps[0] == steps[1]


# ---- the note -----------------------------------------------------------------------------------------------------
def test_a_defaulted_release_is_named_where_it_changes_the_step():
    data = _pipeline("0.9")
    del data["training"]["mcore_version"]
    note = config.mcore_version_note(config.from_dict(data))
    assert note is not None and "(default) is 0.9" in note and "NeMo 24.09" in note and "mcore_version: '0.8'" in note


def test_a_defaulted_release_of_an_interleaved_run_names_the_schedules_dispatch():
    """Round 26: with virtual stages the release decides when each chunk's gathers start (GatherDuringForward)."""
    data = _pipeline("0.9", virtual_stages=2)
    del data["training"]["mcore_version"]
    note = config.mcore_version_note(config.from_dict(data))
    assert note is not None and "align_param_gather" in note and "mcore_version: '0.8'" in note


@pytest.mark.parametrize("change", [{"training": {"mcore_version": "0.9"}},
                                    {"parallelism": {"virtual_stages": 2, "grad_buckets": "apex"}},
                                    {"parallelism": {"zero_stage": 0}}])
def test_no_note_when_the_release_is_stated_or_changes_nothing(change):
    data = _pipeline("0.9")
    del data["training"]["mcore_version"]
    for section, values in change.items():
        data[section] = {**data[section], **values}
    assert config.mcore_version_note(config.from_dict(data)) is None


def test_run_prints_the_defaulted_release(cli, write_scenario, tmp_path):
    data = _pipeline("0.9")
    del data["training"]["mcore_version"]
    code, _out, err = cli("run", write_scenario(data), "--out", tmp_path / "out", "--json")
    assert code == 0
    assert "note: training.mcore_version (default) is 0.9" in err


# ---- review (docs/calibration/round-25.md, "Round 25: review of the Megatron-Core release key")
# -----------------------------
@pytest.mark.parametrize("stages", [3, 4])
def test_from_0_9_every_later_stage_exposes_its_gather_in_turn(stages):
    """With more stages the fill passes through each later stage's first forward, which waits for that stage's whole
    gather before it sends on: by hand the step grows by the sum of the later stages' gather times, (pp - 1) G, each
    starting when its stage's first activations arrive, never before the previous stage's has ended."""
    runs = {}
    for version in ("0.8", "0.9"):
        data = _pipeline(version)
        data["cluster"] = {**data["cluster"], "nodes": stages}
        data["parallelism"] = {**data["parallelism"], "pp": stages}
        data["training"] = {**data["training"], "global_batch_size": 16}
        data["parallelism"]["average_in_collective"] = True   # no gradient-scaling pass in either (as ``eras``)
        result = simulate(config.from_dict(data))
        events = result.events
        gathers = events[events["name"].str.startswith("param all_gather")]
        runs[version] = (result.summary["step_time_s"],
                         gathers.groupby("rank").agg(start=("start_s", "min"), end=("end_s", "max")).sort_index())
    (step_08, _), (step_09, per_stage) = runs["0.8"], runs["0.9"]
    later = per_stage.iloc[1:]
    assert len(per_stage) == stages and per_stage.iloc[0]["start"] == 0.0   # the first stage: the step's start
    assert (later["start"].to_numpy()[1:] > later["end"].to_numpy()[:-1]).all()   # one after another, in the fill
    assert step_09 - step_08 == pytest.approx((later["end"] - later["start"]).sum(), rel=1e-9)


def test_the_note_counts_context_parallel_ranks_as_the_engine_does():
    """The distributed optimizer shards over dp x cp (the engine's data-parallel group): with dp 1 and cp 2 the
    release still moves the later stage's gather, so a defaulted release is named."""
    data = _pipeline("0.9")
    data["parallelism"] = {**data["parallelism"], "dp": 1, "cp": 2}
    steps = [simulate(config.from_dict({**data, "training": {**data["training"], "mcore_version": version}}))
             .summary["step_time_s"] for version in ("0.8", "0.9")]
    assert steps[1] > steps[0]
    del data["training"]["mcore_version"]
    assert config.mcore_version_note(config.from_dict(data)) is not None


def test_another_stack_ignores_a_stated_release_in_the_engine():
    """A stack other than Megatron-Core (torchtitan-shaped here) with the parameter gather overlapped: a stated
    bucket-group release moves nothing (the engine reads the release on Megatron-Core only)."""
    steps = []
    for version in ("0.8", "0.9"):
        data = _pipeline(version)
        data["training"] = {**data["training"], "optimizer": "torch_adamw", "logits_memory": "torch_fp32"}
        data["parallelism"] = {**data["parallelism"], "overlap_grad_reduce": True, "overlap_param_gather": True}
        scenario = config.from_dict(data)
        assert not scenario.megatron_core
        steps.append(simulate(scenario).summary["step_time_s"])
    assert steps[0] == steps[1]
