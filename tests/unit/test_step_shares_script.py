"""scripts/step_shares.py: the partition of a simulated step into its parts (docs/calibration/round-30.md "Round 30:
what the held-out error tracks, by the parts of the step").

On the conftest's small 16-GPU scenario (tp 2, pp 2, dp 4) and its one-stage twin:

- the parts add up to the engine's step (summary ``step_time_s``) and none is negative;
- the remainder the streams do not carry (``other``: optimizer step, block terms) stays under 3% of the step, so the
  stream terms really account for the compute (a decomposition that dropped or double-counted a term fails here);
- the fitted terms match their closed forms: the gap is (kernels a rank runs) x ``kernel_gap_s`` when no kernel is
  queued, the pipeline-step term is (blocks a rank runs = 2 m chunks / pp) x ``pipeline_step_s`` with pp > 1 and 0
  with pp = 1; the roofline parts (tensor-core + HBM) are the device time of the rank's kernels;
- the bad-input path: a missing JSON field gives a one-line error and exit 2.
"""

import json

import pytest
from scripts_loader import load_script

from simcluster.engine.simulation import Simulation
from simcluster.spec import config
from simcluster.workload import kernels


@pytest.fixture(scope="module")
def ss():
    return load_script("step_shares")


def parts_of(ss, data):
    scenario = config.from_dict(data)
    sim = Simulation(scenario, check_memory=False)
    summary = sim.run(None).summary
    return sim, summary, ss.step_parts(scenario, sim, summary)


@pytest.mark.parametrize("pp", [2, 1])
def test_parts_add_up_to_the_step(ss, small_scenario, pp):
    small_scenario["parallelism"]["pp"] = pp
    small_scenario["parallelism"]["dp"] = 8 // pp
    sim, summary, row = parts_of(ss, small_scenario)
    step = summary["step_time_s"]
    parts = row["parts_s"]
    assert sum(parts.values()) == pytest.approx(step, rel=1e-9)
    assert sum(row[f"{k}_share"] for k in ss.PARTS) == pytest.approx(1.0, rel=1e-9)
    assert all(v >= -1e-12 for k, v in parts.items() if k != "other"), parts
    assert abs(parts["other"]) < 0.03 * step

    host, plan = kernels.host_model(), sim.plan
    per_rank = plan.microbatches / plan.layout.pp
    streams = [s for c in plan.chunks for s in (c.forward_stream, c.backward_stream)]
    if all(s.queued_kernels == 0 for s in streams) and host.fill_waves == 0 and all(s.stall_s == 0 for s in streams):
        assert parts["gap"] == pytest.approx(per_rank * sum(s.kernels for s in streams) * host.kernel_gap_s)
    assert parts["tc"] + parts["hbm"] == pytest.approx(per_rank * sum(s.device_s for s in streams))
    blocks = 2 * plan.microbatches * len(plan.chunks) / plan.layout.pp
    assert parts["pipe"] == pytest.approx(blocks * host.pipeline_step_s if pp > 1 else 0.0)
    assert row["microbatches"] == plan.microbatches and row["gpus"] == 16


def test_missing_field_is_one_line_exit_2(ss, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"cases": [{"scenario": "megatron-1.7b-h100"}]}))
    code = ss.main([str(bad), str(bad), "--cache", str(tmp_path / "c.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error:")


def test_fitted_allowance_is_what_the_published_step_leaves(ss, small_scenario):
    """``--budget`` (round 31): the allowance is the published step less the tensor-core roofline and every part that
    is not fitted; at zero error it is exactly the fitted gap and pipeline-step terms charged (ratio 1), a published
    step shorter by the whole fitted part leaves nothing (ratio 0), and the parts still add up to the step."""
    _, summary, row = parts_of(ss, small_scenario)
    parts = row["parts_s"]
    fitted = parts["gap"] + parts["pipe"]
    assert fitted > 0
    budget = ss.fitted_allowance({**row, "error": 0.0})
    assert budget["tc_s"] + budget["sourced_s"] + budget["fitted_s"] == pytest.approx(summary["step_time_s"], rel=1e-12)
    assert budget["fitted_s"] == pytest.approx(fitted) and budget["ratio"] == pytest.approx(1.0)
    shorter = -fitted / row["step_s"]  # published step = simulated step less the fitted terms
    assert ss.fitted_allowance({**row, "error": shorter})["ratio"] == pytest.approx(0.0, abs=1e-9)
    slower = ss.fitted_allowance({**row, "error": 0.1})  # published 10% longer: room grows by a tenth of the step
    assert slower["allowance_s"] == pytest.approx(fitted + 0.1 * row["step_s"])


def test_budget_only_simulates_the_rows_asked_for(ss, tmp_path, capsys):
    """``--only`` keeps the rows whose name contains a substring (only they are simulated: the other row's scenario
    does not exist); ``--budget`` prints one line a row; an ``--only`` that matches nothing is one line, exit 2."""
    case = {"source": "s", "family": "f", "error": 0.0, "step_time_s": 1.0}
    data = tmp_path / "v.json"
    data.write_text(
        json.dumps({"cases": [{**case, "scenario": "megatron-1.7b-h100"}, {**case, "scenario": "no-such-scenario"}]})
    )
    cache = tmp_path / "c.json"
    assert ss.main([str(data), str(data), "--cache", str(cache), "--only", "1.7b", "--budget", "--limit-s", "300"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[1:]] == ["megatron-1.7b-h100", "megatron-1.7b-h100"]  # cal and ho
    assert float(out[1].split()[-1]) == pytest.approx(1.0)  # zero error: room equals the fitted terms
    code = ss.main([str(data), str(data), "--cache", str(cache), "--only", "mixtral", "--budget"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--only" in err
