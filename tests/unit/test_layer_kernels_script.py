"""scripts/layer_kernels.py: its kernel-by-kernel table of a layer accounts for every kernel of the plan's layer.

Conservation: the rows' roofline times plus one fitted gap per row sum to the device-bound time
``kernels.stream_time`` gives the plan's layer (userbuffers chunks applied as plan.py applies them), and the "whole"
column sums to the same GEMMs unchunked on all SMs. Fails if a row drops or duplicates a kernel, if the chunking is
applied otherwise than by the plan, or if the whole column keeps the chunks' SM margin. A wrong scenario is one line,
exit 2.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from scripts_loader import load_script

from simcluster.spec import config
from simcluster.workload import kernels, userbuffers
from simcluster.workload.ops import layer_ops, shard_for

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def layer_kernels():
    return load_script("layer_kernels")


@pytest.mark.parametrize("name", ["megatron-16b-h100", "megatron-1.7b-h100"])
def test_rows_sum_to_the_plan_layer_stream_time(layer_kernels, name):
    scenario = config.load(name)
    p, t, gpu = scenario.parallelism, scenario.training, scenario.cluster.gpu
    shard = shard_for(scenario)
    plain = layer_ops(scenario.model, shard)
    layer = plain
    if p.tp_comm_overlap and p.sequence_parallel and p.tp > 1:
        layer = userbuffers.apply(plain, p.tp, t.precision, shard.activation_bytes_per_element,
                                  kernels.sm_count(gpu.name), userbuffers.scenario_charged(scenario), p.te_version)
    ops = [op for phase_ops in layer.values() for op in phase_ops]
    rows = layer_kernels.kernel_rows(scenario)
    gap_s = kernels.host_model().kernel_gap_s
    assert len(rows) == len(ops)
    assert sum(row["time_s"] + gap_s for row in rows) == pytest.approx(
        kernels.stream_time(ops, gpu, t.precision).device_bound_s(), rel=1e-12)
    whole = [max(kernels.roofline_s(op, gpu, t.precision))
             for phase_ops in plain.values() for op in phase_ops if op.kind == "gemm"]
    assert sum(row["whole_s"] for row in rows if row["whole_s"] is not None) == pytest.approx(sum(whole), rel=1e-12)


def test_unknown_scenario_is_one_line_exit_2():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "layer_kernels.py"), "no-such-scenario"],
                            capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["nemo2511-llama3-8b-8-b200-fp8", "nemo2511-llama3-8b-8-gb200-fp8"])
def test_microbatch_rows_hold_the_plan_chunk(layer_kernels, name):
    """Conservation: for a pp 1 plan, the microbatch's classes (the layer's times the layer count, and each op outside
    the layers) sum to the device time and kernel count of the plan's one chunk, forward and backward together (round
    30, the graphed Llama 3 8B Blackwell rows). Fails if an op outside the layers is dropped or counted twice, or if
    the layer count is not the model's."""
    from simcluster.engine.simulation import Simulation
    scenario = config.load(name)
    (chunk,) = Simulation(scenario, check_memory=False).plan.chunks
    rows = layer_kernels.microbatch_rows(scenario)
    assert sum(row["kernels"] for row in rows) == chunk.forward_stream.kernels + chunk.backward_stream.kernels
    assert sum(row["time_s"] for row in rows) == pytest.approx(
        chunk.forward_stream.device_s + chunk.backward_stream.device_s, rel=1e-12)


def test_microbatch_rows_are_empty_beyond_pp_1(layer_kernels):
    scenario = config.load("megatron-177b-h100")
    assert scenario.parallelism.pp > 1
    assert layer_kernels.microbatch_rows(scenario) == []
