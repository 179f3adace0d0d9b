"""One step of ``train_embedder``: the encoder (``build_model``) and its loss (``build_loss``) as one module
(``EmbedderTrainingModule``), one optimizer step on one contrastive batch (``EmbedStep``), and the batches in a
resumable order (``resumable_batches``).
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
from torch import nn

from ... import registry
from ..args import UsageError
from ..common import check_finite


def build_model(model_type: str, tokenizer, config_fields: dict, max_seq_length: int,
                attn_implementation: str | None = None) -> nn.Module:
    """The encoder of ``model_type`` (``registry``) with ``config_fields`` (``args.config_fields``: the size options
    given), sized to the tokenizer, checked to hold ``max_seq_length`` tokens."""
    entry = registry.get(model_type)
    kwargs = dict(config_fields)
    kwargs["vocab_size"] = len(tokenizer)
    kwargs["pad_token_id"] = tokenizer.pad_token_id
    kwargs.setdefault("max_position_embeddings", max(512, max_seq_length))
    config = entry.config_class(**kwargs)
    limit = getattr(config, "max_sequence_length", None) or config.max_position_embeddings
    if isinstance(limit, int) and max_seq_length > limit:
        raise UsageError(f"--max-seq-length {max_seq_length} is beyond the model's limit of {limit} positions "
                         f"(pass --max-seq-length {limit} or less, or a larger max_position_embeddings in "
                         "--model-kwargs)")
    if attn_implementation:
        config._attn_implementation = attn_implementation
    return entry.model_class(config)


def build_loss(encoder: nn.Module, teacher_dim: int | None, *, distill_target: str = "embedding",
               temperature: float = 0.05, learnable_temperature: bool = True, min_temperature: float = 0.01,
               max_temperature: float = 1.0, symmetric_loss: bool = True, distill_weight: float = 1.0,
               contrastive_weight: float = 1.0) -> nn.Module:
    """InfoNCE, plus the ``distill_target`` term towards a teacher of width ``teacher_dim`` (None: no teacher);
    ``args.loss_options`` gives the keywords."""
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
    elif distill_target == "similarity":
        distill = SimilarityDistillationLoss()
    elif distill_target == "both":
        distill = CombinedDistillationLoss(student_dim, teacher_dim)
    else:
        distill = EmbeddingDistillationLoss(student_dim, teacher_dim)
    contrastive = InfoNCELoss(temperature, learnable_temperature, min_temperature, max_temperature, symmetric_loss)
    return EmbedderLoss(contrastive, distill, distill_weight=distill_weight, contrastive_weight=contrastive_weight)


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

    def __init__(self, accelerator, module, optimizer, scheduler, grad_accum_steps: int = 1,
                 max_grad_norm: float = 1.0, teacher=None):
        from .losses import GradientCache

        self.accelerator, self.module, self.teacher = accelerator, module, teacher
        self.optimizer, self.scheduler = optimizer, scheduler
        self.grad_accum_steps, self.max_grad_norm = grad_accum_steps, max_grad_norm
        self.loss_fn = accelerator.unwrap_model(module).loss_fn
        self.grad_cache = None
        if grad_accum_steps > 1:  # mini-batch size set per batch
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


__all__ = ["EmbedStep", "EmbedderTrainingModule", "build_loss", "build_model", "resumable_batches"]
