"""The data of ``train_embedder``: training examples, the run's tokenizer, the DataLoader, and what the summary
names as the training data.

- ``load_training_data``: (anchor, positive[, hard negative]) pairs from ``--dataset`` / ``--data-dir`` plus the
  unsupervised Wikipedia pairs of ``--unsupervised`` / ``--teacher``; with ``--distill-pool``, unlabelled sentences
  (``PoolTexts``) whose teacher targets ``teacher.setup_teacher`` adds.
- ``get_tokenizer``: the checkpoint's tokenizer when resuming, ``--tokenizer``, or one trained on the training text
  (cached).
- ``build_train_loader``: batches of ``batch_size x grad_accum_steps`` examples in a seeded order (length-grouped
  for a distillation pool).
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from .. import checkpoint as ckpt
from .. import data as D
from . import pairs as P


class PoolTexts:
    """The distillation pool before its targets exist (what the tokenizer trains on)."""

    def __init__(self, texts):
        self.texts = texts


def load_training_pairs(dataset: list[str] | None, data_dir: str | None, seed: int, *,
                        dataset_config: str | None = None, max_train_samples: int | None = None,
                        unsupervised: str = "none", unsupervised_source: str | None = None,
                        unsupervised_samples: int = 20000, distillation_text: bool = False,
                        log=print) -> P.PairDataset:
    """The supervised pairs of ``dataset`` (shuffled with ``seed``, capped at ``max_train_samples``), plus
    unsupervised pairs from the Wikipedia text (or ``unsupervised_source``) for ``unsupervised`` dropout /
    neighbour, or SimCSE (dropout) pairs of it as ``distillation_text`` for a teacher."""
    pairs = P.load_pair_sources(dataset, data_dir, subset=dataset_config)
    random.Random(seed).shuffle(pairs)
    if max_train_samples is not None:
        pairs = pairs[:max_train_samples]
    n_sup = len(pairs)
    wiki_texts = None
    if unsupervised != "none" or distillation_text:
        src = unsupervised_source or D.WIKIPEDIA_FILE
        try:
            wiki_texts = D.load_texts(src, data_dir, max_texts=max(200, unsupervised_samples // 5))
        except (D.DataError, FileNotFoundError, ValueError) as e:
            if unsupervised != "none":
                raise
            log(f"teacher: no extra text ({e}); distilling on the pair texts only")
    if unsupervised != "none" and wiki_texts:
        pairs += P.unsupervised_pairs(wiki_texts, unsupervised, unsupervised_samples, seed=seed)
    elif distillation_text and wiki_texts:
        # distillation text: Wikipedia sentences as dropout pairs (the contrastive term sees them as SimCSE pairs)
        pairs += P.unsupervised_pairs(wiki_texts, "dropout", unsupervised_samples, seed=seed)
    random.Random(seed + 1).shuffle(pairs)
    log(f"data: {len(pairs)} training examples ({n_sup} supervised, {sum(p.negative is not None for p in pairs)} "
        f"with a hard negative)")
    return P.PairDataset(pairs)


def load_training_data(distill_pool: int = 0, log=print, **pair_options):
    """The run's examples (``args.data_options``): ``PoolTexts`` of ``distill_pool`` sentences, else a
    ``PairDataset`` (``load_training_pairs`` with ``pair_options``)."""
    if not distill_pool:
        return load_training_pairs(log=log, **pair_options)
    from .distill import sentence_pool

    pool = sentence_pool(pair_options["data_dir"], distill_pool, seed=pair_options["seed"],
                         text_source=pair_options.get("unsupervised_source"))
    log(f"data: {len(pool)} unlabelled sentences for teacher-target distillation")
    return PoolTexts(pool)


def training_texts(dataset) -> list[str]:
    """Every distinct text of the training examples, in order (what a new tokenizer is trained on)."""
    if not hasattr(dataset, "examples"):  # a distillation pool
        return list(dict.fromkeys(dataset.texts))
    texts = []
    for e in dataset.examples:
        texts.append(e.anchor)
        texts.append(e.positive)
        if e.negative:
            texts.append(e.negative)
    return list(dict.fromkeys(texts))


def get_tokenizer(dataset, accelerator, *, name: str | None, cache: Path, tokenizer_type: str = "wordpiece",
                  vocab_size: int = 16384, max_seq_length: int = 128, log=print, resume=None):
    """The run's tokenizer: ``name`` (``--tokenizer``, a path or Hub id), else one trained on the texts of
    ``dataset`` (cached in ``cache``). Resuming: the one saved in the checkpoint (an explicit ``name`` must match
    it); a checkpoint from before tokenizers were saved in checkpoints needs the cache it was trained with."""
    from ..tokenizer import get_or_train_tokenizer, load_tokenizer
    from .teacher import not_loadable, resolve_teacher

    saved = ckpt.checkpoint_tokenizer(resume) if resume is not None else None
    if saved is not None:
        tokenizer = load_tokenizer(str(saved))
        if name:
            given = load_tokenizer(resolve_teacher(name))
            if given.get_vocab() != tokenizer.get_vocab():
                raise ckpt.CheckpointError(
                    f"--tokenizer {name} differs from the tokenizer {resume} was trained with "
                    f"({len(given)} vs {len(tokenizer)} tokens); drop --tokenizer to resume with the checkpoint's")
        log(f"tokenizer: the one saved with {resume}")
        return tokenizer
    if name:
        try:
            return load_tokenizer(resolve_teacher(name))  # all-MiniLM-L6-v2 -> the bundled copy
        except (OSError, ValueError) as e:
            raise not_loadable("--tokenizer", name, e) from e
    refuse = None if resume is None else (
        f"{resume} holds no tokenizer (it was saved before checkpoints carried one) and the tokenizer cache {cache} is "
        "missing or was trained on other settings or data: training a new one would give token ids the weights were "
        "not trained with. Restore that cache (or --tokenizer-cache) or start the run over")
    with accelerator.main_process_first():
        return get_or_train_tokenizer(training_texts(dataset), cache, kind=tokenizer_type,
                                      vocab_size=vocab_size, model_max_length=max_seq_length,
                                      log=log if accelerator.is_main_process else (lambda *a: None),
                                      require_cached=refuse)


def build_train_loader(dataset, tokenizer, batch_size: int, max_seq_length: int, seed: int, num_workers: int = 0,
                       keep_texts: bool = False) -> torch.utils.data.DataLoader:
    """Batches of ``batch_size`` examples (``batch_size x grad_accum_steps`` pairs: one contrastive batch per optimizer
    step, see ``loop.EmbedStep``), the last partial batch dropped, in an order seeded by ``seed``. A distillation
    pool (cached targets) is batched by similar lengths (little padding). ``keep_texts``: batches carry their texts
    (for the in-step teacher)."""
    from .distill import TargetCollator, TargetDataset, length_grouped_sampler

    pool = isinstance(dataset, TargetDataset)
    sampler = length_grouped_sampler(dataset.texts, batch_size, seed) if pool else None
    collate = (TargetCollator(tokenizer, max_seq_length) if pool
               else P.PairCollator(tokenizer, max_seq_length, keep_texts=keep_texts))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler, drop_last=True,
        num_workers=num_workers, collate_fn=collate, generator=torch.Generator().manual_seed(seed))
    if len(loader) == 0:
        raise D.DataError(f"{len(dataset)} training examples is fewer than one batch of {batch_size}")
    return loader


def trained_on(dataset: list[str] | None, data_dir: str | None, distill_pool: int = 0, unsupervised: str = "none",
               unsupervised_source: str | None = None, distillation_text: bool = False) -> list[str]:
    """The data sources a run trained on (pair sets, plus the Wikipedia text of unsupervised pairs or distillation
    text), for the summary and the model card's ``datasets``."""
    if distill_pool:  # unlabelled sentences: the text source plus every pair folder present
        from .distill import POOL_FOLDERS

        folders = [f for f in POOL_FOLDERS if data_dir and (Path(data_dir) / f).is_dir()]
        return [unsupervised_source or D.WIKIPEDIA_FILE, *folders]
    if dataset:
        sources = list(dataset)
    elif data_dir:
        sources = [s for s in P.DEFAULT_LOCAL_MIX if (Path(data_dir) / s).exists()]
    else:
        sources = [P.DEFAULT_HUB_DATASET]
    if unsupervised != "none" or distillation_text:
        sources.append(unsupervised_source or D.WIKIPEDIA_FILE)
    return sources


__all__ = ["PoolTexts", "build_train_loader", "get_tokenizer", "load_training_data", "load_training_pairs",
           "trained_on", "training_texts"]
