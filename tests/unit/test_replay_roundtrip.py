"""Round trip: a simulated step exported as a Chakra or a Kineto (PyTorch profiler) trace and replayed gives the
simulation back, on the fabric it ran on and on another one. The engine knows the true dependencies and times;
the replay only sees the trace, so these check the replay rule (gaps measured from the latest dependency) and its
re-simulated communication."""

from __future__ import annotations

import pytest

from simcluster.engine import simulate
from simcluster.engine.replay import replay
from simcluster.fabric import topology
from simcluster.parallel.layout import Layout
from simcluster.parallel.plan import grad_norm_axes
from simcluster.replay.formats import read_chakra, read_kineto, write_chakra, write_kineto
from simcluster.replay.formats.simulated import from_simulation
from simcluster.replay.plan import build_plan
from simcluster.replay.report import step_report
from simcluster.spec import config
from simcluster.studies.replay import nic_from_text


def scenario(nic_rate: str, parallelism: dict, seq_len: int):
    """gpt3-1.3b on 16 A100s (2 nodes, rail-optimised fat-tree), one sequence per replica, with a NIC at
    ``nic_rate`` (ConnectX-6 otherwise)."""
    nic = nic_from_text(nic_rate, "connectx-6").model_dump(mode="json")
    return config.from_dict({
        "name": "roundtrip",
        "cluster": {"gpu": "a100-80gb-sxm", "gpus_per_node": 8, "nodes": 2, "nic": nic, "topology": "rail-fat-tree"},
        "model": "gpt3-1.3b",
        "training": {"seq_len": seq_len, "global_batch_size": 16, "micro_batch_size": 1, "precision": "bf16"},
        "parallelism": {"tp": 1, "pp": 1, "dp": 16, **parallelism}}, source="test")


FORMATS = {"chakra": (write_chakra, read_chakra), "kineto": (write_kineto, read_kineto)}


def exported(spec, tmp_path, trace_format="chakra"):
    """The simulated run of ``spec`` and its trace, written in ``trace_format`` and read back."""
    result = simulate(spec)
    run = from_simulation(result.events, Layout.of(spec.parallelism), "NVIDIA A100-SXM4-80GB",
                          grad_norm_axes=grad_norm_axes(spec.parallelism))
    write, read = FORMATS[trace_format]
    return result, read(write(run, tmp_path, "sim"))


def replayed_step_s(run, spec) -> float:
    (step,) = step_report(run, replay(build_plan(run), topology.from_scenario(spec)).events)
    return step["replayed_step_s"]


# a communication-bound data-parallel step (ZeRO-0: the 2.6 GB of fp32 gradients all-reduced during the
# backward, 40% of the step exposed on ConnectX-6), and a pipeline-parallel one (sends, receives, bubbles)
CASES = {"dp16": ({"zero_stage": 0}, 512), "pp2-dp8": ({"pp": 2, "dp": 8}, 2048)}


@pytest.mark.parametrize("trace_format", FORMATS)
@pytest.mark.parametrize("case", CASES)
def test_replay_of_an_exported_simulation_gives_its_step_back(case, trace_format, tmp_path):
    parallelism, seq_len = CASES[case]
    spec = scenario("200 Gb/s", parallelism, seq_len)
    result, run = exported(spec, tmp_path, trace_format)
    assert run.step_time_s(0) == pytest.approx(result.summary["step_time_s"], rel=1e-6)
    assert replayed_step_s(run, spec) == pytest.approx(result.summary["step_time_s"], rel=0.01)


@pytest.mark.parametrize("trace_format", FORMATS)
@pytest.mark.parametrize("rate", ["800 Gb/s", "50 Gb/s"])
def test_replay_on_another_fabric_equals_simulating_there(rate, trace_format, tmp_path):
    """The communication-bound case recorded on ConnectX-6 (200 Gb/s), replayed with a NIC 4x faster or 4x
    slower: within 3% of simulating the scenario on that fabric, and far from the recorded step."""
    parallelism, seq_len = CASES["dp16"]
    recorded, run = exported(scenario("200 Gb/s", parallelism, seq_len), tmp_path, trace_format)
    other = scenario(rate, parallelism, seq_len)
    simulated_s = simulate(other).summary["step_time_s"]
    assert abs(simulated_s / recorded.summary["step_time_s"] - 1) > 0.05  # the fabric matters (beyond the 3%)
    assert replayed_step_s(run, other) == pytest.approx(simulated_s, rel=0.03)


def test_export_collapses_identical_ranks_and_keeps_pipeline_peers(tmp_path):
    spec = scenario("200 Gb/s", {"pp": 2, "dp": 8}, 2048)
    _, run = exported(spec, tmp_path)
    layout = Layout.of(spec.parallelism)
    sends = [op for op in run.ranks[0] if op.kind == "send"]
    receives = [op for op in run.ranks[0] if op.kind == "recv"]
    assert sends and receives
    assert {op.peer for op in sends + receives} == {layout.rank(pp=1)}
    assert build_plan(exported(scenario("200 Gb/s", CASES["dp16"][0], 512), tmp_path / "dp")[1]).agents == 1


def test_kineto_export_carries_every_dependency_and_peer(tmp_path):
    """Read back kernel by kernel, the Kineto export gives every op's stream order, cross-stream waits (CUDA sync
    events naming their event record: several per op where the engine had several), peer, kind and size."""
    spec = scenario("200 Gb/s", {"pp": 2, "dp": 8}, 2048)
    run = from_simulation(simulate(spec).events, Layout.of(spec.parallelism), "NVIDIA A100-SXM4-80GB",
                          grad_norm_axes=grad_norm_axes(spec.parallelism))
    back = read_kineto(write_kineto(run, tmp_path, "sim"), merge_compute=False)
    assert back.world_size == run.world_size and back.gpu_name == run.gpu_name
    for rank in (0, Layout.of(spec.parallelism).rank(pp=1)):  # one rank of each pipeline stage
        written, read = run.ranks[rank], back.ranks[rank]
        assert any(len(op.waits_for) > 1 for op in written)
        assert [(op.kind, op.waits_for, op.peer, op.size_bytes, op.group if op.peer is None else ())
                for op in read] == [(op.kind, op.waits_for, op.peer, op.size_bytes, op.group) for op in written]
        assert [op.started_at_s for op in read] == pytest.approx([op.started_at_s for op in written], abs=1e-9)
