"""scripts/residuals.py: the features of a row against closed forms and the engine's summary.

Checks, on a data-parallel row (Megatron-Core 1.7B, 48 H100, pp 1) and an interleaved pipelined one (Llama 2 70B FP8,
tp 4, pp 4, 20 chunks a stage, 32 microbatches): the microbatches are global batch / (micro batch x dp); the critical
path the fitted constants act on is 2 (m v + pp - 1) blocks (Narayanan et al. 2021's interleaved 1F1B, as
``scripts/fit_host_overheads.py`` linearises it: ``Run.critical_blocks``); the fitted terms on it are those blocks
times the pipeline step and their kernels times the per-kernel gap (efficiency.yaml); the exposed communication per
parallelism adds up to the summary's; a dense layer's op shares add up to 1; and a row's published step and missing
time follow from its error (error = published step / simulated step - 1). Fails if the v factor or the pp - 1 fill
is dropped, the pipeline step charged without a pipeline, or the error's sign flipped.
"""

import json

import pytest
from scripts_loader import load_script

from simcluster.engine import simulate
from simcluster.spec import config
from simcluster.workload import kernels

DP_ROW = "megatron-1.7b-h100"
PIPELINED_ROW = "nemo2407-llama2-70b-64-h100-fp8"


@pytest.fixture(scope="module")
def residuals():
    return load_script("residuals")


@pytest.fixture(scope="module")
def rows(residuals):
    return {name: residuals.features(name) for name in (DP_ROW, PIPELINED_ROW)}


@pytest.mark.parametrize("name", [DP_ROW, PIPELINED_ROW])
def test_critical_path_closed_form(rows, name):
    f = rows[name]
    s = config.load(name)
    t, p = s.training, s.parallelism
    m = t.global_batch_size // (t.micro_batch_size * p.dp)
    v = p.virtual_stages or 1 if p.pp > 1 else 1
    assert f["microbatches"] == m and f["vp"] == v
    assert f["crit_blocks"] == 2 * (m * v + p.pp - 1)


def test_pipelined_row_numbers(rows):
    f = rows[PIPELINED_ROW]   # 128 sequences / (1 x dp 4) = 32 microbatches, 80 layers / pp 4 = 20 chunks a stage
    assert (f["microbatches"], f["vp"], f["pp"]) == (32, 20, 4)
    assert f["crit_blocks"] == 2 * (32 * 20 + 3)
    assert f["pipe_ms"] == pytest.approx(1286 * kernels.host_model().pipeline_step_s * 1e3)
    assert rows[DP_ROW]["pipe_ms"] == 0.0   # pp 1: no pipeline step charged


def test_shares_follow_the_summary(rows):
    summary = simulate(config.load(DP_ROW), check_memory=False).summary
    f = rows[DP_ROW]
    step = summary["step_time_s"]
    assert f["step_s"] == pytest.approx(step, rel=1e-12)
    assert sum(f[f"exposed_{axis}_share"] for axis in ("tp", "cp", "pp", "dp", "ep")) == pytest.approx(
        f["exposed_share"])
    assert f["gemm_share"] + f["attention_share"] + f["memory_share"] == pytest.approx(1.0)
    assert 0.5 < f["gemm_share"] < 1.0


def test_missing_time_follows_the_error(residuals, rows, tmp_path):
    f = rows[DP_ROW]
    case = {"scenario": DP_ROW, "family": "x", "source": "megatron_core_h100_2024", "error": 0.05,
            "step_time_s": f["step_s"]}
    for label in ("val", "ho"):
        (tmp_path / f"{label}.json").write_text(json.dumps({"cases": [case]}))
    cache = tmp_path / "cache.json"
    cache.write_text(json.dumps({DP_ROW: f}))
    row = residuals.load_rows(tmp_path / "val.json", tmp_path / "ho.json", cache)[0]
    # simulated 5% faster than published: the published step is 1.05 x the simulated one, the simulation lacks time
    assert row["published_s"] == pytest.approx(1.05 * f["step_s"])
    assert row["missing_ms"] == pytest.approx(0.05 * f["step_s"] * 1e3)


def test_spearman_closed_forms(residuals):
    assert residuals.spearman([1, 2, 3, 4, 5], [2, 4, 8, 16, 32]) == pytest.approx(1.0)
    assert residuals.spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    assert residuals.spearman([1, 2, 3, 4, 5, 6], [1, 3, 2, 5, 4, 6]) == pytest.approx(1 - 6 * 4 / (6 * 35))


def test_structure_fit_recovers_a_missing_per_kernel_cost(residuals):
    """Rows whose published step is the simulated one plus 5 us per critical-path kernel: the per-kernel structure
    refitted on the calibration rows finds +5 us and zeroes every row, held-out included (the fit never reads them)."""
    rows = []
    for i, kernels_ in enumerate((1000.0, 3000.0, 8000.0, 20000.0, 2500.0, 12000.0)):
        step = 1.0 + 0.3 * i
        published = step + 5e-6 * kernels_
        rows.append({"set": "cal" if i < 4 else "ho", "step_s": step, "published_s": published,
                     "missing_ms": (published - step) * 1e3, "crit_kernels": kernels_, "crit_blocks": 10.0 + i,
                     "device_ms_per_block": 50.0, "pp": 1, "bubble_share": 0.0})
    fits = {label: (x, scores) for label, x, scores in residuals.structure_fits(rows)}
    x, scores = fits["per kernel"]
    assert x[0] == pytest.approx(5e-6)
    assert scores["cal"][1] < 1e-12 and scores["ho"][1] < 1e-12
