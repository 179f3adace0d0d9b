"""Blockwise exact softmax attention: the shared core of `hf_local` and of `hf_blockwise` off CUDA.

Queries are cut into blocks of `block_size`; for each query block the keys it can see are visited in blocks too,
and an *online softmax* (running max `m`, running normaliser `l`, running weighted sum `acc`) folds each key
block in. No [Tq, Tk] matrix is ever built: the largest score tensor is [B, H, block, block]. Key blocks that no
query of the block can see (the future under causality, keys further than `window` or `max_distance`, distances
past the end of a distance bias table) are never visited, so a sliding window costs ~ T x window, not T^2.

Everything is plain PyTorch, so gradients (into q, k, v and the distance bias table) come from autograd.

Positions: queries are the LAST Tq of the Tk key positions (KV-cache decoding), query i sits at key position
Tk - Tq + i, and the distance of a (query, key) pair is d = q_pos - k_pos (bottom-right causal alignment).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Number of (query block, key block) pairs computed by the last `blockwise_attention` call; tests read it to
# check that blocks outside the window really are skipped. A debugging aid only, not part of the API.
BLOCKS_VISITED = 0


def check_heads(num_heads: int, num_kv_heads: int) -> int:
    """Group size H // Hkv; ValueError naming `num_key_value_heads` when H is not a multiple of it."""
    if num_kv_heads <= 0 or num_heads % num_kv_heads != 0:
        raise ValueError(
            f"num_key_value_heads={num_kv_heads} must be positive and divide num_attention_heads={num_heads}"
        )
    return num_heads // num_kv_heads


def config_value(module, kwargs: dict, name: str):
    """A backend setting from the call's kwargs, else `module.<name>`, else `module.config.<name>` (else None)."""
    if kwargs.get(name) is not None:
        return kwargs[name]
    if getattr(module, name, None) is not None:
        return getattr(module, name)
    return getattr(getattr(module, "config", None), name, None)


def _visible_key_range(
    q_start: int, q_end: int, k_len: int, is_causal: bool, window: int | None, max_dist: int | None
) -> tuple[int, int]:
    """Key positions [lo, hi) that at least one query at positions [q_start, q_end) may attend to.

    `max_dist` is the exclusive upper bound on d >= 0 that comes from `max_distance` / the bias table length
    (which also exclude d < 0). For a bidirectional window the bound is |d| < window.
    """
    lo, hi = 0, k_len
    if is_causal or max_dist is not None:  # d >= 0: keys up to the last query's position
        hi = min(hi, q_end)
    if window is not None:  # d < window (and d > -window when bidirectional)
        lo = max(lo, q_start - window + 1)
        if not is_causal:
            hi = min(hi, q_end - 1 + window)
    if max_dist is not None:  # d < max_dist
        lo = max(lo, q_start - max_dist + 1)
    return lo, max(lo, hi)


def _reach(is_causal: bool, window: int | None, max_dist: int | None) -> tuple[int | None, int | None]:
    """How far left (d > 0) and right (d < 0) of its own position a query can see; None = unbounded."""
    left = right = None
    if is_causal or max_dist is not None:
        right = 0
    if window is not None:
        left = window - 1
        right = window - 1 if right is None else right
    if max_dist is not None:
        left = max_dist - 1 if left is None else min(left, max_dist - 1)
    return left, right


def _use_banded(left: int | None, right: int | None, block: int, k_len: int) -> bool:
    """The banded path runs when the reach is bounded both ways and a query block's slab is shorter than the keys."""
    return left is not None and right is not None and block + left + right < k_len


def score_entries(q_len: int, k_len: int, *, is_causal: bool, window: int | None = None,
                  max_distance: int | None = None, block_size: int = 128) -> int:
    """Query-key score entries `blockwise_attention` computes for one head (no dense mask), padding included.

    The same path choice as the function: the banded path computes `block + left + right` keys for every query
    block; the loop computes each query block against its visible key range. This is the work actually done, which
    can exceed the entries a mask keeps (a slab longer than the causal prefix it replaces).
    """
    left, right = _reach(is_causal, window, max_distance)
    offset = k_len - q_len
    if _use_banded(left, right, block_size, k_len):
        return -(-q_len // block_size) * block_size * (block_size + left + right)
    total = 0
    for qs in range(0, q_len, block_size):
        qe = min(qs + block_size, q_len)
        lo, hi = _visible_key_range(offset + qs, offset + qe, k_len, is_causal, window, max_distance)
        total += (qe - qs) * (hi - lo)
    return total


def _pair_allowed(d: torch.Tensor, is_causal: bool, window: int | None, max_dist: int | None) -> torch.Tensor:
    """Bool mask of the pairs at distance d that positions alone allow (causality, window, max distance)."""
    allowed = torch.ones_like(d, dtype=torch.bool)
    if is_causal or max_dist is not None:
        allowed &= d >= 0
    if window is not None:
        allowed &= (d < window) if is_causal else (d.abs() < window)
    if max_dist is not None:
        allowed &= d < max_dist
    return allowed


def _banded(q, k, v, key_padding_mask, table, offset, block, left, right, is_causal, window, max_dist, dropout):
    """All query blocks at once, each against its slab of `block + left + right` keys.

    q [B, Hkv, G, Tq, D] (already scaled), k/v [B, Hkv, 1, Tk, D], table [Hkv, G, L] or None.
    Query block i holds positions offset + i*block + a (a < block); its slab holds key positions
    offset + i*block - left + c (c < block + left + right), so d = a + left - c is the same for every block.
    Returns [B, Hkv, G, Tq, D].
    """
    b, hkv, groups, q_len, d_head = q.shape
    k_len = k.shape[3]
    n = -(-q_len // block)
    span = block + left + right
    # Key positions [offset - left, offset + n*block + right), zero-padded where they fall outside [0, Tk).
    first = offset - left
    pad_front, pad_back = max(0, -first), max(0, offset + n * block + right - k_len)
    keep = torch.ones(b, k_len, dtype=torch.bool, device=q.device)
    if key_padding_mask is not None:
        keep = key_padding_mask[:, -k_len:].to(device=q.device, dtype=torch.bool)
    lo = max(first, 0)
    k_band = F.pad(k[:, :, 0, lo:], (0, 0, pad_front, pad_back))  # [B, Hkv, n*block + left + right, D]
    v_band = F.pad(v[:, :, 0, lo:], (0, 0, pad_front, pad_back))
    keep = F.pad(keep[:, lo:], (pad_front, pad_back), value=False)
    k_slabs = k_band.unfold(2, span, block)  # [B, Hkv, n, D, span] (a view: slabs overlap)
    v_slabs = v_band.unfold(2, span, block).transpose(-1, -2)  # [B, Hkv, n, span, D]
    keep = keep.unfold(1, span, block)  # [B, n, span]

    q_blocks = F.pad(q, (0, 0, 0, n * block - q_len)).reshape(b, hkv, groups, n, block, d_head)
    d = torch.arange(block, device=q.device)[:, None] + left - torch.arange(span, device=q.device)[None, :]
    # Additive 0 / -inf terms (one add each instead of building bool masks per group).
    bias = torch.zeros(d.shape, dtype=q.dtype, device=q.device)
    bias = bias.masked_fill(~_pair_allowed(d, is_causal, window, max_dist), float("-inf"))  # [block, span]
    if table is not None:
        bias = bias + table[:, :, d.clamp(0, table.shape[-1] - 1)][:, :, None]  # [Hkv, G, 1, block, span]
    exclude = torch.zeros(keep.shape, dtype=q.dtype, device=q.device).masked_fill(~keep, float("-inf"))

    # Blocks go in groups whose score tensor stays ~8 MiB: cache-sized, and small enough that the allocator reuses
    # its buffers instead of faulting in fresh pages for every op (which dominated at large T on CPU).
    per = max(1, (8 << 20) // (4 * b * hkv * groups * block * span))
    outs = []
    for i in range(0, n, per):
        j = min(i + per, n)
        s = q_blocks[:, :, :, i:j] @ k_slabs[:, :, None, i:j]  # [B, Hkv, G, j-i, block, span]
        s = s + exclude[:, None, None, i:j, None]  # padding keys and the slab's zero-padded ends: -inf
        s = s + bias  # positions outside the band: -inf (plus the distance bias, when given)
        # One softmax per row; a row with no visible key (all -inf) shifts by 0 and returns 0.
        m = s.amax(dim=-1, keepdim=True).detach()
        p = torch.exp(s - torch.where(torch.isinf(m), torch.zeros_like(m), m))
        l = p.sum(dim=-1, keepdim=True)
        if dropout > 0.0:
            p = F.dropout(p, p=dropout)
        outs.append((p @ v_slabs[:, :, None, i:j]) / torch.where(l == 0, torch.ones_like(l), l))
    out = torch.cat(outs, dim=3)
    return out.reshape(b, hkv, groups, n * block, d_head)[:, :, :, :q_len]


def blockwise_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    *,
    scaling: float,
    is_causal: bool,
    key_padding_mask: torch.Tensor | None = None,
    distance_bias: torch.Tensor | None = None,
    max_distance: int | None = None,
    window: int | None = None,
    dropout: float = 0.0,
    training: bool = False,
    block_size: int = 128,
    attn_mask: torch.Tensor | None = None,
    position_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, None]:
    """Exact softmax attention computed block by block.

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

    Returns:
        (out [B, Tq, H, D] in query's dtype, None). A query that can see no key gets zeros.
    """
    global BLOCKS_VISITED
    b, h, q_len, d_head = query.shape
    hkv, k_len = key.shape[1], key.shape[2]
    groups = check_heads(h, hkv)
    if block_size <= 0:
        raise ValueError(f"block_size={block_size} must be positive")
    out_dtype = query.dtype
    offset = k_len - q_len  # position of query 0 among the keys

    # Accumulate in fp32 whatever the input dtype; the group axis G lets one K/V head serve its query heads.
    acc_dtype = torch.promote_types(query.dtype, torch.float32)  # fp32 (fp64 stays fp64)
    q = query.to(acc_dtype).reshape(b, hkv, groups, q_len, d_head) * scaling
    k = key.to(acc_dtype)[:, :, None]  # [B, Hkv, 1, Tk, D]
    v = value.to(acc_dtype)[:, :, None]

    # Exclusive bound on d from max_distance and the bias table (both also exclude d < 0).
    max_dist = None
    if distance_bias is not None:
        max_dist = distance_bias.shape[1]
        table = distance_bias.to(acc_dtype).reshape(hkv, groups, max_dist)  # rows follow the query-head order
    if max_distance is not None:
        max_dist = max_distance if max_dist is None else min(max_dist, max_distance)
    if key_padding_mask is not None:
        keep_keys = key_padding_mask[:, -k_len:].to(device=query.device, dtype=torch.bool)[:, None, None, None, :]
    if attn_mask is not None:
        attn_mask = attn_mask[..., :k_len]
        if attn_mask.dim() == 4:  # [B|1, H|1, Tq, Tk] -> [B|1, Hkv|1, G|1, Tq, Tk]
            hm = attn_mask.shape[1]
            attn_mask = attn_mask.reshape(attn_mask.shape[0], hkv if hm == h else 1, groups if hm == h else 1,
                                          *attn_mask.shape[2:])
    if position_bias is not None:
        hp = position_bias.shape[1]
        position_bias = position_bias.to(acc_dtype).reshape(position_bias.shape[0], hkv if hp == h else 1,
                                                      groups if hp == h else 1, *position_bias.shape[2:])

    # Bounded reach (a window or a maximum distance): each query block sees a fixed-size band of keys, so all
    # blocks are done at once on overlapping key slabs (a few large ops instead of many small ones).
    left, right = _reach(is_causal, window, max_dist)
    if _use_banded(left, right, block_size, k_len) and attn_mask is None and position_bias is None:
        BLOCKS_VISITED = -(-q_len // block_size)
        out = _banded(q, k, v, key_padding_mask, table if distance_bias is not None else None, offset, block_size,
                      left, right, is_causal, window, max_dist, dropout if training else 0.0)
        return out.reshape(b, h, q_len, d_head).transpose(1, 2).contiguous().to(out_dtype), None

    visited = 0
    outputs = []
    # A distance-bias tile depends only on the block diagonal (qs - ks) and the tile shape, so each is gathered
    # once and reused: far fewer gathers forward, and one scatter into the table per tile backward.
    bias_tiles: dict[tuple[int, int, int], torch.Tensor] = {}
    for qs in range(0, q_len, block_size):
        qe = min(qs + block_size, q_len)
        q_blk = q[:, :, :, qs:qe]  # [B, Hkv, G, bq, D]
        q_pos = torch.arange(offset + qs, offset + qe, device=query.device)
        lo, hi = _visible_key_range(offset + qs, offset + qe, k_len, is_causal, window, max_dist)

        m = q_blk.new_full((*q_blk.shape[:-1], 1), float("-inf"))  # running max of the logits
        l = q_blk.new_zeros((*q_blk.shape[:-1], 1))  # running softmax normaliser
        acc = q_blk.new_zeros(q_blk.shape)  # running sum of weights x values
        for ks in range(lo, hi, block_size):
            ke = min(ks + block_size, hi)
            visited += 1
            s = q_blk @ k[:, :, :, ks:ke].transpose(-1, -2)  # [B, Hkv, G, bq, bk] fp32 logits

            # Position-dependent exclusions, built only when this block straddles an edge.
            d = q_pos[:, None] - torch.arange(ks, ke, device=query.device)[None, :]  # [bq, bk]
            d_min, d_max = offset + qs - (ke - 1), offset + qe - 1 - ks
            allowed = None
            if (is_causal or max_dist is not None) and d_min < 0:
                allowed = d >= 0
            if window is not None and (d_max >= window or (not is_causal and d_min <= -window)):
                in_window = (d < window) if is_causal else (d.abs() < window)
                allowed = in_window if allowed is None else allowed & in_window
            if max_dist is not None and d_max >= max_dist:
                allowed = (d < max_dist) if allowed is None else allowed & (d < max_dist)
            if allowed is not None:
                s = s.masked_fill(~allowed, float("-inf"))
            if distance_bias is not None:
                tile_key = (qs - ks, qe - qs, ke - ks)
                if tile_key not in bias_tiles:
                    bias_tiles[tile_key] = table[:, :, d.clamp(0, max_dist - 1)]  # [Hkv, G, bq, bk]
                s = s + bias_tiles[tile_key]  # excluded d are already -inf
            if key_padding_mask is not None:
                s = s.masked_fill(~keep_keys[..., ks:ke], float("-inf"))
            if attn_mask is not None:
                blk = attn_mask[..., qs:qe, ks:ke]
                s = s.masked_fill(~blk, float("-inf")) if blk.dtype == torch.bool else s + blk.to(acc_dtype)
            if position_bias is not None:
                s = s + position_bias[..., qs:qe, ks:ke]

            # Online softmax. The shift m is a constant for the result (it cancels), so it carries no gradient;
            # rows that have seen only -inf so far shift by 0 so that exp(-inf - 0) = 0 instead of NaN.
            m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True)).detach()
            shift = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
            p = torch.exp(s - shift)
            correction = torch.exp(m - shift)
            l = l * correction + p.sum(dim=-1, keepdim=True)
            if dropout > 0.0 and training:
                p = F.dropout(p, p=dropout)  # drops normalised weights: l above keeps the undropped sum
            acc = acc * correction + p @ v[:, :, :, ks:ke]
            m = m_new
        # Rows that saw no key have l == 0 and acc == 0: they return 0.
        outputs.append(acc / torch.where(l == 0, torch.ones_like(l), l))

    BLOCKS_VISITED = visited
    out = torch.cat(outputs, dim=3) if outputs else q.new_zeros(q.shape)  # [B, Hkv, G, Tq, D]
    out = out.reshape(b, h, q_len, d_head).transpose(1, 2).contiguous().to(out_dtype)
    return out, None
