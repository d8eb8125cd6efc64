"""Grid points: one scenario moved over fabrics, varied fields and GPU counts (``compare`` and ``sweep``).

How a grid point is built from the base scenario (``config.rebuildable(scenario)``: its framework defaults unset,
so that each point resolves them for its own layout), in this order:

1. the fabric (``--topology NAME[:key=value,...]``) replaces ``cluster.topology`` and ``cluster.topology_options``;
2. each varied field (``--vary parallelism.tp=4,8``) is set;
3. the GPU count is applied (``scale_to_gpus``): ``cluster.nodes`` follows it, the data-parallel degree absorbs it
   (dp = gpus / (tp * pp * cp)) unless dp is varied by the user, and the global batch grows with dp (the same
   sequences per replica, so the same microbatches per step: weak scaling) unless the user varies it.

Each point is keyed by a hash of everything that determines its outcome (the full scenario dict after the steps
above, the network model, the step count, the content of a fabric file it names, simcluster's own code and data):
``sweep`` names its shards by it.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import math
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path

from simcluster.core import inputs
from simcluster.core.errors import ScenarioError
from simcluster.fabric import topology
from simcluster.spec import config, fabric_options

# Bumped when the shard layout changes, so that old shards are not read as new ones.
SHARD_FORMAT = 1

# Grid points of one sweep or comparison: each holds a copy of the scenario and, when run, a shard; 10^4 points are
# days of simulation already, and a few repeated options (--vary a=1,...,100 --vary b=1,...,100 ...) multiply fast.
MAX_GRID_POINTS = 10_000

# Sections of the scenario whose fields may be named without their section in --vary (``tp=4,8``).
_SECTIONS = {"cluster": config.Cluster, "training": config.Training, "parallelism": config.Parallelism,
             "economics": config.Economics}
_RESERVED = {"cluster.nodes": "use --gpus", "cluster.topology": "use --topology",
             "cluster.topology_options": "use --topology NAME:key=value"}


# ---- fabrics and varied fields ---------------------------------------------------------------------------------
def _split_top_level(text: str, keep_empty: bool = False) -> list[str]:
    """Split on commas outside brackets and braces, so that ``dims=[4,4,4],link=400 Gb/s`` is two items and a YAML
    flow mapping (``--vary model.moe={experts: 16, top_k: 4, ...}``, shredded into failed points before round 32)
    one; empty items are dropped unless ``keep_empty``."""
    items, depth, current = [], 0, []
    for char in text:
        depth += {"[": 1, "]": -1, "{": 1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items if keep_empty or item.strip()]


def parse_value(text: str):
    """A command-line value as YAML reads it: ``4`` -> 4, ``2.5`` -> 2.5, ``true`` -> True, ``1f1b`` -> '1f1b'."""
    try:
        return inputs.parse_yaml(text, "value")  # aliases bounded like a file's
    except ScenarioError:
        return text


@dataclass(frozen=True)
class FabricSpec:
    """A fabric of a comparison or sweep: builtin name (or file) plus builder options."""

    name: str
    options: tuple[tuple[str, object], ...] = ()

    @property
    def label(self) -> str:
        if not self.options:
            return self.name
        return self.name + ":" + ",".join(f"{key}={_fmt_option(value)}" for key, value in self.options)

    def with_options(self, extra: dict) -> FabricSpec:
        merged = dict(self.options) | extra
        return FabricSpec(self.name, tuple(merged.items()))


def _fmt_option(value) -> str:
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


def parse_fabric(text: str, field: str = "--topology") -> FabricSpec:
    """``leaf-spine:oversubscription=4,spines=8`` -> FabricSpec('leaf-spine', (('oversubscription', 4), ...))."""
    name, _, rest = text.strip().partition(":")
    if not name or not text.isprintable():  # the name becomes part of labels and folder names
        raise ScenarioError(field, f"expected NAME or NAME:key=value,... (printable), got {text[:60]!r}")
    if any(len(part.encode()) > 255 for part in name.split("/")):  # NAME_MAX of file systems
        raise ScenarioError(field, f"{name[:40]!r}... is neither a builtin fabric nor a file name (a part of it is "
                            "over 255 bytes)")
    options = []
    for item in _split_top_level(rest):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ScenarioError(field, f"option {item!r} of {name} is not key=value (e.g. oversubscription=4)")
        if key.strip() in dict(options):  # the last would win unsaid
            raise ScenarioError(field, f"option {key.strip()} of {name} is given twice")
        options.append((key.strip(), parse_value(value.strip())))
    return FabricSpec(name, tuple(options))


def fabric_of(data: dict) -> FabricSpec:
    cluster = data["cluster"]
    return FabricSpec(cluster.get("topology", "rail-fat-tree"), tuple((cluster.get("topology_options") or {}).items()))


def fabrics(texts: list[str], options: list[str], base: dict) -> list[FabricSpec]:
    """The fabrics of ``--topology`` (default: the scenario's own) with ``--option NAME.key=value`` applied to the
    fabrics named NAME, and ``--option topology.key=value`` to all of them."""
    specs = [parse_fabric(text) for text in texts] or [fabric_of(base)]
    given: set[str] = set()
    for item in options:
        target, sep, value = item.partition("=")
        name, dot, key = target.strip().rpartition(".")
        if not sep or not dot or not name or not key:
            raise ScenarioError("--option", f"expected NAME.key=value (e.g. leaf-spine.oversubscription=4), "
                                f"got {item!r}")
        if target.strip() in given:  # the last would win unsaid
            raise ScenarioError("--option", f"{target.strip()} is given twice")
        given.add(target.strip())
        matched = [i for i, spec in enumerate(specs) if name in ("topology", spec.name)]
        if not matched:
            raise ScenarioError("--option", f"no --topology named {name!r} (fabrics: "
                                f"{', '.join(spec.name for spec in specs)})")
        for i in matched:
            specs[i] = specs[i].with_options({key: parse_value(value.strip())})
    labels = [spec.label for spec in specs]
    # one fabric file by two paths (f.yaml, ./f.yaml, a link to it) is given twice too (round 32: it ran twice)
    # (as labels: an option's value may be a list, torus:dims=[4,4,4], which a set cannot hold; round 32's review)
    same = [FabricSpec(_file_identity(spec.name), spec.options).label for spec in specs]
    if len(set(labels)) != len(labels) or len(set(same)) != len(same):
        raise ScenarioError("--topology", f"a fabric is given twice: {', '.join(labels)}")
    for spec in specs:  # refused here, not as every point of the fabric failing alike (round 35 review)
        fabric_options.check(spec.name, dict(spec.options))  # named as the scenario key the option sets
    return specs


def _file_identity(name: str) -> str:
    """A fabric file's resolved path (the file itself, whatever path names it); a builtin's name as given."""
    try:
        return os.path.realpath(name) if os.path.isfile(name) else name
    except (OSError, ValueError):  # a name the file system refuses is refused where the fabric is read
        return name


def _alternatives(annotation) -> tuple:
    """``annotation`` and, when it is a union (``Variability | None``), its members."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return (annotation, *typing.get_args(annotation)) if union else (annotation,)


def _model_in(annotation):
    """The pydantic model a field of this annotation holds (the class, or the class in a union such as
    ``Variability | None``), else None: a plain value, a list or a mapping."""
    for candidate in _alternatives(annotation):
        if isinstance(candidate, type) and hasattr(candidate, "model_fields"):
            return candidate
    return None


def _is_mapping(annotation) -> bool:
    """A field of free keys (``cluster.topology_options``, ``reliability.failure_rates``), checked by the scenario."""
    return any(candidate is dict or typing.get_origin(candidate) is dict for candidate in _alternatives(annotation))


def _check_path(key: str, field: str) -> None:
    """Every part of ``key`` a field of the model it is in (``model.moe.experts``: ``moe`` of the model, ``experts``
    of its MoE block); below a mapping of free keys anything goes; below a plain value or a list nothing does."""
    parts = key.split(".")
    model, annotation = config.Scenario, None
    for depth, part in enumerate(parts):
        if model is None:
            if _is_mapping(annotation):
                return
            raise ScenarioError(field, f"{key} is not a scenario field: {'.'.join(parts[:depth])} holds a value, "
                                "not a section (see `simcluster schema`)")
        if part not in model.model_fields:
            raise ScenarioError(field, f"{key} is not a scenario field (see `simcluster schema`)")
        annotation = model.model_fields[part].annotation
        model = _model_in(annotation)


def _text_field(key: str) -> bool:
    """True when the field at ``key`` holds plain text (``str`` or ``str | None``): its values are kept as written,
    so ``training.mcore_version=0.8,0.10`` varies the releases '0.8' and '0.10', not the numbers 0.8 and 0.1."""
    model, annotation = config.Scenario, None
    for part in key.split("."):
        if model is None or part not in model.model_fields:
            return False
        annotation = model.model_fields[part].annotation
        model = _model_in(annotation)
    return set(typing.get_args(annotation) or (annotation,)) - {type(None)} == {str}


def _text_value(text: str) -> str:
    """A value of a text field: as YAML reads it when that is text (``'0.8'`` -> 0.8 unquoted), else as written."""
    value = parse_value(text)
    return value if isinstance(value, str) else text.strip()


def resolve_key(key: str, field: str = "--vary") -> str:
    """A dotted scenario path; a bare field name (``tp``) is looked up in the cluster, training, parallelism and
    economics sections and must belong to exactly one."""
    key = key.strip()
    if key == "gpus":
        raise ScenarioError(field, "the GPU count is swept with --gpus, not --vary")
    if "." not in key:
        if key in config.Scenario.model_fields:
            return key
        owners = [section for section, model in _SECTIONS.items() if key in model.model_fields]
        if len(owners) != 1:
            where = "several sections: " + ", ".join(owners) if owners else "no section of the scenario"
            raise ScenarioError(field, f"{key!r} names {where}; write it in full, e.g. parallelism.tp")
        key = f"{owners[0]}.{key}"
    parts = key.split(".")
    if not all(parts):
        raise ScenarioError(field, f"{key!r} has an empty part; write the path in full, e.g. parallelism.tp")
    _check_path(key, field)
    if key in _RESERVED or key.startswith("cluster.topology_options"):
        reason = _RESERVED.get(key, "use --topology NAME:key=value")
        raise ScenarioError(field, f"{key} is not varied this way: {reason}")
    return key


def _first_repeat(texts: list[str], values: list) -> str | None:
    """The text of the first value equal to an earlier one of the same type (1 and true differ here, as they do to
    the scenario; 0.0 and -0.0 do not), else None. Linear in the values: a set keyed by (type, value), the pairwise
    test only among the unhashable ones (lists, mappings), which YAML makes of few values (round 31: the pairwise test
    over all of them took minutes for 20,000; its set of reprs, in the round 31 review, told 0.0 from -0.0)."""
    seen: set = set()
    unhashable: list = []
    for text, value in zip(texts, values, strict=True):
        try:
            key = (type(value), value)
            if key in seen:
                return text
            seen.add(key)
        except TypeError:
            if any(type(other) is type(value) and other == value for other in unhashable):
                return text
            unhashable.append(value)
    return None


# Scenario keys that name a run without changing it (round 37): ``--vary name=a,b`` was refused as "two grid points
# are the same run (a varied value repeats?)", the values being distinct, and ``description`` ran one simulation
# once a value, each a point of its own in results.csv.
NOT_VARIED = {"name": "the sweep names each run itself (SCENARIO-Ngpu-FABRIC)",
              "description": "a scenario's description changes nothing simulated"}


def parse_vary(items: list[str]) -> dict[str, list]:
    """``['parallelism.tp=4,8', 'micro_batch_size=1,2']`` -> {'parallelism.tp': [4, 8], 'training.micro_batch_size':
    [1, 2]} (values read as YAML scalars)."""
    out: dict[str, list] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep:
            raise ScenarioError("--vary", f"expected key=v1,v2,..., got {item!r}")
        path = resolve_key(key)
        if path in NOT_VARIED:
            raise ScenarioError("--vary", f"{path}: {NOT_VARIED[path]}; vary a field of the run (e.g. "
                                "parallelism.tp=2,4)")
        if path in out:
            raise ScenarioError("--vary", f"{path} is varied twice")
        texts = _split_top_level(values, keep_empty=True)
        if not values.strip():
            raise ScenarioError("--vary", f"{path} has no values")
        if not all(texts):
            raise ScenarioError("--vary", f"{path} has an empty value in {values!r}")
        if len(texts) > MAX_GRID_POINTS:  # refused before each is read: 20,000 values took minutes (round 31)
            raise ScenarioError("--vary", f"{path} has {len(texts):,} values, more than the {MAX_GRID_POINTS:,} "
                                "points a grid may hold: split the study")
        parsed = [_text_value(text) if _text_field(path) else parse_value(text) for text in texts]
        repeated = _first_repeat(texts, parsed)
        if repeated is not None:
            raise ScenarioError("--vary", f"{path} repeats the value {repeated}")
        out[path] = parsed
    return out


def set_path(data: dict, path: str, value) -> None:
    """Set ``data['a']['b'] = value`` for ``path='a.b'``, creating sections as needed."""
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ScenarioError(path, f"{part} is not a section (it holds {child!r})")
        node = child
    node[leaf] = value


def _gpu_count(item: str) -> int:
    value = parse_value(item)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= config.MAX_GPUS:
        raise ScenarioError("--gpus", f"expected whole GPU counts from 1 to {config.MAX_GPUS:,} (a plausibility "
                            f"bound), got {item!r}")
    return value


def parse_gpus(text: str) -> list[int]:
    """``64,128,...,1024`` (powers of two between the neighbours of ``...``) or a plain list ``64,96,128``; every
    count within 1..config.MAX_GPUS."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    counts: list[int] = []
    for index, item in enumerate(items):
        if item == "...":
            if not counts or index + 1 >= len(items):
                raise ScenarioError("--gpus", "'...' needs a count on each side, e.g. 64,128,...,16384")
            low, high = counts[-1], _gpu_count(items[index + 1])
            if high <= low:  # '64,...,8' gave the grid [64, 8], no series between
                raise ScenarioError("--gpus", f"'...' runs up from {low:,} to a larger count, got {high:,} after it")
            ratio = 2
            if len(counts) >= 2 and counts[-2]:
                ratio = low // counts[-2]
                if low % counts[-2] or ratio < 2:  # '16,17,...' doubled from 17 unsaid: 34, 68, ... (round 32)
                    raise ScenarioError("--gpus", f"'{counts[-2]},{low},...' grows by {low}/{counts[-2]}, not a "
                                        "whole factor: '...' continues a geometric series (64,128,...,1024 doubles; "
                                        "64,256,... grows by 4); list the counts instead")
            value = low * ratio
            while value < high:
                counts.append(value)
                value *= ratio
            continue
        counts.append(_gpu_count(item))
    if not counts:
        raise ScenarioError("--gpus", f"no GPU count in {text!r} (e.g. 64,128,...,1024)")
    if len(set(counts)) != len(counts):
        raise ScenarioError("--gpus", f"counts repeat: {counts}")
    return counts


# ---- grid points ---------------------------------------------------------------------------------------------
def scale_to_gpus(data: dict, gpus: int, fixed: frozenset[str] = frozenset()) -> dict:
    """The scenario dict moved to ``gpus`` GPUs (see the module docstring); ``fixed`` are the user's paths."""
    data = copy.deepcopy(data)
    for section in ("cluster", "training", "parallelism"):  # a whole section replaced by a --vary value
        if not isinstance(data.get(section, {}), dict):
            raise ScenarioError(section, f"expected a mapping of {section} fields, got {data[section]!r} (vary one "
                                f"field, e.g. --vary {section}.{next(iter(_SECTIONS[section].model_fields))}=...)")
    cluster, training = data["cluster"], data["training"]
    par = data.setdefault("parallelism", {})
    for section, key in (("cluster", "gpus_per_node"), ("parallelism", "tp"), ("parallelism", "pp"),
                         ("parallelism", "cp"), ("parallelism", "dp"), ("training", "micro_batch_size"),
                         ("training", "global_batch_size")):
        value = data.get(section, {}).get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:  # a --vary value, read as YAML
            raise ScenarioError(f"{section}.{key}", f"expected a whole number >= 1, got {value!r}")
    per_node = int(cluster.get("gpus_per_node", 8))
    if gpus % per_node == 0:
        cluster["nodes"] = gpus // per_node
    elif per_node % gpus == 0:
        cluster["gpus_per_node"], cluster["nodes"] = gpus, 1  # less than one node: a partial node
    else:
        raise ScenarioError("--gpus", f"{gpus} GPUs is not a whole number of {per_node}-GPU nodes")
    if "parallelism.dp" in fixed:
        return data  # the user fixed dp: the layout check of config says whether tp*pp*dp*cp matches
    model_parallel = int(par.get("tp", 1)) * int(par.get("pp", 1)) * int(par.get("cp", 1))
    if gpus % model_parallel:
        raise ScenarioError("--gpus", f"{gpus} GPUs is not a multiple of tp*pp*cp = {model_parallel}")
    old_dp, new_dp = int(par.get("dp", 1)), gpus // model_parallel
    par["dp"] = new_dp
    if "training.global_batch_size" not in fixed:
        micro = int(training.get("micro_batch_size", 1))
        per_replica = int(training["global_batch_size"]) / old_dp
        per_replica = max(micro, round(per_replica / micro) * micro)
        training["global_batch_size"] = int(per_replica * new_dp)
    return data


# simcluster's own files that decide a run's outcome: its code and data (catalogs, efficiencies, presets), not its
# bundled scenarios (a run's scenario is in its key already) or caches.
_CODE_SUFFIXES = (".py", ".yaml", ".csv", ".json")


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """sha256 of simcluster's source and data files (16 hex digits; 165 files, 2.4 MB, about 17 ms once a process):
    a shard computed by another simcluster (an upgrade, an edited model) is another run, not this one's (round 29:
    a sweep resumed after an upgrade reported the old release's steps as the new one's)."""
    return tree_digest(Path(__file__).resolve().parents[1])


def tree_digest(root: Path) -> str:
    """sha256 (16 hex digits) of the code and data files under ``root`` (``_CODE_SUFFIXES``), their paths included;
    ``__pycache__`` and ``data/scenarios`` left out."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if path.suffix in _CODE_SUFFIXES and "__pycache__" not in parts and parts[:2] != ("data", "scenarios") \
                and path.is_file():
            digest.update("/".join(parts).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def run_key(data: dict, network: str | None, steps: int | None) -> str:
    """Hash of what determines a run's outcome (sha256 of the canonical JSON, 16 hex digits): the scenario, the
    content of a fabric file it names (its path alone would keep answering with the runs of the file's old
    content once the file is edited: round 29), and simcluster's own code and data (``code_digest``)."""
    scenario = data.get("scenario", data.get("base", data))  # a samples point, an invalid point, or the scenario
    cluster = scenario.get("cluster") if isinstance(scenario, dict) else None
    fabric_file = topology.file_digest(str(cluster.get("topology", ""))) if isinstance(cluster, dict) else None
    blob = json.dumps({"format": SHARD_FORMAT, "scenario": data, "network": network, "steps": steps,
                       "simcluster": code_digest(), **({"fabric_file": fabric_file} if fabric_file else {})},
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Task:
    """One grid point: its parameters (what the user varies), the scenario dict to simulate, its key."""

    key: str
    params: dict
    scenario: dict | None
    network: str | None = None
    steps: int | None = None
    error: str | None = None  # the grid point itself is invalid (reported like a failed run)
    samples: int = 1  # seeds run per point (studies.samples)


def _folder_name(text: str) -> str:
    """``text`` as a scenario name (it names a folder): a fabric file's path separators and control characters
    replaced, cut to ``config.MAX_NAME_BYTES``. Builtin fabrics' labels pass unchanged (the run keys hash names)."""
    name = "".join("_" if char in "/\\" or not char.isprintable() else char for char in text)
    while len(name.encode()) > config.MAX_NAME_BYTES:
        name = name[:-1]
    return name.rstrip()


def grid(base: dict, gpus: list[int] | None = None, fabrics: list[FabricSpec] | None = None,
         vary: dict[str, list] | None = None, network: str | None = None, steps: int | None = None,
         samples: int = 1) -> list[Task]:
    """Every combination of fabric x varied values x GPU count, in that nesting order; ``samples`` seeds of each
    (keyed apart from single runs)."""
    vary = vary or {}
    fabrics = fabrics or [fabric_of(base)]
    counts = gpus or [int(base["cluster"].get("nodes", 1)) * int(base["cluster"].get("gpus_per_node", 8))]
    points = len(fabrics) * len(counts) * math.prod(len(values) for values in vary.values())
    if points > MAX_GRID_POINTS:
        raise ScenarioError("--vary" if vary else "--gpus", f"the grid has {points:,} points, more than "
                            f"{MAX_GRID_POINTS:,} (fabrics x varied values x GPU counts): split the study")
    # each point runs its seeds: 101 points x --samples 10,000 passed the bound above and ran a million simulations
    # (round 32); the bound is on what is simulated, as one run's --samples 10,000 is
    if points * samples > MAX_GRID_POINTS:
        raise ScenarioError("--samples", f"{points:,} grid points x {samples:,} samples are {points * samples:,} "
                            f"simulations, more than {MAX_GRID_POINTS:,}: fewer samples or a smaller grid")
    fixed = frozenset(vary)
    tasks = []
    for fabric, values, count in itertools.product(fabrics, itertools.product(*vary.values()), counts):
        params = {"topology": fabric.label, **dict(zip(vary, values, strict=True)), "gpus": count}
        data = copy.deepcopy(base)
        data["cluster"]["topology"] = fabric.name
        data["cluster"]["topology_options"] = dict(fabric.options)
        try:
            for path, value in zip(vary, values, strict=True):
                set_path(data, path, value)
            data = scale_to_gpus(data, count, fixed)
        except ScenarioError as err:
            key = run_key({"invalid": params, "base": base}, network, steps)
            tasks.append(Task(key, params, None, network, steps, error=str(err)))
            continue
        data["name"] = _folder_name(f"{base.get('name', 'scenario')}-{count}gpu-{fabric.label}")
        key = run_key(data if samples == 1 else {"samples": samples, "scenario": data}, network, steps)
        tasks.append(Task(key, params, data, network, steps, samples=samples))
    return tasks
