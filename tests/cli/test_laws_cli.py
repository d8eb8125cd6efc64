"""`simcluster laws ...` through simcluster.cli.main: exit codes, JSON outputs checked against hand-computed
values, figures written as PNG and PDF."""

import json
import math

import pytest

from simcluster.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_json(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_eval_chinchilla_json_prints_the_approach3_loss(capsys):
    out = run_json(capsys, ["laws", "eval", "--law", "chinchilla", "--params", "70e9", "--tokens", "1.4e12",
                            "--json"])
    assert out["loss"] == pytest.approx(1.69 + 406.4 / 70e9**0.34 + 410.7 / 1.4e12**0.28, rel=1e-12)


def test_eval_refit_and_kaplan_json(capsys):
    refit = run_json(capsys, ["laws", "eval", "--law", "chinchilla-refit", "--params", "1e9",
                              "--tokens", "2e10", "--json"])
    assert refit["loss"] == pytest.approx(1.8172 + 482.01 / 1e9**0.3478 + 2085.43 / 2e10**0.3658, rel=1e-12)
    kaplan = run_json(capsys, ["laws", "eval", "--law", "kaplan", "--params", "1e9", "--tokens", "2e10",
                               "--json"])
    expected = ((6.4e13 / 1e9) ** (0.076 / 0.103) + 1.8e13 / 2e10) ** 0.103
    assert kaplan["loss"] == pytest.approx(expected, rel=1e-12)


def test_eval_custom_law_reads_its_fit(capsys):
    out = run_json(capsys, ["laws", "eval", "--law", "custom", "--fit",
                            "E=2,A=100,B=1000,alpha=0.5,beta=0.25", "--params", "1e4", "--tokens", "1e8",
                            "--json"])
    assert out["loss"] == pytest.approx(13.0)


def test_optimal_chinchilla_json_follows_hoffmann_eq_4(capsys):
    out = run_json(capsys, ["laws", "optimal", "--law", "chinchilla", "--flop", "1e24", "--json"])
    G = (0.34 * 406.4 / (0.28 * 410.7)) ** (1 / 0.62)
    assert out["params"] == pytest.approx(G * (1e24 / 6) ** (0.28 / 0.62), rel=1e-12)
    assert out["tokens"] == pytest.approx((1e24 / 6) ** (0.34 / 0.62) / G, rel=1e-12)
    assert 6 * out["params"] * out["tokens"] == pytest.approx(1e24)
    assert out["loss"] == pytest.approx(1.69 + 406.4 / out["params"] ** 0.34 + 410.7 / out["tokens"] ** 0.28)


@pytest.mark.parametrize("years", ["0", "2.5", "10"])
def test_relative_loss_at_gamma_zero_is_one_plus_t_to_minus_kappa(capsys, years):
    out = run_json(capsys, ["laws", "relative-loss", "--gamma", "0", "--kappa", "0.05", "--years", years,
                            "--json"])
    assert out["relative_loss"] == pytest.approx((1 + float(years)) ** -0.05, rel=1e-14)


def test_relative_loss_at_gamma_two_by_hand(capsys):
    out = run_json(capsys, ["laws", "relative-loss", "--gamma", "2", "--kappa", "0.05", "--years", "3",
                            "--json"])
    assert out["relative_loss"] == pytest.approx((1 + (2**6 - 1) / (2 * math.log(2))) ** -0.05, rel=1e-13)


@pytest.mark.parametrize("argv", [
    ["laws", "eval", "--params", "-5", "--tokens", "1e9"],
    ["laws", "eval", "--params", "1e9", "--tokens", "0"],
    ["laws", "eval", "--law", "custom", "--fit", "E=1,A=1,B=1,alpha=-0.3,beta=0.3", "--params", "1e9",
     "--tokens", "1e9"],
    ["laws", "eval", "--law", "custom", "--fit", "E=1,A=1", "--params", "1e9", "--tokens", "1e9"],
    ["laws", "eval", "--law", "gpt", "--params", "1e9", "--tokens", "1e9"],
    ["laws", "optimal", "--flop", "-1e20"],
    ["laws", "relative-loss", "--gamma", "1", "--kappa", "-0.05", "--years", "1"],
    ["laws", "relative-loss", "--gamma", "-1", "--kappa", "0.05", "--years", "1"],
    ["laws", "project", "--gamma", "-1"],
    ["laws", "loss-vs-time", "--target-loss", "2.0", "--tokens", "1e9"],
])
def test_bad_parameters_exit_2_with_one_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err and "Traceback" not in err


def test_plot_writes_the_three_figures_as_png_and_pdf(tmp_path, capsys):
    assert main(["laws", "plot", "--out", str(tmp_path)]) == 0
    for stem in ("loss_vs_compute", "compute_optimal", "relative_loss"):
        assert (tmp_path / f"{stem}.png").read_bytes()[:8] == PNG_MAGIC
        assert (tmp_path / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"


def test_project_json_lists_a_binding_constraint_per_year_and_the_figure(tmp_path, capsys):
    out = run_json(capsys, ["laws", "project", "--json", "--years", "5", "--out", str(tmp_path)])
    assert [row["year"] for row in out["years"]] == list(range(out["inputs"]["start_year"],
                                                              out["inputs"]["start_year"] + 5))
    for row in out["years"]:
        assert row["binding"] in {"compute", "memory", "network", "budget", "energy", "data"}
    assert (tmp_path / "projection.png").exists() and (tmp_path / "projection.pdf").exists()


def test_project_prints_a_table_and_an_ascii_phase_diagram(capsys):
    assert main(["laws", "project", "--years", "3"]) == 0
    out = capsys.readouterr().out
    assert "binding" in out and "legend: C compute" in out


SUMMARY = {"step_time_s": 10.0, "tokens_per_s": 350000.0, "gpus": 1024, "mfu": 0.45, "exposed_comm_s": 0.5,
           "pipeline_bubble_s": 1.0}
REPORT_KEYS = {"time_to_target_s", "tokens_to_target", "gpu_hours", "cost_usd", "energy_j", "co2_kg", "law"}


def test_loss_vs_time_from_a_summary_file_prints_time_cost_energy_and_co2(tmp_path, capsys):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(SUMMARY))
    out = run_json(capsys, ["laws", "loss-vs-time", "--summary", str(path), "--target-loss", "2.0", "--law",
                            "chinchilla", "--json", "--out", str(tmp_path / "plots")])
    assert REPORT_KEYS <= set(out)
    # the bundled default: GPT-3 175B on 1,024 H100 at $2.50/GPU-h; tokens to 2.0 under Chinchilla approach 3
    from simcluster.spec import config

    n = config.load(None).model.params
    tokens = (410.7 / (2.0 - 1.69 - 406.4 / n**0.34)) ** (1 / 0.28)
    assert out["tokens_to_target"] == pytest.approx(tokens, rel=1e-12)
    assert out["time_to_target_s"] == pytest.approx(tokens / 350000.0, rel=1e-12)
    assert out["cost_usd"] == pytest.approx(1024 * tokens / 350000.0 / 3600 * 2.5, rel=1e-12)
    assert out["out_dir"] == str(tmp_path / "plots")
    assert (tmp_path / "plots" / "loss_vs_time.png").read_bytes()[:8] == PNG_MAGIC


def test_loss_vs_time_target_below_the_floor_exits_2(tmp_path, capsys):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(SUMMARY))
    assert main(["laws", "loss-vs-time", "--summary", str(path), "--target-loss", "1.7", "--json"]) == 2
    assert "--target-loss: 1.7 is not above" in capsys.readouterr().err


def _engine_available() -> bool:
    try:
        from simcluster.engine import simulate  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _engine_available(), reason="simcluster.engine.simulate not built yet")
def test_loss_vs_time_runs_the_bundled_scenario_through_the_engine(tmp_path, capsys):
    out = run_json(capsys, ["laws", "loss-vs-time", "--target-loss", "2.0", "--network", "analytic", "--json",
                            "--out", str(tmp_path)])
    assert REPORT_KEYS <= set(out)
    assert out["law"] == "chinchilla-refit"   # the one default law of every command (outcomes.laws.DEFAULT_LAW)
    # time x throughput x goodput is the token count, and GPU-hours are GPUs x time; without --goodput the run's
    # own goodput (failures, checkpoints, restarts over a whole run: below 1 on 1,024 GPUs) is used and reported
    assert 0.5 < out["goodput"] < 1.0 and out["goodput_basis"].startswith("simulated")
    assert out["time_to_target_s"] * out["tokens_per_s"] * out["goodput"] == pytest.approx(out["tokens_to_target"],
                                                                                          rel=1e-9)
    assert out["gpu_hours"] == pytest.approx(out["gpus"] * out["time_to_target_s"] / 3600, rel=1e-12)
    assert out["gpus"] == 1024
    assert out["energy_j"] > 0 and out["co2_kg"] > 0
    assert (tmp_path / "loss_vs_time.png").exists()
