"""What the two bidirectional encoders (TAN, GQAEmbedder) share: RoPE self-attention and masked mean pooling.

This file is copied next to their modeling files when a model is saved with remote code, so it imports only torch,
transformers and its `.`-siblings.

Shapes: ``B`` batch, ``T`` tokens, ``C`` hidden size, ``H``/``Hkv`` query/key-value heads, ``D`` head dim.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .layers import eager_attention_forward
from .rotary import apply_rotary_pos_emb


def masked_mean_pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the real tokens: hidden [B, T, C], mask [B, T] (1 = token) -> [B, C].

    A row with no real token pools to zeros instead of dividing by zero.
    """
    if attention_mask is None:
        return hidden_states.mean(dim=1)
    mask = attention_mask[:, :, None].to(hidden_states.dtype)
    return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


class BidirectionalRopeAttention(nn.Module):
    """Bidirectional multi-head / grouped-query self-attention with RoPE, shared by the encoders.

    `linear(in_features, out_features)` builds the q/k/v/o projections: TAN uses DecomposedLinear,
    GQAEmbedder bias-free nn.Linear. K/V stay at `num_key_value_heads` heads; each backend handles the
    grouping (without materialising repeats where it can). `sliding_window` / `attention_topk` are read by the
    approximate hf_* backends only.
    """

    def __init__(self, config, layer_idx: int, linear: Callable[[int, int], nn.Module]):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = False
        self.sliding_window = getattr(config, "sliding_window", None)
        self.attention_topk = getattr(config, "attention_topk", None)

        self.q_proj = linear(config.hidden_size, self.num_heads * self.head_dim)
        self.k_proj = linear(config.hidden_size, self.num_key_value_heads * self.head_dim)
        self.v_proj = linear(config.hidden_size, self.num_key_value_heads * self.head_dim)
        self.o_proj = linear(self.num_heads * self.head_dim, config.hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]  # [B, T]
        hidden_shape = (*input_shape, -1, self.head_dim)

        q = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # [B, H, T, D]
        k = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # [B, Hkv, T, D]
        v = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # [B, Hkv, T, D]
        cos, sin = position_embeddings
        q, k = apply_rotary_pos_emb(q, k, cos, sin)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        out, weights = attention_interface(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )  # out [B, T, H, D]
        out = out.reshape(*input_shape, -1).contiguous()
        return self.o_proj(out), weights
