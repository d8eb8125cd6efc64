"""Bill of materials of a fabric: switches per tier and radix, ports, cables and optics by reach, NICs; their
list price and power (``data/fabric_costs.yaml``), and what they add to a GPU-hour.

Counted from the fabric graph, so builtin and file fabrics are priced alike:
- a switch is a node of role leaf, spine, core or switch; its ports are the cables it terminates; it is priced as
  the cheapest switch model of its protocol (the kind of its links: ``ib`` or ``ethernet``) whose ports are at least
  as fast and whose capacity holds that many ports (breakout: 64 x 400G serve 128 x 200G; beyond the largest
  model: per port of the largest);
- a cable is a pair of directed links between two nodes; a trunk (links summed into one edge) is as many cables
  as its bandwidth holds ports at the fabric's port rate (the NICs' line rate, else the link's own), or, between
  two switches of a fabric whose uplink ports are wider (graph attribute ``uplink_port_bytes_per_s``, set by
  ``rail-fat-tree`` with ``spines`` < radix/2), at that rate; a switch's ports are still counted at the NICs'
  rate, so that the model holding them is chosen by capacity (64 x 400G serve 64 x 200G and 32 x 400G);
- a cable's reach class (dac, aoc, optics-mm, optics-sm) follows from its link class and the topology
  (``cabling``); an optical cable is two transceivers and a fibre;
- a NIC is a node of role nic. NVLink, NVSwitch and PCIe inside a server belong to the server, not the fabric.

``usd_per_gpu_hour`` spreads the capital cost evenly over a stated lifetime (straight-line, no cost of capital,
the fabric fully used by the job: an upper bound on a shared fabric's share) and adds the electricity the fabric
draws (times PUE).
"""

from __future__ import annotations

import copy
import math

import numpy as np

from simcluster.core import catalog
from simcluster.core.errors import ScenarioError

SWITCH_ROLES = ("leaf", "switch", "spine", "core")
HOURS_PER_YEAR = 8766.0  # 365.25 days
# Two trunk bandwidths within this relative margin of a whole number of ports are that many cables (float sums).
_PORT_RTOL = 1e-6


# The largest number an override of the price table takes (a price in USD, a power in W, a port count): world GDP
# is ~1.1e14 USD (World Bank 2024); a trillion is beyond any part of a fabric and keeps sums over its parts finite.
MAX_PRICE_TABLE_ENTRY = 1e12


def costs(overrides: dict | None = None, lifetime_years: float | None = None) -> dict:
    """The price and power table (``fabric_costs.yaml``), with a scenario's ``economics.fabric_prices`` merged in
    (same keys; unknown keys are errors) and its lifetime."""
    from simcluster.spec.config import MAX_FABRIC_LIFETIME_YEARS, MIN_FABRIC_LIFETIME_YEARS

    table = copy.deepcopy(catalog.load("fabric_costs"))
    if overrides:
        _merge(table, overrides, "economics.fabric_prices")
        if not MIN_FABRIC_LIFETIME_YEARS <= table["lifetime_years"] <= MAX_FABRIC_LIFETIME_YEARS:  # 0: ZeroDivision
            raise ScenarioError("economics.fabric_prices.lifetime_years", f"expected {MIN_FABRIC_LIFETIME_YEARS:g} to "
                                f"{MAX_FABRIC_LIFETIME_YEARS:g} years, got {table['lifetime_years']:g}")
    if lifetime_years is not None:
        table["lifetime_years"] = lifetime_years
    return table


def _merge(table: dict, overrides: dict, where: str) -> None:
    if not isinstance(overrides, dict):
        raise ScenarioError(where, f"expected a mapping, got {overrides!r}")
    for key, value in overrides.items():
        path = f"{where}.{key}"
        if key not in table:
            raise ScenarioError(path, f"unknown entry (known: {', '.join(map(str, table))})")
        if isinstance(table[key], dict):
            _merge(table[key], value, path)
        elif isinstance(table[key], str):
            table[key] = str(value)
        else:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ScenarioError(path, f"expected a number >= 0, got {value!r}")
            if value > MAX_PRICE_TABLE_ENTRY:  # 1e308 summed over the parts overflowed the cost to inf (null)
                raise ScenarioError(path, f"expected at most {MAX_PRICE_TABLE_ENTRY:g}, got {value:g} (no switch, NIC "
                                    "or cable costs a trillion USD or draws a terawatt)")
            table[key] = value


def _switch_model(prices: dict, protocol: str, port_gbps: float, ports: int) -> tuple[str, float, float, int]:
    """(model, usd, power_w, radix at ``port_gbps``) of a switch of ``protocol`` using ``ports`` ports of
    ``port_gbps``: the cheapest model of the protocol whose ports are at least that fast and whose capacity holds
    them (a faster port splits into slower ones: breakout, e.g. 64 x 400G as 128 x 200G); beyond the largest, per
    port of the largest."""
    models = {name: m for name, m in prices["switches"].items() if m["protocol"] == protocol} or prices["switches"]
    fast = {n: m for n, m in models.items() if m.get("port_gbps", 0) >= port_gbps * (1 - _PORT_RTOL)} or models

    def radix(model: dict) -> int:
        return int(model["ports"] * model.get("port_gbps", port_gbps) // max(port_gbps, 1e-9)) if port_gbps else int(
            model["ports"])

    fitting = sorted((m["usd"], n) for n, m in fast.items() if radix(m) >= ports)
    if fitting:
        name = fitting[0][1]
        model = fast[name]
        return name, float(model["usd"]), float(model["power_w"]), radix(model)
    name = max(fast, key=lambda n: radix(fast[n]))
    model = fast[name]
    scale = ports / radix(model)
    return name, model["usd"] * scale, model["power_w"] * scale, ports


def _reach(prices: dict, topology: str, link_class: str) -> str:
    cabling = prices["cabling"]
    chosen = {**cabling.get("default", {}), **cabling.get(topology, {})}
    return chosen.get(link_class, "optics-sm")


def _codes(fabric, attribute: str) -> tuple[list, np.ndarray]:
    """(distinct values, each link's index in them) of the per-link list ``attribute`` (``link_class``,
    ``link_kind``): the fabric's own ``<attribute>_codes`` when it keeps them, else found here."""
    kept = getattr(fabric, f"{attribute}_codes", None)
    if kept is not None:
        return kept
    names: dict = {}
    values = getattr(fabric, attribute)
    codes = np.fromiter((names.setdefault(v, len(names)) for v in values), dtype=np.int64, count=len(values))
    return list(names), codes


def _code(names: list, name: str) -> int:
    """Index of ``name`` in ``names``; -1 (matching no link) when absent."""
    return names.index(name) if name in names else -1


def bill(fabric, prices: dict | None = None) -> dict:
    """Counts, capital cost and power of ``fabric``'s scale-out network (module docstring).

    Counted over the fabric's edge table (``Fabric.edge_table``, the graph's edge order) with numpy; sums and dict
    orders follow that order, as a walk over the graph's edges would."""
    prices = prices or costs()
    table = fabric.edge_table
    class_names, class_code = _codes(fabric, "link_class")
    kind_names, kind_code = _codes(fabric, "link_kind")
    rate = np.asarray(fabric.link_bytes_per_s, dtype=float)[table.link_id]
    edge_code = class_code[table.link_id]              # each edge's class, as an index in class_names
    nic_rates = rate[edge_code == _code(class_names, "nic")]
    port_bytes_per_s = float(nic_rates.max()) if len(nic_rates) else None
    # a cable is two directed links: count it once, from the end whose name sorts first
    n = len(table.role)
    links_by_ends = np.sort(table.src_index * n + table.dst_index)
    back = table.dst_index * n + table.src_index
    reverse = (links_by_ends[np.minimum(np.searchsorted(links_by_ends, back), len(back) - 1)] == back
               if len(back) else np.zeros(0, dtype=bool))
    inside = np.isin(edge_code, [_code(class_names, "nvlink"), _code(class_names, "pcie")])  # in the server
    paired = np.flatnonzero(reverse & ~inside)      # the names of these links' ends decide which one counts
    names = table.nodes
    later = np.zeros(len(back), dtype=bool)
    later[paired] = [str(names[u]) > str(names[v]) for u, v in
                     zip(table.src_index[paired].tolist(), table.dst_index[paired].tolist(), strict=True)]
    kept = np.flatnonzero(~(later & reverse) & ~inside)
    port = port_bytes_per_s or rate[kept]
    units = np.maximum(1, np.ceil(rate[kept] / port * (1 - _PORT_RTOL))).astype(np.int64)   # ports at the NIC rate
    count = units                                        # cables
    uplink_port = getattr(getattr(fabric, "tables", None), "graph_attrs", {}).get("uplink_port_bytes_per_s")
    if uplink_port:   # switch-to-switch cables of a wider port rate (rail-fat-tree ``spines``): one cable each
        is_switch = np.array([role in SWITCH_ROLES for role in table.role], dtype=bool)
        between = is_switch[table.src_index[kept]] & is_switch[table.dst_index[kept]]
        wide = np.maximum(1, np.ceil(rate[kept] / uplink_port * (1 - _PORT_RTOL))).astype(np.int64)
        count = np.where(between, wide, units)
    kept_code = edge_code[kept]                          # cables per class, classes in the order the edges meet them
    seen, first_at = np.unique(kept_code, return_index=True)
    totals = np.bincount(kept_code, weights=count, minlength=len(class_names))
    cables_by_class: dict[str, int] = {class_names[c]: int(totals[c]) for c in seen[np.argsort(first_at)].tolist()}
    cables_by_reach: dict[str, int] = {}
    for cls, n_cables in cables_by_class.items():
        reach = _reach(prices, fabric.name, cls)
        if reach not in prices["reach"]:
            raise ScenarioError(f"economics.fabric_prices.cabling.{cls}", f"unknown reach class {reach!r}")
        cables_by_reach[reach] = cables_by_reach.get(reach, 0) + n_cables
    # ports per switch, switches in the order a walk over the edges meets them (u then v of each cable)
    ends = np.column_stack((table.src_index[kept], table.dst_index[kept])).ravel()
    on_switch = np.array([role in SWITCH_ROLES for role in table.role], dtype=bool)[ends]
    ends, end_count = ends[on_switch], np.repeat(units, 2)[on_switch]   # a switch's capacity in NIC-rate ports
    switch_nodes, first, inverse = np.unique(ends, return_index=True, return_inverse=True)
    used_ports = np.bincount(inverse, weights=end_count, minlength=len(switch_nodes)).astype(np.int64)
    non_ib_out = np.bincount(table.src_index, weights=(kind_code[table.link_id] != _code(kind_names, "ib")).astype(
        float), minlength=len(table.role))
    met = np.argsort(first)
    ports = {i: (used, bool(non_ib_out[i] == 0))
             for i, used in zip(switch_nodes[met].tolist(), used_ports[met].tolist(), strict=True)}
    port_gbps = (port_bytes_per_s or 0.0) * 8 / 1e9
    by_tier: dict[str, dict] = {}
    switch_usd = switch_w = 0.0
    models: dict[tuple, tuple] = {}
    for node, (used, all_ib) in ports.items():
        role = table.role[node]
        protocol = "ib" if all_ib else "ethernet"
        if (protocol, used) not in models:
            models[(protocol, used)] = _switch_model(prices, protocol, port_gbps, used)
        model, usd, power_w, radix = models[(protocol, used)]
        tier = by_tier.setdefault(role, {"count": 0, "radix": radix, "ports_used": 0, "model": model})
        tier["count"] += 1
        tier["ports_used"] += used
        tier["radix"] = max(tier["radix"], radix)
        switch_usd += usd
        switch_w += power_w
    nics = sum(1 for role in table.role if role == "nic")
    transceivers = sum(n * prices["reach"][r]["transceivers"] for r, n in cables_by_reach.items())
    cable_usd = sum(n * prices["reach"][r]["cable_usd"] for r, n in cables_by_reach.items())
    cable_w = sum(n * prices["reach"][r]["cable_power_w"] for r, n in cables_by_reach.items())
    optics_usd = sum(n * prices["reach"][r]["transceivers"] * prices["reach"][r].get("transceiver_usd", 0.0)
                     for r, n in cables_by_reach.items())
    optics_w = sum(n * prices["reach"][r]["transceivers"] * prices["reach"][r].get("transceiver_power_w", 0.0)
                   for r, n in cables_by_reach.items())
    nic_usd, nic_w = nics * prices["nic"]["usd"], nics * prices["nic"]["power_w"]
    by_part = {"switches": switch_usd, "transceivers": optics_usd, "cables": cable_usd, "nics": nic_usd}
    power_by_part = {"switches": switch_w, "transceivers": optics_w, "cables": cable_w, "nics": nic_w}
    return {
        "switches": sum(t["count"] for t in by_tier.values()),
        "transceivers": int(transceivers),
        "cables": sum(cables_by_class.values()),
        "nics": nics,
        "capex_usd": sum(by_part.values()),
        "power_w": sum(power_by_part.values()),
        "switches_by_tier": {role: by_tier[role] for role in SWITCH_ROLES if role in by_tier},
        "ports": sum(used for used, _ in ports.values()),
        "cables_by_class": cables_by_class,
        "cables_by_reach": cables_by_reach,
        "capex_by_part_usd": by_part,
        "power_by_part_w": power_by_part,
        "lifetime_years": float(prices["lifetime_years"]),
        "electricity_usd_per_kwh": float(prices["electricity_usd_per_kwh"]),
    }


def usd_per_gpu_hour(fabric_bill: dict, gpus: int, pue: float) -> float:
    """What the fabric adds to one GPU-hour: its capital cost spread evenly over its lifetime and over the GPUs it
    serves, plus its electricity (power x PUE x price)."""
    capex_per_hour = fabric_bill["capex_usd"] / (fabric_bill["lifetime_years"] * HOURS_PER_YEAR)
    energy_per_hour = fabric_bill["power_w"] * pue / 1000.0 * fabric_bill["electricity_usd_per_kwh"]
    return (capex_per_hour + energy_per_hour) / gpus
