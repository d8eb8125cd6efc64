"""Round 33's review of the robustness changes and of the round's other additions (docs/calibration/round-33.md, "Round
33: review of the robustness changes"). Each case failed before its fix:

- a sweep whose every run fails, into a folder that was there empty (one the user made), left its grid file and
  the failures' shards there, and with ``--out a/new/x`` left ``a/new/`` behind: only a folder the sweep made
  itself was removed (``sweep.folder_for`` now returns what undoes the folder);
- efficiency.yaml ``sustained_share`` (the A100 per-kernel entries among them): a share past the burst (1e9, or 2
  on an H100 whose clock_ratio is 0.8: a GEMM stream at the power cap faster than at its boost clock) ran, every
  GEMM 10^9 times faster, a misspelt kind (``gem``) was ignored unsaid, and a table that is no mapping
  (``sustained_share: 0.9``) was a TypeError traceback;
- ``training.dropout_add_norm: fused`` (flash-attention's DropoutAddLayerNorm) was accepted on Megatron-Core and
  Megatron-DeepSpeed layers (an MLPerf scenario: two sum kernels a layer dropped without a word);
- ``dp_phase_charges.py --stretch 2`` with no row printed nothing and exited 0; ``--solve`` (or ``--stretch``) on a
  row of dp 1 simulated it twice to say "still fast" (no data-parallel collective to stretch);
- ``accuracy_tables.py --write PAGE`` read the page by ``Path.read_text``: a FIFO waited for a writer forever;
- round 33 refused every pipe where a file is read, a pipe with a writer too: ``replay <(zcat t.json.gz)``,
  ``laws loss-vs-time --summary <(...)`` and ``cat t.json | replay /dev/stdin`` worked before it. A pipe is now
  opened without blocking: one with a writer is read (within the same byte limits), one without is refused at once.
"""

from __future__ import annotations

import copy
import json
import os
import threading
from pathlib import Path

import pytest
from scripts_loader import load_script, refuse_simulation

from simcluster.core import inputs
from simcluster.core.errors import ScenarioError
from simcluster.spec import config, hardware
from simcluster.workload import kernels, power_clock
from simcluster.workload.ops import Op
from tests.cli.scenario_files import SMALL, assert_one_line, write_scenario


# ---- 1. a sweep whose every run fails keeps nothing, in a folder that was empty or under parents it made --------
@pytest.mark.parametrize("layout", ["empty-folder", "new-parents"])
def test_an_all_failed_sweep_leaves_the_folder_as_it_found_it(cli, tmp_path, layout):
    scenario = write_scenario(tmp_path, copy.deepcopy(SMALL))
    if layout == "empty-folder":
        out = tmp_path / "mine"
        out.mkdir()  # the user's own empty folder: kept, and kept empty
    else:
        out = tmp_path / "a" / "new" / "x"
        (tmp_path / "a").mkdir()  # the user's: kept; a/new/ was made by the sweep
    code, _, err = cli("sweep", scenario, "--gpus", "16", "--topology", "nosuch", "--jobs", "1", "--no-plots",
                       "--network", "analytic", "--out", out)
    assert_one_line(code, err, 2)
    assert err.startswith("error: sweep: all 1 runs failed"), err
    if layout == "empty-folder":
        assert out.is_dir() and list(out.iterdir()) == []
    else:
        assert list((tmp_path / "a").iterdir()) == []


# ---- 2. efficiency.yaml sustained_share: at most the burst, kinds spelt right ------------------------------------
GEMM = Op("gemm", "gemm", 2.0 * 8192 ** 3, 0.0, 8192, 8192, 8192)


def _with_shares(monkeypatch, shares: dict) -> None:
    table = dict(power_clock._table())
    table["sustained_share"] = shares
    monkeypatch.setattr(power_clock, "_table", lambda: table)


@pytest.mark.parametrize(("gpu", "share"), [("h100-sxm", 1.3), ("h100-sxm", 1e9), ("a100-80gb-sxm", 1.01)])
def test_a_share_past_the_burst_is_refused_naming_its_key(monkeypatch, gpu, share):
    """clock_ratio x share > 1: the capped stream faster than the short benchmark's (H100 0.8, A100 1.0)."""
    _with_shares(monkeypatch, {"default": {"gemm": share, "attention": 1.0}})
    with pytest.raises(ScenarioError, match=r"sustained_share\.default\.gemm: .* above 1"):
        kernels.roofline_s(GEMM, hardware.gpu(gpu), "bf16")


def test_a_share_at_the_burst_is_kept(monkeypatch):
    """H100: 1 / 0.8 = 1.25 puts the stream at the burst clock, allowed; the A100's flash 0.85 as shipped."""
    _with_shares(monkeypatch, {"default": {"gemm": 1.25, "attention": 1.0}})
    h100 = hardware.gpu("h100-sxm")
    assert kernels.roofline_s(GEMM, h100, "bf16")[0] == pytest.approx(
        kernels.roofline_s(GEMM, h100, "bf16", sustained=False)[0] / kernels.ceiling_ratio("h100-sxm"), rel=1e-12)
    monkeypatch.undo()
    assert power_clock.sustained_share("a100-80gb-sxm", "attention", "flash", 1.0) == 0.85


def test_a_misspelt_kind_is_refused_naming_it(monkeypatch):
    _with_shares(monkeypatch, {"default": {"gemm": 1.0}, "b200": {"gem": 0.9, "attention": 1.0}})
    with pytest.raises(ScenarioError, match=r"sustained_share\.b200\.gem: not a kernel kind"):
        power_clock.sustained_share("b200", "attention")


@pytest.mark.parametrize("table", [0.9, "fast", [0.9]])
def test_a_table_that_is_no_mapping_is_refused_naming_it(monkeypatch, table):
    """``sustained_share: 0.9`` (one share for everything, a natural slip) was a TypeError traceback."""
    _with_shares(monkeypatch, table)
    with pytest.raises(ScenarioError, match=r"^efficiency\.yaml sustained_share: .* is not a mapping"):
        power_clock.sustained_share("b200", "gemm")


def test_a_bad_share_is_one_line_from_the_command(cli, tmp_path, monkeypatch):
    _with_shares(monkeypatch, {"default": {"gemm": 2.0, "attention": 1.0}})
    code, _, err = cli("run", write_scenario(tmp_path, copy.deepcopy(SMALL)), "--steps", "1", "--network",
                       "analytic", "--out", tmp_path / "o")
    assert_one_line(code, err, 2)
    assert "efficiency.yaml sustained_share.default.gemm" in err and not (tmp_path / "o").exists(), err


# ---- 3. training.dropout_add_norm: fused is flash-attention's, not Megatron's ------------------------------------
@pytest.mark.parametrize("stack", [{"training": {"mcore_version": "0.11"}},
                                   {"parallelism": {"pipeline_engine": "deepspeed", "overlap_grad_reduce": False,
                                                   "sequence_parallel": False, "p2p_scatter_gather": True}}])
def test_a_fused_dropout_add_norm_on_a_megatron_layer_is_refused(stack):
    data = copy.deepcopy(SMALL)
    for section, values in stack.items():
        data[section].update(values)
    assert config.from_dict(data).training.dropout_add_norm == "separate"  # the stack itself loads
    data["training"]["dropout_add_norm"] = "fused"
    with pytest.raises(ScenarioError, match=r"^training\.dropout_add_norm: fused is flash-attention's"):
        config.from_dict(data)


def test_the_flash_attention_rows_keep_their_fused_norm():
    assert config.load("dao2023-gpt3-1.3b-2k-8-a100").training.dropout_add_norm == "fused"


# ---- 4. dp_phase_charges.py: a row to work on, one with a data-parallel group ------------------------------------
dp_phase_charges = load_script("dp_phase_charges")


@pytest.fixture
def no_simulation(monkeypatch):
    refuse_simulation(monkeypatch, dp_phase_charges)


@pytest.mark.parametrize(("argv", "needle"), [
    (["--stretch", "2"], "scenario: no validation row given"),
    (["--solve"], "scenario: no validation row given"),
    (["megatron-1.2b-a100-node", "--solve"], "parallelism.dp: megatron-1.2b-a100-node: dp 1"),
    (["--stretch", "2", "megatron-1.2b-a100-node"], "parallelism.dp: megatron-1.2b-a100-node: dp 1"),
])
def test_dp_phase_charges_needs_a_row_with_a_data_parallel_group(no_simulation, argv, needle):
    with pytest.raises(ScenarioError, match=needle.replace(".", r"\.")):
        dp_phase_charges.main(argv)


def test_a_dp_1_row_is_still_reported_without_stretching(no_simulation):
    case, scenario = dp_phase_charges.row("megatron-1.2b-a100-node")  # the plain report needs no DP group
    assert scenario.parallelism.dp == 1 and case["scenario"] == "megatron-1.2b-a100-node"


# ---- 5. accuracy_tables.py --write: the page read with the input bounds ------------------------------------------
accuracy_tables = load_script("accuracy_tables")
time_limit = load_script("recipe_sweep").time_limit


def test_a_page_that_is_a_fifo_is_refused_not_waited_for(tmp_path, capsys):
    case = {"scenario": "megatron-1.7b-h100", "source": "s", "family": "f", "precision": "bf16", "error": 0.01,
            "step_time_s": 1.0}
    cal, ho, page = tmp_path / "cal.json", tmp_path / "ho.json", tmp_path / "page.md"
    for path, name in ((cal, case["scenario"]), (ho, "a-held-out-row")):  # round 35: a row in its own set
        path.write_text(json.dumps({"cases": [{**case, "scenario": name}]}))
    os.mkfifo(page)
    with time_limit(5.0):
        assert accuracy_tables.main([str(cal), str(ho), "--write", str(page)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "page.md: is a pipe with nothing written to it" in err, err


# ---- 6. a pipe with a writer is read again; one without is refused at once ---------------------------------------
KINETO = "tests/data/kineto/a100-2rank-allreduce.rank0.json.gz"


def _fed_fifo(tmp_path, data: bytes):
    """A pipe whose write end is open and fed by a thread, named as ``<(zcat t.json.gz)`` names one (/dev/fd/N)."""
    read_end, write_end = os.pipe()

    def feed():
        with os.fdopen(write_end, "wb") as handle:
            handle.write(data)
    threading.Thread(target=feed, daemon=True).start()
    return Path(f"/dev/fd/{read_end}")


def test_a_trace_through_a_pipe_replays_as_the_file(cli, tmp_path):
    trace = Path(__file__).resolve().parents[2] / KINETO
    with time_limit(20.0):
        code, out, err = cli("replay", _fed_fifo(tmp_path, trace.read_bytes()), "--json", "--network", "analytic")
        assert code == 0, err
        code, direct, err = cli("replay", trace, "--json", "--network", "analytic")  # --json: no folder written
    assert code == 0, err
    assert json.loads(out)["steps"] == json.loads(direct)["steps"]


def test_a_summary_through_a_pipe_is_read_and_a_device_is_not(tmp_path):
    with time_limit(5.0):
        assert inputs.load_json(_fed_fifo(tmp_path, b'{"a": 1}'), what="summary") == {"a": 1}
    with pytest.raises(ScenarioError, match="/dev/zero: is not a regular file or a pipe"):
        inputs.read_text(Path("/dev/zero"), inputs.MAX_JSON_BYTES)
    with pytest.raises(ScenarioError, match="is not a regular file or a pipe"):
        inputs.read_text(tmp_path, inputs.MAX_JSON_BYTES)  # a folder


def test_a_pipe_is_held_to_the_same_limit(tmp_path):
    with time_limit(5.0), pytest.raises(ScenarioError, match="MiB limit for a file"):
        inputs.read_text(_fed_fifo(tmp_path, b"x" * 64), 10, "file")


def test_a_graphml_fabric_is_parsed_from_the_text_read_once(monkeypatch):
    """The bounded read's text is the one parsed: opened again by ``read_graphml``, a file replaced between the two
    reads was parsed unchecked, and a pipe would have been read twice."""
    import networkx as nx

    from simcluster.fabric import files

    def reopened(*_args, **_kw):
        raise AssertionError("the GraphML file was opened a second time")
    monkeypatch.setattr(nx, "read_graphml", reopened)
    builder, gpus_per_node = files.from_graphml(Path(__file__).resolve().parents[2]
                                                / "topologies/four-gpus-one-switch.graphml")
    assert builder.gpu_nodes == ["s0-gpu0", "s0-gpu1", "s1-gpu0", "s1-gpu1"] and gpus_per_node == 2  # the file's
