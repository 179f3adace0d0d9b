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

The pieces: options ``args`` (the only module besides the entry functions here that reads the options object;
its ``*_options`` functions hand each piece its values), data and tokenizer ``data``, the teacher ``teacher`` (and
``distill`` for cached targets), the module and one step ``step``, STS-B dev evaluation and the best model
``eval``; here the run (``train_embedder``: the steps, evaluation, checkpoints, summary), the size sweep and the
command line.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import time
from pathlib import Path

import torch
from torch import nn

from .. import checkpoint as ckpt
from .. import common
from ..args import cli_errors, to_flat_dict
from ..common import (
    NonFiniteLoss,
    RunRecord,
    json_copy,
    make_accelerator,
    progress_bar,
    start_trackers,
    write_summary,
)
from .args import (
    EmbedTrainingArguments,
    config_fields,
    data_options,
    finalize_args,
    loss_options,
    parse_args,
    recorded_options,
    resume_settings,
    selection_options,
    teacher_options,
    tokenizer_options,
)
from .data import build_train_loader, get_tokenizer, load_training_data
from .eval import DevSelection
from .step import EmbedderTrainingModule, EmbedStep, build_loss, build_model, resumable_batches
from .teacher import setup_teacher


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

    from ...hub import push_best_model
    from ..optim import build_optimizer, build_scheduler

    output_dir = Path(args.output_dir)
    accelerator = make_accelerator(
        args.mixed_precision, output_dir, args.cpu, args.report_to,
        gradient_accumulation_steps=1,  # --grad-accum-steps enlarges the contrastive batch instead (EmbedStep)
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed))
    log = accelerator.print
    set_seed(args.seed)
    resume = ckpt.resolve_resume(args.resume_from_checkpoint, output_dir / "checkpoints", log=log)

    dataset = load_training_data(**data_options(args), log=log)
    tokenizer = get_tokenizer(dataset, accelerator, **tokenizer_options(args), log=log, resume=resume)
    set_seed(args.seed)
    encoder = build_model(args.model, tokenizer, config_fields(args), args.max_seq_length, args.attn_implementation)
    params = sum(p.numel() for p in encoder.parameters())
    warn_if_dropout_pairs_are_identical(args.unsupervised, encoder, log)
    dataset, teacher, teacher_dim = setup_teacher(dataset, encoder, tokenizer, accelerator, **teacher_options(args),
                                                  log=log)
    module = EmbedderTrainingModule(encoder, build_loss(encoder, teacher_dim, **loss_options(args)),
                                    compile=args.compile)
    if resume is None:
        fit_distillation_projection(module, dataset, tokenizer, args.seed, args.max_seq_length, log)
    log(f"model: {args.model} {params / 1e6:.2f}M params ({encoder.config.num_hidden_layers} layers, hidden "
        f"{encoder.config.hidden_size}); optimizer {args.optimizer}; device {accelerator.device}; "
        f"processes {accelerator.num_processes}; mixed precision {args.mixed_precision}")
    loader = build_train_loader(dataset, tokenizer, args.batch_size * args.grad_accum_steps, args.max_seq_length,
                                args.seed, args.num_workers, keep_texts=teacher is not None)

    optimizer = build_optimizer([module], args.optimizer, lr=args.learning_rate, weight_decay=args.weight_decay,
                                muon_lr=args.muon_lr)
    module, optimizer, loader = accelerator.prepare(module, optimizer, loader)
    steps_per_epoch = max(1, len(loader))
    total_steps = args.max_steps or steps_per_epoch * args.num_epochs
    warmup = args.warmup_steps if args.warmup_steps is not None else int(args.warmup_ratio * total_steps)
    scheduler = build_scheduler(optimizer, warmup, total_steps, args.lr_schedule)
    accelerator.register_for_checkpointing(scheduler)
    state = initial_state(accelerator, accelerator.unwrap_model(module), resume, resume_settings(args), total_steps,
                          log)
    start_trackers(accelerator, args.run_name or "train_embed", to_flat_dict(args))

    dev = DevSelection(accelerator, accelerator.unwrap_model(module).encoder, tokenizer, state,
                       output_dir / "best_model", **selection_options(args), log=log,
                       heldout=getattr(dataset, "heldout", None))
    run = RunRecord(last_checkpoint=str(resume) if resume else None)
    if resume is None and (args.static_model or args.init_from_teacher):
        dev.evaluate(0)  # the start is a candidate: training is kept only where it beats it
    module.train()
    train_steps(accelerator, EmbedStep(accelerator, module, optimizer, scheduler, args.grad_accum_steps,
                                       args.max_grad_norm, teacher),
                loader, state, run, dev, total_steps=total_steps, num_epochs=math.ceil(total_steps / steps_per_epoch),
                logging_steps=args.logging_steps, eval_steps=args.eval_steps, save_steps=args.save_steps,
                save_total_limit=args.save_total_limit, max_train_minutes=args.max_train_minutes,
                checkpoint_dir=output_dir / "checkpoints", tokenizer=tokenizer, log=log)

    if run.status == "completed":
        dev.finish()
    else:
        log(run.message)
    accelerator.wait_for_everyone()
    dump_final_weights(accelerator, module, output_dir)
    summary = embed_summary(recorded_options(args), state, run, encoder, params, accelerator, output_dir,
                            static_start=getattr(dataset, "static_start", None))
    write_summary(accelerator, output_dir, summary)
    log("summary: " + json.dumps({k: v for k, v in summary.items() if k not in ("history", "evals")}))
    if args.push_to_hub and run.status == "completed" and accelerator.is_main_process:
        summary["hub"] = push_best_model(output_dir / "best_model", output_dir, args.push_to_hub,
                                         args.hub_private, log=log)
    accelerator.end_training()
    return summary


def initial_state(accelerator, module, resume: Path | None, settings: dict, total_steps: int, log=print) -> dict:
    """The run's state at its first step: empty, or what checkpoint ``resume`` saved (after checking it was written
    with the same ``settings`` and by a module of this shape)."""
    state = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "best_selection": None, "best_dev_spearman": None,
             "best_dev_pearson": None, "best_step": None, "history": [], "evals": [], "settings": settings}
    if resume is not None:
        ckpt.check_resume(resume, module, settings, total_steps)
        state.update(ckpt.load_checkpoint(accelerator, resume))
        log(f"resumed from {resume} (step {state['step']}, epoch {state['epoch']}, batch {state['batches_in_epoch']})")
    return state


def train_steps(accelerator, train_step: EmbedStep, loader, state: dict, run: RunRecord, dev: DevSelection, *,
                total_steps: int, num_epochs: int, logging_steps: int, eval_steps: int, save_steps: int,
                save_total_limit: int, max_train_minutes: float | None, checkpoint_dir: Path, tokenizer,
                log=print) -> None:
    """The training steps from ``state`` up to ``total_steps``: each step logged every ``logging_steps``, evaluated
    every ``eval_steps`` (``dev``), checkpointed every ``save_steps`` (``save_total_limit`` kept); a non-finite loss
    or ``max_train_minutes`` passed stops the run (``run`` says how it ended)."""
    progress = progress_bar(accelerator, total_steps, state["step"], "train_embed")
    for batch in resumable_batches(accelerator, loader, state, total_steps, num_epochs):
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
        if step % logging_steps == 0 or step == total_steps:
            log_train_step(accelerator, record, total_steps, run.samples_per_s, log)
        if eval_steps and step % eval_steps == 0 and step != total_steps:
            dev.evaluate(step)
        if save_steps and step % save_steps == 0:
            run.last_checkpoint = str(ckpt.save_checkpoint(accelerator, checkpoint_dir, step, json_copy(state),
                                                           keep=save_total_limit, tokenizer=tokenizer))
        if step < total_steps and run.out_of_time(max_train_minutes):
            log(f"step {step} | wall-clock limit of {max_train_minutes} min reached: stopping")
            state["stopped_at_time_limit"] = True
            break
    progress.close()


def fit_distillation_projection(module: EmbedderTrainingModule, dataset, tokenizer, seed: int, max_seq_length: int,
                                log=print, max_texts: int = 8192) -> float | None:
    """Before step 0 of a run on cached teacher targets: fit the distillation projection (``--distill-target
    embedding`` or ``both``) by least squares from the student's embeddings (texts cut at ``max_seq_length``
    tokens) of up to ``max_texts`` pool sentences (a sample seeded with ``seed``) to their targets
    (``EmbeddingDistillationLoss.fit_``). Returns the mean cosine reached, or None where there is nothing to fit (no
    projection, or a teacher run in the steps instead of cached targets)."""
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
    idx = torch.randperm(len(dataset.texts), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    encode = make_encode_fn(module.encoder, tokenizer, max_seq_length, next(module.parameters()).device)
    texts = [dataset.texts[i] for i in idx]
    student = torch.cat([encode(texts[i : i + 256]) for i in range(0, n, 256)])
    fit = distill.fit_(student, targets[idx])
    log(f"distillation projection: fitted by least squares on {n} pool sentences (mean cosine to the teacher "
        f"{fit:.4f} at step 0)")
    return fit


def warn_if_dropout_pairs_are_identical(unsupervised: str, encoder: nn.Module, log=print) -> None:
    """``--unsupervised dropout`` on a model without dropout: both views of a sentence are the same text."""
    if unsupervised == "dropout" and not any(getattr(encoder.config, k, 0)
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


def embed_summary(options: dict, state: dict, run: RunRecord, encoder, params: int, accelerator,
                  output_dir: Path, static_start: Path | None = None) -> dict:
    """What ``train_embedder`` returns and writes to summary.json; ``options``: the options it records
    (``args.recorded_options``); ``static_start``: the file of the static vectors ``--teacher-init tokenlearn``
    trained for the student's start."""
    best_dir = output_dir / "best_model"
    return {
        "output_dir": str(output_dir),
        "best_model_dir": str(best_dir) if best_dir.exists() else None,
        "model": options["model"],
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
        **{k: options[k] for k in ("batch_size", "learning_rate", "max_seq_length", "unsupervised", "teacher",
                                   "distill_target", "init_from_teacher", "teacher_init", "static_model",
                                   "distill_pool", "dataset")},
        "static_start": str(static_start) if static_start else None,
        "final_loss": state["history"][-1]["loss"] if state["history"] else None,
        "status": run.status,
        "message": run.message,
        "last_checkpoint": run.last_checkpoint,
        "num_processes": accelerator.num_processes,
        "device": str(accelerator.device),
        "mixed_precision": options["mixed_precision"],
        "optimizer": options["optimizer"],
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
    "SWEEP_COLUMNS", "dump_final_weights", "embed_summary", "fit_distillation_projection", "initial_state",
    "log_train_step", "main", "run_size_sweep", "train_embedder", "train_steps", "warn_if_dropout_pairs_are_identical",
    "write_results_table",
]
