"""The example outputs and figures that README.md and docs/tutorial.md quote, produced by the code they describe.

Each quoted block sits between ``<!-- docs-numbers: NAME -->`` and ``<!-- /docs-numbers -->`` in its page and is made
by the function of ``BLOCKS`` named NAME, which runs the command the page shows (in process, as a user would):

    python scripts/docs_numbers.py            # check: exit 1 and name each block whose numbers drifted
    python scripts/docs_numbers.py --write    # rewrite the blocks from a fresh run
    python scripts/docs_numbers.py --write tutorial-moe   # one block

A block drifts when its words change or one of its numbers moves by more than 1% or one unit of its last printed
digit (the page rounds); tests/unit/test_docs_numbers.py runs the check. Each command runs once per process.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import json
import re
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- docs-numbers: {name} -->"
END = "<!-- /docs-numbers -->"
TOLERANCE = 0.01  # relative; the page rounds to 3-4 digits, and the issue found a drift of 20%
WRAP = 116        # the tutorial wraps the verdict paragraph here


@functools.cache
def _run(*args: str) -> tuple[str, Path]:
    """``simcluster ARGS --out TMP`` in process: (what it printed, its output folder)."""
    from simcluster.cli import main

    root = Path(tempfile.mkdtemp(prefix="docs-numbers-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)  # read while the process lives (cached), then gone
    out_dir = root / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        code = main([*args, "--out", str(out_dir)])
    if code != 0:
        raise RuntimeError(f"simcluster {' '.join(args)} exited with {code}")
    return stdout.getvalue(), out_dir


def _compare(*args: str) -> tuple[str, dict]:
    printed, out_dir = _run("compare", *args)
    return printed, json.loads((out_dir / "compare.json").read_text())


def _printed_block(printed: str) -> str:
    """What a command printed, less its last line ('wrote ... to DIR/', which names a temporary folder)."""
    lines = [line.rstrip() for line in printed.rstrip("\n").splitlines()]
    while lines and not lines[-1].startswith("wrote"):
        lines.pop()
    return "\n".join(lines[:-1])


# --- README: "Which fabric should we buy?" -----------------------------------------------------------------------

README_FABRIC = ("llama3-70b-1024-h100-roce", "--topology", "leaf-spine:oversubscription=2,protocol=ethernet",
                 "--topology", "rail-fat-tree")
TIER_WORDS = {"nvlink": "NVLink", "pcie": "PCIe links", "nic": "NICs", "leaf": "leaf uplinks",
              "spine": "spine links", "core": "core links"}


def _busiest_tier(row: dict) -> str:
    by_tier = {tier: row[f"exposed_comm_{tier}_s"] for tier in TIER_WORDS if f"exposed_comm_{tier}_s" in row}
    return TIER_WORDS[max(by_tier, key=by_tier.get)]


def readme_fabric() -> str:
    from simcluster.core import units

    _, report = _compare(*README_FABRIC)
    ethernet, rail = report["runs"]
    faster, slower = (rail, ethernet) if rail["time_to_target_s"] <= ethernet["time_to_target_s"] else (ethernet, rail)
    name = {id(rail): "the rail fabric", id(ethernet): "the leaf-spine"}
    saving = 1 - faster["cost_usd"] / slower["cost_usd"]
    text = (f"On Llama 3 70B, 1,024 H100: the 2:1 RoCE leaf-spine costs {units.fmt_usd(ethernet['fabric_capex_usd'])}"
            f" of fabric against {units.fmt_usd(rail['fabric_capex_usd'])} for the rail-optimised InfiniBand "
            f"fat-tree, but waits {units.fmt(ethernet['exposed_comm_network_s'], units.SECONDS)} per "
            f"{units.fmt(ethernet['step_time_s'], units.SECONDS)} step on its {_busiest_tier(ethernet)} (the rail "
            f"fabric: {units.fmt(rail['exposed_comm_network_s'], units.SECONDS)} on its {_busiest_tier(rail)}), so "
            f"{name[id(faster)]} reaches the target "
            f"{1 - faster['time_to_target_s'] / slower['time_to_target_s']:.1%} sooner and "
            f"{abs(saving):.1%} {'cheaper' if saving >= 0 else 'dearer'} all in.")
    return textwrap.fill(text, 117, break_on_hyphens=False)


# --- docs/tutorial.md ---------------------------------------------------------------------------------------------

TUTORIAL_COMPARE = ("gpt3-175b-1024-h100", "--topology", "rail-fat-tree", "--topology", "leaf-spine:oversubscription=4")


def tutorial_compare() -> str:
    printed, _ = _compare(*TUTORIAL_COMPARE)
    block = _printed_block(printed)
    table, verdict = block[:block.index("Verdict")].rstrip(), block[block.index("Verdict"):]
    return ("```\n" + table + "\n```\n\nand a verdict (one paragraph; here wrapped):\n\n```\n"
            + textwrap.fill(verdict, WRAP) + "\n```")


MOE_SYSTEMS = ("h100", "b200", "gb200-nvl72")
MOE_HEADER = "| {model}, 256 GPUs | H100 + IB | B200 + IB | GB200 NVL72 |\n|---|---|---|---|"


def _moe_table(model: str, scenario: str, rows: list[tuple[str, Callable[[dict], str]]]) -> str:
    _, report = _compare(*(f"{scenario}-{system}" for system in MOE_SYSTEMS))
    lines = [MOE_HEADER.format(model=model)]
    lines += [f"| {label} | " + " | ".join(cell(run) for run in report["runs"]) + " |" for label, cell in rows]
    return "\n".join(lines)


def _s(value: float) -> str:
    return f"{value:.2f} s"


def _ep(run: dict) -> str:
    ep_s = run["summary"]["exposed_comm_by_parallelism_s"]["ep"]
    return f"{_s(ep_s)} ({ep_s / run['step_time_s']:.0%})"


def tutorial_moe() -> str:
    from simcluster.core import units

    cost = ("cost to the target loss", lambda r: units.fmt_usd(r["cost_usd"]))
    deepseek = _moe_table("DeepSeek-V3", "deepseek-v3-256", [
        ("step time", lambda r: _s(r["step_time_s"])), ("compute", lambda r: _s(r["compute_s"])),
        ("exposed communication", lambda r: _s(r["exposed_comm_s"])),
        ("of which expert parallel (all-to-alls)", _ep), ("pipeline bubble", lambda r: _s(r["pipeline_bubble_s"])),
        ("MFU", lambda r: f"{r['mfu']:.1%}"), cost])
    mixtral = _moe_table("Mixtral 8x22B", "mixtral-8x22b-256", [
        ("step time", lambda r: _s(r["step_time_s"])), ("compute", lambda r: _s(r["compute_s"])),
        ("of which expert parallel: all-to-alls and expert-TP collectives (exposed)", _ep),
        ("MFU", lambda r: f"{r['mfu']:.1%}"), cost])
    return deepseek + "\n\n" + mixtral


TUTORIAL_SWEEP = ("gpt3-175b-1024-h100", "--gpus", "64,128,...,8192", "--topology", "rail-fat-tree", "--topology",
                  "leaf-spine:oversubscription=4")
SWEEP_ROWS_SHOWN = ("64", "1,024", "8,192")  # the tutorial shortens the table to these counts


def tutorial_sweep() -> str:
    printed, _ = _run("sweep", *TUTORIAL_SWEEP)
    lines = _printed_block(printed).splitlines()
    row = re.compile(r"\s*\d+\. \S+\s+([\d,]+)\s")  # a series' row; the legend above has no GPU count
    table = [line for line in lines if not row.match(line) or row.match(line).group(1) in SWEEP_ROWS_SHOWN]
    return "```\n" + "\n".join(line for line in table if not line.startswith("16 runs")) + "\n```"


BLOCKS: dict[str, tuple[str, Callable[[], str]]] = {
    "readme-fabric": ("README.md", readme_fabric),
    "tutorial-compare": ("docs/tutorial.md", tutorial_compare),
    "tutorial-moe": ("docs/tutorial.md", tutorial_moe),
    "tutorial-sweep": ("docs/tutorial.md", tutorial_sweep),
}


# --- checking and writing -----------------------------------------------------------------------------------------

def quoted(name: str) -> str:
    """The block ``name`` as its page holds it."""
    page = (ROOT / BLOCKS[name][0]).read_text()
    begin = BEGIN.format(name=name)
    start = page.index(begin) + len(begin)
    return page[start:page.index(END, start)].strip("\n")


NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
DECORATION = re.compile(r"[\s━┃┏┓┗┛┡┩┳┻╇│└┘┌┐─┴┬├┤┼]+")


def _skeleton(text: str) -> str:
    """The words of a block: numbers as '#', table rules and runs of spaces (they follow the numbers' widths) as one
    space."""
    return DECORATION.sub(" ", NUMBER.sub("#", text)).strip()


def _value(text: str) -> float:
    return float(text.replace(",", ""))


def drift(page: str, fresh: str) -> list[str]:
    """How the page's block differs from a fresh one: [] when the words are the same and every number is within
    TOLERANCE or one unit of the page's last digit."""
    if _skeleton(page) != _skeleton(fresh):
        return [f"the words changed:\n  page:  {_skeleton(page)[:300]}\n  fresh: {_skeleton(fresh)[:300]}"]
    problems = []
    for old, new in zip(NUMBER.findall(page), NUMBER.findall(fresh), strict=True):
        unit = 10.0 ** -len(old.split(".")[1]) if "." in old else 1.0
        if abs(_value(old) - _value(new)) > max(TOLERANCE * abs(_value(new)), unit):
            problems.append(f"{old} is now {new}")
    return problems


def write(name: str) -> None:
    path = ROOT / BLOCKS[name][0]
    page, old = path.read_text(), quoted(name)
    begin = BEGIN.format(name=name)
    path.write_text(page.replace(f"{begin}\n{old}\n{END}", f"{begin}\n{BLOCKS[name][1]()}\n{END}"))


def main(argv: list[str]) -> int:
    names = [a for a in argv if not a.startswith("--")] or list(BLOCKS)
    unknown = [name for name in names if name not in BLOCKS]
    if unknown:
        from simcluster.core.errors import ScenarioError

        raise ScenarioError(unknown[0], f"no such block (blocks: {', '.join(BLOCKS)})")
    if "--write" in argv:
        for name in names:
            write(name)
            print(f"wrote {name} into {BLOCKS[name][0]}")
        return 0
    failed = 0
    for name in names:
        problems = drift(quoted(name), BLOCKS[name][1]())
        print(f"{name} ({BLOCKS[name][0]}): " + ("ok" if not problems else "drifted: " + "; ".join(problems)))
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from simcluster.core.script_entry import run

    sys.exit(run(main, sys.argv[1:], __doc__, ["--write"]))
