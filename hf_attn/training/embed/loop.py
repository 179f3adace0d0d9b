"""Contrastive training of the hf_attn embedders (TAN, GQAEmbedder) with Accelerate: ``recipes/train_embed.py``.

    from hf_attn.training.embed import train_embedder
    from hf_attn.training.embed.args import EmbedTrainingArguments
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

The pieces: options ``args``, data and tokenizer ``data``, the teacher ``teacher`` (and ``distill`` for
cached targets), STS-B dev evaluation and the best model ``eval``; here the model, the step, the loop, the
size sweep and the command line.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from ... import registry
from ...push import push_best_model
from .. import checkpoint as ckpt
from .. import common
from ..args import UsageError, cli_errors, to_flat_dict
from ..common import (
    NonFiniteLoss,
    RunRecord,
    check_finite,
    json_copy,
    make_accelerator,
    progress_bar,
    start_trackers,
    write_summary,
)
from .args import EmbedTrainingArguments, finalize_args, model_kwargs, parse_args
from .data import build_train_loader, get_tokenizer, load_training_data, trained_on
from .eval import DevSelection
from .teacher import setup_teacher


def build_model(args: EmbedTrainingArguments, tokenizer) -> nn.Module:
    """The encoder of ``--model`` (``registry``) with the size options given, sized to the tokenizer."""
    entry = registry.get(args.model)
    kwargs = {k: getattr(args, k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                            "num_key_value_heads", "intermediate_size", "embedding_size")
              if getattr(args, k) is not None}
    kwargs.update(model_kwargs(args, entry.config_class, log=lambda *a: None))  # finalize_args said which wins
    kwargs["vocab_size"] = len(tokenizer)
    kwargs["pad_token_id"] = tokenizer.pad_token_id
    kwargs.setdefault("max_position_embeddings", max(512, args.max_seq_length))
    config = entry.config_class(**kwargs)
    limit = getattr(config, "max_sequence_length", None) or config.max_position_embeddings
    if isinstance(limit, int) and args.max_seq_length > limit:
        raise UsageError(f"--max-seq-length {args.max_seq_length} is beyond the model's limit of {limit} positions "
                         f"(pass --max-seq-length {limit} or less, or a larger max_position_embeddings in "
                         "--model-kwargs)")
    if args.attn_implementation:
        config._attn_implementation = args.attn_implementation
    return entry.model_class(config)


def build_loss(args: EmbedTrainingArguments, encoder: nn.Module, teacher_dim: int | None) -> nn.Module:
    """InfoNCE, plus the ``--distill-target`` term towards a teacher of width ``teacher_dim`` (None: no teacher)."""
    from .losses import (
        CombinedDistillationLoss,
        EmbedderLoss,
        EmbeddingDistillationLoss,
        InfoNCELoss,
        SimilarityDistillationLoss,
    )

    student_dim = getattr(encoder.config, "embedding_size", None) or encoder.config.hidden_size
    if teacher_dim is None:
        distill = None
    elif args.distill_target == "similarity":
        distill = SimilarityDistillationLoss()
    elif args.distill_target == "both":
        distill = CombinedDistillationLoss(student_dim, teacher_dim)
    else:
        distill = EmbeddingDistillationLoss(student_dim, teacher_dim)
    contrastive = InfoNCELoss(args.temperature, args.learnable_temperature, args.min_temperature,
                              args.max_temperature, args.symmetric_loss)
    return EmbedderLoss(contrastive, distill, distill_weight=args.distill_weight,
                        contrastive_weight=args.contrastive_weight)


class EmbedderTrainingModule(nn.Module):
    """encoder + loss as one module (so DDP syncs the temperature too); forward(batch) -> (loss, parts). The
    encoder may be torch.compile'd without renaming keys."""

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


class EmbedStep:
    """One optimizer step on one contrastive batch: the teacher's targets, forward, loss, backward, clipping, the
    optimizer and scheduler steps. Returns what the history records of the step (loss, tokens, LR, temperature,
    distillation term); raises ``NonFiniteLoss`` before the update when the loss is not finite.

    ``--grad-accum-steps K`` > 1: the batch holds K x ``batch_size`` pairs and goes through the encoder
    ``batch_size`` pairs at a time by gradient caching (``losses.GradientCache``), so InfoNCE scores every pair
    against all the others.
    """

    def __init__(self, accelerator, module, optimizer, scheduler, args: EmbedTrainingArguments, teacher=None):
        from .losses import GradientCache

        self.accelerator, self.module, self.teacher = accelerator, module, teacher
        self.optimizer, self.scheduler = optimizer, scheduler
        self.grad_accum_steps, self.max_grad_norm = args.grad_accum_steps, args.max_grad_norm
        self.loss_fn = accelerator.unwrap_model(module).loss_fn
        self.grad_cache = None
        if args.grad_accum_steps > 1:  # mini-batch size set per batch
            self.grad_cache = GradientCache(lambda ids, mask: module(ids, mask), mini_batch_size=1)

    def __call__(self, batch: dict) -> dict:
        acc, module = self.accelerator, self.module
        targets = self.teacher(batch["texts"]) if self.teacher is not None else batch.get("teacher_embeddings")
        with acc.accumulate(module), acc.no_sync(module) if self.grad_cache is not None else nullcontext():
            loss, parts = self._loss(batch, targets)
            check_finite(acc, loss)
            self._backward(loss)
            if self.max_grad_norm > 0:
                acc.clip_grad_norm_(module.parameters(), self.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad()
        self.scheduler.step()
        record = {"loss": loss.item(), "data": int(batch["input_ids"].sum().item()),
                  "lr": self.scheduler.get_last_lr()[-1],
                  "temperature": float(self.loss_fn.contrastive.temperature.detach())}
        if "distill" in parts:
            record["distill"] = float(parts["distill"])
        return record

    def _loss(self, batch, targets):
        ids, mask, num_pairs = batch["input_ids"], batch["attention_mask"], batch["num_pairs"]
        if self.grad_cache is None:
            return self.module(ids, mask, num_pairs, targets)
        self.grad_cache.mini_batch_size = math.ceil(ids.shape[0] / self.grad_accum_steps)  # texts of batch_size pairs
        return self.grad_cache.loss(self.loss_fn, ids, mask, num_pairs, targets)

    def _backward(self, loss):
        if self.grad_cache is None:
            self.accelerator.backward(loss)
            return
        self.grad_cache.backward(loss, self.accelerator.backward)
        if self.accelerator.num_processes > 1:  # under no_sync: average the gradients ourselves
            for p in self.module.parameters():
                if p.grad is not None:
                    p.grad.copy_(self.accelerator.reduce(p.grad, reduction="mean"))


def resumable_batches(accelerator, loader, state: dict, total_steps: int, num_epochs: int):
    """The batches from where ``state`` stands until ``state["step"]`` reaches ``total_steps``, epoch after epoch.

    The order is a function of (seed, epoch) (``loader.set_epoch``); a resumed run skips the batches its epoch had
    already trained on. ``state["epoch"]`` and ``state["batches_in_epoch"]`` stay current for checkpoints.
    """
    for epoch in range(state["epoch"], num_epochs):
        loader.set_epoch(epoch)
        state["epoch"], skip = epoch, state["batches_in_epoch"]
        for batch in accelerator.skip_first_batches(loader, skip) if skip else loader:
            if state["step"] >= total_steps:
                return
            state["batches_in_epoch"] += 1
            yield batch
        state["epoch"], state["batches_in_epoch"] = epoch + 1, 0


def train_embedder(args: EmbedTrainingArguments) -> dict:
    """Train one embedder; returns the summary dict (also written to OUTPUT_DIR/summary.json).

    Keys: output_dir, best_model_dir, params, train_time_s, samples_per_s, best_dev_spearman, best_dev_pearson,
    best_step, steps, final_loss, status ("completed" | "non_finite_loss"), last_checkpoint, history, ...
    """
    args = finalize_args(args)
    common.check_run_options(args.report_to, args.mixed_precision, args.cpu)  # before the output folder is created
    with ckpt.locked_output_dir(args.output_dir):  # one run per output folder
        return _train_embedder(args)


def _train_embedder(args: EmbedTrainingArguments) -> dict:
    from accelerate.utils import DataLoaderConfiguration, set_seed

    from ..optim import build_optimizer, build_scheduler

    output_dir = Path(args.output_dir)
    accelerator = make_accelerator(
        args.mixed_precision, output_dir, args.cpu, args.report_to,
        gradient_accumulation_steps=1,  # --grad-accum-steps enlarges the contrastive batch instead (EmbedStep)
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed))
    log = accelerator.print
    set_seed(args.seed)
    resume = ckpt.resolve_resume(args.resume_from_checkpoint, output_dir / "checkpoints", log=log)

    dataset = load_training_data(args, log=log)
    tokenizer = get_tokenizer(args, dataset, accelerator, log=log, resume=resume)
    set_seed(args.seed)
    encoder = build_model(args, tokenizer)
    params = sum(p.numel() for p in encoder.parameters())
    warn_if_dropout_pairs_are_identical(args, encoder, log)
    dataset, teacher, teacher_dim = setup_teacher(args, dataset, encoder, tokenizer, accelerator, log)
    module = EmbedderTrainingModule(encoder, build_loss(args, encoder, teacher_dim), compile=args.compile)
    if resume is None:
        fit_distillation_projection(module, dataset, tokenizer, args, log)
    log(f"model: {args.model} {params / 1e6:.2f}M params ({encoder.config.num_hidden_layers} layers, hidden "
        f"{encoder.config.hidden_size}); optimizer {args.optimizer}; device {accelerator.device}; "
        f"processes {accelerator.num_processes}; mixed precision {args.mixed_precision}")
    loader = build_train_loader(args, dataset, tokenizer, keep_texts=teacher is not None)

    optimizer = build_optimizer([module], args.optimizer, lr=args.learning_rate, weight_decay=args.weight_decay,
                                muon_lr=args.muon_lr)
    module, optimizer, loader = accelerator.prepare(module, optimizer, loader)
    steps_per_epoch = max(1, len(loader))
    total_steps = args.max_steps or steps_per_epoch * args.num_epochs
    warmup = args.warmup_steps if args.warmup_steps is not None else int(args.warmup_ratio * total_steps)
    scheduler = build_scheduler(optimizer, warmup, total_steps, args.lr_schedule)
    accelerator.register_for_checkpointing(scheduler)

    state = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "best_selection": None, "best_dev_spearman": None,
             "best_dev_pearson": None, "best_step": None, "history": [], "evals": [], "settings": resume_settings(args)}
    if resume is not None:
        ckpt.check_resume(resume, accelerator.unwrap_model(module), state["settings"], total_steps)
        state.update(ckpt.load_checkpoint(accelerator, resume))
        log(f"resumed from {resume} (step {state['step']}, epoch {state['epoch']}, batch {state['batches_in_epoch']})")
    start_trackers(accelerator, args.run_name or "train_embed", to_flat_dict(args))

    train_step = EmbedStep(accelerator, module, optimizer, scheduler, args, teacher)
    dev = DevSelection(accelerator, accelerator.unwrap_model(module).encoder, tokenizer, args, state,
                       output_dir / "best_model", log, heldout=getattr(dataset, "heldout", None))
    run = RunRecord(last_checkpoint=str(resume) if resume else None)
    if resume is None and (args.static_model or args.init_from_teacher):
        dev.evaluate(0)  # the start is a candidate: training is kept only where it beats it
    progress = progress_bar(accelerator, total_steps, state["step"], "train_embed")
    module.train()
    for batch in resumable_batches(accelerator, loader, state, total_steps, math.ceil(total_steps / steps_per_epoch)):
        t0 = time.perf_counter()
        try:
            stats = train_step(batch)
        except NonFiniteLoss as e:
            run.stop("non_finite_loss", f"{e} at step {state['step'] + 1}: stopping before the update; last good "
                                        f"checkpoint: {run.last_checkpoint or 'none saved yet'}")
            break
        run.add_step((batch["num_pairs"] or batch["input_ids"].shape[0]) * accelerator.num_processes,
                     time.perf_counter() - t0)
        state["step"] = step = state["step"] + 1
        record = {"step": step, **stats}
        state["history"].append(record)
        progress.update(1)
        if step % args.logging_steps == 0 or step == total_steps:
            log_train_step(accelerator, record, total_steps, run.samples_per_s, log)
        if args.eval_steps and step % args.eval_steps == 0 and step != total_steps:
            dev.evaluate(step)
        if args.save_steps and step % args.save_steps == 0:
            run.last_checkpoint = str(ckpt.save_checkpoint(accelerator, output_dir / "checkpoints", step,
                                                           json_copy(state), keep=args.save_total_limit,
                                                           tokenizer=tokenizer))
        if step < total_steps and run.out_of_time(args.max_train_minutes):
            log(f"step {step} | wall-clock limit of {args.max_train_minutes} min reached: stopping")
            state["stopped_at_time_limit"] = True
            break
    progress.close()

    if run.status == "completed":
        dev.finish()
    else:
        log(run.message)
    accelerator.wait_for_everyone()
    dump_final_weights(accelerator, module, output_dir)
    summary = embed_summary(args, state, run, encoder, params, accelerator, output_dir / "best_model")
    write_summary(accelerator, output_dir, summary)
    log("summary: " + json.dumps({k: v for k, v in summary.items() if k not in ("history", "evals")}))
    if args.push_to_hub and run.status == "completed" and accelerator.is_main_process:
        summary["hub"] = push_best_model(output_dir / "best_model", output_dir, args.push_to_hub,
                                              args.hub_private, log=log)
    accelerator.end_training()
    return summary


def fit_distillation_projection(module: EmbedderTrainingModule, dataset, tokenizer, args, log=print,
                                max_texts: int = 8192) -> float | None:
    """Before step 0 of a run on cached teacher targets: fit the distillation projection (``--distill-target
    embedding`` or ``both``) by least squares from the student's embeddings of up to ``max_texts`` pool sentences
    (a seeded sample) to their targets (``EmbeddingDistillationLoss.fit_``). Returns the mean cosine reached, or
    None where there is nothing to fit (no projection, or a teacher run in the steps instead of cached targets)."""
    from .eval import make_encode_fn

    distill = module.loss_fn.distill
    targets = getattr(dataset, "targets", None)
    if not hasattr(distill, "fit_") or targets is None:
        return None
    width = getattr(module.encoder.config, "embedding_size", None) or module.encoder.config.hidden_size
    n = min(max_texts, len(dataset.texts))
    if n < width:
        log(f"distillation projection: left random (the pool's {n} sentences are fewer than the student's {width} "
            "dimensions)")
        return None
    idx = torch.randperm(len(dataset.texts), generator=torch.Generator().manual_seed(args.seed))[:n].tolist()
    encode = make_encode_fn(module.encoder, tokenizer, args.max_seq_length, next(module.parameters()).device)
    texts = [dataset.texts[i] for i in idx]
    student = torch.cat([encode(texts[i : i + 256]) for i in range(0, n, 256)])
    fit = distill.fit_(student, targets[idx])
    log(f"distillation projection: fitted by least squares on {n} pool sentences (mean cosine to the teacher "
        f"{fit:.4f} at step 0)")
    return fit


def resume_settings(args: EmbedTrainingArguments) -> dict:
    """The options a resumed run must share with the run that wrote its checkpoint (saved in its state): the batch
    composition and the seed decide the data order a resumed run continues."""
    return {"batch_size": args.batch_size, "grad_accum_steps": args.grad_accum_steps, "seed": args.seed}


def warn_if_dropout_pairs_are_identical(args: EmbedTrainingArguments, encoder: nn.Module, log=print) -> None:
    """``--unsupervised dropout`` on a model without dropout: both views of a sentence are the same text."""
    if args.unsupervised == "dropout" and not any(getattr(encoder.config, k, 0)
                                                  for k in ("attention_dropout", "hidden_dropout")):
        log("warning: --unsupervised dropout, but the model has no dropout (attention_dropout/hidden_dropout 0): "
            "both views of a Wikipedia sentence are identical; set e.g. --model-kwargs '{\"attention_dropout\": 0.1}'")


def log_train_step(accelerator, record: dict, total_steps: int, samples_per_s: float, log=print) -> None:
    log(f"step {record['step']}/{total_steps} | loss {record['loss']:.4f} | lr {record['lr']:.2e} | "
        f"temp {record['temperature']:.4f} | {samples_per_s:.1f} samples/s")
    accelerator.log({"train/loss": record["loss"], "train/lr": record["lr"], "train/temperature": record["temperature"],
                     "train/samples_per_s": samples_per_s}, step=record["step"])


def dump_final_weights(accelerator, module, output_dir: Path) -> None:
    """Test hook (``HF_ATTN_DUMP_FINAL_WEIGHTS`` set): every process writes its final weights, to compare them."""
    if not os.environ.get("HF_ATTN_DUMP_FINAL_WEIGHTS"):
        return
    from safetensors.torch import save_file

    sd = {k: v.detach().cpu().contiguous() for k, v in accelerator.unwrap_model(module).state_dict().items()}
    save_file(sd, str(output_dir / f"final_weights_rank{accelerator.process_index}.safetensors"))
    accelerator.wait_for_everyone()


def embed_summary(args, state: dict, run: RunRecord, encoder, params: int, accelerator, best_dir: Path) -> dict:
    """What ``train_embedder`` returns and writes to summary.json."""
    return {
        "output_dir": str(Path(args.output_dir)),
        "best_model_dir": str(best_dir) if best_dir.exists() else None,
        "model": args.model,
        "params": params,
        "num_hidden_layers": encoder.config.num_hidden_layers,
        "hidden_size": encoder.config.hidden_size,
        "train_time_s": run.train_time,
        "wall_time_s": run.elapsed,
        "samples_per_s": run.samples_per_s,
        "best_selection": state.get("best_selection"),
        "selected_on": state["evals"][-1].get("selected_on") if state["evals"] else None,
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
        "static_model": args.static_model,
        "distill_pool": args.distill_pool,
        "dataset": trained_on(args),
        "final_loss": state["history"][-1]["loss"] if state["history"] else None,
        "status": run.status,
        "message": run.message,
        "last_checkpoint": run.last_checkpoint,
        "num_processes": accelerator.num_processes,
        "device": str(accelerator.device),
        "mixed_precision": args.mixed_precision,
        "optimizer": args.optimizer,
        "history": state["history"],
        "evals": state["evals"],
    }


# ---------------------------------------------------------------------------------------------------------------
# size sweeps (TAN's width x depth study): one model per (layers, hidden) combination, one results table
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
        results.append(train_embedder(sub))
    write_results_table(results, out / "sweep_results")
    return results


SWEEP_COLUMNS = ("model", "num_hidden_layers", "hidden_size", "params", "steps", "final_loss", "best_dev_spearman",
                 "best_dev_pearson", "samples_per_s", "train_time_s", "best_model_dir")


def write_results_table(results: list[dict], stem: Path) -> None:
    """``stem``.csv and ``stem``.md: one row per run, the ``SWEEP_COLUMNS`` of its summary."""
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


__all__ = [
    "EmbedStep", "EmbedderTrainingModule", "SWEEP_COLUMNS", "build_loss", "build_model", "dump_final_weights",
    "embed_summary", "fit_distillation_projection", "log_train_step", "main", "resumable_batches", "run_size_sweep",
    "train_embedder", "warn_if_dropout_pairs_are_identical", "write_results_table",
]
