"""Teacher-target distillation at scale: embed a large sentence pool with the teacher ONCE, cache the embeddings on
disk, then train the student against the cached targets, so a training step costs only the student.

This is the sentence-transformers model-distillation recipe (Reimers & Gurevych 2020, "Making Monolingual Sentence
Embeddings Multilingual using Knowledge Distillation": MSE between student and teacher sentence embeddings on
unlabelled text), with two additions that helped our small students: the in-batch similarity target
(``losses.SimilarityDistillationLoss``) and a start from the teacher's *static* token vectors (what model2vec,
Tulkens & van Dongen 2024, distils: the teacher's output for each vocabulary token on its own).

Pieces, each usable alone:

- ``sentence_pool(data_dir, ...)``: unlabelled sentences from local text (Wikipedia split into sentences, every
  NLI and paraphrase sentence), or any Hub dataset with a text column for users with network.
- ``cached_teacher_embeddings(teacher, texts, cache_dir)``: [N, D] float32 targets, computed in shards of
  safetensors under a folder keyed by (teacher, max_seq_length, texts); a killed run resumes at the first missing
  shard; progress bar.
- ``static_token_vectors(teacher, tokenizer)``: [V, D] teacher output for each token of a tokenizer alone (cached
  the same way).
- ``static_model_vectors(static_model, tokenizer)``: a model2vec/tokenlearn static model's token vectors and weights
  re-indexed by a student's tokenizer; ``train_tokenlearn_model``: that static model trained on the cached targets.
  A student starts from either kind of vectors with its own ``init_from_static_vectors``.
- ``TargetDataset`` / ``TargetCollator``: (text, target) examples and their tokenised batches.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Iterable, Sequence

import torch

from .. import data as D

# Sentence sources of ../shared/data (folders relative to --data-dir). The folders that also hold evaluation splits
# (STS-B, MSRP, Twitter URL: ``hf-attn eval``) give the sentences of their *train* files only, as text: their dev and
# test sentences never enter the pool.
POOL_FOLDERS = ("snli_devtest_esnli", "nli_datasets_felsal", "msrp", "twitter_url_paraphrase", "stsb")
EVALUATION_FOLDERS = ("stsb", "msrp", "twitter_url_paraphrase")
_TEXT_COLUMNS = ("premise", "hypothesis", "sentence1", "sentence2", "anchor", "positive", "negative", "text")


def _pair_file_sentences(spec: str, data_dir) -> list[str]:
    no_header = Path(spec).parent.name == "stsb"  # STS-B's csv files have no header row
    ds = D.load_rows(spec, data_dir, column_names=("sentence1", "sentence2", "score") if no_header else None)
    out = []
    for col in _TEXT_COLUMNS:
        if col in ds.column_names and col != "text":
            out.extend(t.strip() for t in ds[col] if isinstance(t, str) and t.strip())
    return out


def sentence_pool(
    data_dir: str | Path | None = None,
    max_sentences: int | None = None,
    seed: int = 0,
    text_source: str | None = None,
    pair_folders: Sequence[str] | None = None,
    min_words: int = 3,
) -> list[str]:
    """Unlabelled sentences for distillation: deduplicated, shuffled with ``seed``, the first ``max_sentences``.

    With ``data_dir``: the sentences of ``text_source`` (default: the Wikipedia extract, split into sentences) plus
    every sentence of the NLI and paraphrase files in ``pair_folders`` (default ``POOL_FOLDERS``; only the train files
    of ``EVALUATION_FOLDERS``), mixed in their
    natural proportions. Without: ``text_source`` alone (a Hub id or local file with a ``text`` column). The order
    does not depend on ``max_sentences``, so a smaller pool is a prefix of a larger one and reuses its cached
    teacher targets.
    """
    if data_dir is None and text_source is None:
        raise ValueError("sentence_pool needs --data-dir (local text) or a text source (a Hub dataset id or file)")
    text_sents: list[str] = []
    src = text_source or D.WIKIPEDIA_FILE
    if text_source is not None or (Path(data_dir) / src).exists():
        try:
            texts = D.load_texts(src, data_dir)
        except FileNotFoundError as e:
            raise D.DataError(f"distillation text {src!r} not found: {e}") from e
        for sents in D.iter_text_sentences(texts):
            text_sents.extend(s for s in sents if len(s.split()) >= min_words)
    pair_sents: list[str] = []
    if data_dir is not None:
        for folder in POOL_FOLDERS if pair_folders is None else pair_folders:
            for f in sorted((Path(data_dir) / folder).glob("*")) if (Path(data_dir) / folder).is_dir() else []:
                if D.is_data_file(f) and (folder not in EVALUATION_FOLDERS or "train" in f.name):
                    pair_sents.extend(s for s in _pair_file_sentences(str(f), None) if len(s.split()) >= min_words)
    pool = list(dict.fromkeys(text_sents + pair_sents))
    random.Random(seed).shuffle(pool)
    if max_sentences is not None:
        pool = pool[:max_sentences]
    if not pool:
        raise D.DataError(f"no sentences found for the distillation pool (data_dir={data_dir}, text={src})")
    return pool


# ---------------------------------------------------------------------------------------------------------------
# the teacher's cached outputs (the teacher itself: teacher.py)
# ---------------------------------------------------------------------------------------------------------------


def _fingerprint(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(str(p).encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def teacher_identity(teacher) -> str:
    """What makes two teachers give the same embeddings: the folder/id, its weights' size and the max length."""
    src = getattr(getattr(teacher[0], "auto_model", None), "name_or_path", "") or type(teacher[0]).__name__
    weights = [f for f in (Path(src) / "model.safetensors", Path(src) / "pytorch_model.bin") if f.exists()]
    size = weights[0].stat().st_size if weights else "?"
    return f"{src}|{size}|{teacher.max_seq_length}"


def _atomic_save(tensors: dict, path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)


def cached_teacher_embeddings(
    teacher,
    texts: Sequence[str],
    cache_dir: str | Path,
    batch_size: int = 128,
    shard_size: int = 8192,
    log=print,
    progress: bool = True,
) -> torch.Tensor:
    """The teacher's (L2-normalised) sentence embeddings of ``texts``: [N, D] float32, from the cache when present.

    The cache lives in ``cache_dir/targets-<teacher key>/``: one safetensors file per shard of ``shard_size``
    consecutive texts, named by the hash of those texts (written atomically). A run that stops midway keeps its
    finished shards and the next call computes only the missing ones; a pool that starts with the same texts (a
    smaller pool of the same seed) reuses them.
    """
    from safetensors.torch import load_file
    from tqdm.auto import tqdm

    texts = list(texts)
    if not texts:
        raise ValueError("cached_teacher_embeddings: no texts")
    identity = teacher_identity(teacher)
    folder = Path(cache_dir) / f"targets-{_fingerprint(identity)}"
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / "teacher.json"
    if not meta_path.exists():
        meta_path.write_text(json.dumps({"teacher": identity}, indent=1))
    n_shards = (len(texts) + shard_size - 1) // shard_size
    shards = [folder / f"shard-{_fingerprint(*texts[i * shard_size : (i + 1) * shard_size])}.safetensors"
              for i in range(n_shards)]
    missing = [i for i, p in enumerate(shards) if not p.exists()]
    todo = sum(min(shard_size, len(texts) - i * shard_size) for i in missing)
    if missing:
        log(f"teacher targets: embedding {todo} of {len(texts)} sentences into {folder}")
    bar = tqdm(total=len(texts), initial=len(texts) - todo, desc="teacher targets", unit="sent",
               disable=not progress or not missing, dynamic_ncols=True)
    for i in missing:
        chunk = texts[i * shard_size : (i + 1) * shard_size]
        with torch.inference_mode():
            emb = teacher.encode(chunk, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True,
                                 show_progress_bar=False)
        _atomic_save({"embeddings": emb.float().cpu().contiguous()}, shards[i])
        bar.update(len(chunk))
    bar.close()
    parts = []
    for p in shards:
        try:
            parts.append(load_file(str(p))["embeddings"])
        except Exception as e:  # noqa: BLE001 - a damaged shard: say which, and how to recover
            raise RuntimeError(f"teacher-target cache shard {p} is unreadable ({e}); delete it and run again to "
                               "recompute that shard") from e
    out = torch.cat(parts)
    if out.shape[0] != len(texts):
        raise RuntimeError(f"teacher-target cache {folder} holds {out.shape[0]} rows for {len(texts)} texts; delete "
                           "the folder and run again")
    return out


@torch.inference_mode()
def static_token_vectors(teacher, tokenizer, cache_dir: str | Path | None = None, batch_size: int = 512,
                         log=print) -> torch.Tensor:
    """[V, D] float32: the teacher's mean-pooled output for each token of ``tokenizer`` on its own.

    When ``tokenizer`` is the teacher's (same vocabulary), token id i is fed as [CLS] i [SEP]; otherwise each token's
    text (WordPiece ``##`` continuation marks removed) is tokenised by the teacher. Not normalised: the norm says how
    much a token moves a mean-pooled sentence embedding. Cached like ``cached_teacher_embeddings``.
    """
    from tqdm.auto import tqdm

    t_tok = teacher.tokenizer
    vocab = tokenizer.get_vocab()
    n = len(tokenizer)
    key = _fingerprint("static", teacher_identity(teacher), _fingerprint(*sorted(vocab.items())))
    path = Path(cache_dir) / f"static-{key}.safetensors" if cache_dir is not None else None
    if path is not None and path.exists():
        from safetensors.torch import load_file

        return load_file(str(path))["vectors"]
    transformer = teacher[0].auto_model
    device = next(transformer.parameters()).device
    same = vocab == t_tok.get_vocab()
    ids = list(range(n))
    vectors = torch.zeros(n, transformer.config.hidden_size)
    for start in tqdm(range(0, n, batch_size), desc="static token vectors", dynamic_ncols=True,
                      disable=n < 4 * batch_size):
        chunk = ids[start : start + batch_size]
        if same:
            enc = {"input_ids": torch.tensor([[t_tok.cls_token_id, i, t_tok.sep_token_id] for i in chunk]),
                   "attention_mask": torch.ones(len(chunk), 3, dtype=torch.long)}
        else:
            words = [tokenizer.convert_ids_to_tokens(i).removeprefix("##") or " " for i in chunk]
            enc = t_tok(words, padding=True, truncation=True, max_length=16, return_tensors="pt",
                        return_token_type_ids=False)
        enc = {k: v.to(device) for k, v in enc.items()}
        hidden = transformer(**enc).last_hidden_state.float()
        mask = enc["attention_mask"].unsqueeze(-1).float()
        vectors[start : start + len(chunk)] = ((hidden * mask).sum(1) / mask.sum(1)).cpu()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_save({"vectors": vectors.contiguous()}, path)
    return vectors


def principal_directions(vectors: torch.Tensor, k: int) -> torch.Tensor:
    """[V, D] -> [V, k]: the centred vectors' coordinates on their top-k principal directions (float64 SVD)."""
    x = vectors.double() - vectors.double().mean(0, keepdim=True)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    return (x @ v[:k].T).float()


def static_model_vectors(static_model, tokenizer, log=print) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A model2vec ``StaticModel`` (or its folder; tokenlearn trains the same kind) -> (vectors [len(tokenizer), D],
    weights [len(tokenizer)] or None), re-indexed by ``tokenizer``'s ids through the token strings: what a model's
    ``init_from_static_vectors`` takes. Tokens the static model lacks, and ``tokenizer``'s special tokens (a static
    model encodes without them), get zero rows. Raises ValueError when fewer than half of the tokens match (the
    static model was built on another tokenizer)."""
    import numpy as np
    from model2vec import StaticModel

    model = static_model if isinstance(static_model, StaticModel) else StaticModel.from_pretrained(str(static_model))
    table = torch.from_numpy(np.asarray(model.embedding, dtype=np.float32))
    static_vocab = model.tokenizer.get_vocab()
    mapping = None if model.token_mapping is None else np.asarray(model.token_mapping)
    source_weights = None if model.weights is None else torch.from_numpy(np.asarray(model.weights, dtype=np.float32))
    vectors = torch.zeros(len(tokenizer), table.shape[1])
    weights = None if source_weights is None else torch.zeros(len(tokenizer))
    special = set(tokenizer.all_special_ids)
    matched = 0
    for token, i in tokenizer.get_vocab().items():
        j = static_vocab.get(token)
        if j is None or i in special or i >= len(tokenizer):
            continue
        vectors[i] = table[int(mapping[j]) if mapping is not None else j]
        if weights is not None:
            weights[i] = source_weights[j]
        matched += 1
    if matched < len(tokenizer) // 2:
        raise ValueError(f"the static model knows only {matched} of the tokenizer's {len(tokenizer)} tokens: it was "
                         "built on another tokenizer; build it from the student's tokenizer (the teacher's)")
    log(f"static model: {matched} of {len(tokenizer)} tokens matched, {table.shape[1]} dims")
    return vectors, weights


def train_tokenlearn_model(teacher_path: str, texts: Sequence[str], targets: torch.Tensor, pca_dims: int = 256,
                           device: str = "cpu", patience: int = 5):
    """The tokenlearn static model (MinishLab's recipe behind the potion models) of a teacher, trained on cached
    teacher targets: model2vec's distillation of the teacher (PCA ``pca_dims``, float32 vectors: tokenlearn's
    trainer fails on float16), then tokenlearn's ``train_model`` steps (targets PCA'd to ``pca_dims``, MSE through a
    linear head, per-token weights learned, early stopping after ``patience`` evaluations without improvement on
    its last 10% of texts, at most 10,000; tokenlearn's default is 5). Returns a ``model2vec.StaticModel``; pip
    install 'hf-attn[bench]'."""
    from model2vec.distill import distill
    from sklearn.decomposition import PCA
    from tokenlearn.pretrain import TextDataset, train_supervised

    base = distill(model_name=teacher_path, pca_dims=pca_dims, quantize_to="float32")
    vec = torch.from_numpy(PCA(n_components=pca_dims).fit_transform(targets.float().numpy()))
    n_val = min(10_000, len(texts) // 10)
    texts = list(texts)
    train = TextDataset(texts[:-n_val], vec[:-n_val], base.tokenizer)
    val = TextDataset(texts[-n_val:], vec[-n_val:], base.tokenizer)
    return train_supervised(train_dataset=train, validation_dataset=val, model=base, device=device, patience=patience)


def model2vec_vectors(vectors: torch.Tensor, pca_dims: int | None = 256,
                      sif_coefficient: float | None = 1e-4) -> torch.Tensor:
    """model2vec's recipe (Tulkens & van Dongen 2024) on static token vectors [V, D]: PCA to ``pca_dims``, then each
    vector scaled by the SIF weight a / (a + p(token)), p the Zipf probability of its rank in the vocabulary."""
    x = vectors.double()
    if pca_dims is not None and pca_dims < x.shape[1]:
        x = principal_directions(x, pca_dims).double()
    if sif_coefficient is not None:
        inv_rank = 1.0 / torch.arange(2, x.shape[0] + 2, dtype=torch.float64)
        x = x * (sif_coefficient / (sif_coefficient + inv_rank / inv_rank.sum()))[:, None]
    return x.float()


def train_static_vectors(vectors: torch.Tensor, tokenizer, texts: Sequence[str], targets: torch.Tensor,
                         heldout: tuple[Sequence[str], torch.Tensor] | None = None, epochs: int = 10,
                         batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
                         log=print) -> tuple[torch.Tensor, torch.Tensor]:
    """tokenlearn's recipe (MinishLab; the potion models) in plain torch: static token vectors [V, D] trained on
    teacher targets. Returns (unit vectors [V, D], per-token weights [V]).

    As in tokenlearn's ``StaticModelFineTuner``: each vector is split into a unit direction and a weight (its
    norm); a sentence is sum_i w_i v_i / n over its n tokens (no special tokens); a linear head maps it to the
    targets' top-D principal coordinates, trained by MSE with AdamW (lr 1e-3, batch 256). Each epoch ends with the
    MSE on ``heldout`` (texts, targets); training stops at the first epoch that does not lower it and the best epoch
    is returned (tokenlearn's early stopping, patience 1); without ``heldout``, all ``epochs`` run. Special tokens
    get weight 0.
    """
    from tqdm.auto import tqdm

    d = vectors.shape[1]
    if targets.shape[0] != len(texts) or not len(texts):
        raise ValueError(f"train_static_vectors: {len(texts)} texts but {targets.shape[0]} targets")
    mean = targets.double().mean(0, keepdim=True)
    basis = torch.linalg.svd(targets.double() - mean, full_matrices=False)[2][:d].T  # [Ct, <=D]

    def tokenize(some_texts):  # once, before the epochs: each text's token ids as a tensor
        ids = tokenizer(list(some_texts), add_special_tokens=False, truncation=True, max_length=512)["input_ids"]
        return [torch.tensor(row, dtype=torch.long) for row in ids]

    norms = vectors.float().norm(dim=1)
    table = torch.nn.Parameter(vectors.float() / norms.clamp_min(1e-12)[:, None])
    weights = torch.nn.Parameter(norms.clone())
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
    head = torch.nn.Linear(d, basis.shape[1])
    opt = torch.optim.AdamW([table, weights, *head.parameters()], lr=lr)

    def forward(rows):
        flat = torch.cat(rows)
        lengths = torch.tensor([len(r) for r in rows])
        offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)[:-1]])
        w = weights.clone()
        w[special] = 0.0
        bag = torch.nn.functional.embedding_bag(flat, table, offsets, mode="sum", per_sample_weights=w[flat])
        return head(bag / lengths.clamp_min(1)[:, None])

    def project(t):
        return ((t.double() - mean) @ basis).float()

    train_ids, train_targets = tokenize(texts), project(targets)
    if heldout is not None:
        heldout_ids, heldout_targets = tokenize(heldout[0]), project(heldout[1])

    def heldout_mse():
        if heldout is None:
            return float("nan")
        with torch.no_grad():
            total = sum(float(torch.nn.functional.mse_loss(forward(heldout_ids[i : i + 1024]),
                                                           heldout_targets[i : i + 1024], reduction="sum"))
                        for i in range(0, len(heldout_ids), 1024))
            return total / (len(heldout_ids) * basis.shape[1])

    best = (heldout_mse(), table.detach().clone(), weights.detach().clone())
    log(f"static vectors: training on {len(texts)} sentences (tokenlearn recipe), held-out MSE {best[0]:.4g} at start")
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        order = torch.randperm(len(texts), generator=g).tolist()
        for i in tqdm(range(0, len(order), batch_size), desc=f"static vectors, epoch {epoch + 1}/{epochs}",
                      dynamic_ncols=True, leave=False):
            idx = order[i : i + batch_size]
            loss = torch.nn.functional.mse_loss(forward([train_ids[j] for j in idx]), train_targets[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        mse = heldout_mse()
        log(f"static vectors: epoch {epoch + 1}/{epochs}, held-out MSE {mse:.4g}")
        if heldout is not None and not mse < best[0]:
            break
        best = (mse, table.detach().clone(), weights.detach().clone())
    w = best[2].clone()
    w[special] = 0.0
    return best[1], w


def trained_static_vectors(teacher, tokenizer, texts: Sequence[str], targets: torch.Tensor,
                           heldout: tuple[Sequence[str], torch.Tensor], cache_dir: str | Path,
                           log=print) -> tuple[torch.Tensor, torch.Tensor, Path]:
    """The teacher's static token vectors by model2vec's recipe (``static_token_vectors``, ``model2vec_vectors``),
    then trained on the pool's cached targets by tokenlearn's recipe (``train_static_vectors``): (vectors [V, 256],
    weights [V], the safetensors file they are cached in: ``cache_dir`` under the hash of the teacher, the vocabulary
    and the texts)."""
    from safetensors.torch import load_file

    vocab = _fingerprint(*sorted(tokenizer.get_vocab().items()))
    key = _fingerprint("trained-static", teacher_identity(teacher), vocab, _fingerprint(*texts),
                       _fingerprint(*heldout[0]))
    path = Path(cache_dir) / f"static-trained-{key}.safetensors"
    if path.exists():
        saved = load_file(str(path))
        return saved["vectors"], saved["weights"], path
    start = model2vec_vectors(static_token_vectors(teacher, tokenizer, cache_dir=cache_dir, log=log))
    vectors, weights = train_static_vectors(start, tokenizer, texts, targets, heldout=heldout, log=log)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_save({"vectors": vectors.contiguous(), "weights": weights.contiguous()}, path)
    return vectors, weights, path


def static_embedding_model(vectors: torch.Tensor, tokenizer, pca_dims: int | None = 256,
                           sif_coefficient: float | None = 1e-4):
    """A static sentence encoder from static token vectors, by model2vec's recipe (Tulkens & van Dongen 2024):
    PCA to ``pca_dims``, then each token vector scaled by the SIF weight a / (a + p(token)) with p the Zipf
    probability of its rank in the vocabulary; a sentence is the mean of its token vectors. Returns a
    ``SentenceTransformer`` around sentence-transformers' ``StaticEmbedding``: the baseline a distilled student must
    beat, built from vectors the distillation computes anyway."""
    import numpy as np
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    x = model2vec_vectors(vectors, pca_dims, sif_coefficient)
    fast = tokenizer.backend_tokenizer if hasattr(tokenizer, "backend_tokenizer") else tokenizer
    return SentenceTransformer(modules=[StaticEmbedding(fast, embedding_weights=np.asarray(x.float()))], device="cpu")


# ---------------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------------


class TargetDataset(torch.utils.data.Dataset):
    """(text, teacher embedding) examples."""

    def __init__(self, texts: Sequence[str], targets: torch.Tensor):
        if len(texts) != targets.shape[0]:
            raise ValueError(f"{len(texts)} texts but {targets.shape[0]} targets")
        if len(texts) == 0:
            raise D.DataError("the distillation pool is empty")
        self.texts = list(texts)
        self.targets = targets

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int):
        return self.texts[i], self.targets[i]


def length_grouped_sampler(texts: Sequence[str], batch_size: int, seed: int):
    """transformers' ``LengthGroupedSampler`` over the texts' character lengths (batches drawn from shuffled
    mega-batches sorted by length: a fraction of the padding of random batches, the order still random), reseeded
    from (seed, epoch) at each epoch so that a resumed run sees the same batches as an uninterrupted one."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
        epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __iter__(self):
            self.generator = torch.Generator().manual_seed(seed * 1_000_003 + self.epoch)
            return super().__iter__()

    return EpochSeededLengthGroupedSampler(batch_size, lengths=[len(t) for t in texts])


class TargetCollator:
    """[(text, target)] -> ``input_ids``/``attention_mask`` [B, T], ``teacher_embeddings`` [B, D], ``num_pairs`` 0."""

    def __init__(self, tokenizer, max_length: int = 128, pad_to_multiple_of: int | None = 8):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: Iterable) -> dict:
        texts, targets = zip(*examples, strict=True)
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt",
                             return_token_type_ids=False)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "teacher_embeddings": torch.stack(targets), "num_pairs": 0, "num_negatives": 0}


__all__ = [
    "TargetCollator",
    "TargetDataset",
    "cached_teacher_embeddings",
    "length_grouped_sampler",
    "model2vec_vectors",
    "principal_directions",
    "sentence_pool",
    "static_embedding_model",
    "static_model_vectors",
    "train_static_vectors",
    "trained_static_vectors",
    "static_token_vectors",
    "train_tokenlearn_model",
]
