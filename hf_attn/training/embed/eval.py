"""Evaluation of ``train_embedder``: the scores checkpoints are selected on (STS-B train pairs, held-out teacher
targets), STS-B dev beside them, and the best model, saved as a sentence-transformers folder
(``OUTPUT_DIR/best_model``)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import checkpoint as ckpt


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


def evaluate_stsb_dev(model, tokenizer, device, max_seq_length: int, data_dir: str | None = None,
                      eval_max_rows: int | None = None) -> dict[str, float]:
    """{"spearman", "pearson"} of cosine similarity on STS-B dev (``data_dir`` or the Hub; the first
    ``eval_max_rows``)."""
    from hf_attn.evaluation.stsb import stsb_correlations

    return stsb_correlations(make_encode_fn(model, tokenizer, max_seq_length, device), "dev",
                             data_dir=data_dir, batch_size=128, max_rows=eval_max_rows)


def heldout_similarity(encode, texts, targets: torch.Tensor, batch_size: int = 128) -> float:
    """Pearson correlation between the student's and the teacher's pairwise cosine similarities over held-out pool
    sentences (their cached targets): how well the student keeps the teacher's geometry on text it never trained
    on, independent of the two embeddings' widths."""
    emb = torch.cat([encode(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]).double()
    emb = torch.nn.functional.normalize(emb, dim=-1)
    tgt = torch.nn.functional.normalize(targets.double(), dim=-1)
    upper = torch.triu_indices(len(texts), len(texts), offset=1)
    a, b = (emb @ emb.T)[upper[0], upper[1]], (tgt @ tgt.T)[upper[0], upper[1]]
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def selection_scores(model, tokenizer, device, max_seq_length: int, data_dir: str | None = None,
                     eval_max_rows: int | None = None, heldout=None) -> dict[str, float]:
    """What checkpoints are chosen on, and STS-B dev beside it: ``spearman``/``pearson`` (STS-B dev, reported),
    ``train_spearman`` (STS-B *train* pairs, the first ``--eval-max-rows`` or 1500), ``heldout_similarity``
    (``heldout_similarity`` on the held-out pool slice, when training on cached targets) and ``selection``: the mean
    of the last two that are available; STS-B dev only when neither is (``selected_on`` says which)."""
    from hf_attn.evaluation.stsb import stsb_correlations

    encode = make_encode_fn(model, tokenizer, max_seq_length, device)
    out = evaluate_stsb_dev(model, tokenizer, device, max_seq_length, data_dir, eval_max_rows)
    parts = {}
    try:
        parts["train_spearman"] = stsb_correlations(encode, "train", data_dir=data_dir, batch_size=128,
                                                    max_rows=eval_max_rows or 1500)["spearman"]
    except (FileNotFoundError, RuntimeError):  # no STS-B train split here (a fixture folder, offline)
        pass
    if heldout is not None:
        parts["heldout_similarity"] = heldout_similarity(encode, *heldout)
    out.update(parts)
    out["selection"] = sum(parts.values()) / len(parts) if parts else out["spearman"]
    out["selected_on"] = "+".join(parts) if parts else "stsb_dev"
    return out


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
    """Evaluation during training, and the best model it selects (``selection_scores``: STS-B train pairs and
    held-out teacher targets, never STS-B test; STS-B dev reported beside them).

    ``evaluate(step)`` scores the encoder on the main process, records the result in ``state`` (``evals``,
    ``best_selection``, ``best_dev_spearman``, ``best_dev_pearson`` of the selected step, ``best_step``) and saves a
    new best to ``best_dir``. When STS-B is unavailable (offline without ``--data-dir``) evaluation is switched off
    on every process, and ``finish`` saves the final model instead.
    """

    def __init__(self, accelerator, encoder, tokenizer, state: dict, best_dir: Path, *, max_seq_length: int,
                 data_dir: str | None = None, eval_max_rows: int | None = None, log=print, heldout=None):
        self.accelerator, self.encoder, self.tokenizer = accelerator, encoder, tokenizer
        self.state, self.best_dir, self.log, self.heldout = state, best_dir, log, heldout
        self.scoring = {"max_seq_length": max_seq_length, "data_dir": data_dir, "eval_max_rows": eval_max_rows}
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
            return selection_scores(self.encoder, self.tokenizer, self.accelerator.device, **self.scoring,
                                    heldout=self.heldout)
        except Exception as e:  # noqa: BLE001 - no STS-B here (offline, no --data-dir): train without selection
            self.log(f"STS-B dev evaluation unavailable ({type(e).__name__}: {e}); saving the final model instead")
            return None

    def _record(self, step: int, res: dict) -> None:
        best = self.state.get("best_selection")
        improved = best is None or res["selection"] > best
        self.state["evals"].append({"step": step, **res})
        extra = "".join(f" | {k} {res[k]:.4f}" for k in ("train_spearman", "heldout_similarity") if k in res)
        self.log(f"step {step} | eval | selection {res['selection']:.4f}{extra} | dev spearman {res['spearman']:.4f}"
                 f" | dev pearson {res['pearson']:.4f}" + (" | new best" if improved else ""))
        if improved:
            self.state.update(best_selection=res["selection"], best_dev_spearman=res["spearman"],
                              best_dev_pearson=res["pearson"], best_step=step)
            save_best_model(self.encoder, self.tokenizer, self.best_dir)
        self.accelerator.log({f"eval/{k}": v for k, v in res.items() if isinstance(v, float)}, step=step)


__all__ = ["DevSelection", "evaluate_stsb_dev", "heldout_similarity", "make_encode_fn", "save_best_model",
           "selection_scores"]
