"""Shared test fixtures. Tests never reach the network; data comes from ../shared/data when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

# Without a GPU, Triton kernels can only run under the interpreter, and triton.jit fixes interpreted vs compiled
# when a kernel module is first imported — which any test importing hf_attn may do. Decide it once, here.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


# Tiny configuration of every hf_attn.registry entry: tests/test_models_common.py runs each one through the
# shared model suite (backends, checkpointing, save/load, remote code), and a registry entry without one fails
# there. Several variants of one model type exercise different code paths. 1-2 layers, hidden 32, vocabulary 100,
# room for TINY_SEQ_LEN tokens; dropout off so that training-mode runs are deterministic; weights drawn wider than
# the defaults (initializer_range=0.2) so that attention is sharp and a change of attention function shows.
TINY_SEQ_LEN = 16
TINY_CONFIGS: dict[str, dict[str, dict]] = {
    "tan": {
        "gqa": dict(
            vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=16, chebyshev_degree=8, num_token_coordinates=4, max_position_embeddings=32,
            embedding_size=24, attention_dropout=0.0, initializer_range=0.2,
        ),
    },
    "gqa_embedder": {
        "gqa": dict(
            vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=48, max_position_embeddings=32, embedding_size=24, attention_dropout=0.0,
            hidden_dropout=0.0, initializer_range=0.2,
        ),
        # YaRN-scaled RoPE (its non-persistent inverse frequencies must survive loading, remote code included)
        "yarn": dict(
            vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=1,
            intermediate_size=48, max_position_embeddings=32, embedding_size=24, attention_dropout=0.0,
            hidden_dropout=0.0, initializer_range=0.2,
            rope_parameters={"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 16},
        ),
    },
    "adaptive_span_gpt": {
        # both learnable distance masks and ALiBi: every backend gets a distance-bias table with a gradient
        "span_triangle_alibi": dict(
            vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=48, max_position_embeddings=32, position_embedding="alibi",
            use_adaptive_attention=True, use_triangle_wave_masking=True, max_span=8, softness_span_mask=2.0,
            dropout=0.0, attention_dropout=0.0, initializer_range=0.2, use_cache=False,
        ),
        # no table: RoPE and multi-query attention (one key/value head)
        "rope_mqa": dict(
            vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
            intermediate_size=48, max_position_embeddings=32, position_embedding="rope", tie_word_embeddings=False,
            dropout=0.0, attention_dropout=0.0, initializer_range=0.2, use_cache=False,
        ),
    },
}


@pytest.fixture
def tiny_config():
    """tiny_config(model_type, variant=None, **overrides): a config of TINY_CONFIGS (the first variant by default)."""
    from hf_attn import registry

    def make(model_type: str, variant: str | None = None, **overrides):
        variants = TINY_CONFIGS[model_type]
        fields = variants[variant if variant is not None else next(iter(variants))]
        return registry.get(model_type).config_class(**{**fields, **overrides})

    return make


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip the test when the folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


from hf_attn.hub import run_without_hf_attn  # noqa: E402,F401  (one copy: exports verify themselves with it too)
