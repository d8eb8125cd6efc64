"""Human unit strings <-> SI floats: the only module that knows unit spellings.

Inside simcluster every quantity is a plain SI float (s, bytes, bytes/s, FLOP, FLOP/s, W, J, USD) and the
name carries the unit (``link_bytes_per_s``). This module parses what users write ("400 Gb/s", "80 GiB",
"2 us", "989 TFLOP/s", "700 W") and formats values back for reports.

Conventions: decimal prefixes (k, M, G, T, P, E) are powers of 1000, binary prefixes (Ki, Mi, Gi, Ti, Pi) powers
of 1024; a lower-case ``b`` or ``bit`` is a bit (1/8 byte), an upper-case ``B`` or ``byte`` is a byte.
"""

from __future__ import annotations

import math
import re

from simcluster.core.errors import ScenarioError, shown

# Dimensions a parsed quantity can have.
BYTES = "bytes"
BYTES_PER_S = "bytes/s"
SECONDS = "s"
FLOP = "FLOP"
FLOP_PER_S = "FLOP/s"
WATTS = "W"
JOULES = "J"
DIMENSIONLESS = "1"

DECIMAL_PREFIXES = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
BINARY_PREFIXES = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}
SUBUNIT_PREFIXES = {"m": 1e-3, "u": 1e-6, "µ": 1e-6, "n": 1e-9, "p": 1e-12}

# base unit spelling -> (dimension, factor to SI)
_DATA_UNITS = {"B": 1.0, "byte": 1.0, "bytes": 1.0, "b": 0.125, "bit": 0.125, "bits": 0.125}
_TIME_UNITS = {"s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0, "hr": 3600.0, "d": 86400.0, "day": 86400.0,
               "days": 86400.0, "yr": 365.25 * 86400.0, "year": 365.25 * 86400.0, "years": 365.25 * 86400.0}
_ENERGY_UNITS = {"J": 1.0, "Wh": 3600.0}

_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$")


def _prefixed(unit: str, bases: dict[str, float], prefixes: dict[str, float]) -> float | None:
    """Factor of ``unit`` = prefix + base, or None when it is not of that family."""
    for base, base_factor in bases.items():
        if unit.endswith(base):
            prefix = unit[: len(unit) - len(base)]
            if prefix in prefixes:
                return prefixes[prefix] * base_factor
    return None


def _unit_factor(unit: str) -> tuple[str, float]:
    """Dimension and SI factor of a unit spelling such as 'GiB', 'Gb/s', 'us', 'TFLOP/s'."""
    all_prefixes = {**DECIMAL_PREFIXES, **BINARY_PREFIXES}
    if unit == "":
        return DIMENSIONLESS, 1.0
    if unit == "%":
        return DIMENSIONLESS, 0.01
    # rates: X/s, Xps (Gbps, GBps), FLOPS
    rate_base = None
    if unit.endswith("/s"):
        rate_base = unit[:-2]
    elif unit.endswith("ps") and unit[:-2] and unit[-3] in "bB":
        rate_base = unit[:-2]
    elif unit.endswith("FLOPS"):
        rate_base = unit[:-1]
    if rate_base is not None:
        if rate_base.endswith("FLOP"):
            factor = _prefixed(rate_base, {"FLOP": 1.0}, DECIMAL_PREFIXES)
            if factor is not None:
                return FLOP_PER_S, factor
        factor = _prefixed(rate_base, _DATA_UNITS, all_prefixes)
        if factor is not None:
            return BYTES_PER_S, factor
        raise ValueError(f"unknown rate unit {unit!r}")
    factor = _prefixed(unit, {"FLOP": 1.0, "FLOPs": 1.0}, DECIMAL_PREFIXES)
    if factor is not None:
        return FLOP, factor
    if unit in _TIME_UNITS:
        return SECONDS, _TIME_UNITS[unit]
    if len(unit) >= 2 and unit[0] in SUBUNIT_PREFIXES and unit[1:] == "s":
        return SECONDS, SUBUNIT_PREFIXES[unit[0]]
    factor = _prefixed(unit, _DATA_UNITS, all_prefixes)
    if factor is not None:
        return BYTES, factor
    factor = _prefixed(unit, _ENERGY_UNITS, DECIMAL_PREFIXES)
    if factor is not None:
        return JOULES, factor
    factor = _prefixed(unit, {"W": 1.0}, DECIMAL_PREFIXES)
    if factor is not None:
        return WATTS, factor
    raise ValueError(f"unknown unit {unit!r}")


def finite_float(value: object) -> float | None:
    """``value`` as a finite float when it is a number (an int or a float, not a bool), else None. An integer past a
    float's range (a 400-digit one read from YAML or JSON) is None: ``math.isfinite`` and ``float`` raised
    OverflowError on it, a traceback (round 31)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def parse(text: str | float | int, dimension: str | None = None, field: str = "value") -> float:
    """Parse a quantity such as '400 Gb/s' into an SI float; check its dimension when one is given.

    Bare numbers are accepted only when ``dimension`` is None or dimensionless: elsewhere the unit must be
    written (a bare 400 could be Gb/s or GB/s). Raises ScenarioError naming ``field`` on any problem.
    """
    if isinstance(text, bool):
        raise ScenarioError(field, f"expected a quantity with a unit, got {text!r}")
    if isinstance(text, int | float):
        if dimension not in (None, DIMENSIONLESS):
            raise ScenarioError(field, f"a bare number {text!r} is ambiguous: write the unit ({dimension})")
        number = finite_float(text)
        if number is None:
            raise ScenarioError(field, f"{shown(text)} is not a finite number")
        return number
    match = _NUMBER.match(str(text))
    if not match:
        raise ScenarioError(field, f"cannot read a quantity from {text!r} (expected e.g. '400 Gb/s')")
    number, unit = match.groups()
    try:
        found, factor = _unit_factor(unit)
    except ValueError as err:
        raise ScenarioError(field, f"{err} in {text!r}") from None
    if dimension is not None and found != dimension:
        if found == DIMENSIONLESS:  # '400' written as a string: the same ambiguity as a bare 400
            raise ScenarioError(field, f"a bare number {text!r} is ambiguous: write the unit ({dimension})")
        raise ScenarioError(field, f"{text!r} is a {found} quantity, expected {dimension}")
    value = float(number) * factor
    if not math.isfinite(value):
        raise ScenarioError(field, f"{text!r} is not a finite quantity")
    return value


# What a physical quantity may be, besides finite (``check_sign``).
ANY, POSITIVE, NON_NEGATIVE = "any", "positive", "non-negative"


# Plausible ranges of the physical quantities of devices and fabrics (rates, peaks, capacities, latencies, powers),
# checked with their sign (``check_sign``): far wider than any hardware built, narrow enough that a typo (a unit
# prefix too many, 1e-300 for 1e-3) cannot send a simulation to 1e300 seconds or overflow its sums.
PLAUSIBLE = {
    BYTES_PER_S: (1e6, 1e15, "1 MB/s (8 Mb/s, below any datacenter link) to 1 PB/s (over 100 times the fastest "
                  "HBM, 7.9 TB/s on GB200 and GB300)"),
    FLOP_PER_S: (1e9, 1e18, "1 GFLOP/s to 1 EFLOP/s per GPU (B200: 2.25 PFLOP/s dense bf16)"),
    BYTES: (1e6, 1e15, "1 MB to 1 PB per device (B300: 288 GB of HBM)"),
    SECONDS: (0.0, 1.0, "0 to 1 s for a latency (a transatlantic round trip takes 0.07 s)"),
    WATTS: (0.0, 1e6, "0 to 1 MW (a GPU board draws at most 1.4 kW, GB300; a node's overhead a few kW)"),
}


# Durations of a whole run (checkpoint intervals, restart and repair times, horizons) are not latencies: from 0 to
# a century (no training run lasts longer; beyond, goodput arithmetic over the run only overflows)
PLAUSIBLE_DURATION = (0.0, 100 * 365.25 * 86400.0, "0 to 100 years for a duration of a run")
# A GPU board's full-load power: data-centre boards draw 70 W (NVIDIA T4, the smallest) to 1.4 kW (GB300); at
# 1e-300 W a run's energy fell below the Landauer bound (k_B T ln 2 a bit erased), which no hardware can do.
PLAUSIBLE_BOARD_POWER = (1.0, 1e6, "1 W to 1 MW (a data-centre GPU board draws 70 W, T4, to 1.4 kW, GB300)")


def check_sign(value: float, sign: str, field: str, text=None, dimension: str | None = None,
               bounds: tuple[float, float, str] | None = None) -> float:
    """``value`` when it is finite and of ``sign`` (POSITIVE: > 0, for rates, peaks and capacities;
    NON_NEGATIVE: >= 0, for latencies and powers) and, for a signed quantity of a ``dimension`` in ``PLAUSIBLE``,
    within its range; else a ScenarioError naming ``field`` and the value as written."""
    shown = repr(value if text is None else text)
    if not math.isfinite(value):
        raise ScenarioError(field, f"must be finite, got {shown}")
    if sign == POSITIVE and value <= 0:
        raise ScenarioError(field, f"must be > 0, got {shown}")
    if sign == NON_NEGATIVE and value < 0:
        raise ScenarioError(field, f"must be >= 0, got {shown}")
    if sign != ANY and (bounds is not None or dimension in PLAUSIBLE):
        low, high, why = bounds or PLAUSIBLE[dimension]
        if not low <= value <= high:
            raise ScenarioError(field, f"{shown} is outside the plausible range, {why}")
    return value


def parse_checked(text: str | float | int, dimension: str, sign: str, field: str = "value") -> float:
    """``parse`` then ``check_sign``: a quantity such as a link rate (POSITIVE) or a latency (NON_NEGATIVE)."""
    return check_sign(parse(text, dimension, field=field), sign, field, text, dimension)


_FORMAT_PREFIXES = [(1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, "")]
_BINARY_FORMAT = [(2.0**50, "Pi"), (2.0**40, "Ti"), (2.0**30, "Gi"), (2.0**20, "Mi"), (2.0**10, "Ki"), (1.0, "")]
_TIME_FORMAT = [(86400.0, "d"), (3600.0, "h"), (60.0, "min"), (1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")]


def _scaled(value: float, table: list[tuple[float, str]]) -> tuple[float, str]:
    magnitude = abs(value)
    for factor, prefix in table:
        if magnitude >= factor:
            return value / factor, prefix
    factor, prefix = table[-1]
    return value / factor, prefix


def fmt(value: float, dimension: str, digits: int = 3, binary: bool | None = None) -> str:
    """Format an SI float for a report: fmt(85899345920, 'bytes') -> '80 GiB'.

    Byte counts default to binary prefixes, rates to decimal ones (as vendors quote links).
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if dimension == SECONDS:
        scaled, unit = _scaled(value, _TIME_FORMAT)
        return f"{scaled:.{digits}g} {unit}"
    if dimension == BYTES:
        use_binary = True if binary is None else binary
        scaled, prefix = _scaled(value, _BINARY_FORMAT if use_binary else _FORMAT_PREFIXES)
        return f"{scaled:.{digits}g} {prefix}B"
    suffix = {BYTES_PER_S: "B/s", FLOP: "FLOP", FLOP_PER_S: "FLOP/s", WATTS: "W", JOULES: "J",
              DIMENSIONLESS: ""}[dimension]
    scaled, prefix = _scaled(value, _FORMAT_PREFIXES)
    return f"{scaled:.{digits}g} {prefix}{suffix}".rstrip()


def parse_message_size(text: str | int) -> float:
    """Sizes as nccl-tests writes them on its command line: '8', '128K', '8G' (binary prefixes), or '80 GiB'."""
    raw = str(text).strip()
    if raw and raw[-1] in "KMGT" and raw[:-1].replace(".", "", 1).isdigit():
        return float(raw[:-1]) * BINARY_PREFIXES[raw[-1] + "i"]
    if raw.replace(".", "", 1).isdigit():
        return float(raw)
    return parse(raw, BYTES, field="size")


def _quantity(dimension: str, sign: str = ANY, bounds: tuple[float, float, str] | None = None):
    """A pydantic field type that accepts a unit string of ``dimension`` and stores the SI float (finite, and of
    ``sign``: ANY, POSITIVE or NON_NEGATIVE; within ``bounds``, else the dimension's ``PLAUSIBLE`` range)."""
    from typing import Annotated

    from pydantic import BeforeValidator, PlainSerializer

    def validate(value):
        try:
            return check_sign(parse(value, dimension), sign, "", value, dimension, bounds)
        except ScenarioError as err:
            raise ValueError(err.message) from None

    return Annotated[float, BeforeValidator(validate), PlainSerializer(lambda v: exact_text(v, dimension))]


def exact_text(value: float, dimension: str) -> str:
    """The shortest unit string that parses back to exactly ``value`` (for dumps that are read again). A value no
    input can hold (an infinite size a framework default stands for, e.g. one gradient bucket per chunk) is written
    as it is ('inf B'): a rebuilt dump leaves such a default unset, and a file holding it is refused on reading."""
    if not math.isfinite(value):
        return f"{value} {fmt(1.0, dimension, 3).split(' ', 1)[-1]}".rstrip()
    for digits in range(3, 18):  # 3 significant digits at least: "80 GB", not "8e+01 GB"
        for binary in (False, True) if dimension == BYTES else (None,):
            text = fmt(value, dimension, digits, binary=binary)
            if parse(text, dimension) == value:
                return text
    return fmt(value, dimension, 17)


# Field types for pydantic models (spec.config, spec.hardware): written as strings, stored as SI floats, always
# finite. The Positive/NonNegative variants are for quantities that cannot be zero (rates, peaks, capacities: a
# zero divides) or negative (latencies, powers: a negative latency runs time backwards).
Bytes = _quantity(BYTES)
Seconds = _quantity(SECONDS)
PositiveBytes = _quantity(BYTES, POSITIVE)
PositiveBytesPerS = _quantity(BYTES_PER_S, POSITIVE)
PositiveFlopPerS = _quantity(FLOP_PER_S, POSITIVE)
BoardWatts = _quantity(WATTS, POSITIVE, PLAUSIBLE_BOARD_POWER)
NonNegativeSeconds = _quantity(SECONDS, NON_NEGATIVE)
NonNegativeDuration = _quantity(SECONDS, NON_NEGATIVE, PLAUSIBLE_DURATION)  # of a run, not a latency
NonNegativeWatts = _quantity(WATTS, NON_NEGATIVE)


def _count():
    from typing import Annotated

    from pydantic import Field, Strict

    return Annotated[int, Strict(), Field(gt=0)]


# Counts (GPUs, layers, degrees of parallelism) are strict integers > 0: YAML's `tp: true` or `dp: 4.0` is refused,
# not read as 1 or 4.
Count = _count()


def _number():
    from typing import Annotated

    from pydantic import BeforeValidator, Field, Strict

    def not_bool(value):
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        return value

    return (Annotated[float, BeforeValidator(not_bool), Field(allow_inf_nan=False)],
            Annotated[int, Strict()])


# Plain numbers (prices, ratios) are finite and not booleans: YAML's `.inf`, `.nan` and `true` are refused (pydantic
# would read true as 1.0); whole numbers (a generation, an index) are strict integers.
FiniteNumber, WholeNumber = _number()
_MONEY_FORMAT = [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")]


def fmt_count(value: float, digits: int = 3) -> str:
    """A large count for a report without exponent notation: 656,000 -> '656k', 1.234e6 -> '1.23M', 12.5 -> '12.5'."""
    if value is None or not math.isfinite(value):
        return "n/a"
    for factor, suffix in _MONEY_FORMAT:
        if abs(value) >= factor * (1 - 0.5 * 10 ** (1 - digits)):
            scaled = value / factor
            decimals = max(0, digits - 1 - int(math.floor(math.log10(max(abs(scaled), 1.0)))))
            return f"{scaled:.{decimals}f}".rstrip("0").rstrip(".") + suffix if decimals else f"{scaled:.0f}{suffix}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return _significant(value, digits)


# Below this a figure of a report is the rounding noise of a difference (an exposure of 4e-15 s).
NOISE = 1e-9


def fmt_plain(value: float, digits: int = 4) -> str:
    """A number of a report table in positional notation, whatever its size: 4,056,000 (separated thousands from
    10,000 up), 3.161, 0.09666; rounding noise below ``NOISE`` reads 0. Never '4.056e+06' nor '4.21e-15'."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if abs(value) < NOISE:
        return "0"
    if abs(value) >= 10 ** digits:
        return f"{value:,.0f}"
    return _significant(value, digits)


def _significant(value: float, digits: int) -> str:
    """``value`` to ``digits`` significant digits in positional notation: 0.0000042 (not 4.2e-06), 12.5."""
    if not value:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def fmt_usd(value: float, digits: int = 3) -> str:
    """Money for a report: '$656k', '$1.23M', '$12.40', '$0.20', '$0.0042' (never '6.56e+05' nor '4.2e-06')."""
    if value is None or not math.isfinite(value):
        return "n/a"
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value >= 1000 * (1 - 0.5 * 10 ** (1 - digits)):
        return f"{sign}${fmt_count(value, digits)}"
    if value >= 0.01:
        return f"{sign}${value:,.2f}"
    if not value:
        return "$0"
    decimals = digits - 2 - math.floor(math.log10(value))  # two significant digits of a fraction of a cent
    return f"{sign}${value:.{decimals}f}"


DAY_S = 86400.0


def fmt_days(seconds: float, digits: int = 3) -> str:
    """A long duration in days for a report, without exponent notation: '17.1 days', '1,234 days'."""
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    days = seconds / DAY_S
    return f"{days:,.0f} days" if abs(days) >= 1000 else f"{_significant(days, digits)} days"


def fmt_energy(joules: float, digits: int = 3) -> str:
    """Energy for a report in watt-hours with an SI prefix: 2.5e12 J -> '694 MWh', 9e12 J -> '2.5 GWh'."""
    if joules is None or not math.isfinite(joules):
        return "n/a"
    scaled, prefix = _scaled(joules / 3600.0, _FORMAT_PREFIXES)
    return f"{scaled:.{digits}g} {prefix}Wh"
