"""Causal sliding-window attention on CPU as unmasked calls of torch's fused flash kernel, merged by log-sum-exp.

Query s + a of a query block [s, s + b) sees keys [s + a - W + 1, s + a] (window W, b divides W, W >= 2b). Those
keys fall into three parts, each one plain call of the kernel over all blocks at once, with no mask:

- **own**: the block's keys [s, s + b), causal;
- **middle**: [s - W + b + 1, s), which every query of the block sees;
- **far edge**: [s - W + 1, s - W + b + 1), where query a sees key c iff c >= a: a causal call on the block's
  queries and these keys both taken in reverse order.

That is b * W score entries per block, what the window keeps (the slab path of `blockwise` computes
b * (b + W) and adds a mask to each). The parts' outputs are merged with their log-sum-exps (split-key flash
attention); the backward runs the kernel's backward once per part with the *merged* output and log-sum-exp, which
gives each part's share of the exact gradient. The first W queries see every earlier key: one causal call.

`applies` says when this path runs instead of `blockwise_attention`'s slabs: CPU, causal, a window only (no
distance table, max_distance, key padding, dense mask or bias), no dropout, queries = keys, and a backward to
run. Measured on 2 CPU threads (docs/RESULTS.md), its forward + backward is faster than the slab path's (the
fused backward is most of the time, and this one has no mask to read), its forward alone slower (three calls
and a merge instead of one), so inference keeps the slabs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import slabs

_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu  # what sdpa runs on CPU; also returns lse
_flash_backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward

QUERY_BLOCKS = (256, 128, 64, 32)  # the largest that divides the window (at most half of it) is used


def query_block(window: int) -> int | None:
    """Query block length for `window`: the largest of `QUERY_BLOCKS` that divides it with window >= 2 * block."""
    return next((b for b in QUERY_BLOCKS if window % b == 0 and window >= 2 * b), None)


def applies(query: Tensor, key: Tensor, value: Tensor, *, is_causal: bool, window: int | None, dense: bool,
            padded: bool, table: bool, max_distance: int | None, dropout: float) -> bool:
    """True when `sliding_window_attention` computes what `blockwise_attention` was asked for, and a backward
    will run (see the module docstring)."""
    backward = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    return (backward and query.device.type == "cpu" and is_causal and window is not None
            and query_block(window) is not None and not (dense or padded or table or dropout)
            and max_distance is None and query.shape[2] == key.shape[2])


class _MergedParts(torch.autograd.Function):
    """softmax attention of q_j against k_j / v_j for each part j (all [N, H, b, D] queries, [N, H, S_j, D] keys),
    merged into one softmax over the union of the keys: out = sum_j exp(lse_j - lse) o_j. `reversed_rows[j]`: part
    j's query rows are in reverse order (its output and gradient are flipped back). Returns out [N, H, b, D]."""

    @staticmethod
    def forward(ctx, scale: float, causal: tuple, reversed_rows: tuple, *qkv):
        parts = len(causal)
        outs, lses = [], []
        for j in range(parts):
            out, lse = _flash(qkv[j], qkv[parts + j], qkv[2 * parts + j], 0.0, causal[j], scale=scale)
            if reversed_rows[j]:
                out, lse = out.flip(2), lse.flip(2)
            outs.append(out)
            lses.append(lse)
        lse = torch.logsumexp(torch.stack(lses), dim=0)  # [N, H, b]; every row sees its own key
        out = sum(o * torch.exp(part - lse)[..., None] for o, part in zip(outs, lses, strict=True))
        ctx.save_for_backward(out, lse, *qkv)
        ctx.scale, ctx.causal, ctx.reversed_rows = scale, causal, reversed_rows
        return out

    @staticmethod
    def backward(ctx, dout):
        out, lse, *qkv = ctx.saved_tensors
        parts = len(ctx.causal)
        grads = [None] * (3 * parts)
        dout = dout.contiguous()
        for j in range(parts):
            d_o, o, s = dout, out, lse
            if ctx.reversed_rows[j]:
                d_o, o, s = d_o.flip(2), o.flip(2), s.flip(2)
            grads[j], grads[parts + j], grads[2 * parts + j] = _flash_backward(
                d_o, qkv[j], qkv[parts + j], qkv[2 * parts + j], o, s, 0.0, ctx.causal[j], scale=ctx.scale)
        return (None, None, None, *grads)


def sliding_window_attention(query: Tensor, key: Tensor, value: Tensor, *, window: int, scaling: float) -> Tensor:
    """Causal sliding-window attention (see the module docstring); query [B, H, T, D], key/value [B, Hkv, T, D].
    Returns [B, T, H, D] in query's dtype."""
    b, h, t, d = query.shape
    dtype = torch.promote_types(query.dtype, torch.float32)  # fp32 on CPU (half-precision CPU kernels are slow)
    q = query.to(dtype)
    k, v = (x.to(dtype).repeat_interleave(h // key.shape[1], dim=1) for x in (key, value))
    head = min(window, t)  # the first W queries see every earlier key
    out = F.scaled_dot_product_attention(q[:, :, :head], k[:, :, :head], v[:, :, :head], is_causal=True,
                                         scale=scaling)
    if t > window:
        blk = query_block(window)
        n = -(-(t - window) // blk)
        pad = window + n * blk - t  # the last block runs past T: zero rows, whose keys only they see (causal)
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        qb = slabs(q, window, n, blk, blk)  # block i starts at s = window + i * blk
        own = (qb, slabs(k, window, n, blk, blk), slabs(v, window, n, blk, blk))
        far = (qb.flip(2), slabs(k, 1, n, blk, blk).flip(2), slabs(v, 1, n, blk, blk).flip(2))  # from s - W + 1
        middle = window - blk - 1  # keys [s - W + blk + 1, s): at least blk - 1 as window >= 2 * blk
        mid = (qb, slabs(k, blk + 1, n, middle, blk), slabs(v, blk + 1, n, middle, blk))
        rest = _MergedParts.apply(scaling, (True, True, False), (False, True, False),
                                  *[p[0] for p in (own, far, mid)], *[p[1] for p in (own, far, mid)],
                                  *[p[2] for p in (own, far, mid)])
        rest = rest.reshape(b, n, h, blk, d).transpose(1, 2).reshape(b, h, n * blk, d)[:, :, :t - window]
        out = torch.cat([out, rest], dim=2)
    return out.transpose(1, 2).to(query.dtype)
