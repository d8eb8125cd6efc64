"""Round 31: round 30's additions and every command attacked (docs/calibration/round-31.md, "Round 31: round 30's
additions and the commands attacked"). Each case failed before its fix:

- an integer of more than 4,300 digits in a YAML file (a scenario, a fabric file, a ``--vary`` or ``--gpus`` value)
  or a JSON file (a sweep's grid.json or shard, a Kineto trace) was a ValueError traceback: Python refuses to turn
  that many digits into an int; a YAML ``0x`` integer of 5,000 digits was read, then raised it wherever an error
  message printed it;
- a YAML date that is no date (``2024-02-30``, ``2024-13-01``: YAML reads ``YYYY-MM-DD`` as a timestamp) was a
  ValueError traceback;
- a sweep shard sealed by hand with an integer past a float's range in its summary was an OverflowError traceback
  in the results table;
- ``collective --max-bytes`` (or ``--min-bytes``) ``1`` followed by 400 zeros was an OverflowError traceback;
- a Kineto trace whose ``ts`` or ``dur`` is an integer past a float's range was an OverflowError traceback, and one
  whose ``distributedInfo`` rank is -1 was replayed as a rank of its own;
- a scenario path that is a dangling symbolic link or a link loop was "no file ... and no bundled scenario of that
  name (bundled: ...)", every bundled name listed.
"""

from __future__ import annotations

import copy
import json
import os

import pytest

from simcluster.core import inputs, units
from simcluster.core.errors import ScenarioError, quoted, shown
from simcluster.spec import config
from simcluster.studies import sweep as sweep_module
from tests.cli.scenario_files import SMALL, assert_one_line, write_scenario, write_validate_output

FABRIC = """\
name: two-gpus
gpus_per_node: 2
nodes:
  g0: gpu
  g1: gpu
  sw: {role: nvswitch, latency: 200 ns}
links:
  - {ends: [g0, sw], bandwidth: 450 GB/s, kind: nvlink}
  - {ends: [g1, sw], bandwidth: 450 GB/s, kind: nvlink}
"""
DIGITS_5000 = "1" + "0" * 5000


def _scenario_text(tmp_path, old: str, new: str):
    path = write_scenario(tmp_path, copy.deepcopy(SMALL))
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))
    return path


# ---- 1. integers too long to read or to print -------------------------------------------------------------------
@pytest.mark.parametrize("written", [DIGITS_5000, "0x" + "f" * 5000, "-" + DIGITS_5000, "1:" + ":".join(["59"] * 800)],
                         ids=["decimal", "hex", "negative", "sexagesimal"])
def test_a_yaml_integer_too_long_is_one_line_naming_its_line(cli, tmp_path, written):
    path = _scenario_text(tmp_path, "dp: 4", f"dp: {written}")
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "dp:" in text)
    code, _, err = cli("run", path, "--network", "analytic", "--json", "--out", tmp_path / "o")
    assert_one_line(code, err, 2)
    assert f"an integer written with {len(written):,} characters (line {line})" in err, err
    assert not (tmp_path / "o").exists()


def test_a_yaml_integer_of_a_thousand_characters_is_still_read():
    # the bound is on characters, not on values a field bounds itself: 10**999 reaches the field's own check
    assert inputs.parse_yaml("x: 1" + "0" * 999, "t") == {"x": 10**999}
    with pytest.raises(ScenarioError, match="1,001 characters"):
        inputs.parse_yaml("x: 1" + "0" * 1000, "t")


def test_a_fabric_file_with_a_hex_integer_past_the_digit_limit(cli, tmp_path):
    fabric = tmp_path / "f.yaml"
    fabric.write_text(FABRIC.replace("gpus_per_node: 2", "gpus_per_node: 0x" + "f" * 5000))
    code, _, err = cli("collective", "--op", "allreduce", "--gpus", "2", "--gpus-per-node", "2", "--topology", fabric,
                       "--max-bytes", "1M", "--network", "analytic")
    assert_one_line(code, err, 2)
    assert "f.yaml" in err and "(line 2)" in err, err


def test_a_gpu_count_of_5000_digits_on_the_command_line(cli, tmp_path):
    path = write_scenario(tmp_path, copy.deepcopy(SMALL))
    code, _, err = cli("sweep", path, "--gpus", DIGITS_5000, "--network", "analytic", "--no-plots", "--out",
                       tmp_path / "sw")
    assert_one_line(code, err, 2)
    assert err.startswith("error: --gpus: "), err


def test_huge_integers_are_shown_by_their_size():
    value = 16 ** 5000 - 1  # what YAML's 0x and 5,000 f's read as: its repr raises ValueError
    with pytest.raises(ValueError):
        repr(value)
    assert shown(value) == "an integer of 20,000 bits" and quoted(value) == shown(value)
    assert shown([value]) == "a list holding an integer too long to print"
    data = copy.deepcopy(SMALL)
    data["parallelism"]["dp"] = value  # through the Python API, which skips the file reader
    with pytest.raises(ScenarioError, match="parallelism.dp: .*got an integer of 20,000 bits"):
        config.from_dict(data)
    with pytest.raises(ScenarioError, match="is not a finite number"):
        units.parse(10**400)  # was OverflowError from math.isfinite


# ---- 2. a YAML date that is no date -----------------------------------------------------------------------------
@pytest.mark.parametrize("date", ["2024-02-30", "2024-13-01"])
def test_a_yaml_date_that_is_no_date_is_one_line(cli, tmp_path, date):
    path = _scenario_text(tmp_path, "name: small", f"name: {date}")
    code, _, err = cli("run", path, "--network", "analytic", "--json", "--out", tmp_path / "o")
    assert_one_line(code, err, 2)
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if date in text)
    assert f"s.yaml: '{date}' (line {line}) reads as a date and is no date" in err and "quote it" in err, err


def test_a_vary_value_that_is_no_date_reaches_the_field(cli, tmp_path):
    path = write_scenario(tmp_path, copy.deepcopy(SMALL))
    code, _, err = cli("sweep", path, "--gpus", "8", "--vary", "training.seq_len=2024-02-30", "--network", "analytic",
                       "--no-plots", "--out", tmp_path / "sw")
    assert_one_line(code, err, 2)
    assert "training.seq_len" in err and "'2024-02-30'" in err, err


# ---- 3. JSON the sweep reads back ---------------------------------------------------------------------------------
def _sweep(cli, tmp_path):
    args = ("sweep", write_scenario(tmp_path, copy.deepcopy(SMALL)), "--gpus", "8", "--jobs", "1", "--no-plots",
            "--network", "analytic", "--json", "--out", tmp_path / "sw")
    code, out, err = cli(*args)
    assert code == 0, err
    return args, json.loads(out)["rows"][0]["step_time_s"]


def test_a_grid_file_with_a_5000_digit_integer_is_another_grids_folder(cli, tmp_path):
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "grid.json").write_text('{"format": 1, "grid_key": "x", "runs": ' + DIGITS_5000 + "}")
    code, _, err = cli("sweep", write_scenario(tmp_path, copy.deepcopy(SMALL)), "--gpus", "8", "--jobs", "1",
                       "--no-plots", "--network", "analytic", "--out", tmp_path / "sw")
    assert code == 0, err
    assert "writing to" in err and (tmp_path / "sw-2" / "results.csv").is_file()
    with pytest.raises(ScenarioError, match="more than 4,300 digits"):
        inputs.load_json(tmp_path / "sw" / "grid.json")


@pytest.mark.parametrize("huge", [10**400, -(10**400)], ids=["positive", "negative"])
def test_a_sealed_shard_with_an_integer_past_a_floats_range_is_run_again(cli, tmp_path, monkeypatch, huge):
    args, step = _sweep(cli, tmp_path)
    runs = []
    simulate = sweep_module._simulate
    monkeypatch.setattr(sweep_module, "_simulate", lambda *a: runs.append(1) or simulate(*a))
    path = next((tmp_path / "sw").glob("shards/**/*.json"))
    shard = json.loads(path.read_text())
    shard.pop(sweep_module.SEAL)
    shard["summary"]["mfu"] = huge
    path.write_text(json.dumps({**shard, sweep_module.SEAL: sweep_module._seal(shard)}))  # forged, seal and all
    code, out, err = cli(*args)
    assert code == 0 and len(runs) == 1, err
    assert json.loads(out)["rows"][0]["step_time_s"] == step


# ---- 4. collective's message sizes -------------------------------------------------------------------------------
@pytest.mark.parametrize("option", ["--min-bytes", "--max-bytes"])
def test_a_message_size_past_a_floats_range_is_one_line(cli, option):
    code, _, err = cli("collective", "--op", "allreduce", "--gpus", "8", "--network", "analytic",
                       option, "1" + "0" * 400)
    assert_one_line(code, err, 2)
    assert err.startswith(f"error: {option}: expected at most 1e+15 bytes"), err


# ---- 5. Kineto traces ---------------------------------------------------------------------------------------------
def _kernel(name: str, ts: float, dur: float, stream: int = 7) -> dict:
    return {"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": stream, "ts": ts, "dur": dur, "args": {}}


def _trace(tmp_path, rank: int = 0, **replace) -> str:
    events = [_kernel("gemm", 100.0, 50.0), _kernel("ncclKernel_AllReduce_RING_LL_Sum_float", 160.0, 30.0, 20)]
    text = json.dumps({"schemaVersion": 1, "traceEvents": events,
                       "distributedInfo": {"rank": rank, "world_size": 1}})
    for old, new in replace.items():
        text = text.replace(f'"{old}": 100.0' if old == "ts" else f'"{old}": 50.0', f'"{old}": {new}', 1)
    path = tmp_path / "trace.json"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("field,value", [("dur", "1" + "0" * 400), ("ts", "-1" + "0" * 400), ("dur", DIGITS_5000)],
                         ids=["dur-400-digits", "ts-negative-400-digits", "dur-5000-digits"])
def test_a_trace_time_past_a_floats_range_is_one_line(cli, tmp_path, field, value):
    trace = _trace(tmp_path, **{field: value})
    assert value in open(trace).read()
    code, _, err = cli("replay", trace, "--network", "analytic", "--out", tmp_path / "o")
    assert_one_line(code, err, 2)
    assert err.startswith(f"error: {trace}: "), err
    assert not (tmp_path / "o").exists()


def test_a_trace_of_rank_minus_one_is_refused(cli, tmp_path):
    code, _, err = cli("replay", _trace(tmp_path, rank=-1), "--network", "analytic", "--out", tmp_path / "o")
    assert_one_line(code, err, 2)
    assert "rank -1 is negative" in err, err


# ---- 6. a scenario path that is a link to nothing ------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_a_scenario_link_to_nothing_says_so(cli, tmp_path, kind):
    link = tmp_path / "s.yaml"
    if kind == "dangling":
        os.symlink(tmp_path / "gone.yaml", link)
    else:
        os.symlink(tmp_path / "t.yaml", link)
        os.symlink(link, tmp_path / "t.yaml")
    code, _, err = cli("run", link, "--network", "analytic", "--out", tmp_path / "o")
    assert_one_line(code, err, 2)
    assert "symbolic link that leads to no file" in err and "bundled" not in err, err


# ---- 7. the residual scripts' outputs and cache (round 30's step_shares.py and its neighbours) --------------------
@pytest.fixture(scope="module")
def step_shares():
    from scripts_loader import load_script

    return load_script("step_shares")


@pytest.mark.parametrize("option", ["--cache", "--csv", "--plot"])
def test_a_residual_scripts_output_on_its_input_is_refused_untouched(step_shares, tmp_path, capsys, option):
    cal = write_validate_output(tmp_path)
    before = cal.read_bytes()
    extra = () if option == "--cache" else ("--cache", str(tmp_path / "c.json"))
    code = step_shares.main([str(cal), str(cal), option, str(cal), *extra, "--limit-s", "0.001"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"error: {option}: " in err, err
    assert cal.read_bytes() == before  # --cache on the validate output rewrote it with the cache


@pytest.mark.parametrize("content", ["garbage{", "[1, 2]"], ids=["not-json", "not-an-object"])
def test_a_corrupt_feature_cache_is_one_line(step_shares, tmp_path, capsys, content):
    cache = tmp_path / "c.json"
    cache.write_text(content)
    cal = str(write_validate_output(tmp_path))
    code = step_shares.main([cal, cal, "--cache", str(cache)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "c.json" in err and "Traceback" not in err, err
    assert cache.read_text() == content


@pytest.mark.parametrize("limit", ["nan", "inf"])
def test_step_shares_time_limit_must_be_finite(step_shares, tmp_path, capsys, limit):
    cal = write_validate_output(tmp_path)
    code = step_shares.main([str(cal), str(cal), "--cache", str(tmp_path / "c.json"), "--limit-s", limit])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --limit-s: "), err


def test_a_validate_output_with_a_5000_digit_integer_is_one_line(step_shares, tmp_path, capsys):
    cal = tmp_path / "cal.json"
    cal.write_text('{"cases": [{"scenario": "x", "error": ' + DIGITS_5000 + "}]}")
    code = step_shares.main([str(cal), str(cal), "--cache", str(tmp_path / "c.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "more than 4,300 digits" in err, err


# ---- 8. the catalog look-alike note (round 30) with invisible and full-width characters ---------------------------
@pytest.mark.parametrize("name", ["\uff22300", "b300\u200b", "\u200db300"], ids=["full-width", "zero-width-space",
                                                                               "zero-width-joiner"])
def test_a_gpu_named_like_b300_with_invisible_or_full_width_characters_gets_the_note(cli, tmp_path, name):
    from simcluster.spec import hardware

    data = copy.deepcopy(SMALL)
    data["cluster"]["gpu"] = {**hardware.gpu("b300").model_dump(mode="json"), "name": name}
    code, _, err = cli("run", write_scenario(tmp_path, data), "--network", "analytic", "--json",
                       "--out", tmp_path / "o")
    assert code == 0, err
    assert "cluster.gpu.name" in err and "'b300'" in err, err
    assert hardware.catalog_lookalike(hardware.GpuSpec(**{**data["cluster"]["gpu"], "name": "b300-custom"})) is None


# ---- 9. an unknown key spelled near a known one --------------------------------------------------------------------
@pytest.mark.parametrize("section,key,meant", [("training", "cuda_graphs_scope", "cuda_graph_scope"),
                                               ("cluster", "gpus_per_nodes", "gpus_per_node"),
                                               (None, "modle", "model")])
def test_a_near_miss_key_is_told_the_key_it_is_close_to(cli, tmp_path, section, key, meant):
    data = copy.deepcopy(SMALL)
    (data[section] if section else data)[key] = 1
    code, _, err = cli("run", write_scenario(tmp_path, data), "--network", "analytic", "--out", tmp_path / "o")
    assert_one_line(code, err, 2)
    field = f"{section}.{key}" if section else key
    assert err.startswith(f"error: {field}: unknown key (did you mean '{meant}'"), err


def test_an_unknown_key_near_nothing_is_told_no_key_and_nested_paths_are_followed():
    data = copy.deepcopy(SMALL)
    data["training"]["zzzzz"] = 1
    with pytest.raises(ScenarioError, match=r"unknown key \(see `simcluster schema`"):
        config.from_dict(data)
    data = copy.deepcopy(SMALL)
    data["variability"] = {"stragglers": [{"rnaks": [0], "slowdown": 1.2}]}  # a list item's model
    with pytest.raises(ScenarioError, match="did you mean 'ranks'"):
        config.from_dict(data)


# ---- 10. round 30's data-file switches: the duty-cycle clock's inputs and host_overhead.cuda_graphs ----------------
@pytest.fixture
def efficiency(monkeypatch):
    """efficiency.yaml as the process reads it, to be edited by the test (restored after it)."""
    from simcluster.core import catalog

    table = catalog.load("efficiency")
    saved = copy.deepcopy(table)
    yield table
    table.clear()
    table.update(saved)


@pytest.mark.parametrize("key,value", [("comm_power_share", 10**400), ("controller_window_ms", -(10**400)),
                                       ("tensor_power", [1]), ("tensor_power", {"h100-sxm": {"bf16": 10**400}}),
                                       ("tensor_power", "x")],
                         ids=["share-past-float", "window-past-float", "tensor-power-list", "tensor-power-huge",
                              "tensor-power-text"])
def test_duty_cycle_clock_inputs_are_one_line_naming_the_key(cli, tmp_path, efficiency, key, value):
    efficiency["clock_model"] = "duty_cycle"
    efficiency["power_clock"] = {**efficiency["power_clock"], key: value}
    code, _, err = cli("run", write_scenario(tmp_path, copy.deepcopy(SMALL)), "--network", "analytic",
                       "--out", tmp_path / "o")
    assert_one_line(code, err, 2)
    assert err.startswith(f"error: efficiency.yaml power_clock.{key}"), err


@pytest.mark.parametrize("value", ["false", "yes", 1, None])
def test_the_cuda_graphs_switch_must_be_true_or_false(cli, tmp_path, efficiency, value):
    efficiency["host_overhead"] = {**efficiency["host_overhead"], "cuda_graphs": value}  # bool('false') was on
    data = copy.deepcopy(SMALL)
    data["training"]["cuda_graph_scope"] = "full_iteration"
    code, _, err = cli("run", write_scenario(tmp_path, data), "--network", "analytic", "--out", tmp_path / "o")
    assert_one_line(code, err, 2)
    assert err.startswith("error: efficiency.yaml host_overhead.cuda_graphs: "), err


# ---- 11. a fabric builder option past a float's range ----------------------------------------------------------------
@pytest.mark.parametrize("value", ["1" + "0" * 400, DIGITS_5000], ids=["400-digits", "5000-digits"])
def test_an_oversubscription_past_a_floats_range_is_one_line(cli, value):
    code, _, err = cli("collective", "--op", "allreduce", "--gpus", "16", "--topology", "leaf-spine",
                       "--topology-option", f"oversubscription={value}", "--network", "analytic", "--max-bytes", "1M")
    assert_one_line(code, err, 2)
    assert err.startswith("error: --topology-option: oversubscription: expected a ratio"), err


# ---- 12. laws loss-vs-time --summary: a number past a float's range, and round 30's partial summary ---------------
def _summary_text(**edit) -> str:
    """A summary.json as `run` writes it, in the figures loss-vs-time checks first; ``edit``: JSON texts."""
    figures = {"step_time_s": "1.5", "tokens_per_s": "10000.0", "mfu": "0.4", "gpus": "8", **edit}
    return "{" + ", ".join(f'"{key}": {value}' for key, value in figures.items()) + "}"


def test_a_summary_figure_past_a_floats_range_is_one_line(cli, tmp_path):
    summary = tmp_path / "summary.json"
    summary.write_text(_summary_text(mfu="1" + "0" * 400))
    code, _, err = cli("laws", "loss-vs-time", "--summary", summary, "--target-loss", "2.5", "--out", tmp_path / "l")
    assert_one_line(code, err, 2)
    assert err.startswith("error: --summary: mfu must be a finite number"), err


def test_a_partial_summary_is_said_to_be_partial(capsys):
    from simcluster.cli import laws as laws_cli

    data = json.loads(_summary_text(partial="true", samples="3", samples_requested="10"))
    assert laws_cli._checked_summary(data) is data  # read, not refused
    assert "note: --summary: a partial run, 3 of 10 samples" in capsys.readouterr().err
    laws_cli._checked_summary(json.loads(_summary_text()))  # a whole run: no note
    assert capsys.readouterr().err == ""


def test_a_misspelled_required_key_is_named_rather_than_the_missing_one(cli, tmp_path):
    data = copy.deepcopy(SMALL)
    data["modle"] = data.pop("model")  # before: "model: required field is missing", the typo unsaid
    code, _, err = cli("run", write_scenario(tmp_path, data), "--network", "analytic", "--out", tmp_path / "o")
    assert_one_line(code, err, 2)
    assert err.startswith("error: modle: unknown key (did you mean 'model'?"), err
    del data["modle"]  # the field alone missing: still said so
    with pytest.raises(ScenarioError, match="model: required field is missing"):
        config.from_dict(data)


# ---- 13. a Dask scheduler address with a port no TCP port is --------------------------------------------------------
@pytest.mark.parametrize("address", ["tcp://localhost:99999", "tcp://localhost:0", "localhost:-1", "tcp://[::1]:70000"])
def test_a_scheduler_port_out_of_range_is_refused_before_connecting(cli, tmp_path, address):
    code, _, err = cli("sweep", write_scenario(tmp_path, copy.deepcopy(SMALL)), "--gpus", "8", "--scheduler", address,
                       "--network", "analytic", "--no-plots", "--out", tmp_path / "sw")  # was a 10 s timeout first
    assert_one_line(code, err, 2)
    assert "is not one of 1 to 65535" in err, err
    for fine in ("tcp://localhost:8786", "tcp://[::1]:8786", "inproc://10.0.0.1/1234/1", "tls://scheduler:65535"):
        assert sweep_module.check_scheduler(fine) == fine


# ---- 14. layer_kernels.py (round 30) on a model whose layers it does not print ----------------------------------
@pytest.mark.parametrize("name", ["mcore-mixtral-8x7b-64-h100", "deepseek-v3-256-h100"])
def test_layer_kernels_refuses_moe_and_mla_models(capsys, name):
    from scripts_loader import load_script

    layer_kernels = load_script("layer_kernels")
    from simcluster.core import script_entry

    code = script_entry.call(layer_kernels.main, [name])  # was a dense MHA layer, and its microbatch, silently
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "dense multi-head attention layers only" in err, err


# ---- 15. a fabric file with a long name: compare's and replay's figure names -----------------------------------
def test_a_long_label_makes_a_file_name_a_file_system_takes():
    from simcluster.cli.compare import MAX_SLUG_CHARS, slug

    long_a, long_b = "f" * 245 + "a.yaml", "f" * 245 + "b.yaml"  # links-<slug>.png was 261 bytes: ENAMETOOLONG
    assert len(f"links-peak-{slug(long_a)}.png".encode()) <= 255 and len(slug(long_a)) == MAX_SLUG_CHARS
    assert slug(long_a) != slug(long_b)  # the cut keeps two labels two names (the hash of the whole label)
    assert slug("leaf-spine:oversubscription=2") == "leaf-spine_oversubscription=2"  # short labels as before


# ---- 16. a --vary list of thousands of values -------------------------------------------------------------------
def test_a_vary_list_past_the_grid_bound_is_refused_before_reading_its_values(cli, tmp_path):
    from simcluster.studies import grid

    values = ",".join(str(i) for i in range(1, grid.MAX_GRID_POINTS + 2))  # 20,000 took minutes (pairwise check)
    code, _, err = cli("sweep", write_scenario(tmp_path, copy.deepcopy(SMALL)), "--gpus", "8", "--vary",
                       f"training.micro_batch_size={values}", "--no-plots", "--out", tmp_path / "sw")
    assert_one_line(code, err, 2)
    assert f"has {grid.MAX_GRID_POINTS + 1:,} values" in err, err
    many = [f"training.seq_len={','.join(str(i) for i in range(1, 3001))},1",
            "training.micro_batch_size=1,1.0,true,'1'"]
    with pytest.raises(ScenarioError, match="repeats the value 1$"):
        grid.parse_vary(many[:1])
    # equal to Python, not to the scenario: four values
    assert grid.parse_vary(many[1:])["training.micro_batch_size"] == [1, 1.0, True, "1"]


# ---- review of round 31 (docs/calibration/round-31.md, "Round 31: review of the robustness changes")
# ----------------------
def test_labels_whose_names_coincide_get_two_names():
    from simcluster.cli.compare import MAX_SLUG_CHARS, slug, slugs

    labels = ["a b.yaml", "a_b.yaml", "leaf-spine:oversubscription=2"]  # the first two were both links-a_b.yaml.png
    names = slugs(labels)
    assert len(set(names)) == 3 and names == slugs(labels)  # distinct and deterministic
    assert names[2] == "leaf-spine_oversubscription=2"  # a name no other label shares is as before
    assert names[0].startswith("a_b.yaml-") and len(names[0]) == len("a_b.yaml-") + 12
    # a file name that is not UTF-8 reaches a label as lone surrogates: the hash of a long one was UnicodeEncodeError
    assert len(slug("f" * 200 + "\udcff.yaml")) == MAX_SLUG_CHARS


def test_a_vary_repeat_is_equality_of_one_type_not_of_reprs():
    from simcluster.studies import grid

    # 0.0 == -0.0 and [4, 4] == [4,4]: one grid point twice (the set of reprs of the first fix told them apart)
    with pytest.raises(ScenarioError, match="repeats the value -0.0$"):
        grid.parse_vary(["training.micro_batch_size=0.0,-0.0"])
    with pytest.raises(ScenarioError, match=r"repeats the value \[4,4\]$"):
        grid.parse_vary(["training.micro_batch_size=[4, 4],[4,4]"])
    assert grid.parse_vary(["training.micro_batch_size=[4, 4],[4, 8]"])["training.micro_batch_size"] == [[4, 4],
                                                                                                          [4, 8]]


def test_the_vary_repeat_check_compares_each_value_with_few_others():
    from simcluster.studies import grid

    calls = []

    class Counted:  # a value that counts the equality tests made on it (the pairwise check made n (n - 1) / 2)
        def __init__(self, n):
            self.n = n

        def __hash__(self):
            return hash(self.n)

        def __eq__(self, other):
            calls.append(1)
            return self.n == other.n

    values = [Counted(n) for n in range(grid.MAX_GRID_POINTS)]
    assert grid._first_repeat([str(n) for n in range(len(values))], values) is None
    assert len(calls) < len(values)  # was about 5 * 10**7 comparisons at the bound
    assert grid._first_repeat(["1", "2", "1"], [Counted(1), Counted(2), Counted(1)]) == "1"


@pytest.mark.parametrize("text,told", [
    ("a: 1\n2024-13-01: 1\n", "'2024-13-01' (line 2) reads as a date and is no date"),
    ("a: [1, 2024-02-03 25:00:00]\n", "(line 1) reads as a date and is no date"),
    ("a: 1\n1" + "0" * 1000 + ": 2\n", "1,001 characters (line 2)"),  # a plain key is at most 1,024 characters
], ids=["date-key", "hour-25", "integer-key"])
def test_a_date_or_integer_the_reader_cannot_build_is_named_by_its_line(text, told):
    # a date key is built (to find it written twice) before the traversal reaches it: it was a bare ValueError's
    # message with no line, and a value date too, before the review (the integer key was named by its line already)
    with pytest.raises(ScenarioError, match="quote it" if "date" in told else "no field takes one") as caught:
        inputs.parse_yaml(text, "t.yaml")
    assert told in str(caught.value), caught.value
    assert inputs.parse_yaml("a: 2024-02-29\n2024-02-03: 1\n", "t.yaml")  # real dates are read as before
