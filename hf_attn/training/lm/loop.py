"""Byte-level language modelling with AdaptiveSpanGPT under Accelerate: ``recipes/train_lm.py``.

    from hf_attn.training.lm import train_lm
    from hf_attn.training.lm.args import LMTrainingArguments
    summary = train_lm(LMTrainingArguments(data="enwik8", use_adaptive_attention=True))

One step: ``grad_accum_steps`` micro-batches of random byte windows (``data.ByteBatches``: a function of (seed,
step, rank), so a resumed run sees exactly the batches of the uninterrupted one), the model's loss (next-byte
cross-entropy plus the span regulariser), one optimizer step. Every ``eval_steps``: validation loss, bits per
byte, perplexity, attention FLOPs and entropy, spans and periods (``eval``) go to ``metrics.jsonl``; the lowest
validation loss is kept as ``best_model/``. Options: ``args``; data: ``data``.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from ... import registry
from .. import checkpoint as ckpt
from .. import common
from ..args import cli_errors, to_flat_dict
from ..common import NonFiniteLoss, RunRecord
from .args import LMTrainingArguments, finalize_args, model_options, parse_args, resume_settings
from .data import ByteBatches, lm_dataset_name, load_byte_splits, resolve_lm_data
from .eval import PeakMemory, attention_entropy, evaluate_lm, span_summary

LM_MODEL = "adaptive_span_gpt"  # the registry entry train_lm builds


def build_lm_model(config_fields: dict, attn_implementation: str | None = None, vocab_size: int = 256):
    """AdaptiveSpanGPT with its LM head: ``config_fields`` (``args.model_options``) over the config's defaults."""
    entry = registry.get(LM_MODEL)
    model = entry.head_class(entry.config_class(vocab_size=vocab_size, **config_fields, use_cache=False))
    if attn_implementation:
        model.set_attn_implementation(attn_implementation)
    return model


def lm_step(accelerator, model, optimizer, batches: ByteBatches, step: int, grad_accum_steps: int,
            max_grad_norm: float):
    """Optimizer step ``step``: ``grad_accum_steps`` micro-batches, then clipping and the update. Returns (mean loss,
    the last micro-batch's output); ``NonFiniteLoss`` before the update when a loss is not finite."""
    losses = []
    for micro in range(grad_accum_steps):
        ids = batches.batch(step * grad_accum_steps + micro, accelerator.process_index).to(accelerator.device)
        with accelerator.accumulate(model):
            out = model(input_ids=ids, labels=ids, use_cache=False)
            common.check_finite(accelerator, out.loss)
            accelerator.backward(out.loss)
            if accelerator.sync_gradients and max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
        losses.append(out.loss.item())
    return float(np.mean(losses)), out


def evaluate_and_save(accelerator, model, valid: ByteBatches, state: dict, out_dir: Path, eval_batches: int,
                      log=print) -> dict:
    """Validation metrics at ``state["step"]`` on ``eval_batches`` batches: logged, appended to ``state["evals"]``
    and ``out_dir``/metrics.jsonl; a new lowest validation loss is saved (atomically) as ``out_dir``/best_model."""
    step = state["step"]
    ev = evaluate_lm(model, valid, accelerator.device, eval_batches)
    ev["step"] = step
    ev.update(span_summary(model))
    ev["attention_flops_ratio"] = model.attention_flops(valid.seq_len)["ratio"]
    ev["attention_entropy"] = attention_entropy(model, next(valid.sequential(1))[:2].to(accelerator.device))
    state["evals"].append(ev)
    log(f"step {step} | eval | loss {ev['loss']:.4f} | bpc {ev['bpc']:.4f} | ppl {ev['perplexity']:.3f} | "
        f"attn FLOPs {ev['attention_flops_ratio']:.3f} x dense | entropy {ev['attention_entropy']:.3f}"
        + (f" | mean span {ev['mean_span']:.1f}" if ev["mean_span"] is not None else "")
        + (f" | mean period {ev['mean_period']:.2f}" if ev["mean_period"] is not None else ""))
    accelerator.log({f"eval/{k}": v for k, v in ev.items() if isinstance(v, (int, float)) and v is not None}, step=step)
    if accelerator.is_main_process:
        with open(out_dir / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(ev) + "\n")
    if state.get("best_val_loss") is None or ev["loss"] < state["best_val_loss"]:
        state["best_val_loss"], state["best_val_bpc"], state["best_step"] = ev["loss"], ev["bpc"], step
        if accelerator.is_main_process:  # atomic: a run killed mid-write keeps the previous best
            ckpt.atomic_write_dir(out_dir / "best_model", model.save_pretrained)
    return ev


def train_lm(args: LMTrainingArguments, log_fn=None) -> dict:
    """Train AdaptiveSpanGPT on bytes; returns a summary (also OUTPUT_DIR/summary.json, metrics.jsonl)."""
    args = finalize_args(args)
    common.check_run_options(args.report_to, args.mixed_precision, args.cpu)  # before the output folder is created
    with ckpt.locked_output_dir(args.output_dir):  # one run per output folder
        return _train_lm(args, log_fn)


def _train_lm(args: LMTrainingArguments, log_fn=None) -> dict:
    from accelerate.utils import set_seed

    from ...hub import push_best_model
    from ..optim import build_optimizer, build_scheduler

    out_dir = Path(args.output_dir)
    accelerator = common.make_accelerator(args.mixed_precision, args.output_dir, args.cpu, args.report_to,
                                          gradient_accumulation_steps=args.grad_accum_steps)
    log = log_fn or accelerator.print
    set_seed(args.seed)

    source = resolve_lm_data(args.data, args.data_dir)
    splits = load_byte_splits(source, args.enwik8, args.max_bytes)
    log(f"data: {source} -> train {len(splits['train']):,} / valid {len(splits['validation']):,} / "
        f"test {len(splits['test']):,} bytes")
    train = ByteBatches(splits["train"], args.block_size, args.batch_size, args.seed)
    valid = ByteBatches(splits["validation"], args.block_size, args.batch_size, args.seed + 1)

    model = build_lm_model(model_options(args), args.attn_implementation)
    common.quiet_declared_tied_weights(model)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f}M params, attn {model.config._attn_implementation}, positions "
        f"{args.position_embedding}, adaptive span {args.use_adaptive_attention}, triangle wave "
        f"{args.use_triangle_wave_masking}")
    optimizer = build_optimizer([model], args.optimizer, lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = build_scheduler(optimizer, args.warmup_steps, args.max_steps, "cosine")
    train_model, optimizer = accelerator.prepare(torch.compile(model) if args.compile else model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    model = accelerator.unwrap_model(train_model)
    model = getattr(model, "_orig_mod", model)  # the model itself (not compiled): evaluation, spans, saving

    state = initial_state(accelerator, model, args.resume_from_checkpoint, out_dir / "checkpoints",
                          resume_settings(args), args.max_steps, log)
    common.start_trackers(accelerator, "train_lm", to_flat_dict(args))

    run, peak, first_step = RunRecord(), PeakMemory(accelerator.device), state["step"]
    tokens_per_step = args.batch_size * args.block_size * args.grad_accum_steps * accelerator.num_processes
    progress = common.progress_bar(accelerator, args.max_steps, state["step"], "train_lm")
    while state["step"] < args.max_steps:
        t0 = time.perf_counter()
        try:
            with peak if state["step"] == first_step else nullcontext():  # peak memory of this run's first step
                loss, out = lm_step(accelerator, train_model, optimizer, train, state["step"], args.grad_accum_steps,
                                    args.max_grad_norm)
        except NonFiniteLoss as e:
            run.stop("non_finite_loss", f"{e} at step {state['step'] + 1}; last good checkpoint kept")
            log(run.message)
            break
        scheduler.step()
        seconds = time.perf_counter() - t0
        run.add_step(tokens_per_step, seconds)
        state["step"] = step = state["step"] + 1
        progress.update(1)
        record = {"step": step, "loss": loss, "tokens_per_s": tokens_per_step / seconds,
                  "lr": scheduler.get_last_lr()[0]}
        if out.span_loss is not None:
            record["span_reg"] = float(out.span_loss.detach())
        state["history"].append(record)
        if step % args.logging_steps == 0 or step == args.max_steps:
            log(f"step {step} | loss {loss:.4f} | bpc {loss / math.log(2):.3f} | "  # tok/s: the run's mean so far,
                f"{run.samples_per_s:.0f} tok/s | peak mem {peak.peak_mb:.1f} MB")  # the figure summary.json keeps
            accelerator.log({f"train/{k}": v for k, v in record.items() if k != "step"}, step=step)
        if (args.eval_steps and step % args.eval_steps == 0) or step == args.max_steps:
            evaluate_and_save(accelerator, model, valid, state, out_dir, args.eval_batches, log)
        if args.save_steps and step % args.save_steps == 0:
            run.last_checkpoint = str(ckpt.save_checkpoint(accelerator, out_dir / "checkpoints", step,
                                                           common.json_copy(state), keep=args.save_total_limit))
    progress.close()

    summary = lm_summary(model, state, run, peak, n_params, lm_dataset_name(source, args.enwik8), out_dir,
                         args.block_size)
    common.write_summary(accelerator, out_dir, summary)
    if args.push_to_hub and run.status == "completed" and summary["best_model_dir"] and accelerator.is_main_process:
        bpc = {"bpc": summary["best_val_bpc"], "dataset": summary["dataset"][0], "split": "validation"}
        summary["hub"] = push_best_model(summary["best_model_dir"], out_dir, args.push_to_hub, args.hub_private,
                                         log=log, eval_results=bpc)
    accelerator.end_training()
    return summary


def initial_state(accelerator, model, resume_from: str | None, checkpoint_dir: Path, settings: dict, max_steps: int,
                  log=print) -> dict:
    """The run's state at its first step: empty, or what the checkpoint ``resume_from`` names saved (after checking
    it was written with the same ``settings`` and by a model of this shape)."""
    state = {"step": 0, "history": [], "evals": [], "settings": settings}
    resume = ckpt.resolve_resume(resume_from, checkpoint_dir, log=log)
    if resume is not None:
        ckpt.check_resume(resume, model, settings, max_steps)
        state.update(ckpt.load_checkpoint(accelerator, resume))
        log(f"resumed from {resume} at step {state['step']}")
    return state


def lm_summary(model, state: dict, run: RunRecord, peak: PeakMemory, n_params: int, dataset: str, output_dir: Path,
               block_size: int) -> dict:
    """What ``train_lm`` returns and writes to summary.json: the run, the last evaluation, attention FLOPs (at
    ``block_size``), spans."""
    last_eval = state["evals"][-1] if state["evals"] else {}
    flops = model.attention_flops(block_size)
    return {
        "output_dir": str(output_dir), "status": run.status, "message": run.message, "params": n_params,
        "dataset": [dataset],
        "best_model_dir": str(output_dir / "best_model") if state.get("best_step") else None,
        "best_step": state.get("best_step"), "best_val_bpc": state.get("best_val_bpc"),
        "steps": state["step"], "train_time_s": run.train_time,
        "tokens_per_s": run.samples_per_s if run.train_time else None,
        "peak_memory_mb": peak.peak_mb, "final_train_loss": state["history"][-1]["loss"] if state["history"] else None,
        "val_loss": last_eval.get("loss"), "val_bpc": last_eval.get("bpc"),
        "val_perplexity": last_eval.get("perplexity"),
        "attention_flops": flops["attention_flops"], "dense_attention_flops": flops["dense_causal_flops"],
        "attention_flops_ratio": flops["ratio"], "attention_entropy": last_eval.get("attention_entropy"),
        **span_summary(model), "history": state["history"], "evals": state["evals"],
    }


@cli_errors("train_lm.py")
def main(argv=None) -> int:
    summary = train_lm(parse_args(argv))
    print(json.dumps({k: v for k, v in summary.items() if k not in ("history", "evals", "spans", "periods")}, indent=1))
    return 0 if summary["status"] == "completed" else 1


__all__ = ["LM_MODEL", "build_lm_model", "evaluate_and_save", "initial_state", "lm_step", "lm_summary", "main",
           "train_lm"]
