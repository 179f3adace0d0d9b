"""`hf_local`: sliding-window softmax attention, computed blockwise so cost grows as T x window, not T^2.

A query at position i sees keys j with 0 <= i - j < window (causal) or |i - j| < window (bidirectional), on top
of whatever padding, distance bias or dense mask the caller passes. The window comes from the kwarg
`sliding_window`, else `module.sliding_window`, else `module.config.sliding_window`; in a model whose
`config.layer_types` name its sliding layers (Gemma 2, Qwen 2, ModernBERT, gpt-oss, ...) a layer called with
`sliding_window=None` is a full-attention layer and stays one (exact, through the same blockwise core).
Soft-capping (`softcap`) and attention sinks (`s_aux`) are computed exactly (``_common.layer_features``).

`local_attention_forward` is the fast path (the shared blockwise core: one fused sdpa call over key slabs, forward
and backward, so both skip what the window excludes);
`local_attention_reference` is the same function written densely on top of the eager reference.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..kernels.band import band
from ..modeling.layers import dense_distance_bias, distance_index, eager_attention_forward, resolve_is_causal
from ._common import (
    check_heads,
    declares_layer_windows,
    distance_table,
    is_training,
    layer_features,
    positive_int_setting,
    split_mask,
    warn_no_weights,
    without,
)
from .blockwise import blockwise_attention

# The model features hf_local computes exactly (see ``_common.layer_features``).
FEATURES = frozenset({"window", "layer_windows", "softcap", "sinks", "distance_bias"})


def resolve_window(module, kwargs: dict) -> int | None:
    """The sliding window: None on a full-attention layer of a model with per-layer types (see the module
    docstring); else ValueError naming `sliding_window` when it is missing or not a positive integer."""
    if "sliding_window" in kwargs and kwargs["sliding_window"] is None and declares_layer_windows(module):
        return None
    return positive_int_setting(module, kwargs, "sliding_window", "hf_local")


def local_attention_forward(
    module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
    scaling: float | None = None, dropout: float = 0.0, **kwargs,
) -> tuple[Tensor, None]:
    """Sliding-window attention with transformers' signature.

    query [B, H, Tq, D], key/value [B, Hkv, Tk, D]; `attention_mask` None, [B, Tk] bool key padding (what
    transformers hands hf_* backends) or a 4D bool/additive mask. Optional kwargs: `distance_bias` [H, L] with
    `max_distance` (and `trained_distances`, see `blockwise_attention`), or a dense `position_bias`
    [1, H, Tq, Tk]. Returns (out [B, Tq, H, D], None): the weights are never materialised.
    """
    features = layer_features("hf_local", kwargs, FEATURES)
    warn_no_weights("hf_local", kwargs)
    window = resolve_window(module, kwargs)
    check_heads(query.shape[1], key.shape[1])
    key_padding_mask, dense_mask = split_mask(attention_mask)
    return blockwise_attention(
        query, key, value, scaling=query.shape[-1] ** -0.5 if scaling is None else scaling,
        is_causal=resolve_is_causal(module, kwargs), key_padding_mask=key_padding_mask,
        distance_bias=kwargs.get("distance_bias"), max_distance=kwargs.get("max_distance"), window=window,
        dropout=dropout, training=is_training(module), attn_mask=dense_mask, position_bias=kwargs.get("position_bias"),
        trained_distances=kwargs.get("trained_distances"), softcap=features.softcap, sinks=features.sinks,
    )


def local_attention_reference(
    module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
    scaling: float | None = None, dropout: float = 0.0, **kwargs,
) -> tuple[Tensor, Tensor]:
    """Dense reference: eager attention (softcap and sinks included) plus a -inf bias outside the window.
    Returns (out, weights)."""
    layer_features("hf_local", kwargs, FEATURES)
    window = resolve_window(module, kwargs)
    q_len, k_len = query.shape[2], key.shape[2]
    d = distance_index(q_len, k_len, query.device)  # [Tq, Tk], d = q_pos - k_pos
    in_window = band(resolve_is_causal(module, kwargs), window).allows(d)
    bias = torch.zeros(d.shape, device=query.device).masked_fill(~in_window, float("-inf"))[None, None]
    table = distance_table(kwargs)
    if table is not None:
        bias = bias + dense_distance_bias(table, q_len, k_len)
    if kwargs.get("position_bias") is not None:
        bias = bias + kwargs["position_bias"]
    return eager_attention_forward(
        module, query, key, value, attention_mask, scaling, dropout, position_bias=bias, **without(kwargs)
    )
