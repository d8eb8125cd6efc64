"""Link classes: where a directed link sits in a fabric, for the links table and reports.

A link's ``kind`` says what it is made of (``nvlink``, ``pcie``, ``ib``, ``ethernet``, ``torus``: what NCCL's
efficiencies and the routing policy depend on); its class says which tier of the fabric it belongs to, the
question a fabric choice changes: ``nvlink`` (a GPU's scale-up port, to an NVSwitch or a peer GPU), ``pcie`` (GPU ->
PCIe switch -> NIC), ``nic`` (a NIC's, or a GPU's own network port, cable to its first switch), ``leaf-spine``,
``spine-core`` (switch-to-switch links, named by the two tiers they join, lower first), ``torus`` (GPU-to-GPU
links of a torus). Builders need not say it: it follows from the roles of the two ends. A fabric file may set it
per link (``class``) for links whose ends do not tell (docs/topologies.md).
"""

from __future__ import annotations

NETWORK_SWITCHES = ("leaf", "switch", "spine", "core")  # in tier order, lowest first
_TIER = {role: tier for tier, role in enumerate(NETWORK_SWITCHES)}
_SCALE_UP = frozenset({"gpu", "nvswitch"})


def infer(src_role: str, dst_role: str, kind: str) -> str:
    """The class of a link from ``src_role`` to ``dst_role`` made of ``kind`` (symmetric in its ends)."""
    roles = {src_role, dst_role}
    if roles <= _SCALE_UP:
        return "torus" if kind == "torus" else "nvlink"
    if "pcie" in roles or roles == {"gpu", "nic"}:
        return "pcie"
    switches, hosts = roles & _TIER.keys(), roles - _TIER.keys()
    if switches and hosts and hosts <= {"gpu", "nic"}:
        return "nic"
    if roles <= _TIER.keys():
        low, high = sorted((src_role, dst_role), key=_TIER.__getitem__)
        return f"{low}-{high}"
    return "-".join(sorted(roles))


# The summary's tiers (``exposed_comm_by_link_class_s``), closest to the GPU first: a switch-to-switch class is
# charged to its lower end, whose uplinks it is (``leaf-spine`` -> leaf, ``spine-core`` -> spine); ``core`` holds
# links between core switches or above them (none in the builtin fabrics).
TIERS = ("nvlink", "pcie", "nic", "leaf", "spine", "core")
_ORDER = {name: i for i, name in enumerate(("nvlink", "torus", "pcie", "nic", "leaf", "switch", "spine", "core"))}


def tier(link_class: str) -> str:
    """The summary tier of a link class: itself for nvlink, pcie, nic and torus; a switch-to-switch class its lower
    switch (``leaf-spine`` -> ``leaf``); anything else its own name."""
    if link_class in _ORDER:
        return link_class
    low = link_class.split("-")[0]
    return low if low in _TIER else link_class


def tier_order(name: str) -> int:
    """Rank of a tier from the GPU outwards (unknown tiers last)."""
    return _ORDER.get(name, len(_ORDER))
