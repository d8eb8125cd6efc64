"""Link classes (links.csv `kind`): every builtin and file fabric names the tier of each link, with the counts the
builders' closed forms give."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from simcluster import simulate
from simcluster.core.errors import ScenarioError
from simcluster.fabric import classes, topology
from simcluster.spec import config, hardware

H100 = hardware.gpu("h100-sxm")
CX7 = hardware.nic("connectx-7")
REPO = Path(__file__).resolve().parents[2]


def counts(name, gpus, **options) -> dict:
    fabric = topology.build(name, gpus=gpus, gpus_per_node=8, gpu=H100, nic=CX7, options=options)
    assert all(fabric.link_class), "every link has a class"
    return fabric.summary()["link_classes"]


def server_links(gpus: int) -> dict:
    """Per HGX server of 8: each GPU has one NVLink cable to the NVSwitch, two PCIe cables (GPU -> switch -> NIC)
    and one NIC cable to its leaf; every cable is two directed links."""
    return {"nvlink": 2 * gpus, "pcie": 2 * 2 * gpus, "nic": 2 * gpus}


def test_rail_fat_tree_two_tiers_counts_match_the_builder():
    gpus = 128  # 16 servers: one scalable unit (radix 64: 32 servers a leaf), 8 rail leaves, 16 spines
    leaves, spines = 8, min(32, 16)
    assert counts("rail-fat-tree", gpus) == {**server_links(gpus), "leaf-spine": 2 * leaves * spines}


def test_rail_fat_tree_three_tiers_has_spine_core_links():
    gpus, radix = 128, 8
    down = radix // 2
    leaves = math.ceil(16 / down) * 8  # scalable units of 4 servers x 8 rails
    pods = math.ceil(leaves / down)
    assert counts("rail-fat-tree", gpus, radix=radix) == {
        **server_links(gpus), "leaf-spine": 2 * leaves * down, "spine-core": 2 * pods * down * down}


@pytest.mark.parametrize("ratio", [1, 4])
def test_leaf_spine_counts_match_the_builder(ratio):
    gpus, hosts = 128, 32
    spines = math.ceil(hosts / ratio)
    assert counts("leaf-spine", gpus, oversubscription=ratio) == {
        **server_links(gpus), "leaf-spine": 2 * (gpus // hosts) * spines}


def test_k_ary_fat_tree_counts():
    k = 8  # smallest even k with k^3/4 >= 128
    half = k // 2
    assert counts("fat-tree", 128) == {**server_links(128), "leaf-spine": 2 * k * half * half,
                                       "spine-core": 2 * k * half * half}


def test_torus_and_single_node():
    assert counts("torus", 64, dims=[4, 4, 4]) == {"torus": 64 * 3 * 2}
    assert counts("nvswitch-node", 8) == {"nvlink": 2 * 8}


@pytest.mark.parametrize(("ends", "kind", "expected"), [
    (("gpu", "nvswitch"), "nvlink", "nvlink"), (("gpu", "gpu"), "nvlink", "nvlink"),
    (("gpu", "gpu"), "torus", "torus"), (("pcie", "nic"), "pcie", "pcie"), (("gpu", "nic"), "pcie", "pcie"),
    (("nic", "leaf"), "ib", "nic"), (("gpu", "switch"), "ethernet", "nic"), (("spine", "leaf"), "ib", "leaf-spine"),
    (("core", "spine"), "ib", "spine-core"), (("switch", "switch"), "ethernet", "switch-switch"),
])
def test_class_follows_the_roles_of_the_ends_in_either_direction(ends, kind, expected):
    assert classes.infer(*ends, kind) == expected == classes.infer(*reversed(ends), kind)


def test_fabric_file_classes_are_inferred_or_given(tmp_path):
    data = yaml.safe_load((REPO / "topologies" / "two-servers-one-switch.yaml").read_text())
    fabric = topology.build(str(REPO / "topologies" / "two-servers-one-switch.yaml"), gpus=8, gpus_per_node=4,
                            gpu=H100, nic=CX7)
    assert fabric.summary()["link_classes"] == {"nvlink": 16, "pcie": 16, "nic": 16}
    data["links"][-1]["class"] = "optical-uplink"  # a user's own name wins over the inferred one
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    fabric = topology.build(str(path), gpus=8, gpus_per_node=4, gpu=H100, nic=CX7)
    assert fabric.summary()["link_classes"] == {"nvlink": 16, "pcie": 16, "nic": 14, "optical-uplink": 2}
    back = tmp_path / "back.graphml"
    topology.write_graphml(fabric, back)  # the class survives a GraphML round trip
    again = topology.build(str(back), gpus=8, gpus_per_node=4, gpu=H100, nic=CX7)
    assert again.summary()["link_classes"] == fabric.summary()["link_classes"]
    data["links"][-1]["class"] = "Not A Name"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError, match=r"links\[23\]\.class"):
        topology.build(str(path), gpus=8, gpus_per_node=4, gpu=H100, nic=CX7)


def test_links_table_and_summary_name_the_kinds(small_scenario):
    small_scenario["cluster"]["topology"] = "leaf-spine"
    small_scenario["cluster"]["topology_options"] = {"oversubscription": 4}
    result = simulate(config.from_dict(small_scenario))
    links = result.links
    assert {"kind", "technology"} <= set(links.columns)
    assert set(links["kind"]) <= {"nvlink", "pcie", "nic", "leaf-spine"}
    assert {"nvlink", "nic"} <= set(links["kind"])  # TP inside a node, DP across the two nodes
    assert set(links.loc[links["kind"] == "nic", "technology"]) == {"ethernet"}
    by_kind = result.summary["busiest_link_utilisation_by_kind"]
    assert set(by_kind) == set(links["kind"])
    assert max(by_kind.values()) == result.summary["busiest_link_utilisation"]
    for kind, value in by_kind.items():
        assert value == links.loc[links["kind"] == kind, "utilisation"].max()
