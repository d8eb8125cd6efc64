"""scripts/moe_dropless_pairs.py (round 35, docs/calibration/round-35.md "Round 35: the MoE layer across layouts"): the
MoE zoo's TFLOP/s turned into step times by Megatron-LM's FLOP count, checked against the zoo's own table, whose rows
state both a step time and a per-GPU TFLOP/s (yanring/Megatron-MoE-ModelZoo best_practice/Qwen3/readme.md @ c1ad0b5c).
No simulation runs here."""

from __future__ import annotations

import pytest
from scripts_loader import load_script

from simcluster.core.script_entry import run
from simcluster.spec import config

pairs = load_script("moe_dropless_pairs")


@pytest.fixture(scope="module")
def qwen3():
    return config.load(pairs.ROW_PREFIX + "tp4").model


@pytest.mark.parametrize("row", pairs.ZOO_ROWS, ids=lambda r: r.name)
def test_megatron_count_reproduces_the_zoo_table(qwen3, row):
    """step x TFLOP/s x GPUs is the zoo's FLOP a step: within 1% for every row (the table's three significant digits
    round by up to 0.3%). Counting causal attention whole would put every row 13% high; the unpadded vocabulary or
    no query-projection width would miss too."""
    flop = pairs.megatron_flop_per_token(qwen3, row.seq_len, row.tp) * row.seq_len * row.global_batch
    assert flop / (row.step_s * pairs.GPUS * 1e12) == pytest.approx(row.tflops, rel=0.01)


def test_long_context_steps_follow_from_the_same_count(qwen3):
    """A long-context row's step is the count over its TFLOP/s: forced balance faster than dropless at each
    sequence, by the published ratio of TFLOP/s (295 / 237 at 16,384 tokens)."""
    row = pairs.LONG_CONTEXT[0]
    balanced = pairs.zoo_step_s(qwen3, row.seq_len, pairs.LONG_CONTEXT_BATCH, 4, row.balanced_tflops)
    dropless = pairs.zoo_step_s(qwen3, row.seq_len, pairs.LONG_CONTEXT_BATCH, 4, row.dropless_tflops)
    assert dropless / balanced == pytest.approx(295 / 237)
    # by hand: 12 x 94 x 4096 x (1536 x 8 x 1.5 + 4096 x (1 + 4/64 + 16384 / 8192) x 2) + 6 x 4096 x 151936
    # = 2.0481e11 FLOP a token, x 16384 x 256 tokens / (256 GPUs x 295e12) = 11.375 s
    assert balanced == pytest.approx(11.375, abs=0.005)


def test_padded_vocab_is_megatrons():
    """Megatron-LM pads to a multiple of --make-vocab-size-divisible-by x tp, which the zoo sets to 1,187: Qwen3's
    151,936 (128 x 1,187) stays unpadded at tp 1, 2 and 4; one token more takes the next multiple."""
    assert [pairs.padded_vocab(151936, tp) for tp in (1, 2, 4)] == [151936] * 3
    assert pairs.padded_vocab(151937, 2) == 151936 + 2 * 1187


def test_unknown_command_is_one_line_before_any_simulation(capsys, monkeypatch):
    monkeypatch.setattr(pairs, "simulate", lambda *a, **k: pytest.fail("simulated"))
    assert run(pairs.main, ["pair"], pairs.__doc__, words=(1, 1)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "layouts, pairs" in err


def test_fixed_and_per_token_is_the_line_through_two_rows():
    """Intercept and slope of the line through two (tokens, seconds) points, either order: 1 s + 2 s a token."""
    assert pairs.fixed_and_per_token((1.0, 3.0), (3.0, 7.0)) == pytest.approx((1.0, 2.0))
    assert pairs.fixed_and_per_token((3.0, 7.0), (1.0, 3.0)) == pytest.approx((1.0, 2.0))


@pytest.mark.parametrize("row", pairs.LONG_CONTEXT, ids=lambda r: str(r.seq_len))
def test_long_context_scenario_is_the_zoos_layout(row):
    """The zoo's long-context runs: 32 nodes (256 H100), TP 4, PP 8, VPP 4, EP 8, GBS 256, its CP at each sequence;
    the data-parallel size takes what CP leaves of 256 GPUs. Built, not simulated."""
    for load in ("balanced", "measured"):
        s = pairs.long_context_scenario(row, load)
        p = s.parallelism
        assert (p.tp, p.pp, p.virtual_stages, p.ep, p.cp) == (4, 8, 4, 8, row.cp)
        assert s.cluster.gpus == 256 == p.tp * p.pp * p.cp * p.dp
        assert (s.training.seq_len, s.training.global_batch_size) == (row.seq_len, 256)
        assert s.model.moe.load == load and s.model.max_seq_len >= row.seq_len


def test_tokens_law_is_variance_over_tokens():
    """Round 38's what-if reading: the expert CV read at 32,768 tokens an EP group, its variance falling as 1/tokens
    (a sum over independent documents): the read CV at the read tokens, half of it at four times the tokens, twice it
    at a quarter."""
    assert pairs.tokens_law_cv(pairs.READ_TOKENS) == pytest.approx(pairs.READ_CV)
    assert pairs.tokens_law_cv(4 * pairs.READ_TOKENS) == pytest.approx(pairs.READ_CV / 2)
    assert pairs.tokens_law_cv(pairs.READ_TOKENS / 4) == pytest.approx(2 * pairs.READ_CV)


@pytest.mark.parametrize("name, tokens", [("tp4", 8 * 4096 / 4), ("a2a", 8 * 4096 / 2), ("fsdp", 8 * 4 * 4096 / 2),
                                          ("deepep", 32 * 4096 / 2), ("lc16k-dropless", 8 * 16384 / 4),
                                          ("lc128k-dropless", 8 * 131072 / (4 * 8))])
def test_group_tokens_are_the_zoo_layouts(name, tokens):
    """Tokens an EP group routes a microbatch, by hand from the zoo's layouts (EP x micro batch x sequence / (TP x
    CP)): the long-context pairs route 32,768 at every length, the premise of the reading."""
    assert pairs.group_tokens(config.load(pairs.ROW_PREFIX + name)) == tokens


def test_cv_for_busiest_inverts_the_load():
    """The EP-invariant reading: at EP 8 the CV giving EP 8's busiest rank is the CV itself; at EP 32 (4 experts a
    rank) it is smaller, and gives the same busiest rank."""
    from simcluster.workload import moe
    spec = config.load(pairs.ROW_PREFIX + "deepep").model.moe
    tokens, cv = 65536.0, 1.2
    target = moe.busiest_rank_load(spec.model_copy(update={"load": cv}), 8, tokens)
    assert pairs.cv_for_busiest(spec, 8, tokens, target) == pytest.approx(cv, rel=1e-6)
    at_32 = pairs.cv_for_busiest(spec, 32, tokens, target)
    assert at_32 < cv / 2
    assert moe.busiest_rank_load(spec.model_copy(update={"load": at_32}), 32, tokens) == pytest.approx(target)
