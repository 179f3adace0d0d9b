"""Gradients of a distance-bias table for attention computed by torch's fused kernels, which return none for a mask.

The banded and per-block paths of `blockwise` hand the kernel the table's [block, keys] tile detached (sdpa falls
back to its unfused math path when the mask needs a gradient) and add the table's gradient with one of these:

- `MaskGradient`: the gradient of the whole tile, dS = P (dO V^T - rowsum(dO O)), recomputed in chunks;
- `TableGradientOnRanges`: only at the distances where the caller says the table depends on trained parameters
  (the adaptive span's ramp), from the log-sum-exp the forward kernel returned: far less work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import slabs


class MaskGradient(torch.autograd.Function):
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


class TableGradientOnRanges(torch.autograd.Function):
    """Identity on the banded path's output out [B, Tq, H, D] whose backward also returns the gradient of the
    distance-bias table [H, L], computed only at the distances `trained` declares: lo_h <= d < hi_h for head h.

    The caller declares that the table depends on trained parameters only there (the adaptive span's ramp: the
    mask is flat 1 before it and 0 after), so every parameter's gradient is exact; the table's own gradient is
    left 0 elsewhere. dtable[h, d] = sum over pairs at distance d of P (dP - delta), with P = exp(logit - lse)
    from the forward's log-sum-exp and dP = dO V^T: each run of `rows` queries of head h against the
    rows + hi - lo - 1 keys its distances in [lo, hi) reach, far less than the whole slab `MaskGradient` redoes.
    """

    rows = 64

    @staticmethod
    def forward(ctx, out, lse, table, trained, q, k, v, keep, rule, scale):
        ctx.save_for_backward(out, lse, q, k, v, keep)
        ctx.trained, ctx.rule, ctx.scale, ctx.table = trained, rule, scale, table.detach()
        return out.view_as(out)

    @staticmethod
    def backward(ctx, dout):
        out, lse, q, k, v, keep = ctx.saved_tensors
        if not ctx.needs_input_grad[2]:
            return (dout, *[None] * 9)
        table, rule, r = ctx.table.float(), ctx.rule, TableGradientOnRanges.rows
        b, h, q_len, d_head = q.shape
        hkv, k_len = k.shape[1], k.shape[2]
        n = -(-q_len // r)  # runs of r queries, the last one padded

        def runs(x: Tensor) -> Tensor:  # [B, Tq, ...] -> [B, n, r, ...], zero rows past Tq
            return F.pad(x, (0, 0) * (x.dim() - 2) + (0, n * r - q_len)).reshape(b, n, r, *x.shape[2:])

        do = dout.float()  # [B, Tq, H, D]
        delta = (do * out.float()).sum(-1)  # [B, Tq, H]
        real = torch.arange(n * r, device=q.device).reshape(n, r, 1) < q_len  # [n, r, 1]: not a padded row
        lse_ok = torch.isfinite(lse)  # a row that sees no key has lse = -inf and no gradient
        lse, lse_ok = runs(lse.masked_fill(~lse_ok, 0.0).transpose(1, 2)), runs(lse_ok.transpose(1, 2))
        do, delta, q = runs(do), runs(delta), runs(q.float().transpose(1, 2))
        ok = torch.ones(1, k_len, dtype=torch.bool, device=q.device) if keep is None else keep
        dtable = torch.zeros_like(table)
        for head, (lo, hi) in enumerate(ctx.trained.tolist()):
            lo, hi = max(lo, 0), min(hi, table.shape[1], rule.back + 1)
            if hi <= lo:
                continue
            # Run i (queries at key positions k_len - q_len + i*r + a) against keys first + i*r + c, c < span:
            # distance d = a + hi - 1 - c, so the runs cover every pair with lo <= d < hi.
            span, first, kv = r + hi - lo - 1, k_len - q_len - hi + 1, head // (h // hkv)
            ks = slabs(k[:, kv:kv + 1].float(), first, n, span, r).reshape(b, n, span, d_head)
            vs = slabs(v[:, kv:kv + 1].float(), first, n, span, r).reshape(b, n, span, d_head)
            seen = slabs(ok[:, None, :, None], first, n, span, r, fill=False).reshape(-1, n, 1, span)
            dist = torch.arange(r, device=q.device)[:, None] + hi - 1 - torch.arange(span, device=q.device)
            on = (dist >= lo) & (dist < hi) & rule.allows(dist)  # [r, span]
            use = on & seen & real & lse_ok[:, :, :, head, None]  # [B, n, r, span]
            logit = (q[:, :, :, head] @ ks.transpose(-1, -2)) * ctx.scale + table[head, dist.clamp(0, hi - 1)]
            p = torch.where(use, torch.exp(logit - lse[:, :, :, head, None]), 0.0)
            dp = do[:, :, :, head] @ vs.transpose(-1, -2)
            ds = ((dp - delta[:, :, :, head, None]) * p).sum((0, 1))  # [r, span], summed over batch and runs
            dtable[head].index_add_(0, dist[on], ds[on])
        return (dout, None, dtable.to(ctx.table.dtype), *[None] * 7)
