"""Transformer shapes: the preset catalog (``simcluster/data/models.yaml``) and parameter counts.

FLOP and HBM bytes per layer and phase live in ``workload.ops``; activation and state memory in ``parallel.memory``.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import (
    ConfigDict,
    Field,
    Strict,
    field_validator,
    model_validator,
)

from simcluster.core import catalog
from simcluster.core.errors import ScenarioError, unknown_name
from simcluster.core.units import Count, FiniteNumber, WholeNumber
from simcluster.spec.base import Spec

# Plausibility bounds of a model's shape, far above any trained model (docs/robustness.md): the largest published
# dense shapes are 128 layers and a hidden size of 25,600 (Megatron-LM's 1T model, Narayanan et al. 2021, table 1),
# the largest vocabularies 256k tokens (Gemma, 2024); beyond these bounds the FLOP and memory sums only overflow.
MAX_LAYERS = 10_000
# Sequence length: 2^24 = 16.8M tokens, above the longest context announced (Llama 4 Scout, 2025: 10M tokens in
# inference, pre-trained at 256K) and the longest trained (MiniMax-01, arXiv:2501.08313: 1M tokens, 4M inference).
# Shared by model.max_seq_len and training.seq_len (config.MAX_SEQ_LEN).
MAX_SEQ_LEN = 2**24
MAX_HIDDEN = 2**20
MAX_VOCAB = 10**8
# routed experts per layer: PEER (He 2024, "Mixture of A Million Experts", arXiv:2407.04153) uses 1024^2; trained
# MoE models have up to 384 (Kimi K2, 2025)
MAX_EXPERTS = 2**20


LOAD_NAMES = ("measured", "balanced", "round_robin")


class MoESpec(Spec):
    """Mixture-of-experts MLPs (``model.moe``): a router sends each token to ``top_k`` of ``experts`` SwiGLU/GELU
    experts of inner size ``ffn_hidden``; ``shared_experts`` more see every token (DeepSeekMoE, Dai et al. 2024).
    The first ``dense_layers`` layers keep the dense MLP of ``model.ffn_hidden``; after them every ``interval``-th
    layer is an MoE layer (1: all; Llama 4 Maverick alternates, 2). ``capacity_factor`` null is dropless
    (Megatron-Core's default); a number caps each expert at that multiple of its mean load. ``load`` is the
    tokens-per-expert distribution: ``measured`` (the sourced default of data/moe.yaml), ``balanced`` (benchmark
    runs that force balance), ``round_robin`` (NeMo AutoModel's fake balanced gate: each token to k consecutive
    experts, every expert exactly its share; core/token_routing.py) or a coefficient of variation of tokens per
    expert (0 = balanced)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experts: Count = Field(le=MAX_EXPERTS, description="routed experts per MoE layer")
    top_k: Count = Field(le=MAX_EXPERTS, description="routed experts per token")
    ffn_hidden: Count = Field(le=8 * MAX_HIDDEN, description="inner size of one expert's MLP")
    shared_experts: WholeNumber = Field(0, ge=0, le=MAX_EXPERTS,
                                        description="experts every token passes through (DeepSeekMoE)")
    dense_layers: WholeNumber = Field(0, ge=0, le=MAX_LAYERS, description="first layers that keep the dense MLP")
    interval: Count = Field(1, le=MAX_LAYERS, description="every interval-th layer after dense_layers is an MoE layer")
    capacity_factor: FiniteNumber | None = Field(None, gt=0, description="tokens per expert capped "
                                                 "at this multiple of the mean; null = dropless")
    pad_to_capacity: Annotated[bool, Strict()] = Field(False, description="every expert padded to its capacity "
                                                       "(Megatron-Core --moe-pad-expert-input-to-capacity; needs "
                                                       "capacity_factor): no host sync")
    groups: Count | None = Field(None, le=MAX_EXPERTS, description=(
        "group-limited routing: the experts in this many groups of consecutive experts (Megatron-Core "
        "--moe-router-num-groups); null = none"))
    group_topk: Count | None = Field(None, le=MAX_EXPERTS, description=(
        "groups a token's top_k experts are chosen from (--moe-router-group-topk); needs groups"))
    load: str | float = Field(
        "measured", description="tokens-per-expert distribution: measured (sourced default), balanced, "
        "round_robin (NeMo AutoModel's fake balanced gate), or a coefficient of variation >= 0")

    @field_validator("load", mode="before")
    @classmethod
    def _load(cls, value):
        if value in LOAD_NAMES:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
            raise ValueError(f"expected measured, balanced, round_robin or a coefficient of variation >= 0, "
                             f"got {value!r}")
        try:
            return float(value)
        except OverflowError:  # an integer past a float's range (10**400): no spread is that large (round 30)
            raise ValueError("expected a coefficient of variation >= 0 within a float's range, got an integer "
                             f"of {value.bit_length()} bits") from None

    @model_validator(mode="after")
    def _check_routing(self) -> MoESpec:
        if self.top_k > self.experts:
            raise ScenarioError("model.moe.top_k", f"top_k {self.top_k} exceeds experts {self.experts}")
        if self.pad_to_capacity and self.capacity_factor is None:
            raise ScenarioError("model.moe.pad_to_capacity", "pad_to_capacity needs a capacity_factor (the capacity "
                                "every expert is padded to)")
        if (self.groups is None) != (self.group_topk is None):
            raise ScenarioError("model.moe.group_topk" if self.groups is not None else "model.moe.groups",
                                "group-limited routing needs both groups and group_topk (Megatron-Core "
                                "--moe-router-num-groups and --moe-router-group-topk)")
        if self.groups is not None:
            if self.experts % self.groups:
                raise ScenarioError("model.moe.groups", f"{self.experts} experts do not split into {self.groups} "
                                    "equal groups")
            if self.group_topk > self.groups:
                raise ScenarioError("model.moe.group_topk", f"group_topk {self.group_topk} exceeds groups "
                                    f"{self.groups}")
            if self.top_k > self.group_topk * self.experts // self.groups:
                raise ScenarioError("model.moe.group_topk", f"top_k {self.top_k} does not fit in {self.group_topk} "
                                    f"group{'s' * (self.group_topk != 1)} of {self.experts // self.groups} experts")
        # the largest spread of tokens per expert: every token on the same top_k experts (each gets all T tokens,
        # the mean is T*top_k/experts), CV^2 = experts/top_k - 1; a larger CV routes more tokens than exist
        most = math.sqrt(self.experts / self.top_k - 1)
        if isinstance(self.load, float) and self.load > most:
            raise ScenarioError("model.moe.load", f"a coefficient of variation of {self.load:g} is more than "
                                f"{self.experts} experts with top_k {self.top_k} allow (sqrt(experts/top_k - 1) = "
                                f"{most:.3g}: all tokens on the same top_k experts)")
        return self


class MLASpec(Spec):
    """Multi-head latent attention (``model.mla``; DeepSeek-V2/V3, workload/mla.py): queries through a
    ``q_lora_rank`` bottleneck, keys and values through a ``kv_lora_rank`` one, each head's query and key
    ``qk_head_dim`` wide plus a ``qk_rope_head_dim`` rotary part (the key's shared by all heads), its value
    ``v_head_dim`` wide."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    q_lora_rank: Count | None = Field(None, le=MAX_HIDDEN, description="query bottleneck width; null = a direct "
                                      "h -> heads x (qk_head_dim + qk_rope_head_dim) projection")
    kv_lora_rank: Count = Field(le=MAX_HIDDEN, description="key/value bottleneck width")
    qk_head_dim: Count = Field(le=MAX_HIDDEN, description="per-head query/key width without the rotary part")
    qk_rope_head_dim: Count = Field(le=MAX_HIDDEN, description="per-head rotary query/key width")
    v_head_dim: Count = Field(le=MAX_HIDDEN, description="per-head value width")


class TransformerSpec(Spec):
    """A decoder-only transformer. GPT-style by default; Llama-style with mlp=swiglu, rmsnorm, rope, GQA;
    Nemotron-4-style with mlp=squared_relu, layernorm without linear biases (bias=false), rope, GQA."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom-model"
    layers: Count = Field(le=MAX_LAYERS)
    hidden: Count = Field(le=MAX_HIDDEN)
    heads: Count = Field(le=MAX_HIDDEN)
    kv_heads: Count | None = Field(None, le=MAX_HIDDEN, description="key/value heads (GQA); default: heads")
    ffn_hidden: Count | None = Field(None, le=8 * MAX_HIDDEN, description="MLP inner size; default 4*hidden")
    head_dim: Count | None = Field(None, le=MAX_HIDDEN, description="width of one attention head; default "
                                   "hidden/heads (Qwen3: 128 with 64 heads on a 4096 hidden, so queries are 8192 wide)")
    vocab: Count = Field(le=MAX_VOCAB)
    mlp: Literal["gelu", "swiglu", "squared_relu"] = Field("gelu", description=(
        "MLP activation: gelu (2 matrices), swiglu (gated, 3 matrices) or squared_relu (relu(x)^2, 2 matrices; "
        "So et al. 2021, Primer; Nemotron-4)"))
    bias: Annotated[bool, Strict()] | None = Field(None, description=(
        "biases on the attention and MLP linear layers; default: with layernorm (GPT-style), none with rmsnorm. "
        "Nemotron-4 trains layernorm without them (add_bias_linear: False)"))
    tied_embeddings: Annotated[bool, Strict()] = True
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    qk_layernorm: Annotated[bool, Strict()] = Field(False, description=(
        "a norm of model.norm's kind over each head's head_dim applied to the queries and keys before RoPE "
        "(Megatron-Core --qk-layernorm: SelfAttention's q_layernorm and k_layernorm, TENorm; Hugging Face Qwen3's "
        "q_norm/k_norm, Gemma 3's); multi-head / grouped-query attention only"))
    position: Literal["learned", "rope", "alibi"] = Field("learned", description=(
        "learned position embeddings, rotary (rope), or ALiBi's per-head linear bias on the attention scores (Press "
        "et al. 2022; BLOOM): no position parameters; under naive attention Megatron-DeepSpeed adds it through "
        "torch.baddbmm(bias, q, k^T, beta != 0), which copies the broadcast bias into the score tensor and has the "
        "score GEMM read it back (workload/ops.py attention_core); inside a fused attention kernel it is not charged"))
    dropout: Annotated[bool, Strict()] = Field(True, description=(
        "hidden and attention dropout in training (GPT-3 and Megatron-LM: 0.1); Llama models train without it, "
        "so no dropout masks are stored or applied"))
    max_seq_len: Count = Field(2048, le=MAX_SEQ_LEN)
    moe: MoESpec | None = Field(None, description="mixture-of-experts MLPs; null = dense")
    mla: MLASpec | None = Field(None, description="multi-head latent attention (DeepSeek-V2/V3); null = "
                                "multi-head / grouped-query attention of head_dim")
    mtp_layers: WholeNumber = Field(0, ge=0, le=MAX_LAYERS, description=(
        "multi-token-prediction modules after the model (DeepSeek-V3: 1), each a layer of the last layer's type, "
        "a 2h->h projection and the shared output head, on the last pipeline stage (workload/mtp.py)"))
    source: str = ""

    @model_validator(mode="after")
    def _check_shape(self) -> TransformerSpec:
        if self.head_dim is None and self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not divisible by heads {self.heads}")
        if self.heads % self.n_kv_heads:
            raise ValueError(f"heads {self.heads} is not divisible by kv_heads {self.n_kv_heads}")
        if self.qk_layernorm and self.mla is not None:
            raise ValueError("qk_layernorm applies to multi-head / grouped-query attention; MLA normalises its "
                             "latents instead")
        if self.moe is not None and self.moe.dense_layers > self.layers:
            raise ValueError(f"moe.dense_layers {self.moe.dense_layers} exceeds the model's {self.layers} layers")
        return self

    @property
    def n_kv_heads(self) -> int:
        return self.kv_heads or self.heads

    @property
    def ffn(self) -> int:
        return self.ffn_hidden or 4 * self.hidden

    @property
    def d_head(self) -> int:
        """Width of one attention head: ``head_dim``, else hidden / heads."""
        return self.head_dim or self.hidden // self.heads

    @property
    def q_hidden(self) -> int:
        """Width of the query projection (and of the attention output's input): heads * d_head (= hidden unless
        ``head_dim`` is set)."""
        return self.heads * self.d_head

    @property
    def kv_hidden(self) -> int:
        """Width of the key (or value) projection: kv_heads * d_head."""
        return self.n_kv_heads * self.d_head

    @property
    def mlp_matrices(self) -> int:
        """Weight matrices in the MLP: 2 for GELU and squared ReLU (up, down), 3 for SwiGLU (gate, up, down)."""
        return 3 if self.mlp == "swiglu" else 2

    @property
    def linear_biases(self) -> bool:
        """Whether the attention and MLP linear layers carry biases: ``bias``, else GPT-style with layernorm."""
        return self.norm == "layernorm" if self.bias is None else self.bias

    # ---- parameters -------------------------------------------------------------------------------------------
    @property
    def attention_params(self) -> int:
        """Q, K, V and output projections of one layer (biases counted where ``linear_biases``)."""
        if self.mla is not None:
            a = self.mla
            qk = a.qk_head_dim + a.qk_rope_head_dim
            q = (self.hidden * a.q_lora_rank + a.q_lora_rank + a.q_lora_rank * self.heads * qk if a.q_lora_rank
                 else self.hidden * self.heads * qk)
            kv = (self.hidden * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank
                  + a.kv_lora_rank * self.heads * (a.qk_head_dim + a.v_head_dim))
            return q + kv + self.heads * a.v_head_dim * self.hidden
        h, q, kv = self.hidden, self.q_hidden, self.kv_hidden
        weights = h * q + 2 * h * kv + q * h
        biases = (q + 2 * kv + h) if self.linear_biases else 0
        return weights + biases

    @property
    def mlp_params(self) -> int:
        weights = self.mlp_matrices * self.hidden * self.ffn
        biases = (self.ffn + self.hidden) if self.linear_biases else 0
        return weights + biases

    @property
    def norm_params(self) -> int:
        """Two norms per layer: gain (and bias for layernorm); with ``qk_layernorm`` two more of head_dim, one for
        the queries and one for the keys (shared by all heads: Megatron-Core's TENorm of hidden_size
        kv_channels)."""
        per_element = 2 if self.norm == "layernorm" else 1
        return 2 * per_element * (self.hidden + (self.d_head if self.qk_layernorm else 0))

    @property
    def layer_params(self) -> int:
        """Parameters of one dense layer."""
        return self.attention_params + self.mlp_params + self.norm_params

    # ---- mixture of experts -------------------------------------------------------------------------------------
    def is_moe_layer(self, index: int) -> bool:
        """Whether layer ``index`` (0-based) has MoE MLPs: past ``dense_layers``, every ``interval``-th one."""
        moe = self.moe
        return moe is not None and index >= moe.dense_layers and (index - moe.dense_layers + 1) % moe.interval == 0

    @property
    def moe_layers(self) -> int:
        return sum(self.is_moe_layer(i) for i in range(self.layers))

    @property
    def mtp_moe_layers(self) -> int:
        """MoE layers among the multi-token-prediction modules' layers: each is of the last layer's type."""
        return self.mtp_layers if self.is_moe_layer(self.layers - 1) else 0

    @property
    def expert_params(self) -> int:
        """Weights of one expert (no biases: every MoE preset is a bias-free rmsnorm model)."""
        return self.mlp_matrices * self.hidden * self.moe.ffn_hidden if self.moe else 0

    @property
    def router_params(self) -> int:
        return self.hidden * self.moe.experts if self.moe else 0

    @property
    def moe_layer_params(self) -> int:
        """One MoE layer: attention, norms, router, routed and shared experts."""
        moe = self.moe
        experts = (moe.experts + moe.shared_experts) * self.expert_params
        return self.attention_params + self.norm_params + self.router_params + experts

    @property
    def active_params(self) -> int:
        """Parameters a token passes through: top_k routed experts instead of all (what "A22B" names)."""
        if self.moe is None:
            return self.params
        idle = (self.moe.experts - self.moe.top_k) * self.expert_params
        return self.params - self.moe_layers * idle

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
        moe = self.moe_layers
        moe_params = moe * self.moe_layer_params if moe else 0
        return (self.layers - moe) * self.layer_params + moe_params + final_norm

    @property
    def params(self) -> int:
        return self.non_embedding_params + self.embedding_params


def preset(name: str, field: str = "model") -> TransformerSpec:
    """The catalog model ``name`` (e.g. 'gpt3-175b', 'llama3-405b')."""
    entries = catalog.load("models")
    if name not in entries:
        raise unknown_name(field, "model preset", name, sorted(entries))
    return TransformerSpec(name=name, **entries[name])

