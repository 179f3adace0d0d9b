"""A card rendered from a run's record says only what the run did: every claim is checked against the record."""

from __future__ import annotations

import json

import pytest
from test_hub import make_model, make_tokenizer  # the tiny models and tokenizer the export tests use

from hf_attn.model_cards import render_model_card

# The keys train_embed writes to summary.json for a cached-target distillation run (the quickstart's recipe),
# plus a tokenizer it would have trained had it not been given one.
EMBED_RUN = {
    "model": "tan", "steps": 40, "batch_size": 32, "learning_rate": 2e-3, "max_seq_length": 64,
    "teacher": "all-MiniLM-L6-v2", "distill_target": "embedding", "distill_pool": 2000,
    "init_from_teacher": True, "teacher_init": "static",
    "dataset": ["../shared/data/wikipedia_en_extract/wiki_en_extract.jsonl.gz", "snli_devtest_esnli", "msrp"],
    "tokenizer_type": "wordpiece", "vocab_size": 16384, "best_dev_spearman": 0.61,
}
LM_RUN = {"steps": 100, "best_step": 100, "best_val_bpc": 2.3456, "dataset": ["wiki_en_extract"],
          "tokens_per_s": 1000.0}


def _render(model, **kwargs):
    from huggingface_hub import ModelCard

    card = ModelCard(str(render_model_card(model, model_name="m", **kwargs)))
    return card.data.to_dict(), card.text


def test_embedder_card_states_the_run():
    tokenizer = make_tokenizer()
    meta, body = _render(make_model("tan"), training_config=EMBED_RUN, tokenizer=tokenizer)
    # teacher -> base_model, with the Hub relation of a model trained from it
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["base_model_relation"] == "finetune"
    # the datasets actually read, as Hub ids, in order
    assert meta["datasets"] == ["wikimedia/wikipedia", "stanfordnlp/snli", "nyu-mll/glue"]
    # the loss in the body is the run's: distillation only (a cached-target run has no contrastive term)
    assert "MSE between a learned projection of the student's embedding and the teacher's embedding" in body
    assert "2,000 unlabelled sentences" in body and "InfoNCE" not in body
    assert "started from the teacher's static token vectors" in body
    # the tokenizer's real type and size, never the one the run's options would have trained
    assert f"| tokenizer | WordPiece, {len(tokenizer):,} entries |" in body
    assert "16384" not in body and "wordpiece" not in body
    assert "| steps | 40 |" in body and "| best_dev_spearman | 0.61 |" in body


def test_contrastive_run_says_infonce_and_has_no_base_model():
    run = {"steps": 3, "dataset": ["sentence-transformers/all-nli"]}
    meta, body = _render(make_model("gqa_embedder"), training_config=run, tokenizer=make_tokenizer())
    assert "base_model" not in meta and "base_model_relation" not in meta
    assert meta["datasets"] == ["sentence-transformers/all-nli"]
    assert "symmetric InfoNCE" in body and "MSE" not in body


def test_language_model_reports_its_own_validation_bpc_on_its_data():
    meta, body = _render(make_model("adaptive_span_gpt"), training_config=LM_RUN)
    (entry,) = meta["model-index"][0]["results"]
    assert entry["dataset"] == {"name": "English Wikipedia extract", "type": "wikimedia/wikipedia",
                                "split": "validation"}
    assert entry["metrics"] == [{"type": "bpc", "value": 2.3456, "name": "Bits per character"}]
    assert meta["datasets"] == ["wikimedia/wikipedia"]
    assert "enwik8" not in body and "| English Wikipedia extract | validation | bpc | 2.3456 |" in body
    # a bpc given alone takes the dataset from the run; with no run it must name its data
    meta, _ = _render(make_model("adaptive_span_gpt"), training_config=LM_RUN, eval_results={"bpc": 2.0})
    assert meta["model-index"][0]["results"][0]["dataset"]["name"] == "English Wikipedia extract"
    # what train_lm --push-to-hub passes: the file stem becomes the dataset's name and Hub id
    meta, _ = _render(make_model("adaptive_span_gpt"),
                      eval_results={"bpc": 2.0, "dataset": "wiki_en_extract", "split": "validation"})
    assert meta["model-index"][0]["results"][0]["dataset"]["type"] == "wikimedia/wikipedia"
    with pytest.raises(ValueError, match="needs its dataset"):
        _render(make_model("adaptive_span_gpt"), eval_results={"bpc": 2.0})


def test_eval_results_of_another_model_are_refused(tmp_path):
    model = make_model("tan")
    result = {"task_name": "STSBenchmark", "scores": {"test": [{"cosine_spearman": 0.8, "hf_subset": "default"}]}}
    (tmp_path / "STSBenchmark.json").write_text(json.dumps(result))
    meta = {"name": "sentence-transformers/all-MiniLM-L6-v2", "n_parameters": 22_713_216, "embed_dim": 384}
    (tmp_path / "model_meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="describe another model .*parameters 22713216"):
        render_model_card(model, eval_results=str(tmp_path))
    params = sum(p.numel() for p in model.parameters())
    (tmp_path / "model_meta.json").write_text(json.dumps({**meta, "n_parameters": params,
                                                          "embed_dim": model.config.embedding_size}))
    card_meta, _ = _render(model, eval_results=str(tmp_path))
    assert card_meta["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.8
