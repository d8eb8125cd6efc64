"""Users' files read safely: size checked before reading, text not binary, YAML with bounded alias expansion,
JSON with bounded nesting. Every problem is one ScenarioError naming the file (docs/robustness.md).

Why each limit:
- size: PyYAML needs about 100 bytes of memory and a few microseconds per byte of YAML (a 6 MB fabric file:
  ~0.5 GB, tens of seconds), so a file is refused by its size before a byte is parsed;
- text: a binary file would otherwise fail deep inside the decoder;
- aliases: a YAML anchor may be reused (``*name``), but the document with every alias expanded must stay under
  ``MAX_YAML_NODES`` nodes and ``MAX_NESTING`` levels: an "alias bomb" of a few hundred bytes expands to 10^9
  nodes, and validating or printing it would never end; a recursive alias (``&a [*a]``) is refused too;
- duplicated keys: YAML forbids a key twice in one mapping, and PyYAML would keep the last value unsaid;
- integers: at most ``MAX_INT_CHARS`` characters (Python prints no integer of more than 4,300 digits);
- JSON nesting: Python's decoder recurses once per level and raises RecursionError on deep input.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import yaml

from simcluster.core.errors import ScenarioError

KIB = 1024
MIB = 1024 * KIB
# Scenario files are a few kB; 1 MiB leaves room for inline specs and comments.
MAX_SCENARIO_BYTES = 1 * MIB
# Fabric files list every node and link: 8 MiB holds ~10^5 links (parsing takes about a minute, half a GB).
MAX_FABRIC_BYTES = 8 * MIB
# summary.json of a run is a few kB; shards and reports of a sweep stay far below this too.
MAX_JSON_BYTES = 16 * MIB
# Nodes (keys, values, list items) of a YAML document with its aliases expanded; a 1 MiB scenario has < 10^5.
MAX_YAML_NODES = 10**6
# Nesting levels of a YAML or JSON document: scenarios and fabrics need fewer than ten.
MAX_NESTING = 100
# Characters of a YAML integer (digits, sign, underscores, a 0x prefix): the largest count any field takes has 8
# digits. A decimal integer past Python's 4,300-digit conversion limit raised ValueError while reading, and a hex one
# (0x and 5,000 digits: 20,000 bits) was read but raised it wherever an error message printed it (round 31).
MAX_INT_CHARS = 1000

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when installed: several times faster


def input_size(path: Path, source: str) -> int | None:
    """The size of ``path`` when it is a regular file (a link to one too), None when it is a pipe (``<(zcat
    t.json.gz)``, ``/dev/stdin`` under ``|``, a FIFO), whose size is known only once read; anything else is refused by
    its mode (round 33): a device has no size to check (``/dev/zero`` reads without end: a replay of it ran out of
    memory), a folder cannot be read. OSError is the caller's."""
    info = path.stat()
    if stat.S_ISREG(info.st_mode):
        return info.st_size
    if stat.S_ISFIFO(info.st_mode):
        return None
    raise ScenarioError(source, "is not a regular file or a pipe (a folder or a device?)")


def read_at_most(path: Path, limit: int, source: str, pipe: bool = False) -> bytes:
    """At most ``limit`` bytes of ``path``. A ``pipe`` (``input_size`` None) is opened without blocking and then read
    blocking: one with a writer is read to its end or ``limit``, and a FIFO without a writer reads nothing at once and
    is refused, where a blocking open waited for a writer forever (round 33; its review let pipes with a writer
    through again, which round 33 refused with the FIFOs). OSError is the caller's."""
    fd = os.open(path, os.O_RDONLY | (os.O_NONBLOCK if pipe else 0))
    with os.fdopen(fd, "rb") as handle:
        if pipe:
            os.set_blocking(fd, True)
        data = handle.read(limit)
    if pipe and not data:
        raise ScenarioError(source, "is a pipe with nothing written to it (a FIFO without a writer?)")
    return data


def read_text(path: Path, max_bytes: int, what: str = "file") -> str:
    """The UTF-8 text of ``path``, refused when larger than ``max_bytes``, binary, neither a regular file nor a pipe
    with a writer (``input_size``, ``read_at_most``), or unreadable."""
    source = str(path)
    try:
        size = input_size(path, source)
        if size is not None and size > max_bytes:
            raise ScenarioError(source, f"is {size / MIB:.3g} MiB, above the {max_bytes / MIB:.3g} MiB limit for a "
                                f"{what} (see docs/robustness.md)")
        data = read_at_most(path, max_bytes + 1, source, pipe=size is None)  # a file may grow between stat and read
    except OSError as err:
        raise ScenarioError(source, f"cannot read: {err.strerror or err}") from None
    if len(data) > max_bytes:
        raise ScenarioError(source, f"is above the {max_bytes / MIB:.3g} MiB limit for a {what}")
    if b"\0" in data:
        raise ScenarioError(source, f"is a binary file, not a {what} (it holds NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ScenarioError(source, f"is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}): "
                            f"not a {what}") from None


def _check_expansion(root: yaml.Node, source: str) -> None:
    """Refuse a composed YAML graph that is recursive, nests deeper than MAX_NESTING or expands (aliases followed)
    to more than MAX_YAML_NODES nodes. Iterative, linear in the composed (not the expanded) graph."""
    expanded: dict[int, int] = {}  # id(node) -> nodes of its expanded subtree
    depth: dict[int, int] = {}  # id(node) -> levels of its expanded subtree
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        children = _children(node)
        if children_done:
            open_nodes.discard(key)
            expanded[key] = 1 + sum(expanded[id(child)] for child in children)
            depth[key] = 1 + max((depth[id(child)] for child in children), default=0)
            if expanded[key] > MAX_YAML_NODES:
                raise ScenarioError(source, f"its aliases expand to more than {MAX_YAML_NODES:.0e} values "
                                    f"(line {node.start_mark.line + 1}): an alias bomb?")
            if depth[key] > MAX_NESTING:
                raise ScenarioError(source, f"nests deeper than {MAX_NESTING} levels "
                                    f"(line {node.start_mark.line + 1})")
            continue
        if key in expanded:
            continue
        if key in open_nodes:
            raise ScenarioError(source, f"a recursive alias at line {node.start_mark.line + 1} (a value that "
                                "contains itself)")
        if isinstance(node, yaml.ScalarNode):
            _check_scalar(node, source)
        open_nodes.add(key)
        if isinstance(node, yaml.MappingNode):
            _check_unique_keys(node, source)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in expanded)
        for child in children:
            if id(child) in open_nodes:
                raise ScenarioError(source, f"a recursive alias at line {child.start_mark.line + 1} (a value "
                                    "that contains itself)")


_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_TIMESTAMPS = yaml.constructor.SafeConstructor()  # its timestamp constructor keeps no state


def _check_scalar(node: yaml.ScalarNode, source: str) -> None:
    """A scalar the reader could not build, refused naming its line before it is built: an integer longer than
    ``MAX_INT_CHARS``, or a YAML date that is no date (``2024-02-30``: YAML reads ``YYYY-MM-DD`` as a timestamp, and
    building it raised a ValueError with no line; round 31, its line added in the round 31 review)."""
    line = node.start_mark.line + 1
    if node.tag == _INT_TAG and len(node.value) > MAX_INT_CHARS:
        raise ScenarioError(source, f"an integer written with {len(node.value):,} characters (line {line}): no field "
                            f"takes one that long (at most {MAX_INT_CHARS:,})")
    if node.tag == _TIMESTAMP_TAG:
        try:
            _TIMESTAMPS.construct_yaml_timestamp(node)
        except ValueError as err:
            raise ScenarioError(source, f"{node.value[:40]!r} (line {line}) reads as a date and is no date: {err} "
                                "(quote it to make it text)") from None
_STR_TAG = "tag:yaml.org,2002:str"


def _check_unique_keys(node: yaml.MappingNode, source: str) -> None:
    """Refuse a key written twice in one mapping: YAML forbids it, and PyYAML would silently keep the last value
    (``seq_len: 8192`` then ``seq_len: 4096`` ran at 4096). Keys merged in with ``<<`` may be overridden."""
    seen: dict[Any, tuple[int, str]] = {}  # the key as the mapping holds it -> its line and its text
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE_TAG:
            _check_scalar(key, source)  # built below, before the traversal reaches it
            line = key.start_mark.line + 1
            # The key as the mapping will hold it: 1, 1.0 and 0x1 (or true and yes, null and ~) are one Python key,
            # and PyYAML would keep the last of them unsaid; 1 and '1' are two.
            value = key.value if key.tag == _STR_TAG else yaml.constructor.SafeConstructor().construct_object(key)
            if value in seen:
                first, text = seen[value]
                where = f"line {line}" if first == line else f"lines {first} and {line}"
                as_written = "" if text == key.value else f", first as {text!r}"
                raise ScenarioError(source, f"the key {key.value!r} is written twice in one mapping ({where}"
                                    f"{as_written}): which value is meant?")
            seen[value] = line, key.value


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    return f"invalid YAML{where}: {problem}"


def unreadable_value(err: ValueError) -> str:
    """The message for a value the YAML or JSON reader could not build, which it raised as a bare ValueError (a
    traceback before round 31): an integer written with more digits than Python converts
    (``sys.get_int_max_str_digits``, 4,300 by default, a guard against quadratic-time conversion; no field takes
    one), or a YAML date that is no date (``2024-02-30``: YAML reads ``YYYY-MM-DD`` as a timestamp)."""
    if "integer string conversion" in str(err):
        return (f"holds an integer of more than {sys.get_int_max_str_digits():,} digits, more than Python reads as "
                "a number: no field takes one")
    return f"holds a value that cannot be read: {err} (a date like 2024-02-30? quote it to make it text)"


def parse_yaml(text: str, source: str) -> Any:
    """The document in ``text``, with aliases bounded (see the module docstring); errors name ``source``."""
    try:
        text.encode("utf-8")  # a command-line value of bytes that are not UTF-8 comes as lone surrogates
    except UnicodeEncodeError as err:
        raise ScenarioError(source, f"is not UTF-8 text (character {err.start}): {text[:40]!r}") from None
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise ScenarioError(source, _yaml_problem(err)) from None
    except RecursionError:
        raise ScenarioError(source, f"nests deeper than {MAX_NESTING} levels") from None
    except ScenarioError:
        raise
    except ValueError as err:  # a long integer or an impossible date (round 31)
        raise ScenarioError(source, unreadable_value(err)) from None
    finally:
        loader.dispose()


def load_yaml(path: Path, max_bytes: int, what: str = "YAML file") -> Any:
    """``read_text`` then ``parse_yaml``."""
    return parse_yaml(read_text(path, max_bytes, what), str(path))


def load_json(path: Path, max_bytes: int = MAX_JSON_BYTES, what: str = "JSON file") -> Any:
    """The JSON document in ``path``: size, text and nesting checked; errors name the file."""
    text = read_text(path, max_bytes, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ScenarioError(str(path), f"is not JSON: {err.msg} at line {err.lineno}, column {err.colno}") from None
    except RecursionError:
        raise ScenarioError(str(path), "nests too deeply to be read") from None
    except ValueError as err:  # an integer of more digits than Python turns into a number (round 31)
        raise ScenarioError(str(path), unreadable_value(err)) from None
