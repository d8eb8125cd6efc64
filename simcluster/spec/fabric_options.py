"""What a scenario may write under ``cluster.topology_options``: the option names each builtin fabric takes, the
protocol and routing enums, and the unit parsing and range checks of their values.

The scenario validator (``config.Cluster``) asks ``check`` when a scenario is read, so that a bad option is refused
before a run prints anything (round 35 review); ``fabric.topology.build`` parses the same options with ``parse``
(builtins) and ``file_routing`` (fabric files) when it builds, and ``fabric.builders`` takes its option names,
protocols and port bound from here: one source of truth, in the spec layer that reads scenarios (round 35: the check
had lived in ``fabric.topology``, an import from spec up to fabric).
"""

from __future__ import annotations

from pathlib import Path

from simcluster.core import units
from simcluster.core.errors import ScenarioError, shown

# The options each builtin fabric takes, in the order ``fabric.topology.BUILTIN`` lists the fabrics
# (docs/scenario.md, "topology_options").
BUILTIN_OPTIONS: dict[str, tuple[str, ...]] = {
    "nvswitch-node": (),
    "rail-fat-tree": ("tiers", "radix", "spines", "protocol", "routing", "flows_per_pair"),
    "leaf-spine": ("oversubscription", "hosts_per_leaf", "spines", "radix", "protocol", "routing",
                   "leaves_per_pod", "pod_oversubscription", "flows_per_pair"),
    "fat-tree": ("k", "link", "protocol", "routing", "flows_per_pair"),
    "torus": ("dims", "link", "hop_latency"),
    "rail-only": ("radix", "protocol", "routing"),
    "multi-plane": ("planes", "oversubscription", "hosts_per_leaf", "spines", "radix", "protocol", "routing"),
}

# The link kind of each scale-out protocol a Clos builder accepts (``protocol`` option).
PROTOCOL_KIND = {"infiniband": "ib", "ethernet": "ethernet"}
# How flows share equal-cost paths (``routing`` option; ``fabric.routing``): adaptive spraying or one hashed path.
ROUTING_POLICIES = ("adaptive", "ecmp")
# Bound on radix, spines, hosts per leaf and k given as options: the largest switch ASICs have 512 ports
# (Broadcom Tomahawk 5, 51.2 Tb/s as 512 x 100 GbE). It also bounds the size of the graph a small option can ask for.
MAX_SWITCH_PORTS = 512
# Network flows between two GPUs, at most: NCCL opens up to 128 queue pairs per connection (NCCL_IB_MAX_QPS, net_ib.cc;
# NCCL_IB_QPS_PER_CONNECTION), each hashed onto its own path.
MAX_FLOWS_PER_PAIR = 128


def check(topology: str, options: dict | None) -> None:
    """ScenarioError, naming the option, when ``options`` do not suit fabric ``topology`` (a builtin's names, types
    and ranges; a fabric file takes ``routing`` only)."""
    if topology in BUILTIN_OPTIONS:
        parse(topology, options)
    else:
        file_routing(options, topology)


def parse(topology: str, options: dict | None) -> dict:
    """Check a builtin fabric's options against its allowed names; parse unit strings and enums once."""
    options = dict(options or {})
    allowed = BUILTIN_OPTIONS[topology]
    for key in options:
        if key not in allowed:
            raise ScenarioError(f"cluster.topology_options.{key}", f"unknown option for {topology} "
                                f"(allowed: {', '.join(allowed) or 'none'})")
    out = {}
    for key, value in options.items():
        where = f"cluster.topology_options.{key}"
        if key == "link":
            out["link_bytes_per_s"] = units.parse_checked(value, units.BYTES_PER_S, units.POSITIVE, field=where)
        elif key == "hop_latency":
            out["hop_latency_s"] = units.parse_checked(value, units.SECONDS, units.NON_NEGATIVE, field=where)
        elif key == "protocol":
            # a str first: a list or a mapping is unhashable, and `in` a dict raised TypeError (round 35)
            if not isinstance(value, str) or value not in PROTOCOL_KIND:
                raise ScenarioError(where, f"expected one of {', '.join(PROTOCOL_KIND)}, got {value!r}")
            out[key] = value
        elif key == "routing":
            if not isinstance(value, str) or value not in ROUTING_POLICIES:
                raise ScenarioError(where, f"expected one of {', '.join(ROUTING_POLICIES)}, got {value!r}")
            out[key] = value
        elif key == "dims":
            if (not isinstance(value, list | tuple) or not 1 <= len(value) <= 3
                    or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
                raise ScenarioError(where, f"expected 1 to 3 positive integers such as [4, 4, 4], got {value!r}")
            out[key] = list(value)
        elif key in ("oversubscription", "pod_oversubscription"):
            ratio = units.finite_float(value)  # None for an integer past a float's range (round 31: OverflowError)
            if ratio is None or not 1 / MAX_SWITCH_PORTS <= ratio <= MAX_SWITCH_PORTS:
                raise ScenarioError(where, f"expected a ratio such as 4 (for 4:1), from 1/{MAX_SWITCH_PORTS}"
                                    f" to {MAX_SWITCH_PORTS} (ports of a switch), got {shown(value)}")
            out[key] = ratio
        elif key == "flows_per_pair":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_FLOWS_PER_PAIR:
                raise ScenarioError(where, f"expected an integer from 1 to {MAX_FLOWS_PER_PAIR} (network flows between "
                                    f"two GPUs), got {value!r}")
            out[key] = value
        else:
            low = 2 if key in ("radix", "k") else 1
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_SWITCH_PORTS:
                raise ScenarioError(where, f"expected an integer from {low} to {MAX_SWITCH_PORTS} (ports of "
                                    f"the largest switches), got {value!r}")
            out[key] = value
    return out


def file_routing(options: dict | None, path: Path | str) -> str | None:
    """The routing policy a scenario sets for a fabric file (the only option files take), or None."""
    options = dict(options or {})
    unknown = sorted(set(options) - {"routing"})
    if unknown:
        raise ScenarioError(f"cluster.topology_options.{unknown[0]}",
                            f"only routing applies to a fabric file ({path}); other options are for builtin "
                            "fabrics")
    routing = options.get("routing")
    # a str first, as in ``parse``: a list is unhashable where ``in`` meets a set or a dict
    if routing is not None and (not isinstance(routing, str) or routing not in ROUTING_POLICIES):
        raise ScenarioError("cluster.topology_options.routing",
                            f"expected one of {', '.join(ROUTING_POLICIES)}, got {routing!r}")
    return routing
