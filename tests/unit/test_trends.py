"""Trend series (studies/trends.py): which runs group (hand-made runs and the bundled scenarios), the scaling
efficiency and trend error against a direct computation, the trend error's sign, and the generator's trend table and
figure (scripts/accuracy_tables.py) on hand-made validate JSON."""

import json

import pytest
from scripts_loader import load_script

from simcluster.studies import trends

BASE = {"gpu": "h100-sxm", "precision": "bf16", "tp": 8, "pp": 1, "vp": 1, "cp": 1, "ep": 1, "etp": 1,
        "sequence_parallel": True, "zero_stage": 1, "micro_batch": 1, "seq_len": 4096, "recompute": "none"}


def run(name, gpus, family="src", model="m", published=400.0, simulated=400.0, metric="model", spec="s", batch=0,
        **layout):
    return trends.Run(name, family, model, gpus, published, simulated, {**BASE, **layout}, metric, spec, batch)


def names(series):
    return [[r.scenario for r in s] for s in series]


def test_runs_differing_only_in_gpu_count_group_sorted_by_gpus():
    series, apart = trends.group([run("c", 64), run("a", 16), run("b", 32)])
    assert names(series) == [["a", "b", "c"]] and apart == []


@pytest.mark.parametrize("key, value", [("micro_batch", 2), ("tp", 4), ("pp", 2), ("vp", 2), ("cp", 2), ("ep", 8),
                                        ("seq_len", 8192), ("precision", "fp8/delayed"), ("gpu", "a100-80gb-sxm"),
                                        ("recompute", "full"), ("zero_stage", 3)])
def test_a_run_with_another_per_replica_layout_stays_apart_and_says_why(key, value):
    series, apart = trends.group([run("a", 16), run("b", 32), run("odd", 64, **{key: value})])
    assert names(series) == [["a", "b"]]
    assert apart == [{"family": "src", "model": "m", "runs": ["odd"], "gpus": [64], "differ": [key]}]


def test_another_source_model_spec_or_metric_never_joins_a_series():
    other_source = trends.group([run("a", 16), run("b", 32, family="other")])
    assert other_source == ([], [])                       # each source has one run: neither a series nor a split
    same_name_other_spec = trends.group([run("a", 16), run("b", 32, spec="capacity 1.0")])
    assert same_name_other_spec[0] == [] and same_name_other_spec[1][0]["differ"] == ["model"]
    other_metric = trends.group([run("a", 16), run("b", 32, metric="hardware")])
    assert other_metric[0] == [] and other_metric[1][0]["differ"] == ["metric"]


def test_one_gpu_count_is_no_series_and_a_repeated_count_spoils_the_group():
    assert trends.group([run("plain", 256), run("asynctp", 256)]) == ([], [])     # one count: nothing to scale
    series, apart = trends.group([run("plain", 256), run("asynctp", 256), run("big", 512)])
    assert series == [] and apart[0]["runs"] == ["plain", "asynctp", "big"]
    assert apart[0]["differ"] == ["gpu count repeats"]


def test_a_repeated_count_at_two_global_batches_splits_into_a_series_per_batch():
    # MegaScale's Table 2 shape: 256 -> 1024 GPUs at batch 768, 3072 -> 12288 at 6144, and one 256-GPU run at 256
    runs = [run(f"b768-{n}", n, batch=768) for n in (256, 512, 1024)]
    runs += [run(f"b6144-{n}", n, batch=6144) for n in (3072, 12288)] + [run("b256-256", 256, batch=256)]
    series, apart = trends.group(runs)
    assert names(series) == [["b768-256", "b768-512", "b768-1024"], ["b6144-3072", "b6144-12288"]]
    assert apart == [{"family": "src", "model": "m", "runs": ["b256-256"], "gpus": [256], "differ": ["global batch"]}]
    # one batch with a repeated count stays spoilt; a batch holding a repeat of its own is no series
    assert trends.group([run("x", 256, batch=8), run("y", 256, batch=8), run("z", 512, batch=8)])[0] == []
    assert trends.group([run("x", 256, batch=8), run("y", 256, batch=8), run("z", 512, batch=16)])[0] == []


def test_two_strong_scaling_curves_split_by_batch_without_a_repeated_count():
    # MegaScale's Table 2 without its extra 256-GPU run at batch 256: no GPU count repeats, yet batch 768 (256-1024
    # GPUs) and batch 6144 (3072-12288) are two curves; one series across both would compare 12288 GPUs at batch 6144
    # with 256 at 768
    runs = [run(f"b768-{n}", n, batch=768) for n in (256, 512, 1024)]
    runs += [run(f"b6144-{n}", n, batch=6144) for n in (3072, 12288)]
    assert names(trends.group(runs)[0]) == [["b768-256", "b768-512", "b768-1024"], ["b6144-3072", "b6144-12288"]]
    # weak scaling (one batch per GPU count) and one curve beside single runs stay one series
    weak = [run(f"w{n}", n, batch=2 * n) for n in (8, 16, 32)]
    assert names(trends.group(weak)[0]) == [["w8", "w16", "w32"]]
    mixed = [run("a", 8, batch=16), run("b", 16, batch=16), run("c", 32, batch=64)]
    assert names(trends.group(mixed)[0]) == [["a", "b", "c"]]


def test_efficiency_is_throughput_per_gpu_against_the_smallest_count():
    # 400, 380, 340 TFLOP/s per GPU at 8, 16, 32 GPUs: efficiency 1, 0.95, 0.85 (given out of order)
    assert trends.efficiency([380.0, 340.0, 400.0], [16, 32, 8]) == pytest.approx([0.95, 0.85, 1.0])


def test_trend_error_against_a_direct_computation():
    published, simulated, gpus = [400.0, 380.0, 340.0], [420.0, 410.0, 400.0], [8, 16, 32]
    result = trends.trend([run(f"r{n}", n, published=p, simulated=s)
                           for n, p, s in zip(gpus, published, simulated, strict=True)])
    expected = [(s / simulated[0]) / (p / published[0]) - 1 for p, s in zip(published, simulated, strict=True)]
    assert [p["trend_error"] for p in result["points"]] == pytest.approx(expected)
    assert result["end_trend_error"] == pytest.approx(expected[-1])
    errors = [s / p - 1 for p, s in zip(published, simulated, strict=True)]      # per-run errors
    assert result["end_trend_error"] == pytest.approx((1 + errors[-1]) / (1 + errors[0]) - 1)
    assert [p["published_efficiency"] for p in result["points"]] == pytest.approx([1.0, 0.95, 0.85])


def test_sign_convention():
    # the published runs lose 15% per GPU from 8 to 32 GPUs, the simulation 5%: optimistic, positive
    optimistic = trends.trend([run("a", 8, published=400, simulated=400), run("b", 32, published=340, simulated=380)])
    assert optimistic["end_trend_error"] == pytest.approx(0.95 / 0.85 - 1) and optimistic["sign"] == "optimistic"
    # as Nemotron-4 15B (-8.8% -> -20.2% per run): the simulation loses more: pessimistic, negative
    pessimistic = trends.trend([run("a", 768, published=100, simulated=91.2),
                                run("b", 2304, published=100, simulated=79.8)])
    assert pessimistic["end_trend_error"] == pytest.approx(79.8 / 91.2 - 1) and pessimistic["sign"] == "pessimistic"
    # the same per-run error at every count leaves the trend exact
    constant = trends.trend([run("a", 8, published=400, simulated=440), run("b", 64, published=300, simulated=330)])
    assert constant["end_trend_error"] == pytest.approx(0.0) and constant["sign"] == "matches"
    assert trends.sign(trends.TREND_FLAT / 2) == trends.sign(-trends.TREND_FLAT / 2) == "matches"


def case(name, family, published, simulated, metric="model"):
    return {"scenario": name, "family": family, "precision": "bf16", "metric": metric, "published_tflops": published,
            "simulated_tflops": simulated, "error": simulated / published - 1}


def test_bundled_scenarios_group_by_their_layout():
    # Nemotron-4 15B: TP 8, micro batch 1 at 768, 1536 and 2304 H100 (dp and batch grow): one series
    found = trends.trends([case(f"nemotron4-15b-{n}-h100", "nemotron4", 300.0, 300.0) for n in (1536, 768, 2304)])
    (series,) = found["series"]
    assert [p["gpus"] for p in series["points"]] == [768, 1536, 2304]
    assert series["layout"]["tp"] == 8 and series["layout"]["micro_batch"] == 1
    # NeMo 24.07's GPT-3 175B FP8 runs micro batch 1 on 128 GPUs and 2 on 512: not a trend series
    fp8 = trends.trends([case(f"nemo2407-gpt3-175b-{n}-h100-fp8", "nemo_2407", 800.0, 800.0) for n in (128, 512)])
    assert fp8["series"] == [] and fp8["not_grouped"][0]["differ"] == ["micro_batch"]
    # Megatron-LM 2021: one model on a node and 128x data parallel, its software settings aside, is a series
    a100 = trends.trends([case(f"megatron-4.2b-a100-{k}", "megatron_a100_2021", 120.0, 120.0, "hardware")
                          for k in ("node", "dp")])
    assert [p["gpus"] for p in a100["series"][0]["points"]] == [4, 512]


def test_cases_without_a_bundled_scenario_or_throughput_join_no_series():
    found = trends.trends([{"scenario": "no-such-run", "family": "x", "published_tflops": 1.0,
                            "simulated_tflops": 1.0}, {"scenario": "nemotron4-15b-768-h100", "family": "x"}])
    assert found == {"series": [], "not_grouped": [], "unread": ["no-such-run", "nemotron4-15b-768-h100"]}


@pytest.mark.parametrize("bad", [0.0, -300.0, float("nan"), float("inf"), True])
def test_a_throughput_no_ratio_can_be_taken_of_leaves_the_run_unread(bad):
    # an edited or hand-written JSON (json reads NaN and Infinity): no division by zero, no NaN trend called 'matches'
    good = case("nemotron4-15b-768-h100", "nemotron4", 300.0, 300.0)
    for field in ("published_tflops", "simulated_tflops"):
        odd = {**case("nemotron4-15b-2304-h100", "nemotron4", 270.0, 210.0), field: bad}
        assert trends.trends([good, odd]) == {"series": [], "not_grouped": [], "unread": ["nemotron4-15b-2304-h100"]}


@pytest.fixture(scope="module")
def tables():
    return load_script("accuracy_tables")


def test_generator_trend_table_from_an_old_json(tables, tmp_path, capsys):
    calibration = [case(f"nemo2409-llama31-8b-{n}-h100-bf16", "nemo-llama31-8b", p, s)
                   for n, p, s in ((8, 600.0, 600.0), (32, 570.0, 588.0))]
    held_out = [case(f"nemotron4-15b-{n}-h100", "nemotron4", p, s) for n, p, s in ((768, 300.0, 280.0),
                                                                                     (2304, 270.0, 210.0))]
    held_out.append(case("nemo2407-gpt3-175b-128-h100-fp8", "nemo_2407", 800.0, 760.0))
    held_out.append(case("nemo2407-gpt3-175b-512-h100-fp8", "nemo_2407", 840.0, 830.0))
    cal, held = tmp_path / "cal.json", tmp_path / "held.json"
    cal.write_text(json.dumps({"cases": calibration}))      # no 'trends' key: as every JSON before round 20
    held.write_text(json.dumps({"cases": held_out}))
    assert tables.main([str(cal), str(held)]) == 0
    out = capsys.readouterr().out.split("**Scaling trends")[1]
    # 570/600 = 95.0%, 588/600 = 98.0%, 0.98/0.95 - 1 = +3.2%; 270/300 = 90.0%, 210/280 = 75.0%, -16.7%
    assert "| nemo-llama31-8b/llama3-8b | calibration | 8, 32 | 95.0 | 98.0 | +3.2 | +3.2% | optimistic |" in out
    assert "| nemotron4/nemotron4-15b | held out | 768, 2304 | 90.0 | 75.0 | -16.7 | -16.7% | pessimistic |" in out
    assert "nemo2407-gpt3-175b-128-h100-fp8, nemo2407-gpt3-175b-512-h100-fp8 (gpt3-175b: micro_batch)" in out
    png = tmp_path / "trends.png"
    assert tables.main([str(cal), str(held), "--trend-plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert tables.main([str(cal), str(held), "--trend-plot", str(tmp_path / "trends.xyz")]) == 2   # not a traceback
    err = capsys.readouterr().err
    assert err.startswith("error: --trend-plot: ") and ".xyz is not an image format" in err and err.count("\n") == 1


def test_generator_without_series_says_so(tables):
    assert tables.trend_table([case("c1", "a", 1.0, 1.0)], []) == [
        "No trend series among these runs (runs of one source and model at two or more GPU counts)."]


def test_figure_draws_a_published_and_a_simulated_line_per_series_on_a_log2_gpu_axis():
    from simcluster.analysis import scaling

    two = trends.trend([run("a", 8, published=400, simulated=400), run("b", 32, published=340, simulated=380)])
    three = trends.trend([run(f"r{n}", n, published=p, simulated=s) for n, p, s in
                          ((768, 300, 280), (1536, 290, 250), (2304, 270, 210))])
    fig = scaling.trend_efficiency([("calibration", [two]), ("held out", [two, three])])
    left, right = fig.axes[:2]
    assert len(left.lines) == 2 * 1 + 1 and len(right.lines) == 2 * 2 + 1     # + the 100% line
    published, simulated = right.lines[2], right.lines[3]
    assert list(published.get_xdata()) == [768, 1536, 2304]
    assert list(simulated.get_ydata()) == pytest.approx([1.0, 250 / 280, 210 / 280])
    assert published.get_color() == simulated.get_color() and simulated.get_linestyle() == "--"
    assert right.get_xscale() == "log"
    assert [t.get_text() for t in right.get_legend().get_texts()] == ["m (+11.8%)", "m (-16.7%)"]


def test_the_glossary_entry_quotes_the_match_band():
    from simcluster.core import glossary

    name, entry = glossary.lookup("trend series")
    assert name == "trend error" and f"within {trends.TREND_FLAT:.0%}: matches" in entry["text"]
