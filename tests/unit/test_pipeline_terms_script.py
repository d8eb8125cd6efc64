"""scripts/pipeline_terms.py: its terms of a pipelined step account for every block of the busiest stage.

Conservation: the layer classes (``fp8_pairs.layer_breakdown``, times the stage's layers and microbatches), the
chunks' extras, the fitted kernel gaps and pipeline steps sum to the plan's block times of that stage; the pipeline
steps are the closed form 2 x chunks x microbatches x ``pipeline_step_s`` (Llama 2 70B on 64 H100: 20 chunks of one
layer, 32 microbatches); the last stage's extras hold its output layer and loss, so they exceed the first stage's.
Fails if a term drops or double-counts kernels, or the steps are counted otherwise than per chunk, microbatch and
phase.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

from simcluster.spec import config
from simcluster.workload import kernels

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def pipeline_terms():
    sys.path.insert(0, str(SCRIPTS))   # the script imports fp8_pairs as its neighbour, as when run from scripts/
    try:
        spec = importlib.util.spec_from_file_location("pipeline_terms", SCRIPTS / "pipeline_terms.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


@pytest.mark.parametrize("name", ["nemo2407-llama2-70b-64-h100-fp8", "nemo2409-gpt3-175b-128-h100-bf16"])
def test_terms_sum_to_the_stage_blocks(pipeline_terms, name):
    terms, facts = pipeline_terms.stage_terms(config.load(name))
    check = terms.pop("check: plan blocks - terms")
    assert abs(check) <= 1e-9 * sum(terms.values())
    assert all(value >= 0 for value in terms.values())


def test_pipeline_steps_closed_form(pipeline_terms):
    terms, facts = pipeline_terms.stage_terms(config.load("nemo2407-llama2-70b-64-h100-fp8"))
    assert (facts["chunks"], facts["layers"], facts["microbatches"]) == (20, 20, 32)
    assert terms["pipeline steps (fitted)"] == pytest.approx(2 * 20 * 32 * kernels.host_model().pipeline_step_s)


def test_last_stage_carries_the_output_layer(pipeline_terms):
    terms, facts = pipeline_terms.stage_terms(config.load("nemo2407-llama2-70b-64-h100-fp8"))
    assert facts["stage"] == 3   # the output layer and loss make the last stage the busiest
    extras = terms["chunk extras (embedding, output, loss, amax)"]
    # the 20 chunks' amax regions alone are well under the output layer's GEMMs (> 1 ms a microbatch)
    assert extras > 32 * 1e-3
