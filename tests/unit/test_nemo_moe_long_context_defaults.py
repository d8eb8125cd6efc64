"""Contract-only runs of NeMo's MoE and long-context recipes resolve what those recipes set
(docs/calibration/round-27.md, "Round 27: contract-only defaults against NeMo's MoE and long-context recipes").

The expected values below are read from the recipe sources, not from simcluster's constants:
- Mixtral 8x7B / 8x22B performance recipes (NeMo 2.x ``mixtral_8x7b.py`` / ``mixtral_8x22b.py`` performance mode; the
  24.09 launcher's ``mixtral_8x7b.yaml`` / ``mixtral_8x22b.yaml``): MegatronCommOverlapCallback without
  ``tp_comm_overlap`` or ``defer_embedding_wgrad_compute`` (the callback's defaults: both off), launcher
  ``ub_tp_comm_overlap: false``; ``grad_reduce_in_fp32 = False`` / ``grad_sync_dtype: bf16``; token drop.
- NeMo 2.x long-context recipes (``llama3_8b_16k.py`` ... ``mixtral_8x7b_64k.py``): the plain ``pretrain_recipe``,
  no comm-overlap or token-drop callback, ``grad_reduce_in_fp32=True`` (``bf16_with_fp8_mixed`` keeps it).
- The dense performance recipes at 8192 tokens or fewer keep TP overlap, deferral and their reduction dtype.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from simcluster.spec import config

ROWS = yaml.safe_load((Path(__file__).parents[1] / "data" / "nemo_recipe_layouts.yaml").read_text())


def _scenario(model, seq, tp, pp, cp=1, vp=1, ep=1, gpus=None, precision="bf16", etp=None, **stated):
    """A contract-only scenario (DESIGN.md's keys, NeMo's H100 node), as tests/validation's recipe layouts write it."""
    gpus = gpus or tp * pp * cp * 2
    parallelism = {"tp": tp, "pp": pp, "cp": cp, "dp": gpus // (tp * pp * cp), "virtual_stages": vp,
                   "sequence_parallel": tp > 1, "ep": ep, **({"etp": etp} if etp else {})}
    training = {"seq_len": seq, "global_batch_size": 2 * pp * gpus // (tp * pp * cp), "micro_batch_size": 1,
                "precision": precision}
    for key, value in stated.items():
        (training if key == "moe_token_drop" else parallelism)[key] = value
    return config.from_dict({"name": "t", "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": gpus // 8},
                             "model": model, "training": training, "parallelism": parallelism})


def _resolved(s: config.Scenario) -> tuple:
    p = s.parallelism
    return p.tp_comm_overlap, p.defer_embedding_wgrad, p.grad_reduce_dtype, s.training.moe_token_drop


# ---- Mixtral's performance recipes: no TP overlap, no deferral, bf16 reduction, token drop -------------------------
MIXTRAL_PERFORMANCE = [  # (model, seq, tp, pp, cp, vp, ep, etp, gpus): NeMo 25.02 csv and the 24.09 launcher
    ("mixtral-8x22b", 65536, 4, 4, 8, 14, 8, 1, 1024),  # csv @ 349c401: TP4 PP4 CP8 VP14 EP8 ETP1
    ("mixtral-8x22b", 4096, 8, 2, 1, 1, 1, None, 64),   # launcher mixtral_8x22b.yaml @ 0937882: TP8 PP2
    ("mixtral-8x22b", 4096, 2, 4, 1, 1, 8, 1, 256),     # the tutorial's layout
    ("mixtral-8x7b", 4096, 1, 4, 1, 8, 8, None, 64),    # csv and launcher: TP1 PP4 VP8 EP8
]


@pytest.mark.parametrize("precision", ["bf16", "fp8"])
@pytest.mark.parametrize("model, seq, tp, pp, cp, vp, ep, etp, gpus", MIXTRAL_PERFORMANCE)
def test_mixtral_runs_its_recipes_comm_overlap_callback_defaults(model, seq, tp, pp, cp, vp, ep, etp, gpus, precision):
    s = _scenario(model, seq, tp, pp, cp, vp, ep, gpus=gpus, precision=precision, etp=etp)
    assert _resolved(s) == (False, False, "bf16", True)


def test_stated_values_are_kept_on_mixtral():
    """A run stating TP overlap and deferral (the MoE zoo's Mixtral 8x22B rows) keeps them."""
    s = _scenario("mixtral-8x22b", 4096, 2, 8, 1, 1, 8, gpus=128, tp_comm_overlap=True, defer_embedding_wgrad=True)
    assert (s.parallelism.tp_comm_overlap, s.parallelism.defer_embedding_wgrad) == (True, True)
    zoo = config.load("moezoo-mixtral-8x22b-128-h100")
    assert zoo.parallelism.tp_comm_overlap is True


# ---- NeMo 2.x's long-context recipes: the plain pretrain_recipe ---------------------------------------------------
LONG_CONTEXT = [row for row in ROWS["recipe_defaults"] if row["seq"] >= 16384]


def test_the_long_context_rows_are_covered():
    names = {row["name"] for row in LONG_CONTEXT}
    assert {"nemo2-llama3-8b-16k", "nemo2-llama3-8b-128k", "nemo2-llama3-70b-64k", "nemo2-nemotron4-15b-16k",
            "nemo2-nemotron3-22b-64k", "nemo2-mixtral-8x7b-16k", "nemo2-mixtral-8x7b-64k"} <= names


@pytest.mark.parametrize("precision", ["bf16", "fp8"])
@pytest.mark.parametrize("row", LONG_CONTEXT, ids=[row["name"] for row in LONG_CONTEXT])
def test_a_long_context_recipe_runs_without_the_performance_callbacks(row, precision):
    """No TP overlap and no deferral (no MegatronCommOverlapCallback), fp32 reduction (grad_reduce_in_fp32=True,
    also under bf16_with_fp8_mixed), dropless Mixtral (no MegatronTokenDropCallback)."""
    gpus = row["gpus"][0]
    s = _scenario(row["model"], row["seq"], row["tp"], row["pp"], row["cp"], row["vp"], row.get("ep", 1),
                  gpus=gpus, precision=precision)
    assert _resolved(s) == (False, False, "fp32", False)
    if s.model.moe is not None:
        assert s.model.moe.capacity_factor is None  # dropless as the plain recipe runs it


def test_nemo_1x_long_context_launcher_conf_agrees():
    """NeMo-Framework-Launcher's conf/training/gpt3/175b_16k.yaml (3bffbed: TP8 PP16 CP2 VP6, 64 nodes):
    ub_tp_comm_overlap False, Apex distributed_fused_adam without grad_sync_dtype (its fp32 default), no deferral key:
    GPT-3 175B's bf16 reduction of its 2048-token recipe does not hold at 16384 tokens."""
    s = _scenario("gpt3-175b", 16384, 8, 16, 2, 6, gpus=512)
    assert _resolved(s)[:3] == (False, False, "fp32")


def test_the_performance_recipes_keep_theirs_at_8192_tokens_or_fewer():
    """Llama 3 70B bf16 (csv: TP4 PP4 CP2 VP5) and Llama 3.1 405B (TP8 PP9 CP2 VP7) run TP overlap and deferral;
    GPT-3 175B reduces in bf16 (gpt3_175b.py); the same Llama 3 8B layout at 16384 tokens is a long-context recipe."""
    assert _resolved(_scenario("llama3-70b", 8192, 4, 4, 2, 5, gpus=64))[:3] == (True, True, "fp32")
    assert _resolved(_scenario("llama3.1-405b", 8192, 8, 9, 2, 7, gpus=576))[:3] == (True, True, "fp32")
    assert _resolved(_scenario("gpt3-175b", 2048, 4, 8, 1, 6, gpus=128))[:3] == (True, True, "bf16")
    assert _resolved(_scenario("llama3-8b", 8192, 2, 4, 2, 4, gpus=32, precision="fp8"))[:3] == (True, True, "bf16")
    assert _resolved(_scenario("llama3-8b", 16384, 2, 4, 2, 4, gpus=32, precision="fp8"))[:3] == (False, False,
                                                                                                   "fp32")


def test_a_long_context_run_keeps_what_it_states():
    s = _scenario("llama3-8b", 65536, 2, 4, 4, 4, gpus=64, tp_comm_overlap=True, grad_reduce_dtype="bf16",
                  defer_embedding_wgrad=True)
    assert _resolved(s)[:3] == (True, True, "bf16")
    drop = _scenario("mixtral-8x7b", 16384, 4, 2, 4, gpus=64, moe_token_drop=True)
    assert drop.training.moe_token_drop is True and drop.model.moe.capacity_factor == 1.0
