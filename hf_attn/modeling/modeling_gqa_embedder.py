"""GQAEmbedder: a compact sentence-embedding encoder with grouped-query attention (Ainslie et al. 2023).

    input_ids [B, T]
      -> token embeddings                                       [B, T, C]
      -> N x ( x + Attn(RMSNorm(x)),  x + FFN(RMSNorm(x)) )     pre-norm, bidirectional
             Attn: 8 query heads, 2 key/value heads (GQA), RoPE (optionally YaRN-scaled)
             FFN:  C -> intermediate -> GELU -> C
      -> RMSNorm                                                last_hidden_state [B, T, C]
      -> masked mean over real tokens -> Linear C -> E -> L2    pooler_output [B, E], unit norm

Differences from the original GQA embedder recipe: none in the architecture; its training-only pieces (Muon
optimiser, data pipeline) live in recipes, not here. The attention backend is chosen by `attn_implementation`
(eager, sdpa, flex_attention, and hf_attn's hf_blockwise / hf_local / hf_linear / hf_topk when hf_attn is
installed).

This file is remote code: it imports only torch, transformers and its `.` siblings.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils.output_capturing import capture_outputs

from .configuration_gqa_embedder import GQAEmbedderConfig
from .encoder import BidirectionalRopeAttention, masked_mean_pool
from .input_checks import check_model_inputs
from .pretrained import HfAttnPreTrainedMixin
from .rotary import RotaryEmbedding
from .static_start import content_readout, static_layout


class GQAEmbedderAttention(BidirectionalRopeAttention):
    """Bidirectional grouped-query self-attention with RoPE and bias-free q/k/v/o projections."""

    def __init__(self, config: GQAEmbedderConfig, layer_idx: int):
        super().__init__(config, layer_idx, linear=partial(nn.Linear, bias=False))


class GQAEmbedderMLP(nn.Module):
    """GELU feed-forward: C -> intermediate -> GELU -> C."""

    def __init__(self, config: GQAEmbedderConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.act_fn = nn.GELU()
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.up_proj(x)))


class GQAEmbedderLayer(GradientCheckpointingLayer):
    """Pre-norm encoder block: x + Attn(RMSNorm(x)), then x + FFN(RMSNorm(x))."""

    def __init__(self, config: GQAEmbedderConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = GQAEmbedderAttention(config, layer_idx)
        self.post_attention_layernorm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = GQAEmbedderMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs,
    ) -> torch.Tensor:
        attn_output, _ = self.self_attn(
            self.input_layernorm(hidden_states),
            attention_mask=attention_mask,
            position_embeddings=position_embeddings,
            **kwargs,
        )
        hidden_states = hidden_states + self.dropout(attn_output)
        return hidden_states + self.dropout(self.mlp(self.post_attention_layernorm(hidden_states)))


class GQAEmbedderPreTrainedModel(HfAttnPreTrainedMixin, PreTrainedModel):
    """transformers' own `_init_weights` is all it needs: linears and embeddings normal(0, initializer_range), zero
    bias and padding row, RMSNorms ones, RotaryEmbedding's buffers from the config."""

    config_class = GQAEmbedderConfig
    config: GQAEmbedderConfig
    _no_split_modules = ["GQAEmbedderLayer"]
    # `output_hidden_states` / `output_attentions`: recorded by transformers' `capture_outputs` from these modules.
    _can_record_outputs = {"hidden_states": GQAEmbedderLayer, "attentions": GQAEmbedderAttention}


class GQAEmbedderModel(GQAEmbedderPreTrainedModel):
    """GQAEmbedder encoder with its sentence-embedding head.

    forward(input_ids [B, T], attention_mask [B, T] (1 = real token)) ->
    `BaseModelOutputWithPooling` with `last_hidden_state` [B, T, hidden_size] (after the final RMSNorm),
    `pooler_output` [B, embedding_size], the L2-normalised sentence embedding (mean over real tokens, projected),
    and, on request, what transformers' `capture_outputs` records: `hidden_states` (the embedding output, the
    outputs of layers 1 .. N-1, and `last_hidden_state`) and `attentions` (one per layer from backends that return
    weights, e.g. eager).
    """

    def __init__(self, config: GQAEmbedderConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(GQAEmbedderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config)
        self.projection = nn.Linear(config.hidden_size, config.embedding_size)
        self.gradient_checkpointing = False
        self.post_init()  # embedding accessors: transformers' defaults find `embed_tokens`

    @torch.no_grad()
    def init_from_static_vectors(self, vectors: torch.Tensor, weights: torch.Tensor | None = None) -> str:
        """Start where a static embedding model ends: at step 0 the sentence embedding is the static model's
        (the weighted mean of its token vectors, normalised); returns what was done, for a training log.

        ``vectors`` [>= vocab_size, D] (row i: token id i of this model's tokenizer), ``weights`` [same rows] or
        None. The token table becomes ``static_layout(vectors, weights, hidden_size)`` (content columns and a norm
        channel, rows rescaled to RMS 1); every attention output and MLP output projection is zero, so the layers
        start as the identity; the projection reads the content columns.
        """
        config = self.config
        rows, k = static_layout(vectors, weights, config.hidden_size, config.vocab_size)
        rows = rows * (config.hidden_size**0.5 / rows.norm(dim=1).max())  # every row at RMS 1
        self.embed_tokens.weight.copy_(rows.to(self.embed_tokens.weight.dtype))
        for layer in self.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        self.projection.weight.copy_(content_readout(k, config.embedding_size, config.hidden_size))
        self.projection.bias.zero_()
        return f"static start: token table of {k} static columns + a norm channel, attention/MLP outputs zero"

    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """`token_type_ids` is accepted (tokenizers such as BERT's emit it) and ignored: the model has no segments."""
        check_model_inputs(
            self.config, input_ids, inputs_embeds, attention_mask, position_ids=position_ids,
            dtype=self.norm.weight.dtype, model_name=type(self).__name__,
        )
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # [B, T, C]
        if position_ids is None:
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device)[None]  # [1, T]

        # The 4D / block / 2D form each backend wants; None when there is no padding.
        mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask
        )
        position_embeddings = self.rotary_emb(inputs_embeds, position_ids)

        hidden_states = inputs_embeds
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask=mask, position_embeddings=position_embeddings, **kwargs)
        hidden_states = self.norm(hidden_states)

        pooled = masked_mean_pool(hidden_states, attention_mask)  # [B, C]
        embeddings = F.normalize(self.projection(pooled), p=2, dim=-1)  # [B, E]
        return BaseModelOutputWithPooling(last_hidden_state=hidden_states, pooler_output=embeddings)


__all__ = ["GQAEmbedderModel", "GQAEmbedderPreTrainedModel"]
