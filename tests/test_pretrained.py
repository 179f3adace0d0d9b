"""hf_attn.pretrained() / pretrained_path(name) / load_model(name): ready models, shipped ones offline."""

from __future__ import annotations

import json

import pytest
from test_hub import make_model, make_tokenizer  # the tiny models and tokenizer the export tests use

import hf_attn
from hf_attn import pretrained_models
from hf_attn.hub import export

MTEB_RESULT = {"task_name": "STSBenchmark", "dataset_revision": "r",
               "scores": {"test": [{"cosine_spearman": 0.4321, "hf_subset": "default"}]}}


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A package data folder with one shipped tiny TAN (an export folder) and one listed-only model."""
    root = tmp_path / "shipped_models"
    checkpoint = tmp_path / "checkpoint"
    hf_attn.save_sentence_transformer(make_model("tan"), make_tokenizer(), checkpoint)
    export(checkpoint, root / "tan-tiny", eval_results=MTEB_RESULT, verify=False)
    index = {"models": [
        {"name": "tan-tiny", "description": "a tiny TAN", "recipe": "hf-attn quickstart", "folder": "tan-tiny"},
        {"name": "gqa-big", "description": "larger", "recipe": "python recipes/train_embed.py --config X.yaml",
         "scores": {"MTEB STSBenchmark test cosine_spearman": 0.8}},
    ]}
    (root / "index.json").write_text(json.dumps(index))
    monkeypatch.setattr(pretrained_models, "SHIPPED_DIR", root)
    return root


def test_pretrained_lists_models_with_scores_from_their_cards(shipped):
    tiny, big = hf_attn.pretrained()
    assert (tiny["name"], tiny["shipped"], tiny["path"]) == ("tan-tiny", True, str(shipped / "tan-tiny"))
    assert tiny["scores"] == {"MTEB STSBenchmark test cosine_spearman": 0.4321}  # read from the shipped card
    assert (big["shipped"], big["path"]) == (False, None)
    assert big["scores"] == {"MTEB STSBenchmark test cosine_spearman": 0.8}


def test_shipped_model_loads_by_name_offline(shipped):
    from sentence_transformers import SentenceTransformer

    path = hf_attn.pretrained_path("tan-tiny")
    assert path == shipped / "tan-tiny"
    by_name = hf_attn.load_model("tan-tiny").encode(["A man is playing a guitar."])
    by_st = SentenceTransformer(str(path), trust_remote_code=True, device="cpu").encode(["A man is playing a guitar."])
    assert by_name.shape == by_st.shape and abs(by_name - by_st).max() < 1e-5


def test_missing_models_say_what_to_do(shipped):
    with pytest.raises(FileNotFoundError, match="train it with: python recipes/train_embed.py --config X.yaml"):
        hf_attn.pretrained_path("gqa-big")
    with pytest.raises(KeyError, match="tan-tiny, gqa-big"):
        hf_attn.pretrained_path("nope")


def test_the_package_index_is_valid():
    """The index that ships: every entry has a name and a recipe; a shipped folder is a complete export."""
    for model in hf_attn.pretrained():
        assert model["name"] and model["recipe"]
        if model["shipped"]:
            assert hf_attn.pretrained_path(model["name"]).joinpath("README.md").is_file()


@pytest.mark.parametrize("name", hf_attn.pretrained_models.shipped_names())
def test_each_shipped_model_loads_offline_and_ranks_a_paraphrase_first(name):
    """A model that ships in the package: loads by name with hf_attn and by path with sentence-transformers alone
    (its integrity manifest checked), gives the same embeddings both ways, and ranks a paraphrase above an
    unrelated sentence; its card carries the STS-B test score it was selected for."""
    import torch
    from sentence_transformers import SentenceTransformer

    texts = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell sharply today."]
    ours = hf_attn.load_model(name)
    st = SentenceTransformer(str(hf_attn.pretrained_path(name)), trust_remote_code=True, device="cpu")
    a = torch.as_tensor(ours.encode(texts))
    b = st.encode(texts, convert_to_tensor=True)
    assert torch.allclose(torch.nn.functional.normalize(a, dim=-1), torch.nn.functional.normalize(b, dim=-1),
                          atol=1e-5)
    sim = torch.nn.functional.cosine_similarity(b[0:1], b[1:])
    assert sim[0] > sim[1] + 0.2
    (entry,) = [m for m in hf_attn.pretrained() if m["name"] == name]
    assert any("STSBenchmark" in k and v > 0.7 for k, v in entry["scores"].items())
