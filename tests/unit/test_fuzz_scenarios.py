"""Bundled scenarios mutated one or two fields at a time (round 19's input robustness audit): every mutation is either
a valid scenario or one ScenarioError naming a scenario field; through the CLI (`run`, `compare`, `sweep`), exit 0
or exit 2 with one line naming the field, never a traceback, another exit code or a run of minutes. Deterministic
(hypothesis derandomized) and bounded (about 4 s of CPU; under 20 s on a loaded machine) so that CI cannot flake.

The hand-written cases below are the keys and data-file entries added in rounds 15-18 (moe_token_drop,
residual_in_fp32, grad_buckets, fp8_param_gather, activation offload, userbuffers, preset names, nemotron3-8b, SHARP)
and the incompatible layouts of the brief (cp and seq_len, tp and heads, pp and layers, ep and experts, zero GPUs,
fp8 on an A100)."""

from __future__ import annotations

import copy
import math
import re
import typing
from functools import cache

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simcluster.core.errors import ScenarioError
from simcluster.spec import config

# a sample of the bundled scenarios (simcluster/data/scenarios): dense and MoE, Hopper, Ampere and Blackwell, NeMo,
# Megatron-LM and torchtitan stacks, bf16 and fp8; the CLI cases use the 8-GPU ones (a run of a second or less)
SAMPLE = ("nemo2409-llama31-8b-8-h100-bf16", "nemo2407-llama3-8b-8-h100-fp8", "mcore-mixtral-8x7b-64-h100",
          "megatron-1.2b-a100-node", "nemo2511-llama3-8b-8-gb200-fp8", "torchtitan-llama31-8b-8-h100-fp8-32k",
          "dao2023-gpt3-1.3b-2k-8-a100", "deepseek-v3-256-h100")
SMALL_RUNS = ("nemo2409-llama31-8b-8-h100-bf16", "megatron-1.2b-a100-node", "dao2023-gpt3-1.3b-2k-8-a100")
# what a user's slip puts into a field: wrong types, signs, zero, non-finite, huge, empty, unknown words, containers
HOSTILE = (None, True, False, -1, 0, 1, 2, 3, 0.0, -0.5, 1.5, math.nan, math.inf, -math.inf, 2**63, 10**30, "",
           " ", "bogus", "1e400", "nan", [1, 2], {"a": 1}, "-1 GB", "0 MB", "inf MB")
# the top-level keys of a scenario: a refusal names one of them (or a path under one)
TOP = set(config.Scenario.model_fields) | {"jobs"}
SECTIONS = {"cluster": config.Cluster, "training": config.Training, "parallelism": config.Parallelism,
            "economics": config.Economics}


def _literals(annotation) -> list:
    """The values a Literal field (possibly inside Optional/tuple/Annotated) allows."""
    found = []
    for arg in typing.get_args(annotation):
        found += _literals(arg)
    if typing.get_origin(annotation) is typing.Literal:
        found += list(typing.get_args(annotation))
    return found


# every field of the four sections, with its allowed words (an enum's values are fuzzed too: valid, odd combinations)
FIELDS = {(section, name): _literals(field.annotation) for section, model in SECTIONS.items()
          for name, field in model.model_fields.items()}


@cache
def _base(name: str) -> dict:
    return yaml.safe_load(config.resolve_path(name).read_text())


def _leaves(data: dict, prefix=()) -> list[tuple]:
    paths = []
    for key, value in data.items():
        paths.append((*prefix, key))
        if isinstance(value, dict):
            paths += _leaves(value, (*prefix, key))
    return paths


def _paths(name: str) -> list[tuple]:
    extra = [("bogus",), ("training", "bogus"), ("model",), ("model", "moe", "experts"), ("variability",),
             ("reliability",), ("network",), ("name",)]
    return sorted(set(_leaves(_base(name))) | set(FIELDS) | set(extra), key=str)


def _set(data: dict, path: tuple, value) -> None:
    node = data
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


# what the CLI cases set instead: values a field may well take, so that most mutations reach the simulation
PLAUSIBLE = (True, False, 1, 2, 4)


@st.composite
def mutated(draw, names=SAMPLE, steps_one: bool = False) -> tuple[dict, list]:
    """A bundled scenario with one or two fields set to a hostile or an allowed-but-odd value (``steps_one``: the
    CLI's cases, one step, section fields set to their allowed words or small values)."""
    name = draw(st.sampled_from(names))
    data = copy.deepcopy(_base(name))
    edits = []
    for _ in range(draw(st.integers(1, 2))):
        path = draw(st.sampled_from(sorted(FIELDS, key=str) if steps_one else _paths(name)))
        allowed = tuple(FIELDS.get(path, ()))
        value = draw(st.sampled_from((allowed or PLAUSIBLE) if steps_one else HOSTILE + allowed))
        _set(data, path, value)
        edits.append((".".join(path), value))
    if steps_one and isinstance(data.get("training"), dict):
        data["training"]["steps"] = 1   # the CLI cases are bounded by steps (each step is simulated)
    return data, edits


def names_a_field(err: ScenarioError, edits) -> bool:
    """A refusal names a scenario field (``parallelism.tp``), a section, an unknown key written, or the file read."""
    head = err.field.split(".")[0].split("[")[0]
    written = {path.split(".")[0] for path, _ in edits}
    return bool(err.field) and (head in TOP | written or err.field.endswith((".yaml", ".graphml", "scenario")))


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
          database=None)
@given(case=mutated())
def test_mutated_scenario_is_valid_or_one_error_naming_a_field(case):
    data, edits = case
    try:
        config.from_dict(data)
    except ScenarioError as err:
        assert names_a_field(err, edits), (edits, str(err))
        assert "\n" not in str(err).strip(), (edits, str(err))


ERROR_LINE = re.compile(r"^error: ([A-Za-z_][\w.\[\]-]*|--[a-z-]+|/[^:]+|sweep|scenario): \S")


def exits_cleanly(code: int, err: str, edits) -> None:
    """Exit 0, or exit 2 with one stderr line naming what is wrong; warnings before an exit 0 are allowed."""
    assert "Traceback" not in err, (edits, err)
    assert code in (0, 2), (edits, code, err)
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and ERROR_LINE.match(lines[0]), (edits, err)


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
          database=None)
@given(case=mutated(SMALL_RUNS, steps_one=True))
def test_mutated_scenario_through_run_exits_0_or_2_with_one_line(case, tmp_path_factory, capsys):
    from simcluster.cli import main

    data, edits = case
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "scenario.yaml"
    path.write_text(yaml.safe_dump(data))
    code = main(["run", str(path), "--network", "analytic", "--json", "--out", str(folder / "out")])
    exits_cleanly(code, capsys.readouterr().err, edits)


# ---- hand-written: the keys and entries of rounds 15-18, and the brief's incompatible layouts ------------------
DENSE = "nemo2409-llama31-8b-8-h100-bf16"
FP8 = "nemo2407-llama3-8b-8-h100-fp8"
MOE = "mcore-mixtral-8x7b-64-h100"
A100 = "megatron-1.2b-a100-node"
GB200 = "nemo2511-llama3-8b-8-gb200-fp8"
REFUSED = [
    (DENSE, {"training.moe_token_drop": True}, "training.moe_token_drop: token drop caps the experts"),
    (MOE, {"training.moe_token_drop": "yes"}, "training.moe_token_drop: Input should be a valid boolean"),
    (MOE, {"training.moe_token_drop": 1}, "training.moe_token_drop"),
    (DENSE, {"training.residual_in_fp32": 1}, "training.residual_in_fp32: Input should be a valid boolean"),
    (DENSE, {"training.residual_in_fp32": "true"}, "training.residual_in_fp32"),
    (DENSE, {"parallelism.grad_buckets": "APEX"},
     "parallelism.grad_buckets: Input should be 'megatron', 'megatron_core' or 'apex'"),
    # null is the default (round 23: megatron_core on Megatron-Core); Megatron-Core's own buckets on another stack
    (DENSE, {"parallelism.grad_buckets": "megatron_core", "parallelism.zero_stage": 3}, "parallelism.grad_buckets"),
    (MOE, {"parallelism.grad_buckets": "apex"}, "parallelism.grad_buckets"),
    (DENSE, {"parallelism.grad_bucket_size": "0 MB"}, "parallelism.grad_bucket_size: must be a positive size"),
    (DENSE, {"parallelism.grad_bucket_size": "-40 MB"}, "parallelism.grad_bucket_size: must be a positive size"),
    (DENSE, {"parallelism.grad_bucket_size": "inf MB"}, "parallelism.grad_bucket_size"),
    (DENSE, {"parallelism.grad_bucket_size": 40}, "parallelism.grad_bucket_size: a bare number 40 is ambiguous"),
    (DENSE, {"training.fp8_param_gather": True}, "training.fp8_param_gather: fp8 parameters need precision: fp8"),
    (FP8, {"training.fp8_param_gather": True, "parallelism.zero_stage": 0}, "training.fp8_param_gather"),
    (FP8, {"parallelism.zero_stage": 3}, "training.fp8_param_gather: zero_stage 3 with fp8"),
    (DENSE, {"training.activation_offload_layers": -1}, "training.activation_offload_layers"),
    (DENSE, {"training.activation_offload_layers": 32}, "training.activation_offload_layers: 32 layers: must be "
     "fewer than the model's 32"),
    (DENSE, {"training.activation_offload_layers": 10**9}, "training.activation_offload_layers"),
    (DENSE, {"training.activation_offload_layers": 1.5}, "training.activation_offload_layers"),
    (A100, {"training.activation_offload_layers": 2}, "training.activation_offload_layers: activation offloading "
     "needs activation_recompute: none"),
    (A100, {"parallelism.tp_comm_overlap": True, "parallelism.tp_comm_overlap_impl": "async_tp"},
     "parallelism.tp_comm_overlap_impl"),
    (DENSE, {"parallelism.tp_comm_overlap_impl": "nccl"}, "parallelism.tp_comm_overlap_impl"),
    (DENSE, {"parallelism.te_version": 3}, "parallelism.te_version: Input should be 1 or 2"),
    (DENSE, {"model": "gpt313b"}, "model: 'gpt313b' could name any of gpt3-1.3b, gpt3-13b"),
    (DENSE, {"model": ""}, "model: unknown model preset ''"),
    (DENSE, {"model": "nemotron3-9b"}, "model: unknown model preset 'nemotron3-9b'"),
    (DENSE, {"model": {"preset_name": "llama3-8b"}}, "model."),
    (DENSE, {"cluster.sharp": "on"}, "cluster.sharp: on needs InfiniBand switches"),
    (DENSE, {"cluster.sharp": "maybe"}, "cluster.sharp: Input should be 'auto', 'on' or 'off'"),
    (DENSE, {"training.seq_len": 1, "parallelism.cp": 2}, "parallelism.cp: seq_len 1 is not divisible by cp=2"),
    (DENSE, {"parallelism.cp": 4, "parallelism.dp": 2, "training.seq_len": 2}, "parallelism.cp"),
    (DENSE, {"parallelism.tp": 3, "parallelism.dp": 1, "parallelism.cp": 1, "cluster.gpus_per_node": 3},
     "parallelism.tp"),
    (DENSE, {"parallelism.pp": 64, "parallelism.dp": 1, "parallelism.cp": 1, "cluster.nodes": 8}, "parallelism"),
    (MOE, {"parallelism.ep": 3}, "parallelism.ep: 8 experts are not divisible by ep=3"),
    (MOE, {"parallelism.ep": 16}, "parallelism.ep: 8 experts are not divisible by ep=16"),
    (DENSE, {"parallelism.ep": 2}, "parallelism.ep"),
    (DENSE, {"cluster.nodes": 0}, "cluster.nodes: Input should be greater than 0"),
    (DENSE, {"cluster.gpus_per_node": 0}, "cluster.gpus_per_node: Input should be greater than 0"),
    (FP8, {"cluster.gpu": "a100-80gb-sxm"}, "training.precision: a100-80gb-sxm has no fp8 peak listed"),
    (FP8, {"cluster.gpu": "a100-40gb-sxm", "training.fp8_param_gather": True}, "training.precision: a100-40gb-sxm"),
    (DENSE, {"training.precision": "FP8"}, "training.precision: Input should be"),
    (DENSE, {"parallelism.layers_per_stage": [16, 16]}, "parallelism.layers_per_stage: has 2 entries"),
    (DENSE, {"parallelism.order": "tp-tp-dp-pp"}, "parallelism.order: must name tp, cp, pp and dp once each"),
    (DENSE, {"training.recompute_modules": ["mla_up_proj"]}, "training.recompute_modules: mla_up_proj needs"),
    (DENSE, {"training.recompute_modules": "core_attn"}, "training.recompute_modules"),
    (DENSE, {"parallelism.moe_dispatcher": "flex"}, "parallelism.moe_dispatcher: flex dispatches MoE tokens"),
    (DENSE, {"training.steps": 0}, "training.steps"),
    (DENSE, {"training.steps": 10**5}, "training.steps"),
    (DENSE, {"bogus": 1}, "bogus: unknown key"),
    (DENSE, {"training.bogus": 1}, "training.bogus: unknown key"),
    (GB200, {"training.activation_offload_layers": 4, "training.activation_recompute": "full"},
     "training.activation_offload_layers"),
]


def _edited(name: str, edits: dict) -> dict:
    data = copy.deepcopy(_base(name))
    for path, value in edits.items():
        _set(data, tuple(path.split(".")), value)
    return data


@pytest.mark.parametrize(("name", "edits", "needle"), REFUSED, ids=[str(edits) for _, edits, _ in REFUSED])
def test_new_key_misuse_exits_2_naming_the_field(cli, write_scenario, tmp_path, name, edits, needle):
    code, _, err = cli("run", write_scenario(_edited(name, edits)), "--json", "--out", tmp_path / "o")
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert needle in err, err
    assert not (tmp_path / "o").exists()


ACCEPTED = [
    (DENSE, {"training.residual_in_fp32": True, "model": "nemotron3-8b", "parallelism.cp": 1, "parallelism.dp": 8}),
    (DENSE, {"model": "Nemotron3_8B", "parallelism.cp": 1, "parallelism.dp": 8}),
    (DENSE, {"parallelism.grad_buckets": "apex"}),
    (FP8, {"training.fp8_param_gather": True}),
    (GB200, {"training.activation_offload_layers": 4}),
    (DENSE, {"training.activation_offload_layers": 31}),
    (A100, {"cluster.sharp": "auto"}),
    (DENSE, {"parallelism.te_version": 1}),
]


@pytest.mark.parametrize(("name", "edits"), ACCEPTED, ids=[str(edits) for _, edits in ACCEPTED])
def test_new_keys_in_range_are_accepted(name, edits):
    config.from_dict(_edited(name, edits))


# ---- compare and sweep take the same scenarios and --vary values ------------------------------------------------
def test_compare_of_a_refused_scenario_exits_2_naming_the_field(cli, write_scenario, tmp_path):
    good = write_scenario(_edited(DENSE, {}), "good.yaml")
    bad = write_scenario(_edited(MOE, {"parallelism.ep": 3}), "bad.yaml")
    code, _, err = cli("compare", good, bad, "--network", "analytic", "--json", "--out", tmp_path / "o")
    exits_cleanly(code, err, "compare")
    assert code == 2 and "parallelism.ep" in err


@pytest.mark.parametrize("vary", ["tp=nan", "tp=inf", "tp=-1", "tp=", "bogus=1", "training.moe_token_drop=true",
                                  "parallelism.grad_buckets=APEX", "training.activation_offload_layers=-1",
                                  "cluster.sharp=maybe", "model=nemotron3-9b", "parallelism=1", "training=x",
                                  "cluster=[1]"])
def test_sweep_with_a_hostile_vary_exits_2_naming_the_field(cli, write_scenario, small_scenario, tmp_path, vary):
    code, _, err = cli("sweep", write_scenario(small_scenario), "--gpus", "16", "--vary", vary, "--network",
                       "analytic", "--jobs", "1", "--no-plots", "--json", "--out", tmp_path / "s")
    assert code == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(("error: --vary: ", "error: sweep: all 1 runs failed")), err
    key = vary.partition("=")[0].split(".")[-1]
    assert key in last, err
