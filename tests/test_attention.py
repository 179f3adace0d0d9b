"""Attention backends against their plain references: forward and gradients, masks, GQA, odd lengths.

Shapes are tiny so the file runs in seconds on a 2-core CPU. Every fast path is compared with the reference of
the *same* function (hf_local/hf_linear/hf_topk are different functions from softmax attention; the blockwise
core is exact softmax and is compared with eager).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AttentionInterface

import hf_attn  # noqa: F401  (registers the hf_* backends)
from hf_attn.attention import blockwise
from hf_attn.attention.blockwise import blockwise_attention
from hf_attn.attention.linear import linear_attention_forward, linear_attention_reference
from hf_attn.attention.local import local_attention_forward, local_attention_reference
from hf_attn.attention.topk import topk_attention_forward, topk_attention_reference
from hf_attn.kernels.band import Band, band, distances, pair_mask
from hf_attn.modeling.distance_masks import AdaptiveSpanMask, alibi_distance_bias, alibi_slopes, safe_log
from hf_attn.modeling.layers import dense_distance_bias, eager_attention_forward, repeat_kv


class Attn(nn.Module):
    """Stand-in for a model's attention module: what backends read from `module`."""

    def __init__(self, is_causal: bool, **settings):
        super().__init__()
        self.is_causal = is_causal
        self.config = type("Config", (), settings)()
        self.eval()


def qkv(b=2, h=4, hkv=2, tq=19, tk=19, d=8, dtype=torch.float32, seed=0):
    """Fresh random query [B, H, Tq, D], key/value [B, Hkv, Tk, D], all requiring grad."""
    g = torch.Generator().manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=g).to(dtype).requires_grad_()  # noqa: E731
    return make(b, h, tq, d), make(b, hkv, tk, d), make(b, hkv, tk, d)


def padding(b, tk, n_pad=4):
    """[B, Tk] bool key padding: the last batch row has its last `n_pad` keys padded (right padding keeps every
    query with at least one visible key, so eager's fully-masked-row convention never matters)."""
    mask = torch.ones(b, tk, dtype=torch.bool)
    mask[-1, tk - n_pad :] = False
    return mask


def bias_table(h=4, length=12, seed=1):
    """A distance bias table [H, L] with one -inf entry (head 1 never attends at distance 3)."""
    table = torch.randn(h, length, generator=torch.Generator().manual_seed(seed))
    table[1, 3] = float("-inf")
    return table.requires_grad_()


def assert_same(fast, ref, inputs, rtol=1e-5, atol=1e-5):
    """Forward outputs equal, and gradients of a random projection of them equal for every input."""
    torch.testing.assert_close(fast, ref, rtol=rtol, atol=atol)
    probe = torch.randn(ref.shape, generator=torch.Generator().manual_seed(7))
    grads_fast = torch.autograd.grad((fast * probe).sum(), inputs, retain_graph=True)  # a shared table graph
    grads_ref = torch.autograd.grad((ref * probe).sum(), inputs)
    for gf, gr in zip(grads_fast, grads_ref, strict=True):
        torch.testing.assert_close(gf, gr, rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------------------------------------------
# The blockwise core (exact softmax) against eager
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("case", ["plain", "padding", "distance_bias", "max_distance", "decode"])
def test_blockwise_matches_eager(causal, case):
    tq = 13 if case == "decode" else 37  # odd lengths, not multiples of the block size
    q, k, v = qkv(tq=tq, tk=37)
    mask = padding(2, 37) if case in ("padding", "max_distance") else None
    table = bias_table() if case in ("distance_bias", "max_distance") else None
    max_distance = 7 if case == "max_distance" else None
    inputs = (q, k, v) if table is None else (q, k, v, table)

    fast, weights = blockwise_attention(
        q, k, v, scaling=0.3, is_causal=causal, key_padding_mask=mask,
        distance_bias=table, max_distance=max_distance, block_size=8,
    )
    ref_table = None if table is None else table[:, :max_distance]  # max_distance == cutting the table
    ref, _ = eager_attention_forward(Attn(causal), q, k, v, mask, scaling=0.3, distance_bias=ref_table)
    assert weights is None
    assert_same(fast, ref, inputs)


def test_blockwise_fully_masked_rows_are_zero():
    q, k, v = qkv(b=1, tq=9, tk=9)
    mask = torch.zeros(1, 9, dtype=torch.bool)
    mask[0, 5:] = True  # causal queries 0..4 see no real key
    out, _ = blockwise_attention(q, k, v, scaling=0.3, is_causal=True, key_padding_mask=mask, block_size=4)
    assert torch.equal(out[0, :5], torch.zeros_like(out[0, :5]))
    assert out[0, 5:].abs().sum() > 0


def test_blockwise_dense_masks_match_eager():
    """4D bool / additive masks and a dense position_bias (what a direct caller may hand over)."""
    q, k, v = qkv(tq=21, tk=21)
    allowed = torch.rand(2, 1, 21, 21, generator=torch.Generator().manual_seed(3)) > 0.3
    allowed |= torch.eye(21, dtype=torch.bool)  # every row sees at least one key
    position_bias = torch.randn(1, 4, 21, 21)
    ref, _ = eager_attention_forward(Attn(False), q, k, v, allowed, scaling=0.3, position_bias=position_bias)
    for mask in (allowed, torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)):
        out, _ = blockwise_attention(
            q, k, v, scaling=0.3, is_causal=False, attn_mask=mask, position_bias=position_bias, block_size=8
        )
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_blockwise_skips_blocks_outside_window(causal):
    """Keys no query can see are never read: poisoning them with NaN changes nothing, and few blocks are visited."""
    q, k, v = qkv(b=1, tq=8, tk=64)  # decoding: the 8 queries sit at key positions 56..63
    window = 6
    clean, _ = blockwise_attention(q, k, v, scaling=0.3, is_causal=causal, window=window, block_size=8)
    k_bad, v_bad = k.detach().clone(), v.detach().clone()
    k_bad[:, :, : 56 - window + 1] = float("nan")  # positions < 51 are outside every query's window
    v_bad[:, :, : 56 - window + 1] = float("nan")
    poisoned, _ = blockwise_attention(q, k_bad, v_bad, scaling=0.3, is_causal=causal, window=window, block_size=8)
    torch.testing.assert_close(poisoned, clean)
    # keys 51..63: one slab step (causal) or, bidirectional, one call over two key blocks (the per-block path:
    # the slab would take 5 more keys than it needs); the 51 keys before are never read
    assert blockwise.BLOCKS_VISITED == (1 if causal else 2)

    # The same through max_distance and through the length of a distance bias table.
    table = bias_table(length=window)
    clean, _ = blockwise_attention(q, k, v, scaling=0.3, is_causal=causal, distance_bias=table, block_size=8)
    poisoned, _ = blockwise_attention(q, k_bad, v_bad, scaling=0.3, is_causal=causal, distance_bias=table, block_size=8)
    torch.testing.assert_close(poisoned, clean)
    poisoned, _ = blockwise_attention(q, k_bad, v_bad, scaling=0.3, is_causal=causal, max_distance=window, block_size=8)
    assert torch.isfinite(poisoned).all()


def test_blockwise_window_cost_is_linear():
    """A causal window visits O(T / block) key blocks per query block, full causal attention O((T / block)^2)."""
    q, k, v = qkv(b=1, h=2, hkv=2, tq=128, tk=128, d=4)
    with torch.no_grad():
        blockwise_attention(q, k, v, scaling=0.5, is_causal=True, block_size=16)
        full = blockwise.BLOCKS_VISITED
        blockwise_attention(q, k, v, scaling=0.5, is_causal=True, window=16, block_size=16)
        windowed = blockwise.BLOCKS_VISITED
    n = 128 // 16
    assert full == n * (n + 1) // 2
    assert windowed == n  # one step per query block: its whole window
    # score_entries counts the work of the same two paths: full blocks of the causal loop, one slab per window block
    assert blockwise.score_entries(128, 128, is_causal=True, block_size=16) == full * 16 * 16
    assert blockwise.score_entries(128, 128, is_causal=True, window=16, block_size=16) == n * 16 * (16 + 15)
    # a reach whose slabs would compute far more than the keys in reach takes the per-block path: exactly the
    # key ranges, 128 x (128 + 256 + 384 + 385) entries instead of the slabs' 4 x 128 x (128 + 257)
    per_block = blockwise.score_entries(512, 512, is_causal=True, max_distance=258, block_size=128)
    assert per_block == 128 * (128 + 256 + 384 + 385) < 4 * 128 * (128 + 257)


# ------------------------------------------------------------------------------------------------------------------
# The band rule, and the banded (fused sdpa over key slabs) path against a dense reference built on it
# ------------------------------------------------------------------------------------------------------------------


def brute_force_allowed(d: int, is_causal, window, max_distance, table_len) -> bool:
    """The rule as the docs state it, one condition per setting."""
    ok = True
    if is_causal or max_distance is not None or table_len is not None:
        ok &= d >= 0
    if window is not None:
        ok &= (0 <= d < window) if is_causal else (abs(d) < window)
    if max_distance is not None:
        ok &= d < max_distance
    if table_len is not None:
        ok &= d < table_len
    return ok


SETTINGS = [
    (causal, window, max_distance, table_len)
    for causal in (True, False)
    for window in (None, 1, 5)
    for max_distance in (None, 0, 3, 9)
    for table_len in (None, 4, 12)
]


@pytest.mark.parametrize("setting", SETTINGS)
def test_band_rule_matches_its_definition(setting):
    rule = band(*setting)
    d = torch.arange(-15, 16)
    assert rule.allows(d).tolist() == [brute_force_allowed(x, *setting) for x in d.tolist()]
    back, fwd = rule.limits(7, 9)
    assert [bool(-fwd <= x <= back) for x in d.tolist()] == rule.allows(d).tolist()
    # key_range: exactly the keys some query of the run may see (decoding: 7 queries are the last of 20 keys)
    for q_first, q_end in ((13, 16), (13, 20), (19, 20)):
        seen = [kp for kp in range(20) if any(brute_force_allowed(qp - kp, *setting) for qp in range(q_first, q_end))]
        lo, hi = rule.key_range(q_first, q_end, 20)
        assert list(range(lo, hi)) == seen or (not seen and lo == hi)
        assert rule.covers(q_first - 19, q_end - 1) == all(
            brute_force_allowed(qp - kp, *setting) for qp in range(q_first, q_end) for kp in range(20))
    mask = pair_mask(7, 20, rule, padding(2, 20))
    assert mask.shape == (2, 1, 7, 20) and not mask[1, 0, :, -4:].any()
    assert torch.equal(mask[0, 0], rule.allows(distances(7, 20)))


def dense_reference(q, k, v, *, scaling, rule: Band, key_padding_mask=None, table=None):
    """softmax(q k^T * scaling + table(d), over the pairs `pair_mask` allows) v, a query with no visible key -> 0.
    Dense [Tq, Tk], K/V repeated: the plain function every banded/chunked path must reproduce."""
    h, q_len, k_len = q.shape[1], q.shape[2], k.shape[2]
    k, v = repeat_kv(k, h // k.shape[1]), repeat_kv(v, h // v.shape[1])
    s = (q @ k.transpose(-1, -2)) * scaling
    if table is not None:
        s = s + table[:, distances(q_len, k_len).clamp(0, table.shape[1] - 1)][None]
    s = s.masked_fill(~pair_mask(q_len, k_len, rule, key_padding_mask), float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return (p @ v).transpose(1, 2)


def distance_table(kind: str, h: int, length: int):
    """(table [H, L] built from parameters, the parameters): each table the models build."""
    from hf_attn.modeling.modeling_adaptive_span_gpt import AdaptiveSpanMask, TriangleWaveMask, safe_log

    dist = torch.arange(length, dtype=torch.float32)
    if kind == "random":
        table = bias_table(h, length)
        return table, [table]
    if kind == "alibi":
        slopes = alibi_slopes(h).requires_grad_()
        return alibi_distance_bias(slopes, length), [slopes]
    if kind == "span":
        span = AdaptiveSpanMask(h, max_span=length, softness=4.0, init_ratio=0.3)
        with torch.no_grad():
            span.span_logit.copy_(torch.linspace(-2.0, 1.0, h))
        return safe_log(span(dist)), [span.span_logit]
    if kind == "triangle":  # periodic mask (zeros inside: excluded keys between the plateaus) + ALiBi
        tri = TriangleWaveMask(h, period_min=3.0, period_max=9.0, fourier_terms=4)
        with torch.no_grad():
            tri.period_logit.copy_(torch.linspace(-1.0, 1.5, h))
            tri.offset_logit.copy_(torch.linspace(-1.0, 1.0, h))
        slopes = alibi_slopes(h).requires_grad_()
        table = safe_log(tri(dist)) + alibi_distance_bias(slopes, length)
        return table, [tri.period_logit, tri.offset_logit, slopes]
    raise ValueError(kind)


BANDED_CASES = {
    # name: (B, H, Hkv, Tq, Tk, causal, window, max_distance, table kind, table length, padding)
    "window": (2, 4, 2, 45, 45, True, 9, None, None, None, None),
    "window_bidirectional": (2, 4, 4, 45, 45, False, 9, None, None, None, None),
    "window_mqa_decode": (2, 4, 1, 13, 50, True, 7, None, None, None, None),
    "window_right_padding": (2, 4, 2, 37, 37, True, 9, None, None, None, "right"),
    "window_left_padding": (2, 4, 2, 37, 37, True, 6, None, None, None, "left"),  # rows with no visible key
    "bidirectional_padding": (2, 2, 1, 29, 29, False, 5, None, None, None, "right"),
    "random_table": (2, 4, 2, 45, 45, True, None, None, "random", 12, None),
    "random_table_padding": (2, 4, 2, 43, 43, True, None, None, "random", 12, "left"),
    "alibi_max_distance": (2, 4, 2, 41, 41, True, None, 10, "alibi", 16, None),
    "span_gqa": (1, 4, 2, 47, 47, True, None, None, "span", 14, None),
    "span_decode": (2, 4, 2, 9, 40, True, None, None, "span", 14, "right"),
    "triangle_window": (2, 4, 4, 39, 39, True, 11, None, "triangle", 16, None),
    "triangle_bidirectional_table": (1, 4, 2, 33, 33, False, None, None, "triangle", 10, None),
}


@pytest.mark.parametrize("path", ["banded", "blocks"])
@pytest.mark.parametrize(("case", "trained"), [(case, False) for case in BANDED_CASES]
                         + [(case, True) for case, spec in BANDED_CASES.items() if spec[8] is not None])
def test_banded_path_matches_dense_reference(case, trained, path, monkeypatch):
    """The two fused paths, forced through `BANDED_SLACK`: "banded" (sdpa over key slabs) and "blocks" (one sdpa
    call per query block over its key range). The mask gradient is recomputed per call; with `trained`, the CPU
    flash kernel's log-sum-exp gives the table gradient on declared distances, here all of them. Against the dense
    reference: outputs and gradients of q, k, v and of every parameter the distance table was built from."""
    monkeypatch.setattr(blockwise, "BANDED_SLACK", float("inf") if path == "banded" else 0.0)
    b, h, hkv, tq, tk, causal, window, max_distance, kind, length, pad = BANDED_CASES[case]
    q, k, v = qkv(b=b, h=h, hkv=hkv, tq=tq, tk=tk, d=8, seed=3)
    mask = None
    if pad == "right":
        mask = padding(b, tk, n_pad=5)
    elif pad == "left":
        mask = torch.ones(b, tk, dtype=torch.bool)
        mask[-1, :7] = False
    table, params = distance_table(kind, h, length) if kind else (None, [])
    rule = band(causal, window, max_distance, length)
    assert blockwise._plan(rule, tq, tk, 8)[0] == path

    everywhere = torch.tensor([[0, length]] * h) if trained else None
    fast, _ = blockwise_attention(q, k, v, scaling=0.4, is_causal=causal, key_padding_mask=mask,
                                  distance_bias=table, max_distance=max_distance, window=window, block_size=8,
                                  trained_distances=everywhere)
    if path == "banded":
        assert blockwise.BLOCKS_VISITED == -(-tq // 8)  # one step per query block: the banded path ran
    ref = dense_reference(q, k, v, scaling=0.4, rule=rule, key_padding_mask=mask, table=table)
    if pad == "left" and causal:
        assert (fast[-1, :7 - (tk - tq)] == 0).all()  # queries that see only padding get zeros
    assert_same(fast, ref, (q, k, v, *params))


@pytest.mark.parametrize("pad", [None, "left"])
def test_table_gradient_on_the_span_ramp(pad):
    """The adaptive span's table depends on the span only on its ramp (`AdaptiveSpanMask.ramp`): a gradient
    computed there only gives the span parameters exactly the dense reference's gradient, and the table itself
    gets 0 elsewhere (proof that the ranged path ran)."""
    q, k, v = qkv(b=2, h=4, hkv=2, tq=61, tk=61, d=8, seed=5)
    mask = None
    if pad:
        mask = torch.ones(2, 61, dtype=torch.bool)
        mask[-1, :9] = False
    span = AdaptiveSpanMask(4, max_span=40, softness=6.0, init_ratio=0.3)
    with torch.no_grad():
        span.span_logit.copy_(torch.tensor([-2.0, -0.7, 0.1, 0.9]))
    table = safe_log(span(torch.arange(40, dtype=torch.float32)))
    table.retain_grad()
    ramp = span.ramp()
    assert ((ramp[:, 1] - ramp[:, 0]) <= 6 + 2).all()  # R + 2 distances per head
    fast, _ = blockwise_attention(q, k, v, scaling=0.4, is_causal=True, key_padding_mask=mask, distance_bias=table,
                                  block_size=8, trained_distances=ramp)
    ref = dense_reference(q, k, v, scaling=0.4, rule=band(True, None, None, 40), key_padding_mask=mask, table=table)
    probe = torch.randn(ref.shape, generator=torch.Generator().manual_seed(7))
    (fast * probe).sum().backward(retain_graph=True)
    on_ramp = torch.zeros(table.shape, dtype=torch.bool)
    for head, (lo, hi) in enumerate(ramp.tolist()):
        on_ramp[head, lo:hi] = True
    assert (table.grad[~on_ramp] == 0).all() and (table.grad[on_ramp] != 0).any()
    table.grad = None
    assert_same(fast, ref, (q, k, v, span.span_logit))


@pytest.mark.parametrize("b,h,hkv,t,window", [
    (2, 4, 2, 200, 64),  # GQA, a ragged last query block
    (1, 2, 2, 64, 64),  # T = window: the causal head call only
    (1, 2, 1, 65, 64),  # one query past the head
    (2, 2, 2, 300, 128),  # two 64-query blocks per window
])
def test_window_parts_match_dense_reference(b, h, hkv, t, window):
    """Causal windows under autograd on CPU: three unmasked fused calls per query block merged by log-sum-exp,
    forward and backward equal to the dense reference; without autograd the slab path gives the same output."""
    q, k, v = qkv(b=b, h=h, hkv=hkv, tq=t, tk=t, d=16, seed=9)
    rule = band(True, window)
    out, _ = blockwise_attention(q, k, v, scaling=0.3, is_causal=True, window=window)
    assert blockwise.BLOCKS_VISITED == 0  # the window-parts path ran
    ref = dense_reference(q, k, v, scaling=0.3, rule=rule)
    assert_same(out, ref, (q, k, v))
    with torch.no_grad():
        slabs, _ = blockwise_attention(q, k, v, scaling=0.3, is_causal=True, window=window)
    assert blockwise.BLOCKS_VISITED > 0
    torch.testing.assert_close(slabs, out.detach(), rtol=1e-5, atol=1e-5)


def test_window_parts_query_block():
    from hf_attn.attention.window_parts import query_block

    assert [query_block(w) for w in (512, 4096, 192, 64, 48, 32, 7)] == [256, 256, 64, 32, None, None, None]


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_banded_path_dtypes(dtype):
    """fp64 stays fp64 (exact to 1e-10); bf16 runs in fp32 on CPU and returns bf16."""
    q, k, v = qkv(tq=30, tk=30, dtype=dtype)
    table, params = distance_table("span", 4, 12)
    rule = band(True, None, None, 12)
    out, _ = blockwise_attention(q, k, v, scaling=0.3, is_causal=True, distance_bias=table, block_size=8)
    ref = dense_reference(q.double(), k.double(), v.double(), scaling=0.3, rule=rule, table=table.double())
    assert out.dtype == dtype
    tol = 1e-10 if dtype == torch.float64 else 3e-2
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)


def test_banded_path_without_table_gradient_and_without_grad():
    """A table that needs no gradient goes into sdpa directly; no_grad runs give the same output."""
    q, k, v = qkv(tq=40, tk=40)
    table = bias_table(length=10).detach()
    ref = dense_reference(q, k, v, scaling=0.3, rule=band(True, None, None, 10), table=table)
    out, _ = blockwise_attention(q, k, v, scaling=0.3, is_causal=True, distance_bias=table, block_size=8)
    assert_same(out, ref, (q, k, v))
    with torch.no_grad():
        out, _ = blockwise_attention(q, k, v, scaling=0.3, is_causal=True, distance_bias=table, block_size=8)
    torch.testing.assert_close(out, ref.detach(), rtol=1e-5, atol=1e-5)


def test_dropout_with_a_table_gradient_uses_the_loop():
    """Training dropout and a table that needs a gradient: the loop (explicit dropout), still exact at p -> 0."""
    q, k, v = qkv(tq=40, tk=40)
    table = bias_table(length=10)
    torch.manual_seed(0)
    out, _ = blockwise_attention(q, k, v, scaling=0.3, is_causal=True, distance_bias=table, block_size=8,
                                 dropout=0.3, training=True)
    assert blockwise.BLOCKS_VISITED > -(-40 // 8)  # the loop visits several key blocks per query block
    assert torch.isfinite(out).all()
    (g,) = torch.autograd.grad(out.sum(), [table])
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd keeps for the backward of fn() (storage counted once)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


@pytest.mark.parametrize("kind", ["window", "span_table"])
def test_banded_memory_is_linear_in_length(kind):
    """What the banded path keeps for backward grows linearly in T (a [T, T] matrix would quadruple)."""

    def run(t):
        q, k, v = qkv(b=1, h=2, hkv=1, tq=t, tk=t, d=16)
        table = bias_table(h=2, length=48) if kind == "span_table" else None
        window = 32 if kind == "window" else None
        return saved_bytes(lambda: blockwise_attention(q, k, v, scaling=0.25, is_causal=True, window=window,
                                                       distance_bias=table, block_size=16))

    small, large = run(512), run(2048)
    assert large < 4.6 * small  # 4x the length: linear (plus constants), not 16x


def test_path_choice_and_score_entries_agree():
    """score_entries reports the work of the path blockwise_attention takes, by the same cost rule."""
    for t, kw in [(128, dict(window=16)), (512, dict(max_distance=258)), (40, dict(window=30)),
                  (4096, dict(window=512)), (300, dict(max_distance=299))]:
        rule = band(True, kw.get("window"), kw.get("max_distance"))
        path, entries = blockwise._plan(rule, t, t, 16)
        assert blockwise.score_entries(t, t, is_causal=True, block_size=16, **kw) == entries
        per_block = blockwise._block_entries(rule, t, t, 16)
        banded = -(-t // 16) * 16 * (16 + rule.back + rule.fwd)
        assert path == ("banded" if banded <= blockwise.BANDED_SLACK * per_block else "blocks")
        if t <= 512:
            q, k, v = qkv(b=1, h=2, hkv=2, tq=t, tk=t, d=4)
            with torch.no_grad():
                blockwise_attention(q, k, v, scaling=0.5, is_causal=True, block_size=16, **kw)
            assert (blockwise.BLOCKS_VISITED == -(-t // 16)) == (path == "banded")


# ------------------------------------------------------------------------------------------------------------------
# hf_local, hf_linear, hf_topk against their references
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("case", ["plain", "padding", "distance_bias", "decode", "dense_mask"])
def test_local_matches_reference(causal, case):
    """Covers both paths of the core: the banded one and (with a dense 4D mask) the online-softmax loop."""
    tq = 11 if case == "decode" else 45
    q, k, v = qkv(tq=tq, tk=45)
    mask = padding(2, 45) if case == "padding" else None
    if case == "dense_mask":
        mask = (torch.rand(2, 1, 45, 45, generator=torch.Generator().manual_seed(4)) > 0.3) | torch.eye(45).bool()
        if causal:  # a 4D mask carries causality itself (layers.additive_attention_mask trusts it)
            mask &= torch.ones(45, 45, dtype=torch.bool).tril()
    extra = {"distance_bias": bias_table(length=20), "max_distance": 15} if case == "distance_bias" else {}
    inputs = (q, k, v, extra["distance_bias"]) if extra else (q, k, v)
    module = Attn(causal, sliding_window=9)
    fast, _ = local_attention_forward(module, q, k, v, mask, scaling=0.3, **extra)
    ref, _ = local_attention_reference(module, q, k, v, mask, scaling=0.3, **extra)
    assert_same(fast, ref, inputs)


def test_local_window_sources_and_flag():
    q, k, v = qkv(tq=15, tk=15)
    by_kwarg, _ = local_attention_forward(Attn(True), q, k, v, None, sliding_window=4)
    module = Attn(True)
    module.sliding_window = 4
    by_attribute, _ = local_attention_forward(module, q, k, v, None)
    by_config, _ = local_attention_forward(Attn(True, sliding_window=4), q, k, v, None)
    torch.testing.assert_close(by_kwarg, by_attribute)
    torch.testing.assert_close(by_kwarg, by_config)
    assert local_attention_forward.accepts_distance_bias is True
    # A window covering every key is plain causal softmax attention.
    wide, _ = local_attention_forward(Attn(True, sliding_window=100), q, k, v, None)
    torch.testing.assert_close(wide, eager_attention_forward(Attn(True), q, k, v, None)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("case", ["plain", "padding", "decode", "mha"])
def test_linear_matches_reference(causal, case):
    tq = 10 if case == "decode" else 41
    q, k, v = qkv(hkv=4 if case == "mha" else 2, tq=tq, tk=41)
    mask = padding(2, 41) if case == "padding" else None
    module = Attn(causal)
    fast, _ = linear_attention_forward(module, q, k, v, mask, chunk_size=8)  # 41 = 5 chunks + 1
    ref, _ = linear_attention_reference(module, q, k, v, mask)
    assert_same(fast, ref, (q, k, v))


def test_linear_reference_is_normalised_kernel_attention():
    q, k, v = qkv(b=1, tq=7, tk=7)
    _, weights = linear_attention_reference(Attn(True), q, k, v, None)
    sums = weights.sum(-1)
    torch.testing.assert_close(sums, torch.ones_like(sums), rtol=1e-4, atol=1e-4)
    visible = torch.ones(7, 7, dtype=torch.bool).tril()
    assert (weights[..., ~visible] == 0).all() and (weights[..., visible] > 0).all()


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("case", ["plain", "padding", "position_bias", "distance_bias", "k_exceeds_keys", "gqa_decode",
                                  "dense_mask"])
@pytest.mark.parametrize("chunk_size", [None, 5])
def test_topk_matches_reference(causal, case, chunk_size):
    """The chunked fast path (several chunks with chunk_size=5, ragged last chunk) against the dense reference."""
    tq = 9 if case == "gqa_decode" else 23
    q, k, v = qkv(tq=tq, tk=23, hkv=1 if case == "gqa_decode" else 2)
    mask = padding(2, 23) if case == "padding" else None
    if case == "dense_mask":
        mask = (torch.rand(2, 1, 23, 23, generator=torch.Generator().manual_seed(4)) > 0.3) | torch.eye(23).bool()
    extra = {}
    if case == "position_bias":
        extra["position_bias"] = torch.randn(1, 4, 23, 23, generator=torch.Generator().manual_seed(2)).requires_grad_()
    if case == "distance_bias":
        extra["distance_bias"] = bias_table(length=23)
        extra["max_distance"] = 17
    inputs = (q, k, v, *[extra[n] for n in ("distance_bias", "position_bias") if n in extra])
    module = Attn(causal, attention_topk=100 if case == "k_exceeds_keys" else 5)
    fast, weights = topk_attention_forward(module, q, k, v, mask, scaling=0.3, chunk_size=chunk_size, **extra)
    ref, ref_weights = topk_attention_reference(module, q, k, v, mask, scaling=0.3, **extra)
    assert weights is None  # the fast path never builds [Tq, Tk] weights
    assert ref_weights.shape == (2, 4, tq, 23)
    assert ((ref_weights > 0).sum(-1) <= (23 if case == "k_exceeds_keys" else 5)).all()
    torch.testing.assert_close(ref_weights.sum(-1), torch.ones(2, 4, tq), rtol=1e-5, atol=1e-5)
    assert_same(fast, ref, inputs)


def test_topk_memory_is_linear_in_length():
    """What autograd keeps from the forward for the backward grows linearly in T (no [T, T] score, mask or
    weights: the backward recomputes them chunk by chunk)."""

    def run(t):
        q, k, v = qkv(b=1, h=2, hkv=1, tq=t, tk=t, d=16)
        return saved_bytes(lambda: topk_attention_forward(Attn(True, attention_topk=8), q, k, v, padding(1, t),
                                                          chunk_size=64))

    small, large = run(256), run(1024)
    assert large < 4.6 * small


def test_topk_backward_replays_the_forward_dropout():
    """Training dropout: the chunk recompute in the backward draws the dropout the forward drew. The output is
    linear in V given the dropped weights, so <dL/dV, V> = L for L = sum(out * probe) only when it does."""
    q, k, v = qkv(tq=23, tk=23)
    module = Attn(True, attention_topk=5).train()
    torch.manual_seed(3)
    with torch.no_grad():
        plain, _ = topk_attention_forward(module, q, k, v, None, dropout=0.5, chunk_size=5)
    torch.manual_seed(3)
    out, _ = topk_attention_forward(module, q, k, v, None, dropout=0.5, chunk_size=5)
    torch.testing.assert_close(out, plain)  # the same draws with and without autograd
    probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    loss = (out * probe).sum()
    state = torch.get_rng_state()
    (grad_v,) = torch.autograd.grad(loss, v)
    torch.testing.assert_close((grad_v * v).sum(), loss.detach(), rtol=1e-4, atol=1e-4)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is left as it was


def test_topk_with_all_keys_is_eager():
    q, k, v = qkv(tq=9, tk=9)
    out, _ = topk_attention_forward(Attn(True, attention_topk=9), q, k, v, padding(2, 9))
    ref, ref_weights = eager_attention_forward(Attn(True), q, k, v, padding(2, 9))
    _, weights = topk_attention_reference(Attn(True, attention_topk=9), q, k, v, padding(2, 9))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weights, ref_weights, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------------
# Registration, exact backends, dtypes, dropout, bad input
# ------------------------------------------------------------------------------------------------------------------


def test_backends_registered():
    for name, fn in hf_attn.attention.ATTENTION_BACKENDS.items():
        assert AttentionInterface()[name] is fn


@pytest.mark.parametrize("causal", [True, False])
def test_sdpa_and_eager_agree_with_position_bias(causal):
    """transformers' sdpa and the eager reference receive a distance bias densely (as `position_bias`) and agree
    (transformers registers no model-independent "eager"; `eager_attention_forward` is the project's)."""
    q, k, v = qkv(tq=17, tk=17)
    position_bias = dense_distance_bias(bias_table(length=17).detach(), 17, 17)
    if not causal:  # dense_distance_bias excludes d < 0; give bidirectional attention a finite bias everywhere
        position_bias = torch.randn(1, 4, 17, 17, generator=torch.Generator().manual_seed(5))
    module = Attn(causal)
    module.num_key_value_groups = 2  # transformers' sdpa reads it for GQA (as every transformers model sets it)
    eager, _ = eager_attention_forward(module, q, k, v, None, scaling=0.3, position_bias=position_bias)
    sdpa, _ = AttentionInterface()["sdpa"](module, q, k, v, None, scaling=0.3, dropout=0.0, position_bias=position_bias)
    assert_same(sdpa, eager, (q, k, v))


@pytest.mark.parametrize("name", ["hf_local", "hf_linear", "hf_topk", "hf_blockwise"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_forward(name, dtype):
    q, k, v = qkv(tq=33, tk=33, dtype=dtype)
    module = Attn(True, sliding_window=8, attention_topk=6)
    out, _ = AttentionInterface()[name](module, q, k, v, padding(2, 33))
    ref, _ = AttentionInterface()[name](module, q.float(), k.float(), v.float(), padding(2, 33))
    assert out.dtype == dtype and out.shape == (2, 33, 4, 8)
    torch.testing.assert_close(out.float(), ref, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("name", ["hf_local", "hf_topk"])
def test_dropout_only_in_training(name):
    q, k, v = qkv(tq=16, tk=16)
    module = Attn(True, sliding_window=8, attention_topk=6)
    fn = AttentionInterface()[name]
    eval_a, _ = fn(module, q, k, v, None, dropout=0.5)
    eval_b, _ = fn(module, q, k, v, None, dropout=0.0)
    torch.testing.assert_close(eval_a, eval_b)
    module.train()
    torch.manual_seed(0)
    train, _ = fn(module, q, k, v, None, dropout=0.5)
    assert not torch.allclose(train, eval_b)
    # Dropout keeps the expectation: the mean over many independent draws (a batch of copies of one input, each
    # row drawing its own dropout mask) approaches the eval output.
    with torch.no_grad():
        copies = [x[:1].expand(500, -1, -1, -1) for x in (q, k, v)]
        mean = fn(module, *copies, None, dropout=0.5)[0].mean(0)
    torch.testing.assert_close(mean, eval_b[0].detach(), rtol=0.2, atol=0.2)


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda q, k, v: local_attention_forward(Attn(True, sliding_window=0), q, k, v, None), "sliding_window=0"),
        (lambda q, k, v: local_attention_forward(Attn(True), q, k, v, None, sliding_window=-3), "sliding_window=-3"),
        (lambda q, k, v: topk_attention_forward(Attn(True, attention_topk=0), q, k, v, None), "attention_topk=0"),
        (lambda q, k, v: topk_attention_forward(Attn(True, attention_topk=-1), q, k, v, None), "attention_topk=-1"),
        (lambda q, k, v: local_attention_forward(Attn(True, sliding_window=4), q, k[:, :1].expand(-1, 3, -1, -1),
                                                 v[:, :1].expand(-1, 3, -1, -1), None), "num_key_value_heads=3"),
        (lambda q, k, v: linear_attention_forward(Attn(True), q, k[:, :1].expand(-1, 3, -1, -1),
                                                  v[:, :1].expand(-1, 3, -1, -1), None), "num_key_value_heads=3"),
        (lambda q, k, v: topk_attention_forward(Attn(True, attention_topk=2), q, k[:, :1].expand(-1, 3, -1, -1),
                                                v[:, :1].expand(-1, 3, -1, -1), None), "num_key_value_heads=3"),
    ],
)
def test_bad_input_names_field_and_value(call, field):
    q, k, v = qkv(tq=5, tk=5)
    with pytest.raises(ValueError, match=field):
        call(q, k, v)
