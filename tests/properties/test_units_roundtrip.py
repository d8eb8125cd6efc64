"""fmt then parse returns the value (to the printed precision) for every dimension."""

from hypothesis import given
from hypothesis import strategies as st

from simcluster.core.units import BYTES, BYTES_PER_S, FLOP_PER_S, SECONDS, WATTS, fmt, parse

magnitudes = st.floats(min_value=1e-9, max_value=1e18, allow_nan=False, allow_infinity=False)


@given(magnitudes, st.sampled_from([BYTES, BYTES_PER_S, FLOP_PER_S, WATTS]))
def test_fmt_parse_roundtrip_within_printed_precision(value, dimension):
    text = fmt(value, dimension, digits=12)
    assert abs(parse(text, dimension) - value) <= 1e-9 * value


@given(st.floats(min_value=1e-9, max_value=1e6))
def test_time_roundtrip(value):
    assert abs(parse(fmt(value, SECONDS, digits=12), SECONDS) - value) <= 1e-9 * value


@given(st.integers(min_value=0, max_value=2**50), st.sampled_from(["B", "KiB", "MiB", "GiB", "KB", "MB", "GB"]))
def test_binary_and_decimal_prefixes_differ_by_their_base(count, unit):
    base = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "KB": 1e3, "MB": 1e6, "GB": 1e9}[unit]
    assert parse(f"{count} {unit}", BYTES) == count * base


@given(st.integers(min_value=1, max_value=10**6))
def test_bits_are_an_eighth_of_bytes(count):
    assert parse(f"{count} Gb/s", BYTES_PER_S) * 8 == parse(f"{count} GB/s", BYTES_PER_S)
