"""units.parse / fmt: decimal vs binary prefixes, bits vs bytes, dimensions checked."""

import pytest

from simcluster.core import units
from simcluster.core.errors import ScenarioError
from simcluster.core.units import BYTES, BYTES_PER_S, FLOP_PER_S, SECONDS, WATTS, fmt, parse, parse_message_size


@pytest.mark.parametrize(
    ("text", "dimension", "expected"),
    [
        ("400 Gb/s", BYTES_PER_S, 400e9 / 8),  # bits: one eighth of a byte
        ("50 GB/s", BYTES_PER_S, 50e9),
        ("400Gbps", BYTES_PER_S, 50e9),
        ("80 GiB", BYTES, 80 * 1024**3),  # binary prefix
        ("80 GB", BYTES, 80e9),  # decimal prefix
        ("25 MB", BYTES, 25e6),
        ("2 us", SECONDS, 2e-6),
        ("2 µs", SECONDS, 2e-6),
        ("130 ns", SECONDS, 130e-9),
        ("1.5 h", SECONDS, 5400.0),
        ("989 TFLOP/s", FLOP_PER_S, 989e12),
        ("989 TFLOPS", FLOP_PER_S, 989e12),
        ("700 W", WATTS, 700.0),
        ("1.5 kW", WATTS, 1500.0),
        ("3.35 TB/s", BYTES_PER_S, 3.35e12),
        ("1e3 B", BYTES, 1000.0),
    ],
)
def test_parse_gives_si_floats(text, dimension, expected):
    assert parse(text, dimension) == pytest.approx(expected, rel=1e-12)


def test_energy_units_convert_watt_hours_to_joules():
    assert parse("1 kWh") == pytest.approx(3.6e6)


@pytest.mark.parametrize("text", ["400 furlongs", "12 GiB/fortnight", "fast", "", "GB"])
def test_unknown_or_missing_units_are_user_errors(text):
    with pytest.raises(ScenarioError):
        parse(text, BYTES, field="cluster.x")


def test_wrong_dimension_names_the_field():
    with pytest.raises(ScenarioError, match=r"^cluster\.nic\.rate: '80 GiB' is a bytes quantity, expected bytes/s"):
        parse("80 GiB", BYTES_PER_S, field="cluster.nic.rate")


def test_bare_numbers_are_ambiguous_where_a_unit_is_expected():
    with pytest.raises(ScenarioError, match="ambiguous"):
        parse(400, BYTES_PER_S)


def test_message_sizes_follow_nccl_tests_binary_suffixes():
    assert parse_message_size("8") == 8
    assert parse_message_size("128K") == 128 * 1024
    assert parse_message_size("8G") == 8 * 1024**3
    assert parse_message_size("1 MB") == 1e6


def test_fmt_picks_readable_prefixes():
    assert fmt(80 * 1024**3, BYTES) == "80 GiB"
    assert fmt(50e9, BYTES_PER_S) == "50 GB/s"
    assert fmt(2e-6, SECONDS) == "2 us"
    assert fmt(989.4e12, FLOP_PER_S, digits=4) == "989.4 TFLOP/s"


def test_money_counts_and_days_in_reports_never_use_exponent_notation():
    # issue 18: money and GPU-hours read '6.56e+05' in tables and figures
    for value in (4.2e-6, 0.0042, 0.2, 12.4, 999.4, 6.56e5, 1.09e6, 3.2e9, 7.5e12):
        for text in (units.fmt_usd(value), units.fmt_count(value), units.fmt_days(value * 86400)):
            assert "e+" not in text and "e-" not in text, text
    assert units.fmt_usd(6.56e5) == "$656k" and units.fmt_count(6.56e5) == "656k"
    assert units.fmt_usd(0.2) == "$0.20" and units.fmt_usd(0.0042) == "$0.0042"
    assert units.fmt_days(17.1 * 86400) == "17.1 days" and units.fmt_days(1234.4 * 86400) == "1,234 days"
