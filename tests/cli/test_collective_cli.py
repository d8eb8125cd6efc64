"""`simcluster collective`: nccl-tests-like rows, JSON contract of DESIGN.md, and one-line errors (exit 2)."""

from __future__ import annotations

import json

import pytest


def test_json_rows_double_from_min_to_max_with_the_design_keys(cli):
    code, out, err = cli(
        "collective",
        "--op",
        "allreduce",
        "--gpus",
        "8",
        "--topology",
        "nvswitch-node",
        "--min-bytes",
        "8",
        "--max-bytes",
        "1M",
        "--json",
    )
    assert code == 0, err
    rows = json.loads(out)
    assert [row["bytes"] for row in rows] == [8 * 2**k for k in range(18)]  # 8 B .. 1 MiB, doubling
    for row in rows:
        assert {"bytes", "time_s", "algbw_bytes_per_s", "busbw_bytes_per_s"} <= set(row)
        assert row["algbw_bytes_per_s"] == pytest.approx(row["bytes"] / row["time_s"])
        assert row["busbw_bytes_per_s"] == pytest.approx(
            row["algbw_bytes_per_s"] * 2 * 7 / 8
        )  # nccl-tests factor
    times = [row["time_s"] for row in rows]
    assert times == sorted(times)  # a larger message never finishes sooner


def test_step_factor_and_nccl_size_suffixes(cli):
    code, out, err = cli(
        "collective",
        "--gpus",
        "16",
        "--min-bytes",
        "1K",
        "--max-bytes",
        "1G",
        "--step-factor",
        "32",
        "--network",
        "analytic",
        "--json",
    )
    assert code == 0, err
    assert [row["bytes"] for row in json.loads(out)] == [2**10, 2**15, 2**20, 2**25, 2**30]


def test_forced_ring_reports_the_algorithm(cli):
    code, out, err = cli(
        "collective",
        "--gpus",
        "8",
        "--topology",
        "nvswitch-node",
        "--min-bytes",
        "1G",
        "--max-bytes",
        "1G",
        "--algorithm",
        "ring",
        "--json",
    )
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["algorithm"] == "ring"


def test_table_lists_size_time_algbw_busbw(cli):
    code, out, err = cli(
        "collective", "--gpus", "8", "--topology", "nvswitch-node", "--min-bytes", "128", "--max-bytes", "512"
    )
    assert code == 0, err
    for header in ("size", "time", "algbw", "busbw"):
        assert header in out
    assert "128 B" in out and "256 B" in out and "512 B" in out


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("--op", "allsum"), "--op"),
        (("--algorithm", "butterfly"), "--algorithm"),
        (("--network", "packet"), "--network"),
        (("--min-bytes", "8X"), "--min-bytes"),
        (("--min-bytes", "1M", "--max-bytes", "1K"), "--max-bytes"),
        (("--step-factor", "1"), "--step-factor"),
        (("--gpus", "0"), "--gpus"),
        (("--gpu", "h1000"), "--gpu"),
        (("--nic", "connectx-99"), "--nic"),
        (("--topology", "no-such-fabric"), "--topology"),
        (("--gpus", "16", "--algorithm", "nvls"), "--algorithm"),
        (("--op", "all_gather", "--algorithm", "tree"), "--algorithm"),
    ],
)
def test_bad_options_exit_2_with_one_line_naming_the_option(cli, args, field):
    code, out, err = cli("collective", "--max-bytes", "1K", *args)
    assert code == 2
    assert err.startswith(f"error: {field}: "), err
    assert err.count("\n") == 1 and "Traceback" not in err
