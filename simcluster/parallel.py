"""Parallel layout: how layers are split over pipeline chunks, rank <-> (tp, cp, pp, dp) coordinates, groups."""

from __future__ import annotations


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
    middle = list(range(1, chunks - 1)) or list(range(chunks))
    start = (len(middle) - extra) // 2
    for i in middle[start:start + extra]:
        counts[i] += 1
    counts[0] -= 1
    counts[-1] -= 1
    assert sum(counts) == layers and min(counts) >= 0
    return counts
