"""The loop path of `blockwise_attention` (attention/blockwise.py): for each query block, the keys it can see are
visited in blocks and folded into an *online softmax* (running max `m`, normaliser `norm`, weighted sum `acc`);
key blocks no query of the block can see are never visited. Plain PyTorch, differentiated by autograd; the path
for dense 4D masks / position biases, and for training dropout with a table that needs a gradient.

Soft-capping caps each tile's logits before every mask and bias; sinks start the running softmax from the sink's
logit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..kernels.band import Band
from ._common import group_heads, keep_keys


class _TileLogits:
    """What the loop adds to the logits of one (query block, key block) tile, in the group layout [B|1, Hkv|1,
    G|1, bq, bk]: the band's element-wise mask (only on tiles that straddle one of its edges), the distance-bias
    tile, key padding, a dense mask and a dense bias. `tiles` counts the tiles it has been applied to."""

    def __init__(self, rule: Band, query: Tensor, k_len: int, groups: int, dtype: torch.dtype,
                 key_padding_mask, distance_bias, attn_mask, position_bias, softcap: float | None = None):
        num_heads, q_len = query.shape[1], query.shape[2]
        self.rule, self.offset, self.dtype, self.tiles = rule, k_len - q_len, dtype, 0
        self.softcap = softcap
        self.table = None  # [Hkv, G, L]: rows follow the query-head order
        if distance_bias is not None:
            self.table = distance_bias.to(dtype).reshape(num_heads // groups, groups, distance_bias.shape[1])
        self.keep = None
        if key_padding_mask is not None:
            self.keep = keep_keys(key_padding_mask, k_len, query.device)[:, None, None, None, :]
        if attn_mask is not None:
            attn_mask = attn_mask[..., :k_len]
            attn_mask = group_heads(attn_mask, num_heads, groups) if attn_mask.dim() == 4 else attn_mask
        self.attn_mask = attn_mask
        self.position_bias = None if position_bias is None else group_heads(position_bias.to(dtype), num_heads, groups)
        # A distance-bias tile depends only on the block diagonal (qs - ks) and the tile shape, so each is gathered
        # once and reused: far fewer gathers forward, and one scatter into the table per tile backward.
        self.bias_tiles: dict[tuple[int, int, int], Tensor] = {}

    def __call__(self, s: Tensor, qs: int, qe: int, ks: int, ke: int) -> Tensor:
        """Logits s [B, Hkv, G, bq, bk] of query rows [qs, qe) and keys [ks, ke), with everything added."""
        self.tiles += 1
        if self.softcap is not None:  # the cap comes before every mask and bias
            s = torch.tanh(s / self.softcap) * self.softcap
        q_pos = torch.arange(self.offset + qs, self.offset + qe, device=s.device)
        d = q_pos[:, None] - torch.arange(ks, ke, device=s.device)[None, :]  # [bq, bk]
        if not self.rule.covers(self.offset + qs - (ke - 1), self.offset + qe - 1 - ks):
            s = s.masked_fill(~self.rule.allows(d), float("-inf"))
        if self.table is not None:
            tile_key = (qs - ks, qe - qs, ke - ks)
            if tile_key not in self.bias_tiles:
                self.bias_tiles[tile_key] = self.table[:, :, d.clamp(0, self.table.shape[-1] - 1)]  # [Hkv, G, bq, bk]
            s = s + self.bias_tiles[tile_key]  # excluded d are already -inf
        if self.keep is not None:
            s = s.masked_fill(~self.keep[..., ks:ke], float("-inf"))
        if self.attn_mask is not None:
            blk = self.attn_mask[..., qs:qe, ks:ke]
            s = s.masked_fill(~blk, float("-inf")) if blk.dtype == torch.bool else s + blk.to(self.dtype)
        if self.position_bias is not None:
            s = s + self.position_bias[..., qs:qe, ks:ke]
        return s


def _online_softmax(q_blk: Tensor, k: Tensor, v: Tensor, qs: int, logits: _TileLogits, block: int,
                    dropout: float, sinks: Tensor | None = None) -> Tensor:
    """One query block q_blk [B, Hkv, G, bq, D] (rows from qs) against the key blocks it can see, k/v [B, Hkv, 1,
    Tk, D], each folded into a running max `m`, normaliser `norm` and weighted sum `acc`. `sinks` [Hkv, G]: the
    running softmax starts from the sink's logit (in the normaliser, nothing in the sum). Returns [B, Hkv, G, bq,
    D]; a row that sees no key gets 0."""
    qe = qs + q_blk.shape[3]
    lo, hi = logits.rule.key_range(logits.offset + qs, logits.offset + qe, k.shape[3])
    m = q_blk.new_full((*q_blk.shape[:-1], 1), float("-inf"))
    norm = q_blk.new_zeros((*q_blk.shape[:-1], 1))
    if sinks is not None:
        sink = sinks.to(q_blk.dtype)[None, :, :, None, None]  # [1, Hkv, G, 1, 1]
        m = sink.detach().expand(m.shape)
        norm = torch.exp(sink - sink.detach()).expand(norm.shape)  # 1, carrying the sink's gradient
    acc = q_blk.new_zeros(q_blk.shape)
    for ks in range(lo, hi, block):
        ke = min(ks + block, hi)
        s = logits(q_blk @ k[:, :, :, ks:ke].transpose(-1, -2), qs, qe, ks, ke)  # [B, Hkv, G, bq, bk]
        # The shift m is a constant for the result (it cancels), so it carries no gradient; rows that have seen
        # only -inf so far shift by 0 so that exp(-inf - 0) = 0 instead of NaN.
        m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True)).detach()
        shift = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)
        p = torch.exp(s - shift)
        correction = torch.exp(m - shift)
        norm = norm * correction + p.sum(dim=-1, keepdim=True)
        if dropout > 0.0:
            p = F.dropout(p, p=dropout)  # drops normalised weights: norm above keeps the undropped sum
        acc = acc * correction + p @ v[:, :, :, ks:ke]
        m = m_new
    return acc / torch.where(norm == 0, torch.ones_like(norm), norm)  # rows that saw no key: 0 / 1


def loop_attention(query: Tensor, key: Tensor, value: Tensor, rule: Band, scaling: float, block: int, dropout: float,
                   key_padding_mask, distance_bias, attn_mask, position_bias, softcap: float | None = None,
                   sinks: Tensor | None = None) -> tuple[Tensor, int]:
    """The loop path in fp32 (fp64 stays fp64), K/V never repeated: a group axis G lets one K/V head serve its
    query heads. `softcap` / `sinks` as in `blockwise_attention`. Returns (out [B, Tq, H, D], tiles computed)."""
    b, h, q_len, d_head = query.shape
    hkv, k_len = key.shape[1], key.shape[2]
    groups = h // hkv
    acc_dtype = torch.promote_types(query.dtype, torch.float32)
    q = query.to(acc_dtype).reshape(b, hkv, groups, q_len, d_head) * scaling
    k, v = key.to(acc_dtype)[:, :, None], value.to(acc_dtype)[:, :, None]  # [B, Hkv, 1, Tk, D]
    logits = _TileLogits(rule, query, k_len, groups, acc_dtype, key_padding_mask, distance_bias, attn_mask,
                         position_bias, softcap)
    sinks = None if sinks is None else sinks.reshape(hkv, groups)
    outputs = [_online_softmax(q[:, :, :, qs:qs + block], k, v, qs, logits, block, dropout, sinks)
               for qs in range(0, q_len, block)]
    out = torch.cat(outputs, dim=3) if outputs else q.new_zeros(q.shape)  # [B, Hkv, G, Tq, D]
    return out.reshape(b, h, q_len, d_head).transpose(1, 2), logits.tiles


__all__ = ["loop_attention"]
