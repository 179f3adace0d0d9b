"""Shared test fixtures. Tests never reach the network; data comes from ../shared/data when present."""

from __future__ import annotations

import gzip
import json
import os
import random
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

# ---------------------------------------------------------------------------------------------------------------
# a tiny folder laid out like ../shared/data (the training, fault and loss tests share it)
# ---------------------------------------------------------------------------------------------------------------

SUBJECTS = ["a man", "a woman", "the dog", "two kids", "a cat", "the chef", "a player", "an old man", "a girl",
             "the band", "a horse", "a boy", "the crowd", "a bird", "the teacher", "a farmer"]
ACTIONS = ["is riding a bike", "plays the guitar", "is eating pasta", "runs in the park", "sleeps on a sofa",
            "is swimming in a lake", "cooks dinner", "reads a book", "climbs a tree", "sings a song",
            "is painting a wall", "drives a red car"]


def write_jsonl_gz(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A tiny folder laid out like ../shared/data: NLI pairs, a paraphrase set, STS-B dev, some text."""
    root = tmp_path_factory.mktemp("data")
    rng = random.Random(0)
    nli = []
    for s in SUBJECTS:
        for a in ACTIONS:
            premise = f"{s} {a} outside today ."
            other = rng.choice([x for x in ACTIONS if x != a])
            nli.append({"premise": premise, "hypothesis": f"{s} {a} .", "label": "entailment"})
            nli.append({"premise": premise, "hypothesis": f"{s} {other} .", "label": "contradiction"})
            nli.append({"premise": premise, "hypothesis": f"{s} is happy .", "label": "neutral"})
    write_jsonl_gz(root / "nli" / "train.jsonl.gz", nli)
    para = [{"sentence1": f"{s} {a}.", "sentence2": f"{s.capitalize()} {a} now.", "label": 1}
            for s in SUBJECTS[:8] for a in ACTIONS[:6]]
    write_jsonl_gz(root / "para" / "train.jsonl.gz", para)
    lines = []
    for _ in range(60):
        s, a = rng.choice(SUBJECTS), rng.choice(ACTIONS)
        s2, a2 = rng.choice(SUBJECTS), rng.choice(ACTIONS)
        score = 5.0 if (s, a) == (s2, a2) else (2.5 if s == s2 or a == a2 else 0.0) + rng.random()
        lines.append(f"{s} {a}.,{s2} {a2}.,{score:.2f}")
    (root / "stsb").mkdir()
    (root / "stsb" / "stsb-en-dev.csv").write_text("\n".join(lines) + "\n")
    text = " ".join(f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(ACTIONS)} in the morning light."
                    for _ in range(3000))
    (root / "text.txt").write_text(text)
    return root
