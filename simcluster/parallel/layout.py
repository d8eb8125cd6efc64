"""Parallel layout: how layers are split over pipeline chunks, rank <-> (tp, cp, pp, dp) coordinates, groups."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simcluster.spec.config import Parallelism


def split_layers(layers: int, pp: int, virtual_stages: int = 1, explicit: list[int] | None = None) -> list[int]:
    """Transformer layers of each pipeline chunk, in model order (pp * virtual_stages entries).

    Chunk c runs on pipeline rank c % pp (Megatron's interleaved assignment). When the layers divide evenly the
    split is even (Megatron-LM's default). Otherwise the embedding and the output layer are counted as one layer
    each, as Megatron-LM's ``account_for_embedding/loss_in_pipeline_split`` does, so the first and last chunks get
    fewer transformer layers; Llama 3 405B's 126 layers on 16 x 8 chunks give a first chunk with only the
    embedding and a last chunk with only the output layer (Llama 3 paper, section 3.3.2).
    """
    chunks = pp * virtual_stages
    if explicit is not None:
        assert len(explicit) == chunks and sum(explicit) == layers, "validated in config"
        return list(explicit)
    if layers % chunks == 0:
        return [layers // chunks] * chunks
    units = layers + 2  # + embedding + output layer
    base, extra = divmod(units, chunks)
    counts = [base] * chunks
    # hand the remainder to the middle chunks, away from the first and last (which carry embedding/output)
    middle = list(range(1, chunks - 1))
    if extra > len(middle):  # more leftovers than middle chunks (e.g. 32 layers on 5 stages): spread over all
        middle = list(range(chunks))
    start = (len(middle) - extra) // 2
    for i in middle[start:start + extra]:
        counts[i] += 1
    counts[0] -= 1
    counts[-1] -= 1
    assert sum(counts) == layers and min(counts) >= 0
    return counts


# the scenario's default order (spec/config.py Parallelism.order): pipeline outermost
AXES = tuple(Parallelism.model_fields["order"].default.split("-"))


@dataclass(frozen=True)
class Layout:
    """Rank <-> (tp, cp, pp, dp) coordinates. ``order`` lists the axes innermost first ("tp-cp-dp-pp": tensor
    parallel ranks are consecutive, so with tp <= gpus_per_node a TP group stays inside one NVSwitch domain, and a
    pipeline stage's ranks are consecutive, as Megatron-Core places them)."""

    tp: int = 1
    cp: int = 1
    pp: int = 1
    dp: int = 1
    order: tuple[str, ...] = AXES

    @classmethod
    def of(cls, parallelism) -> Layout:
        p = parallelism
        return cls(tp=p.tp, cp=p.cp, pp=p.pp, dp=p.dp, order=tuple(p.order.split("-")))

    @property
    def world_size(self) -> int:
        return self.tp * self.cp * self.pp * self.dp

    def _sizes(self) -> list[int]:
        return [getattr(self, axis) for axis in self.order]

    def coords(self, rank: int) -> dict[str, int]:
        """{'tp': i, 'cp': j, 'pp': k, 'dp': l} of a global rank."""
        out = {}
        for axis, size in zip(self.order, self._sizes(), strict=True):
            rank, out[axis] = divmod(rank, size)
        return out

    def rank(self, **coords: int) -> int:
        """Global rank of the given coordinates (missing axes are 0)."""
        rank, stride = 0, 1
        for axis, size in zip(self.order, self._sizes(), strict=True):
            rank += coords.get(axis, 0) * stride
            stride *= size
        return rank

    def group(self, rank: int, axis: str) -> list[int]:
        """Ranks that share every coordinate of ``rank`` except ``axis`` (its TP, CP, PP or DP group), in order."""
        coords = self.coords(rank)
        return [self.rank(**{**coords, axis: i}) for i in range(getattr(self, axis))]

    def stride(self, axis: str) -> int:
        """How far apart in rank two ranks are whose ``axis`` coordinates differ by one (and no other): the product
        of the sizes of the axes inside it in ``order``."""
        stride = 1
        for name, size in zip(self.order, self._sizes(), strict=True):
            if name == axis:
                return stride
            stride *= size
        raise ValueError(axis)

    def moved(self, ranks, axis: str, value: int) -> np.ndarray:
        """The ranks whose coordinates equal those of ``ranks`` except ``axis``, which is ``value`` (vectorised)."""
        ranks = np.asarray(ranks, dtype=np.int64)
        stride, size = self.stride(axis), getattr(self, axis)
        return ranks - ((ranks // stride) % size) * stride + value * stride

    def ring_pairs(self, axis: str, wrap: bool = True) -> np.ndarray:
        """(rank, its successor along ``axis``) for every rank: the sends of one ring step over every group of
        ``axis`` at once; ``wrap=False`` leaves out the last member's send to the first (a pipeline's stages)."""
        ranks = np.arange(self.world_size, dtype=np.int64)
        stride, size = self.stride(axis), getattr(self, axis)
        coord = (ranks // stride) % size
        pairs = np.stack([ranks, ranks + ((coord + 1) % size - coord) * stride], axis=1)
        keep = (coord < size - 1) if not wrap else (pairs[:, 0] != pairs[:, 1])
        return pairs[keep]

    def groups(self, axis: str) -> list[list[int]]:
        """All groups along ``axis`` (each rank in exactly one)."""
        seen, out = set(), []
        for rank in range(self.world_size):
            if rank not in seen:
                members = self.group(rank, axis)
                seen.update(members)
                out.append(members)
        return out


def expert_groups(layout: Layout, stage: int, ep: int, etp: int, axis: str = "ep") -> list[tuple[int, ...]]:
    """The expert-parallel groups of pipeline stage ``stage`` (global ranks, each group in order); ``axis="etp"``:
    its expert tensor-parallel groups instead (the ranks splitting the same experts); ``axis="edp"``: its expert
    data-parallel groups (the ranks holding the same expert shard, which reduce and gather it).

    Megatron-Core lays the expert ranks of a stage out as (etp, ep, expert-dp), innermost first, over the stage's
    ranks in rank order (its RankGenerator with order tp-ep-dp-pp, the expert tensor parallel size in place of tp):
    the ``etp * ep`` consecutive ranks of a stage form an expert-model-parallel block, so with the default rank
    order (tp innermost) an EP group fills an NVLink domain before it spans nodes. A group holds the ranks with
    the same etp and expert-dp index.
    """
    ranks = [r for r in range(layout.world_size) if layout.coords(r)["pp"] == stage]
    assert len(ranks) % (ep * etp) == 0, "validated in config"
    assert axis in ("ep", "etp", "edp"), axis
    if axis == "edp":
        return [tuple(ranks[block + i] for block in range(0, len(ranks), ep * etp)) for i in range(ep * etp)]
    groups = []
    for block in range(0, len(ranks), ep * etp):
        if axis == "ep":
            groups += [tuple(ranks[block + t + etp * e] for e in range(ep)) for t in range(etp)]
        else:
            groups += [tuple(ranks[block + t + etp * e] for t in range(etp)) for e in range(ep)]
    return groups
