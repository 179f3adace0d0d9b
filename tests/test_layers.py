"""The shared modeling pieces: the seam in hf_attn.modeling.layers (reference attention, masks, distance biases),
RoPE (rotary.py), ALiBi (distance_masks.py), sinusoidal positions, DecomposedLinear, pooling."""

import math

import pytest
import torch
from transformers import AttentionInterface, PreTrainedConfig
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

import hf_attn  # noqa: F401  (registers the backends)
from hf_attn.modeling.distance_masks import alibi_distance_bias, alibi_slopes
from hf_attn.modeling.encoder import masked_mean_pool
from hf_attn.modeling.layers import (
    additive_attention_mask,
    attention_bias_kwargs,
    dense_distance_bias,
    eager_attention_forward,
)
from hf_attn.modeling.modeling_adaptive_span_gpt import sinusoidal_position_embedding
from hf_attn.modeling.modeling_tan import DecomposedLinear
from hf_attn.modeling.rotary import RotaryEmbedding, apply_rotary_pos_emb


class _Module(torch.nn.Module):
    def __init__(self, is_causal, groups=1):
        super().__init__()
        self.is_causal = is_causal
        self.num_key_value_groups = groups


def naive_attention(q, k, v, allowed, bias=None):
    """Loop-free but explicit: repeat K/V, full score matrix, -inf where not allowed."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if bias is not None:
        s = s + bias
    s = s.masked_fill(~allowed, float("-inf"))
    return (s.softmax(-1) @ v).transpose(1, 2)


@pytest.mark.parametrize("causal", [True, False])
def test_eager_reference_matches_naive_with_padding_and_gqa(causal):
    torch.manual_seed(0)
    b, h, hkv, t, d = 2, 4, 2, 7, 8
    q, k, v = torch.randn(b, h, t, d), torch.randn(b, hkv, t, d), torch.randn(b, hkv, t, d)
    pad = torch.ones(b, t, dtype=torch.bool)
    pad[1, 5:] = False
    out, w = eager_attention_forward(_Module(causal, 2), q, k, v, pad)
    allowed = pad[:, None, None, :].expand(b, 1, t, t)
    if causal:
        allowed = allowed & torch.ones(t, t, dtype=torch.bool).tril()
    torch.testing.assert_close(out, naive_attention(q, k, v, allowed), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w.sum(-1), torch.ones(b, h, t))


def test_eager_reference_matches_transformers_sdpa_with_position_bias():
    torch.manual_seed(1)
    b, h, hkv, t, d = 1, 4, 2, 9, 8
    q, k, v = torch.randn(b, h, t, d), torch.randn(b, hkv, t, d), torch.randn(b, hkv, t, d)
    table = torch.randn(h, t)
    table[:, 6:] = float("-inf")  # a hard span limit
    mod = _Module(True, 2)
    ours, _ = eager_attention_forward(mod, q, k, v, None, distance_bias=table)
    theirs, _ = sdpa_attention_forward(mod, q, k, v, None, position_bias=dense_distance_bias(table, t, t))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_dense_distance_bias_layout_and_gradient():
    table = torch.arange(6.0).reshape(2, 3).requires_grad_()
    dense = dense_distance_bias(table, 4, 4)  # [1, 2, 4, 4]
    assert dense.shape == (1, 2, 4, 4)
    assert dense[0, 1, 3, 1].item() == table[1, 2].item()  # d = 2
    assert dense[0, 0, 3, 0].item() == float("-inf")  # d = 3 >= L
    assert dense[0, 0, 0, 1].item() == float("-inf")  # the future
    dense.masked_fill(dense.isinf(), 0).sum().backward()
    # each distance d < L appears (T - d) times on the causal diagonal
    torch.testing.assert_close(table.grad, torch.tensor([[4.0, 3.0, 2.0], [4.0, 3.0, 2.0]]))


def test_decoding_alignment_queries_are_last_positions():
    dense = dense_distance_bias(torch.zeros(1, 10), 1, 5)
    assert torch.isfinite(dense).all()  # one new query sees all 5 keys
    mask = additive_attention_mask(None, True, 2, 5, torch.float32, torch.device("cpu"))
    assert (mask[0, 0, 0] == 0).tolist() == [True, True, True, True, False]


def test_attention_bias_kwargs_dispatch_by_capability():
    table = torch.zeros(2, 4)

    def plain(*a, **k):
        pass

    def native(*a, **k):
        pass

    native.accepts_distance_bias = True
    query = torch.zeros(3, 2, 4, 8, dtype=torch.bfloat16)
    dense = attention_bias_kwargs(plain, table, query, 4)
    assert set(dense) == {"position_bias"}
    # flex_attention indexes the bias per batch entry: it must have the batch size, in the query's dtype
    assert dense["position_bias"].shape == (3, 2, 4, 4) and dense["position_bias"].dtype == torch.bfloat16
    assert attention_bias_kwargs(native, table, query, 4, max_distance=3) == {"distance_bias": table, "max_distance": 3}
    assert attention_bias_kwargs(plain, None, query, 4) == {}
    # where the table is trained reaches table backends only (others get the dense bias, nothing else)
    trained = torch.tensor([[1, 3], [0, 4]])
    assert attention_bias_kwargs(native, table, query, 4, 3, trained)["trained_distances"] is trained
    assert set(attention_bias_kwargs(plain, table, query, 4, 3, trained)) == {"position_bias"}


def test_alibi_slopes_match_paper():
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    s = alibi_slopes(6)  # not a power of two: 4 slopes of n=4, then every other of n=8
    torch.testing.assert_close(s[:4], alibi_slopes(4))
    torch.testing.assert_close(s[4:], alibi_slopes(8)[0::2][:2])
    torch.testing.assert_close(alibi_distance_bias(torch.tensor([0.5]), 3), torch.tensor([[0.0, -0.5, -1.0]]))


def test_sinusoidal_embedding_values():
    pos = torch.arange(4)[None]
    emb = sinusoidal_position_embedding(pos, 6)
    assert emb.shape == (1, 4, 6)
    torch.testing.assert_close(emb[0, :, 0], torch.sin(torch.arange(4.0)))
    torch.testing.assert_close(emb[0, :, 3], torch.cos(torch.arange(4.0)))
    torch.testing.assert_close(emb[0, 2, 1], torch.sin(torch.tensor(2.0 * 10000 ** (-1 / 3))))


def _rope_config(rope_parameters):
    cfg = PreTrainedConfig()
    cfg.hidden_size, cfg.num_attention_heads, cfg.max_position_embeddings = 64, 4, 128
    cfg.head_dim = 16
    cfg.rope_parameters = rope_parameters
    return cfg


def test_rope_default_rotates_pairs_and_preserves_norm():
    rope = RotaryEmbedding(_rope_config({"rope_type": "default", "rope_theta": 10000.0}))
    x = torch.randn(1, 2, 5, 16)
    cos, sin = rope(x, torch.arange(5)[None])
    q, k = apply_rotary_pos_emb(x, x, cos, sin)
    torch.testing.assert_close(q.norm(dim=-1), x.norm(dim=-1))
    # relative property: <R_m q, R_n k> depends on m - n only
    a, b = torch.randn(16), torch.randn(16)
    cos, sin = rope(x, torch.arange(8)[None])

    def rot(v, p):
        return apply_rotary_pos_emb(v[None, None, None], v[None, None, None], cos[:, p : p + 1], sin[:, p : p + 1])[0]

    torch.testing.assert_close((rot(a, 3) * rot(b, 1)).sum(), (rot(a, 6) * rot(b, 4)).sum(), rtol=1e-5, atol=1e-5)


def test_rope_yarn_comes_from_transformers():
    params = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "rope_theta": 10000.0}
    cfg = _rope_config(params)
    rope = RotaryEmbedding(cfg)
    inv_freq, scale = ROPE_INIT_FUNCTIONS["yarn"](cfg, None)
    torch.testing.assert_close(rope.inv_freq, inv_freq)
    assert rope.attention_scaling == pytest.approx(scale) and scale > 1.0
    default = RotaryEmbedding(_rope_config({"rope_type": "default", "rope_theta": 10000.0}))
    assert not torch.allclose(rope.inv_freq, default.inv_freq)


@pytest.mark.parametrize("kind", ["tan", "gqa_embedder", "adaptive_span_gpt"])
def test_transformers_own_init_weights_rebuilds_the_rope_buffers(kind):
    """No model re-initialises RoPE itself: transformers' `PreTrainedModel._init_weights` recognises
    `RotaryEmbedding` (its `original_inv_freq`, `rope_type`, `compute_default_rope_parameters`) and recomputes the
    buffers from the config, as after loading from the meta device."""
    from transformers import PreTrainedModel

    common = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, vocab_size=50,
                  rope_parameters={"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 32})
    if kind == "tan":
        model = hf_attn.TanModel(hf_attn.TanConfig(intermediate_size=16, **common))
    elif kind == "gqa_embedder":
        model = hf_attn.GQAEmbedderModel(hf_attn.GQAEmbedderConfig(intermediate_size=64, embedding_size=16, **common))
    else:
        model = hf_attn.AdaptiveSpanGPTModel(hf_attn.AdaptiveSpanGPTConfig(position_embedding="rope", **common))
    rotary = model.rotary_emb
    expected, _ = ROPE_INIT_FUNCTIONS["yarn"](model.config, None)
    torch.testing.assert_close(rotary.inv_freq, expected)
    with torch.no_grad():
        rotary.inv_freq.zero_()
        rotary.original_inv_freq.zero_()
    PreTrainedModel._init_weights(model, rotary)
    torch.testing.assert_close(rotary.inv_freq, expected)
    torch.testing.assert_close(rotary.original_inv_freq, expected)


def test_decomposed_linear_shapes_and_params():
    layer = DecomposedLinear(64, 32)
    assert layer(torch.randn(3, 64)).shape == (3, 32)
    assert sum(p.numel() for p in layer.parameters()) == 64 * 16 + 16 + 16 * 32 + 32


def test_masked_mean_pool_ignores_padding_and_empty_rows():
    h = torch.tensor([[[1.0], [3.0], [100.0]], [[5.0], [7.0], [9.0]]])
    m = torch.tensor([[1, 1, 0], [0, 0, 0]])
    torch.testing.assert_close(masked_mean_pool(h, m), torch.tensor([[2.0], [0.0]]))


def test_backends_registered_and_unknown_name_lists_valid_ones():
    for name in ("hf_local", "hf_linear", "hf_topk", "hf_blockwise"):
        assert name in AttentionInterface._global_mapping
    expected = "no_such_attention.*not supported.*Registered attention backends:.*hf_blockwise"
    with pytest.raises(ValueError, match=expected):
        hf_attn.GQAEmbedderModel._from_config(
            hf_attn.GQAEmbedderConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      num_key_value_heads=1, intermediate_size=32),
            attn_implementation="no_such_attention",
        )


def test_eager_reference_gives_zeros_for_queries_that_see_no_key():
    q, k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    allowed = torch.tensor([[[[True, True, False], [False, False, False], [True, False, True]]]])
    out, w = eager_attention_forward(_Module(False), q, k, v, allowed)  # row 1 sees nothing (finfo.min mask)
    assert out[0, 1].abs().sum() == 0 and w[0, :, 1].abs().sum() == 0
    table = torch.zeros(2, 1)  # only d = 0 allowed, future excluded: the diagonal survives
    table[1, 0] = float("-inf")  # head 1 sees nothing at all (-inf bias)
    out, w = eager_attention_forward(_Module(True), q, k, v, None, distance_bias=table)
    assert torch.isfinite(out).all() and out[0, :, 1].abs().sum() == 0
    torch.testing.assert_close(out[0, :, 0], v[0, 0])
