"""Every scenario key docs/scenario.md documents, with every kind of bad value a user can write (negative, zero where
the key needs a positive value, NaN, infinity, '1e999', the wrong type, an empty string, a huge integer, an unknown
choice), through the CLI as a user runs it (round 23): each is refused with exit code 2 and one line naming the key,
no traceback, within a time limit.

The keys come from the page's tables (``cluster``, ``model``, ``model.moe``, ``training``, ``parallelism``,
``economics``) and its lists of nested keys (inline GPU and NIC, MLA, variability, stragglers, reliability); a key
the page documents without a field in ``simcluster.spec`` fails, and so does a field kind the harness cannot fuzz.
The values follow from each field's declared type and bounds. Every case runs ``simcluster run`` in process; one bad
value a key goes through ``compare`` and ``sweep`` too (they load the scenario through their own paths)."""

from __future__ import annotations

import copy
import math
import re
import sys
import types
import typing
from pathlib import Path

import annotated_types
import pydantic
import pytest
import yaml

from simcluster.spec import config, hardware, model, reliability, variability

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from recipe_sweep import time_limit  # noqa: E402  (one SIGALRM guard: a timeout raises TimeoutError)

PAGE = (Path(__file__).resolve().parents[2] / "docs" / "scenario.md").read_text()
# a refusal takes milliseconds; a case that is accepted runs a 16-GPU simulation (well under a second)
CASE_TIMEOUT_S = 20

TABLED = {"cluster": config.Cluster, "model": model.TransformerSpec, "model.moe": model.MoESpec,
          "training": config.Training, "parallelism": config.Parallelism, "economics": config.Economics}
NAMED = {"cluster.gpu": hardware.GpuSpec, "cluster.nic": hardware.NicSpec, "model.mla": model.MLASpec,
         "variability": variability.Variability, "variability.stragglers.0": variability.Straggler,
         "reliability": reliability.Reliability}

MODEL = {"layers": 24, "hidden": 2048, "heads": 16, "vocab": 50257}
H100 = {"peak": {"bf16": "989 TFLOP/s"}, "hbm_capacity": "80 GB", "hbm_bandwidth": "3.35 TB/s",
        "nvlink_bandwidth": "450 GB/s", "tdp": "700 W", "idle_power": "70 W", "price_per_gpu_hour": 2.5}
BASE = {
    "name": "fuzz",
    "cluster": {"gpu": H100, "gpus_per_node": 8, "nodes": 2, "nic": {"rate": "400 Gb/s", "latency": "1 us"},
                "topology": "rail-fat-tree"},
    "model": {**MODEL, "moe": {"experts": 8, "top_k": 2, "ffn_hidden": 4096},
              "mla": {"kv_lora_rank": 512, "qk_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128}},
    "training": {"seq_len": 2048, "global_batch_size": 32, "micro_batch_size": 1, "precision": "bf16"},
    "parallelism": {"tp": 2, "pp": 2, "dp": 4},
    "economics": {},
    "variability": {"stragglers": [{"ranks": [0], "slowdown": 1.5}]},
    "reliability": {},
}
# quantities: the unit a valid value of the key is written in
UNITS = {"hbm_capacity": "GB", "hbm_bandwidth": "TB/s", "nvlink_bandwidth": "GB/s", "tdp": "W", "idle_power": "W",
         "rate": "Gb/s", "latency": "us", "grad_bucket_size": "MB", "node_overhead": "kW",
         "collective_latency_noise": "us", "checkpoint_interval": "min", "checkpoint_bytes": "GB",
         "write_bandwidth_per_gpu": "GB/s", "read_bandwidth_per_gpu": "GB/s", "detection": "min", "restart": "min",
         "requeue": "min", "repair": "h", "horizon": "d", "peak": "TFLOP/s"}
# keys that are labels (any text names the thing) or structures fuzzed as a whole
LABELS = {"name", "source", "vendor", "description"}


def _section_rows(section: str) -> list[str]:
    """The keys of the tables under the page's ``## `section` `` heading (``model`` has two: its own and
    ``model.moe``'s)."""
    head = section.split(".")[0]
    body = PAGE.split(f"## `{head}`", 1)[1].split("\n## ", 1)[0]
    tables = re.split(r"\n\| field \| default \| meaning \|\n", body)[1:]
    table = tables[1 if section == "model.moe" else 0]
    keys = []
    for line in table.splitlines():
        if not line.startswith("|"):
            break
        first = re.match(r"\| ([^|]+) \|", line)
        if first:
            keys += re.findall(r"`([a-z_0-9]+)`", first.group(1))
    return keys


def documented() -> list[tuple[str, pydantic.fields.FieldInfo]]:
    """(dotted path, field) of every key the page documents."""
    out = []
    for section, spec in TABLED.items():
        for key in _section_rows(section):
            assert key in spec.model_fields, f"docs/scenario.md documents {section}.{key}: no such field"
            out.append((f"{section}.{key}", spec.model_fields[key]))
    for section, spec in NAMED.items():
        out += [(f"{section}.{k}", f) for k, f in spec.model_fields.items() if re.search(rf"\b{k}\b", PAGE)]
    return out


def _bounds(field) -> dict:
    """The field's numeric bounds (gt, ge, le), wherever pydantic keeps them (on the field or inside Optional)."""
    found = {}

    def visit(meta):
        for m in meta:
            for name in ("gt", "ge", "le", "lt"):
                if isinstance(m, getattr(annotated_types, name.capitalize())):
                    found.setdefault(name, getattr(m, name))
            if isinstance(m, pydantic.fields.FieldInfo):
                visit(m.metadata)

    visit(field.metadata)

    def walk(annotation):
        visit(getattr(annotation, "__metadata__", ()))
        for arg in typing.get_args(annotation):
            walk(arg)

    walk(field.annotation)
    return found


def _base_types(annotation) -> set:
    """The plain types and Literal choices an annotation admits (Optional, Annotated and unions opened)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return {("literal", tuple(typing.get_args(annotation)))}
    if origin is typing.Annotated:
        return _base_types(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return {t for arg in typing.get_args(annotation) for t in _base_types(arg)}
    if origin in (list, tuple, dict):
        return {origin}
    return {annotation}


def _is_quantity(field) -> bool:
    text = repr(field.metadata) + repr(field.annotation)
    return "_quantity" in text


def kind(path: str, field) -> str:
    key = path.rsplit(".", 1)[-1]
    if _is_quantity(field):
        return "dict-quantity" if key == "peak" else "quantity"
    types = _base_types(field.annotation) - {type(None)}
    literals = [t for t in types if isinstance(t, tuple)]
    if key in ("moe", "mla", "gpu", "nic", "stragglers", "failure_rates", "fabric_prices", "topology_options"):
        return "structure"
    if key == "load":  # a choice or a coefficient of variation
        return "load"
    if literals and types <= {*literals}:
        return "choice"
    if types <= {bool}:
        return "bool"
    if types <= {int}:
        return "count"
    if types <= {float}:
        return "number"
    if types <= {str}:
        return "label" if key in LABELS else "text"
    if types <= {list, tuple, *literals} or types == {list, int}:
        return "list"
    raise AssertionError(f"{path}: no fuzz values for a field of type {field.annotation}")


HUGE = 10**30
# quantities whose zero is a valid ideal: no latency, no noise, no idle power, an instant detection or restart
ZERO_IS_VALID = {"latency", "collective_latency_noise", "idle_power", "detection", "restart", "requeue", "repair"}


def bad_values(path: str, field) -> dict:
    """Values the key must refuse, by case name."""
    key = path.rsplit(".", 1)[-1]
    k = kind(path, field)
    wrong_type = {"list": [1], "map": {"a": 1}}
    if k in ("count", "number"):
        bounds = _bounds(field)
        values = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "1e999": "1e999", "empty": "",
                  "word": "eight", "true": True, **wrong_type}
        low = bounds.get("gt", bounds.get("ge"))
        if low is not None and low >= 0:
            values["neg"] = -1
        if "gt" in bounds and bounds["gt"] >= 0:
            values["zero"] = 0
        if k == "count":
            values["float"] = 2.5
            if key != "seed":  # any whole number >= 0 seeds numpy's generator
                values["huge"] = HUGE
        elif "le" in bounds:
            values["huge"] = 1e300
        return values
    if k == "quantity":
        unit = UNITS[key]
        values = {"neg": f"-5 {unit}", "nan": f"nan {unit}", "inf": f"inf {unit}", "1e999": f"1e999 {unit}",
                  "empty": "", "wrong-unit": "5 kg", "true": True, "bare-nan": math.nan, **wrong_type}
        if key not in ZERO_IS_VALID:
            values["zero"] = f"0 {unit}"
        return values
    if k == "dict-quantity":
        unit = UNITS[key]
        return {f"{name}": {"bf16": v} for name, v in {"neg": f"-5 {unit}", "nan": f"nan {unit}",
                                                      "1e999": f"1e999 {unit}", "zero": f"0 {unit}",
                                                      "empty": ""}.items()} | {"list": [1], "word": "fast"}
    if k == "choice":
        return {"unknown": "bogus-choice", "empty": "", "nan": math.nan, "huge": HUGE, **wrong_type}
    if k == "bool":
        return {"word": "sometimes", "two": 2, "empty": "", "nan": math.nan, **wrong_type}
    if k == "load":
        return {"unknown": "bogus-choice", "neg": -0.5, "nan": math.nan, "inf": math.inf, "1e999": "1e999",
                "empty": "", "huge": 1e300, **wrong_type}
    if k == "text":
        return {"empty": "", "nan": math.nan, "unknown": "bogus-choice", **wrong_type}
    if k == "label":
        return wrong_type
    if k == "list":
        return {"word": "core_attn-x", "nan": [math.nan], "map": {"a": 1}, "nested": [[1]]}
    if k == "structure":
        return {"word": "bogus-choice", "nan": math.nan, "number": 3}
    raise AssertionError(path)


def scenario_with(path: str, value) -> dict:
    data = copy.deepcopy(BASE)
    node = data
    *parents, leaf = path.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[int(leaf) if isinstance(node, list) else leaf] = value
    # a key of model.moe or model.mla is fuzzed on a model that has the one structure only
    if not path.startswith("model.moe"):
        data["model"].pop("moe")
    if not path.startswith("model.mla"):
        data["model"].pop("mla")
    return data


# the values every run of the suite tries (those that found this round's defects, and NaN); the rest are marked slow
SAMPLE = ("true", "huge", "zero", "neg", "nan", "unknown")


def _key_params() -> list:
    params = []
    for path, field in documented():
        values = bad_values(path, field)
        sample = {k: v for k, v in values.items() if k in SAMPLE}
        rest = {k: v for k, v in values.items() if k not in SAMPLE}
        params.append(pytest.param(path, sample, id=f"{path}-sample"))
        params.append(pytest.param(path, rest, id=f"{path}-rest", marks=pytest.mark.slow))
    return params


KEYS = _key_params()


def refused_naming(cli, argv, field: str) -> str:
    """Run the CLI; assert exit 2, one line on stderr naming ``field``, no traceback; return the line."""
    with time_limit(CASE_TIMEOUT_S):
        code, _out, err = cli(*argv)
    assert code == 2, f"exit {code}: {err[-500:]!r}"
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("error: "), err
    # the key itself, not a longer key it begins (parallelism.ep is not parallelism.ep_overlap)
    assert re.search(rf"(?<![\w.]){re.escape(field)}(?![\w])", err), f"{field} not named: {err!r}"
    return err


def test_the_base_scenario_is_valid_as_each_case_edits_it():
    """A dense model, an MoE model, an MLA model: every refusal below is the bad value's."""
    for path, value in (("model.name", "fuzz"), ("model.moe.experts", 8), ("model.mla.kv_lora_rank", 512)):
        config.from_dict(scenario_with(path, value))


def _yaml(value_tree) -> str:
    return yaml.safe_dump(value_tree, allow_unicode=True)


@pytest.mark.parametrize(("path", "values"), KEYS)
def test_bad_value_of_every_documented_key_is_refused_naming_it(cli, tmp_path, path, values):
    """Each bad value of the key (its values in turn: 1,191 runs over all keys, 428 of them in the sample) is
    refused naming it."""
    failures = []
    for name, value in values.items():
        scenario = tmp_path / f"{name}.yaml"
        scenario.write_text(_yaml(scenario_with(path, value)))
        try:
            refused_naming(cli, ["run", scenario, "--out", tmp_path / "out", "--json"], path)
        except AssertionError as err:
            failures.append(f"{path}={name} ({value!r}): {err}")
    assert not failures, "\n".join(failures)


# one value a key through compare and sweep (their own loading paths: several scenarios, a grid)
ONE_PER_KEY = [pytest.param(path, next(iter(bad_values(path, field).items()))[1], id=path)
               for path, field in documented()]


@pytest.mark.slow  # 284 cases, ~8 s of CPU
@pytest.mark.parametrize(("path", "value"), ONE_PER_KEY)
@pytest.mark.parametrize("command", ["compare", "sweep"])
def test_compare_and_sweep_refuse_the_bad_key_too(cli, tmp_path, monkeypatch, path, value, command):
    monkeypatch.chdir(tmp_path)
    scenario = tmp_path / "s.yaml"
    scenario.write_text(_yaml(scenario_with(path, value)))
    refused_naming(cli, [command, scenario, "--out", tmp_path / "out"], path)


def test_the_page_gives_the_harness_every_section():
    paths = {p for p, _ in documented()}
    for section in (*TABLED, *NAMED):
        assert any(p.startswith(section + ".") for p in paths), section
    # the keys of rounds 20-22 are among them
    assert {"variability.gpu_speed_cv", "variability.gpu_speed_draw", "parallelism.pipeline_engine",
            "parallelism.grad_reduce_dtype", "cluster.topology_options"} <= paths
