"""scripts/pipeline_terms.py: its terms of a pipelined step account for every block of the busiest stage.

Conservation: the layer classes (``fp8_pairs.layer_breakdown``, times the stage's layers and microbatches), the
chunks' extras, the fitted kernel gaps and pipeline steps sum to the plan's block times of that stage; the pipeline
steps are the closed form 2 x chunks x microbatches x ``pipeline_step_s`` (Llama 2 70B on 64 H100: 20 chunks of one
layer, 32 microbatches); a middle stage's leftover extras are 0 and the last stage's are its output layer and loss
(final norm, logits, cross-entropy: ``output_ops`` timed alone). Fails if a term drops or double-counts kernels
(the userbuffers chunks or amax regions among them), or the steps are counted otherwise than per chunk, microbatch
and phase.
"""

import pytest
from scripts_loader import load_script

from simcluster import engine
from simcluster.engine import Simulation
from simcluster.parallel import plan as step_plan
from simcluster.spec import config
from simcluster.workload import kernels
from simcluster.workload.ops import output_ops, shard_for


@pytest.fixture(scope="module")
def pipeline_terms():
    return load_script("pipeline_terms")   # it imports fp8_pairs as its neighbour, as when run from scripts/


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


EXTRAS = "chunk extras (embedding, output, loss)"


def test_middle_stage_has_no_extras(pipeline_terms):
    """A middle stage holds transformer layers only: once the exposed userbuffers chunks and the amax regions are
    their own terms, nothing is left over (it would hold any class of the plan the terms miss). A row with TE's TP
    overlap on (the 24.07 Llama 2 70B row runs it off since round 37's audit)."""
    scenario = config.load("nemo2407-gpt3-175b-128-h100-fp8")
    terms, facts = pipeline_terms.stage_terms(scenario, stage=1)
    assert terms["userbuffers: exposed last reduce-scatter"] > 0
    assert terms["fp8 amax regions (kernels + all-reduce)"] > 0
    assert abs(terms[EXTRAS]) <= 1e-9 * sum(terms.values())


def test_last_stage_extras_are_the_output_layer_and_loss(pipeline_terms):
    scenario = config.load("nemo2407-llama2-70b-64-h100-fp8")
    terms, facts = pipeline_terms.stage_terms(scenario)
    assert facts["stage"] == 3   # the output layer and loss make the last stage the busiest
    gpu, precision = scenario.cluster.gpu, scenario.training.precision
    output = output_ops(scenario.model, shard_for(scenario))
    per_microbatch = sum(kernels.stream_time(output[phase], gpu, precision).device_s
                         for phase in ("forward", *step_plan.BACKWARD_PHASES))
    assert per_microbatch > 1e-3   # the logits GEMMs: over a millisecond a microbatch
    assert terms[EXTRAS] == pytest.approx(facts["microbatches"] * per_microbatch, rel=1e-9)


def test_usage_line(pipeline_terms, capsys):
    assert pipeline_terms.main([]) == 2
    assert capsys.readouterr().out.startswith("PYTHONPATH=. python scripts/pipeline_terms.py ")


def test_bubble_ladder_ends_at_the_run_as_simulated_and_the_pure_schedule_is_the_closed_form(pipeline_terms):
    # megatron-177b-h100 (pp 6, vp 8, 24 microbatches): the pure schedule (uniform chunks, no messages, no data
    # parallelism) idles exactly (pp - 1)/(vp m) of its blocks as run; the ladder's last rung is the scenario as
    # simulated (an independent run: fails if a rung leaves a cause off); causes that only add time add >= 0
    scenario = config.load("megatron-177b-h100")
    terms, facts = pipeline_terms.bubble_terms(scenario)
    items = dict(terms)
    assert abs(items["(a) pure schedule less the closed form"]) < 1e-6
    run = Simulation(scenario, check_memory=False).run(1).summary
    assert facts["bubble_s"] == pytest.approx(run["pipeline_bubble_s"], rel=1e-9)
    assert facts["step_s"] == pytest.approx(run["step_time_s"], rel=1e-9)
    assert items["(b) stage imbalance: embedding, output layer, loss"] > 0  # the last stage's output layer and loss
    # transfers and latency only add to a stage's time outside its blocks: to its bubble, or, where a blocking
    # exchange holds the sender on the wire (the interleaved warm-up and cool-down), to its exposed pipeline
    # communication, which is not bubble
    waits = facts["p2p_wait_by_rung_s"]
    messages = "(d) pipeline messages on the critical path"
    added_wait = waits[messages] - waits["(b) stage imbalance: embedding, output layer, loss"]
    assert added_wait > 0 and items[messages] + added_wait > 0
    assert items["(e) parameter all-gather (first forwards wait)"] >= 0  # the first forwards can only wait
    # (c) is a share of the closed form (a): 2 (pp - 1) pipeline steps inside (pp - 1) blocks
    assert 0 < items["(c) of the closed form: fitted pipeline steps"] < items[
        "(a) closed form, plan blocks: (pp-1)(t_f+t_b)"]


def test_fitted_terms_zeroed_give_back_the_busiest_stage_terms(pipeline_terms):
    """``--fitted``: with the kernel gap (then the pipeline step) at 0 the engine's step shrinks by what the
    itemisation charges the busiest stage for it, to 5% (Llama 2 70B on 64 H100: that stage binds the step, back
    to back); both at 0 shrink it the most; nothing else changes with them."""
    scenario = config.load("nemo2407-llama2-70b-64-h100-fp8")
    steps = pipeline_terms.fitted_steps(scenario)
    terms, _facts = pipeline_terms.stage_terms(scenario)
    fitted = steps["as fitted"]
    assert fitted - steps["kernel gap 0"] == pytest.approx(terms["kernel gaps (fitted)"], rel=0.05)
    assert fitted - steps["pipeline step 0"] == pytest.approx(terms["pipeline steps (fitted)"], rel=0.05)
    assert steps["both 0"] < min(steps["kernel gap 0"], steps["pipeline step 0"]) < fitted
    assert kernels.host_model().kernel_gap_s > 0   # the host model is restored after each what-if


def test_fitted_pipeline_step_is_nothing_without_a_pipeline(pipeline_terms):
    """pp 1 (the GB300 70B recipe under Megatron FSDP): no pipeline step is charged, so zeroing it changes nothing."""
    steps = pipeline_terms.fitted_steps(config.load("nemo2511-llama3-70b-64-gb300-fp8"))
    assert steps["pipeline step 0"] == steps["as fitted"]
    assert steps["both 0"] == steps["kernel gap 0"] < steps["as fitted"]


def test_per_layer_budget_against_the_published_tokens_and_the_pipeline_closed_form(pipeline_terms):
    """``--per-layer`` (round 31): the published step is the row's (25.11 page: 1,602 tokens/s a GPU, 128 x 8,192
    tokens on 64 GPUs); what it leaves a layer and microbatch, times the stage's layers x microbatches and the
    closed-form fill (pp - 1) / (v m), plus the stage's chunk extras, gives the published step back; the fitted
    pipeline step is one step a layer and microbatch at 2 layers a chunk (Llama 3 70B, vp 5) and two at one layer a
    chunk (Llama 2 70B, vp 20)."""
    step_s = kernels.host_model().pipeline_step_s
    scenario = config.load("nemo2511-llama3-70b-64-h100-fp8")
    budget = pipeline_terms.layer_budget(scenario)
    assert budget["published"] == pytest.approx(128 * 8192 / (1602 * 64), rel=1e-4)
    terms, facts = pipeline_terms.stage_terms(scenario)
    layers_m = facts["layers"] * facts["microbatches"]
    fill = 1 + (8 - 1) / (5 * facts["microbatches"])
    extras = terms[EXTRAS]
    assert budget["left"] * layers_m * fill + extras == pytest.approx(budget["published"], rel=1e-12)
    assert budget["pipeline"] == pytest.approx(step_s, rel=1e-12)
    assert budget["device"] + budget["gaps"] + budget["pipeline"] == pytest.approx(
        (sum(terms.values()) - terms["check: plan blocks - terms"] - extras) / layers_m, rel=1e-12
    )
    llama2 = pipeline_terms.layer_budget(config.load("nemo2407-llama2-70b-64-h100-fp8"))
    assert llama2["pipeline"] == pytest.approx(2 * step_s, rel=1e-12)



def test_per_layer_budget_takes_unfused_attention(pipeline_terms):
    """``--per-layer`` on a row without flash-attention kernels (Megatron's unfused attention: its score GEMMs are
    GEMMs, its softmax memory-bound) raised a KeyError traceback (round 32); the attention class is now 0 and the
    layer's device time is its GEMMs plus the rest."""
    budget = pipeline_terms.layer_budget(config.load("bigscience-prequel-176b-h64-tp4-pp12-mbs2-a100"))
    assert budget["attention"] == 0.0
    assert budget["device"] == pytest.approx(budget["GEMMs"] + budget["rest"])
    assert 0 < budget["rest"] < budget["GEMMs"]

@pytest.mark.parametrize("name", ["nemo2407-gpt3-175b-128-h100-fp8", "nemo2511-llama3-70b-64-h100-fp8"])
def test_per_layer_budget_of_the_simulated_step_covers_the_fitted_terms(pipeline_terms, name):
    """Given the engine's own step in place of the published one, what it leaves beside the kernels is at least the
    fitted gaps and pipeline steps (the engine never beats the busiest stage's blocks plus the fill) and at most a
    quarter more (what the engine adds beyond that bound on these rows: pipeline messages, the fill's gathers, the
    optimizer, interference: round 27 measured 0.13-0.18 s of 5.4-11.1 s)."""
    scenario = config.load(name)
    step = engine.simulate(scenario, check_memory=False).summary["step_time_s"]
    budget = pipeline_terms.layer_budget(scenario, published_s=step)
    assert budget["fitted_per_kernel"] <= budget["implied_per_kernel"] <= 1.25 * budget["fitted_per_kernel"]


def test_per_layer_refuses_a_scenario_without_a_published_step(pipeline_terms, capsys):
    assert pipeline_terms.main(["--per-layer", "llama3-70b-1024-h100-roce"]) == 2
    assert "no validation row" in capsys.readouterr().err
