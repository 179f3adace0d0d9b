"""`hf_linear`: kernelised linear attention with the ELU+1 feature map (Katharopoulos et al., 2020).

softmax(q k^T) is replaced by phi(q) phi(k)^T with phi(x) = elu(x) + 1 > 0, so that

    out_i = phi(q_i) S_i / (phi(q_i) . z_i),   S_i = sum_{j visible} phi(k_j) v_j^T  [D, Dv],   z_i = sum phi(k_j)

- bidirectional: one global S = phi(K)^T V for every query, O(T) time and memory;
- causal: S_i is a prefix sum. Computed per chunk of C positions: the chunks' phi(K_c)^T V_c are summed with an
  exclusive cumsum (what earlier chunks contribute) and the inside of a chunk is a small C x C masked product,
  so memory is O(T C + (T / C) D^2) and time O(T C D + T D^2).

Padding keys get phi(k) = 0, so they add nothing to S or z. GQA: the state S is per key/value head and shared
by its group of query heads, so K/V are never repeated. As in the paper, `scaling` is not applied (the
normaliser already makes the output a weighted mean of values). There are no logits, so nothing that acts on them
can be honoured: a layer's sliding window, logit soft-capping, attention sinks, a distance bias (`distance_bias`,
`position_bias`: ALiBi, an adaptive span) are refused with `UnsupportedFeatureError`, never dropped. There is no
probability matrix to drop out, so `dropout` is accepted and ignored.

`linear_attention_forward` is the fast path; `linear_attention_reference` writes the same function as the
explicit quadratic form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..modeling.layers import distance_index, repeat_kv, resolve_is_causal
from ._common import UnsupportedFeatureError, check_heads, keep_keys, layer_features, warn_no_weights

# hf_linear has no logits: it honours none of the model features (see ``_common.layer_features``).
FEATURES: frozenset[str] = frozenset()


def refuse_logit_features(kwargs: dict) -> None:
    """UnsupportedFeatureError for any feature that acts on logits: window, softcap, sinks, distance bias."""
    layer_features("hf_linear", kwargs, FEATURES)
    for name in ("distance_bias", "position_bias"):
        if kwargs.get(name) is not None:
            raise UnsupportedFeatureError("hf_linear", "distance_bias",
                                          f"a position-dependent logit bias (ALiBi, adaptive span) as `{name}=`")

CHUNK_SIZE = 128
EPS = 1e-6  # keeps a query that sees no key at 0 / eps = 0


def feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1, positive everywhere."""
    return F.elu(x) + 1.0


def _allowed_from_4d(attention_mask: torch.Tensor, k_len: int) -> torch.Tensor:
    """A 4D mask as bool 'may attend': bool as is; additive float: entries at (or near) the dtype's min or -inf
    exclude, all other values (finite biases) cannot be expressed by linear attention and count as allowed."""
    mask = attention_mask[..., :k_len]
    if mask.dtype == torch.bool:
        return mask
    return mask > torch.finfo(mask.dtype).min / 2


def linear_attention_forward(
    module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
    scaling: float | None = None, dropout: float = 0.0, chunk_size: int = CHUNK_SIZE, **kwargs,
) -> tuple[Tensor, None]:
    """Linear attention with transformers' signature.

    query [B, H, Tq, D], key/value [B, Hkv, Tk, D]; `attention_mask` None or [B, Tk] bool key padding (a 4D mask
    is honoured by falling back to the quadratic reference form). Returns (out [B, Tq, H, D], None).
    """
    refuse_logit_features(kwargs)
    warn_no_weights("hf_linear", kwargs)
    b, h, q_len, _ = query.shape
    hkv, k_len, dv = key.shape[1], key.shape[2], value.shape[-1]
    groups = check_heads(h, hkv)
    if attention_mask is not None and attention_mask.dim() == 4:
        # An arbitrary [Tq, Tk] pattern has no prefix-sum form; it is O(T^2) by nature.
        return linear_attention_reference(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    is_causal = resolve_is_causal(module, kwargs)
    acc_dtype = torch.promote_types(query.dtype, torch.float32)

    phi_q = feature_map(query.to(acc_dtype)).reshape(b, hkv, groups, q_len, -1)  # [B, Hkv, G, Tq, D]
    phi_k = feature_map(key.to(acc_dtype))  # [B, Hkv, Tk, D]
    v = value.to(acc_dtype)
    if attention_mask is not None:  # [B, Tk] key padding: padded keys contribute nothing
        phi_k = phi_k * keep_keys(attention_mask, k_len, query.device, acc_dtype)[:, None, :, None]

    if not is_causal:
        state = phi_k.transpose(-1, -2) @ v  # [B, Hkv, D, Dv]
        num = phi_q @ state[:, :, None]  # [B, Hkv, G, Tq, Dv]
        den = phi_q @ phi_k.sum(dim=2)[:, :, None, :, None]  # [B, Hkv, G, Tq, 1]
    else:
        # Queries are the last Tq positions: keys before them form a prefix every query sees in full; the rest
        # line up one-to-one with the queries and are processed chunk by chunk.
        offset = k_len - q_len
        prefix_state = phi_k[:, :, :offset].transpose(-1, -2) @ v[:, :, :offset]  # [B, Hkv, D, Dv]
        prefix_norm = phi_k[:, :, :offset].sum(dim=2)  # [B, Hkv, D]
        phi_k, v = phi_k[:, :, offset:], v[:, :, offset:]

        c = min(chunk_size, max(q_len, 1))
        n = -(-q_len // c)
        pad = n * c - q_len  # zero rows: phi = 0 for padded keys, padded queries are cut off at the end
        phi_q = F.pad(phi_q, (0, 0, 0, pad)).reshape(b, hkv, groups, n, c, -1)  # [B, Hkv, G, n, C, D]
        phi_k = F.pad(phi_k, (0, 0, 0, pad)).reshape(b, hkv, n, c, -1)  # [B, Hkv, n, C, D]
        v = F.pad(v, (0, 0, 0, pad)).reshape(b, hkv, n, c, dv)

        # Contribution of all earlier chunks (exclusive prefix sum over chunks) plus the prefix before the queries.
        chunk_state = phi_k.transpose(-1, -2) @ v  # [B, Hkv, n, D, Dv]
        state = torch.cumsum(chunk_state, dim=2) - chunk_state + prefix_state[:, :, None]
        norm = torch.cumsum(phi_k.sum(dim=3), dim=2) - phi_k.sum(dim=3) + prefix_norm[:, :, None]  # [B, Hkv, n, D]
        # Inside a chunk: the explicit causal C x C form.
        causal = torch.ones(c, c, dtype=torch.bool, device=query.device).tril()
        scores = (phi_q @ phi_k[:, :, None].transpose(-1, -2)).masked_fill(~causal, 0.0)  # [B, Hkv, G, n, C, C]
        num = phi_q @ state[:, :, None] + scores @ v[:, :, None]  # [B, Hkv, G, n, C, Dv]
        den = phi_q @ norm[:, :, None, :, :, None] + scores.sum(dim=-1, keepdim=True)
        num = num.reshape(b, hkv, groups, n * c, dv)[:, :, :, :q_len]
        den = den.reshape(b, hkv, groups, n * c, 1)[:, :, :, :q_len]

    out = num / (den + EPS)  # [B, Hkv, G, Tq, Dv]
    out = out.reshape(b, h, q_len, dv).transpose(1, 2).contiguous().to(query.dtype)
    return out, None


def linear_attention_reference(
    module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
    scaling: float | None = None, dropout: float = 0.0, **kwargs,
) -> tuple[Tensor, Tensor]:
    """The quadratic form: weights = (phi(q) phi(k)^T masked) / row sum; out = weights v.

    Returns (out [B, Tq, H, D], weights [B, H, Tq, Tk]).
    """
    refuse_logit_features(kwargs)
    h, q_len, k_len = query.shape[1], query.shape[2], key.shape[2]
    check_heads(h, key.shape[1])
    acc_dtype = torch.promote_types(query.dtype, torch.float32)
    phi_q = feature_map(query.to(acc_dtype))
    phi_k = feature_map(repeat_kv(key, h // key.shape[1]).to(acc_dtype))
    v = repeat_kv(value, h // value.shape[1]).to(acc_dtype)

    scores = phi_q @ phi_k.transpose(-1, -2)  # [B, H, Tq, Tk], all positive
    allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device)[None, None]
    if resolve_is_causal(module, kwargs):
        allowed = allowed & (distance_index(q_len, k_len, query.device) >= 0)
    if attention_mask is not None and attention_mask.dim() == 2:
        allowed = allowed & keep_keys(attention_mask, k_len, query.device)[:, None, None, :]
    elif attention_mask is not None:
        allowed = allowed & _allowed_from_4d(attention_mask, k_len).to(query.device)
    scores = scores * allowed
    weights = scores / (scores.sum(dim=-1, keepdim=True) + EPS)
    out = (weights @ v).transpose(1, 2).contiguous().to(query.dtype)
    return out, weights.to(query.dtype)
