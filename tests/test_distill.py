"""Teacher-target distillation (hf_attn.training.embed.distill): the sentence pool, the on-disk teacher-target cache,
static token vectors, student initialisation from them, and a short cached-target training run. Tiny fixtures only."""

from __future__ import annotations

import gzip
import json
import math
import random
from pathlib import Path

import pytest
import torch

from hf_attn.training.embed import distill
from hf_attn.training.embed.teacher import load_teacher

_WORDS = ["a man", "a woman", "the dog", "two kids", "a cat", "the chef", "a player", "a girl", "the band", "a bird"]
_ACTS = ["is riding a bike", "plays the guitar", "is eating pasta", "runs in the park", "reads a book",
         "climbs a tree", "sings a song", "drives a red car"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("distill_data")
    rng = random.Random(0)
    (root / "nli").mkdir()
    with gzip.open(root / "nli" / "train.jsonl.gz", "wt") as fh:
        for s in _WORDS:
            for a in _ACTS:
                fh.write(json.dumps({"premise": f"{s} {a} outside today .", "hypothesis": f"{s} {a} .",
                                     "label": "entailment"}) + "\n")
    text = "\n".join(" ".join(f"{rng.choice(_WORDS).capitalize()} {rng.choice(_ACTS)} in the morning light."
                              for _ in range(20)) for _ in range(40))
    (root / "text.txt").write_text(text)
    lines = []
    for _ in range(40):
        s, a, s2, a2 = rng.choice(_WORDS), rng.choice(_ACTS), rng.choice(_WORDS), rng.choice(_ACTS)
        lines.append(f"{s} {a}.,{s2} {a2}.,{(5.0 if (s, a) == (s2, a2) else 2.5 * (s == s2) + rng.random()):.2f}")
    (root / "stsb").mkdir()
    (root / "stsb" / "stsb-en-dev.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def teacher_dir(data_dir, tmp_path_factory) -> str:
    """A tiny sentence-transformers folder trained here: the stand-in for all-MiniLM-L6-v2."""
    from hf_attn.training.embed import train_embedder
    from hf_attn.training.embed.args import EmbedTrainingArguments

    out = tmp_path_factory.mktemp("teacher")
    res = train_embedder(EmbedTrainingArguments(
        model="gqa_embedder", data_dir=str(data_dir), dataset=["nli/train.jsonl.gz"], output_dir=str(out),
        hidden_size=24, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, intermediate_size=48,
        embedding_size=24, vocab_size=200, max_seq_length=24, batch_size=16, grad_accum_steps=1, max_steps=1,
        eval_steps=0, save_steps=0, logging_steps=1))
    return res["best_model_dir"]


def test_sentence_pool_is_deduplicated_capped_and_seeded(data_dir):
    pool = distill.sentence_pool(data_dir, text_source="text.txt", pair_folders=("nli",))
    assert len(pool) == len(set(pool))
    assert any(s.endswith("outside today .") for s in pool)  # NLI premises
    assert any(s.endswith("morning light.") for s in pool)  # text sentences
    capped = distill.sentence_pool(data_dir, 30, seed=1, text_source="text.txt", pair_folders=("nli",))
    assert len(capped) == 30
    assert capped == distill.sentence_pool(data_dir, 30, seed=1, text_source="text.txt", pair_folders=("nli",))
    assert capped != distill.sentence_pool(data_dir, 30, seed=2, text_source="text.txt", pair_folders=("nli",))
    with pytest.raises(ValueError, match="needs --data-dir"):
        distill.sentence_pool(None)


def test_sentence_pool_takes_only_the_train_files_of_evaluation_folders(tmp_path):
    for folder, files in {"msrp": ("msrp_train", "msrp_test"), "stsb": ()}.items():
        (tmp_path / folder).mkdir()
        for name in files:
            with gzip.open(tmp_path / folder / f"{name}.jsonl.gz", "wt") as fh:
                fh.write(json.dumps({"sentence1": f"from {name} one two", "sentence2": f"also {name} three four",
                                     "label": 1}) + "\n")
    (tmp_path / "stsb" / "stsb-en-train.csv").write_text("a stsb train sentence,another stsb train one,3.0\n")
    (tmp_path / "stsb" / "stsb-en-test.csv").write_text("a stsb test sentence,another stsb test one,3.0\n")
    pool = distill.sentence_pool(tmp_path, pair_folders=("msrp", "stsb"))
    assert sorted(pool) == sorted(["from msrp_train one two", "also msrp_train three four",
                                   "a stsb train sentence", "another stsb train one"])


def test_teacher_targets_are_cached_resumable_and_equal_to_the_teacher(teacher_dir, tmp_path):
    teacher = load_teacher(teacher_dir)
    texts = [f"{w} {a}." for w in _WORDS for a in _ACTS][:37]
    direct = teacher.encode(texts, convert_to_tensor=True, normalize_embeddings=True).float()
    first = distill.cached_teacher_embeddings(teacher, texts, tmp_path, shard_size=10, progress=False)
    torch.testing.assert_close(first, direct, atol=1e-5, rtol=0)
    (folder,) = tmp_path.glob("targets-*")
    shards = [folder / f"shard-{distill._fingerprint(*texts[i:i + 10])}.safetensors" for i in range(0, 37, 10)]
    assert sorted(folder.glob("shard-*.safetensors")) == sorted(shards)

    calls = []
    real_encode = teacher.encode
    teacher.encode = lambda chunk, **kw: calls.append(len(chunk)) or real_encode(chunk, **kw)
    assert torch.equal(distill.cached_teacher_embeddings(teacher, texts, tmp_path, shard_size=10, progress=False),
                       first)
    assert calls == []  # everything came from disk
    shards[2].unlink()  # a run killed before this shard was written
    again = distill.cached_teacher_embeddings(teacher, texts, tmp_path, shard_size=10, progress=False)
    assert calls == [10] and torch.equal(again, first)  # only the missing shard was recomputed
    prefix = distill.cached_teacher_embeddings(teacher, texts[:20], tmp_path, shard_size=10, progress=False)
    assert calls == [10] and torch.equal(prefix, first[:20])  # a prefix pool reuses the shards
    other = distill.cached_teacher_embeddings(teacher, texts[:-1], tmp_path, shard_size=10, progress=False)
    assert calls == [10, 6] and torch.equal(other, first[:-1])  # only the changed last shard is new

    shards[0].write_bytes(b"not a safetensors file")
    with pytest.raises(RuntimeError, match=r"shard-[0-9a-f]+.safetensors is unreadable .*delete it"):
        distill.cached_teacher_embeddings(teacher, texts, tmp_path, shard_size=10, progress=False)


def test_static_token_vectors_are_the_teachers_output_for_each_token(teacher_dir, tmp_path):
    teacher = load_teacher(teacher_dir)
    tok = teacher.tokenizer
    vectors = distill.static_token_vectors(teacher, tok, cache_dir=tmp_path)
    assert vectors.shape == (len(tok), teacher[0].auto_model.config.hidden_size)
    i = tok.convert_tokens_to_ids("dog") if "dog" in tok.get_vocab() else 7
    enc = {"input_ids": torch.tensor([[tok.cls_token_id, i, tok.sep_token_id]]),
           "attention_mask": torch.ones(1, 3, dtype=torch.long)}
    with torch.no_grad():
        expected = teacher[0].auto_model(**enc).last_hidden_state.mean(1)[0]
    torch.testing.assert_close(vectors[i], expected, atol=1e-5, rtol=0)
    assert torch.equal(distill.static_token_vectors(teacher, tok, cache_dir=tmp_path), vectors)  # from the cache


def _tiny_tan(vocab, hidden=32, coords=32, embedding_size=None):
    from hf_attn import TanConfig, TanModel

    return TanModel(TanConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=16, chebyshev_degree=8, num_token_coordinates=coords,
                              embedding_size=embedding_size))


def _tiny_gqa(vocab, hidden=32):
    from hf_attn import GQAEmbedderConfig, GQAEmbedderModel

    return GQAEmbedderModel(GQAEmbedderConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2,
                                              num_attention_heads=4, num_key_value_heads=2, intermediate_size=64))


@pytest.mark.parametrize("kind", ["tan", "gqa_embedder"])
def test_init_from_static_vectors_starts_as_the_static_model(kind):
    """At step 0 the sentence embedding is the static model's: the weighted mean of the token vectors (padding and
    batch composition do not matter); the attention/MLP outputs are zero, so only training adds context."""
    torch.manual_seed(0)
    vocab, dim = 120, 20
    vectors, weights = torch.randn(vocab, dim), torch.rand(vocab) * 3
    model = _tiny_tan(vocab) if kind == "tan" else _tiny_gqa(vocab)
    assert "static start" in model.init_from_static_vectors(vectors, weights)
    model.eval()
    ids = torch.randint(0, vocab, (6, 9))
    mask = torch.ones_like(ids)
    mask[2, 4:] = 0
    mask[5, 1:] = 0
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask).pooler_output
    expected = torch.stack([(vectors[ids[b]] * weights[ids[b], None] * mask[b, :, None]).sum(0) for b in range(6)])
    cos = torch.nn.functional.cosine_similarity(out[:, :dim].double(), expected.double())
    assert cos.min().item() > 0.9999
    assert out[:, dim:].abs().max().item() < 1e-6  # the norm channel never reaches the sentence embedding
    # without the weights the start differs (they are part of it, not dropped by the RMSNorms)
    plain = torch.stack([(vectors[ids[b]] * mask[b, :, None]).sum(0) for b in range(6)])
    assert torch.nn.functional.cosine_similarity(out[:, :dim].double(), plain.double()).min().item() < 0.99


def test_init_from_static_vectors_keeps_the_top_principal_columns_when_narrower_and_checks_shapes():
    torch.manual_seed(0)
    vocab = 80
    vectors = torch.randn(vocab, 6) @ torch.randn(6, 40)  # rank 6, 40 wide: 15 columns hold all of it
    tan = _tiny_tan(vocab, hidden=32, coords=16)
    tan.init_from_static_vectors(vectors)
    assert tan.config.token_code == "teacher"
    ids = torch.randint(0, vocab, (4, 7))
    with torch.no_grad():
        out = tan.eval()(input_ids=ids).pooler_output.double()
    sims = torch.nn.functional.normalize(out, dim=-1) @ torch.nn.functional.normalize(out, dim=-1).T
    ref = torch.nn.functional.normalize(vectors[ids].sum(1).double(), dim=-1)
    torch.testing.assert_close(sims, ref @ ref.T, atol=2e-3, rtol=0)  # same geometry through 15 columns
    with pytest.raises(ValueError, match="cover 10 tokens"):
        tan.init_from_static_vectors(vectors[:10])
    with pytest.raises(ValueError, match="num_token_coordinates <= hidden_size"):
        _tiny_tan(vocab, hidden=16, coords=32).init_from_static_vectors(vectors)
    with pytest.raises(ValueError, match="embedding_size=8"):
        _tiny_tan(vocab, hidden=32, coords=32, embedding_size=8).init_from_static_vectors(vectors)
    with pytest.raises(ValueError, match="NaN or inf"):
        _tiny_gqa(vocab).init_from_static_vectors(torch.full((vocab, 4), float("nan")))


def test_static_model_vectors_follow_the_students_token_ids(teacher_dir):
    """A model2vec static model on the teacher's tokenizer, re-indexed by token string; a student started from it
    embeds sentences as the static model does."""
    np = pytest.importorskip("numpy")
    model2vec = pytest.importorskip("model2vec")
    from tokenizers import Tokenizer

    from hf_attn.training.tokenizer import load_tokenizer

    tok = load_tokenizer(teacher_dir)
    fast = Tokenizer.from_file(str(Path(teacher_dir) / "tokenizer.json"))
    rng = np.random.default_rng(0)
    table = rng.standard_normal((fast.get_vocab_size(), 12)).astype(np.float32)
    static = model2vec.StaticModel(vectors=table, tokenizer=fast, weights=rng.random(fast.get_vocab_size()) + 0.1)
    vectors, weights = distill.static_model_vectors(static, tok, log=lambda *_: None)
    the = tok.convert_tokens_to_ids("the")
    torch.testing.assert_close(vectors[the], torch.from_numpy(table[fast.token_to_id("the")]))
    assert weights[the].item() == pytest.approx(float(static.weights[fast.token_to_id("the")]))
    assert vectors[tok.cls_token_id].abs().sum() == 0 and weights[tok.sep_token_id] == 0  # static models skip them

    student = _tiny_tan(len(tok))
    student.init_from_static_vectors(vectors, weights)
    texts = [f"{w} {a}." for w in _WORDS[:4] for a in _ACTS[:3]]
    enc = tok(texts, padding=True, return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        ours = student.eval()(**enc).pooler_output[:, :12].double()
    theirs = torch.from_numpy(static.encode(texts)).double()
    assert torch.nn.functional.cosine_similarity(ours, theirs).min().item() > 0.999

    with pytest.raises(ValueError, match="built on another tokenizer"):
        distill.static_model_vectors(static, _OtherTok(), log=print)


class _OtherTok:
    """A tokenizer sharing no token with the static model's."""

    all_special_ids = [0]

    def get_vocab(self):
        return {f"zz{i}": i for i in range(50)}

    def __len__(self):
        return 50


def test_cached_target_training_run(data_dir, teacher_dir, tmp_path):
    from hf_attn.training.embed import train_embedder
    from hf_attn.training.embed.args import EmbedTrainingArguments, finalize_args

    for model in ("tan", "gqa_embedder"):
        res = train_embedder(EmbedTrainingArguments(
            model=model, data_dir=str(data_dir), output_dir=str(tmp_path / model), teacher=teacher_dir,
            tokenizer=teacher_dir, distill_pool=80, unsupervised_source="text.txt", teacher_cache=str(tmp_path / "c"),
            init_from_teacher=True, teacher_init="tokenlearn" if model == "tan" else "static",
            distill_target="both", hidden_size=16, num_hidden_layers=1,
            num_attention_heads=2, num_key_value_heads=1, intermediate_size=32, embedding_size=16,
            max_seq_length=24, batch_size=16, grad_accum_steps=1, max_steps=3, eval_steps=0, save_steps=0,
            logging_steps=1, model_kwargs='{"chebyshev_degree": 4, "num_token_coordinates": 4}' if model == "tan"
            else None))
        assert res["status"] == "completed" and res["steps"] == 3 and res["distill_pool"] == 80
        assert all(math.isfinite(h["distill"]) for h in res["history"])
        if model == "tan":
            tan = res
    (folder,) = (tmp_path / "c").glob("targets-*")
    assert len(list(folder.glob("shard-*"))) == 1  # the second model reused the first one's targets
    (start,) = (tmp_path / "c").glob("static-trained-*.safetensors")  # TAN's tokenlearn start, cached
    assert tan["static_start"] == str(start) and res["static_start"] is None  # recorded by the run that used it
    with pytest.raises(ValueError, match="--distill-pool needs --teacher"):
        finalize_args(EmbedTrainingArguments(distill_pool=10))
    with pytest.raises(ValueError, match="--teacher-init tokenlearn .* needs --distill-pool"):
        finalize_args(EmbedTrainingArguments(teacher=teacher_dir, init_from_teacher=True, teacher_init="tokenlearn"))


def test_length_grouped_sampler_groups_lengths_and_is_seeded_per_epoch():
    rng = random.Random(0)
    texts = ["w " * rng.randint(1, 60) for _ in range(400)]
    sampler = distill.length_grouped_sampler(texts, batch_size=16, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(400))  # every text once per epoch
    assert list(sampler) == first  # same (seed, epoch): same order, however often it is iterated (resume)
    sampler.set_epoch(1)
    assert list(sampler) != first
    again = distill.length_grouped_sampler(texts, batch_size=16, seed=3)
    assert list(again) == first

    def padding(order):  # padded positions of batches of 16 consecutive indices
        batches = [order[i:i + 16] for i in range(0, len(order), 16)]
        return sum(max(len(texts[j]) for j in b) * len(b) - sum(len(texts[j]) for j in b) for b in batches)

    assert padding(first) < 0.5 * padding(rng.sample(range(400), 400))


def test_train_static_vectors_fits_held_out_targets_and_stops_early(teacher_dir):
    """tokenlearn's recipe on a tiny pool whose targets are a fixed static model's sentence embeddings: the held-out
    MSE falls below the start's, training stops at the first epoch that does not improve it, the returned weights
    are zero on special tokens."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(teacher_dir)
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(len(tok), 12, generator=g)
    texts = [f"{s} {a} {b}" for s in _WORDS for a in _ACTS for b in ("today", "now", "again")]
    random.Random(0).shuffle(texts)

    def embed(vectors, batch):
        ids = tok(batch, add_special_tokens=False)["input_ids"]
        return torch.stack([vectors[row].mean(0) for row in ids])

    targets = embed(truth, texts) + 0.3 * torch.randn(len(texts), 12, generator=g)  # noise: it can overfit
    start = truth + 1.5 * torch.randn(truth.shape, generator=g)
    log = []
    vectors, weights = distill.train_static_vectors(start, tok, texts[:200], targets[:200],
                                                    heldout=(texts[200:], targets[200:]), epochs=200,
                                                    batch_size=32, lr=1e-2, log=log.append)
    mses = [float(line.split("held-out MSE ")[1].split()[0]) for line in log if "held-out MSE" in line]
    assert mses[-2] < 0.5 * mses[0]  # the returned epoch is the one before the last logged
    assert len(mses) < 201 and mses[-1] >= mses[-2]  # stopped at the first epoch that did not improve
    assert weights[tok.all_special_ids].abs().max() == 0
