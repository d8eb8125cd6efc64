"""The analytic model's per-part bottlenecks (what merged classes held back) kept as one number a part, not routes.

Round 36: the model cached every multi-part class's whole per-part routes (``network.base.part_routes``), which on a
sprayed core grow as parts x fabric size (23 GiB at 131,072 GPUs); it needs only each part's busiest link."""

from __future__ import annotations

import numpy as np
import pytest

from simcluster.fabric import topology
from simcluster.network import analytic, base, make
from simcluster.network.base import TransferClass, class_load
from simcluster.spec import hardware


@pytest.fixture(scope="module")
def fabric():
    return topology.build("leaf-spine", gpus=64, gpus_per_node=8, gpu=hardware.gpu("h100-sxm"),
                          nic=hardware.nic("connectx-7"), options={})


def alone_s_per_byte(fabric, pairs) -> float:
    """A part's own bottleneck: its pairs as a class of their own (``class_load``), busiest link's pairs / rate."""
    links, counts, _ = class_load(fabric, TransferClass(pairs, 1.0))
    return float(np.max(counts / np.asarray(fabric.link_bytes_per_s)[links]))


def test_held_back_is_the_class_bottleneck_less_each_part_alone(fabric):
    """Part 0: two sends into GPU 0 (its NIC's down link carries both); part 1: one send across the spine. The class
    runs at part 0's bottleneck; part 1 alone would save the size times the difference of the two, and no whole
    routes stay cached for it (only the access segments, linear in pairs, and one number a part)."""
    heavy, light = [(8, 0), (9, 0)], [(16, 40)]
    size = 1e6
    transfers = TransferClass([*heavy, *light], size, parts=[0, 0, 1])
    model = make("analytic", fabric)
    model.start(transfers, 0.0)
    expected = size * (alone_s_per_byte(fabric, heavy) - alone_s_per_byte(fabric, light))
    assert expected > 0   # the shape: part 1 is held back
    assert model.held_back.classes == 1
    assert model.held_back.seconds == pytest.approx(expected, rel=1e-12)
    assert "_part_routes" not in transfers.__dict__
    assert all(key[0] for key in base._PART_ROUTES.get(fabric, {})), "whole per-part routes cached"
    assert [len(kept) for kept in model._busiest.values()] == [transfers.part_count]


def test_parts_settled_on_their_access_links_route_no_core(fabric, monkeypatch):
    """A ring step of four 8-GPU groups across nodes: each part's busiest link is a NIC link carrying one send, as
    busy as the class's, so nothing is held back and the parts' whole routes are never made."""
    routed = []
    monkeypatch.setattr(type(fabric), "links_of_parts", lambda *args, **kw: routed.append(1))
    pairs = [(8 * g + i, 8 * ((g + 1) % 4) + i) for g in range(4) for i in range(8)]
    transfers = TransferClass(pairs, 1e6, parts=[i for g in range(4) for i in range(8)])
    model = make("analytic", fabric)
    model.start(transfers, 0.0)
    assert model.held_back.classes == 0 and not routed and not model._busiest


@pytest.mark.parametrize("chunk", [1, 3, 4096])
def test_parts_routed_in_chunks_get_their_own_bottleneck(fabric, monkeypatch, chunk):
    """Whatever the chunk of pairs routed at once, each part's bottleneck is its pairs' alone (part sizes 1 to 4)."""
    monkeypatch.setattr(analytic, "_ROUTED_PAIRS", chunk)
    groups = [[(8, 0)], [(9, 0), (10, 0)], [(16, 40), (17, 40), (18, 41)], [(24, 48), (25, 48), (26, 48), (27, 56)]]
    transfers = TransferClass([p for g in groups for p in g], 1e6, parts=[k for k, g in enumerate(groups) for _ in g])
    busiest = make("analytic", fabric)._part_busiest(transfers)
    assert busiest == pytest.approx([alone_s_per_byte(fabric, g) for g in groups], rel=1e-12)
