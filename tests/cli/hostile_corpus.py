"""A corpus of hostile inputs for every subcommand and option (issue 14), and the harness that runs and judges it.

``cases(data)`` lists the cases: a command line each, naming files that ``materialise(data)`` writes (scenarios
with one impossible value, binary and oversized files, alias bombs, deep JSON, hostile fabric, summary and trace
files). ``run_corpus`` runs them in worker processes under a memory limit (RLIMIT_AS), each case in process through
``simcluster.cli.main`` with a timeout (SIGALRM; a worker stuck in C code is killed and the case counted as a hang),
a few that need a process of their own (signals, stdout on a full device) as subprocesses. ``judge`` gives each
case one outcome:

- ``refused``: exit 2, exactly one line on stderr (``error: FIELD: message``), naming the field the case expects;
- ``ok``: exit 0 (130/143 for the signal cases), and every number written (JSON on stdout, JSON and CSV files under
  the case's folder) finite and, where the key says it is a time, an energy, a cost, a power or a size, >= 0;
- failures: ``traceback`` (an exception left ``main``), ``hang`` (timeout), ``memory`` (MemoryError or killed),
  ``crash`` (the worker died), ``exit`` (another exit code), ``lines`` (exit 2 without exactly one line),
  ``unnamed`` (exit 2 without the expected field), ``nonsense`` (exit 0 with NaN, Infinity or a negative
  physical number, or a half-written temporary file left), ``accepted`` (exit 0 where a refusal is required).

Run the whole corpus with ``python benchmarks/hostile.py`` (a table of classes x outcomes);
``tests/cli/test_hostile_corpus.py`` runs it in CI (a sample by default, all with ``SIMCLUSTER_CORPUS=full``).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import gzip
import io
import json
import math
import os
import re
import resource
import select
import signal
import subprocess
import sys
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]

# A worker's address space: the bound on memory before a refusal, 1 GiB (a small run needs ~0.3 GB).
MEMORY_LIMIT_BYTES = int(1.0 * 2**30)
# Seconds one case may take (in process, on a loaded 2-core machine); a refusal takes milliseconds, a valid
# 16-GPU run a second or two.
CASE_TIMEOUT_S = 40.0
# Bytes a "full disk" case may write into one file (RLIMIT_FSIZE): too few for any output file.
FULL_DISK_BYTES = 16

FAILURES = ("traceback", "hang", "memory", "crash", "exit", "lines", "unnamed", "nonsense", "accepted")
OUTCOMES = ("refused", "ok", "skipped", *FAILURES)


@dataclass(frozen=True)
class Case:
    id: str
    klass: str
    argv: tuple[str, ...]  # "{data}" stands for the data folder, "{here}" for the case's own working folder
    field: str | None = None  # text the one-line refusal must contain (the field or option at fault)
    refuse: bool = False  # must be refused (exit 2); otherwise a valid result is fine too
    limit: str | None = None  # "fsize": writes beyond FULL_DISK_BYTES fail (a full disk)
    process: str | None = None  # run as a subprocess: "sigint", "sigterm", "sigterm-pool", "full-stdout"
    sample: bool = False  # in the quick CI sample


@dataclass
class Result:
    id: str
    klass: str
    outcome: str
    code: int | None
    seconds: float
    detail: str = ""


# ---- the base scenario and its hostile edits ----------------------------------------------------------------
BASE = {
    "name": "hostile",
    "cluster": {"gpu": "h100-sxm", "gpus_per_node": 8, "nodes": 2, "nic": "connectx-7", "topology": "rail-fat-tree"},
    "model": "gpt3-1.3b",
    "training": {"seq_len": 2048, "global_batch_size": 16, "micro_batch_size": 1, "precision": "bf16"},
    "parallelism": {"tp": 2, "pp": 2, "dp": 4},
}
H100 = {"peak": {"bf16": "989 TFLOP/s"}, "hbm_capacity": "80 GB", "hbm_bandwidth": "3.35 TB/s",
        "nvlink_bandwidth": "450 GB/s", "tdp": "700 W", "idle_power": "70 W", "price_per_gpu_hour": 2.5}
NIC = {"rate": "400 Gb/s", "latency": "1 us"}
MODEL = {"layers": 24, "hidden": 2048, "heads": 16, "vocab": 50257}

# Values for a field that wants a count (an integer > 0).
COUNTS = {"neg": -1, "zero": 0, "float": 2.5, "whole-float": 4.0, "inf": math.inf, "nan": math.nan, "huge": 10**30,
          "e300": 1e300, "true": True, "false": False, "string": "eight", "numeric-string": "8", "empty": "",
          "null": None, "list": [2], "map": {"a": 1}}
# Values for a field that wants a quantity with a unit ("{}" is replaced by the unit).
QUANTITIES = {"neg": "-5 {}", "zero": "0 {}", "inf": "inf {}", "nan": "nan {}", "e400": "1e400 {}",
              "huge": "1e300 {}", "tiny": "1e-300 {}", "wrong-unit": "5 kg", "no-unit": "5", "bare-neg": -5,
              "bare-inf": math.inf, "true": True, "null": None, "empty": "", "list": ["5 {}"], "nul": "5\0 {}"}
# Values for a plain number (a price, a ratio).
NUMBERS = {"neg": -1.0, "zero": 0.0, "inf": math.inf, "nan": math.nan, "huge": 1e300, "true": True,
           "string": "cheap", "null": None, "list": [1.0]}


def edited(path: str, value, base: dict | None = None) -> dict:
    data = copy.deepcopy(base or BASE)
    *parents, leaf = path.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {}) if isinstance(node.get(key, {}), dict) else node
        if not isinstance(node, dict):
            return data
    node[leaf] = value
    return data


def _dump(data) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


# ---- files ----------------------------------------------------------------------------------------------------
def _alias_bomb(levels: int = 9) -> str:
    text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, levels):
        prev, cur = chr(96 + i), chr(97 + i)
        text += f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 10)}]\n"
    return text


KINETO = {
    "distributedInfo": {"rank": 0, "world_size": 2, "backend": "nccl",
                        "pg_config": [{"pg_name": "0", "ranks": [0, 1]}]},
    "deviceProperties": [{"name": "NVIDIA A100-SXM4-80GB"}],
    "traceEvents": [
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#3", "ts": 0, "dur": 1000, "pid": 1, "tid": 1},
        {"ph": "X", "cat": "kernel", "name": "sm80_gemm", "ts": 10, "dur": 300, "pid": 0, "tid": 7,
         "args": {"device": 0, "stream": 7, "correlation": 1}},
        {"ph": "X", "cat": "cpu_op", "name": "record_param_comms", "ts": 9, "dur": 5, "pid": 1, "tid": 1,
         "args": {"Collective name": "allreduce", "dtype": "Float", "In msg nelems": 1000, "Out msg nelems": 1000,
                  "Group size": 2}},
        {"ph": "X", "cat": "kernel", "name": "ncclKernel_AllReduce_RING_LL_Sum_float", "ts": 320, "dur": 100,
         "pid": 0, "tid": 20, "args": {"device": 0, "stream": 20, "correlation": 2}},
    ],
}


def _kineto(edit=None) -> dict:
    data = copy.deepcopy(KINETO)
    if edit:
        edit(data)
    return data


def _set(path: str, value):
    def apply(data):
        *parents, leaf = path.split(".")
        node = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(leaf) if isinstance(node, list) else leaf] = value
    return apply


TRACE_EDITS = {
    "world-1e9": _set("distributedInfo.world_size", 10**9),
    "world-neg": _set("distributedInfo.world_size", -2),
    "world-true": _set("distributedInfo.world_size", True),
    "world-float": _set("distributedInfo.world_size", 2.5),
    "rank-huge": _set("distributedInfo.rank", 10**12),
    "ts-1e300": _set("traceEvents.1.ts", 1e300),
    "ts-neg": _set("traceEvents.1.ts", -1e12),
    "dur-neg": _set("traceEvents.1.dur", -300),
    "dur-huge": _set("traceEvents.1.dur", 1e300),
    "dur-string": _set("traceEvents.1.dur", "long"),
    "nelems-neg": _set("traceEvents.2.args.In msg nelems", -1000),
    "nelems-huge": _set("traceEvents.2.args.In msg nelems", 10**20),
    "group-huge": _set("traceEvents.2.args.Group size", 10**9),
    "events-not-list": _set("traceEvents", {"a": 1}),
    "events-null": _set("traceEvents", None),
    "device-props-string": _set("deviceProperties", "A100"),
    "pg-ranks-huge": _set("distributedInfo.pg_config.0.ranks", [0, 10**12]),
    "name-nul": _set("traceEvents.1.name", "gemm\0x"),
}


def materialise(data: Path) -> None:
    """Write every file the corpus names into ``data`` (idempotent)."""
    data.mkdir(parents=True, exist_ok=True)
    scen = data / "scenarios"
    scen.mkdir(exist_ok=True)
    for case_id, content in _scenario_files().items():
        path = scen / f"{case_id}.yaml"
        if not path.exists():
            path.write_text(content if isinstance(content, str) else _dump(content))
    (data / "binary.yaml").write_bytes(bytes(range(1, 256)) * 64)
    (data / "nul.yaml").write_bytes(b"name: x\0y\n")
    (data / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (data / "empty.yaml").write_text("")
    (data / "list.yaml").write_text("- 1\n- 2\n")
    (data / "scalar.yaml").write_text("42\n")
    with (data / "sparse-50mb.yaml").open("wb") as handle:
        handle.truncate(50 * 2**20)
    (data / "big-4mb.yaml").write_text("name: big\n" + "".join(f"k{i}: {i}\n" for i in range(400_000)))
    (data / "alias-bomb.yaml").write_text(_alias_bomb() + "name: *i\n")
    (data / "alias-bomb-in-error.yaml").write_text(_alias_bomb() + _dump(BASE) + "extra: *i\n")
    (data / "recursive-alias.yaml").write_text("name: &a [*a]\n")
    (data / "deep-flow.yaml").write_text("cluster: " + "[" * 20000 + "]" * 20000 + "\n")
    (data / "deep-block.yaml").write_text("cluster:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 300)))
    (data / "tabs.yaml").write_text("name:\tx\n\tcluster: 1\n")
    (data / "a-directory.yaml").mkdir(exist_ok=True)
    fifo = data / "fifo.yaml"
    if not fifo.exists() and hasattr(os, "mkfifo"):
        os.mkfifo(fifo)
    # fabric files
    fabrics = data / "fabrics"
    fabrics.mkdir(exist_ok=True)
    two = {"name": "two", "gpus_per_node": 2,
           "nodes": {"g0": "gpu", "g1": "gpu", "sw": {"role": "switch", "latency": "100 ns"}},
           "links": [{"ends": ["g0", "sw"], "bandwidth": "400 Gb/s"}, {"ends": ["g1", "sw"], "bandwidth": "400 Gb/s"}]}
    for key, value in _fabric_edits().items():
        fabric = copy.deepcopy(two)
        value(fabric)
        (fabrics / f"{key}.yaml").write_text(_dump(fabric))
    (fabrics / "binary.yaml").write_bytes(b"\x00\x01\x02binary")
    (fabrics / "binary.graphml").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (fabrics / "not-xml.graphml").write_text("<graphml><graph>")
    (fabrics / "billion-laughs.graphml").write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n<!ENTITY lol "lol">\n'
        + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n' for i in range(1, 10))
        + ']>\n<graphml xmlns="http://graphml.graphdrawing.org/xmlns"><graph edgedefault="undirected">'
        '<node id="&lol9;"/></graph></graphml>\n')
    (fabrics / "external-entity.graphml").write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>\n'
        '<graphml xmlns="http://graphml.graphdrawing.org/xmlns"><graph edgedefault="undirected">'
        '<node id="&e;"/></graph></graphml>\n')
    (fabrics / "alias-bomb.yaml").write_text(_alias_bomb() + "name: *i\n")
    # summary files for laws loss-vs-time --summary
    sums = data / "summaries"
    sums.mkdir(exist_ok=True)
    good = {"step_time_s": 10.0, "tokens_per_s": 3.5e5, "gpus": 1024, "mfu": 0.45}
    for key, value in _summary_edits(good).items():
        (sums / f"{key}.json").write_text(value if isinstance(value, str) else json.dumps(value))
    (sums / "binary.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    (sums / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    # traces
    traces = data / "traces"
    traces.mkdir(exist_ok=True)
    for key, edit in TRACE_EDITS.items():
        (traces / f"{key}.rank0.json").write_text(json.dumps(_kineto(edit)))
    (traces / "good.rank0.json").write_text(json.dumps(_kineto()))
    (traces / "binary.rank0.json").write_bytes(bytes(range(256)) * 4)
    (traces / "empty.rank0.json").write_text("")
    (traces / "deep.rank0.json").write_text("[" * 100_000 + "]" * 100_000)
    (traces / "truncated.rank0.json.gz").write_bytes(gzip.compress(json.dumps(KINETO).encode())[:40])
    (traces / "not-gzip.rank0.json.gz").write_text("plain text")
    (traces / "trace.rank99999999999.json").write_text(json.dumps(_kineto()))
    bomb = traces / "bomb.rank0.json.gz"
    if not bomb.exists():
        with gzip.open(bomb, "wb", compresslevel=9) as handle:
            handle.write(b'{"traceEvents": [' + b" " * (512 * 2**20))  # 512 MiB of blanks in ~0.5 MB
    (traces / "garbage.0.et").write_bytes(b"\xff" * 64)
    (traces / "empty.0.et").write_bytes(b"")
    (traces / "huge-varint.0.et").write_bytes(b"\xff\xff\xff\xff\x0f" + b"\x00" * 8)
    # a FIFO where a trace is wanted: its open waited for a writer forever (round 33)
    if not (traces / "fifo.rank0.json").exists() and hasattr(os, "mkfifo"):
        os.mkfifo(traces / "fifo.rank0.json")
    # a file where a folder is wanted, and a read-only file system if one can be had
    (data / "a-file").write_text("not a folder\n")


def _fabric_edits() -> dict:
    def link(key, value):
        return lambda f: f["links"][0].__setitem__(key, value)

    def node(key, value):
        return lambda f: f["nodes"].__setitem__("sw", {"role": "switch", key: value})

    edits = {f"link-bandwidth-{k}": link("bandwidth", v.replace("{}", "Gb/s") if isinstance(v, str) else v)
             for k, v in QUANTITIES.items()}
    edits |= {f"link-latency-{k}": link("latency", v.replace("{}", "us") if isinstance(v, str) else v)
              for k, v in QUANTITIES.items()}
    edits |= {f"link-count-{k}": link("count", v) for k, v in COUNTS.items()}
    edits |= {f"switch-latency-{k}": node("latency", v.replace("{}", "ns") if isinstance(v, str) else v)
              for k, v in QUANTITIES.items()}
    edits |= {"gpus-per-node-huge": lambda f: f.__setitem__("gpus_per_node", 10**9),
              "gpus-per-node-true": lambda f: f.__setitem__("gpus_per_node", True),
              "links-not-list": lambda f: f.__setitem__("links", {"a": 1}),
              "nodes-not-map": lambda f: f.__setitem__("nodes", [1, 2]),
              "self-loop": lambda f: f["links"].append({"ends": ["g0", "g0"], "bandwidth": "1 Gb/s"}),
              "unknown-end": lambda f: f["links"].append({"ends": ["g0", "nowhere"], "bandwidth": "1 Gb/s"}),
              "disconnected": lambda f: f["links"].pop(),
              "rank-dup": lambda f: f["nodes"].update({"g0": {"role": "gpu", "rank": 0},
                                                       "g1": {"role": "gpu", "rank": 0}}),
              "rank-huge": lambda f: f["nodes"].update({"g0": {"role": "gpu", "rank": 10**12},
                                                        "g1": {"role": "gpu", "rank": 1}})}
    return edits


def _summary_edits(good: dict) -> dict:
    edits = {"good": good, "list": [1, 2], "null": "null", "nan": '{"step_time_s": NaN, "tokens_per_s": 1, '
             '"gpus": 8}', "infinity": '{"step_time_s": 1, "tokens_per_s": Infinity, "gpus": 8}', "empty": "",
             "missing": {"gpus": 8}}
    for key in ("step_time_s", "tokens_per_s", "gpus", "mfu"):
        for name, value in {"neg": -1, "zero": 0, "string": "fast", "true": True, "huge": 1e308, "null": None,
                            "list": [1]}.items():
            edits[f"{key}-{name}"] = {**good, key: value}
    return edits


def _scenario_files() -> dict:
    """Scenario files by case id (text or a dict to dump)."""
    files: dict = {}
    count_fields = ["cluster.nodes", "cluster.gpus_per_node", "training.seq_len", "training.global_batch_size",
                    "training.micro_batch_size", "training.steps", "parallelism.tp", "parallelism.pp",
                    "parallelism.dp", "parallelism.cp", "parallelism.virtual_stages", "parallelism.zero_stage",
                    "parallelism.layers_per_stage"]
    for path in count_fields:
        for key, value in COUNTS.items():
            files[f"{path}={key}"] = edited(path, value)
    gpu_units = {"hbm_capacity": "GB", "hbm_bandwidth": "TB/s", "nvlink_bandwidth": "GB/s", "tdp": "W",
                 "idle_power": "W", "peak.bf16": "TFLOP/s"}
    for name, unit in gpu_units.items():
        for key, value in QUANTITIES.items():
            gpu = copy.deepcopy(H100)
            text = value.replace("{}", unit) if isinstance(value, str) else \
                [v.replace("{}", unit) for v in value] if isinstance(value, list) else value
            if name == "peak.bf16":
                gpu["peak"] = {"bf16": text}
            else:
                gpu[name] = text
            files[f"cluster.gpu.{name}={key}"] = edited("cluster.gpu", gpu)
    for key, value in NUMBERS.items():
        files[f"cluster.gpu.price_per_gpu_hour={key}"] = edited("cluster.gpu", {**H100, "price_per_gpu_hour": value})
        files[f"cluster.price_per_gpu_hour={key}"] = edited("cluster.price_per_gpu_hour", value)
        files[f"economics.pue={key}"] = edited("economics", {"pue": value})
        files[f"economics.grid_kg_co2_per_kwh={key}"] = edited("economics", {"grid_kg_co2_per_kwh": value})
    for key, value in COUNTS.items():
        files[f"cluster.gpu.nvlink_generation={key}"] = edited("cluster.gpu", {**H100, "nvlink_generation": value})
        for name in ("layers", "hidden", "heads", "vocab", "kv_heads", "ffn_hidden"):
            files[f"model.{name}={key}"] = edited("model", {**MODEL, name: value})
    # query-key layernorm is a bool: a string, a number or a list is refused naming the field
    for i, value in enumerate(["sometimes", "yes", 1, [True]]):
        files[f"model.qk_layernorm=bad{i}"] = edited("model", {**MODEL, "qk_layernorm": value})
    for name, unit in {"rate": "Gb/s", "latency": "us"}.items():
        for key, value in QUANTITIES.items():
            text = value.replace("{}", unit) if isinstance(value, str) else \
                [v.replace("{}", unit) for v in value] if isinstance(value, list) else value
            files[f"cluster.nic.{name}={key}"] = edited("cluster.nic", {**NIC, name: text})
    for key, value in QUANTITIES.items():
        text = value.replace("{}", "MB") if isinstance(value, str) else value
        files[f"parallelism.grad_bucket_size={key}"] = edited("parallelism.grad_bucket_size", text)
        text = value.replace("{}", "kW") if isinstance(value, str) else value
        files[f"economics.node_overhead={key}"] = edited("economics", {"node_overhead": text})
    # builder options
    topo_values = {"torus": {"link": QUANTITIES, "hop_latency": QUANTITIES, "dims": {
        "neg": [-1, 16], "zero": [0, 16], "bools": [True, 16], "huge": [10**9, 10**9], "empty": [],
        "four": [1, 2, 2, 4], "floats": [4.0, 4.0]}},
        "leaf-spine": {"oversubscription": NUMBERS, "radix": COUNTS, "spines": COUNTS, "hosts_per_leaf": COUNTS},
        "fat-tree": {"k": COUNTS, "link": QUANTITIES},
        "rail-fat-tree": {"tiers": COUNTS, "radix": COUNTS, "protocol": {"bogus": "carrier-pigeon", "null": None,
                                                                       "list": [1], "map": {"a": 1}},
                          "routing": {"bogus": "random", "list": ["ecmp"]}}}
    units_of = {"link": "GB/s", "hop_latency": "us"}
    for topo, options in topo_values.items():
        for option, values in options.items():
            for key, value in values.items():
                if isinstance(value, str) and "{}" in value:
                    value = value.replace("{}", units_of[option])
                data = edited("cluster.topology", topo)
                data["cluster"]["topology_options"] = {option: value}
                files[f"topology.{topo}.{option}={key}"] = data
    # names and strings
    names = {"newline": "a\nb", "space": " ", "nul": "a\0b", "long": "x" * 300, "slash": "a/b", "dotdot": "..",
             "dot": ".hidden", "rtl": "a\u202eb", "empty": "", "int": 42, "null": None, "emoji": "run-\U0001F680",
             "backslash": "a\\b", "tab": "a\tb"}
    for key, value in names.items():
        files[f"name={key}"] = edited("name", value)
    strings = {"cluster.gpu": ["bogus", "", 42, None, [1], "h100-sxm\0"], "cluster.nic": ["bogus", "", 0, None],
               "cluster.topology": ["bogus", "", "/etc/passwd", "/dev/zero", "../../../../etc/shadow", 5, None],
               "model": ["bogus", "", 0, None, []], "training.precision": ["fp4", "", None, 16],
               "parallelism.order": ["tp-tp-pp-dp", "", None, "tp-cp-pp-dp-ep"],
               "cluster.sharp": ["maybe", True, None], "network": ["quantum", None],
               "parallelism.schedule": ["zigzag", None], "cluster.topology_options": ["x", [1], None],
               # the framework-default options (null means "default": no None here)
               "parallelism.grad_reduce_dtype": ["fp64", "", 32], "parallelism.defer_embedding_wgrad": ["yes", 1],
               "parallelism.wgrad_deferral_limit": [-1, 1.5, "ten"], "parallelism.tp_comm_overlap": ["on", 2],
               "parallelism.te_version": [3, "2", True, 2.5],
               "training.moe_router": ["fusion", True, 0], "training.moe_router_dtype": ["fp16", None, 32],
               "training.moe_load_balancing": ["seq", None, 1],
               # Megatron-Core's selective recompute modules: unknown or unmodelled names, a bare string, moe_act
               # on a dense model (refused: no grouped experts), a number
               "training.recompute_modules": [["norm"], ["mlp"], "layernorm", ["moe_act"], [1], ["core_attn", None]]}
    for path, values in strings.items():
        for i, value in enumerate(values):
            files[f"{path}=str{i}"] = edited(path, value)
    # limits: valid but huge
    files["limit.gpus-1e6"] = {**BASE, "cluster": {**BASE["cluster"], "nodes": 125_000},
                               "parallelism": {"tp": 8, "pp": 1, "dp": 125_000},
                               "training": {**BASE["training"], "global_batch_size": 125_000}}
    files["limit.gpus-1e7"] = {**BASE, "cluster": {**BASE["cluster"], "nodes": 1_250_000},
                               "parallelism": {"tp": 8, "pp": 1, "dp": 1_250_000},
                               "training": {**BASE["training"], "global_batch_size": 1_250_000}}
    files["limit.batch-8e12"] = edited("training.global_batch_size", 8 * 10**12)
    files["limit.batch-1e8"] = edited("training.global_batch_size", 10**8 - 10**8 % 4)
    files["limit.seq-2e24"] = edited("training.seq_len", 2**24)
    files["limit.steps-over"] = edited("training.steps", 10**4 + 1)  # 10^4 is valid, and hours long
    files["limit.hidden-1e9"] = edited("model", {**MODEL, "hidden": 2**30, "heads": 16})
    files["limit.layers-1e6"] = edited("model", {**MODEL, "layers": 10**6})
    files["limit.vocab-1e12"] = edited("model", {**MODEL, "vocab": 10**12})
    files["limit.gpus-per-node-576"] = {**BASE, "cluster": {**BASE["cluster"], "gpus_per_node": 576, "nodes": 1},
                                        "parallelism": {"tp": 8, "pp": 1, "dp": 72},
                                        "training": {**BASE["training"], "global_batch_size": 72}}
    files["unknown-key"] = {**BASE, "bogus": 1}
    files["unknown-key-newline"] = {**BASE, "a\nb": 1}
    files["missing-cluster"] = {k: v for k, v in BASE.items() if k != "cluster"}
    files["valid"] = BASE
    # refused only after the output folder is chosen (the memory check): into a taken folder, one line (round 32)
    files["too-big"] = edited("model", "gpt3-175b")
    return files | _recent_files()


# Values for a field that takes a name from a list (an enum) and for a strict bool (keys as in _must_refuse).
ENUMS = {"bogus": "bogus", "empty": "", "list": ["x"], "map": {"a": 1}, "true": True, "nan": math.nan}
BOOLS = {"string": "yes", "float": 1, "list": [True], "map": {"a": 1}, "empty": ""}
MOE = {"experts": 8, "top_k": 2, "ffn_hidden": 4096}


def _recent_files() -> dict:
    """Scenario files for the options of sessions 15-16 (framework options, MoE routing and padding, variability
    draws), all in the CI sample: every one must be refused naming its field."""
    files: dict = {}
    enums = ["training.moe_router", "training.moe_router_dtype", "training.moe_load_balancing",
             "training.qkv_bias_add", "training.layer_backward", "training.attention", "training.cross_entropy",
             "parallelism.grad_reduce_dtype", "parallelism.pipeline_engine", "parallelism.ep_alltoall",
             "parallelism.te_version", "variability.gpu_speed_draw"]
    bools = ["parallelism.tp_comm_overlap", "parallelism.overlap_param_gather", "parallelism.defer_embedding_wgrad",
             "training.fp8_param_gather", "training.moe_cuda_graphs", "parallelism.ep_overlap",
             "parallelism.sequence_parallel", "parallelism.overlap_grad_reduce", "parallelism.p2p_scatter_gather"]
    for path in enums:
        for key, value in ENUMS.items():
            files[f"{path}={key}"] = edited(path, value)
    for path in bools:
        for key, value in BOOLS.items():
            files[f"{path}={key}"] = edited(path, value)
    for key, value in BOOLS.items():
        moe = {**MOE, "capacity_factor": 1.0, "pad_to_capacity": value}
        files[f"model.moe.pad_to_capacity={key}"] = edited("model", {**MODEL, "moe": moe})
        files[f"model.tied_embeddings={key}"] = edited("model", {**MODEL, "tied_embeddings": value})
    for key, value in {"neg": -1.0, "zero": 0.0, "inf": math.inf, "nan": math.nan}.items():
        moe = {**MOE, "capacity_factor": value, "pad_to_capacity": True}
        files[f"model.moe.capacity_factor={key}"] = edited("model", {**MODEL, "moe": moe})
    for name in ("experts", "ffn_hidden", "shared_experts"):
        files[f"model.moe.{name}=huge"] = edited("model", {**MODEL, "moe": {**MOE, name: 10**30}})
    # a CV above sqrt(experts/top_k - 1) = 1.73 routes more tokens than exist
    for key, value in {"huge": 1e30, "float": 2.5}.items():
        files[f"model.moe.load={key}"] = edited("model", {**MODEL, "moe": {**MOE, "load": value}})
    for key, value in {"neg": -0.1, "inf": math.inf, "nan": math.nan, "huge": 2.0}.items():
        files[f"variability.gpu_speed_cv={key}"] = edited("variability", {"gpu_speed_cv": value})
    # round 31's group-limited routing (round 32): groups of any type or size that cannot hold 8 experts, a group_topk
    # above the groups or too few groups for top_k, one of the pair alone; and TE's LayerNormMLP on the MLPs it is
    # not modelled for
    for key, value in {"neg": -1, "zero": 0, "float": 2.5, "nan": math.nan, "true": True, "string": "4",
                       "huge": 10**30, "split": 3}.items():
        files[f"model.moe.groups={key}"] = edited("model", {**MODEL, "moe": {**MOE, "groups": value, "group_topk": 1}})
    for key, (groups, limit, top_k) in {"zero": (4, 0, 2), "huge": (4, 5, 2), "few": (4, 1, 4),
                                         "alone": (4, None, 2)}.items():
        moe = {**MOE, "groups": groups, "group_topk": limit, "top_k": top_k}
        files[f"model.moe.group_topk={key}"] = edited("model", {**MODEL, "moe": {
            k: v for k, v in moe.items() if v is not None}})
    for key, model in {"moe": {**MODEL, "moe": MOE}, "swiglu": {**MODEL, "mlp": "swiglu"},
                       "squared_relu": {**MODEL, "mlp": "squared_relu"}}.items():
        files[f"training.mlp_activation={key}"] = edited("training.mlp_activation", "layernorm_mlp",
                                                         edited("model", model))
    # round 33: a QKV bias add stated on a model without linear biases was ignored unsaid
    files["training.qkv_bias_add=no-bias"] = edited("training.qkv_bias_add", "separate",
                                                    edited("model", {**MODEL, "bias": False}))
    # round 33's review: flash-attention's fused DropoutAddLayerNorm stated on a Megatron-Core layer
    files["training.dropout_add_norm=fused-mcore"] = edited("training.dropout_add_norm", "fused",
                                                            edited("training.mcore_version", "0.11"))
    # round 34: two jobs whose names differ in case only share one folder where case is ignored (macOS, Windows)
    job = {"model": "gpt3-1.3b", "training": BASE["training"], "parallelism": {"tp": 1, "pp": 1, "dp": 8}}
    files["jobs.name=case"] = {"name": "hostile-jobs", "cluster": BASE["cluster"],
                               "jobs": [{"name": "a", **job, "placement": {"nodes": [0]}},
                                        {"name": "A", **job, "placement": {"nodes": [1]}}]}
    return files


# ---- the cases --------------------------------------------------------------------------------------------------
def _must_refuse(case_id: str) -> bool:
    """Edits that name an impossible value: a refusal is required (a valid result would be nonsense)."""
    key = case_id.rsplit("=", 1)[-1]
    path = case_id.rsplit("=", 1)[0]
    always = {"neg", "zero", "inf", "nan", "e400", "wrong-unit", "true", "false", "string", "null", "list", "map",
              "empty", "float", "bare-neg", "bare-inf", "nul", "bools", "newline", "space", "long", "slash",
              "dotdot", "dot", "rtl", "tab", "huge", "e300", "bogus", "floats"}
    if path.startswith("name") and key in ("emoji", "backslash", "int"):
        return False
    if path.endswith(("nvlink_generation", "cluster.topology_options")) and key in ("zero", "null"):
        return False
    if path.endswith("grad_bucket_size") and key == "huge":  # one bucket for all gradients: harmless
        return False
    if key == "zero" and path.endswith(("latency", "hop_latency", "zero_stage", "idle_power", "pue.zero",
                                        "grid_kg_co2_per_kwh", "price_per_gpu_hour", "node_overhead")):
        return key != "zero" or path.endswith(("pue", "cluster.gpu.price_per_gpu_hour"))
    if key == "null" and path.endswith(("price_per_gpu_hour", "layers_per_stage", "kv_heads", "ffn_hidden",
                                        "latency", "topology_options", "grad_bucket_size")):  # null: the default
        return False
    if key in ("huge", "e300") and path.endswith(("latency", "hop_latency")):
        return True
    return key in always


def cases(data: Path) -> list[Case]:
    """The whole corpus (deterministic order)."""
    d = str(data)
    out: list[Case] = []

    def add(case_id, klass, *argv, **kw):
        out.append(Case(case_id, klass, tuple(str(a) for a in argv), **kw))

    # -- scenario files: every field with every kind of hostile value, through `run`
    recent = set(_recent_files())
    for case_id in _scenario_files():
        if case_id.startswith("limit.") or case_id in ("valid", "too-big"):
            continue
        klass = ("names" if case_id.startswith("name=") else
                 "types" if case_id.rsplit("=", 1)[-1] in ("true", "false", "string", "numeric-string", "float",
                                                           "whole-float", "list", "map", "null", "empty", "int")
                 or "=str" in case_id else "physical")
        field = case_id.rsplit("=", 1)[0]
        field = field.replace("topology.", "topology_options.").split(".", 1)[-1] \
            if field.startswith("topology.") else field
        field = {"cluster.gpu.peak.bf16": "cluster.gpu.peak"}.get(field, field)
        named = not case_id.startswith(("unknown", "missing", "cluster.topology=str"))
        add(f"run/{case_id}", klass, "run", f"{d}/scenarios/{case_id}.yaml", "--json", "--out", "{here}/out",
            field=field.split(".")[-1].split("=")[0] if named else None,
            refuse=_must_refuse(case_id) or case_id in recent,
            sample=case_id.endswith(("=neg", "=nan", "=true", "=str0", "=newline")) or case_id in recent)
    add("run/valid", "valid", "run", f"{d}/scenarios/valid.yaml", "--json", "--out", "{here}/out", sample=True)
    add("run/valid-text", "valid", "run", f"{d}/scenarios/valid.yaml", "--network", "analytic", "--out",
        "{here}/out")
    # -- resource limits
    for name, must in [("gpus-1e6", True), ("gpus-1e7", True), ("batch-8e12", True), ("batch-1e8", True),
                       ("seq-2e24", False), ("steps-over", True), ("hidden-1e9", True), ("layers-1e6", True),
                       ("vocab-1e12", True), ("gpus-per-node-576", False)]:
        add(f"run/limit.{name}", "limits", "run", f"{d}/scenarios/limit.{name}.yaml", "--json", "--out",
            "{here}/out", refuse=must, sample=name in ("gpus-1e6", "batch-8e12"))
    add("collective/gpus-1e6", "limits", "collective", "--gpus", 10**6, "--json", refuse=True, sample=True)
    add("collective/gpus-1e7", "limits", "collective", "--gpus", 10**7, "--json", refuse=True)
    add("collective/gpus-1", "limits", "collective", "--gpus", 1, "--json", refuse=True)  # round 35: 0 ns, inf algbw
    add("compare/gpus-1e6", "limits", "compare", f"{d}/scenarios/valid.yaml", "--gpus", 1048576, "--out",
        "{here}/out", refuse=True)
    add("sweep/gpus-1e6", "limits", "sweep", f"{d}/scenarios/valid.yaml", "--gpus", "16,1048576", "--jobs", 1,
        "--no-plots", "--network", "analytic", "--json", "--out", "{here}/out")
    # -- files
    for name, needle in [("binary", "UTF-8"), ("nul", "binary"), ("latin1", "UTF-8"), ("empty", None),
                         ("list", None), ("scalar", None), ("sparse-50mb", "MiB"), ("big-4mb", "MiB"),
                         ("alias-bomb", "alias"), ("alias-bomb-in-error", None), ("recursive-alias", "recursive"),
                         ("deep-flow", None), ("deep-block", "nests"), ("tabs", "YAML"), ("a-directory", None),
                         ("fifo", None)]:
        add(f"run/file.{name}", "files", "run", f"{d}/{name}.yaml", "--out", "{here}/out", field=needle,
            refuse=True, sample=name in ("binary", "alias-bomb", "fifo"))
    add("run/file.missing", "files", "run", f"{d}/no-such.yaml", refuse=True, field="SCENARIO")
    add("run/file.long-name", "files", "run", "x" * 5000, refuse=True)
    add("run/file.nul-name", "files", "run", "a\0b.yaml", refuse=True)
    add("run/file.dev-zero", "files", "run", "/dev/zero", refuse=True)
    for path in sorted((data / "fabrics").glob("*")) if (data / "fabrics").is_dir() else []:
        fabric = BASE | {"cluster": {"gpu": "h100-sxm", "gpus_per_node": 2, "nodes": 1, "topology": str(path)},
                         "parallelism": {"tp": 2, "pp": 1, "dp": 1},
                         "training": {**BASE["training"], "global_batch_size": 4}}
        scen = data / "scenarios" / f"fabric.{path.name}.yaml"
        if not scen.exists():
            scen.write_text(_dump(fabric))
        key = path.stem.rsplit("-", 1)[-1]
        must = _must_refuse(f"{path.stem}={key}") or path.suffix == ".graphml" or path.stem.startswith(
            ("binary", "alias", "gpus-per-node", "links-not", "nodes-not", "unknown", "disconnected", "rank-"))
        if path.stem.startswith("link-latency-") and key in ("zero", "null"):
            must = False
        if path.stem.startswith("link-count-") and key in ("null",):
            must = False
        if path.stem.startswith("switch-latency-") and key in ("zero",):
            must = False
        add(f"run/fabric.{path.name}", "fabric files", "run", str(scen), "--network", "flow", "--json", "--out",
            "{here}/out", refuse=must, sample=path.name in ("link-bandwidth-neg.yaml", "billion-laughs.graphml"))
    # -- options of every subcommand
    bad_ints = {"neg": "-1", "zero": "0", "huge": str(10**30), "float": "2.5", "e12": "1e12", "string": "abc",
                "empty": "", "inf": "inf", "nan": "nan", "bool": "true", "hex": "0x10"}
    bad_floats = {"neg": "-1", "zero": "0", "inf": "inf", "nan": "nan", "huge": "1e308", "over": "1e400",
                  "tiny": "1e-320", "string": "abc", "empty": "", "bool": "true"}
    valid = f"{d}/scenarios/valid.yaml"
    for key, value in bad_ints.items():
        add(f"run/--steps={key}", "options", "run", valid, "--steps", value, "--out", "{here}/o", refuse=True,
            field="steps")
        add(f"run/--trace-ranks={key}", "options", "run", valid, "--trace-ranks", value, "--network", "analytic",
            "--out", "{here}/o", refuse=key not in ("huge", "e12", "hex"), field="trace-ranks")
        for option in ("--gpus", "--gpus-per-node", "--step-factor"):
            add(f"collective/{option}={key}", "options", "collective", option, value, "--json",
                refuse=not (option == "--step-factor" and key in ("huge", "e12", "hex")), field=option.lstrip("-"))
        add(f"compare/--gpus={key}", "options", "compare", valid, "--gpus", value, "--network", "analytic",
            "--out", "{here}/o", refuse=True, field="gpus")
        add(f"sweep/--gpus={key}", "options", "sweep", valid, "--gpus", value, "--jobs", "1", "--no-plots",
            "--out", "{here}/o", refuse=key != "hex", field="gpus")
        add(f"sweep/--jobs={key}", "options", "sweep", valid, "--jobs", value, "--gpus", "16", "--no-plots",
            "--network", "analytic", "--out", "{here}/o", refuse=key not in ("hex",), field="jobs",
            sample=key == "huge")
        add(f"replay/--scale-dp={key}", "options", "replay", f"{d}/traces/good.rank0.json", "--scale-dp", value,
            "--json", refuse=True, field="scale-dp", sample=key == "e12")
        add(f"replay/--events={key}", "options", "replay", f"{d}/traces/good.rank0.json", "--events", value,
            refuse=key not in ("huge", "hex"), field="events")
        add(f"replay/--gpus-per-node={key}", "options", "replay", f"{d}/traces/good.rank0.json", "--gpus-per-node",
            value, "--json", refuse=True, field="gpus-per-node")
        add(f"laws-project/--years={key}", "options", "laws", "project", "--years", value, "--json", refuse=True,
            field="years")
        add(f"laws-project/--start-year={key}", "options", "laws", "project", "--start-year", value, "--json",
            refuse=key != "hex", field="start-year")
    for key, value in bad_floats.items():
        for sub, option in [("compare", "--target-loss"), ("sweep", "--target-loss"), ("sweep", "--threshold")]:
            add(f"{sub}/{option}={key}", "options", sub, valid, option, value, "--network", "analytic",
                *(("--jobs", "1", "--no-plots", "--gpus", "16") if sub == "sweep" else ()), "--out", "{here}/o",
                refuse=key not in ("huge", "tiny"), field=option.lstrip("-"))
        for option in ("--params", "--tokens"):
            other = "--tokens" if option == "--params" else "--params"
            add(f"laws-eval/{option}={key}", "options", "laws", "eval", option, value, other, "1e12", "--json",
                refuse=key != "huge", field=option.lstrip("-"), sample=key == "tiny")
        add(f"laws-optimal/--flop={key}", "options", "laws", "optimal", "--flop", value, "--json",
            refuse=key != "huge", field="flop", sample=key == "huge")
        for option in ("--gamma", "--kappa", "--years"):
            args = {"--gamma": "1", "--years": "5"}
            args[option] = value
            flat = [x for pair in args.items() for x in pair]  # --kappa once (it was given twice: round 35 review)
            add(f"laws-relative-loss/{option}={key}", "options", "laws", "relative-loss", *flat, "--json",
                refuse=key not in ("tiny", "zero"), field=option.lstrip("-"))
        for option in ("--min-flop", "--max-flop"):
            add(f"laws-plot/{option}={key}", "options", "laws", "plot", option, value, "--out", "{here}/o",
                refuse=key not in ("tiny",) or option == "--max-flop", field=option.lstrip("-"))
        for option in ("--budget-usd", "--power-cap-w", "--gamma"):
            add(f"laws-project/{option}={key}", "options", "laws", "project", option, value, "--json",
                refuse=key not in ("tiny", "zero") or option != "--gamma", field=option.lstrip("-"))
        for option in ("--target-loss", "--tokens", "--goodput"):
            extra = () if option != "--goodput" else ("--target-loss", "2.5")
            add(f"loss-vs-time/{option}={key}", "options", "laws", "loss-vs-time", "--summary",
                f"{d}/summaries/good.json", option, value, *extra, "--json", refuse=key not in ("tiny",),
                field=option.lstrip("-"), sample=key == "nan")
        add(f"loss-vs-time/--busy-fraction={key}", "options", "laws", "loss-vs-time", "--summary",
            f"{d}/summaries/good.json", "--target-loss", "2.5", "--busy-fraction", value, "--json",
            refuse=key not in ("zero", "tiny"), field="busy-fraction")
        add(f"replay/--until={key}", "options", "replay", f"{d}/traces/good.rank0.json", "--until", value,
            refuse=True, field="until")
        add(f"replay/--until={key}s", "options", "replay", f"{d}/traces/good.rank0.json", "--until", value + "s",
            refuse=key not in ("zero", "tiny", "huge", "neg"), field="until")
    strings = {"bogus": "bogus", "empty": "", "nul": "a\0b", "long": "x" * 5000, "newline": "a\nb",
               "injection": "[red]x[/red]"}
    for key, value in strings.items():
        for sub, option in [("run", "--network"), ("validate", "--network"), ("collective", "--op"),
                            ("collective", "--algorithm"), ("collective", "--protocol"), ("collective", "--sharp"),
                            ("collective", "--gpu"), ("collective", "--nic"), ("collective", "--topology"),
                            ("collective", "--min-bytes"), ("collective", "--max-bytes"),
                            ("collective", "--topology-option"), ("compare", "--topology"), ("compare", "--law"),
                            ("compare", "--option"), ("sweep", "--topology"), ("sweep", "--vary"),
                            ("sweep", "--scheduler"), ("sweep", "--option"), ("sweep", "--law"),
                            ("replay", "--topology"), ("replay", "--gpu"), ("replay", "--nic"),
                            ("replay", "--algorithm"), ("replay", "--gpu-scaling"), ("replay", "--option"),
                            ("replay", "--topology-option"), ("laws-eval", "--law"), ("laws-eval", "--fit"),
                            ("laws-project", "--law"), ("laws-project", "--phase"), ("loss-vs-time", "--law"),
                            ("validate", "--only")]:
            argv = {"run": ("run", valid, "--out", "{here}/o"), "validate": ("validate",),
                    "collective": ("collective", "--json"), "compare": ("compare", valid, "--out", "{here}/o"),
                    "sweep": ("sweep", valid, "--jobs", "1", "--gpus", "16", "--no-plots", "--out", "{here}/o"),
                    "replay": ("replay", f"{d}/traces/good.rank0.json", "--json"),
                    "laws-eval": ("laws", "eval", "--params", "1e9", "--tokens", "1e10"),
                    "laws-project": ("laws", "project", "--json"),
                    "loss-vs-time": ("laws", "loss-vs-time", "--summary", f"{d}/summaries/good.json",
                                     "--target-loss", "2.5", "--json")}[sub]
            if option == "--fit":
                argv = (*argv, "--law", "custom")
            if sub == "validate" and option == "--network" and key != "bogus":
                argv = (*argv, "--only", "nothing-matches")
            if sub == "validate" and option == "--only" and key == "empty":
                continue  # every calibration case: valid, and minutes long
            add(f"{sub}/{option}={key}", "options", *argv, option, value, refuse=True, field=option.lstrip("-"),
                sample=key == "nul")
    for key, value in {"injection-key": "a=[red]", "dims-bomb": "dims=[1000000,1000000,1000000]",
                       "alias": "dims=&a [*a]", "radix-huge": "radix=1e12", "link-neg": "link=-5 GB/s"}.items():
        add(f"collective/--topology-option={key}", "options", "collective", "--topology", "torus",
            "--topology-option", value, "--json", refuse=True)
        add(f"compare/--topology=torus:{key}", "options", "compare", valid, "--topology", f"torus:{value}",
            "--out", "{here}/o", refuse=True)
    for key, value in {"1e12": "64,...,1e12", "ellipsis-huge": "1,...,1000000000000", "neg": "16,-32",
                       "dup": "16,16", "zero": "0", "commas": ",,,", "many": ",".join(["16"] * 20000),
                       "float": "16.5"}.items():
        add(f"sweep/--gpus=list-{key}", "options", "sweep", valid, "--gpus", value, "--jobs", "1", "--no-plots",
            "--out", "{here}/o", refuse=True, field="gpus", sample=key == "1e12")
    for key, value in {"huge-list": "parallelism.tp=" + ",".join(str(i) for i in range(1, 20000)),
                       "alias-bomb": "parallelism.tp=" + _alias_bomb().replace("\n", " "),
                       "reserved": "cluster.nodes=4", "unknown": "bogus.x=1", "nan": "economics.pue=.nan",
                       "neg": "parallelism.tp=-2", "no-values": "parallelism.tp="}.items():
        add(f"sweep/--vary={key}", "options", "sweep", valid, "--vary", value, "--gpus", "16", "--jobs", "1",
            "--no-plots", "--network", "analytic", "--out", "{here}/o", refuse=key not in ("neg", "nan"),
            field="vary" if key not in ("unknown", "nan", "neg", "alias-bomb") else None)
    add("sweep/--scheduler=unreachable", "options", "sweep", valid, "--scheduler", "tcp://127.0.0.1:9", "--gpus",
        "16", "--no-plots", "--out", "{here}/o", refuse=True, field="scheduler")
    add("sweep/--jobs+--scheduler", "options", "sweep", valid, "--jobs", "2", "--scheduler", "tcp://127.0.0.1:9",
        "--out", "{here}/o", refuse=True, field="jobs")
    add("collective/sizes-inverted", "options", "collective", "--min-bytes", "1G", "--max-bytes", "1K", "--json",
        refuse=True, field="max-bytes")
    add("collective/sizes-huge", "options", "collective", "--min-bytes", "1", "--max-bytes", "1e30", "--json",
        refuse=True, field="max-bytes")
    add("collective/sizes-1e18", "options", "collective", "--max-bytes", "1000000000000000000", "--network",
        "analytic", "--json")
    # round 34: the chunk model queued every chunk of a 1 GiB tree all-reduce on 1,024 GPUs (5.4 million, ~2.6 GB;
    # 12.7 GB at 8 GiB) with no bound: refused against the memory limit before they are made
    add("collective/--network=chunk-queue-huge", "limits", "collective", "--network", "chunk", "--algorithm", "tree",
        "--gpus", 1024, "--min-bytes", "1G", "--max-bytes", "1G", "--json", refuse=True, field="network")
    add("validate/--only-nothing", "options", "validate", "--only", "nothing-matches", refuse=True, field="only")
    add("validate/--held-out-nothing", "options", "validate", "--held-out", "--only", "nothing-matches",
        refuse=True, field="only")
    add("validate/--summary", "options", "validate", "--summary", refuse=True)
    for key, value in {"neg": "gpu_speed_cv=-0.1", "nan": "gpu_speed_cv=nan", "draw": "gpu_speed_draw=bogus",
                       "unknown": "bogus=1", "empty": "", "no-value": "=", "seed-neg": "seed=-1"}.items():
        add(f"validate/--variability={key}", "options", "validate", "--held-out", "--only", "nothing-matches",
            "--variability", value, refuse=True, field="variability", sample=True)
    # message sizes are bytes: a bare -1, nan or 1e30, and anything beyond 1 PB, refused naming the option
    for key, value in {"neg": "-1", "nan": "nan", "e30": "1e30", "e30-unit": "1e30 B", "huge-int": str(10**29),
                       "2PB": "2 PB", "rate": "400 Gb/s"}.items():
        add(f"collective/--max-bytes={key}", "options", "collective", "--max-bytes", value, "--network", "analytic",
            "--json", refuse=True, field="max-bytes", sample=True)
    add("schema/extra-arg", "options", "schema", "extra", refuse=True)
    add("no-such-command", "options", "frobnicate", refuse=True)
    # -- summaries for loss-vs-time
    for path in sorted((data / "summaries").glob("*.json")) if (data / "summaries").is_dir() else []:
        must = path.stem not in ("good", "mfu-null", "mfu-zero") and not path.stem.endswith(("-huge",))
        add(f"loss-vs-time/summary.{path.stem}", "summary files", "laws", "loss-vs-time", "--summary", str(path),
            "--target-loss", "2.5", "--json", refuse=must, field="summary",
            sample=path.stem in ("binary", "step_time_s-neg"))
    # -- traces for replay
    for path in sorted((data / "traces").glob("*")) if (data / "traces").is_dir() else []:
        if path.name.startswith("good"):
            continue
        # malformed events are skipped by the readers' stated policy (docs/traces.md): a result is fine for those
        must = not path.name.startswith(("device-props", "dur-neg", "dur-string", "group-huge", "name-nul",
                                         "nelems", "pg-ranks", "trace.rank", "world-float", "world-true"))
        add(f"replay/trace.{path.name}", "trace files", "replay", str(path), "--json", refuse=must,
            sample=path.name in ("bomb.rank0.json.gz", "world-1e9.rank0.json"))
    add("replay/trace.missing", "trace files", "replay", f"{d}/traces/nope.rank0.json", refuse=True)
    add("replay/trace.directory", "trace files", "replay", f"{d}/traces", refuse=True)
    # a device: no size to check, read without end (a MemoryError, or the process killed; round 33)
    add("replay/trace.dev-zero", "trace files", "replay", "/dev/zero", refuse=True, sample=True)
    add("replay/trace.mixed", "trace files", "replay", f"{d}/traces/good.rank0.json", f"{d}/traces/garbage.0.et",
        refuse=True)
    add("replay/valid", "valid", "replay", f"{d}/traces/good.rank0.json", "--json", sample=True)
    # -- outputs
    # run with --plot: its files then outgrow the 64 KiB disk (without the timeline they fit)
    for sub, argv in [("run", ("run", valid, "--network", "analytic", "--plot")),
                      ("compare", ("compare", valid, "--network", "analytic")),
                      ("sweep", ("sweep", valid, "--gpus", "16", "--jobs", "1", "--no-plots", "--network",
                                 "analytic")),
                      ("laws-plot", ("laws", "plot")), ("laws-project", ("laws", "project")),
                      ("loss-vs-time", ("laws", "loss-vs-time", "--summary", f"{d}/summaries/good.json",
                                        "--target-loss", "2.5")),
                      ("replay", ("replay", f"{d}/traces/good.rank0.json"))]:
        for key, out_dir in [("under-a-file", f"{d}/a-file/sub"), ("a-file", f"{d}/a-file"),
                             ("long-name", "{here}/" + "n" * 300), ("nul", "{here}/a\0b"),
                             ("proc", "/proc/simcluster-out"), ("sys", "/sys/simcluster-out"),
                             ("read-only", "{readonly}/out")]:
            add(f"{sub}/--out={key}", "outputs", *argv, "--out", out_dir, refuse=True, field="out",
                sample=key in ("under-a-file", "read-only"))
        # an unset shell variable (--out "$OUT"): read as '.', it went to the working folder's sibling (round 33)
        add(f"{sub}/--out=empty", "outputs", *argv, "--out", "", refuse=True, field="out", sample=sub == "run")
        add(f"{sub}/--out=full-disk", "outputs", *argv, "--out", "{here}/full", limit="fsize", refuse=True,
            field="out", sample=sub in ("run", "sweep"))
        add(f"{sub}/--out=tiny-disk", "outputs", *argv, "--out", "{tinydisk}", refuse=sub not in (
            "laws-project", "sweep"), field="out", sample=sub in ("run", "sweep"))
    # -- overwrites: a second command into the first one's folder must pick another
    for sub, argv in [("run", ("run", valid, "--network", "analytic", "--json")),
                      ("compare", ("compare", valid, "--network", "analytic", "--json")),
                      ("sweep", ("sweep", valid, "--gpus", "16", "--jobs", "1", "--no-plots", "--network",
                                 "analytic", "--json")),
                      ("laws-plot", ("laws", "plot")), ("laws-project", ("laws", "project", "--json")),
                      ("loss-vs-time", ("laws", "loss-vs-time", "--summary", f"{d}/summaries/good.json",
                                        "--target-loss", "2.5", "--json")),
                      ("replay", ("replay", f"{d}/traces/good.rank0.json", "--json"))]:
        add(f"{sub}/--out=another-runs-folder", "overwrites", *argv, "--out", "{occupied}", sample=sub in (
            "loss-vs-time", "sweep"))
    # a command refused after choosing the folder: its note ("holds other files: writing to ...-2/") came first,
    # two lines (round 32)
    too_big = f"{d}/scenarios/too-big.yaml"
    for sub, argv in [("run", ("run", too_big, "--network", "analytic", "--json")),
                      ("compare", ("compare", too_big, "--network", "analytic", "--json")),
                      ("loss-vs-time", ("laws", "loss-vs-time", too_big, "--tokens", "1e9", "--json"))]:
        add(f"{sub}/--out=another-runs-folder-refused", "overwrites", *argv, "--out", "{occupied}", refuse=True,
            field="parallelism", sample=sub == "run")
    # a sweep whose every run fails: its note came before the error, and its folder of failures stayed (round 33)
    add("sweep/--out=another-runs-folder-all-failed", "overwrites", "sweep", valid, "--gpus", "16", "--topology",
        "nosuch-fabric", "--jobs", "1", "--no-plots", "--network", "analytic", "--json", "--out", "{occupied}",
        refuse=True, field="topology", sample=True)
    # -- processes: signals and stdout on a full device
    add("run/sigint", "signals", "run", valid, "--steps", "50", "--out", "{here}/o", process="sigint", sample=True)
    add("run/sigterm", "signals", "run", valid, "--steps", "50", "--out", "{here}/o", process="sigterm")
    # enough points that the sweep is still running when the signal comes (it is sent a second after the
    # workers start; a sweep that finished first would die of the signal during interpreter shutdown)
    add("sweep/sigterm-pool", "signals", "sweep", valid, "--gpus", "16,32,64,128,256,512,1024,2048,4096,8192",
        "--jobs", "2", "--no-plots", "--out", "{here}/o", process="sigterm-pool", sample=True)
    add("schema/full-stdout", "outputs", "schema", process="full-stdout", refuse=True)
    add("laws-project/full-stdout", "outputs", "laws", "project", "--json", process="full-stdout", refuse=True)
    ids = [case.id for case in out]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    return out


# ---- judging ----------------------------------------------------------------------------------------------------
# Keys whose values are physical amounts that cannot be negative: times, energies, costs, powers, sizes, rates.
_NON_NEGATIVE_KEY = re.compile(r"(_s|_j|_usd|_w|_bytes|_kg|_flop|_per_s|hours|_per_gpu|tflops|mfu|hfu|gpus|events|"
                               r"tokens|loss|utilisation|efficiency|speedup|goodput)$")


def _bad_number(data, where: str = "") -> str | None:
    """The first NaN, infinity or negative physical amount in a parsed JSON document, as 'key=value'."""
    if isinstance(data, dict):
        for key, value in data.items():
            found = _bad_number(value, str(key))
            if found:
                return found
    elif isinstance(data, list):
        for value in data:
            found = _bad_number(value, where)
            if found:
                return found
    elif isinstance(data, float | int) and not isinstance(data, bool):
        if isinstance(data, float) and not math.isfinite(data):
            return f"{where}={data}"
        if data < 0 and _NON_NEGATIVE_KEY.search(where or "") and "change" not in where and "error" not in where:
            return f"{where}={data}"
    return None


def _strict_json(text: str):
    def refuse(token):
        raise ValueError(f"JSON holds {token}")

    return json.loads(text, parse_constant=refuse)


def _check_outputs(here: Path, stdout: str, argv: tuple[str, ...]) -> str | None:
    """Why an exit-0 case's outputs hold an impossible number (None: they do not)."""
    if "--json" in argv and stdout.strip():
        try:
            found = _bad_number(_strict_json(stdout))
        except ValueError as err:
            return f"stdout: {err}"
        if found:
            return f"stdout: {found}"
    elif re.search(r"\b(nan|NaN|inf|Infinity)\b", stdout):
        return "stdout: " + re.search(r".{0,40}\b(nan|NaN|inf|Infinity)\b.{0,20}", stdout).group(0)
    for path in sorted(here.rglob("*")) if here.is_dir() else []:
        if re.match(r"^\..*\.tmp", path.name):
            return f"{path.name}: a temporary file left behind"
        if path.suffix == ".json" and path.is_file():
            try:
                found = _bad_number(_strict_json(path.read_text()))
            except ValueError as err:
                return f"{path.name}: {err}"
            if found:
                return f"{path.name}: {found}"
        if path.suffix == ".csv" and path.is_file():
            with path.open() as handle:
                for row in csv.DictReader(handle):
                    for key, value in row.items():
                        if value in ("inf", "-inf", "nan", "NaN"):
                            return f"{path.name}: {key}={value}"
                        with contextlib.suppress(TypeError, ValueError):
                            if float(value) < 0 and _NON_NEGATIVE_KEY.search(key or ""):
                                return f"{path.name}: {key}={value}"
    return None


def _norm(text: str) -> str:
    return text.lower().replace("_", "-")


def judge(case: Case, code: int | None, stdout: str, stderr: str, here: Path, error: str = "") -> tuple[str, str]:
    """(outcome, detail) of one case that returned."""
    if error:
        return ("memory" if "MemoryError" in error else "traceback"), error
    if "Traceback" in stderr:
        return "traceback", stderr.strip().splitlines()[-1][:300]
    if case.process in ("sigint", "sigterm", "sigterm-pool"):
        want = 130 if case.process == "sigint" else 143
        if code == want and stderr.count("\n") == 1 and stderr.startswith("interrupted by"):
            return "ok", stderr.strip()
        if code == 0:
            return "ok", "finished before the signal"
        return "exit", f"code {code}: {stderr.strip()[:300]}"
    if code == 2:
        if stderr.count("\n") != 1 or not stderr.startswith("error: "):
            return "lines", stderr[:300]
        if case.field and _norm(case.field) not in _norm(stderr):
            return "unnamed", stderr.strip()[:300]
        return "refused", stderr.strip()[:300]
    if code == 0:
        bad = _check_outputs(here, stdout, case.argv)
        if bad:
            return "nonsense", bad
        if case.refuse:
            return "accepted", (stdout.strip().splitlines() or [""])[-1][:200]
        return "ok", ""
    return "exit", f"code {code}: {stderr.strip()[:300]}"


# ---- running ----------------------------------------------------------------------------------------------------
# The files of another run's folder (besides its summary.json): no command may write there.
_RUN_FILES = ("events.csv", "links.csv", "timeline.png")


class CaseTimeout(BaseException):
    """Raised by SIGALRM inside a case that ran past its time."""


def _expand(case: Case, data: Path, here: Path) -> list[str]:
    occupied = data / "occupied-run"
    if not occupied.exists():
        occupied.mkdir(parents=True)
        (occupied / "summary.json").write_text(json.dumps({"step_time_s": 1.0}))
        for name in _RUN_FILES:
            (occupied / name).write_text("theirs\n")
    tiny = str(data / "tinydisk" / here.name)
    return [a.replace("{data}", str(data)).replace("{here}", str(here)).replace("{occupied}", str(occupied))
            .replace("{readonly}", str(data / "readonly")).replace("{tinydisk}", tiny) for a in case.argv]


def _occupied_intact(data: Path) -> str | None:
    occupied = data / "occupied-run"
    for path in occupied.iterdir():
        if path.name not in ("summary.json", *_RUN_FILES):
            return f"wrote {path.name} into another run's folder"
        if path.name != "summary.json" and path.read_text() != "theirs\n":
            return f"overwrote {path.name} of another run"
    return None


def run_in_process(case: Case, data: Path, here: Path, timeout_s: float = CASE_TIMEOUT_S) -> Result:
    """Run one case through ``simcluster.cli.main`` in this process (its cwd is ``here``)."""
    from simcluster.cli import main

    here.mkdir(parents=True, exist_ok=True)
    argv = _expand(case, data, here)
    out, err = io.StringIO(), io.StringIO()
    code, error = None, ""
    previous_cwd = os.getcwd()
    fsize = resource.getrlimit(resource.RLIMIT_FSIZE)

    def alarm(_signum, _frame):
        raise CaseTimeout()

    old = signal.signal(signal.SIGALRM, alarm)
    started = time.perf_counter()
    try:
        os.chdir(here)
        if case.limit == "fsize":
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (FULL_DISK_BYTES, fsize[1]))
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except CaseTimeout:
        return Result(case.id, case.klass, "hang", None, time.perf_counter() - started, f"over {timeout_s:.0f} s")
    except MemoryError:
        error = "MemoryError"
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException as exc:  # noqa: BLE001 - what escaped main is the finding
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:300]
        tb = traceback.extract_tb(exc.__traceback__)
        if tb:
            error += f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        resource.setrlimit(resource.RLIMIT_FSIZE, fsize)
        os.chdir(previous_cwd)
    seconds = time.perf_counter() - started
    outcome, detail = judge(case, code, out.getvalue(), err.getvalue(), here, error)
    if case.limit == "fsize" and outcome == "refused" and any(here.rglob("*")):
        outcome, detail = "nonsense", f"left {[p.name for p in here.rglob('*')][:5]} after a full disk"
    if case.klass == "overwrites" and outcome == "ok":
        broken = _occupied_intact(data)
        if broken:
            outcome, detail = "nonsense", broken
    return Result(case.id, case.klass, outcome, code, seconds, detail)


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))


def _child_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "120"}


def _descendants(pid: int) -> set[int]:
    found, frontier = set(), [pid]
    while frontier:
        parent = frontier.pop()
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{parent}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{parent}/task/{task}/children") as handle:
                    for child in handle.read().split():
                        found.add(int(child))
                        frontier.append(int(child))
    return found


def run_subprocess(case: Case, data: Path, here: Path, timeout_s: float = CASE_TIMEOUT_S) -> Result:
    """Run one case as ``python -m simcluster.cli`` (signals, a full stdout)."""
    here.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "simcluster.cli", *_expand(case, data, here)]
    started = time.perf_counter()
    stdout = subprocess.DEVNULL
    if case.process == "full-stdout":
        stdout = open("/dev/full", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(argv, cwd=here, stdout=stdout, stderr=subprocess.PIPE, text=True, env=_child_env(),
                            preexec_fn=_limits)
    orphans = set()
    try:
        if case.process in ("sigint", "sigterm", "sigterm-pool"):
            deadline = time.monotonic() + timeout_s
            # wait until the command is working (its module imports take a second or more), then signal it
            while time.monotonic() < deadline and proc.poll() is None:
                children = _descendants(proc.pid)
                if case.process != "sigterm-pool" and time.perf_counter() - started > 4.0:
                    break
                if case.process == "sigterm-pool" and len(children) >= 2 and any(here.rglob("grid.json")):
                    time.sleep(1.0)
                    break
                time.sleep(0.1)
            orphans = _descendants(proc.pid)
            proc.send_signal(signal.SIGINT if case.process == "sigint" else signal.SIGTERM)
        _, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return Result(case.id, case.klass, "hang", None, time.perf_counter() - started, f"over {timeout_s:.0f} s")
    finally:
        if stdout is not subprocess.DEVNULL:
            stdout.close()
    seconds = time.perf_counter() - started
    if proc.returncode < 0:
        return Result(case.id, case.klass, "crash", proc.returncode, seconds, f"killed by signal {-proc.returncode}")
    outcome, detail = judge(case, proc.returncode, "", stderr, here)
    time.sleep(0.5)
    alive = [pid for pid in orphans if Path(f"/proc/{pid}").exists()
             and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2:3]]
    if alive:
        outcome, detail = "crash", f"worker processes {alive} outlived the command"
    return Result(case.id, case.klass, outcome, proc.returncode, seconds, detail)


def _worker(data: Path, ids: list[str], work: Path, proto_fd: int) -> None:
    """Run cases in this process, one JSON line per case on the protocol stream ``proto_fd``."""
    import warnings

    warnings.simplefilter("always")
    proto = os.fdopen(proto_fd, "w", buffering=1)
    by_id = {case.id: case for case in cases(data)}
    for index, case_id in enumerate(ids):
        proto.write(json.dumps({"start": case_id}) + "\n")
        result = run_in_process(by_id[case_id], data, work / f"c{index:04d}")
        proto.write(json.dumps(asdict(result)) + "\n")


def _run_worker(data: Path, ids: list[str], work: Path, timeout_s: float) -> list[Result]:
    """Run ``ids`` in worker processes: a worker that hangs in C code or dies is replaced, its case recorded."""
    results: list[Result] = []
    remaining = list(ids)
    by_id = {case.id: case for case in cases(data)}
    while remaining:
        read_fd, write_fd = os.pipe()
        batch_dir = work / f"w{len(results):04d}"
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from pathlib import Path; from tests.cli.hostile_corpus import "
             "_worker; _worker(Path(sys.argv[1]), sys.argv[4:], Path(sys.argv[2]), int(sys.argv[3]))", str(data),
             str(batch_dir), str(write_fd), *remaining], cwd=REPO, env=_child_env(), preexec_fn=_limits,
            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(write_fd)
        stream = os.fdopen(read_fd)
        current, started = None, time.monotonic()
        buffer = ""
        done_here = 0
        while True:
            ready, _, _ = select.select([stream], [], [], 1.0)
            if ready:
                line = stream.readline()
                if not line:
                    break
                buffer = line
                message = json.loads(buffer)
                if "start" in message:
                    current, started = message["start"], time.monotonic()
                else:
                    results.append(Result(**message))
                    remaining.remove(message["id"])
                    current = None
                    done_here += 1
            elif current is not None and time.monotonic() - started > timeout_s + 30:
                proc.kill()
                break
        proc.wait()
        stream.close()
        stderr = proc.stderr.read() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        if current is not None:
            case = by_id[current]
            outcome = "hang" if proc.returncode == -signal.SIGKILL else "crash"
            detail = f"worker exit {proc.returncode}: {stderr.strip().splitlines()[-1][:200] if stderr.strip() else ''}"
            results.append(Result(case.id, case.klass, outcome, None, time.monotonic() - started, detail))
            remaining.remove(current)
        elif remaining and done_here == 0:
            raise RuntimeError(f"corpus worker failed to start: {stderr[-2000:]}")
    return results


@contextlib.contextmanager
def _special_folders(data: Path):
    """{"readonly": a folder no process may write into, "tinydisk": a 64 KiB file system (a full disk)}: tmpfs
    mounts when this process may mount (root, who also ignores permission bits), else a folder without write
    permission and no tiny disk; None where a folder cannot be had (its cases are skipped)."""
    folders: dict[str, Path | None] = {}
    mounted = []
    try:
        for name, options in (("readonly", "ro,size=64k"), ("tinydisk", "size=64k")):
            folder = data / name
            folder.mkdir(exist_ok=True)
            if os.geteuid() != 0:
                if name == "readonly":
                    folder.chmod(0o555)
                folders[name] = folder if name == "readonly" else None
                continue
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                                  capture_output=True).returncode == 0
            folders[name] = folder if done else None
            if done:
                mounted.append(folder)
        yield folders
    finally:
        for folder in mounted:
            subprocess.run(["umount", str(folder)], capture_output=True)


def run_corpus(data: Path, work: Path, selected: list[Case], timeout_s: float = CASE_TIMEOUT_S) -> list[Result]:
    """Run ``selected`` cases: in-process ones in a worker under the memory limit, process ones as subprocesses;
    cases needing a read-only folder or a tiny disk are skipped where none can be had."""
    materialise(data)
    order = {case.id: i for i, case in enumerate(selected)}
    results = []
    with _special_folders(data) as folders:
        for name, folder in folders.items():
            if folder is None:
                results += [Result(c.id, c.klass, "skipped", None, 0.0, f"no {name} folder (needs a tmpfs mount)")
                            for c in selected if f"{{{name}}}" in " ".join(c.argv)]
                selected = [c for c in selected if f"{{{name}}}" not in " ".join(c.argv)]
        inline = [case.id for case in selected if case.process is None]
        if inline:
            results += _run_worker(data, inline, work, timeout_s)
        for index, case in enumerate(c for c in selected if c.process is not None):
            results.append(run_subprocess(case, data, work / f"p{index:03d}", timeout_s))
    return sorted(results, key=lambda r: order[r.id])


def table(results: list[Result]) -> str:
    """Classes x outcomes, with the count of each."""
    classes = list(dict.fromkeys(r.klass for r in results))
    used = [o for o in OUTCOMES if any(r.outcome == o for r in results)]
    width = max(len(c) for c in [*classes, "class"]) + 2
    lines = ["class".ljust(width) + "".join(f"{o:>10}" for o in used) + f"{'total':>8}"]
    for klass in [*classes, "all"]:
        rows = [r for r in results if klass in ("all", r.klass)]
        counts = Counter(r.outcome for r in rows)
        lines.append(klass.ljust(width) + "".join(f"{counts.get(o, 0):>10}" for o in used) + f"{len(rows):>8}")
    return "\n".join(lines)
