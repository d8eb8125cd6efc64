"""The same model on two GPUs: published against simulated per-GPU throughput ratios (docs/calibration/round-19.md,
"Round 19: Blackwell GPU against GPU").

    PYTHONPATH=. python scripts/gpu_pairs.py VALIDATE.json HELD_OUT.json [--only nemo2511] [--base gb200]

The JSON files are ``simcluster validate [--held-out] --json`` outputs; each row's published and simulated TFLOP/s
per GPU are read from them (the same FLOP convention on both sides, so their ratio is a per-GPU throughput ratio
whatever the layout). Rows are grouped by model and FP8 recipe (the scenario name less its GPU count and GPU); each
GPU's row is divided by the group's ``--base`` GPU row. Beside each ratio, the settings in which the two scenarios
differ (layout, batch, offload, graphs, NVLink domain, NIC): a ratio error is a per-GPU figure only where nothing
else differs. A diagnostic: nothing is fitted or written.
"""

from __future__ import annotations

import math
import re
import sys

from accuracy_tables import InputError, load_cases

from simcluster.core import script_entry
from simcluster.spec import config

# scenario settings compared between the two rows of a pair: (section, key)
SETTINGS = (("parallelism", "tp"), ("parallelism", "pp"), ("parallelism", "cp"), ("parallelism", "virtual_stages"),
            ("parallelism", "ep"), ("parallelism", "dp"), ("training", "micro_batch_size"),
            ("training", "global_batch_size"), ("training", "fp8_recipe"), ("training", "activation_offload_layers"),
            ("training", "moe_cuda_graphs"), ("training", "recompute_modules"), ("cluster", "gpus_per_node"),
            ("cluster", "nic"))
_NAME = re.compile(r"^(?P<family>.+?)-(?P<gpus>\d+)-(?P<gpu>[a-z0-9]+)-(?P<recipe>[a-z0-9]+)$")


def rows(paths: list[str], only: str) -> dict[str, dict]:
    """{scenario: validate row} from the JSON files (``accuracy_tables.load_cases``), the names containing ``only``;
    each row's published and simulated TFLOP/s must be positive numbers (InputError, one line, otherwise)."""
    out = {}
    for path in paths:
        for index, row in enumerate(load_cases(path)):
            if only not in row["scenario"]:
                continue
            for field in ("published_tflops", "simulated_tflops"):
                value = row.get(field)
                if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                        or value <= 0:
                    raise InputError(f"{path}: cases[{index}].{field}: missing or not a positive number")
            out[row["scenario"]] = row
    return out


def setting(scenario, section: str, key: str):
    value = getattr(getattr(scenario, section), key, None)
    return getattr(value, "name", value)  # a NIC by its name


def differences(a: str, b: str) -> str:
    """The SETTINGS in which scenarios ``a`` and ``b`` differ, as 'key a/b'."""
    sa, sb = config.load(a), config.load(b)
    diff = [f"{key} {setting(sa, sec, key)}/{setting(sb, sec, key)}" for sec, key in SETTINGS
            if setting(sa, sec, key) != setting(sb, sec, key)]
    return ", ".join(diff) or "none"


def pairs(table: dict[str, dict], base: str) -> list[tuple[str, str, float, float, str]]:
    """(row, base row, published ratio, simulated ratio, differences) for every row with a ``base``-GPU twin of
    the same model and recipe (precision suffix: fp8, mxfp8, bf16)."""
    groups: dict[tuple[str, str], dict[str, str]] = {}
    for name in table:
        m = _NAME.match(name)
        if m:
            groups.setdefault((m["family"], m["recipe"]), {})[m["gpu"]] = name
    out = []
    for _, by_gpu in sorted(groups.items()):
        if base not in by_gpu:
            continue
        ref = table[by_gpu[base]]
        for gpu, name in sorted(by_gpu.items()):
            if gpu == base:
                continue
            row = table[name]
            out.append((name, by_gpu[base], row["published_tflops"] / ref["published_tflops"],
                        row["simulated_tflops"] / ref["simulated_tflops"], differences(name, by_gpu[base])))
    return out


def main(argv: list[str]) -> int:
    parser = script_entry.Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="+", help="'simcluster validate [--held-out] --json' outputs")
    parser.add_argument("--only", default="nemo2511",
                        help="keep the rows whose scenario name contains this (default: nemo2511)")
    parser.add_argument("--base", default="gb200",
                        help="the GPU (as in the scenario names) each ratio is taken over (default: gb200)")
    args = parser.parse_args(argv)
    try:
        table = rows(args.json, args.only)
    except InputError as exc:
        print(f"gpu_pairs: {exc}", file=sys.stderr)
        return 2
    print(f"{'row':44s} {'over':8s} published simulated sim/pub  differs (row/base)")
    for name, _base, pub, sim, diff in pairs(table, args.base):
        print(f"{name:44s} {args.base:8s} {pub:9.3f} {sim:9.3f} {sim / pub - 1:+7.1%}  {diff}")
    return 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
