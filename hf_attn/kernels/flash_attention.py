"""Flash attention in Triton: forward and backward with an online softmax, never a [Tq, Tk] matrix in memory.

Computes exactly what ``hf_attn.modeling.layers.eager_attention_forward`` computes (the reference it is tested
against), for query [B, H, Tq, D] and key/value [B, Hkv, Tk, D]:

    out = softmax(q k^T * scaling + bias(d) + mask) v          -> [B, Tq, H, D]

with, for every (query, key) pair, the distance d = q_pos - k_pos, queries being the last Tq key positions
(query i sits at key position Tk - Tq + i; bottom-right causal alignment, as in KV-cache decoding):

- ``is_causal``: pairs with d < 0 are excluded;
- ``key_padding_mask`` [B, Tk] bool (True = real token): padded keys are excluded;
- GQA: query head h reads key/value head h // (H // Hkv); K/V are never repeated in memory;
- ``window``: sliding window, causal keeps 0 <= d < window, bidirectional |d| < window
  (the convention of ``hf_attn.attention.blockwise``);
- ``distance_bias`` [H, L] float table (ALiBi, adaptive-span soft log-mask, triangle-wave log-mask, ...): entry
  [h, d] is added to the logit at distance d; -inf excludes; d < 0 and d >= L are excluded. Its gradient is
  returned, so parameters the table was built from (span, period) get theirs from autograd;
- ``max_distance``: pairs with d >= max_distance (or d < 0) are excluded;
- ``softcap``: logit soft-capping (Gemma 2), logits -> softcap * tanh(logits / softcap) before the table and the
  masks; the backward multiplies dS by 1 - tanh^2 for dQ and dK (the table's gradient is taken after the cap);
- ``sinks`` [H]: attention sinks (gpt-oss), one extra logit per head in every row's softmax denominator: the
  running softmax starts from it (max = sink, normaliser = 1), so lse includes it and the backward needs nothing
  more; its own gradient, -sum_i p_sink,i * delta_i, is taken on the host from lse and delta.

All the position-dependent exclusions reduce to one band of allowed distances ``-max_fwd <= d <= max_back``
(plus padding and -inf table entries). Each program visits only the key blocks that intersect the band of its
query block, so blocks past the causal edge, outside the window or beyond ``max_distance`` / the table length
are skipped, not computed; the element-wise band mask is only evaluated on blocks that straddle its edges.

A query that can see no key gets zeros (as the eager reference's ``nan_to_num``), and zero gradients.

Precision: fp32, fp16 and bf16 inputs; logits, softmax statistics and all accumulators are fp32, the two
matmuls per block run in the input dtype; fp32 dots follow ``torch.get_float32_matmul_precision()`` (exact IEEE
at "highest", the default; TF32 tensor cores at "high" / "medium"). bf16 on a GPU without bf16 tensor cores
(compute capability < 8.0, e.g. a T4) is computed in fp32 and cast back.

Launches: block sizes, warps and stages come from ``launch_configs.flash_config`` (per architecture, dtype, head
dim, pass; checked ahead of time against each architecture's shared memory); grids put B*H on axis 0, batch/head
offsets are int64, and kernels launch on the inputs' GPU. The distance-table gradient is reduced per query block
into its own buffer row and summed on the host: deterministic, no atomics.

The Triton kernels are built when this module is imported; with ``TRITON_INTERPRET=1`` set before that they run
(slowly) on CPU tensors, which is how the tests check them without a GPU.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from .band import band
from .launch_configs import FLASH_PASSES, block_d, flash_config

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - triton is absent on macOS / Windows
    HAS_TRITON = False

__all__ = ["HAS_TRITON", "flash_attention", "kernel_fits"]

LOG2E = 1.4426950408889634  # the kernels use exp2, so logits are carried in log2 units

if HAS_TRITON:

    @triton.jit
    def _tile(Ptr, b, h, rows, offs_d, strides, n_rows, D):
        """Pointers and bounds mask of rows x head dims of head (b, h) of a [B, H, T, D] tensor; `strides` is its
        (batch, head, row, dim) stride tuple (the [B, H, T, D] view's strides also for [B, T, H, D] tensors)."""
        ptrs = Ptr + b * strides[0] + h * strides[1] + rows[:, None] * strides[2] + offs_d[None, :] * strides[3]
        return ptrs, (rows[:, None] < n_rows) & (offs_d[None, :] < D)

    @triton.jit
    def _load_tile(Ptr, b, h, rows, offs_d, strides, n_rows, D):
        """A [rows, BLOCK_D] tile (zeros outside the tensor), see ``_tile``."""
        ptrs, mask = _tile(Ptr, b, h, rows, offs_d, strides, n_rows, D)
        return tl.load(ptrs, mask=mask, other=0.0)

    @triton.jit
    def _store_tile(Ptr, value, b, h, rows, offs_d, strides, n_rows, D):
        """Store a [rows, BLOCK_D] tile in Ptr's dtype (only what lies inside the tensor), see ``_tile``."""
        ptrs, mask = _tile(Ptr, b, h, rows, offs_d, strides, n_rows, D)
        tl.store(ptrs, value.to(Ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _key_block(K, V, b, hk, start_n, offs_d, stride_k, stride_v, Tk, D, BLOCK_N: tl.constexpr):
        """(offs_n, key tile, value tile) of the key block at start_n of kv head (b, hk)."""
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _load_tile(K, b, hk, offs_n, offs_d, stride_k, Tk, D)
        return offs_n, k, _load_tile(V, b, hk, offs_n, offs_d, stride_v, Tk, D)

    @triton.jit
    def _query_program(H, BLOCK_M: tl.constexpr):
        """(start_m, b, h, bh) of a program of grid (B*H, query blocks): B*H on axis 0 (up to 2^31 - 1 programs),
        batch and head in int64 so that their offsets cannot overflow."""
        bh = tl.program_id(0).to(tl.int64)
        return tl.program_id(1) * BLOCK_M, bh // H, bh % H, bh

    @triton.jit
    def _key_range(start_m, offset, Tq, Tk, max_back, max_fwd, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """Keys [lo, hi) any query of the block at start_m may see (the band -max_fwd <= q_pos - k_pos <=
        max_back), lo rounded down to a key block."""
        q_first = offset + start_m
        q_last = offset + tl.minimum(start_m + BLOCK_M, Tq) - 1
        lo = tl.maximum(q_first - max_back, 0)
        return (lo // BLOCK_N) * BLOCK_N, tl.minimum(q_last + max_fwd + 1, Tk)

    @triton.jit
    def _query_rows(Q, DO, Lse, Delta, b, h, bh, offs_m, offs_d, stride_q, stride_do, Tq, D):
        """The backward's operands of one query block: q and dO tiles, the forward's lse and delta rows."""
        q = _load_tile(Q, b, h, offs_m, offs_d, stride_q, Tq, D)
        do = _load_tile(DO, b, h, offs_m, offs_d, stride_do, Tq, D)
        lse = tl.load(Lse + bh * Tq + offs_m, mask=offs_m < Tq, other=0.0)
        delta = tl.load(Delta + bh * Tq + offs_m, mask=offs_m < Tq, other=0.0)
        return q, do, lse, delta

    @triton.jit
    def _tanh(y):
        """tanh from exp2 (no tanh in tl.math on every backend); |y| > 20 is +-1 in fp32 already."""
        e = tl.math.exp2(tl.minimum(tl.maximum(y, -20.0), 20.0) * 2.8853900817779268)  # exp(2y)
        return (e - 1.0) / (e + 1.0)

    @triton.jit
    def _masked_logits(
        q, k, h, b, offs_m, offs_n, start_m, start_n, offset, Tq, Tk, max_back, max_fwd,
        Bias, stride_bh, L, Mask, stride_mask, qk_scale, cap,
        HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        PRECISION: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
    ):
        """Logits of one [BLOCK_M, BLOCK_N] tile in log2 units, excluded pairs at -inf; also returns d and (with
        HAS_SOFTCAP; `cap` = softcap in log2 units) the tanh of the cap, whose derivative the backward needs."""
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        t = s
        if HAS_SOFTCAP:  # cap(x) = c tanh(x / c) in natural units is the same in log2 units with c * log2(e)
            t = _tanh(s / cap)
            s = cap * t
        d = (offset + offs_m)[:, None] - offs_n[None, :]  # distance q_pos - k_pos
        if HAS_BIAS:
            # Clamped gather: out-of-table distances are excluded by the band mask below.
            idx = tl.minimum(tl.maximum(d, 0), L - 1)
            s += tl.load(Bias + h * stride_bh + idx) * 1.4426950408889634
        # The band / bounds mask only where the tile straddles an edge (interior tiles skip the work).
        d_hi = offset + start_m + BLOCK_M - 1 - start_n
        d_lo = offset + start_m - (start_n + BLOCK_N - 1)
        edge = (start_n + BLOCK_N > Tk) | (start_m + BLOCK_M > Tq) | (d_hi > max_back) | (d_lo < -max_fwd)
        if edge:
            ok = (offs_m[:, None] < Tq) & (offs_n[None, :] < Tk) & (d <= max_back) & (d >= -max_fwd)
            s = tl.where(ok, s, float("-inf"))
        if HAS_MASK:
            keep = tl.load(Mask + b * stride_mask[0] + offs_n * stride_mask[1], mask=offs_n < Tk, other=0)
            s = tl.where(keep[None, :] != 0, s, float("-inf"))
        return s, d, t

    @triton.jit
    def _uncap(ds, t, HAS_SOFTCAP: tl.constexpr):
        """The gradient of the logits before the cap from the one after it: dS (1 - tanh^2)."""
        if HAS_SOFTCAP:
            ds = ds * (1.0 - t * t)
        return ds

    @triton.jit
    def _logit_grad(s, lse, delta, do, v, PRECISION: tl.constexpr):
        """dS = P * (dO V^T - delta) of a tile, the gradient of its (natural-unit) logits, with P = exp2(s - lse)
        the forward's weights and delta_i = sum_d dO_i O_i = sum_j P_ij dP_ij."""
        p = tl.math.exp2(s - lse[:, None])
        return p * (tl.dot(do, tl.trans(v), input_precision=PRECISION) - delta[:, None])

    @triton.jit
    def _flash_fwd_kernel(
        Q, K, V, Out, Lse, Bias, Mask, Sinks, stride_q, stride_k, stride_v, stride_o, stride_bh, stride_mask,
        H, GROUP, Tq, Tk, D, L, max_back, max_fwd, qk_scale, cap,
        HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_SINKS: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
    ):
        """One program = one block of BLOCK_M queries of one (batch, head), grid (B*H, query blocks).
        Out [B, Tq, H, D], Lse [B, H, Tq]."""
        start_m, b, h, bh = _query_program(H, BLOCK_M)
        hk = h // GROUP  # GQA: the shared key/value head
        offset = Tk - Tq  # key position of query 0
        offs_m = start_m + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        q = _load_tile(Q, b, h, offs_m, offs_d, stride_q, Tq, D)

        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max (log2 units)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running normaliser
        acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)  # running weighted sum of values
        if HAS_SINKS:  # the sink's logit starts the running softmax: max = sink, normaliser = exp2(0) = 1
            m_i = tl.zeros([BLOCK_M], dtype=tl.float32) + tl.load(Sinks + h) * 1.4426950408889634
            l_i += 1.0
        lo, hi = _key_range(start_m, offset, Tq, Tk, max_back, max_fwd, BLOCK_M, BLOCK_N)
        for start_n in range(lo, hi, BLOCK_N):
            offs_n, k, v = _key_block(K, V, b, hk, start_n, offs_d, stride_k, stride_v, Tk, D, BLOCK_N)
            s, d, t = _masked_logits(q, k, h, b, offs_m, offs_n, start_m, start_n, offset, Tq, Tk, max_back,
                                     max_fwd, Bias, stride_bh, L, Mask, stride_mask, qk_scale, cap,
                                     HAS_BIAS, HAS_MASK, BLOCK_M, BLOCK_N, PRECISION, HAS_SOFTCAP)
            m_new = tl.maximum(m_i, tl.max(s, 1))
            # Rows that have seen only excluded keys shift by 0, so exp2(-inf - 0) = 0 rather than NaN.
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.math.exp2(s - m_safe[:, None])
            alpha = tl.math.exp2(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
            m_i = m_new

        seen = l_i > 0.0
        # A row with no visible key stores lse = 0: its logits are all -inf, so the backward's p = 0.
        lse = tl.where(seen, m_i + tl.math.log2(tl.where(seen, l_i, 1.0)), 0.0)
        _store_tile(Out, acc / tl.where(seen, l_i, 1.0)[:, None], b, h, offs_m, offs_d, stride_o, Tq, D)
        tl.store(Lse + bh * Tq + offs_m, lse, mask=offs_m < Tq)

    @triton.jit
    def _flash_bwd_dkdv_kernel(
        Q, K, V, DO, Lse, Delta, DK, DV, Bias, Mask, stride_q, stride_k, stride_v, stride_do, stride_dk,
        stride_dv, stride_bh, stride_mask, H, GROUP, Tq, Tk, D, L, max_back, max_fwd, qk_scale, cap, sm_scale,
        HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_SINKS: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
    ):
        """One program = one block of BLOCK_N keys of one (batch, kv head); it loops over the GROUP query heads
        sharing that kv head and over the query blocks that can see the keys, so dK/dV need no atomics.
        Grid (B*Hkv, key blocks)."""
        start_n = tl.program_id(1) * BLOCK_N
        bhk = tl.program_id(0).to(tl.int64)
        b = bhk // (H // GROUP)
        hk = bhk % (H // GROUP)
        offset = Tk - Tq
        offs_d = tl.arange(0, BLOCK_D)
        offs_n, k, v = _key_block(K, V, b, hk, start_n, offs_d, stride_k, stride_v, Tk, D, BLOCK_N)
        dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)

        # Queries that may see any key of this block: q_pos in [k_first - max_fwd, k_last + max_back].
        k_last = tl.minimum(start_n + BLOCK_N, Tk) - 1
        lo = tl.maximum(start_n - max_fwd - offset, 0)
        lo = (lo // BLOCK_M) * BLOCK_M
        hi = tl.minimum(k_last + max_back - offset + 1, Tq)
        for g in range(GROUP):
            h = hk * GROUP + g
            for start_m in range(lo, hi, BLOCK_M):
                offs_m = start_m + tl.arange(0, BLOCK_M)
                q, do, lse, delta = _query_rows(Q, DO, Lse, Delta, b, h, b * H + h, offs_m, offs_d, stride_q,
                                                stride_do, Tq, D)
                s, d, t = _masked_logits(q, k, h, b, offs_m, offs_n, start_m, start_n, offset, Tq, Tk, max_back,
                                         max_fwd, Bias, stride_bh, L, Mask, stride_mask, qk_scale, cap,
                                         HAS_BIAS, HAS_MASK, BLOCK_M, BLOCK_N, PRECISION, HAS_SOFTCAP)
                # dS as in _logit_grad, with dV's update between P and dP: this order keeps ptxas's register
                # allocation (computing dP first costs up to 16 registers / 16 B more spill, per the AOT compile).
                p = tl.math.exp2(s - lse[:, None])  # the forward's softmax weights
                dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PRECISION)
                ds = p * (tl.dot(do, tl.trans(v), input_precision=PRECISION) - delta[:, None])
                ds = _uncap(ds, t, HAS_SOFTCAP)
                dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION)
        _store_tile(DK, dk * sm_scale, b, hk, offs_n, offs_d, stride_dk, Tk, D)
        _store_tile(DV, dv, b, hk, offs_n, offs_d, stride_dv, Tk, D)

    @triton.jit
    def _flash_bwd_dq_kernel(
        Q, K, V, DO, Lse, Delta, DQ, Bias, DBias, Mask, stride_q, stride_k, stride_v, stride_do, stride_dq,
        stride_bh, stride_mask, H, GROUP, Tq, Tk, D, L, max_back, max_fwd, qk_scale, cap, sm_scale,
        HAS_BIAS: tl.constexpr, BIAS_GRAD: tl.constexpr, HAS_MASK: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
        HAS_SINKS: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_R: tl.constexpr,
    ):
        """One program = one block of BLOCK_M queries of one (batch, head), grid (B*H, query blocks): dQ, and
        (BIAS_GRAD) this program's share of the table gradient, sum of dS over its pairs at each distance d, in
        its own row DBias[bh * num_query_blocks + block, :L] of a zeroed fp32 buffer (no atomics: every entry
        is written once, by one program; the host sums the rows, so the result is deterministic).

        Per key tile the distances form diagonals: a gather skews dS [BLOCK_M, BLOCK_N] to [BLOCK_M, R]
        (column c = diagonal c, distance base + c) and a column sum gives the tile's R diagonal sums. Tiles are
        visited with decreasing distances (base drops by BLOCK_N per tile), so a window of R running sums is
        carried: after a tile, entries BLOCK_M <= c < BLOCK_M + BLOCK_N (which no later tile reaches) are stored,
        entries c < BLOCK_M shift up by BLOCK_N; so each distance is stored once."""
        start_m, b, h, bh = _query_program(H, BLOCK_M)
        hk = h // GROUP
        offset = Tk - Tq
        offs_m = start_m + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        q, do, lse, delta = _query_rows(Q, DO, Lse, Delta, b, h, bh, offs_m, offs_d, stride_q, stride_do, Tq, D)
        dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

        lo, hi = _key_range(start_m, offset, Tq, Tk, max_back, max_fwd, BLOCK_M, BLOCK_N)
        R: tl.constexpr = BLOCK_R
        diag = tl.arange(0, R)
        skew = tl.arange(0, BLOCK_M)[:, None] - diag[None, :] + (BLOCK_N - 1)  # column of dS on diagonal c
        on_diag = (skew >= 0) & (skew < BLOCK_N)
        skew = tl.minimum(tl.maximum(skew, 0), BLOCK_N - 1)
        db_row = DBias + (bh * tl.num_programs(1) + tl.program_id(1)) * L
        db_acc = tl.zeros([R], dtype=tl.float32)  # running sums at distances base + c
        base = offset + start_m - lo - (BLOCK_N - 1)  # distance of diagonal 0 of the current tile
        for start_n in range(lo, hi, BLOCK_N):
            offs_n, k, v = _key_block(K, V, b, hk, start_n, offs_d, stride_k, stride_v, Tk, D, BLOCK_N)
            s, d, t = _masked_logits(q, k, h, b, offs_m, offs_n, start_m, start_n, offset, Tq, Tk, max_back,
                                     max_fwd, Bias, stride_bh, L, Mask, stride_mask, qk_scale, cap,
                                     HAS_BIAS, HAS_MASK, BLOCK_M, BLOCK_N, PRECISION, HAS_SOFTCAP)
            ds = _logit_grad(s, lse, delta, do, v, PRECISION)
            dq += tl.dot(_uncap(ds, t, HAS_SOFTCAP).to(k.dtype), k, input_precision=PRECISION)
            if BIAS_GRAD:
                in_table = (offs_m[:, None] < Tq) & (offs_n[None, :] < Tk) & (d >= 0) & (d <= max_back)
                skewed = tl.gather(tl.where(in_table, ds, 0.0), skew, axis=1)  # [BLOCK_M, R]
                db_acc += tl.sum(tl.where(on_diag, skewed, 0.0), 0)
                dist = base + diag
                final = (diag >= BLOCK_M) & (diag < BLOCK_M + BLOCK_N)  # no later tile reaches these
                tl.store(db_row + dist, db_acc, mask=final & (dist >= 0) & (dist < L))
                carried = (diag >= BLOCK_N) & (diag < BLOCK_N + BLOCK_M)
                db_acc = tl.where(carried, tl.gather(db_acc, tl.maximum(diag - BLOCK_N, 0), axis=0), 0.0)
                base -= BLOCK_N
        if BIAS_GRAD:
            dist = base + diag
            final = (diag >= BLOCK_N) & (diag < BLOCK_N + BLOCK_M)  # the carried entries
            tl.store(db_row + dist, db_acc, mask=final & (dist >= 0) & (dist < L))
        _store_tile(DQ, dq * sm_scale, b, h, offs_m, offs_d, stride_dq, Tq, D)


def _block_sizes(pass_: str, q: torch.Tensor, has_bias: bool, block_m: int | None = None,
                 block_n: int | None = None) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) of one kernel from ``launch_configs.flash_config`` for q's GPU
    (16-wide blocks under the CPU interpreter); `block_m` / `block_n` override the blocks. Raises if no
    configuration fits (``kernel_fits`` says so first)."""
    if q.device.type != "cuda":
        return block_m or 16, block_n or 16, 1, 1
    cc = torch.cuda.get_device_capability(q.device)
    cfg = flash_config(cc, q.dtype, q.shape[-1], has_bias, pass_)
    if cfg is None:
        raise RuntimeError(f"no {pass_} launch configuration of the flash kernel fits sm_{cc[0]}{cc[1]} at "
                           f"{q.dtype}, head_dim={q.shape[-1]}; use the blockwise path")
    return block_m or cfg.block_m, block_n or cfg.block_n, cfg.num_warps, cfg.num_stages


def kernel_fits(query: torch.Tensor, has_bias: bool, backward: bool) -> bool:
    """Whether the flash kernels have a launch configuration for query's GPU, dtype and head dim (every pass
    the call will run), known from the launch-config tables without compiling. True off CUDA (interpreter)."""
    if not query.is_cuda:
        return True
    cc = torch.cuda.get_device_capability(query.device)
    dtype = torch.float32 if query.dtype == torch.bfloat16 and cc[0] < 8 else query.dtype  # run in fp32 there
    passes = FLASH_PASSES if backward else ("fwd",)
    return all(flash_config(cc, dtype, query.shape[-1], has_bias, p) is not None for p in passes)


def _block_r(block_m: int, block_n: int) -> int:
    """Width of the dq kernel's diagonal window (the bias gradient): a power of two >= BLOCK_M + BLOCK_N."""
    return 1 << (block_m + block_n - 1).bit_length()


def _head_major(t: torch.Tensor) -> tuple[int, ...]:
    """The (batch, head, row, dim) strides of a [B, T, H, D] tensor, the order the kernels take strides in."""
    return t.transpose(1, 2).stride()


def _device_guard(t: torch.Tensor):
    """Launch on t's GPU, not the current one (models split over GPUs with device_map="auto")."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _precision(dtype: torch.dtype) -> str:
    """tl.dot input precision: fp32 follows torch.get_float32_matmul_precision() ("highest" -> exact IEEE
    fp32; "high" / "medium", i.e. the user allowed TF32 -> TF32 tensor cores); ignored for fp16/bf16 dots."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "ieee"
    return "tf32"


def _launch_args(q, k, distance_bias, key_padding_mask, scaling, max_back, max_fwd, precision, softcap, sinks):
    """What every kernel launch shares: (table, padding mask, sinks), the arguments after each kernel's own strides
    (their strides, sizes, band, log2 logit scale and log2 softcap) and the constexprs. Dummy table / mask / sinks
    when absent (never read)."""
    bias = q.new_zeros((1, 1), dtype=torch.float32) if distance_bias is None else distance_bias
    mask = q.new_zeros((1, 1), dtype=torch.int8) if key_padding_mask is None else key_padding_mask
    sink = q.new_zeros((1,), dtype=torch.float32) if sinks is None else sinks
    b, h, q_len, d_head = q.shape
    args = (bias.stride(0), mask.stride(), h, h // k.shape[1], q_len, k.shape[2], d_head, bias.shape[1],
            max_back, max_fwd, scaling * LOG2E, 1.0 if softcap is None else softcap * LOG2E)
    consts = dict(HAS_BIAS=distance_bias is not None, HAS_MASK=key_padding_mask is not None,
                  HAS_SOFTCAP=softcap is not None, HAS_SINKS=sinks is not None,
                  BLOCK_D=block_d(d_head), PRECISION=precision)
    return (bias, mask, sink), args, consts


class FlashAttentionFunction(torch.autograd.Function):
    """autograd wrapper: (q, k, v, distance_bias, sinks) -> out; gradients for q, k, v, the bias table and the
    sinks."""

    @staticmethod
    def forward(ctx, q, k, v, distance_bias, key_padding_mask, scaling, max_back, max_fwd, block_m, block_n,
                softcap=None, sinks=None):
        b, h, q_len, d_head = q.shape
        out = torch.empty((b, q_len, h, d_head), device=q.device, dtype=q.dtype)
        lse = torch.empty((b, h, q_len), device=q.device, dtype=torch.float32)
        precision = _precision(q.dtype)
        (bias, mask, sink), args, consts = _launch_args(q, k, distance_bias, key_padding_mask, scaling, max_back,
                                                        max_fwd, precision, softcap, sinks)
        bm, bn, warps, stages = _block_sizes("fwd", q, distance_bias is not None, block_m, block_n)
        with _device_guard(q):  # B*H on grid axis 0: axes 1 and 2 stop at 65,535
            _flash_fwd_kernel[(b * h, triton.cdiv(q_len, bm))](
                q, k, v, out, lse, bias, mask, sink, q.stride(), k.stride(), v.stride(), _head_major(out), *args,
                BLOCK_M=bm, BLOCK_N=bn, num_warps=warps, num_stages=stages, **consts,
            )
        ctx.save_for_backward(q, k, v, out, lse, distance_bias, key_padding_mask, sinks)
        ctx.args = (scaling, max_back, max_fwd, block_m, block_n, precision, softcap)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse, distance_bias, key_padding_mask, sinks = ctx.saved_tensors
        scaling, max_back, max_fwd, block_m, block_n, precision, softcap = ctx.args
        b, h, q_len, _ = q.shape
        # delta_i = sum_d dO_i . O_i = sum_j P_ij dP_ij (the softmax backward's row term); [B, H, Tq] fp32.
        delta = (dout.float() * out.float()).sum(-1).transpose(1, 2).contiguous()
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        (bias, mask, sink), args, consts = _launch_args(q, k, distance_bias, key_padding_mask, scaling, max_back,
                                                        max_fwd, precision, softcap, sinks)
        has_bias = distance_bias is not None
        bias_grad = has_bias and ctx.needs_input_grad[3]
        inputs = (q, k, v, dout, lse, delta)
        with _device_guard(q):
            bm, bn, warps, stages = _block_sizes("bwd_dkdv", q, has_bias, block_m, block_n)
            _flash_bwd_dkdv_kernel[(b * k.shape[1], triton.cdiv(k.shape[2], bn))](
                *inputs, dk, dv, bias, mask, q.stride(), k.stride(), v.stride(), _head_major(dout), dk.stride(),
                dv.stride(), *args, scaling, BLOCK_M=bm, BLOCK_N=bn, num_warps=warps, num_stages=stages, **consts,
            )
            bm, bn, warps, stages = _block_sizes("bwd_dq", q, has_bias, block_m, block_n)
            n_blocks = triton.cdiv(q_len, bm)
            # The table gradient: one row of partial sums per (batch, head, query block), summed below in a fixed
            # order (deterministic, no atomics); B*H*blocks*L fp32, allocated only when the table needs a grad.
            dbias = bias.new_zeros((b * h * n_blocks, bias.shape[1]), dtype=torch.float32) if bias_grad else bias
            _flash_bwd_dq_kernel[(b * h, n_blocks)](
                *inputs, dq, bias, dbias, mask, q.stride(), k.stride(), v.stride(), _head_major(dout), dq.stride(),
                *args, scaling, BIAS_GRAD=bias_grad, BLOCK_M=bm, BLOCK_N=bn, BLOCK_R=_block_r(bm, bn),
                num_warps=warps, num_stages=stages, **consts,
            )
        d_table = dbias.view(b, h, n_blocks, -1).sum((0, 2)).to(distance_bias.dtype) if bias_grad else None
        d_sinks = None
        if sinks is not None and ctx.needs_input_grad[11]:  # d sink_h = -sum_i p_sink,i delta_i
            p_sink = torch.exp2(sinks.float()[None, :, None] * LOG2E - lse)
            d_sinks = -(p_sink * delta).sum((0, 2)).to(sinks.dtype)
        return dq, dk, dv, d_table, None, None, None, None, None, None, None, d_sinks


def flash_attention(
    query: Tensor, key: Tensor, value: Tensor, *, scaling: float | None = None, is_causal: bool,
    key_padding_mask: Tensor | None = None, distance_bias: Tensor | None = None, max_distance: int | None = None,
    window: int | None = None, block_m: int | None = None, block_n: int | None = None,
    softcap: float | None = None, sinks: Tensor | None = None,
) -> Tensor:
    """Exact softmax attention with the Triton kernels (see the module docstring for the masks).

    Args:
        query: [B, H, Tq, D]; key, value: [B, Hkv, Tk, D], H a multiple of Hkv; any strides.
        scaling: logit scale, default D ** -0.5.
        is_causal: exclude pairs with d < 0.
        key_padding_mask: [B, >=Tk] bool (or 0/1 ints), True = real token; its last Tk columns are used.
        distance_bias: [H, L] (or [1, L], broadcast over heads) additive table, differentiable.
        max_distance: exclude pairs with d >= max_distance (and d < 0).
        window: sliding window (causal 0 <= d < window, bidirectional |d| < window).
        block_m, block_n: override the block sizes (tests use them to get many blocks on small inputs).
        softcap: logit soft-capping, softcap * tanh(logits / softcap) before the table and the masks.
        sinks: [H] attention sinks, one extra logit per head in the softmax denominator; differentiable.

    Returns:
        out [B, Tq, H, D] in query's dtype.
    """
    if not HAS_TRITON:
        raise RuntimeError("flash_attention needs triton; use hf_attn.attention.blockwise.blockwise_attention")
    b, h, q_len, d_head = query.shape
    hkv, k_len = key.shape[1], key.shape[2]
    if h % hkv != 0:
        raise ValueError(f"num_key_value_heads={hkv} must divide num_attention_heads={h}")
    if d_head > 256:
        raise ValueError(f"head_dim={d_head} > 256 is not supported by the Triton kernel")
    if window is not None and window <= 0:
        raise ValueError(f"window={window} must be positive")
    scaling = d_head**-0.5 if scaling is None else float(scaling)
    if q_len == 0 or k_len == 0:  # nothing to attend to: zeros, like a query that sees no key
        return query.new_zeros((b, q_len, h, d_head))
    out_dtype = query.dtype
    if query.is_cuda and out_dtype == torch.bfloat16 and torch.cuda.get_device_capability(query.device)[0] < 8:
        # No bf16 tensor cores (T4): fp32 keeps bf16's range; fp16 could overflow.
        query, key, value = query.float(), key.float(), value.float()
    key, value = key.to(query.dtype), value.to(query.dtype)

    table = None
    if distance_bias is not None:
        if distance_bias.dim() != 2 or distance_bias.shape[0] not in (1, h):
            raise ValueError(f"distance_bias must be [H={h}, L] or [1, L], got {tuple(distance_bias.shape)}")
        table = distance_bias.float().expand(h, -1).contiguous()  # autograd sums a broadcast head back
    mask = None
    if key_padding_mask is not None:
        mask = key_padding_mask[:, -k_len:].to(device=query.device, dtype=torch.int8).contiguous()
    if sinks is not None and tuple(sinks.shape) != (h,):
        raise ValueError(f"sinks must be [H={h}], got {tuple(sinks.shape)}")
    if softcap is not None and not softcap > 0:
        raise ValueError(f"softcap must be positive, got {softcap!r}")
    sinks = None if sinks is None else sinks.float().contiguous()
    max_back, max_fwd = band(is_causal, window, max_distance, None if table is None else table.shape[1]).limits(
        q_len, k_len)
    out = FlashAttentionFunction.apply(query, key, value, table, mask, scaling, max_back, max_fwd, block_m, block_n,
                                       None if softcap is None else float(softcap), sinks)
    return out.to(out_dtype)
