"""Logit soft-capping, attention sinks and per-layer windows on every path of every backend, against eager.

`softcap`: logits -> softcap * tanh(logits / softcap) before every mask and bias (Gemma 2); `s_aux` [H]: one extra
logit per head in the softmax denominator, attending to nothing (gpt-oss). The eager reference
(`eager_attention_forward`) writes both out; here every path of hf_blockwise / hf_local (the blockwise loop, the
slab and per-block paths, the Triton kernel under the interpreter in tests/test_kernels.py), hf_topk with k
covering every key, and the references, forward and the gradients of q, k, v and the sinks, equal it. The window
comes from transformers' `sliding_window` kwarg; on a model whose `config.layer_types` name sliding layers a layer
called with `sliding_window=None` is a full-attention layer.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from test_attention import Attn  # the stand-in attention module backends read settings from

import hf_attn  # noqa: F401  (registers the backends; fills the feature table)
from hf_attn.attention import BACKENDS, UnsupportedFeatureError, blockwise
from hf_attn.attention.blockwise import blockwise_attention
from hf_attn.kernels.band import band, pair_mask
from hf_attn.modeling.layers import eager_attention_forward


def inputs(tq=37, tk=37, sinks=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()  # noqa: E731
    q, k, v = make(2, 4, tq, 8), make(2, 2, tk, 8), make(2, 2, tk, 8)
    return q, k, v, (make(4) if sinks else None)


def padding(tk):
    mask = torch.ones(2, tk, dtype=torch.bool)
    mask[1, :5] = False
    return mask


def reference(q, k, v, *, causal, window, mask, softcap, sinks, scaling=0.3):
    dense = pair_mask(q.shape[2], k.shape[2], band(causal, window), mask)
    return eager_attention_forward(Attn(False), q, k, v, dense, scaling, softcap=softcap, s_aux=sinks)[0]


def assert_same(fast, ref, inputs_):
    probe = torch.randn(ref.shape, generator=torch.Generator().manual_seed(9), dtype=ref.dtype)
    wanted = [t for t in inputs_ if t is not None]
    grads_fast = torch.autograd.grad((fast * probe).sum(), wanted)
    grads_ref = torch.autograd.grad((ref * probe).sum(), wanted)
    # eager's softmax runs in fp32: agreement to fp32 precision
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=2e-6)
    for got, want in zip(grads_fast, grads_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-6)


CASES = list(itertools.product([True, False], [None, 5], [False, True], [None, 0.7], [False, True]))
CASES = [c for c in CASES if c[3] is not None or c[4]]  # each case has a softcap, sinks or both


PATH_CASES = [(path, *case) for path in ("banded", "blocks", "loop") for case in CASES
              if not (path == "banded" and case[1] is None)]  # no band to slab without a window


@pytest.mark.parametrize(("path", "causal", "window", "padded", "softcap", "with_sinks"), PATH_CASES)
def test_blockwise_paths_equal_eager(path, causal, window, padded, softcap, with_sinks, monkeypatch):
    q, k, v, sinks = inputs(sinks=with_sinks)
    mask = padding(37) if padded else None
    dense = None
    if path == "loop":  # a dense mask sends the call to the loop
        dense = torch.ones(1, 1, 37, 37, dtype=torch.bool)
    else:
        monkeypatch.setattr(blockwise, "BANDED_SLACK", float("inf") if path == "banded" else 0.0)
    explicit = []
    real = blockwise._explicit_chunk
    monkeypatch.setattr(blockwise, "_explicit_chunk", lambda *a: explicit.append(1) or real(*a))
    monkeypatch.setattr(blockwise, "EXPLICIT_CHUNK_ENTRIES", 2000)  # several chunks of slabs
    fast, _ = blockwise_attention(q, k, v, scaling=0.3, is_causal=causal, key_padding_mask=mask, window=window,
                                  block_size=8, softcap=softcap, sinks=sinks, attn_mask=dense)
    assert bool(explicit) == (path != "loop")  # the fused paths wrote their tiles out
    ref = reference(q, k, v, causal=causal, window=window, mask=mask, softcap=softcap, sinks=sinks)
    assert_same(fast, ref, (q, k, v, sinks))


def test_decoding_queries_with_sinks_and_softcap():
    q, k, v, sinks = inputs(tq=3, tk=20)
    fast, _ = blockwise_attention(q, k, v, scaling=0.3, is_causal=True, window=6, block_size=8, softcap=0.7,
                                  sinks=sinks)
    assert_same(fast, reference(q, k, v, causal=True, window=6, mask=None, softcap=0.7, sinks=sinks), (q, k, v, sinks))


def test_window_parts_step_aside_for_softcap_and_sinks(monkeypatch):
    """The causal-window CPU training path has neither: calls with them take the written-out slabs, exactly."""
    from hf_attn.attention import window_parts

    ran = []
    monkeypatch.setattr(window_parts, "sliding_window_attention", lambda *a, **k: ran.append(1))
    q, k, v, sinks = inputs(tq=160, tk=160, sinks=True)
    fast, _ = blockwise_attention(q, k, v, scaling=0.3, is_causal=True, window=64, softcap=0.7, sinks=sinks)
    assert not ran
    assert_same(fast, reference(q, k, v, causal=True, window=64, mask=None, softcap=0.7, sinks=sinks),
                (q, k, v, sinks))


@pytest.mark.parametrize("name", ["hf_blockwise", "hf_local", "hf_topk"])
@pytest.mark.parametrize("causal", [True, False])
def test_backends_honour_the_layers_window_softcap_and_sinks(name, causal):
    """As transformers calls them: sliding_window=, softcap=, s_aux= keywords; k covers every key for hf_topk."""
    q, k, v, sinks = inputs(tq=21, tk=21)
    module = Attn(causal, attention_topk=64, layer_types=["sliding_attention", "full_attention"])
    mask = padding(21)
    fast, _ = BACKENDS[name].forward(module, q, k, v, mask, 0.3, sliding_window=5, softcap=0.7, s_aux=sinks)
    ref = reference(q, k, v, causal=causal, window=5, mask=mask, softcap=0.7, sinks=sinks)
    assert_same(fast, ref, (q, k, v, sinks))
    out, weights = BACKENDS[name].reference(module, q, k, v, mask, 0.3, sliding_window=5, softcap=0.7, s_aux=sinks)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=2e-6)
    assert (weights.sum(-1) < 1).all()  # the sink takes its share of every row


def test_hf_local_keeps_a_full_layer_of_a_mixed_model_full():
    q, k, v, _ = inputs(tq=21, tk=21, sinks=False)
    mixed = Attn(True, sliding_window=5, layer_types=["sliding_attention", "full_attention"])
    full, _ = BACKENDS["hf_local"].forward(mixed, q, k, v, None, 0.3, sliding_window=None)
    assert_same(full, reference(q, k, v, causal=True, window=None, mask=None, softcap=None, sinks=None), (q, k, v))
    # A model without per-layer types keeps hf_local's own window (config.sliding_window), as before.
    plain = Attn(True, sliding_window=5)
    local, _ = BACKENDS["hf_local"].forward(plain, q, k, v, None, 0.3, sliding_window=None)
    assert_same(local, reference(q, k, v, causal=True, window=5, mask=None, softcap=None, sinks=None), (q, k, v))


def test_hf_blockwise_and_hf_topk_read_only_the_models_window():
    """Our models' config.sliding_window is hf_local's setting: exact hf_blockwise and hf_topk ignore it."""
    q, k, v, _ = inputs(tq=21, tk=21, sinks=False)
    module = Attn(True, sliding_window=5, attention_topk=64)
    module.sliding_window = 5
    for name in ("hf_blockwise", "hf_topk"):
        ref = reference(q, k, v, causal=True, window=None, mask=None, softcap=None, sinks=None)
        assert_same(BACKENDS[name].forward(module, q, k, v, None, 0.3)[0], ref, (q, k, v))


def test_hf_blockwise_dense_fallback_keeps_the_window():
    q, k, v, sinks = inputs(tq=21, tk=21)
    dense = torch.ones(2, 1, 21, 21, dtype=torch.bool).tril()
    fast, _ = BACKENDS["hf_blockwise"].forward(Attn(True), q, k, v, dense, 0.3, sliding_window=5, softcap=0.7,
                                               s_aux=sinks)
    assert_same(fast, reference(q, k, v, causal=True, window=5, mask=None, softcap=0.7, sinks=sinks), (q, k, v, sinks))


@pytest.mark.parametrize(("kwargs", "feature"), [({"sliding_window": 4}, "window"), ({"softcap": 30.0}, "softcap"),
                                                 ({"s_aux": torch.zeros(4)}, "sinks"),
                                                 ({"position_bias": torch.zeros(1, 4, 5, 5)}, "distance_bias")])
def test_hf_linear_refuses_what_it_cannot_honour(kwargs, feature):
    q = torch.randn(1, 4, 5, 8)
    k = v = torch.randn(1, 2, 5, 8)
    for fn in (BACKENDS["hf_linear"].forward, BACKENDS["hf_linear"].reference):
        with pytest.raises(UnsupportedFeatureError, match=f"hf_linear.*{feature}.*hf_blockwise, hf_local, hf_topk"):
            fn(Attn(True), q, k, v, None, **kwargs)


def test_reference_for_every_backend_and_no_silent_fallback():
    from hf_attn.attention import reference_for

    for name, entry in BACKENDS.items():
        assert reference_for(name) is entry.reference
    assert reference_for("sdpa") is eager_attention_forward
    with pytest.raises(ValueError, match="no reference attention function.*my_backend"):
        reference_for("my_backend")
