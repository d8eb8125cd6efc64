"""scripts/fit_host_overheads.py: the three-term check (fitted gap + GEMM fill + pipeline step) recovers the values
that generated a synthetic calibration set, and its condition number flags a fill the set cannot tell from the gap."""

from types import SimpleNamespace

import numpy as np
import pytest
from scripts_loader import load_script

module = load_script("fit_host_overheads")

AT = (39e-6, 240e-6)   # the reference simulation's values (the "gap" structure: fill 0)
TRUTH = dict(gap_s=20e-6, fill=0.5, step_s=300e-6)


def synthetic(wave_per_kernel_s):
    """Runs whose published step is exactly their blocks at TRUTH, and their 'simulation' at AT (device-bound
    blocks, 200-900 us of device time a kernel, well above the 13.5 us dispatch)."""
    rng = np.random.default_rng(7)
    runs, results = [], []
    for i in range(12):
        chunks = 1 + i % 3
        kernels = rng.uniform(200, 2000, (chunks, 2))
        device = kernels * rng.uniform(200e-6, 900e-6, (chunks, 2))
        wave = kernels * wave_per_kernel_s(rng, (chunks, 2))
        run = module.Run({"source": f"s{i % 4}"}, device, kernels, wave, i % 2 == 0, 8 + 4 * i,
                         np.zeros((chunks, 2)))
        other_s = 0.3 * i
        simulated_s = other_s + run.critical_blocks * run.block_s(AT[0], 0.0, 13.5e-6, AT[1])
        published_s = other_s + run.critical_blocks * run.block_s(TRUTH["gap_s"], TRUTH["fill"], 13.5e-6,
                                                                  TRUTH["step_s"])
        runs.append(run)
        results.append(SimpleNamespace(step_time_s=simulated_s, error=published_s / simulated_s - 1.0))
    return runs, results


def test_three_terms_recover_the_values_that_made_the_set():
    module.STRUCTURE = module.STRUCTURES["gap"]
    runs, results = synthetic(lambda rng, shape: rng.uniform(5e-6, 150e-6, shape))   # waves independent of count
    (gap_s, fill, step_s), row, condition = module.three_terms(runs, results, AT, np.ones(len(runs), bool))
    assert gap_s == pytest.approx(TRUTH["gap_s"], abs=0.5e-6)
    assert fill == pytest.approx(TRUTH["fill"], abs=0.011)
    assert step_s == pytest.approx(TRUTH["step_s"], abs=1e-6)
    assert row["max"] < 1e-6
    assert condition < 20


def test_condition_flags_a_fill_proportional_to_the_kernel_count():
    module.STRUCTURE = module.STRUCTURES["gap"]
    runs, results = synthetic(lambda rng, shape: np.full(shape, 60e-6))   # every kernel's wave 60 us: fill = gap
    *_, condition = module.three_terms(runs, results, AT, np.ones(len(runs), bool))
    assert condition > 1e6


def test_variability_is_a_what_if_never_written(capsys):
    # --variability changes what the calibration runs are simulated with; efficiency.yaml is fitted on the runs as
    # `simcluster validate` runs them, so --write refuses it before simulating anything
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--write", "--variability", "measured"])
    assert exit_info.value.code == 2 and "--variability is a what-if" in capsys.readouterr().err


def test_a_zero_pipeline_step_prints_no_share():
    # STEP_GRID_S starts at 0: the drains' share of a zero fitted step is not a number
    assert module.share_text(1e-3, 0.0) == "n/a"
    assert module.share_text(1e-3, 0.1) == "1.00%"


def test_write_comes_before_the_diagnostics(monkeypatch):
    # a diagnostic that fails after the fit must not lose the refit
    written = []
    monkeypatch.setattr(module, "fit", lambda excluded: ((33e-6, 0.0), [], []))
    monkeypatch.setattr(module, "write", written.append)

    def failing(*args):
        raise RuntimeError("diagnostic")

    monkeypatch.setattr(module, "in_objective", failing)
    with pytest.raises(RuntimeError):
        module.main(["--write"])
    assert written == [(33e-6, 0.0)]


def test_drains_follow_the_2020_22_megatron_lm_predicate_and_the_loss_check_reads_without_a_pipeline():
    from simcluster.spec import config
    from simcluster.workload import schedule_host
    from tests.unit.test_engine import scenario
    # an eager layer under FSDP (ZeRO-3), interleaved with overlap_p2p_comm: not Megatron-LM 2021's synchronising
    # schedule, so no drain a block
    fsdp = scenario(parallelism__pp=2, parallelism__dp=4, parallelism__virtual_stages=2, parallelism__zero_stage=3,
                    training__layer_backward="eager", training__global_batch_size=16)
    assert module.drained_s(fsdp, {}, 100, 10) == 0.0
    narayanan = config.load("narayanan2021-145.6b-a100")
    assert module.drained_s(narayanan, {}, 100, 10) == pytest.approx(
        100 * schedule_host.drain_stall_s(narayanan.cluster.gpu.name))
    # pretrain_gpt's loss check reads the loss once a microbatch with or without a pipeline
    flat = config.load("narayanan2021-18.4b-a100")
    assert flat.parallelism.pp == 1
    case = {"source": module.PRETRAIN_GPT_SOURCES[0]}
    assert module.drained_s(flat, case, 100, 10) == pytest.approx(10 * schedule_host.drain_stall_s(
        flat.cluster.gpu.name))


def test_per_block_pipeline_charges_follow_the_schedule_kind():
    # round 28's structures, closed form: a forward plus a backward block of one chunk, 4 ms and 6 ms of device time,
    # 100 kernels each (device-bound at a 13.5 us dispatch); every block pays `step_s`, a block pays `drain_step_s`
    # per sourced drain (schedule_host: 1 for 1F1B with batch_p2p_sync and Megatron-LM 2021, 0.5 for interleaved
    # with batch_p2p_comm, 0 for interleaved with overlap_p2p_comm), nothing without a pipeline
    from simcluster.workload import schedule_host
    device, kernels = np.array([[4e-3, 6e-3]]), np.full((1, 2), 100.0)
    gap_s, step_s, drain_s = 25e-6, 450e-6, 300e-6
    streams = 10e-3 + 200 * gap_s
    for pp, vp, eager, overlap, per_block in ((8, 1, False, None, 1.0), (8, 12, False, None, 0.0),
                                              (8, 8, False, False, 0.5), (8, 4, True, None, 1.0),
                                              (1, 1, False, None, 0.0)):
        weight = schedule_host.drains(pp, vp, eager, overlap).per_block
        assert weight == per_block
        run = module.Run({}, device, kernels, np.zeros((1, 2)), pp > 1, 10, np.zeros((1, 2)), drain_weight=weight)
        assert run.block_s(gap_s, 0.0, 13.5e-6, 0.0, drain_step_s=drain_s) == pytest.approx(
            streams + 2 * per_block * drain_s)
        assert run.block_s(gap_s, 0.0, 13.5e-6, step_s) == pytest.approx(streams + (2 * step_s if pp > 1 else 0.0))
        # host work a block on the host side of the max is hidden while the host is ahead (2.65 ms of dispatch a
        # block against 6.5 ms of device and gaps), and binds once it is not
        assert run.block_s(gap_s, 0.0, 13.5e-6, 0.0, host_block_s=1e-3) == pytest.approx(streams)
        behind = 100 * 13.5e-6 + 7e-3
        assert run.block_s(gap_s, 0.0, 13.5e-6, 0.0, host_block_s=7e-3) == pytest.approx(
            (max(6.5e-3, behind) + max(8.5e-3, behind)) if pp > 1 else streams)


def test_the_gapfill_structure_recovers_the_gap_fill_and_step_that_made_a_set(monkeypatch):
    # round 30: "gapfill" fits the gap AND the fill with the pipeline step, the full loop's grid search (the
    # three-term check as a structure); a set made at TRUTH from a simulation at (39 us, no fill, 240 us) is refitted
    # to TRUTH exactly, its condition is the three-term check's, and --write would put all three in efficiency.yaml
    monkeypatch.setattr(module, "STRUCTURE", module.STRUCTURES["gapfill"])
    runs, results = synthetic(lambda rng, shape: rng.uniform(5e-6, 150e-6, shape))
    at = (AT[0], 0.0, AT[1])
    everything = np.ones(len(runs), bool)
    (gap_s, fill, step_s), errors = module.grid_fit(runs, results, at, everything)
    assert (gap_s, fill, step_s) == pytest.approx((TRUTH["gap_s"], TRUTH["fill"], TRUTH["step_s"]), abs=1e-12)
    assert np.abs(errors).max() < 1e-9
    *_, three_term_condition = module.three_terms(runs, results, at, everything)
    assert module.condition(runs, results, (gap_s, fill, step_s)) == pytest.approx(three_term_condition, rel=1e-6)
    # each left-out series' refit is still TRUTH: the set is exact in every series
    for run, result in zip(runs, results, strict=True):
        result.family = run.case["source"]
    for _, values, row in module.leave_one_series_out(runs, results, at, everything):
        assert values == pytest.approx((gap_s, fill, step_s), abs=1e-12) and row["max"] < 1e-9
    assert module.STRUCTURE.fitted_values((gap_s, fill, step_s)) == {
        "kernel_gap_s": gap_s, "fill_waves": fill, "pipeline_step_s": step_s}


def test_gapfill_writes_the_three_values(monkeypatch, tmp_path):
    yaml = tmp_path / "efficiency.yaml"
    yaml.write_text(module.EFFICIENCY_YAML.read_text())
    monkeypatch.setattr(module, "EFFICIENCY_YAML", yaml)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "STRUCTURE", module.STRUCTURES["gapfill"])
    module.write((12e-6, 0.46, 380e-6))
    text = yaml.read_text()
    for line in ("  kernel_gap_s: 12.0e-6", "  fill_waves: 0.46", "  pipeline_step_s: 380.0e-6", "  gap_per: kernel"):
        assert f"\n{line}\n" in text


@pytest.mark.parametrize("gap_per", ["kernel", "call"])
def test_the_estimate_charges_every_kernel_class_what_the_simulators_stream_charges(gap_per):
    # Round-30 review: Run.block_s reuses kernels.StreamTime instead of a twin of its gap formula. Against the
    # closed form per block: device + eager x gap + queued x (gap, or the measured launch latency under "call")
    # + graphed x node latency + fill x waves, max'd with the host's (eager + queued) x dispatch.
    from simcluster.workload import kernels
    host = kernels.host_model()
    device, count = np.array([[2e-3, 1e-4], [3e-3, 5e-4]]), np.array([[40.0, 60.0], [70.0, 90.0]])
    queued, graphed = np.array([[10.0, 0.0], [20.0, 5.0]]), np.array([[0.0, 0.0], [30.0, 50.0]])
    wave = np.array([[1e-4, 0.0], [2e-4, 1e-5]])
    run = module.Run({"source": "s"}, device, count, wave, True, 4, np.zeros((2, 2)), queued=queued, graphed=graphed)
    gaps, fill, dispatch_s, step_s, extra_s = np.array([5e-6, 30e-6]), 0.4, 13.5e-6, 200e-6, 1e-4
    queued_gap_s = kernels.launch_overhead_s() if gap_per == "call" else gaps[:, None, None]
    closed = np.maximum(device + (count - queued - graphed) * gaps[:, None, None] + queued * queued_gap_s
                        + graphed * host.graph_node_s + fill * wave,
                        (count - graphed) * dispatch_s + extra_s).sum(axis=2).mean(axis=1) + 2 * step_s
    estimate = run.block_s(gaps, fill, dispatch_s, step_s, host_block_s=extra_s, gap_per=gap_per)
    assert estimate == pytest.approx(closed, rel=1e-12)
    # the simulator's own StreamTime gives the same block times (gap_per "kernel": its queued kernels pay the gap)
    for gap_s, value in zip(gaps, estimate, strict=True):
        model = kernels.HostModel(gap_s, dispatch_s, step_s, fill, gap_per, False, host.graph_node_s)
        blocks = [kernels.StreamTime(device_s=d, kernels=n, wave_s=w, host_extra_s=extra_s, queued_kernels=q,
                                     graphed_kernels=g).elapsed_s(model)
                  for d, n, w, q, g in zip(*(x.ravel() for x in (device, count, wave, queued, graphed)), strict=True)]
        assert value == pytest.approx(sum(blocks) / 2 + 2 * step_s, rel=1e-12)
    # the dispatch bound: the per-kernel device time of the tightest block at the structure's values
    model = kernels.HostModel(7e-6, dispatch_s, step_s, fill, gap_per, False, host.graph_node_s)
    tight = np.min((device + (count - queued - graphed) * 7e-6 + queued * model.queued_gap_s
                    + graphed * host.graph_node_s + fill * wave) / count)
    assert run.dispatch_bound_s(model) == pytest.approx(tight, rel=1e-12)


@pytest.mark.parametrize("name", ["gap", "fill", "call", "gapfill"])
def test_write_changes_the_structures_lines_and_no_other(monkeypatch, tmp_path, name):
    # Round-30 review: --write puts the fitted values and the structure's fixed ones (what the simulator needs to
    # reproduce the fit: "gap" fits with fill_waves 0, "fill" with the measured gap) into host_overhead; every other
    # line of efficiency.yaml stays byte for byte; the values read back are the ones written.
    import yaml as pyyaml
    path = tmp_path / "efficiency.yaml"
    before = module.EFFICIENCY_YAML.read_text()
    path.write_text(before)
    monkeypatch.setattr(module, "EFFICIENCY_YAML", path)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    structure = module.STRUCTURES[name]
    monkeypatch.setattr(module, "STRUCTURE", structure)
    at = {"gapfill": (17e-6, 0.34, 370e-6), "fill": (0.34, 370e-6)}.get(name, (17e-6, 370e-6))
    module.write(at)
    after = path.read_text()
    written = {**structure.fitted_values(at), **structure.fixed_values()}
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert {b.split(":")[0].strip() for _, b in changed} <= set(written)
    assert all(a.split(":")[0] == b.split(":")[0] for a, b in changed)
    host = pyyaml.safe_load(after)["host_overhead"]
    for key, value in written.items():
        assert host[key] == (value if isinstance(value, str) else pytest.approx(value, abs=5e-9 if "_s" in key
                                                                                    else 5e-3))


@pytest.mark.parametrize("name", ["nemo2511-llama3-8b-8-b200-fp8", "nemo2511-llama3-8b-8-b200-mxfp8"])
def test_a_runs_blocks_charge_what_the_simulator_charges_no_work_launches_included(name):
    # round-32 review: the fit must see the kernels the simulation charges; on an FP8 current-scaling row the
    # queued one-element launches pay launch_overhead_s, on an MXFP8 row the swizzles no gap (a held-out row's
    # plan, read here for its kernel classes only: the fit reads none), so the fitted gap's slope is the kernels
    # less those
    from dataclasses import replace

    from simcluster.parallel import plan as step_plan
    from simcluster.spec import config
    from simcluster.studies import validation
    from simcluster.workload import kernels
    case = next(c for c in (*validation.cases(), *validation.held_out_cases()) if c["scenario"] == name)
    run = module.Run.of(case)
    plan = step_plan.plan(config.load(case["scenario"]), lambda *_: 0.0)
    host = kernels.host_model()
    engine = np.array([[s.device_bound_s(host) for s in (c.forward_stream, c.backward_stream)] for c in plan.chunks])
    assert run.streams().device_bound_s(host) == pytest.approx(engine, rel=1e-12)
    assert run.no_work.sum() > 0
    step = 1e-6
    slope = (run.streams().device_bound_s(replace(host, kernel_gap_s=host.kernel_gap_s + step))
             - run.streams().device_bound_s(host)) / step
    assert slope == pytest.approx(run.kernels - run.no_work, rel=1e-6)
