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


def load_training_pairs(args, log=print) -> P.PairDataset:
    """The supervised pairs (shuffled with the seed, capped at ``--max-train-samples``), plus unsupervised pairs from
    the Wikipedia text for ``--unsupervised``, or SimCSE (dropout) pairs of it as distillation text for
    ``--teacher``."""
    pairs = P.load_pair_sources(args.dataset, args.data_dir, subset=args.dataset_config)
    random.Random(args.seed).shuffle(pairs)
    if args.max_train_samples is not None:
        pairs = pairs[: args.max_train_samples]
    n_sup = len(pairs)
    wiki_texts = None
    if args.unsupervised != "none" or args.teacher:
        src = args.unsupervised_source or D.WIKIPEDIA_FILE
        try:
            wiki_texts = D.load_texts(src, args.data_dir, max_texts=max(200, args.unsupervised_samples // 5))
        except (D.DataError, FileNotFoundError, ValueError) as e:
            if args.unsupervised != "none":
                raise
            log(f"teacher: no extra text ({e}); distilling on the pair texts only")
    if args.unsupervised != "none" and wiki_texts:
        pairs += P.unsupervised_pairs(wiki_texts, args.unsupervised, args.unsupervised_samples, seed=args.seed)
    elif args.teacher and wiki_texts:
        # distillation text: Wikipedia sentences as dropout pairs (the contrastive term sees them as SimCSE pairs)
        pairs += P.unsupervised_pairs(wiki_texts, "dropout", args.unsupervised_samples, seed=args.seed)
    random.Random(args.seed + 1).shuffle(pairs)
    log(f"data: {len(pairs)} training examples ({n_sup} supervised, {sum(p.negative is not None for p in pairs)} "
        f"with a hard negative)")
    return P.PairDataset(pairs)


def load_training_data(args, log=print):
    """The run's examples: ``PoolTexts`` for ``--distill-pool``, else a ``PairDataset`` (``load_training_pairs``)."""
    if not args.distill_pool:
        return load_training_pairs(args, log=log)
    from .distill import sentence_pool

    pool = sentence_pool(args.data_dir, args.distill_pool, seed=args.seed, text_source=args.unsupervised_source)
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


def get_tokenizer(args, dataset, accelerator, log=print, resume=None):
    """The run's tokenizer. Resuming: the one saved in the checkpoint (an explicit --tokenizer must match it); a
    checkpoint from before tokenizers were saved in checkpoints needs the cache it was trained with (no retraining)."""
    from ..tokenizer import get_or_train_tokenizer, load_tokenizer
    from .teacher import not_loadable, resolve_teacher

    saved = ckpt.checkpoint_tokenizer(resume) if resume is not None else None
    if saved is not None:
        tokenizer = load_tokenizer(str(saved))
        if args.tokenizer:
            given = load_tokenizer(resolve_teacher(args.tokenizer))
            if given.get_vocab() != tokenizer.get_vocab():
                raise ckpt.CheckpointError(
                    f"--tokenizer {args.tokenizer} differs from the tokenizer {resume} was trained with "
                    f"({len(given)} vs {len(tokenizer)} tokens); drop --tokenizer to resume with the checkpoint's")
        log(f"tokenizer: the one saved with {resume}")
        return tokenizer
    if args.tokenizer:
        try:
            return load_tokenizer(resolve_teacher(args.tokenizer))  # all-MiniLM-L6-v2 -> the bundled copy
        except (OSError, ValueError) as e:
            raise not_loadable("--tokenizer", args.tokenizer, e) from e
    cache = Path(args.tokenizer_cache or Path(args.output_dir) / "tokenizer")
    refuse = None if resume is None else (
        f"{resume} holds no tokenizer (it was saved before checkpoints carried one) and the tokenizer cache {cache} is "
        "missing or was trained on other settings or data: training a new one would give token ids the weights were "
        "not trained with. Restore that cache (or --tokenizer-cache) or start the run over")
    with accelerator.main_process_first():
        return get_or_train_tokenizer(training_texts(dataset), cache, kind=args.tokenizer_type,
                                      vocab_size=args.vocab_size, model_max_length=args.max_seq_length,
                                      log=log if accelerator.is_main_process else (lambda *a: None),
                                      require_cached=refuse)


def build_train_loader(args, dataset, tokenizer, keep_texts: bool = False) -> torch.utils.data.DataLoader:
    """Batches of ``batch_size x grad_accum_steps`` examples (one contrastive batch per optimizer step, see
    ``loop.EmbedStep``), the last partial batch dropped, in an order seeded by ``--seed``. A distillation pool is
    batched by similar lengths (little padding). ``keep_texts``: batches carry their texts (for the in-step teacher)."""
    from .distill import TargetCollator, length_grouped_sampler

    batch_size = args.batch_size * args.grad_accum_steps
    sampler = length_grouped_sampler(dataset.texts, batch_size, args.seed) if args.distill_pool else None
    collate = (TargetCollator(tokenizer, args.max_seq_length) if args.distill_pool
               else P.PairCollator(tokenizer, args.max_seq_length, keep_texts=keep_texts))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler, drop_last=True,
        num_workers=args.num_workers, collate_fn=collate, generator=torch.Generator().manual_seed(args.seed))
    if len(loader) == 0:
        raise D.DataError(f"{len(dataset)} training examples is fewer than one batch of {batch_size}")
    return loader


def trained_on(args) -> list[str]:
    """The data sources a run trained on (pair sets, plus the Wikipedia text of --unsupervised/--teacher), for the
    summary and the model card's ``datasets``."""
    if args.distill_pool:  # unlabelled sentences: the text source plus every pair folder present
        from .distill import POOL_FOLDERS

        folders = [f for f in POOL_FOLDERS if args.data_dir and (Path(args.data_dir) / f).is_dir()]
        return [args.unsupervised_source or D.WIKIPEDIA_FILE, *folders]
    if args.dataset:
        sources = list(args.dataset)
    elif args.data_dir:
        sources = [s for s in P.DEFAULT_LOCAL_MIX if (Path(args.data_dir) / s).exists()]
    else:
        sources = [P.DEFAULT_HUB_DATASET]
    if args.unsupervised != "none" or args.teacher:
        sources.append(args.unsupervised_source or D.WIKIPEDIA_FILE)
    return sources


__all__ = ["PoolTexts", "build_train_loader", "get_tokenizer", "load_training_data", "load_training_pairs",
           "trained_on", "training_texts"]
