"""The glossary of the terms simcluster reports (``data/glossary.yaml``): looked up by ``simcluster explain`` and
rendered as docs/glossary.md (``markdown``; a test holds the page equal to it)."""

from __future__ import annotations

from simcluster.core import catalog
from simcluster.core.errors import ScenarioError, did_you_mean, quoted


def terms() -> dict[str, dict]:
    return catalog.load("glossary")["terms"]


def _key(text: str) -> str:
    """Case, '-', '_' and spacing ignored, and the ``summary.`` an entry's ``where`` puts before a key."""
    return " ".join(text.lower().replace("_", " ").replace("-", " ").split()).removeprefix("summary.")


def lookup(term: str) -> tuple[str, dict]:
    """(name, entry) of ``term``: its name, an alias or the start of exactly one of them, case, '-', '_' and spacing
    ignored; a ScenarioError naming the closest terms otherwise."""
    table = terms()
    index = {}
    for name, entry in table.items():
        for alias in (name, *entry.get("aliases", ())):
            index.setdefault(_key(alias), name)
    name = index.get(_key(term))
    if name is None:  # the start of one term only, as a table's row names it ("busiest link", "exposed comm")
        starting = {index[key] for key in index if key.startswith(_key(term))}
        name = starting.pop() if len(starting) == 1 and _key(term) else None
    if name is None:
        # the hint first: the list of terms is long and the error line is cut at MAX_ERROR_CHARS
        raise ScenarioError("TERM", f"{quoted(term)} is not in the glossary ({did_you_mean(term, index, _key)}"
                                    f"terms: {', '.join(table)})")
    return name, table[name]


def entry_text(name: str, entry: dict) -> str:
    """One entry as plain text (what ``explain`` prints)."""
    lines = [f"{name}: {entry['text']}"]
    if entry.get("where"):
        lines.append(f"  where: {entry['where']}")
    if entry.get("source"):
        lines.append(f"  source: {entry['source']}")
    return "\n".join(lines)


def markdown() -> str:
    """docs/glossary.md: every term, in the file's order."""
    out = ["# Glossary", "",
           "Generated from `simcluster/data/glossary.yaml` (`simcluster explain TERM` prints one entry; "
           "`python -m simcluster.core.glossary > docs/glossary.md` regenerates this page).", ""]
    for name, entry in terms().items():
        out.append(f"**{name}**" + (f" (`{entry['where']}`)" if entry.get("where") else ""))
        out.append(f": {entry['text']}" + (f" Source: {entry['source']}." if entry.get("source") else ""))
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown(), end="")
