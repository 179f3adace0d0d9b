"""Blockwise exact softmax attention: the shared core of `hf_local` and of `hf_blockwise` off CUDA.

Which (query, key) pairs count is the band rule of `hf_attn.attention.band` (causality, window, max_distance,
the distance-bias table's length) plus key padding. Two paths compute the same function; `_plan` picks the one
with fewer score entries (weighted by their per-entry cost) and `score_entries` reports that path's work:

- **banded** (bounded band): queries in blocks of `block_size`, each against its slab of `block + back + fwd`
  keys, all blocks in one call of torch's fused `scaled_dot_product_attention`, forward and backward (its
  backward skips exactly what the forward skips). The band / distance-bias tile depends only on q - k, so one
  [block, slab] tile gathered from the [H, L] table serves every slab; when the table needs a gradient the tile
  goes into sdpa detached and `_MaskGradient` recomputes dS per slab chunk for it. Memory is linear in T.
- **loop**: for each query block the keys it can see are visited in blocks, an *online softmax* (running max
  `m`, normaliser `l`, weighted sum `acc`) folding each in; key blocks no query of the block can see are never
  visited. Plain PyTorch, differentiated by autograd; it also takes dense 4D masks / position biases, and
  training dropout with a table that needs a gradient.

Positions: queries are the LAST Tq of the Tk key positions (KV-cache decoding), query i sits at key position
Tk - Tq + i, and the distance of a (query, key) pair is d = q_pos - k_pos (bottom-right causal alignment).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .band import Band, band

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


# Relative cost of one score entry on each path, for the path choice: the banded path runs torch's fused
# scaled_dot_product_attention kernels (forward and backward) over key slabs; the loop runs an online softmax as a
# chain of PyTorch ops, differentiated op by op by autograd. Indicative CPU measurement (fp32, one thread,
# fwd+bwd, T=1024..4096, reach 128..512): a loop entry costs about 3x a banded entry.
LOOP_ENTRY_COST = 3.0


def _loop_entries(rule: Band, q_len: int, k_len: int, block: int) -> int:
    """Score entries the online-softmax loop computes: each query block against its visible key range."""
    offset = k_len - q_len
    total = 0
    for qs in range(0, q_len, block):
        qe = min(qs + block, q_len)
        lo, hi = rule.key_range(offset + qs, offset + qe, k_len)
        total += (qe - qs) * (hi - lo)
    return total


def _plan(rule: Band, q_len: int, k_len: int, block: int) -> tuple[str, int]:
    """("banded" | "loop", score entries of that path per head).

    The banded path exists when the band is bounded both ways (and not empty); it computes `block + back + fwd`
    keys for every query block, including the zero-padded slab ends before the first and after the last key. The
    loop computes each query block against its visible key range only. The cheaper one runs, entries weighted by
    `LOOP_ENTRY_COST`.
    """
    loop = _loop_entries(rule, q_len, k_len, block)
    if not rule.bounded or rule.empty or q_len == 0 or k_len == 0:
        return "loop", loop
    banded = -(-q_len // block) * block * (block + rule.back + rule.fwd)
    return ("banded", banded) if banded <= LOOP_ENTRY_COST * loop else ("loop", loop)


def score_entries(q_len: int, k_len: int, *, is_causal: bool, window: int | None = None,
                  max_distance: int | None = None, block_size: int = 128) -> int:
    """Query-key score entries `blockwise_attention` computes for one head (no dense mask), padding included.

    The same path choice as the function (`_plan`): the banded path computes `block + back + fwd` keys for every
    query block; the loop computes each query block against its visible key range. This is the work actually
    done, which can exceed the entries a mask keeps (a slab's padded ends, the edges of the band).
    """
    return _plan(band(is_causal, window, max_distance), q_len, k_len, block_size)[1]


class _MaskGradient(torch.autograd.Function):
    """Identity on the output of one `scaled_dot_product_attention` call whose backward also returns the
    gradient of its additive float mask, so the mask can go into the fused kernel detached (sdpa falls back to
    its unfused math path when the mask needs a gradient).

    The gradient of an additive mask is the gradient of the logits, dS = P * (dO V^T - rowsum(dO * O)),
    recomputed here in slab chunks (P from the logits and their logsumexp) and summed over the slabs the mask is
    broadcast across. q [N, H, M, D], k/v [N, Hkv, S, D], mask [N|1, H, M, S], out [N, H, M, D].
    """

    @staticmethod
    def forward(ctx, out, mask, q, k, v, scale):
        ctx.save_for_backward(out, mask, q, k, v)
        ctx.scale = scale
        return out.view_as(out)

    @staticmethod
    def backward(ctx, dout):
        out, mask, q, k, v = ctx.saved_tensors
        if not ctx.needs_input_grad[1]:
            return dout, None, None, None, None, None
        n, h, m, d_head = q.shape
        hkv, span = k.shape[1], k.shape[2]
        g = h // hkv
        shared = mask.shape[0] == 1
        dmask = torch.zeros(mask.shape, dtype=torch.float32 if shared else mask.dtype, device=mask.device)
        per = max(1, (8 << 20) // (4 * h * m * span))  # slabs per chunk: ~8 MiB of logits
        for i in range(0, n, per):
            j = min(i + per, n)
            # A kv head's G query heads stacked along the rows: [c, Hkv, G*M, .] views, no repeated K/V.
            qi = q[i:j].reshape(j - i, hkv, g * m, d_head)
            mi = (mask if shared else mask[i:j]).reshape(-1, hkv, g * m, span)
            s = torch.matmul(qi, k[i:j].transpose(-1, -2)).mul_(ctx.scale).add_(mi)  # the logits
            p = torch.softmax(s, dim=-1).nan_to_num_(0.0)  # a row with no visible key: 0
            do = dout[i:j].reshape(j - i, hkv, g * m, d_head)
            delta = (do * out[i:j].reshape(do.shape)).sum(-1, keepdim=True)
            ds = torch.matmul(do, v[i:j].transpose(-1, -2)).sub_(delta).mul_(p).reshape(j - i, h, m, span)
            if shared:
                dmask += ds.sum(0, keepdim=True, dtype=torch.float32)
            else:
                dmask[i:j] = ds
        return dout, dmask.to(mask.dtype), None, None, None, None


def _slabs(x: torch.Tensor, first: int, count: int, span: int, step: int, fill=0.0) -> torch.Tensor:
    """Overlapping windows of dim 2 of x [B, Hx, T, D]: window i holds positions first + i*step + c (c < span),
    zero-filled outside [0, T). Returns [B * count, Hx, span, D] (a copy: span / step times x's size)."""
    t = x.shape[2]
    end = first + (count - 1) * step + span
    lo = max(first, 0)
    x = F.pad(x[:, :, lo:min(end, t)], (0, 0, max(0, -first), max(0, end - t)), value=fill)
    x = x.unfold(2, span, step)  # [B, Hx, count, D, span], a view
    return x.permute(0, 2, 1, 4, 3).reshape(x.shape[0] * count, x.shape[1], span, x.shape[3])


def _banded(q, k, v, key_padding_mask, table, rule: Band, block: int, scaling: float, dropout: float):
    """Every query block against its slab of `block + back + fwd` keys, through torch's fused sdpa.

    q [B, H, Tq, D], k/v [B, Hkv, Tk, D] (one dtype), table [H, L] or None. Query block i holds key positions
    offset + i*block + a (a < block); its slab holds offset + i*block - back + c (c < block + back + fwd), so the
    distance d = a + back - c and the band / distance-bias tile [block, span] are the same for every slab: one
    tile, gathered once from the table, serves all of them. Slabs that reach past either end of the keys get
    masks of their own in a separate call (as do all slabs when there is key padding). K/V are not repeated for
    GQA (sdpa's enable_gqa). Memory is linear in T: slabs are span / block times the size of K and V, and sdpa
    keeps no score matrix for its backward. Returns [B, Tq, H, D].
    """
    b, h, q_len, d_head = q.shape
    hkv, k_len = k.shape[1], k.shape[2]
    left, right = rule.back, rule.fwd
    n = -(-q_len // block)
    span = block + left + right
    offset = k_len - q_len
    first = offset - left  # key position of slab 0's first key; slab i starts at first + i * block

    q = F.pad(q, (0, 0, 0, n * block - q_len))
    keep = None
    if key_padding_mask is not None:
        keep = key_padding_mask[:, -k_len:].to(device=q.device, dtype=torch.bool)
    dist = torch.arange(block, device=q.device)[:, None] + left - torch.arange(span, device=q.device)[None, :]
    allowed = rule.allows(dist)  # [block, span]
    tile = None
    if table is not None:  # [1, H, block, span], the excluded pairs at -inf
        tile = table.to(q.dtype)[:, dist.clamp(0, table.shape[-1] - 1)].masked_fill(~allowed, float("-inf"))[None]
    tap = tile is not None and tile.requires_grad

    def attend(i0: int, i1: int) -> torch.Tensor:
        """Query blocks [i0, i1) against their slabs: [(i1 - i0) * B, H, block, D] (slab-major)."""
        count = i1 - i0
        qi = q[:, :, i0 * block:i1 * block].reshape(b, h, count, block, d_head).transpose(1, 2)
        qi = qi.reshape(b * count, h, block, d_head)
        start = first + i0 * block
        ki, vi = _slabs(k, start, count, span, block), _slabs(v, start, count, span, block)
        inside = start >= 0 and start + (count - 1) * block + span <= k_len
        if keep is None and inside:  # one tile for every slab
            mask = allowed[None, None] if tile is None else tile
        else:  # the tile and each slab's own exclusions (keys outside [0, Tk), padding)
            ok = torch.ones(1, k_len, dtype=torch.bool, device=q.device) if keep is None else keep
            ok = _slabs(ok[:, None, :, None], start, count, span, block, fill=False).reshape(-1, 1, 1, span)
            ok = ok.reshape(-1, count, 1, 1, span).expand(b, -1, -1, -1, -1).reshape(b * count, 1, 1, span)
            if tile is None:
                mask = allowed[None, None] & ok
            else:
                mask = tile + torch.zeros((), dtype=tile.dtype, device=q.device).masked_fill(~ok, float("-inf"))
        out = F.scaled_dot_product_attention(qi, ki, vi, attn_mask=mask.detach() if tap else mask,
                                             dropout_p=dropout, scale=scaling, enable_gqa=hkv != h)
        if tap:
            out = _MaskGradient.apply(out, mask, qi.detach(), ki.detach(), vi.detach(), scaling)
        return out.reshape(b, count, h, block, d_head)

    if keep is not None:
        ranges = [(0, n)]
    else:  # slabs that start before key 0, slabs inside [0, Tk), slabs that end after the last key
        front = min(n, max(0, -(-(-first) // block)))
        back_start = max(front, min(n, (k_len - span - first) // block + 1))
        ranges = [r for r in ((0, front), (front, back_start), (back_start, n)) if r[1] > r[0]]
    parts = [attend(i0, i1) for i0, i1 in ranges]
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # [B, n, H, block, D]
    return out.transpose(2, 3).reshape(b, n * block, h, d_head)[:, :q_len]


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
    rule = band(is_causal, window, max_distance, None if distance_bias is None else distance_bias.shape[1])
    if dropout <= 0.0 or not training:
        dropout = 0.0

    # Bounded band, no dense mask: every query block against its key slab in one fused sdpa call (forward and
    # backward skip what the band excludes). fp32 on CPU (half-precision CPU kernels are slow); CUDA keeps its
    # dtype. Training with dropout and a table that needs a gradient stays on the loop (its dropout is explicit).
    path, _ = _plan(rule, q_len, k_len, block_size)
    table_grad = distance_bias is not None and distance_bias.requires_grad and torch.is_grad_enabled()
    if (path == "banded" and attn_mask is None and position_bias is None and not (dropout and table_grad)):
        BLOCKS_VISITED = -(-q_len // block_size)
        dtype = query.dtype if query.is_cuda else torch.promote_types(query.dtype, torch.float32)
        out = _banded(query.to(dtype), key.to(dtype), value.to(dtype), key_padding_mask, distance_bias, rule,
                      block_size, scaling, dropout)
        return out.contiguous().to(out_dtype), None

    # Accumulate in fp32 whatever the input dtype; the group axis G lets one K/V head serve its query heads.
    acc_dtype = torch.promote_types(query.dtype, torch.float32)  # fp32 (fp64 stays fp64)
    q = query.to(acc_dtype).reshape(b, hkv, groups, q_len, d_head) * scaling
    k = key.to(acc_dtype)[:, :, None]  # [B, Hkv, 1, Tk, D]
    v = value.to(acc_dtype)[:, :, None]

    if distance_bias is not None:
        max_dist = distance_bias.shape[1]
        table = distance_bias.to(acc_dtype).reshape(hkv, groups, max_dist)  # rows follow the query-head order
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

    visited = 0
    outputs = []
    # A distance-bias tile depends only on the block diagonal (qs - ks) and the tile shape, so each is gathered
    # once and reused: far fewer gathers forward, and one scatter into the table per tile backward.
    bias_tiles: dict[tuple[int, int, int], torch.Tensor] = {}
    for qs in range(0, q_len, block_size):
        qe = min(qs + block_size, q_len)
        q_blk = q[:, :, :, qs:qe]  # [B, Hkv, G, bq, D]
        q_pos = torch.arange(offset + qs, offset + qe, device=query.device)
        lo, hi = rule.key_range(offset + qs, offset + qe, k_len)

        m = q_blk.new_full((*q_blk.shape[:-1], 1), float("-inf"))  # running max of the logits
        l = q_blk.new_zeros((*q_blk.shape[:-1], 1))  # running softmax normaliser
        acc = q_blk.new_zeros(q_blk.shape)  # running sum of weights x values
        for ks in range(lo, hi, block_size):
            ke = min(ks + block_size, hi)
            visited += 1
            s = q_blk @ k[:, :, :, ks:ke].transpose(-1, -2)  # [B, Hkv, G, bq, bk] fp32 logits

            # The band's element-wise mask, built only when this tile straddles one of its edges.
            d = q_pos[:, None] - torch.arange(ks, ke, device=query.device)[None, :]  # [bq, bk]
            if not rule.covers(offset + qs - (ke - 1), offset + qe - 1 - ks):
                s = s.masked_fill(~rule.allows(d), float("-inf"))
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
            if dropout > 0.0:
                p = F.dropout(p, p=dropout)  # drops normalised weights: l above keeps the undropped sum
            acc = acc * correction + p @ v[:, :, :, ks:ke]
            m = m_new
        # Rows that saw no key have l == 0 and acc == 0: they return 0.
        outputs.append(acc / torch.where(l == 0, torch.ones_like(l), l))

    BLOCKS_VISITED = visited
    out = torch.cat(outputs, dim=3) if outputs else q.new_zeros(q.shape)  # [B, Hkv, G, Tq, D]
    out = out.reshape(b, h, q_len, d_head).transpose(1, 2).contiguous().to(out_dtype)
    return out, None
