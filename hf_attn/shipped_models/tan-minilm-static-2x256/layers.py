"""The attention seam shared by the hf_attn models and the hf_* backends.

This file is copied next to the modeling files when a model is saved with remote code, so it imports only torch,
transformers and its `.`-siblings. It holds what every attention function and every model's attention module
agree on, once: the eager reference, mask normalisation, the per-head *distance bias* and how it reaches each
backend. The other shared pieces live beside it: RoPE in ``rotary.py``, the encoders' attention and pooling in
``encoder.py``, the models' PreTrainedModel mixin in ``pretrained.py``, the input checks in ``input_checks.py``,
the distance masks and ALiBi in ``distance_masks.py``.

Shapes: ``B`` batch, ``H`` query heads, ``Hkv`` key/value heads, ``Tq``/``Tk`` query/key lengths, ``D`` head dim.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

# The hf_* attention backends register themselves when hf_attn is imported. A model loaded as remote code (its
# modules live under transformers_modules, not hf_attn) imports hf_attn here for that, when it is installed. A module
# that is itself part of hf_attn must not: hf_attn imports it while initialising, and registers the backends itself.
if not __name__.startswith("hf_attn."):
    try:
        import hf_attn  # noqa: F401
    except ImportError:
        pass

# ---------------------------------------------------------------------------------------------------------------
# Attention seam
# ---------------------------------------------------------------------------------------------------------------
#
# Every attention function has transformers' signature
#     fn(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs) -> (out, weights)
# with query [B, H, Tq, D], key/value [B, Hkv, Tk, D], out [B, Tq, H, D].
#
# `attention_mask` arrives in whatever form transformers' mask interface produced for the backend:
#   None                       no padding (causality then comes from `is_causal`)
#   [B, Tk] bool               key padding, True = real token (what the hf_* backends receive: O(T) memory)
#   [B, 1|H, Tq, Tk] bool      True = attend (sdpa-style, causality already inside)
#   [B, 1|H, Tq, Tk] float     additive (eager-style, causality already inside)
#
# Per-head biases that depend only on the distance d = q_pos - k_pos (ALiBi, the adaptive-span soft mask, the
# triangle-wave mask) are passed as a *distance bias table* `[H, L]`: entry [h, d] is added to the logit of every
# (query, key) pair at distance d >= 0; -inf excludes the pair; distances >= L are excluded. Backends that can use
# the table directly (and skip key blocks past `max_distance`) mark themselves with `accepts_distance_bias = True`;
# all others (eager, sdpa, flex_attention) receive the same function densely as transformers' `position_bias`
# [1, H, Tq, Tk]. `attention_bias_kwargs` chooses, so model code never branches on the backend.
#
# Model attention modules pick their backend exactly as transformers' own models do, by writing
#     ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
# in the modeling file (transformers looks for that text to allow `model.set_attn_implementation`).


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[B, Hkv, T, D] -> [B, Hkv * n_rep, T, D], each key/value head repeated for its group of query heads."""
    if n_rep == 1:
        return hidden_states
    b, hkv, t, d = hidden_states.shape
    return hidden_states[:, :, None, :, :].expand(b, hkv, n_rep, t, d).reshape(b, hkv * n_rep, t, d)


def resolve_is_causal(module: nn.Module | None, kwargs: dict) -> bool:
    """Causality as transformers' sdpa decides it: the `is_causal` kwarg, else `module.is_causal`."""
    is_causal = kwargs.get("is_causal")
    if is_causal is None:
        is_causal = getattr(module, "is_causal", False)
    return bool(is_causal)


def additive_attention_mask(
    attention_mask: torch.Tensor | None,
    is_causal: bool,
    q_len: int,
    k_len: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor | None:
    """Normalise any accepted `attention_mask` form to an additive float mask [B|1, 1|H, Tq, Tk] (or None).

    Queries are the last `q_len` positions of the keys (KV-cache decoding), so the causal edge is bottom-right.
    A 4D mask is trusted to contain causality already, as transformers builds it.
    """
    neg = torch.finfo(dtype).min
    if attention_mask is not None and attention_mask.dim() == 4:
        mask = attention_mask[..., :k_len]
        if mask.dtype == torch.bool:
            return torch.zeros((), dtype=dtype, device=device).masked_fill(~mask, neg)
        return mask.to(dtype)
    allowed = None
    if is_causal:
        q_pos = torch.arange(k_len - q_len, k_len, device=device)
        allowed = (q_pos[:, None] >= torch.arange(k_len, device=device)[None, :])[None, None]  # [1, 1, Tq, Tk]
    if attention_mask is not None:  # [B, Tk] key padding
        keep = attention_mask[:, None, None, -k_len:].to(device=device, dtype=torch.bool)
        allowed = keep if allowed is None else (allowed & keep)
    if allowed is None:
        return None
    return torch.zeros((), dtype=dtype, device=device).masked_fill(~allowed, neg)


def distance_index(
    q_len: int, k_len: int, device: torch.device, rows: tuple[int, int] | None = None
) -> torch.Tensor:
    """[Tq, Tk] long: d = q_pos - k_pos with queries the last `q_len` key positions; only query rows
    [start, stop) when `rows` is given. (The remote-code twin of `hf_attn.kernels.band.distances`.)"""
    start, stop = rows if rows is not None else (0, q_len)
    q_pos = torch.arange(k_len - q_len + start, k_len - q_len + stop, device=device)
    return q_pos[:, None] - torch.arange(k_len, device=device)[None, :]


def dense_distance_bias(
    table: torch.Tensor, q_len: int, k_len: int, rows: tuple[int, int] | None = None
) -> torch.Tensor:
    """Expand a distance bias table [H, L] to transformers' `position_bias` [1, H, Tq, Tk] (query rows
    [start, stop) only when `rows` is given).

    Pairs with d < 0 (the future) or d >= L get -inf; differentiable with respect to `table`.
    """
    h, length = table.shape
    d = distance_index(q_len, k_len, table.device, rows)
    valid = (d >= 0) & (d < length)
    dense = table[:, d.clamp(0, length - 1)]  # [H, Tq, Tk]
    dense = dense.masked_fill(~valid, float("-inf"))
    return dense[None]


def attention_bias_kwargs(
    attention_fn: Callable,
    table: torch.Tensor | None,
    query: torch.Tensor,
    k_len: int,
    max_distance: int | None = None,
    trained_distances: torch.Tensor | None = None,
) -> dict:
    """The kwargs that carry a distance bias table to `attention_fn` in the form it understands.

    `query` [B, H, Tq, D] gives the batch size, query length and dtype of the dense form: transformers'
    flex_attention indexes `position_bias` by batch entry, so the dense bias gets a (free, expanded) batch
    dimension, and sdpa wants it in the query's dtype. `trained_distances` ([H, 2] lo, hi: the table depends
    on trained parameters only at lo_h <= d < hi_h) goes to table backends, which may then compute the table's
    gradient there only.
    """
    if table is None:
        return {}
    if getattr(attention_fn, "accepts_distance_bias", False):
        kwargs = {"distance_bias": table, "max_distance": max_distance}
        return kwargs if trained_distances is None else {**kwargs, "trained_distances": trained_distances}
    b, _, q_len, _ = query.shape
    dense = dense_distance_bias(table, q_len, k_len).to(query.dtype)
    return {"position_bias": dense.expand(b, -1, -1, -1)}


def softmax_or_zero(scores: torch.Tensor) -> torch.Tensor:
    """softmax over the last dim, with zero weights in a row whose logits are all excluded (-inf or finfo.min).

    Such rows are replaced before the softmax, so neither the forward nor the backward meets exp(-inf - -inf): a
    NaN there would reach every parameter's gradient.
    """
    no_key = scores.amax(dim=-1, keepdim=True) <= torch.finfo(torch.float32).min / 2
    return torch.softmax(scores.masked_fill(no_key, 0.0), dim=-1).masked_fill(no_key, 0.0)


def eager_attention_forward(
    module: nn.Module | None,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    position_bias: torch.Tensor | None = None,
    distance_bias: torch.Tensor | None = None,
    softcap: float | None = None,
    s_aux: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention, the reference every exact backend is tested against.

    softmax(cap(q k^T * scaling) + mask + bias) v, with the softmax in fp32. `softcap` (Gemma 2) caps the logits,
    cap(x) = softcap * tanh(x / softcap), before any mask or bias; `s_aux` [H] (gpt-oss's attention sinks) is one
    extra logit per head in every row's softmax denominator, attending to nothing. The `sliding_window` kwarg is
    not read: transformers puts a layer's window into the 4D mask it hands eager. Returns (out [B, Tq, H, D],
    weights [B, H, Tq, Tk]).
    """
    b, h, q_len, d = query.shape
    k_len = key.shape[2]
    scaling = d**-0.5 if scaling is None else scaling
    key = repeat_kv(key, h // key.shape[1])
    value = repeat_kv(value, h // value.shape[1])

    scores = torch.matmul(query, key.transpose(2, 3)).float() * scaling  # [B, H, Tq, Tk]
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    mask = additive_attention_mask(
        attention_mask, resolve_is_causal(module, kwargs), q_len, k_len, torch.float32, query.device
    )
    if mask is not None:
        scores = scores + mask
    if distance_bias is not None:
        position_bias = dense_distance_bias(distance_bias, q_len, k_len)
    if position_bias is not None:
        scores = scores + position_bias.float()
    # A query whose keys are all excluded (a padding row) gets zero weights, as in the blockwise and Triton
    # backends, rather than NaN (-inf rows) or a uniform average (rows of finfo.min).
    if s_aux is not None:  # the sink's column joins the softmax and is dropped after it
        sink = s_aux.float().reshape(1, h, 1, 1).expand(b, h, q_len, 1)
        weights = softmax_or_zero(torch.cat([scores, sink], dim=-1))[..., :-1].to(query.dtype)
    else:
        weights = softmax_or_zero(scores).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training if module is not None else False)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()  # [B, Tq, H, D]
    return out, weights

