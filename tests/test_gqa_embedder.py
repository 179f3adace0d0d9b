"""GQAEmbedder (grouped-query attention embedder): config, embeddings, backends, YaRN, checkpointing, save/load and
remote code."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

import hf_attn  # noqa: F401  registers the hf_* backends and the Auto classes
from hf_attn import GQAEmbedderConfig, GQAEmbedderModel
from hf_attn.attention import BACKENDS

EXACT_BACKENDS = ["flex_attention"]  # sdpa and hf_blockwise: tests/test_models_common.py
APPROXIMATE_BACKENDS = [name for name, entry in BACKENDS.items() if not entry.exact]


def tiny_config(**overrides) -> GQAEmbedderConfig:
    fields = dict(
        vocab_size=101,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        intermediate_size=96,
        max_position_embeddings=64,
        embedding_size=24,
    )
    fields.update(overrides)
    return GQAEmbedderConfig(**fields)


def tiny_model(**overrides) -> GQAEmbedderModel:
    torch.manual_seed(0)
    return GQAEmbedderModel(tiny_config(**overrides)).eval()


def padded_batch(lengths=(20, 13, 5), vocab_size=101, seed=1):
    """Right-padded ids [B, T] and mask [B, T] (1 = token)."""
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    ids = torch.randint(1, vocab_size, (len(lengths), t), generator=g)
    mask = torch.zeros(len(lengths), t, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return ids.masked_fill(mask == 0, 0), mask


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


# --- config ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(hidden_size=60, num_attention_heads=8), "hidden_size"),
        (dict(num_attention_heads=8, num_key_value_heads=3), "num_key_value_heads"),
        (dict(vocab_size=0), "vocab_size"),
        (dict(hidden_size=-64), "hidden_size"),
        (dict(num_hidden_layers=0), "num_hidden_layers"),
        (dict(intermediate_size=0), "intermediate_size"),
        (dict(embedding_size=0), "embedding_size"),
        (dict(max_position_embeddings=0), "max_position_embeddings"),
        (dict(sliding_window=0), "sliding_window"),
        (dict(attention_topk=-1), "attention_topk"),
        (dict(attention_dropout=1.5), "attention_dropout"),
    ],
)
def test_config_rejects_impossible_values(overrides, field):
    with pytest.raises(ValueError, match=field):
        tiny_config(**overrides)


def test_config_defaults_and_auto_config():
    config = GQAEmbedderConfig()
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers) == (30000, 512, 6)
    assert (config.num_attention_heads, config.num_key_value_heads, config.embedding_size) == (8, 2, 384)
    assert config.max_position_embeddings == 512 and config.max_sequence_length == 512
    assert config.rope_parameters["rope_type"] == "default"

    built = AutoConfig.for_model("gqa_embedder", hidden_size=64, num_attention_heads=4, num_key_value_heads=1)
    assert isinstance(built, GQAEmbedderConfig)
    assert (built.hidden_size, built.num_key_value_heads, built.head_dim) == (64, 1, 16)
    assert GQAEmbedderConfig(num_key_value_heads=None).num_key_value_heads == 8


def test_init_weights():
    model = tiny_model(pad_token_id=3)
    assert torch.count_nonzero(model.embed_tokens.weight[3]) == 0
    assert torch.equal(model.norm.weight, torch.ones(64))
    assert model.layers[0].self_attn.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.2)


def test_default_model_has_about_39m_parameters():
    with torch.device("meta"):
        model = GQAEmbedderModel(GQAEmbedderConfig())
    n = sum(p.numel() for p in model.parameters())
    print(f"GQAEmbedder default config: {n:,} parameters ({n / 1e6:.2f}M)")
    assert 38.5e6 <= n <= 39.5e6


# --- embeddings ------------------------------------------------------------------------------------------------


def test_tuple_output_hidden_states_and_attentions():
    model = tiny_model()
    model.set_attn_implementation("eager")  # the backend that returns attention weights
    ids, mask = padded_batch()
    with torch.no_grad():
        out = model(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        as_tuple = model(ids, attention_mask=mask, return_dict=False)
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2
    with torch.no_grad():
        torch.testing.assert_close(out.hidden_states[0], model.embed_tokens(ids))
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)  # after the final norm, as in transformers
    assert out.attentions[0].shape == (3, 8, 20, 20)
    torch.testing.assert_close(as_tuple[1], out.pooler_output)
    model.set_attn_implementation("sdpa")  # returns no weights: transformers records none
    with torch.no_grad():
        assert model(ids, attention_mask=mask, output_attentions=True).attentions == ()


# --- attention backends ----------------------------------------------------------------------------------------


@pytest.fixture
def uncompiled_flex_attention(monkeypatch):
    """transformers compiles flex_attention and its BlockMask on first use (~20 s on 2 CPU cores). Uncompiled they
    compute the same function through the same code path, so the fast tests run them eagerly; the compiled path is
    a slow test."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    from transformers import masking_utils
    from transformers.integrations import flex_attention as hf_flex

    def eager_flex(query, key, value, training=False, **kwargs):
        return flex_attention(query, key, value, **kwargs)

    def eager_block_mask(*args, _compile=False, **kwargs):
        return create_block_mask(*args, _compile=False, **kwargs)

    monkeypatch.setattr(hf_flex, "compile_friendly_flex_attention", eager_flex)
    monkeypatch.setattr(masking_utils, "create_block_mask", eager_block_mask)


@pytest.mark.parametrize("backend", EXACT_BACKENDS)
def test_exact_backends_match_eager_with_padding_and_gqa(backend, uncompiled_flex_attention):
    assert_backend_matches_eager(backend)


@pytest.mark.slow
def test_compiled_flex_attention_matches_eager():
    assert_backend_matches_eager("flex_attention")


def assert_backend_matches_eager(backend: str) -> None:
    model = tiny_model()
    ids, mask = padded_batch()
    with torch.no_grad():
        ref = model(ids, attention_mask=mask)
        model.set_attn_implementation(backend)
        assert model.config._attn_implementation == backend
        out = model(ids, attention_mask=mask)
    # Padded query rows are never pooled; compare the real tokens and the embeddings.
    real = mask.bool()
    assert rel_err(out.last_hidden_state[real], ref.last_hidden_state[real]) < 1e-4
    assert rel_err(out.pooler_output, ref.pooler_output) < 1e-4


# --- inputs and YaRN -------------------------------------------------------------------------------------------


def test_bad_inputs_raise_value_error():
    model = tiny_model()
    with pytest.raises(ValueError, match="101"):
        model(torch.tensor([[1, 2, 101]]))
    with pytest.raises(ValueError, match="vocab"):
        model(torch.tensor([[-1, 2, 3]]))
    with pytest.raises(ValueError, match=r"position_ids.*\[batch \(=1\) or 1, seq_len \(=3\)\].*\(1, 4\)"):
        model(torch.tensor([[1, 2, 3]]), position_ids=torch.arange(4)[None])


@pytest.mark.parametrize("key", ["rope_scaling", "rope_parameters"])
def test_yarn_extends_the_limit_and_uses_transformers_frequencies(key):
    n = 16
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": n}
    model = tiny_model(max_position_embeddings=4 * n, **{key: dict(yarn)})
    assert model.config.rope_parameters["rope_type"] == "yarn"
    assert model.config.max_sequence_length == 4 * n

    with torch.no_grad():
        out = model(torch.ones(1, 4 * n, dtype=torch.long)).pooler_output
    assert torch.isfinite(out).all()

    plain = tiny_model(max_position_embeddings=4 * n)
    expected, scaling = ROPE_INIT_FUNCTIONS["yarn"](model.config, None)
    torch.testing.assert_close(model.rotary_emb.inv_freq, expected)
    assert model.rotary_emb.attention_scaling == pytest.approx(scaling)
    assert not torch.allclose(model.rotary_emb.inv_freq, plain.rotary_emb.inv_freq)


def test_yarn_context_is_original_times_factor_not_max_position_embeddings():
    model = tiny_model(
        max_position_embeddings=16,
        rope_scaling={"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 16},
    )
    assert model.config.max_sequence_length == 32


# --- training and persistence ----------------------------------------------------------------------------------


