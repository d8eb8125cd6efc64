"""Round 29's robustness leftovers (docs/calibration/round-29.md, "Round 29: robustness leftovers"). Each case guarding
a fix failed before it:

- an inline GPU spec named like a catalog GPU (``name: b300``) with other compute or memory figures was simulated
  with that GPU's name-keyed tables (SM counts, clocks, GEMM and HBM fractions) under figures they were not
  measured with, silently; `run` now says so in a note naming ``cluster.gpu.name`` and the figure (a what-if of
  that chip, as ``sweep --vary cluster.gpu.hbm_bandwidth=...`` writes; refusing it, as first built, broke such
  sweeps);
- a second Ctrl-C while an interrupted command wrote the work it had finished (``run``'s summary.json,
  ``compare``'s partial table) removed it again;
- a sweep shard forged or damaged past the reader's checks (an impossible throughput, a list for ``layout``) was
  refused naming ``summary.tokens_per_s`` but not the shard's file, or was a traceback.
"""

from __future__ import annotations

import copy
import json
import signal

import pytest

from simcluster import cli as cli_module
from simcluster.cli.app import Interrupted, keeping
from simcluster.core import outputs
from simcluster.parallel import megatron_fsdp_prefetch, memory
from simcluster.spec import config, hardware
from simcluster.studies import sweep as sweep_module
from tests.cli.scenario_files import assert_one_line, write_scenario
from tests.conftest import SMALL

B300 = hardware.gpu("b300").model_dump(mode="json")


def _scenario(gpu) -> dict:
    data = copy.deepcopy(SMALL)
    data["cluster"] = {"gpu": gpu, "gpus_per_node": 8, "nodes": 1, "topology": "nvswitch-node"}
    data["training"]["global_batch_size"] = 16
    data["parallelism"] = {"tp": 2, "pp": 1, "dp": 4}
    return data



# ---- 1. an inline GPU named like a catalog GPU ----------------------------------------------------------------
@pytest.mark.parametrize(("edit", "figure"), [
    ({"peak": {**B300["peak"], "bf16": "2.5 PFLOP/s"}}, "peak.bf16 2.5 PFLOP/s"),
    ({"peak": {k: v for k, v in B300["peak"].items() if k != "fp4"}}, "peak.fp4 not listed"),
    ({"hbm_bandwidth": "8 TB/s"}, "hbm_bandwidth 8 TB/s"),
    ({"hbm_capacity": "288 GB"}, "hbm_capacity 288 GB"),
    ({"nvlink_generation": 4}, "nvlink_generation 4"),
])
def test_an_inline_gpu_named_like_a_catalog_gpu_with_other_silicon_says_whose_tables_it_takes(
        cli, tmp_path, edit, figure):
    """Was simulated silently with B300's SM count and clocks under another peak (round 29). It stays that chip
    with one figure changed, a what-if (`sweep --vary cluster.gpu.hbm_bandwidth=...` writes such specs), and `run`
    says so, naming the figure that differs."""
    code, out, err = cli("run", write_scenario(tmp_path, _scenario({**B300, **edit})), "--network", "analytic", "--out",
                         tmp_path / "o")
    assert code == 0 and "Traceback" not in err, (code, err)
    said = " ".join((out + err).split())
    assert "note: cluster.gpu.name: 'b300' is a catalog GPU but its " + figure in said, said
    assert config.gpu_catalog_note(config.from_dict(_scenario({**B300, **edit}))) is not None
    assert config.gpu_catalog_note(config.from_dict(_scenario(B300))) is None


def _step_s(gpu) -> float:
    from simcluster.engine.simulation import Simulation

    return Simulation(config.from_dict(_scenario(gpu)), "analytic").run(1).summary["step_time_s"]


def test_an_inline_gpu_with_its_catalog_figures_or_other_board_figures_is_that_gpu():
    """The catalog's figures written in other units, or another TDP, price and NVLink bandwidth on an NVLink-free
    layout (an A800-like part, a power cap), keep the GPU's per-GPU tables: the step is the catalog GPU's. Renamed,
    the same figures take the tables' defaults, another step."""
    catalog_step = _step_s("b300")
    same = {**B300, "hbm_bandwidth": "7670 GB/s", "peak": {**B300["peak"], "bf16": "2250 TFLOP/s"}}
    board = {**B300, "tdp": "800 W", "idle_power": "150 W", "price_per_gpu_hour": 3.0, "vendor": "someone"}
    assert _step_s(same) == catalog_step
    assert _step_s(board) == catalog_step
    assert _step_s({**B300, "name": "my-b300"}) != catalog_step
    a800 = {**hardware.gpu("a100-80gb-sxm").model_dump(mode="json"), "nvlink_bandwidth": "200 GB/s"}
    assert config.from_dict(_scenario(a800)).cluster.gpu.nvlink_bandwidth == 200e9


# ---- 2. a second Ctrl-C while finished work is kept -------------------------------------------------------------
@pytest.fixture
def second_ctrl_c(monkeypatch):
    """After ``first`` is called (the first Ctrl-C, raised where the command writes), every atomic file write
    receives a real SIGINT just before it writes: the second Ctrl-C, through the handler the command installed."""
    state = {"first": False}
    real = outputs.write_text

    def write_text(path, text):
        if state["first"]:
            signal.raise_signal(signal.SIGINT)
        return real(path, text)

    monkeypatch.setattr(outputs, "write_text", write_text)

    def first(*_args, **_kwargs):
        state["first"] = True
        raise Interrupted(signal.SIGINT)

    return first


def test_run_keeps_its_summary_through_a_second_ctrl_c(cli, tmp_path, monkeypatch, second_ctrl_c):
    from simcluster.engine import results

    monkeypatch.setattr(results, "write_chrome_trace", second_ctrl_c)
    code, _, err = cli("run", write_scenario(tmp_path, copy.deepcopy(SMALL)), "--network", "analytic",
                       "--out", tmp_path / "r")
    assert_one_line(code, err, 130)
    assert "the simulation had finished; wrote summary.json" in err, err
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["summary.json"]
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["step_time_s"] > 0


def test_compare_keeps_its_finished_runs_through_a_second_ctrl_c(cli, tmp_path, monkeypatch, second_ctrl_c):
    from simcluster.analysis import plots

    monkeypatch.setattr(plots, "save", second_ctrl_c)
    code, _, err = cli("compare", write_scenario(tmp_path, copy.deepcopy(SMALL)), "--topology", "rail-fat-tree",
                       "--topology", "leaf-spine", "--network", "analytic", "--out", tmp_path / "c")
    assert_one_line(code, err, 130)
    assert "2 of 2 runs finished; wrote compare.csv, compare.json" in err, err
    assert len(json.loads((tmp_path / "c" / "compare.json").read_text())["runs"]) == 2


def test_keeping_ignores_signals_only_while_it_lasts():
    """Inside a command's handlers: a signal within ``keeping`` is dropped, one after it raises again."""
    with pytest.raises(Interrupted) as stop, cli_module._interrupts():
        with keeping():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGTERM)
            for _ in range(1000):  # bytecodes: a handler runs here
                pass
        signal.raise_signal(signal.SIGTERM)
        for _ in range(1000):
            pass
    assert stop.value.signum == signal.SIGTERM


# ---- 3. a forged shard names its file ---------------------------------------------------------------------------
@pytest.mark.parametrize(("forge", "said"), [
    (lambda summary: summary.update(tokens_per_s=1e308), "summary.tokens_per_s"),  # named no file before
    (lambda summary: summary.update(layout=[1]), "AttributeError"),  # a traceback before
    (lambda summary: summary.update(fabric={"switches": 1}), "KeyError"),  # a traceback before
])
def test_a_forged_shard_is_refused_naming_its_file(cli, tmp_path, forge, said):
    """Forged with its seal recomputed (round 30: an edit that leaves the seal is run again, test_round30_robustness):
    what reading its summary raises names the file."""
    sweep = ("sweep", write_scenario(tmp_path, copy.deepcopy(SMALL)), "--gpus", "16", "--jobs", "1", "--no-plots",
             "--network", "analytic", "--json", "--out", tmp_path / "sw")
    code, _, err = cli(*sweep)
    assert code == 0, err
    path = next((tmp_path / "sw").glob("shards/**/*.json"))
    shard = json.loads(path.read_text())
    forge(shard["summary"])
    del shard[sweep_module.SEAL]
    path.write_text(json.dumps({**shard, sweep_module.SEAL: sweep_module._seal(shard)}))
    code, _, err = cli(*sweep)
    assert_one_line(code, err, 2)
    assert err.startswith(f"error: {path}: ") and said in err and "--fresh" in err, err


# ---- 4. the ZeRO-3 memory bound the docs state ------------------------------------------------------------------
def test_megatron_fsdp_memory_counts_the_next_unit_even_where_none_is_prefetched():
    """docs/scenario.md (`zero_stage`) and compute-and-memory.md say the memory is an upper bound by one unit where
    Megatron-FSDP prefetches none: the same bytes with and without the prefetch. Should the memory model follow the
    prefetch, this fails and the docs must say so instead."""
    def scenario(**parallelism):
        return config.from_dict({
            "name": "fsdp", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 1,
                                        "topology": "nvswitch-node"},
            "model": "llama3-8b", "training": {"seq_len": 2048, "global_batch_size": 16, "mcore_version": "0.15"},
            "parallelism": {"tp": 1, "pp": 1, "dp": 8, "zero_stage": 3, **parallelism}})

    prefetching, lone = scenario(), scenario(suggested_communication_unit_size=1)
    assert megatron_fsdp_prefetch.prefetches_next_unit(prefetching)
    assert not megatron_fsdp_prefetch.prefetches_next_unit(lone)
    assert memory.per_gpu_memory(lone).total_bytes == memory.per_gpu_memory(prefetching).total_bytes
