"""Our losses as sentence-transformers losses (SentenceTransformerTrainer), and gradient caching.

Gradient caching must give the gradient of the full contrastive batch computed at once: that is what lets
``--grad-accum-steps`` enlarge the contrastive batch instead of averaging small-batch losses.
"""

from __future__ import annotations

import pytest
import torch
from test_hub import make_tokenizer  # the tiny WordPiece tokenizer the export tests use
from torch import nn

import hf_attn
from hf_attn.training.embed.losses import (
    EmbedderLoss,
    EmbeddingDistillationLoss,
    GradientCache,
    InfoNCELoss,
    SimilarityDistillationLoss,
    STInfoNCELoss,
    STSimilarityDistillationLoss,
)

TEXTS = ["A man is playing a guitar.", "Someone is playing an instrument.", "The stock market fell today.",
         "Attention lets every token look at every other token.", "A man plays music.", "Stocks went down.",
         "A woman is reading.", "Someone reads a book."]


def tiny_embedder(dropout: float = 0.0, vocab_size: int = 120):
    torch.manual_seed(0)
    config = hf_attn.GQAEmbedderConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                                       embedding_size=24, max_position_embeddings=64, attention_dropout=dropout,
                                       hidden_dropout=dropout)
    return hf_attn.GQAEmbedderModel(config)


def batch(n_rows: int):
    tok = make_tokenizer()
    texts = [TEXTS[i % len(TEXTS)] + " x" * (i % 5) for i in range(n_rows)]  # varied lengths: trimming is exercised
    enc = tok(texts, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def grads(*modules: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{i}.{n}": p.grad.detach().clone() for i, m in enumerate(modules) for n, p in m.named_parameters()
            if p.grad is not None}


def embedder_loss(distill: bool, teacher_dim: int = 12):
    torch.manual_seed(1)
    return EmbedderLoss(InfoNCELoss(0.05), EmbeddingDistillationLoss(24, teacher_dim) if distill else None)


@pytest.mark.parametrize("distill,dtype", [(False, torch.float64), (True, torch.float64), (True, torch.float32)])
def test_gradient_cache_equals_the_full_batch_at_once(distill, dtype):
    """12 pairs + 4 hard negatives (28 texts) in mini-batches of 5: the same loss and gradients as one pass.

    float64: equal to 1e-5 absolute (in fact ~1e-12). float32: the gradients reach ~50 at temperature 0.05, so
    the summation order alone moves them by ~1e-5 absolute; they must agree to 1e-5 of each tensor's largest entry.
    """
    ids, mask = batch(28)
    num_pairs = 12
    teacher = torch.randn(28, 12, generator=torch.Generator().manual_seed(2), dtype=dtype) if distill else None

    model, loss_fn = tiny_embedder().train().to(dtype), embedder_loss(distill).to(dtype)
    full, _ = loss_fn(model(input_ids=ids, attention_mask=mask).pooler_output, num_pairs, teacher)
    full.backward()
    expected = grads(model, loss_fn)

    model, loss_fn = tiny_embedder().train().to(dtype), embedder_loss(distill).to(dtype)
    cache = GradientCache(lambda i, m: model(input_ids=i, attention_mask=m).pooler_output, mini_batch_size=5)
    cached, parts = cache.loss(loss_fn, ids, mask, num_pairs, teacher)
    assert ("distill" in parts) == distill
    cache.backward(cached)
    got = grads(model, loss_fn)

    assert torch.allclose(cached, full, atol=1e-6)
    assert got.keys() == expected.keys() and len(got) == len(list(model.parameters())) + len(list(loss_fn.parameters()))
    if dtype == torch.float64:
        worst = max(float((got[k] - expected[k]).abs().max()) for k in got)
    else:
        worst = max(float((got[k] - expected[k]).abs().max() / expected[k].abs().max().clamp_min(1.0)) for k in got)
    assert worst <= 1e-5, worst


def test_gradient_cache_replays_dropout_masks():
    """With dropout, the second (gradient) pass must draw the masks of the first: compared with the same
    mini-batches embedded with gradients in one graph, from the same seed."""
    ids, mask = batch(16)
    model, loss_fn = tiny_embedder(dropout=0.2).train(), embedder_loss(False)
    torch.manual_seed(3)
    emb = torch.cat([model(input_ids=ids[s : s + 4], attention_mask=mask[s : s + 4]).pooler_output
                     for s in range(0, 16, 4)])
    expected_loss, _ = loss_fn(emb, 8)
    expected_loss.backward()
    expected = grads(model, loss_fn)

    model, loss_fn = tiny_embedder(dropout=0.2).train(), embedder_loss(False)
    # no trimming here (same widths as above): the comparison is about the dropout masks only
    cache = GradientCache(lambda i, m: model(input_ids=i, attention_mask=m).pooler_output, mini_batch_size=4)
    cache._chunks = lambda i, m: ((slice(s, s + 4), i[s : s + 4], m[s : s + 4]) for s in range(0, 16, 4))
    torch.manual_seed(3)
    loss, _ = cache.loss(loss_fn, ids, mask, 8)
    cache.backward(loss)
    assert torch.allclose(loss, expected_loss, atol=1e-6)
    worst = max(float((grads(model, loss_fn)[k] - expected[k]).abs().max()) for k in expected)
    assert worst <= 1e-5, worst


def test_gradient_cache_needs_loss_before_backward():
    cache = GradientCache(lambda i, m: i.float(), 2)
    with pytest.raises(RuntimeError, match="call loss"):
        cache.backward(torch.tensor(0.0, requires_grad=True))
    with pytest.raises(ValueError):
        GradientCache(lambda i, m: i, 0)


# ---- sentence-transformers losses -------------------------------------------------------------------------------


def sentence_transformer(tmp_path):
    from sentence_transformers import SentenceTransformer

    folder = tmp_path / "st"
    hf_attn.save_sentence_transformer(tiny_embedder(), make_tokenizer(), folder)
    return SentenceTransformer(str(folder), device="cpu", trust_remote_code=True)


def test_st_losses_match_ours(tmp_path):
    """On the same embeddings the sentence-transformers wrappers compute our losses."""
    model = sentence_transformer(tmp_path)
    feats = [model.tokenize(TEXTS[i::4][:2]) for i in range(3)]  # anchor, positive, negative columns, 2 rows each
    st_loss = STInfoNCELoss(model, temperature=0.07)
    value = st_loss(feats, None)
    with torch.no_grad():
        emb = [model(dict(f))["sentence_embedding"] for f in feats]
    reference = InfoNCELoss(0.07)(*emb)
    assert torch.allclose(value, reference, atol=1e-5)
    value.backward()
    assert st_loss.info_nce.log_temperature.grad is not None  # the temperature is learned

    teacher = torch.randn(2, 3, 16)
    distill = STSimilarityDistillationLoss(model)(feats, teacher)
    assert torch.allclose(distill, SimilarityDistillationLoss()(torch.cat(emb), torch.cat(list(teacher.unbind(1)))),
                          atol=1e-5)
    with pytest.raises(ValueError, match="label"):
        STSimilarityDistillationLoss(model)(feats, None)


@pytest.mark.slow
def test_sentence_transformer_trainer_with_our_losses(tmp_path):
    """4 steps of SentenceTransformerTrainer with each loss: the model and the temperature move, the loss is finite."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    pairs = Dataset.from_dict({"anchor": TEXTS[0::2] * 2, "positive": TEXTS[1::2] * 2,
                               "negative": list(reversed(TEXTS[1::2])) * 2})
    model = sentence_transformer(tmp_path)
    texts = Dataset.from_dict({"text": TEXTS})
    teacher = torch.nn.functional.normalize(torch.randn(len(TEXTS), 16, generator=torch.Generator().manual_seed(0)),
                                            dim=-1)
    texts = texts.add_column("label", teacher.tolist())

    for name, dataset, loss in (("infonce", pairs, STInfoNCELoss(model, temperature=0.05)),
                                ("similarity", texts, STSimilarityDistillationLoss(model))):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        t0 = float(loss.temperature.detach()) if name == "infonce" else None
        args = SentenceTransformerTrainingArguments(
            output_dir=str(tmp_path / name), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-2,
            warmup_steps=0, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=0,
            dataloader_drop_last=True,
        )
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
        result = trainer.train()
        assert result.global_step == 4 and torch.isfinite(torch.tensor(result.training_loss)), name
        moved = sum(not torch.equal(before[n], p.detach()) for n, p in model.named_parameters())
        assert moved > 0, name
        if name == "infonce":
            assert float(loss.temperature.detach()) != t0  # the learnable temperature is in the optimizer


# ---- train_embed: --grad-accum-steps is one contrastive batch ----------------------------------------------------

from test_training import _tiny_embed_args  # noqa: E402  (the tiny pair data come from conftest's data_dir)


@pytest.mark.slow
def test_train_embed_grad_accum_enlarges_the_contrastive_batch(data_dir, tmp_path, monkeypatch):  # noqa: F811
    """batch 4 x grad-accum 3: InfoNCE scores 12 pairs at once (once per step), the encoder sees 8-9 texts at a time."""
    from hf_attn.training.embed import losses, train_embedder

    seen, encoded = [], []
    real_loss, real_encode = losses.InfoNCELoss.forward, losses.GradientCache.loss

    def recording_loss(self, anchor, positive, negative=None):
        seen.append(anchor.shape[0])
        return real_loss(self, anchor, positive, negative)

    def recording_cache(self, loss_fn, input_ids, attention_mask, *a, **k):
        encoded.append((input_ids.shape[0], self.mini_batch_size))
        return real_encode(self, loss_fn, input_ids, attention_mask, *a, **k)

    monkeypatch.setattr(losses.InfoNCELoss, "forward", recording_loss)
    monkeypatch.setattr(losses.GradientCache, "loss", recording_cache)
    res = train_embedder(_tiny_embed_args(data_dir, tmp_path / "run", batch_size=4, grad_accum_steps=3, max_steps=2,
                                          eval_steps=0, save_steps=0))
    assert res["status"] == "completed" and res["steps"] == 2
    assert seen == [12, 12]
    assert all(rows >= 24 and size == -(-rows // 3) for rows, size in encoded) and len(encoded) == 2


def test_fitted_projection_is_the_least_squares_map_and_beats_a_random_one():
    """``fit_`` solves min_W |s W - normalise(t)|^2: the residual is orthogonal to every student column, the returned
    cosine is the one reached, and the loss at the fitted map is below the random initial projection's."""
    g = torch.Generator().manual_seed(0)
    student = torch.randn(300, 24, generator=g, dtype=torch.float64)
    teacher = student @ torch.randn(24, 12, generator=g, dtype=torch.float64) + 0.3 * torch.randn(
        300, 12, generator=g, dtype=torch.float64)
    loss = EmbeddingDistillationLoss(24, 12).double()
    before = loss(student, teacher)
    cosine = loss.fit_(student, teacher)
    w = loss.projection.weight.detach().T
    target = torch.nn.functional.normalize(teacher, dim=-1)
    residual = student @ w - target
    assert (student.T @ residual).abs().max() < 1e-6 * (student.T @ target).abs().max()
    assert cosine == pytest.approx(float(torch.nn.functional.cosine_similarity(student @ w, target).mean()))
    assert cosine > 0.9
    assert loss(student, teacher) < 0.5 * before
    with pytest.raises(ValueError, match="at least as many texts"):
        loss.fit_(student[:10], teacher[:10])


def test_a_run_on_cached_targets_fits_the_projection_before_step_0():
    """``fit_distillation_projection`` on a student and the pool's targets: the distillation loss it leaves is the
    least-squares one (below the random projection's), and a pool narrower than the student is left alone."""

    from hf_attn.training.embed import EmbedderTrainingModule, fit_distillation_projection
    from hf_attn.training.embed.distill import TargetDataset

    class Tok:  # characters as token ids: what make_encode_fn needs of a tokenizer
        def __call__(self, texts, max_length, **_):
            rows = [[3 + ord(c) % 100 for c in t[:max_length]] for t in texts]
            n = max(map(len, rows))
            ids = torch.tensor([r + [0] * (n - len(r)) for r in rows])
            return {"input_ids": ids, "attention_mask": (ids != 0).long()}

    texts = [f"{a} {b} {c}" for a in TEXTS for b in TEXTS for c in ("x", "y", "z")]
    targets = torch.randn(len(texts), 12, generator=torch.Generator().manual_seed(3))
    model = tiny_embedder()
    module = EmbedderTrainingModule(model, embedder_loss(True))
    emb = model.eval()(**{k: v for k, v in Tok()(texts, 32).items()}).pooler_output.detach()
    before = module.loss_fn.distill(emb, targets)
    messages = []
    cosine = fit_distillation_projection(module, TargetDataset(texts, targets), Tok(), 0, 32, messages.append)
    assert cosine is not None and "fitted by least squares on 192 pool sentences" in messages[0]
    assert module.loss_fn.distill(emb, targets) < before
    small = EmbedderTrainingModule(tiny_embedder(), embedder_loss(True))
    weight = small.loss_fn.distill.projection.weight.clone()
    assert fit_distillation_projection(small, TargetDataset(texts[:10], targets[:10]), Tok(), 0, 32,
                                       messages.append) is None
    assert torch.equal(small.loss_fn.distill.projection.weight, weight) and "left random" in messages[-1]
