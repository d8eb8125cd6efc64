"""Transformer shapes: the preset catalog (``simcluster/data/models.yaml``) and parameter counts.

FLOP and HBM bytes per layer and phase live in ``workload.ops``; activation and state memory in ``parallel.memory``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from simcluster.core import catalog
from simcluster.core.errors import ScenarioError
from simcluster.core.units import Count

# Plausibility bounds of a model's shape, far above any trained model (docs/robustness.md): the largest published
# dense shapes are 128 layers and a hidden size of 25,600 (Megatron-LM's 1T model, Narayanan et al. 2021, table 1),
# the largest vocabularies 256k tokens (Gemma, 2024); beyond these bounds the FLOP and memory sums only overflow.
MAX_LAYERS = 10_000
MAX_HIDDEN = 2**20
MAX_VOCAB = 10**8


class TransformerSpec(BaseModel):
    """A decoder-only transformer. GPT-style by default; Llama-style with mlp=swiglu, rmsnorm, rope, GQA."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom-model"
    layers: Count = Field(le=MAX_LAYERS)
    hidden: Count = Field(le=MAX_HIDDEN)
    heads: Count = Field(le=MAX_HIDDEN)
    kv_heads: Count | None = Field(None, le=MAX_HIDDEN, description="key/value heads (GQA); default: heads")
    ffn_hidden: Count | None = Field(None, le=8 * MAX_HIDDEN, description="MLP inner size; default 4*hidden")
    vocab: Count = Field(le=MAX_VOCAB)
    mlp: Literal["gelu", "swiglu"] = "gelu"
    tied_embeddings: bool = True
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    position: Literal["learned", "rope"] = "learned"
    dropout: bool = Field(True, description=(
        "hidden and attention dropout in training (GPT-3 and Megatron-LM: 0.1); Llama models train without it, "
        "so no dropout masks are stored or applied"))
    max_seq_len: Count = 2048
    source: str = ""

    @model_validator(mode="after")
    def _check_shape(self) -> TransformerSpec:
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not divisible by heads {self.heads}")
        if self.heads % self.n_kv_heads:
            raise ValueError(f"heads {self.heads} is not divisible by kv_heads {self.n_kv_heads}")
        return self

    @property
    def n_kv_heads(self) -> int:
        return self.kv_heads or self.heads

    @property
    def ffn(self) -> int:
        return self.ffn_hidden or 4 * self.hidden

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_hidden(self) -> int:
        """Width of the key (or value) projection: kv_heads * head_dim."""
        return self.n_kv_heads * self.head_dim

    @property
    def mlp_matrices(self) -> int:
        """Weight matrices in the MLP: 2 for GELU (up, down), 3 for SwiGLU (gate, up, down)."""
        return 3 if self.mlp == "swiglu" else 2

    # ---- parameters -------------------------------------------------------------------------------------------
    @property
    def attention_params(self) -> int:
        """Q, K, V and output projections of one layer (biases counted for GPT-style layernorm models)."""
        h, kv = self.hidden, self.kv_hidden
        weights = h * h + 2 * h * kv + h * h
        biases = (h + 2 * kv + h) if self.norm == "layernorm" else 0
        return weights + biases

    @property
    def mlp_params(self) -> int:
        weights = self.mlp_matrices * self.hidden * self.ffn
        biases = (self.ffn + self.hidden) if self.norm == "layernorm" else 0
        return weights + biases

    @property
    def norm_params(self) -> int:
        """Two norms per layer: gain (and bias for layernorm)."""
        per_norm = 2 * self.hidden if self.norm == "layernorm" else self.hidden
        return 2 * per_norm

    @property
    def layer_params(self) -> int:
        return self.attention_params + self.mlp_params + self.norm_params

    @property
    def embedding_params(self) -> int:
        """Token embedding, learned positions, and the output projection when untied."""
        token = self.vocab * self.hidden
        positions = self.max_seq_len * self.hidden if self.position == "learned" else 0
        output = 0 if self.tied_embeddings else self.vocab * self.hidden
        return token + positions + output

    @property
    def non_embedding_params(self) -> int:
        """Kaplan et al. 2020's N: the layers plus the final norm."""
        final_norm = 2 * self.hidden if self.norm == "layernorm" else self.hidden
        return self.layers * self.layer_params + final_norm

    @property
    def params(self) -> int:
        return self.non_embedding_params + self.embedding_params


def preset(name: str, field: str = "model") -> TransformerSpec:
    """The catalog model ``name`` (e.g. 'gpt3-175b', 'llama3-405b')."""
    entries = catalog.load("models")
    if name not in entries:
        raise ScenarioError(field, f"unknown model preset {name!r} (known: {', '.join(sorted(entries))})")
    return TransformerSpec(name=name, **entries[name])

