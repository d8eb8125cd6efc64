"""`--format csv|parquet`: the events (run) and results (sweep) tables are in the format asked for, never switched
by what happens to be installed."""

from __future__ import annotations

import importlib.util

import pytest

HAS_PYARROW = importlib.util.find_spec("pyarrow") is not None


def test_run_writes_csv_by_default_whatever_is_installed(cli, write_scenario, small_scenario, tmp_path):
    code, _, _ = cli("run", write_scenario(small_scenario), "--network", "analytic", "--out", tmp_path / "r")
    assert code == 0
    assert (tmp_path / "r" / "events.csv").exists() and not (tmp_path / "r" / "events.parquet").exists()


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_unknown_format_is_refused_before_simulating(cli, write_scenario, small_scenario, tmp_path, command):
    code, _, err = cli(command, write_scenario(small_scenario), "--format", "xml", "--out", tmp_path / "o")
    assert code == 2 and "--format" in err and not (tmp_path / "o").exists()


@pytest.mark.skipif(HAS_PYARROW, reason="pyarrow installed: parquet is written")
def test_parquet_without_pyarrow_is_one_line_naming_the_option(cli, write_scenario, small_scenario, tmp_path):
    code, _, err = cli("run", write_scenario(small_scenario), "--format", "parquet", "--out", tmp_path / "o")
    assert code == 2 and "error: --format: parquet needs pyarrow" in err


@pytest.mark.skipif(not HAS_PYARROW, reason="needs pyarrow")
def test_parquet_is_written_when_asked(cli, write_scenario, small_scenario, tmp_path):
    code, _, _ = cli("run", write_scenario(small_scenario), "--network", "analytic", "--format", "parquet", "--out",
                     tmp_path / "r")
    assert code == 0 and (tmp_path / "r" / "events.parquet").exists()
