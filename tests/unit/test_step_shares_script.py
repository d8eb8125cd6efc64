"""scripts/step_shares.py: the partition of a simulated step into its parts (docs/calibration.md "Round 30: what the
held-out error tracks, by the parts of the step").

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
