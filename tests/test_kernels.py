"""Triton kernels vs their PyTorch references: forward and gradients of every input and parameter.

Without a GPU the kernels run under the Triton interpreter (TRITON_INTERPRET=1, set here before the kernel
modules are (re)built), which is slow, so shapes are tiny and the kernels use 16-wide blocks, giving several
blocks (and ragged edges: T not a multiple of 16) per test. Each test draws fresh random inputs (no fixed seed:
a failure prints its inputs' shapes and the error), and every buffer the kernels allocate with torch.empty /
empty_like is poisoned with NaN, so an element a kernel forgot to write fails the comparison.

fp32 tolerance: relative 1e-4 (max abs error / max abs reference). The heavy matrix of cases is marked slow.
"""

from __future__ import annotations

import importlib
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # before the kernel modules are built (see _kernel_modules)

triton = pytest.importorskip("triton")

from hf_attn.attention.blockwise_backend import blockwise_attention_forward  # noqa: E402
from hf_attn.modeling.distance_masks import alibi_distance_bias, alibi_slopes  # noqa: E402
from hf_attn.modeling.layers import eager_attention_forward  # noqa: E402

pytestmark = pytest.mark.triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
RTOL = 1e-4


def _kernel_modules():
    """The kernel modules, rebuilt under the interpreter if something imported them before TRITON_INTERPRET
    was set (triton.jit decides interpreted vs compiled when the decorator runs)."""
    mods = []
    for name in ("hf_attn.kernels.flash_attention", "hf_attn.kernels.chebyshev"):
        mod = importlib.import_module(name)
        kernel = getattr(mod, "_flash_fwd_kernel", None) or mod._chebyshev_fwd_kernel
        if DEVICE == "cpu" and type(kernel).__name__ != "InterpretedFunction":
            mod = importlib.reload(mod)
        mods.append(mod)
    return mods


fa, cheb = _kernel_modules()


@pytest.fixture(autouse=True)
def poisoned_empty(monkeypatch):
    """torch.empty / empty_like return NaN-filled float tensors while a test runs."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def poison(t):
        if t.is_floating_point():
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: poison(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: poison(real_empty_like(*a, **k)))


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want| (NaN anywhere in `got` gives inf)."""
    if not torch.isfinite(got).all():
        return float("inf")
    return ((got.float() - want.float()).abs().max() / want.float().abs().max().clamp_min(1e-12)).item()


class _Attn(torch.nn.Module):
    def __init__(self, is_causal: bool):
        super().__init__()
        self.is_causal = is_causal


# -------------------------------------------------------------------------------------------------------------
# Flash attention
# -------------------------------------------------------------------------------------------------------------


def reference_attention(q, k, v, *, scaling, is_causal, key_padding_mask, table, max_distance, window):
    """eager_attention_forward with the window / max_distance folded into a dense boolean mask."""
    q_len, k_len = q.shape[2], k.shape[2]
    d = (torch.arange(k_len - q_len, k_len)[:, None] - torch.arange(k_len)[None, :]).to(q.device)
    allowed = torch.ones_like(d, dtype=torch.bool)
    if is_causal or table is not None or max_distance is not None:
        allowed &= d >= 0
    if max_distance is not None:
        allowed &= d < max_distance
    if window is not None:
        allowed &= (d < window) if is_causal else (d.abs() < window)
    if table is not None:
        allowed &= d < table.shape[1]
    mask = allowed[None, None].expand(q.shape[0], 1, q_len, k_len)
    if key_padding_mask is not None:
        mask = mask & key_padding_mask[:, None, None, :]
    # Bias as a dense additive term so -inf entries of the table exclude exactly as in the kernel.
    bias = None
    if table is not None:
        bias = table[:, d.clamp(0, table.shape[1] - 1)][None]
    out, _ = eager_attention_forward(_Attn(False), q, k, v, mask, scaling, position_bias=bias)
    # Queries that see no key: the kernels return zeros (eager's finfo.min mask would average instead).
    visible = mask if bias is None else mask & (bias > float("-inf"))  # [B, 1|H, Tq, Tk]
    seen = visible.any(-1).expand(-1, q.shape[1], -1)  # [B, H, Tq]
    return out * seen.transpose(1, 2)[..., None]


def make_inputs(b, h, hkv, q_len, k_len, d, *, dtype=torch.float32, padding=False, table_len=None, neg_inf=False):
    q = torch.randn(b, h, q_len, d, device=DEVICE, dtype=dtype)
    k = torch.randn(b, hkv, k_len, d, device=DEVICE, dtype=dtype)
    v = torch.randn(b, hkv, k_len, d, device=DEVICE, dtype=dtype)
    mask = None
    if padding:  # random right padding that keeps at least half of each sequence
        lengths = torch.randint(k_len // 2, k_len + 1, (b,))
        lengths[0] = k_len - 3
        mask = (torch.arange(k_len)[None, :] < lengths[:, None]).to(DEVICE)
    table = None
    if table_len is not None:
        table = torch.randn(h, table_len, device=DEVICE)
        if neg_inf:  # excluded distances inside the table (but never d = 0, so every query sees a key)
            table[:, 3] = float("-inf")
            table[0, 7:9] = float("-inf")
    return q, k, v, mask, table


def check_flash(b, h, hkv, q_len, k_len, d, *, is_causal, padding=False, table_len=None, neg_inf=False,
                max_distance=None, window=None, scaling=0.37, block_m=16, block_n=16, tol=RTOL):
    q, k, v, mask, table = make_inputs(b, h, hkv, q_len, k_len, d, padding=padding, table_len=table_len,
                                       neg_inf=neg_inf)
    leaves = [q, k, v] + ([table] if table is not None else [])
    for t in leaves:
        t.requires_grad_(True)
    kw = dict(scaling=scaling, is_causal=is_causal, key_padding_mask=mask, max_distance=max_distance, window=window)
    out = fa.flash_attention(q, k, v, distance_bias=table, block_m=block_m, block_n=block_n, **kw)
    ref = reference_attention(q, k, v, table=table, **kw)
    case = f"{b=} {h=} {hkv=} {q_len=} {k_len=} {d=} {kw} table_len={table_len} blocks={block_m}x{block_n}"
    assert out.shape == ref.shape
    assert rel_err(out, ref) < tol, f"forward: {rel_err(out, ref)} for {case}"

    grad_out = torch.randn_like(ref)
    got = torch.autograd.grad(out, leaves, grad_out)
    want = torch.autograd.grad(ref, leaves, grad_out)
    for name, g, w in zip(["dq", "dk", "dv", "d_table"][: len(leaves)], got, want, strict=True):
        assert rel_err(g, w) < tol, f"{name}: {rel_err(g, w)} for {case}"
    return got


def test_flash_causal_padding_gqa_bias_max_distance():
    """The AdaptiveSpanGPT combination: causal, GQA, padding, a bias table with -inf entries, max_distance."""
    check_flash(2, 4, 2, 37, 37, 16, is_causal=True, padding=True, table_len=30, neg_inf=True, max_distance=21)


@pytest.mark.parametrize("block_m,block_n", [(32, 16), (16, 32)])
def test_flash_unequal_blocks_table_gradient(block_m, block_n):
    """Query and key blocks of different sizes: the table gradient's diagonal window (a power of two above
    BLOCK_M + BLOCK_N) is carried across key tiles without dropping or double-counting a distance."""
    check_flash(1, 2, 1, 45, 45, 16, is_causal=True, padding=True, table_len=40, neg_inf=True, max_distance=37,
                block_m=block_m, block_n=block_n)


def test_flash_table_gradient_is_deterministic():
    """The table gradient is summed from per-block buffer rows in a fixed order: bitwise equal across runs."""
    q, k, v, _, table = make_inputs(1, 2, 2, 40, 40, 16, table_len=40)
    table.requires_grad_(True)
    grads = []
    for _ in range(2):
        out = fa.flash_attention(q, k, v, is_causal=True, distance_bias=table, block_m=16, block_n=16)
        grads.append(torch.autograd.grad(out.square().sum(), [table])[0])
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("setting,precision,tol", [("highest", "ieee", RTOL), ("high", "tf32", 2e-3)])
def test_flash_fp32_follows_matmul_precision(setting, precision, tol):
    """fp32 dots follow torch.get_float32_matmul_precision(): IEEE at "highest", TF32 when the user allows it
    ("high" / "medium"); each checked at its own tolerance (the interpreter computes dots in fp32 either way;
    the ahead-of-time test checks the TF32 tensor-core instructions on real targets)."""
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(setting)
    try:
        assert fa._precision(torch.float32) == precision
        assert cheb._precision(torch.float32) == precision
        assert fa._precision(torch.float16) == "tf32"  # ignored by fp16/bf16 dots
        check_flash(1, 2, 1, 20, 20, 16, is_causal=True, table_len=20, tol=tol)
        check_chebyshev(20, 16, 12, tol=tol)
    finally:
        torch.set_float32_matmul_precision(old)


def test_flash_bidirectional_window_decoding():
    """Bidirectional sliding window with queries the last Tq of Tk keys; head dim not a power of two."""
    check_flash(1, 2, 1, 19, 41, 24, is_causal=False, window=9)


@pytest.mark.slow
@pytest.mark.parametrize("is_causal", [True, False])
@pytest.mark.parametrize("hkv", [1, 3])
@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize("window", [None, 7])
def test_flash_matrix(is_causal, hkv, padding, window):
    check_flash(2, 3, hkv, 29, 29, 16, is_causal=is_causal, padding=padding, window=window)


@pytest.mark.slow
@pytest.mark.parametrize("q_len,k_len", [(1, 33), (17, 50), (48, 48)])
@pytest.mark.parametrize("table_len,max_distance", [(10, None), (64, 13), (64, None)])
def test_flash_distance_bias(q_len, k_len, table_len, max_distance):
    check_flash(1, 2, 1, q_len, k_len, 16, is_causal=True, table_len=table_len, neg_inf=True,
                max_distance=max_distance)


@pytest.mark.slow
def test_flash_gradients_reach_alibi_span_and_triangle_parameters():
    """Tables built from parameters (ALiBi slopes; AdaptiveSpanGPT's span and triangle-wave masks as a log-mask)
    get the same gradients through the kernel as through the dense reference."""
    from hf_attn.modeling.modeling_adaptive_span_gpt import AdaptiveSpanMask, TriangleWaveMask, safe_log

    h, t = 2, 40
    q, k, v, _, _ = make_inputs(1, h, h, t, t, 16)
    slopes = alibi_slopes(h).to(DEVICE).requires_grad_(True)
    span = AdaptiveSpanMask(h, max_span=t, softness=8.0, init_ratio=0.3).to(DEVICE)
    with torch.no_grad():
        span.span_logit.copy_(torch.tensor([-2.0, 0.5]))
    triangle = TriangleWaveMask(h, period_min=2.0, period_max=8.0, fourier_terms=4).to(DEVICE)
    with torch.no_grad():
        triangle.period_logit.normal_()
        triangle.offset_logit.normal_()
    params = [slopes, span.span_logit, triangle.period_logit, triangle.offset_logit]
    grads = []
    for attention in ("kernel", "reference"):
        max_distance = span.max_distance()
        dist = torch.arange(max_distance, device=DEVICE, dtype=torch.float32)
        table = safe_log(span(dist) * triangle(dist)) + alibi_distance_bias(slopes, max_distance)
        if attention == "kernel":
            out = fa.flash_attention(q, k, v, is_causal=True, distance_bias=table, max_distance=max_distance,
                                     block_m=16, block_n=16)
        else:
            out = reference_attention(q, k, v, scaling=16**-0.5, is_causal=True, key_padding_mask=None,
                                      table=table, max_distance=None, window=None)
        loss = (out * torch.linspace(-1, 1, 16, device=DEVICE)).sum()
        grads.append(torch.autograd.grad(loss, params))
    for name, g, w in zip(["slopes", "span", "period", "offset"], *grads, strict=True):
        assert w.abs().max() > 0, name
        assert rel_err(g, w) < RTOL, name


def test_flash_skips_blocks_outside_the_band():
    """Keys in blocks no query of a block can see are never read: NaN there does not reach those outputs."""
    t, window = 64, 8  # 16-wide blocks: query blocks >= 32 never visit key block [0, 16)
    q, k, v, _, _ = make_inputs(1, 2, 2, t, t, 16)
    k_bad, v_bad = k.clone(), v.clone()
    k_bad[:, :, :16] = float("nan")
    v_bad[:, :, :16] = float("nan")
    q.requires_grad_(True)
    for kw in (dict(window=window), dict(distance_bias=torch.zeros(2, t, device=DEVICE), max_distance=window)):
        out = fa.flash_attention(q, k_bad, v_bad, is_causal=True, block_m=16, block_n=16, **kw)
        ref = fa.flash_attention(q, k, v, is_causal=True, block_m=16, block_n=16, **kw)
        assert torch.isfinite(out[:, 32:]).all()
        assert rel_err(out[:, 32:], ref[:, 32:]) == 0.0
        (dq,) = torch.autograd.grad(out[:, 32:].sum(), [q])
        assert torch.isfinite(dq[:, :, 32:]).all()


def test_flash_query_without_visible_keys_gets_zeros():
    q, k, v, _, _ = make_inputs(1, 1, 1, 20, 20, 16)
    mask = torch.ones(1, 20, dtype=torch.bool, device=DEVICE)
    mask[:, :5] = False  # left padding: queries 0..4 see nothing under causality
    q.requires_grad_(True)
    out = fa.flash_attention(q, k, v, is_causal=True, key_padding_mask=mask, block_m=16, block_n=16)
    assert torch.equal(out[:, :5], torch.zeros_like(out[:, :5]))
    (dq,) = torch.autograd.grad(out.sum(), [q])
    assert torch.equal(dq[:, :, :5], torch.zeros_like(dq[:, :, :5]))


@pytest.mark.slow
def test_flash_fp16_forward():
    q, k, v, mask, table = make_inputs(1, 2, 1, 33, 33, 16, dtype=torch.float16, padding=True, table_len=40)
    out = fa.flash_attention(q, k, v, is_causal=True, key_padding_mask=mask, distance_bias=table,
                             block_m=16, block_n=16)
    ref = reference_attention(q.float(), k.float(), v.float(), scaling=0.25, is_causal=True, key_padding_mask=mask,
                              table=table, max_distance=None, window=None)
    assert out.dtype == torch.float16
    assert rel_err(out, ref) < 1e-2


@pytest.mark.skipif(DEVICE == "cpu", reason="the Triton interpreter computes bf16 tl.dot wrongly (a 16x16 bf16 "
                    "dot is off by ~1e10 under TRITON_INTERPRET=1 with triton 3.9); runs on CUDA")
def test_flash_bf16_forward():
    q, k, v, mask, _ = make_inputs(2, 4, 2, 100, 100, 64, dtype=torch.bfloat16, padding=True)
    out = fa.flash_attention(q, k, v, is_causal=True, key_padding_mask=mask)
    ref = reference_attention(q.float(), k.float(), v.float(), scaling=0.125, is_causal=True, key_padding_mask=mask,
                              table=None, max_distance=None, window=None)
    assert out.dtype == torch.bfloat16
    assert rel_err(out, ref) < 2e-2


# -------------------------------------------------------------------------------------------------------------
# hf_blockwise dispatch
# -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("force_triton", [False, True])
def test_hf_blockwise_equals_eager(monkeypatch, force_triton):
    """hf_blockwise (blockwise off CUDA, or the forced Triton kernel) equals eager, with a [B, Tk] padding mask and
    a distance bias table reaching it through the `accepts_distance_bias` seam."""
    if force_triton:
        monkeypatch.setenv("HF_ATTN_FORCE_TRITON", "1")
    assert blockwise_attention_forward.accepts_distance_bias
    q, k, v, mask, table = make_inputs(2, 4, 2, 23, 23, 16, padding=True, table_len=30, neg_inf=True)
    module = _Attn(is_causal=True).eval()
    out, weights = blockwise_attention_forward(module, q, k, v, mask, 0.25, distance_bias=table, max_distance=30)
    ref, _ = eager_attention_forward(module, q, k, v, mask, 0.25, distance_bias=table)
    assert weights is None
    assert rel_err(out, ref) < RTOL

    # A 4D mask falls back to the dense reference and still agrees.
    bool4d = torch.ones(2, 1, 23, 23, dtype=torch.bool, device=DEVICE).tril() & mask[:, None, None, :]
    out4d, _ = blockwise_attention_forward(module, q, k, v, bool4d, 0.25)
    ref4d, _ = eager_attention_forward(module, q, k, v, mask, 0.25)
    assert rel_err(out4d, ref4d) < RTOL


def test_hf_blockwise_on_cpu_takes_sdpa_when_nothing_can_be_skipped(monkeypatch):
    """Off CUDA, a call with no table, window or max_distance (causal with Tq == Tk) runs torch's fused SDPA, the
    same function as eager; anything with keys to skip still runs the blockwise core."""
    from hf_attn.attention import blockwise, blockwise_backend

    monkeypatch.delenv("HF_ATTN_FORCE_TRITON", raising=False)
    calls = []
    monkeypatch.setattr(blockwise_backend, "blockwise_attention",
                        lambda *a, **k: calls.append(k) or blockwise.blockwise_attention(*a, **k))
    inputs = make_inputs(2, 4, 2, 23, 23, 16, padding=True, table_len=30, neg_inf=True)
    q, k, v, mask, table = (t.cpu() for t in inputs)
    module = _Attn(is_causal=True).eval()
    out, _ = blockwise_attention_forward(module, q, k, v, mask, 0.25)
    assert calls == []
    assert rel_err(out, eager_attention_forward(module, q, k, v, mask, 0.25)[0]) < RTOL
    blockwise_attention_forward(module, q, k, v, mask, 0.25, distance_bias=table, max_distance=30)
    blockwise_attention_forward(module, q[:, :, -5:], k, v, mask, 0.25)  # decoding: Tq < Tk
    assert len(calls) == 2


def test_hf_blockwise_routes_by_architecture():
    """Below sm_80 exact attention goes to SDPA (or blockwise when SDPA computes another function); from sm_80
    the kernel, unless no launch configuration fits, then blockwise: decided before any launch."""
    from hf_attn.attention.blockwise_backend import choose_path

    assert choose_path((7, 5), kernel_fits=True, sdpa_ok=True) == "sdpa"
    assert choose_path((7, 5), kernel_fits=True, sdpa_ok=False) == "blockwise"
    assert choose_path((8, 0), kernel_fits=True, sdpa_ok=True) == "triton"
    assert choose_path((9, 0), kernel_fits=False, sdpa_ok=True) == "blockwise"
    assert choose_path(None, kernel_fits=True, sdpa_ok=False) == "triton"  # forced onto the interpreter
    assert fa.kernel_fits(torch.zeros(1, 1, 1, 512), has_bias=True, backward=True)  # off CUDA: interpreter


@pytest.mark.parametrize("is_causal,hkv,left_pad", [(True, 2, True), (False, 1, False)])
def test_sdpa_path_equals_eager(is_causal, hkv, left_pad):
    """The SDPA route (GPUs below sm_80) computes what the kernel computes: padding, GQA, and zeros (with zero
    gradients, no NaN) for a query that sees no key."""
    from hf_attn.attention.blockwise_backend import sdpa_attention

    q, k, v, mask, _ = make_inputs(2, 4, hkv, 21, 21, 16, padding=True)
    if left_pad:
        mask[0, :4] = False
    for t in (q, k, v):
        t.requires_grad_(True)
    out = sdpa_attention(q, k, v, scaling=0.3, is_causal=is_causal, key_padding_mask=mask)
    ref = reference_attention(q, k, v, scaling=0.3, is_causal=is_causal, key_padding_mask=mask, table=None,
                              max_distance=None, window=None)
    assert rel_err(out, ref) < RTOL
    grad_out = torch.randn_like(ref)
    got, want = torch.autograd.grad(out, [q, k, v], grad_out), torch.autograd.grad(ref, [q, k, v], grad_out)
    for g, w in zip(got, want, strict=True):
        assert rel_err(g, w) < RTOL


# -------------------------------------------------------------------------------------------------------------
# Chebyshev projection
# -------------------------------------------------------------------------------------------------------------


def chebyshev_reference(u, weight, bias):
    """The PyTorch reference (the one in modeling_tan, which TAN's remote code also uses)."""
    from hf_attn.modeling.modeling_tan import chebyshev_project_reference

    return chebyshev_project_reference(u, weight, bias)


def check_chebyshev(n, hidden, k, *, bias=True, tiles=None, dtype=torch.float32, tol=RTOL):
    u = (torch.rand(n, device=DEVICE) * 2 - 1).requires_grad_(True)
    weight = (torch.randn(hidden, k, device=DEVICE) / k**0.5).to(dtype).requires_grad_(True)
    b = torch.randn(hidden, device=DEVICE, dtype=dtype).requires_grad_(True) if bias else None
    leaves = [u, weight] + ([b] if bias else [])
    out = cheb.chebyshev_project_triton(u, weight, b, tiles)
    ref = chebyshev_reference(u, weight.float(), None if b is None else b.float())
    case = f"{n=} {hidden=} {k=} {bias=} {tiles} {dtype}"
    assert out.shape == (n, hidden) and out.dtype == dtype
    assert rel_err(out, ref) < tol, f"forward {rel_err(out, ref)} {case}"
    if dtype != torch.float32:
        return
    grad_out = torch.randn_like(ref)
    got = torch.autograd.grad(out, leaves, grad_out)
    want = torch.autograd.grad(ref, leaves, grad_out, allow_unused=True)
    for name, g, w in zip(["du", "dweight", "dbias"][: len(got)], got, want, strict=True):
        w = torch.zeros_like(g) if w is None else w  # K = 1: the output does not depend on u
        assert (g - w).abs().max() <= tol * w.abs().max().clamp_min(1.0), f"{name} {case}"


def test_chebyshev_forward_backward():
    check_chebyshev(37, 24, 12)


def test_chebyshev_several_k_tiles_and_row_splits():
    check_chebyshev(45, 20, 40, bias=False, tiles=dict(BLOCK_N=16, BLOCK_H=16, K_TILE=16, SUB=4, num_warps=1,
                                                       splits=3))


@pytest.mark.slow
@pytest.mark.parametrize("n,hidden,k", [(1, 16, 1), (7, 16, 2), (50, 40, 33), (64, 33, 70)])
def test_chebyshev_shapes(n, hidden, k):
    check_chebyshev(n, hidden, k)


@pytest.mark.slow
def test_chebyshev_fp16_forward():
    check_chebyshev(40, 32, 24, dtype=torch.float16, tol=1e-2)


def test_chebyshev_dispatch_on_cpu_uses_reference(monkeypatch):
    """Off CUDA (no HF_ATTN_FORCE_TRITON) `chebyshev_project` is the reference it is given."""
    monkeypatch.delenv("HF_ATTN_FORCE_TRITON", raising=False)
    u = torch.rand(10) * 2 - 1
    weight, bias = torch.randn(8, 5), torch.randn(8)
    fused = cheb.chebyshev_project(u, weight, bias, reference=chebyshev_reference)
    assert torch.equal(fused, chebyshev_reference(u, weight, bias))


def test_chebyshev_dispatch_falls_back_when_no_config_fits(monkeypatch, caplog):
    """Where no launch configuration fits, `chebyshev_project` takes the reference path (never launches) and
    says so once."""
    monkeypatch.setenv("HF_ATTN_FORCE_TRITON", "1")
    monkeypatch.setattr(cheb, "fused_fits", lambda weight, backward: False)
    monkeypatch.setattr(cheb, "_REPORTED", set())
    monkeypatch.setattr(cheb, "chebyshev_project_triton", None)  # calling it would raise
    u = torch.rand(10) * 2 - 1
    weight, bias = torch.randn(8, 5), torch.randn(8)
    with caplog.at_level("WARNING", logger=cheb.__name__):
        for _ in range(3):
            fused = cheb.chebyshev_project(u, weight, bias, reference=chebyshev_reference)
    assert torch.equal(fused, chebyshev_reference(u, weight, bias))
    assert sum("PyTorch reference" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("is_causal,window,table_len,q_len", [
    (True, 9, 30, 37),
    pytest.param(True, None, None, 37, marks=pytest.mark.slow),
    pytest.param(False, 9, None, 37, marks=pytest.mark.slow),
    pytest.param(True, None, None, 5, marks=pytest.mark.slow),
])
def test_flash_softcap_and_sinks_equal_eager(is_causal, window, table_len, q_len):
    """Soft-capping (tanh before the table and the masks; dQ and dK through 1 - tanh^2) and attention sinks (the
    running softmax starts from the sink; the sink's gradient from lse and delta), with GQA, padding, a window,
    a table whose gradient is taken after the cap, and decoding-style queries (Tq < Tk)."""
    q, k, v, mask, table = make_inputs(2, 4, 2, q_len, 37, 16, padding=True, table_len=table_len)
    sinks = torch.randn(4, device=DEVICE) * 2
    leaves = [q, k, v, sinks] + ([table] if table is not None else [])
    for t in leaves:
        t.requires_grad_(True)
    out = fa.flash_attention(q, k, v, scaling=0.37, is_causal=is_causal, key_padding_mask=mask, window=window,
                             distance_bias=table, softcap=1.5, sinks=sinks, block_m=16, block_n=16)
    d = (torch.arange(37 - q_len, 37)[:, None] - torch.arange(37)[None, :]).to(DEVICE)
    dense = fa.band(is_causal, window, None, table_len).allows(d)[None, None] & mask[:, None, None, :]
    bias = None if table is None else table[:, d.clamp(0, table_len - 1)][None]
    ref, _ = eager_attention_forward(_Attn(False), q, k, v, dense, 0.37, position_bias=bias, softcap=1.5,
                                     s_aux=sinks)
    assert rel_err(out, ref) < RTOL
    grad_out = torch.randn_like(ref)
    got = torch.autograd.grad(out, leaves, grad_out)
    want = torch.autograd.grad(ref, leaves, grad_out)
    for name, g, w in zip(["dq", "dk", "dv", "d_sinks", "d_table"], got, want, strict=False):
        assert rel_err(g, w) < RTOL, (name, rel_err(g, w))
