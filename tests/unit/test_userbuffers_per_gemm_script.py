"""scripts/userbuffers_per_gemm.py times a pipeline overlap's exposed last reduce-scatter chunk as the plan does:
with an fp8 userbuffer (fp8_buf), tokens x hidden / splits fp8 elements, half the 16-bit chunk's bytes."""

import pytest
from scripts_loader import load_script

from simcluster.collectives import timing
from simcluster.fabric import topology
from simcluster.parallel.layout import Layout
from simcluster.spec import config
from simcluster.workload import userbuffers


@pytest.fixture(scope="module")
def per_gemm():
    return load_script("userbuffers_per_gemm")


def test_fp8_buffer_pipeline_tail_is_the_fp8_chunk(per_gemm):
    """The NeMo 1.x GPT-3 175B micro batch 2 fp8 row: proj_fprop (pipeline, fp8_buf) leaves 4096 x 12288 / 4 fp8
    bytes exposed, timed alone on the tp group."""
    name = "nemo2407-gpt3-175b-512-h100-fp8"
    scenario = config.load(name)
    fabric = topology.from_scenario(scenario)
    group = tuple(Layout.of(scenario.parallelism).group(0, "tp"))
    splits = userbuffers.constants()["pipeline_splits"]
    fp8_s = timing.isolated_time_s(fabric, "reduce_scatter", group, 4096 * 12288 * 1 / splits)
    bf16_s = timing.isolated_time_s(fabric, "reduce_scatter", group, 4096 * 12288 * 2 / splits)
    assert fp8_s < bf16_s
    tails = {(row[0], row[1]): row[7] for row in per_gemm.rows(name)}
    assert tails[("forward", "attn_out")] == pytest.approx(fp8_s, rel=1e-12)
    assert tails[("forward", "mlp_down")] == 0.0  # a ring exchange: no exposed chunk
