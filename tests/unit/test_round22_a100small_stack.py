"""Round 22, "per-microbatch compute at small hidden sizes on A100" (docs/calibration.md): what the Zero Bubble
paper's Megatron-LM 1F1B rows (Qi et al., ICLR 2024) ran, and where their first simulation's deficit sat.

- The paper-era version of the authors' script (examples/pretrain_zero_bubble.sh at fork commit 425b42e5) passes
  neither --use-flash-attn nor --untie-embeddings-and-output-weights: Megatron-LM's unfused attention (the review of
  the rows found it from the paper's Table 1; tests/validation/test_round22_new_held_out.py holds the memory) and
  tied embeddings. The model names (Table 3) count one 32,000 x h embedding matrix: untied embeddings (two) would
  name three of the four models differently.
- The diagnosis, against the authors' profiled passes (megatron/core/pipeline_parallel/mem.py at f68d3879,
  ``iclr_mem``, Appendix D's Table 6; a held-out source, read to find the missing term, nothing fitted to it): on a
  middle stage, simcluster's F + B + W with the unfused attention is within a few percent of the authors' T_F + T_B
  + T_W at every hidden size, with FlashAttention 6-25% under (most at hidden 2304); the W pass (weight-gradient
  GEMMs alone) is the same in both and within a few percent of T_W: no GEMM shortfall at small hidden sizes.
"""

import pytest
from scripts_loader import load_script

from simcluster.spec import config

stage_passes = load_script("stage_passes")

VOCAB = 32000
# Table 3: model -> (layers, hidden)
TABLE_3 = {"1.5b": (22, 2304), "6.2b": (30, 4096), "14.6b": (46, 5120), "28.3b": (62, 6144)}
# one row a model (the smallest microbatch count of Table 4) and the authors' (T_F, T_B, T_W) for it, microseconds
ROW = {"1.5b": "zerobubble2024-1f1b-1.5b-8-a100-m24", "6.2b": "zerobubble2024-1f1b-6.2b-8-a100-m24",
       "14.6b": "zerobubble2024-1f1b-14.6b-16-a100-m48", "28.3b": "zerobubble2024-1f1b-28.3b-32-a100-m96"}
PROFILED_US = {"1.5b": (18522, 18086, 9337), "6.2b": (29718, 29444, 19927), "14.6b": (11347, 11248, 8132),
               "28.3b": (10419, 10207, 7715)}


@pytest.mark.parametrize("size", sorted(ROW))
def test_the_rows_run_the_paper_era_stack(size):
    scenario = config.load(ROW[size])
    assert scenario.training.attention == "naive" and scenario.model.tied_embeddings is True


@pytest.mark.parametrize("size", sorted(TABLE_3))
def test_the_model_names_count_one_embedding_matrix(size):
    layers, hidden = TABLE_3[size]
    assert f"{(12 * layers * hidden**2 + VOCAB * hidden) / 1e9:.1f}b" == size


def test_untied_embeddings_would_name_three_of_the_models_otherwise():
    untied = {size: f"{(12 * layers * hidden**2 + 2 * VOCAB * hidden) / 1e9:.1f}b"
              for size, (layers, hidden) in TABLE_3.items()}
    assert untied == {"1.5b": "1.5b", "6.2b": "6.3b", "14.6b": "14.8b", "28.3b": "28.5b"}


@pytest.mark.parametrize("size", sorted(ROW))
def test_the_missing_term_was_the_attention_core(size):
    """A middle stage's F, B and W (scripts/stage_passes.py: each kernel's roofline plus the fitted gap, no pipeline
    step) against the authors' T_F, T_B and T_W of the same setup."""
    profiled_ms = [us / 1e3 for us in PROFILED_US[size]]
    naive = [s * 1e3 for s in stage_passes.stage_passes(config.load(ROW[size]))["middle"].values()]
    flash = [s * 1e3 for s in stage_passes.stage_passes(stage_passes.load(ROW[size], "flash"))["middle"].values()]
    # with Megatron's bias-gradient reductions (round 32): -1.5 / +0.2 / +2.4 / +3.4% (1.5B / 6.2B / 14.6B / 28.3B)
    assert abs(sum(naive) / sum(profiled_ms) - 1) < 0.05
    assert 0.72 < sum(flash) / sum(profiled_ms) < 0.96         # -23 / -10 / -7 / -5%
    assert naive[2] == pytest.approx(flash[2])                 # W: the weight-gradient GEMMs alone
    # within 8% either way (+3 / +2 / +7 / +6% now): no GEMM shortfall; a model nearer T_W must still pass
    assert abs(naive[2] / profiled_ms[2] - 1) < 0.08
