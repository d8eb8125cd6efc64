"""scripts/fsdp_unit_margin.py (docs/calibration/round-31.md "Round 31: MPT-13B and MPT-70B on 32 against their
siblings, unit by unit"): the exposure a stretch of FSDP1's overlapped collectives would add, and the stretch each
published step needs.

- ``exposure_s`` is the closed form of the script's doc: zero while k G <= T_f and k (G + R) <= T_b, the forward's
  part alone between the two margins, both parts (linear in k) beyond, times units x microbatches;
- ``stretch_needed`` returns the k whose exposure is the published step less the simulated one (less the baseline
  share), None when the published step needs none or no k up to the cap reaches it;
- the parts read from a simulated FSDP1 row agree with its FSDP traffic: per unit and microbatch FSDP1 gathers twice
  and reduce-scatters once, the root kept gathered (tests/validation/test_round19_mpt_h100_rows.py), so
  units x microbatches x (2 G + R) less one root gather is the rank's collective time, and the model hides every
  collective (k = 1 adds nothing);
- a sibling is its bundled scenario with only the GPU count (nodes, dp, global batch) and, for MPT-3B, the shape and
  micro batch changed: its parameter count is the README's NumParams (2,651,837,440 for MPT-3B, 1,315,950,592 for
  MPT-1B) and its global batch the README's (GPUs x micro batch x accumulation);
- ``--trend`` (round 35): a series is the rows of one trend-series key (``studies.trends``: source, model, layout)
  and one accumulation, so rows that differ in the GPU count alone; its parts partition each simulated step, the
  per-GPU compute parts do not move with the GPU count, the ``other`` part's change is the optimizer step's change
  read from the events, and the table prints each part's change from the fewest GPUs;
- bad input: a case without its field, a prefix no case has and a baseline out of range exit 2 with one line.
"""

import json

import pytest
from scripts_loader import load_script

from simcluster.spec import config


@pytest.fixture(scope="module")
def fm():
    return load_script("fsdp_unit_margin")


def unit(fm, published_s=1.2, simulated_s=1.0, units=10, microbatches=2):
    # T_f 3, T_b 8, G 1, R 1 (ms): forward margin 3, backward margin 4
    return fm.Unit("synthetic", units, microbatches, 3e-3, 8e-3, 1e-3, 1e-3, 0.0, 0.0, simulated_s, published_s)


def test_exposure_is_the_closed_form(fm):
    u = unit(fm)
    assert fm.exposure_s(u, 1.0) == 0.0
    assert fm.exposure_s(u, 3.0) == 0.0  # exactly the forward margin
    assert fm.exposure_s(u, 3.5) == pytest.approx(20 * 0.5e-3)  # forward only: 3.5 - 3 ms a unit
    assert fm.exposure_s(u, 5.0) == pytest.approx(20 * (2e-3 + 2e-3))  # 5 - 3 forward, 10 - 8 backward


def test_stretch_needed_solves_the_published_step(fm):
    u = unit(fm, published_s=1.08)  # 80 ms to explain: 20 x 4 ms a unit, the k = 5 of the closed form above
    assert fm.stretch_needed(u) == pytest.approx(5.0, rel=1e-9)
    k = fm.stretch_needed(u, baseline=0.02)  # 60 ms left: 20 x 3 ms = (k - 3) + 2 (k - 4) -> k = 14 / 3
    assert k == pytest.approx(14 / 3, rel=1e-9)
    assert fm.exposure_s(u, k) == pytest.approx(1.08 - 1.0 * 1.02, rel=1e-9)


def test_stretch_needed_is_none_without_a_gap_or_beyond_the_cap(fm):
    assert fm.stretch_needed(unit(fm, published_s=0.99)) is None
    assert fm.stretch_needed(unit(fm, published_s=1.05), baseline=0.05) is None
    assert fm.stretch_needed(unit(fm, published_s=1e6)) is None  # beyond k = 1000


@pytest.fixture(scope="module")
def row(fm):
    return fm.unit_parts("mpt-1b-64-h100", config.load("mpt-1b-64-h100"), 1.0, 1.1)


def test_parts_add_up_to_the_rows_fsdp_traffic(row):
    assert (row.units, row.microbatches) == (25, 1)  # 24 blocks and the root, one microbatch (20 x 1)
    per_unit = 2 * row.gather_s + row.scatter_s
    expected = row.units * row.microbatches * per_unit - row.microbatches * row.gather_s
    assert row.collectives_s == pytest.approx(expected, rel=0.02)
    assert row.fwd_margin > 1 and row.bwd_margin > 1


def test_the_model_hides_every_collective_at_k_1(fm, row):
    assert fm.exposure_s(row, 1.0) == 0.0


@pytest.mark.parametrize(
    ("label", "gpus", "params", "global_batch"),
    [
        ("MPT-1B", 16, 1315950592, 320),
        ("MPT-3B", 32, 2651837440, 576),
        ("MPT-3B", 64, 2651837440, 1152),
        ("MPT-7B", 32, 6658859008, 576),
    ],
)
def test_siblings_are_the_tables_rows(fm, label, gpus, params, global_batch):
    _, name, changes, rows = next(s for s in fm.SIBLINGS if s[0].startswith(label))
    assert gpus in rows
    scenario = fm.sibling_scenario(name, gpus, changes)
    base = config.load(name)
    assert scenario.model.params == params
    assert (scenario.cluster.gpus, scenario.parallelism.dp, scenario.training.global_batch_size) == (
        gpus,
        gpus,
        global_batch,
    )
    assert scenario.training.seq_len == base.training.seq_len and scenario.cluster.gpu == base.cluster.gpu


def case(name, error, step_time_s):
    """A held-out case as validate --json writes it (the TFLOP/s: any positive pair; the error is what is read)."""
    return {"scenario": name, "error": error, "step_time_s": step_time_s, "family": "llmfoundry", "metric": "model",
            "published_tflops": 400.0, "simulated_tflops": 400.0 * (1 + error)}


def write_cases(tmp_path, cases):
    path = tmp_path / "ho.json"
    path.write_text(json.dumps({"cases": cases}))
    return str(path)


def test_bad_input_exits_2_with_one_line(fm, tmp_path, capsys):
    missing = write_cases(tmp_path, [{"scenario": "mpt-1b-64-h100", "error": 0.1}])
    assert fm.main([missing]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "step_time_s" in err
    good = write_cases(tmp_path, [case("mpt-1b-64-h100", 0.1, 0.85)])
    assert fm.main([good, "--prefix", "llama"]) == 2
    assert "no case" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        fm.main([good, "--baseline", "nan"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--baseline" in err


def test_trend_table_prints_each_parts_change(fm):
    rows = [
        fm.TrendRow(16, {"tc": 0.5, "other": 0.05}, 0.55, 0.60),
        fm.TrendRow(8, {"tc": 0.5, "other": 0.1}, 0.6, 0.61),
    ]
    lines = fm.trend_table("x-N-h100", rows)
    assert "change from 8 GPUs" in lines[0]
    by_label = {line.split()[0]: line for line in lines[2:]}
    assert set(by_label) == {"tc", "other", "simulated", "published"}  # parts zero everywhere are left out
    assert by_label["other"].split() == ["other", "100.0", "(", "+0.0)", "50.0", "(", "-50.0)"]
    assert lines[-1].split()[-3:] == ["50.0", "(", "+40.0)"]  # published - simulated: 10 ms at 8 GPUs, 50 at 16


@pytest.fixture(scope="module")
def mpt13_trend(fm):
    cases = [
        case("mpt-13b-8-h100", 0.15, 0.74),
        case("mpt-13b-16-h100", 0.20, 0.71),
        case("mpt-13b-8-a100-80gb", 0.05, 5.0),  # another GPU, another series: one row, left out
    ]
    return fm.trend_rows(cases)


def test_trend_parts_partition_the_step_and_other_is_the_optimizer(fm, mpt13_trend):
    assert list(mpt13_trend) == ["mpt-13b on h100-sxm (llmfoundry), micro batch 2 x 1"]
    rows = {r.gpus: r for r in mpt13_trend["mpt-13b on h100-sxm (llmfoundry), micro batch 2 x 1"]}
    for r in rows.values():
        assert sum(r.parts_s.values()) == pytest.approx(r.simulated_s, rel=1e-9)
    assert rows[8].published_s == pytest.approx(rows[8].simulated_s * 1.15)
    for part in ("tc", "hbm", "gap"):  # a GPU's compute does not depend on how many GPUs share the batch
        assert rows[16].parts_s[part] == pytest.approx(rows[8].parts_s[part], rel=1e-9)
    optimizer = {g: fm.unit_parts(f"mpt-13b-{g}-h100", config.load(f"mpt-13b-{g}-h100"), 1.0, 1.0).optimizer_s
                 for g in (8, 16)}
    assert optimizer[16] < 0.6 * optimizer[8]  # the shard halves; the per-piece kernels fall less
    change = rows[16].parts_s["other"] - rows[8].parts_s["other"]
    assert change == pytest.approx(optimizer[16] - optimizer[8], abs=1e-4)


def test_trend_leaves_out_rows_that_differ_beyond_the_gpu_count(fm):
    cases = [case("mpt-30b-8-h100", 0.09, 58.9), case("mpt-30b-16-h100", 0.03, 26.4)]  # 3 x 21 and 10 x 3
    assert fm.trend_rows(cases) == {}


def test_trend_groups_by_the_trend_series_key_not_the_name(fm, monkeypatch):
    """Rows whose names differ in the GPU count alone, at one micro batch and accumulation, but whose layouts differ
    are two series of one row each, not one series: mpt-13b-16-h100 at sequence 1024 (studies.trends' layout key)
    stands apart from mpt-13b-8-h100; a group left out is not simulated."""
    monkeypatch.setattr(fm, "Simulation", lambda *a, **k: pytest.fail("simulated a left-out group"))
    short = config.load("mpt-13b-16-h100")
    short = short.model_copy(update={"training": short.training.model_copy(update={"seq_len": 1024})})
    scenarios = {"mpt-13b-8-h100": config.load("mpt-13b-8-h100"), "mpt-13b-16-h100": short}
    cases = [case("mpt-13b-8-h100", 0.15, 0.74), case("mpt-13b-16-h100", 0.20, 0.71)]
    assert fm.trend_rows(cases, load=scenarios.__getitem__) == {}
