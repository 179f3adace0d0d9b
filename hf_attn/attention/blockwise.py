"""Blockwise exact softmax attention: the shared core of `hf_local` and of `hf_blockwise` off CUDA.

Which (query, key) pairs count is the band rule of `hf_attn.kernels.band` (causality, window, max_distance,
the distance-bias table's length) plus key padding. Three paths compute the same function:

- **banded** (bounded band): queries in blocks of `block_size`, each against its slab of `block + back + fwd`
  keys, all blocks in one call of torch's fused `scaled_dot_product_attention`, forward and backward (its
  backward skips exactly what the forward skips). The band / distance-bias tile depends only on q - k, so one
  [block, slab] tile gathered from the [H, L] table serves every slab. Memory is linear in T.
- **blocks**: each query block against exactly the keys it can see, one fused call per block: for bands the
  slabs would overcompute (no bound, or a reach close to the sequence).
- **loop** (attention/online_softmax.py): for each query block the keys it can see are visited in blocks, an
  *online softmax* (running max `m`, normaliser `l`, weighted sum `acc`) folding each in; key blocks no query of
  the block can see are never visited. Plain PyTorch, differentiated by autograd; only for dense 4D masks /
  position biases, and training dropout with a table that needs a gradient.

Logit soft-capping (`softcap`) and attention sinks (`sinks`, one extra logit per head in the softmax
denominator) are computed exactly on every path: the loop caps each tile's logits and starts its running softmax
from the sink; the banded and per-block paths hand their tiles to `_explicit` (the same tiles, written as
matmul, cap, mask, softmax over the keys and the sink, matmul, recomputed in the backward) instead of torch's fused
kernel, which has neither; `window_parts` does not run for them.

`_plan` picks banded or blocks by the score entries each computes (the banded path within `BANDED_SLACK`);
`score_entries` reports that path's work. On the fused paths a table that needs a gradient goes into the kernel
detached, and `table_gradient` adds its gradient.

Causal windows under autograd on CPU go to `window_parts` instead (unmasked fused calls merged by log-sum-exp,
faster to train than the slabs).

Positions: queries are the LAST Tq of the Tk key positions (KV-cache decoding), query i sits at key position
Tk - Tq + i, and the distance of a (query, key) pair is d = q_pos - k_pos (bottom-right causal alignment).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..kernels.band import Band, band
from ..modeling.layers import softmax_or_zero
from . import window_parts
from ._common import check_heads, group_heads, keep_keys, slabs
from .online_softmax import loop_attention
from .table_gradient import MaskGradient, TableGradientOnRanges

# Number of (query block, key block) pairs computed by the last `blockwise_attention` call; tests read it to
# check that blocks outside the window really are skipped. A debugging aid only, not part of the API.
BLOCKS_VISITED = 0


# The banded path runs one fused call for all query blocks with one shared tile; the per-block path one call, and
# one tile, per query block. The banded path runs while it computes at most this many times the per-block entries.
# Measured on 2 CPU threads (B=1, H=4, T=4096, D=32, span table, fwd+bwd): at 1.03x the entries the banded path
# took 203 ms against 260 ms per block; at 2.0x, 974 ms against 659 ms.
BANDED_SLACK = 1.25


def _block_entries(rule: Band, q_len: int, k_len: int, block: int) -> int:
    """Score entries of each query block against its visible key range (the per-block path and the loop)."""
    offset = k_len - q_len
    total = 0
    for qs in range(0, q_len, block):
        qe = min(qs + block, q_len)
        lo, hi = rule.key_range(offset + qs, offset + qe, k_len)
        total += (qe - qs) * (hi - lo)
    return total


def _plan(rule: Band, q_len: int, k_len: int, block: int) -> tuple[str, int]:
    """("banded" | "blocks", score entries of that path per head).

    The banded path exists when the band is bounded both ways (and not empty); it computes `block + back + fwd`
    keys for every query block, including the zero-padded slab ends before the first and after the last key. The
    per-block path computes each query block against its visible key range only. The banded path runs while its
    entries are within `BANDED_SLACK` of the per-block path's (its one call and one tile cost less per entry).
    """
    blocks = _block_entries(rule, q_len, k_len, block)
    if not rule.bounded or rule.empty or q_len == 0 or k_len == 0:
        return "blocks", blocks
    banded = -(-q_len // block) * block * (block + rule.back + rule.fwd)
    return ("banded", banded) if banded <= BANDED_SLACK * blocks else ("blocks", blocks)


def score_entries(q_len: int, k_len: int, *, is_causal: bool, window: int | None = None,
                  max_distance: int | None = None, block_size: int = 128) -> int:
    """Query-key score entries `blockwise_attention` computes for one head (no dense mask), padding included.

    The same path choice as the function (`_plan`): the banded path computes `block + back + fwd` keys for every
    query block; the per-block path (and the loop, which dense masks take) each query block against its visible
    key range. This is the work actually
    done, which can exceed the entries a mask keeps (a slab's padded ends, the edges of the band).
    """
    return _plan(band(is_causal, window, max_distance), q_len, k_len, block_size)[1]


def _table_gradient(table: Tensor | None, trained: Tensor | None, q: Tensor, extra: Extra) -> tuple[bool, bool]:
    """(on_ranges, tap): how the fused paths give the table its gradient. on_ranges: `TableGradientOnRanges`
    (CPU, `trained` given); tap: `MaskGradient` on each call's tile; neither when the table needs none or the
    tiles go to `_explicit` (plain autograd: the table's gradient flows through the mask)."""
    needs = table is not None and table.requires_grad and torch.is_grad_enabled() and not extra.any
    on_ranges = needs and trained is not None and q.device.type == "cpu"
    return on_ranges, needs and not on_ranges


class Extra(NamedTuple):
    """Logit soft-capping and attention sinks [H] of a call (None: absent); torch's fused kernel has neither."""

    softcap: float | None = None
    sinks: Tensor | None = None

    @property
    def any(self) -> bool:
        return self.softcap is not None or self.sinks is not None


NO_EXTRA = Extra()

# `_explicit` computes at most this many fp32 logits at once (slabs are taken in groups that fit).
EXPLICIT_CHUNK_ENTRIES = 16 << 20


def _explicit_chunk(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scaling: float, softcap: float | None,
                    sinks: Tensor | None, dropout: float) -> Tensor:
    """softmax(cap(q k^T * scaling) + mask, sink) v written out (logits and softmax in fp32 at least), q [N, H, M,
    D], k/v [N, Hkv, S, D], mask [N|1, H|1, M, S] bool or additive (or None), sinks [H]: [N, H, M, D]. A row that
    sees no key gets 0."""
    n, h, m, d = q.shape
    hkv = k.shape[1]
    g = h // hkv
    s = q.reshape(n, hkv, g, m, d) @ k[:, :, None].transpose(-1, -2)
    s = s.to(torch.promote_types(s.dtype, torch.float32)) * scaling  # [N, Hkv, G, M, S]
    if softcap is not None:
        s = torch.tanh(s / softcap) * softcap
    if mask is not None:
        mask = group_heads(mask, h, g)
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask.to(s.dtype)
    if sinks is not None:  # one more column, the sink's logit; its weight attends to nothing
        sink = sinks.to(s.dtype).reshape(1, hkv, g, 1, 1).expand(n, hkv, g, m, 1)
        p = softmax_or_zero(torch.cat([s, sink], dim=-1))[..., :-1]
    else:
        p = softmax_or_zero(s)
    if dropout > 0.0:
        p = F.dropout(p, p=dropout)
    return (p.to(v.dtype) @ v[:, :, None]).reshape(n, h, m, d)


def _explicit(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scaling: float, extra: Extra,
              dropout: float) -> Tensor:
    """`_explicit_chunk` over groups of slabs small enough to hold their logits, each recomputed in the backward
    (a non-reentrant checkpoint, which replays dropout's random draws), so memory stays linear in T."""
    n, h, m, _ = q.shape
    per = max(1, EXPLICIT_CHUNK_ENTRIES // max(1, h * m * k.shape[2]))
    outs = []
    for i in range(0, n, per):
        part = (q[i:i + per], k[i:i + per], v[i:i + per], mask if mask is None or mask.shape[0] == 1
                else mask[i:i + per])
        if torch.is_grad_enabled():
            outs.append(checkpoint(_explicit_chunk, *part, scaling, extra.softcap, extra.sinks, dropout,
                                   use_reentrant=False))
        else:
            outs.append(_explicit_chunk(*part, scaling, extra.softcap, extra.sinks, dropout))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)


def _fused(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scaling: float, dropout: float, on_ranges: bool,
           tap: bool, extra: Extra = NO_EXTRA) -> tuple[Tensor, Tensor | None]:
    """One call of torch's fused attention, q [N, H, M, D], k/v [N, Hkv, S, D], mask [N|1, H|1, M, S] or None:
    (out [N, H, M, D], lse [N, H, M] when `on_ranges`, else None). With `on_ranges` the CPU flash kernel (what sdpa
    runs on CPU) is called directly, for its log-sum-exp; with `tap` the mask goes in detached and `MaskGradient`
    adds its gradient. With a softcap or sinks (`extra`) the tiles go to `_explicit` instead."""
    h, hkv = q.shape[1], k.shape[1]
    if extra.any:
        return _explicit(q, k, v, mask, scaling, extra, dropout), None
    if on_ranges:
        k, v = k.repeat_interleave(h // hkv, dim=1), v.repeat_interleave(h // hkv, dim=1)
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, dropout, False, attn_mask=mask,
                                                                          scale=scaling)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.detach() if tap else mask, dropout_p=dropout,
                                         scale=scaling, enable_gqa=hkv != h)
    if tap:
        out = MaskGradient.apply(out, mask, q.detach(), k.detach(), v.detach(), scaling)
    return out, None


def _slab_ranges(n: int, first: int, span: int, block: int, k_len: int) -> list[tuple[int, int]]:
    """The slabs [i0, i1) that start before key 0, that lie inside [0, Tk), and that end after the last key
    (empty runs left out): the inside ones share one mask."""
    front = min(n, max(0, -(first // block)))  # ceil(-first / block)
    back_start = max(front, min(n, (k_len - span - first) // block + 1))
    return [r for r in ((0, front), (front, back_start), (back_start, n)) if r[1] > r[0]]


def _banded(q, k, v, key_padding_mask, table, rule: Band, block: int, scaling: float, dropout: float,
            trained: Tensor | None = None, extra: Extra = NO_EXTRA):
    """Every query block against its slab of `block + back + fwd` keys, through torch's fused sdpa.

    q [B, H, Tq, D], k/v [B, Hkv, Tk, D], table [H, L] or None. Query block i holds key positions
    offset + i*block + a (a < block); its slab holds offset + i*block - back + c (c < block + back + fwd), so the
    distance d = a + back - c and the band / distance-bias tile [block, span] are the same for every slab: one
    tile, gathered once from the table, serves all of them. Slabs that reach past either end of the keys get
    masks of their own in a separate call (as do all slabs when there is key padding). K/V are not repeated for
    GQA (sdpa's enable_gqa). Memory is linear in T: slabs are span / block times the size of K and V, and sdpa
    keeps no score matrix for its backward. Returns [B, Tq, H, D].

    When the table needs a gradient and `trained` ([H, 2]: lo, hi per head) says where it depends on trained
    parameters, CPU runs take the log-sum-exp from torch's CPU flash kernel and `TableGradientOnRanges` computes
    the table's gradient on those distances only; otherwise `MaskGradient` recomputes it over whole slabs.
    """
    b, h, q_len, d_head = q.shape
    k_len = k.shape[2]
    # fp32 on CPU (half-precision CPU kernels are slow); CUDA keeps its dtype.
    dtype = q.dtype if q.is_cuda else torch.promote_types(q.dtype, torch.float32)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    q_in = q
    left, right = rule.back, rule.fwd
    n = -(-q_len // block)
    span = block + left + right
    offset = k_len - q_len
    first = offset - left  # key position of slab 0's first key; slab i starts at first + i * block

    q = F.pad(q, (0, 0, 0, n * block - q_len))
    keep = None if key_padding_mask is None else keep_keys(key_padding_mask, k_len, q.device)
    dist = torch.arange(block, device=q.device)[:, None] + left - torch.arange(span, device=q.device)[None, :]
    allowed = rule.allows(dist)  # [block, span]
    on_ranges, tap = _table_gradient(table, trained, q, extra)
    tile = None
    if table is not None:  # [1, H, block, span], the excluded pairs at -inf
        tile = (table.detach() if on_ranges else table).to(q.dtype)[:, dist.clamp(0, table.shape[-1] - 1)]
        tile = tile.masked_fill(~allowed, float("-inf"))[None]

    def attend(i0: int, i1: int) -> torch.Tensor:
        """Query blocks [i0, i1) against their slabs: [(i1 - i0) * B, H, block, D] (slab-major)."""
        count = i1 - i0
        qi = q[:, :, i0 * block:i1 * block].reshape(b, h, count, block, d_head).transpose(1, 2)
        qi = qi.reshape(b * count, h, block, d_head)
        start = first + i0 * block
        ki, vi = slabs(k, start, count, span, block), slabs(v, start, count, span, block)
        inside = start >= 0 and start + (count - 1) * block + span <= k_len
        if keep is None and inside:  # one tile for every slab
            mask = allowed[None, None] if tile is None else tile
        else:  # the tile and each slab's own exclusions (keys outside [0, Tk), padding)
            ok = torch.ones(1, k_len, dtype=torch.bool, device=q.device) if keep is None else keep
            ok = slabs(ok[:, None, :, None], start, count, span, block, fill=False).reshape(-1, 1, 1, span)
            ok = ok.reshape(-1, count, 1, 1, span).expand(b, -1, -1, -1, -1).reshape(b * count, 1, 1, span)
            if tile is None:
                mask = allowed[None, None] & ok
            else:
                mask = tile + torch.zeros((), dtype=tile.dtype, device=q.device).masked_fill(~ok, float("-inf"))
        out, lse = _fused(qi, ki, vi, mask, scaling, dropout, on_ranges, tap, extra)
        return out.reshape(b, count, h, block, d_head), None if lse is None else lse.reshape(b, count, h, block)

    ranges = [(0, n)] if keep is not None else _slab_ranges(n, first, span, block, k_len)
    parts = [attend(i0, i1) for i0, i1 in ranges]
    out = parts[0][0] if len(parts) == 1 else torch.cat([o for o, _ in parts], dim=1)  # [B, n, H, block, D]
    out = out.transpose(2, 3).reshape(b, n * block, h, d_head)[:, :q_len]
    if on_ranges:
        lse = torch.cat([lse for _, lse in parts], dim=1).transpose(1, 2).reshape(b, h, n * block)[..., :q_len]
        out = TableGradientOnRanges.apply(out, lse, table, trained, q_in.detach(), k.detach(), v.detach(), keep,
                                           rule, scaling)
    return out


def _per_block(q, k, v, key_padding_mask, table, rule: Band, block: int, scaling: float, dropout: float,
               trained: Tensor | None = None, extra: Extra = NO_EXTRA) -> tuple[Tensor, int]:
    """Each query block against exactly the keys it can see (`Band.key_range`), one fused call per block: the
    loop's work at the fused kernel's speed, for bands the slabs would overcompute (unbounded, or reaching most of
    the keys). Same inputs and table gradients as `_banded`. Returns (out [B, Tq, H, D], key blocks visited)."""
    b, h, q_len, d_head = q.shape
    k_len = k.shape[2]
    dtype = q.dtype if q.is_cuda else torch.promote_types(q.dtype, torch.float32)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    offset = k_len - q_len
    keep = None if key_padding_mask is None else keep_keys(key_padding_mask, k_len, q.device)
    on_ranges, tap = _table_gradient(table, trained, q, extra)
    tab = None if table is None else (table.detach() if on_ranges else table).to(dtype)
    outs, lses, visited = [], [], 0
    for qs in range(0, q_len, block):
        qe = min(qs + block, q_len)
        lo, hi = rule.key_range(offset + qs, offset + qe, k_len)
        if hi <= lo:  # no key in reach: zeros, as for any row that sees none (the sink attends to nothing)
            outs.append(q.new_zeros(b, h, qe - qs, d_head))
            lses.append(q.new_full((b, h, qe - qs), float("-inf")))
            continue
        visited += -(-(hi - lo) // block)
        dist = torch.arange(offset + qs, offset + qe, device=q.device)[:, None] - torch.arange(lo, hi, device=q.device)
        allowed = rule.allows(dist)[None, None]  # [1, 1, bq, S]
        if keep is not None:
            allowed = allowed & keep[:, None, None, lo:hi]
        if tab is not None:
            mask = tab[:, dist.clamp(0, tab.shape[-1] - 1)][None].masked_fill(~allowed, float("-inf"))
        else:  # no mask where the band keeps every pair of the block (decided without reading a tensor)
            mask = None if keep is None and rule.covers(offset + qs - (hi - 1), offset + qe - 1 - lo) else allowed
        out, lse = _fused(q[:, :, qs:qe], k[:, :, lo:hi], v[:, :, lo:hi], mask, scaling, dropout, on_ranges, tap,
                          extra)
        outs.append(out)
        lses.append(lse)
    out = (torch.cat(outs, dim=2) if outs else q.new_zeros(b, h, 0, d_head)).transpose(1, 2)
    if on_ranges and outs:
        out = TableGradientOnRanges.apply(out, torch.cat(lses, dim=2), table, trained, q.detach(), k.detach(),
                                          v.detach(), keep, rule, scaling)
    return out, visited


def _path(rule: Band, q_len: int, k_len: int, block: int, distance_bias: Tensor | None, dense: bool,
          dropout: float) -> str:
    """"banded" | "blocks" (as `_plan` picks) or "loop": the loop when a dense mask or bias is given (only the
    loop slices those per block) or training dropout meets a table that needs a gradient (the loop's dropout is
    explicit; the fused paths would need the dropped weights to recompute dS)."""
    table_grad = distance_bias is not None and distance_bias.requires_grad and torch.is_grad_enabled()
    if dense or (dropout and table_grad):
        return "loop"
    return _plan(rule, q_len, k_len, block)[0]


def blockwise_attention(
    query: Tensor, key: Tensor, value: Tensor, *, scaling: float, is_causal: bool,
    key_padding_mask: Tensor | None = None, distance_bias: Tensor | None = None, max_distance: int | None = None,
    window: int | None = None, dropout: float = 0.0, training: bool = False, block_size: int = 128,
    attn_mask: Tensor | None = None, position_bias: Tensor | None = None, trained_distances: Tensor | None = None,
    softcap: float | None = None, sinks: Tensor | None = None,
) -> tuple[Tensor, None]:
    """Exact softmax attention computed block by block, on the banded path or the loop (module docstring).

    Args:
        query: [B, H, Tq, D]; key, value: [B, Hkv, Tk, D] with H a multiple of Hkv (GQA: each group of
            H // Hkv query heads shares one key/value head; K/V are never repeated).
        scaling: logit scale (usually D ** -0.5).
        is_causal: keys with d < 0 (the future) are excluded.
        key_padding_mask: [B, Tk] bool, True = real token (a longer mask is cut to its last Tk columns).
        distance_bias: [H, L] table added to the logit at distance d (d in [0, L)); -inf excludes the pair;
            d < 0 and d >= L are excluded (see `hf_attn.modeling.layers`).
        max_distance: keys with d >= max_distance (or d < 0) are excluded and their blocks skipped.
        window: sliding window: causal keeps 0 <= d < window, bidirectional |d| < window; blocks outside skipped.
        dropout, training: attention dropout on the normalised weights (only when `training`).
        block_size: query and key block length (with a window or max_distance each query block takes its whole
            band of block + reach keys at once).
        attn_mask: optional dense mask [B|1, H|1, Tq, Tk], bool (True = attend) or additive float, for callers
            that were handed a 4D mask; it is sliced per block (it cannot make blocks skip).
        position_bias: optional dense additive bias [B|1, H|1, Tq, Tk] (transformers' `position_bias`).
        trained_distances: optional [H, 2] long (lo, hi): the caller's promise that `distance_bias` depends on
            trained parameters only at distances lo_h <= d < hi_h of head h (the adaptive span's ramp). The banded
            path on CPU then computes the table's gradient there only (exact for every parameter; the table's
            own gradient is 0 elsewhere). None: the whole table's gradient.
        softcap: logit soft-capping, logits -> softcap * tanh(logits / softcap) before every mask and bias.
        sinks: [H] attention sinks, one extra logit per head in every row's softmax denominator (attending to
            nothing): a row's weights sum to less than 1.

    Returns:
        (out [B, Tq, H, D] in query's dtype, None). A query that can see no key gets zeros.
    """
    global BLOCKS_VISITED
    check_heads(query.shape[1], key.shape[1])
    if block_size <= 0:
        raise ValueError(f"block_size={block_size} must be positive")
    rule = band(is_causal, window, max_distance, None if distance_bias is None else distance_bias.shape[1])
    dropout = dropout if training and dropout > 0.0 else 0.0
    q_len, k_len = query.shape[2], key.shape[2]
    dense = attn_mask is not None or position_bias is not None
    extra = Extra(softcap, sinks)
    if not extra.any and window_parts.applies(query, key, value, is_causal=is_causal, window=window, dense=dense,
                            padded=key_padding_mask is not None, table=distance_bias is not None,
                            max_distance=max_distance, dropout=dropout):
        BLOCKS_VISITED = 0  # no key blocks: three fused calls over every query block
        return window_parts.sliding_window_attention(query, key, value, window=window, scaling=scaling), None
    path = _path(rule, q_len, k_len, block_size, distance_bias, dense, dropout)
    if path == "banded":
        out = _banded(query, key, value, key_padding_mask, distance_bias, rule, block_size, scaling, dropout,
                      trained_distances, extra)
        BLOCKS_VISITED = -(-q_len // block_size)  # one sdpa step per query block
    elif path == "blocks":
        out, BLOCKS_VISITED = _per_block(query, key, value, key_padding_mask, distance_bias, rule, block_size,
                                         scaling, dropout, trained_distances, extra)
    else:
        out, BLOCKS_VISITED = loop_attention(query, key, value, rule, scaling, block_size, dropout,
                                             key_padding_mask, distance_bias, attn_mask, position_bias, softcap,
                                             sinks)
    return out.contiguous().to(query.dtype), None
