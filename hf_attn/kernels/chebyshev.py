"""Chebyshev expansion fused with the following projection, in Triton: the [N, K] basis never reaches memory.

    chebyshev_project_triton(u [N], weight [hidden, K], bias [hidden] | None) -> [N, hidden]
        = chebyshev_expand(u, K) @ weight.T + bias,     T_0 = 1, T_1 = u, T_{k+1} = 2 u T_k - T_{k-1}

differentiable with respect to u, weight and bias (dT_k/du = k U_{k-1}(u), U the polynomials of the second kind).
The PyTorch reference (``chebyshev_expand`` / ``chebyshev_project_reference``) lives in
``hf_attn.modeling.modeling_tan`` because the TAN model needs it as remote code. Kernels never import models: the
model passes its reference to `chebyshev_project(u, weight, bias, reference=...)`, the one dispatcher, which runs
the fused kernels where they apply (one call per coordinate of u [N, M]) and the reference elsewhere.

How a kernel builds a basis tile [BLOCK_N, K_TILE] without a K-step loop over the whole tile: split k = c*SUB + j
(chunk c, offset j < SUB) and use the addition formulas (u = cos t: T_k = cos kt, U_{k-1} = sin kt / sin t)

    T_{a+j}     = T_a T_j + (u^2 - 1) U_{a-1} U_{j-1}
    U_{a+j-1}   = U_{a-1} T_j + T_a U_{j-1}

with a small [BLOCK_N, SUB] tile of (T_j, U_{j-1}) and a [BLOCK_N, K_TILE / SUB] tile of chunk starts (T_a, U_{a-1}),
each filled by a short recurrence; a broadcast to [BLOCK_N, K_TILE/SUB, SUB] and a reshape give the whole tile.
The formulas are polynomial identities (valid for every u); for |u| <= 1 all terms are bounded, so the result
agrees with the reference recurrence to fp32 rounding.

Kernels: forward (out = basis @ W^T + b, fp32 accumulation), du (du = sum_k (dY W)[:, k] k U_{k-1}(u)) and dW
(dW = dY^T basis, split over N into deterministic fp32 partial sums). dbias = dY.sum(0) is one PyTorch reduction.
Set ``HF_ATTN_FORCE_TRITON=1`` (with ``TRITON_INTERPRET=1`` before triton is imported) to run them on CPU tensors.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Callable

import torch

from .launch_configs import CHEBYSHEV_PASSES, chebyshev_config

logger = logging.getLogger(__name__)
_REPORTED: set = set()  # (capability, dtype, hidden, K) already reported as falling back

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover
    HAS_TRITON = False

__all__ = ["HAS_TRITON", "chebyshev_project", "chebyshev_project_triton", "fused_fits"]

if HAS_TRITON:

    @triton.jit
    def _chebyshev_tile(u, k_start, K, BLOCK_N: tl.constexpr, K_TILE: tl.constexpr, SUB: tl.constexpr):
        """T_k(u) and dT_k/du = k U_{k-1}(u) for k in [k_start, k_start + K_TILE): two [BLOCK_N, K_TILE] fp32
        tiles, zero for k >= K. u: [BLOCK_N] fp32."""
        NCH: tl.constexpr = K_TILE // SUB
        w2 = u * u - 1.0
        # (T_j, U_{j-1}) for j in [0, SUB): recurrence, one column per step.
        col = tl.arange(0, SUB)
        t_j = tl.zeros([BLOCK_N, SUB], dtype=tl.float32)
        u_j = tl.zeros([BLOCK_N, SUB], dtype=tl.float32)
        t_prev = tl.full([BLOCK_N], 1.0, tl.float32)  # T_0
        t_cur = u  # T_1
        v_prev = tl.zeros([BLOCK_N], dtype=tl.float32)  # U_{-1}
        v_cur = tl.full([BLOCK_N], 1.0, tl.float32)  # U_0
        for j in tl.static_range(SUB):
            t_j = tl.where(col[None, :] == j, t_prev[:, None], t_j)
            u_j = tl.where(col[None, :] == j, v_prev[:, None], u_j)
            t_prev, t_cur = t_cur, 2.0 * u * t_cur - t_prev
            v_prev, v_cur = v_cur, 2.0 * u * v_cur - v_prev
        t_sub, u_sub = t_prev, v_prev  # T_SUB, U_{SUB-1}
        # (T_a, U_{a-1}) at the chunk starts a = k_start + c * SUB; (T_{k_start}, U_{k_start-1}) by recurrence.
        t_a = tl.full([BLOCK_N], 1.0, tl.float32)
        u_a = tl.zeros([BLOCK_N], dtype=tl.float32)
        t_next = u
        u_next = tl.full([BLOCK_N], 1.0, tl.float32)
        for _ in range(k_start):
            t_a, t_next = t_next, 2.0 * u * t_next - t_a
            u_a, u_next = u_next, 2.0 * u * u_next - u_a
        chunk = tl.arange(0, NCH)
        t_c = tl.zeros([BLOCK_N, NCH], dtype=tl.float32)
        u_c = tl.zeros([BLOCK_N, NCH], dtype=tl.float32)
        for c in tl.static_range(NCH):
            t_c = tl.where(chunk[None, :] == c, t_a[:, None], t_c)
            u_c = tl.where(chunk[None, :] == c, u_a[:, None], u_c)
            t_a, u_a = t_a * t_sub + w2 * u_a * u_sub, u_a * t_sub + t_a * u_sub
        # Whole tile by the addition formulas: [BLOCK_N, NCH, SUB] -> [BLOCK_N, K_TILE], k = k_start + c*SUB + j.
        basis = t_c[:, :, None] * t_j[:, None, :] + (w2[:, None] * u_c)[:, :, None] * u_j[:, None, :]
        second = u_c[:, :, None] * t_j[:, None, :] + t_c[:, :, None] * u_j[:, None, :]  # U_{k-1}
        basis = tl.reshape(basis, [BLOCK_N, K_TILE])
        second = tl.reshape(second, [BLOCK_N, K_TILE])
        k = k_start + tl.arange(0, K_TILE)
        basis = tl.where(k[None, :] < K, basis, 0.0)
        deriv = tl.where(k[None, :] < K, k[None, :].to(tl.float32) * second, 0.0)
        return basis, deriv

    @triton.jit
    def _chebyshev_fwd_kernel(
        U, W, Bias, Out, N, HID, K,
        stride_wh, stride_wk, stride_on, stride_oh,
        HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, K_TILE: tl.constexpr,
        SUB: tl.constexpr, PRECISION: tl.constexpr,
    ):
        """Out[rows, hblock] = sum over k tiles of basis(u[rows]) @ W[hblock, ktile]^T (+ bias)."""
        offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
        u = tl.load(U + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)
        acc = tl.zeros([BLOCK_N, BLOCK_H], dtype=tl.float32)
        for k_start in range(0, K, K_TILE):
            basis, _ = _chebyshev_tile(u, k_start, K, BLOCK_N, K_TILE, SUB)
            offs_k = k_start + tl.arange(0, K_TILE)
            w = tl.load(W + offs_h[None, :] * stride_wh + offs_k[:, None] * stride_wk,
                        mask=(offs_h[None, :] < HID) & (offs_k[:, None] < K), other=0.0)  # [K_TILE, BLOCK_H]
            acc += tl.dot(basis.to(w.dtype), w, input_precision=PRECISION)
        if HAS_BIAS:
            acc += tl.load(Bias + offs_h, mask=offs_h < HID, other=0.0).to(tl.float32)[None, :]
        tl.store(Out + offs_n[:, None] * stride_on + offs_h[None, :] * stride_oh, acc.to(Out.dtype.element_ty),
                 mask=(offs_n[:, None] < N) & (offs_h[None, :] < HID))

    @triton.jit
    def _chebyshev_bwd_du_kernel(
        U, W, DY, DU, N, HID, K,
        stride_wh, stride_wk, stride_dyn, stride_dyh,
        BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, K_TILE: tl.constexpr, SUB: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        """du[rows] = sum_k (dY[rows] @ W)[:, k] * k U_{k-1}(u[rows])."""
        offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        u = tl.load(U + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)
        du = tl.zeros([BLOCK_N], dtype=tl.float32)
        for k_start in range(0, K, K_TILE):
            _, deriv = _chebyshev_tile(u, k_start, K, BLOCK_N, K_TILE, SUB)
            offs_k = k_start + tl.arange(0, K_TILE)
            g = tl.zeros([BLOCK_N, K_TILE], dtype=tl.float32)  # (dY @ W)[rows, ktile]
            for h_start in range(0, HID, BLOCK_H):
                offs_h = h_start + tl.arange(0, BLOCK_H)
                dy = tl.load(DY + offs_n[:, None] * stride_dyn + offs_h[None, :] * stride_dyh,
                             mask=(offs_n[:, None] < N) & (offs_h[None, :] < HID), other=0.0)
                w = tl.load(W + offs_h[:, None] * stride_wh + offs_k[None, :] * stride_wk,
                            mask=(offs_h[:, None] < HID) & (offs_k[None, :] < K), other=0.0)
                g += tl.dot(dy.to(w.dtype), w, input_precision=PRECISION)
            du += tl.sum(g * deriv, 1)
        tl.store(DU + offs_n, du, mask=offs_n < N)

    @triton.jit
    def _chebyshev_bwd_dw_kernel(
        U, DY, DWP, N, HID, K, rows_per_split,
        stride_dyn, stride_dyh,
        BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, K_TILE: tl.constexpr, SUB: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        """Partial dW^T [K_TILE, BLOCK_H] over one split of the rows: DWP[split, k, h] = sum_n T_k(u_n) dY[n, h]."""
        offs_h = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
        k_start = tl.program_id(1) * K_TILE
        split = tl.program_id(2)
        offs_k = k_start + tl.arange(0, K_TILE)
        acc = tl.zeros([K_TILE, BLOCK_H], dtype=tl.float32)
        row_lo = split * rows_per_split
        row_hi = tl.minimum(row_lo + rows_per_split, N)
        for n_start in range(row_lo, row_hi, BLOCK_N):
            offs_n = n_start + tl.arange(0, BLOCK_N)
            rows = offs_n < row_hi
            u = tl.load(U + offs_n, mask=rows, other=0.0).to(tl.float32)
            basis, _ = _chebyshev_tile(u, k_start, K, BLOCK_N, K_TILE, SUB)
            dy = tl.load(DY + offs_n[:, None] * stride_dyn + offs_h[None, :] * stride_dyh,
                         mask=rows[:, None] & (offs_h[None, :] < HID), other=0.0)
            basis = tl.where(rows[:, None], basis, 0.0)
            acc += tl.dot(tl.trans(basis.to(dy.dtype)), dy, input_precision=PRECISION)
        tl.store(DWP + split * K * HID + offs_k[:, None] * HID + offs_h[None, :], acc,
                 mask=(offs_k[:, None] < K) & (offs_h[None, :] < HID))


def _launch_config(pass_: str, hidden: int, k: int, weight: torch.Tensor) -> dict | None:
    """Tiles of one kernel (pass_ in CHEBYSHEV_PASSES): ``launch_configs.chebyshev_config`` for weight's GPU (None
    if none fits), small tiles under the CPU interpreter (more tiles to test)."""
    if not weight.is_cuda:
        k_tile = max(16, min(triton.next_power_of_2(k), 16))
        return dict(BLOCK_N=16, BLOCK_H=16, K_TILE=k_tile, SUB=4, num_warps=1, num_stages=1, splits=2)
    cc = torch.cuda.get_device_capability(weight.device)
    cfg = chebyshev_config(cc, weight.dtype, hidden, k, pass_)
    if cfg is None:
        return None
    sms = torch.cuda.get_device_properties(weight.device).multi_processor_count
    return dict(BLOCK_N=cfg.block_n, BLOCK_H=cfg.block_h, K_TILE=cfg.k_tile, SUB=cfg.sub, num_warps=cfg.num_warps,
                num_stages=cfg.num_stages, splits=max(1, min(4 * sms // max(1, triton.cdiv(hidden, cfg.block_h)), 256)))


def _tiles(pass_: str, hidden: int, k: int, weight: torch.Tensor, override: dict | None) -> dict:
    if override is not None:
        return {"num_stages": 1, **override}
    cfg = _launch_config(pass_, hidden, k, weight)
    if cfg is None:
        raise RuntimeError(f"no {pass_} launch configuration of the Chebyshev kernels fits this GPU at "
                           f"{weight.dtype}, hidden={hidden}, K={k}; use chebyshev_project (it falls back)")
    return cfg


def fused_fits(weight: torch.Tensor, backward: bool) -> bool:
    """Whether every kernel the call runs has a launch configuration on weight's GPU (always True off CUDA)."""
    if not weight.is_cuda:
        return True
    cc = torch.cuda.get_device_capability(weight.device)
    hidden, k = weight.shape
    passes = CHEBYSHEV_PASSES if backward else ("fwd",)
    return all(chebyshev_config(cc, weight.dtype, hidden, k, p) is not None for p in passes)


def _precision(dtype: torch.dtype) -> str:
    """tl.dot input precision: fp32 follows torch.get_float32_matmul_precision() (IEEE at "highest", TF32 when
    the user allowed it with "high" / "medium"); ignored for fp16 / bf16 dots."""
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "ieee"
    return "tf32"


def _device_guard(t: torch.Tensor):
    """Launch on t's GPU, not the current one."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


class ChebyshevProjectFunction(torch.autograd.Function):
    """autograd wrapper of the fused kernels: (u [N], weight [hidden, K], bias [hidden] | None) -> [N, hidden]."""

    @staticmethod
    def forward(ctx, u, weight, bias, tiles):
        n = u.shape[0]
        hidden, k = weight.shape
        out = torch.empty((n, hidden), device=u.device, dtype=weight.dtype)
        cfg = _tiles("fwd", hidden, k, weight, tiles)
        precision = _precision(weight.dtype)
        grid = (triton.cdiv(n, cfg["BLOCK_N"]), triton.cdiv(hidden, cfg["BLOCK_H"]))
        with _device_guard(u):
            _chebyshev_fwd_kernel[grid](
                u, weight, bias if bias is not None else weight, out, n, hidden, k,
                weight.stride(0), weight.stride(1), out.stride(0), out.stride(1),
                HAS_BIAS=bias is not None, BLOCK_N=cfg["BLOCK_N"], BLOCK_H=cfg["BLOCK_H"], K_TILE=cfg["K_TILE"],
                SUB=cfg["SUB"], PRECISION=precision, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
            )
        ctx.save_for_backward(u, weight)
        ctx.tiles = tiles
        ctx.precision = precision
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, dout):
        u, weight = ctx.saved_tensors
        with _device_guard(u):
            du, dweight = _grad_u_weight(ctx, u, weight, dout)
        dbias = None
        if ctx.has_bias and ctx.needs_input_grad[2]:
            dbias = dout.float().sum(0).to(weight.dtype)
        return du, dweight, dbias, None


def _grad_u_weight(ctx, u, weight, dout):
    """du (fp32 accumulation, cast to u's dtype) and dweight from the two backward kernels, as needed."""
    n = u.shape[0]
    hidden, k = weight.shape
    du = dweight = None
    if ctx.needs_input_grad[0]:
        cfg = _tiles("bwd_du", hidden, k, weight, ctx.tiles)
        du32 = torch.empty(n, device=u.device, dtype=torch.float32)
        _chebyshev_bwd_du_kernel[(triton.cdiv(n, cfg["BLOCK_N"]),)](
            u, weight, dout, du32, n, hidden, k,
            weight.stride(0), weight.stride(1), dout.stride(0), dout.stride(1),
            BLOCK_N=cfg["BLOCK_N"], BLOCK_H=cfg["BLOCK_H"], K_TILE=cfg["K_TILE"], SUB=cfg["SUB"],
            PRECISION=ctx.precision, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        )
        du = du32.to(u.dtype)
    if ctx.needs_input_grad[1]:
        cfg = _tiles("bwd_dw", hidden, k, weight, ctx.tiles)
        splits = max(1, min(cfg["splits"], triton.cdiv(n, cfg["BLOCK_N"])))
        rows_per_split = triton.cdiv(triton.cdiv(n, splits), cfg["BLOCK_N"]) * cfg["BLOCK_N"]
        splits = triton.cdiv(n, rows_per_split)
        partial = torch.empty((splits, k, hidden), device=u.device, dtype=torch.float32)
        grid = (triton.cdiv(hidden, cfg["BLOCK_H"]), triton.cdiv(k, cfg["K_TILE"]), splits)
        _chebyshev_bwd_dw_kernel[grid](
            u, dout, partial, n, hidden, k, rows_per_split, dout.stride(0), dout.stride(1),
            BLOCK_N=cfg["BLOCK_N"], BLOCK_H=cfg["BLOCK_H"], K_TILE=cfg["K_TILE"], SUB=cfg["SUB"],
            PRECISION=ctx.precision, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        )
        dweight = partial.sum(0).t().to(weight.dtype)  # deterministic reduction of the splits
    return du, dweight


def chebyshev_project_triton(
    u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, tiles: dict | None = None
) -> torch.Tensor:
    """The fused Triton path of `chebyshev_project` (any device Triton runs on; CPU only under TRITON_INTERPRET).

    u: [N] float (expected in [-1, 1]); weight: [hidden, K]; bias: [hidden] or None -> [N, hidden] in
    weight's dtype. `tiles` overrides the launch configuration (tests use it to get several K tiles).
    """
    if not HAS_TRITON:
        raise RuntimeError("chebyshev_project_triton needs triton")
    if u.dim() != 1 or weight.dim() != 2 or (bias is not None and bias.shape != (weight.shape[0],)):
        raise ValueError(
            f"expected u [N], weight [hidden, K], bias [hidden]; got {tuple(u.shape)}, {tuple(weight.shape)}, "
            f"{None if bias is None else tuple(bias.shape)}"
        )
    if u.shape[0] == 0:
        return weight.new_zeros((0, weight.shape[0]))
    u = u.contiguous()
    bias = bias.contiguous().to(weight.dtype) if bias is not None else None
    return ChebyshevProjectFunction.apply(u, weight, bias, tiles)


def chebyshev_project(
    u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, reference: Callable
) -> torch.Tensor:
    """chebyshev_expand(u, K) (flattened over the M coordinates) @ weight.T + bias: u [N] or [N, M] float,
    weight [hidden, M * K], bias [hidden] | None -> [N, hidden].

    The one place that chooses between the fused Triton kernels and `reference`, the PyTorch function of the same
    contract (the model passes its own, ``modeling_tan.chebyshev_project_reference``). The kernels run on CUDA
    tensors (or on any tensors with HF_ATTN_FORCE_TRITON=1) where every kernel the call runs has a launch
    configuration for the GPU (``launch_configs.chebyshev_config``; known beforehand, so a kernel that could not
    launch is never launched); they take one coordinate at a time, so M coordinates are M fused calls summed.
    Elsewhere `reference` runs on the whole input (one matmul), saying once per GPU / dtype / shape when it is a
    fallback.
    """
    m = 1 if u.dim() == 1 else u.shape[1]
    k = weight.shape[1] // m
    if not _fused_applies(u, weight[:, :k], bias):
        return reference(u, weight, bias)
    if u.dim() == 1:
        return chebyshev_project_triton(u, weight, bias)
    out = chebyshev_project_triton(u[:, 0].contiguous(), weight[:, :k].contiguous(), bias)
    for j in range(1, m):
        out = out + chebyshev_project_triton(u[:, j].contiguous(), weight[:, j * k : (j + 1) * k].contiguous(), None)
    return out


def _fused_applies(u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether the fused kernels run for one coordinate's (u, weight [hidden, K], bias); reports a fallback once."""
    on_triton = u.is_cuda or os.environ.get("HF_ATTN_FORCE_TRITON", "0") == "1"
    if not (HAS_TRITON and on_triton):
        return False
    backward = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (u, weight, bias))
    if fused_fits(weight, backward):
        return True
    _report_fallback(weight)
    return False


def _report_fallback(weight: torch.Tensor) -> None:
    where = "sm_{}{}".format(*torch.cuda.get_device_capability(weight.device)) if weight.is_cuda else "this device"
    key = (where, weight.dtype, tuple(weight.shape))
    if key not in _REPORTED:
        _REPORTED.add(key)
        logger.warning(
            "chebyshev_project: no launch configuration of the fused Triton kernels fits %s at %s, hidden=%d, "
            "K=%d; using the PyTorch reference (same result, more memory).",
            where, str(weight.dtype).replace("torch.", ""), weight.shape[0], weight.shape[1],
        )
