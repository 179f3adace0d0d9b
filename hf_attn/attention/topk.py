"""`hf_topk`: top-k sparse softmax attention.

Each query keeps only its k highest logits (after masks and biases) and takes the softmax over those; every other
key gets weight 0. k comes from the kwarg `attention_topk`, else `module.attention_topk`, else
`module.config.attention_topk`. The weights are returned densely ([B, H, Tq, Tk], zeros off the top k) because
the attention-entropy metrics read them; the computation is therefore O(T^2) in memory, like eager.

`topk_attention_forward` is the fast path (GQA through a group axis, no repeated K/V; selection by
`torch.topk`); `topk_attention_reference` writes the same function as eager attention plus a -inf bias off the
top k (found by sorting).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..modeling.layers import (
    additive_attention_mask,
    dense_distance_bias,
    eager_attention_forward,
    repeat_kv,
    resolve_is_causal,
)
from .blockwise import check_heads, config_value


def resolve_topk(module, kwargs: dict) -> int:
    """k; ValueError naming `attention_topk` when it is missing or not a positive integer."""
    k = config_value(module, kwargs, "attention_topk")
    if k is None or isinstance(k, bool) or int(k) != k or k <= 0:
        raise ValueError(f"hf_topk needs a positive integer attention_topk, got attention_topk={k!r}")
    return int(k)


def _logit_bias(module, attention_mask, kwargs, q_len, k_len, device) -> torch.Tensor | None:
    """Everything added to the logits, fp32 [B|1, H|1, Tq, Tk]: mask (causal/padding/4D) + position/distance bias."""
    bias = additive_attention_mask(
        attention_mask, resolve_is_causal(module, kwargs), q_len, k_len, torch.float32, device
    )
    position_bias = kwargs.get("position_bias")
    if kwargs.get("distance_bias") is not None:
        table = kwargs["distance_bias"]
        if kwargs.get("max_distance") is not None:
            table = table[:, : kwargs["max_distance"]]
        position_bias = dense_distance_bias(table, q_len, k_len)
    if position_bias is not None:
        bias = position_bias.float() if bias is None else bias + position_bias.float()
    if bias is not None:  # excluded pairs as -inf (not the dtype's min), so a row with no visible key is all -inf
        bias = bias.masked_fill(bias <= torch.finfo(torch.float32).min / 2, float("-inf"))
    return bias


def topk_attention_forward(
    module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k attention with transformers' signature.

    query [B, H, Tq, D], key/value [B, Hkv, Tk, D]; `attention_mask` None, [B, Tk] bool key padding or 4D.
    Optional `position_bias` [1, H, Tq, Tk] or `distance_bias` [H, L] (+ `max_distance`).
    Returns (out [B, Tq, H, D], weights [B, H, Tq, Tk]).
    """
    top_k = resolve_topk(module, kwargs)
    b, h, q_len, d_head = query.shape
    hkv, k_len = key.shape[1], key.shape[2]
    groups = check_heads(h, hkv)
    scaling = d_head**-0.5 if scaling is None else scaling

    # [B, Hkv, G, Tq, Tk] logits in fp32; a query head's group shares its key head without repeating it.
    # Inputs go to fp32 before the product so that low-precision runs select the same keys as fp32 ones would.
    q = query.float().reshape(b, hkv, groups, q_len, d_head)
    scores = (q @ key.float()[:, :, None].transpose(-1, -2)) * scaling
    bias = _logit_bias(module, attention_mask, kwargs, q_len, k_len, query.device)
    if bias is not None:  # [B|1, H|1, Tq|1, Tk] -> group layout [B|1, Hkv|1, G|1, Tq|1, Tk]
        heads = (hkv, groups) if bias.shape[1] == h else (1, 1)
        scores = scores + bias.reshape(bias.shape[0], *heads, *bias.shape[2:])

    # Keep the k largest logits of each row; the rest become -inf.
    kept = torch.zeros_like(scores, dtype=torch.bool)
    kept.scatter_(-1, scores.topk(min(top_k, k_len), dim=-1).indices, True)
    scores = scores.masked_fill(~kept, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    weights = torch.nan_to_num(weights, nan=0.0).to(query.dtype)  # a row with no visible key -> zeros
    weights = F.dropout(weights, p=dropout, training=bool(getattr(module, "training", False)))
    out = weights @ value[:, :, None]  # [B, Hkv, G, Tq, D]
    out = out.reshape(b, h, q_len, -1).transpose(1, 2).contiguous()
    return out, weights.reshape(b, h, q_len, k_len)


def topk_attention_reference(
    module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention with an extra -inf bias on every key below the row's k-th largest logit."""
    top_k = resolve_topk(module, kwargs)
    h, q_len, d_head = query.shape[1], query.shape[2], query.shape[3]
    k_len = key.shape[2]
    scaling = d_head**-0.5 if scaling is None else scaling
    bias = _logit_bias(module, attention_mask, kwargs, q_len, k_len, query.device)
    scores = (query @ repeat_kv(key, h // key.shape[1]).transpose(-1, -2)).float() * scaling
    if bias is not None:
        scores = scores + bias
    kth = scores.sort(dim=-1, descending=True).values[..., min(top_k, k_len) - 1 : min(top_k, k_len)]
    topk_bias = torch.zeros_like(scores).masked_fill(scores < kth, float("-inf"))
    position_bias = topk_bias if bias is None else topk_bias + bias
    # The mask is inside `position_bias` already, so eager gets no separate mask (and no causal flag).
    rest = {k: v for k, v in kwargs.items() if k not in ("distance_bias", "max_distance", "position_bias", "is_causal")}
    return eager_attention_forward(None, query, key, value, None, scaling, 0.0, position_bias=position_bias, is_causal=False, **rest)
