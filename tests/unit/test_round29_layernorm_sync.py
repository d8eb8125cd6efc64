"""BigScience's ``--layernorm-tp-auto-sync`` (``parallelism.layernorm_tp_auto_sync``, parallel/deepspeed_pipeline.py)
against closed forms. Source: bigscience-workshop/Megatron-DeepSpeed megatron/model/fused_layer_norm.py
(``MixedFusedLayerNorm.forward``: ``torch.distributed.all_reduce`` of ``self.weight`` and of ``self.bias`` with
``ReduceOp.AVG`` over the tensor-parallel group before the norm), PR #272 (2022-03-25) and #307 (2022-07-07, the
rename to ``--sync-tp-duplicated-parameters``); bigscience-workshop/bigscience train/tr11-176B-ml/chronicles.md
("2022-03-24", "2022-03-30": BLOOM 176B trained with it from March 2022) and the final tr11-176B-ml.slurm.
Tolerance: the all-reduces are priced by the model's own collective timing, so the growth is exact (rel 1e-9)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from scenario_data import with_changes
from test_deepspeed_pipeline import BASE as DEEPSPEED_BASE

from simcluster.collectives import timing
from simcluster.core.errors import ScenarioError
from simcluster.engine import Simulation
from simcluster.parallel import deepspeed_pipeline
from simcluster.spec import config

# two 4-GPU A100 nodes, tp 4 inside a node and pp 2 across them, on DeepSpeed's engine: its own tests' run
BASE = {**DEEPSPEED_BASE, "name": "layernorm-tp-auto-sync"}
SCENARIOS = Path(config.__file__).resolve().parent.parent / "data" / "scenarios"


def test_each_layernorm_forward_syncs_recompute_included_the_final_norm_once():
    """Two norms a transformer layer; the last stage's final norm in the forward only (GPTModelPipe checkpoints the
    transformer layers alone); the backward's full recompute runs the layers' norms again, selective or none not."""
    assert deepspeed_pipeline.layernorm_syncs("forward", 3, last=False, recompute="full") == 6
    assert deepspeed_pipeline.layernorm_syncs("forward", 3, last=True, recompute="full") == 7
    assert deepspeed_pipeline.layernorm_syncs("backward", 3, last=True, recompute="full") == 6
    assert deepspeed_pipeline.layernorm_syncs("backward", 3, last=False, recompute="selective") == 0
    assert deepspeed_pipeline.layernorm_syncs("backward", 3, last=False, recompute="none") == 0


@pytest.mark.parametrize("recompute", ["full", "none"])
def test_blocks_grow_by_two_hidden_sized_all_reduces_per_norm(recompute):
    """Each block's compute grows by (norms x 2) all-reduces of hidden x 2 B (bf16 weight and bias) over the TP
    group, at their time alone on the fabric (the launches are host-only: the blocks here are device-bound)."""
    changes = {"training__activation_recompute": recompute}
    off = Simulation(with_changes(BASE, **changes)).plan
    sim = Simulation(with_changes(BASE, parallelism__layernorm_tp_auto_sync=True, **changes))
    allreduce_s = timing.isolated_time_s(sim.fabric, "allreduce", (0, 1, 2, 3), 4096 * 2)
    assert allreduce_s > 0
    for before, after in zip(off.chunks, sim.plan.chunks, strict=True):
        last = after.chunk == sim.plan.chunk_count - 1
        for phase in ("forward", "backward"):
            norms = deepspeed_pipeline.layernorm_syncs(phase, after.layers, last, recompute)
            grown_s = getattr(after, f"{phase}_compute_s") - getattr(before, f"{phase}_compute_s")
            assert grown_s == pytest.approx(2 * norms * allreduce_s, rel=1e-9)
    assert sim.plan.chunks[0].backward_compute_s > off.chunks[0].backward_compute_s or recompute == "none"


def test_nothing_at_tp_1_and_rmsnorm_syncs_its_weight_alone():
    """A group of one rank reduces nothing; RMSNorm has no bias, so one all-reduce a norm."""
    one = {"parallelism__tp": 1, "cluster__gpus_per_node": 1}
    off = Simulation(with_changes(BASE, **one)).plan
    on = Simulation(with_changes(BASE, parallelism__layernorm_tp_auto_sync=True, **one)).plan
    assert [c.forward_compute_s for c in on.chunks] == [c.forward_compute_s for c in off.chunks]
    rms = {"model__norm": "rmsnorm"}
    off = Simulation(with_changes(BASE, **rms)).plan
    sim = Simulation(with_changes(BASE, parallelism__layernorm_tp_auto_sync=True, **rms))
    allreduce_s = timing.isolated_time_s(sim.fabric, "allreduce", (0, 1, 2, 3), 4096 * 2)
    grown_s = sim.plan.chunks[0].forward_compute_s - off.chunks[0].forward_compute_s
    assert grown_s == pytest.approx(2 * sim.plan.chunks[0].layers * allreduce_s, rel=1e-9)


def test_refused_without_deepspeeds_engine_naming_the_field():
    with pytest.raises(ScenarioError, match="parallelism.layernorm_tp_auto_sync"):
        with_changes(BASE, parallelism__pipeline_engine="megatron", parallelism__layernorm_tp_auto_sync=True)


def test_only_the_bloom_run_after_march_24_2022_sets_it():
    """The published BLOOM iteration (85,376, June 2022) ran after the band-aid went in (chronicles.md,
    2022-03-24); the global-batch-16 row (iteration 3,707, early March 2022) and the prequel rows (February 2022)
    before it; MT-NLG's Megatron-DeepSpeed had no such flag."""
    setting = {}
    for path in sorted(SCENARIOS.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("parallelism"), dict):
            setting[path.stem] = data["parallelism"].get("layernorm_tp_auto_sync", False)
    assert [name for name, on in setting.items() if on] == ["bigscience-bloom-176b-384-a100"]
    assert setting["bigscience-bloom-176b-384-a100-gbs16"] is False
