"""Evaluation of ``train_embedder``: STS-B dev correlations of the encoder, and the best model they select, saved
as a sentence-transformers folder (``OUTPUT_DIR/best_model``)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from . import checkpoint as ckpt


def make_encode_fn(model: nn.Module, tokenizer, max_length: int, device):
    """texts -> their sentence embeddings [N, D] (float32, CPU), in eval mode, without gradients."""

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
    """{"spearman", "pearson"} of cosine similarity on STS-B dev (``--data-dir`` or the Hub; ``--eval-max-rows``)."""
    from hf_attn.evaluation.stsb import stsb_correlations

    return stsb_correlations(make_encode_fn(model, tokenizer, args.max_seq_length, device), "dev",
                             data_dir=args.data_dir, batch_size=128, max_rows=args.eval_max_rows)


def save_best_model(model, tokenizer, path: Path) -> Path:
    """``model`` and ``tokenizer`` as a sentence-transformers folder at ``path``, replacing it atomically."""

    def write(tmp: Path):
        try:
            from hf_attn.embedding import save_sentence_transformer
        except ImportError:  # embedding module not available: plain transformers folder
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            return
        save_sentence_transformer(model, tokenizer, tmp)

    return ckpt.atomic_write_dir(path, write)


class DevSelection:
    """STS-B dev evaluation during training, and the best model it selects.

    ``evaluate(step)`` scores the encoder on the main process, records the result in ``state`` (``evals``,
    ``best_dev_spearman``, ``best_dev_pearson``, ``best_step``) and saves a new best to ``best_dir``. When STS-B dev
    is unavailable (offline without ``--data-dir``) evaluation is switched off on every process, and ``finish``
    saves the final model instead.
    """

    def __init__(self, accelerator, encoder, tokenizer, args, state: dict, best_dir: Path, log=print):
        self.accelerator, self.encoder, self.tokenizer, self.args = accelerator, encoder, tokenizer, args
        self.state, self.best_dir, self.log = state, best_dir, log
        self.available = True

    def evaluate(self, step: int) -> dict | None:
        if not self.available:
            return None
        acc = self.accelerator
        res = self._score() if acc.is_main_process else None
        flag = acc.gather(torch.tensor([0.0 if res is None and acc.is_main_process else 1.0], device=acc.device))
        if flag.min().item() == 0.0:
            self.available = False
            return None
        if acc.is_main_process:
            self._record(step, res)
        acc.wait_for_everyone()
        return res

    def finish(self) -> None:
        """At the end of a finished run: a final evaluation, and the final model when nothing could be scored."""
        self.evaluate(self.state["step"])
        if self.state["best_dev_spearman"] is None and self.accelerator.is_main_process:
            save_best_model(self.encoder, self.tokenizer, self.best_dir)  # no dev score available: the final model

    def _score(self) -> dict | None:
        try:
            return evaluate_stsb_dev(self.encoder, self.tokenizer, self.args, self.accelerator.device)
        except Exception as e:  # noqa: BLE001 - no STS-B here (offline, no --data-dir): train without selection
            self.log(f"STS-B dev evaluation unavailable ({type(e).__name__}: {e}); saving the final model instead")
            return None

    def _record(self, step: int, res: dict) -> None:
        best = self.state["best_dev_spearman"]
        improved = best is None or res["spearman"] > best
        self.state["evals"].append({"step": step, **res})
        self.log(f"step {step} | eval | spearman {res['spearman']:.4f} | pearson {res['pearson']:.4f}"
                 + (" | new best" if improved else ""))
        if improved:
            self.state.update(best_dev_spearman=res["spearman"], best_dev_pearson=res["pearson"], best_step=step)
            save_best_model(self.encoder, self.tokenizer, self.best_dir)
        self.accelerator.log({"eval/spearman": res["spearman"], "eval/pearson": res["pearson"]}, step=step)


__all__ = ["DevSelection", "evaluate_stsb_dev", "make_encode_fn", "save_best_model"]
