"""`hf_topk`: top-k sparse softmax attention.

Each query keeps only its k highest logits (after masks and biases) and takes the softmax over those; every other
key gets weight 0. k comes from the kwarg `attention_topk`, else `module.attention_topk`, else
`module.config.attention_topk`.

The layer's model features (``_common.layer_features``) are kept: a layer's sliding window (transformers'
`sliding_window=` kwarg, e.g. Mistral or the window layers of Gemma 2) limits the candidates to the window (top-k
inside the window); `softcap` caps the logits before the masks and biases (and so before the selection); the
sinks `s_aux` [H] join the softmax over the kept keys.

`topk_attention_forward` is the fast path: queries in chunks of `chunk_size` rows (kwarg; default so that one
chunk's [B, H, rows, Tk] logits take ~16 MiB), each chunk's logits, mask and bias built for its rows only, GQA
through a group axis (no repeated K/V), selection by `torch.topk`. Under autograd no chunk's tensors are kept:
`_RecomputeByChunk` recomputes one chunk at a time in the backward, so peak memory is O(T x chunk), not O(T^2).
It returns no weights (None, like hf_local and hf_blockwise); the attention-entropy metrics read them from
`topk_attention_reference`, which writes the same function as eager attention plus a -inf bias off the top k
(found by sorting), densely.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..kernels.band import band, distances
from ..modeling.layers import (
    additive_attention_mask,
    dense_distance_bias,
    eager_attention_forward,
    repeat_kv,
    resolve_is_causal,
    softmax_or_zero,
)
from ._common import (
    BIAS_KWARGS,
    check_heads,
    distance_table,
    excluded_as_neg_inf,
    group_heads,
    is_training,
    keep_keys,
    layer_features,
    positive_int_setting,
    warn_no_weights,
    without,
)

# The model features hf_topk keeps (see ``_common.layer_features``); the function itself is top-k, not softmax.
FEATURES = frozenset({"window", "layer_windows", "softcap", "sinks", "distance_bias"})

CHUNK_BYTES = 16 << 20  # fp32 logits of one query chunk, [B, H, rows, Tk]


def resolve_topk(module, kwargs: dict) -> int:
    """k; ValueError naming `attention_topk` when it is missing or not a positive integer."""
    return positive_int_setting(module, kwargs, "attention_topk", "hf_topk")


def _logit_bias(module, attention_mask, kwargs, q_len, k_len, device) -> torch.Tensor | None:
    """Everything added to the logits, fp32 [B|1, H|1, Tq, Tk]: mask (causal/padding/4D/window) + position/distance
    bias."""
    bias = additive_attention_mask(
        attention_mask, resolve_is_causal(module, kwargs), q_len, k_len, torch.float32, device
    )
    window = kwargs.get("sliding_window")
    if window is not None and (attention_mask is None or attention_mask.dim() != 4):  # 4D masks carry the window
        outside = ~band(resolve_is_causal(module, kwargs), window).allows(distances(q_len, k_len, device))
        bias = (0.0 if bias is None else bias) + torch.zeros(outside.shape, device=device).masked_fill(
            outside, float("-inf"))[None, None]
    table = distance_table(kwargs)
    position_bias = kwargs.get("position_bias") if table is None else dense_distance_bias(table, q_len, k_len)
    if position_bias is not None:
        bias = position_bias.float() if bias is None else bias + position_bias.float()
    return excluded_as_neg_inf(bias)


def _chunk_bias(module, attention_mask, kwargs, qs: int, qe: int, q_len: int, k_len: int, device):
    """What `_logit_bias` adds to the logits, for query rows [qs, qe) only: fp32 [B|1, H|1, rows, Tk] or None."""
    neg = float("-inf")
    bias = None
    if attention_mask is not None and attention_mask.dim() == 4:  # trusted to carry causality (as eager does)
        mask = attention_mask[..., qs:qe, :k_len]
        bias = torch.zeros((), device=device).masked_fill(~mask, neg) if mask.dtype == torch.bool else mask.float()
    else:
        d = distances(q_len, k_len, device, rows=(qs, qe))  # this chunk's rows only
        allowed = band(resolve_is_causal(module, kwargs), kwargs.get("sliding_window")).allows(d)[None, None]
        if attention_mask is not None:  # [B, Tk] key padding
            allowed = allowed & keep_keys(attention_mask, k_len, device)[:, None, None, :]
        if not bool(allowed.all()):
            bias = torch.zeros((), device=device).masked_fill(~allowed, neg)
    table = distance_table(kwargs)
    position_bias = kwargs.get("position_bias")
    if table is not None:
        position_bias = dense_distance_bias(table.float(), q_len, k_len, rows=(qs, qe))
    elif position_bias is not None:
        position_bias = position_bias[..., qs:qe, :].float()
    if position_bias is not None:
        bias = position_bias if bias is None else bias + position_bias
    return excluded_as_neg_inf(bias)


def topk_attention_forward(
    module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
    scaling: float | None = None, dropout: float = 0.0, **kwargs,
) -> tuple[Tensor, None]:
    """Top-k attention with transformers' signature.

    query [B, H, Tq, D], key/value [B, Hkv, Tk, D]; `attention_mask` None, [B, Tk] bool key padding or 4D.
    Optional `position_bias` [1, H, Tq, Tk] or `distance_bias` [H, L] (+ `max_distance`); `chunk_size` query
    rows per chunk. Returns (out [B, Tq, H, D], None).
    """
    features = layer_features("hf_topk", kwargs, FEATURES)
    top_k = resolve_topk(module, kwargs)
    warn_no_weights("hf_topk", kwargs)
    b, h, q_len, d_head = query.shape
    hkv, k_len = key.shape[1], key.shape[2]
    groups = check_heads(h, hkv)
    scaling = d_head**-0.5 if scaling is None else scaling
    chunk = kwargs.get("chunk_size") or max(1, CHUNK_BYTES // (4 * b * h * max(k_len, 1)))
    training = is_training(module)
    # Tensors that may carry gradients (q, k, v, a distance or position bias) are the chunk's arguments, so the
    # backward can recompute a chunk from them.
    names = [name for name in ("distance_bias", "position_bias", "s_aux") if kwargs.get(name) is not None]

    def rows(qs: int, q_chunk: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *tables) -> torch.Tensor:
        """Output [B, rows, H, D] of query rows [qs, qs + rows)."""
        qe = qs + q_chunk.shape[2]
        # [B, Hkv, G, rows, Tk] logits in fp32 (inputs cast first, so that low-precision runs select the keys
        # fp32 ones would); a query head's group shares its key head without repeating it.
        q = q_chunk.float().reshape(b, hkv, groups, qe - qs, d_head)
        scores = (q @ key.float()[:, :, None].transpose(-1, -2)) * scaling
        if features.softcap is not None:
            scores = torch.tanh(scores / features.softcap) * features.softcap
        call_kwargs = {**kwargs, **dict(zip(names, tables, strict=True))}
        bias = _chunk_bias(module, attention_mask, call_kwargs, qs, qe, q_len, k_len, query.device)
        if bias is not None:  # [B|1, H|1, rows, Tk] -> group layout [B|1, Hkv|1, G|1, rows, Tk]
            scores = scores + group_heads(bias, h, groups)
        # Keep the k largest logits of each row; the rest become -inf.
        kept = torch.zeros_like(scores, dtype=torch.bool)
        kept.scatter_(-1, scores.topk(min(top_k, k_len), dim=-1).indices, True)
        scores = scores.masked_fill(~kept, float("-inf"))
        if call_kwargs.get("s_aux") is not None:  # the sink's column joins the softmax and is dropped after it
            sink = call_kwargs["s_aux"].float().reshape(1, hkv, groups, 1, 1).expand(*scores.shape[:-1], 1)
            weights = softmax_or_zero(torch.cat([scores, sink], dim=-1))[..., :-1]
        else:
            weights = softmax_or_zero(scores)  # a row with no visible key: zeros
        weights = F.dropout(weights, p=dropout, training=training)
        out = weights @ value.float()[:, :, None]  # [B, Hkv, G, rows, D]
        return out.reshape(b, h, qe - qs, d_head).transpose(1, 2).to(query.dtype)

    tables = [kwargs[name] for name in names]
    starts = range(0, q_len, chunk)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value, *tables)):
        out = _RecomputeByChunk.apply(rows, starts, dropout > 0.0 and training, query, key, value, *tables)
    else:
        outs = [rows(qs, query[:, :, qs:qs + chunk], key, value, *tables) for qs in starts]
        out = torch.cat(outs, dim=1) if outs else query.new_zeros(b, 0, h, d_head)
    return out.contiguous(), None


class _RecomputeByChunk(torch.autograd.Function):
    """`rows(qs, query[:, :, qs:qs + chunk], key, value, *tables)` over the query chunks, concatenated along dim 1,
    keeping none of a chunk's intermediates: the backward recomputes the chunks one at a time, each with its own
    graph, and adds up their input gradients, so at most one chunk's [rows, Tk] tensors are alive. (A
    non-reentrant checkpoint per chunk keeps many chunks' recomputed tensors alive during the backward; a
    reentrant one calls `.backward()` inside and so breaks `torch.autograd.grad` through the backend.) With
    `random` (training dropout) each chunk's recompute replays the random state its forward started from."""

    @staticmethod
    def forward(ctx, rows, starts, random: bool, query, key, value, *tables):
        ctx.rows, ctx.starts, ctx.states = rows, starts, []
        outs = []
        for qs in starts:
            if random:
                ctx.states.append(_random_state(query.device))
            outs.append(rows(qs, query[:, :, qs:qs + starts.step], key, value, *tables))
        ctx.save_for_backward(query, key, value, *tables)
        b, h, _, d_head = query.shape
        return torch.cat(outs, dim=1) if outs else query.new_zeros(b, 0, h, d_head)

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        query, key, value, *tables = ctx.saved_tensors
        wanted = ctx.needs_input_grad[3:]
        grads = [torch.zeros_like(t) if need else None for t, need in zip((query, key, value, *tables), wanted,
                                                                          strict=True)]
        step = ctx.starts.step
        for i, qs in enumerate(ctx.starts):
            inputs = [t.detach().requires_grad_(need)
                      for t, need in zip((query[:, :, qs:qs + step], key, value, *tables), wanted, strict=True)]
            cuda = [query.device] if query.device.type == "cuda" else []
            with torch.enable_grad(), torch.random.fork_rng(devices=cuda, enabled=bool(ctx.states)):
                if ctx.states:  # the forward's draw; fork_rng restores the caller's state afterwards
                    _set_random_state(ctx.states[i], query.device)
                out = ctx.rows(qs, *inputs)
            needed = [t for t in inputs if t.requires_grad]
            chunk_grads = iter(torch.autograd.grad(out, needed, dout[:, qs:qs + step], allow_unused=True))
            for j, t in enumerate(inputs):
                if t.requires_grad:
                    g = next(chunk_grads)
                    if g is not None:
                        (grads[j][:, :, qs:qs + step] if j == 0 else grads[j]).add_(g)
        return (None, None, None, *grads)


def _random_state(device: torch.device) -> tuple:
    """The CPU random state and, on CUDA, the device's (what dropout draws from)."""
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def _set_random_state(state: tuple, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def topk_attention_reference(
    module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
    scaling: float | None = None, dropout: float = 0.0, **kwargs,
) -> tuple[Tensor, Tensor]:
    """Eager attention with an extra -inf bias on every key below the row's k-th largest logit."""
    features = layer_features("hf_topk", kwargs, FEATURES)
    top_k = resolve_topk(module, kwargs)
    h, q_len, d_head = query.shape[1], query.shape[2], query.shape[3]
    k_len = key.shape[2]
    scaling = d_head**-0.5 if scaling is None else scaling
    bias = _logit_bias(module, attention_mask, kwargs, q_len, k_len, query.device)
    scores = (query @ repeat_kv(key, h // key.shape[1]).transpose(-1, -2)).float() * scaling
    if features.softcap is not None:  # the selection sees the capped logits, as eager's softmax does
        scores = torch.tanh(scores / features.softcap) * features.softcap
    if bias is not None:
        scores = scores + bias
    kth = scores.sort(dim=-1, descending=True).values[..., min(top_k, k_len) - 1 : min(top_k, k_len)]
    topk_bias = torch.zeros_like(scores).masked_fill(scores < kth, float("-inf"))
    position_bias = topk_bias if bias is None else topk_bias + bias
    # The mask is inside `position_bias` already, so eager gets no separate mask (and no causal flag).
    rest = without(kwargs, (*BIAS_KWARGS, "is_causal", "sliding_window"))
    return eager_attention_forward(None, query, key, value, None, scaling, 0.0, position_bias=position_bias,
                                   is_causal=False, **rest)
