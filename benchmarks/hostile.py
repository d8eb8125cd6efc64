"""The hostile-input corpus of issue 14 over every subcommand: a table of classes x outcomes, and every failure.

    python benchmarks/hostile.py              # the whole corpus (a few minutes)
    python benchmarks/hostile.py --sample     # the quick sample CI runs
    python benchmarks/hostile.py --only run/  # cases whose id contains a text

Cases, outcomes and limits: tests/cli/hostile_corpus.py. Exit status 1 when any case fails.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from simcluster.core import script_entry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.cli import hostile_corpus as corpus  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = script_entry.Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", action="store_true", help="only the quick sample")
    parser.add_argument("--only", action="append", default=[], help="cases whose id contains this (repeatable)")
    parser.add_argument("--keep", type=Path, help="folder for the corpus files and the cases' outputs (kept)")
    parser.add_argument("--verbose", action="store_true", help="print every case's outcome")
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="simcluster-hostile-"))
    data = root / "data"
    corpus.materialise(data)
    selected = [c for c in corpus.cases(data) if (not args.sample or c.sample)
                and (not args.only or any(text in c.id for text in args.only))]
    started = time.perf_counter()
    results = corpus.run_corpus(data, root / "work", selected)
    print(corpus.table(results))
    print(f"{len(results)} cases in {time.perf_counter() - started:.0f} s (memory limit "
          f"{corpus.MEMORY_LIMIT_BYTES / 2**30:.1f} GiB, {corpus.CASE_TIMEOUT_S:.0f} s per case)")
    for r in results:
        if args.verbose or r.outcome in corpus.FAILURES:
            print(f"{r.outcome:>10}  {r.id}  [{r.code}, {r.seconds:.1f} s]  {r.detail}")
    return 1 if any(r.outcome in corpus.FAILURES for r in results) else 0


if __name__ == "__main__":
    sys.exit(script_entry.call(main, sys.argv[1:]))   # Ctrl-C: one line, exit 130
