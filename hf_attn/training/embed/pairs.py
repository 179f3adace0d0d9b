"""The examples of ``train_embedder``: rows (``training.data.load_rows``: Hub ids or local files) -> contrastive pairs.

Every source is read by ``training.data.load_rows``, then one of the converters below turns its rows into
contrastive examples ``{"anchor", "positive", "negative"}`` (``negative`` is ``None`` without a hard negative).

Row layouts recognised (by column names):

| columns                                   | kind        | conversion                                          |
|-------------------------------------------|-------------|-----------------------------------------------------|
| anchor, positive[, negative]              | pairs       | as is (sentence-transformers/all-nli pair, triplet) |
| premise, hypothesis, label                | NLI         | entailment -> positive; contradiction of the same   |
|                                           |             | premise -> hard negative (``NLI_LABELS``)            |
| sentence1, sentence2, label               | paraphrase  | label 1 -> positive pair (MSRP, Twitter URL)         |
| text                                      | raw text    | unsupervised pairs (``unsupervised_pairs``)          |

Label conventions (from each ``SOURCE.md`` in ../shared/data and the Hub cards): string labels ``entailment`` /
``neutral`` / ``contradiction`` / ``not_entailment``; integer labels follow GLUE / all-nli ``pair-class``
(0 entailment, 1 neutral, 2 contradiction). ``not_entailment`` (RTE, QNLI, SciTail, WNLI) is *not* a
contradiction, so it yields no hard negative. Twitter URL test rows with ``label`` null (3 of 6 votes) are skipped.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..data import DataError, iter_text_sentences, load_rows

# label value -> role. Anything not listed (neutral, not_entailment, None) is dropped.
NLI_LABELS: dict[object, str] = {
    "entailment": "positive",
    "contradiction": "negative",
    0: "positive",
    2: "negative",
}
PARAPHRASE_POSITIVE_LABELS = {1, "1"}

# What ``--data-dir`` trains on when no ``--dataset`` is given: every pair source of ../shared/data.
DEFAULT_LOCAL_MIX = (
    "snli_devtest_esnli/snli_dev.jsonl.gz",
    "snli_devtest_esnli/snli_test.jsonl.gz",
    "nli_datasets_felsal/mnli_dev.jsonl.gz",
    "nli_datasets_felsal/mpe_train.jsonl.gz",
    "nli_datasets_felsal/joci_train.jsonl.gz",
    "nli_datasets_felsal/add_one_rte_train.jsonl.gz",
    "nli_datasets_felsal/rte_train.jsonl.gz",
    "nli_datasets_felsal/scitail_dev.jsonl.gz",
    "nli_datasets_felsal/qnli_dev.jsonl.gz",
    "msrp/msrp_train.jsonl.gz",
    "twitter_url_paraphrase/twitter_url_train.jsonl.gz",
)
DEFAULT_HUB_DATASET = "sentence-transformers/all-nli"
@dataclass(frozen=True)
class PairExample:
    anchor: str
    positive: str
    negative: str | None = None


def detect_layout(columns: Sequence[str]) -> str:
    """'pairs' | 'nli' | 'paraphrase' | 'text', or raise DataError naming the columns found."""
    cols = set(columns)
    if {"anchor", "positive"} <= cols:
        return "pairs"
    if {"premise", "hypothesis", "label"} <= cols:
        return "nli"
    if {"sentence1", "sentence2", "label"} <= cols:
        return "paraphrase"
    if "text" in cols:
        return "text"
    raise DataError(
        f"unrecognised columns {sorted(cols)}; expected one of: [anchor, positive(, negative)], "
        "[premise, hypothesis, label], [sentence1, sentence2, label], [text]"
    )


def _clean(text) -> str:
    return text.strip() if isinstance(text, str) else ""


def nli_to_pairs(rows: Iterable[dict], labels: dict | None = None) -> list[PairExample]:
    """NLI rows -> (premise, entailed hypothesis[, a contradicted hypothesis of the same premise]).

    Each entailment row gives one example; its hard negative is a contradiction hypothesis of the same premise
    when the data has one (taken in order, reused cyclically). Rows of other labels give no example.
    """
    labels = NLI_LABELS if labels is None else labels
    positives: dict[str, list[str]] = {}
    negatives: dict[str, list[str]] = {}
    order: list[str] = []
    for row in rows:
        premise, hypothesis = _clean(row.get("premise")), _clean(row.get("hypothesis"))
        label = row.get("label")
        if isinstance(label, str):
            label = label.strip().lower()
        role = labels.get(label)
        if not premise or not hypothesis or role is None:
            continue
        if premise not in positives and premise not in negatives:
            order.append(premise)
        (positives if role == "positive" else negatives).setdefault(premise, []).append(hypothesis)
    out = []
    for premise in order:
        negs = negatives.get(premise, [])
        for i, hyp in enumerate(positives.get(premise, [])):
            out.append(PairExample(premise, hyp, negs[i % len(negs)] if negs else None))
    return out


def paraphrase_to_pairs(rows: Iterable[dict]) -> list[PairExample]:
    """Paraphrase rows (sentence1, sentence2, label) -> positive pairs where label is 1; others dropped."""
    out = []
    for row in rows:
        if row.get("label") in PARAPHRASE_POSITIVE_LABELS:
            a, b = _clean(row.get("sentence1")), _clean(row.get("sentence2"))
            if a and b:
                out.append(PairExample(a, b))
    return out


def rows_to_pairs(ds, source: str = "dataset") -> list[PairExample]:
    """Any supported layout -> PairExamples (raises DataError naming found vs expected columns)."""
    layout = detect_layout(ds.column_names)
    if layout == "pairs":
        has_neg = "negative" in ds.column_names
        out = [
            PairExample(_clean(r["anchor"]), _clean(r["positive"]),
                        (_clean(r["negative"]) or None) if has_neg else None)
            for r in ds
        ]
        out = [p for p in out if p.anchor and p.positive]
    elif layout == "nli":
        out = nli_to_pairs(ds)
    elif layout == "paraphrase":
        out = paraphrase_to_pairs(ds)
    else:
        raise DataError(
            f"{source}: has only a 'text' column; raw text gives unsupervised pairs (use --unsupervised), "
            f"not supervised pairs. Found columns {ds.column_names}, expected anchor/positive, "
            "premise/hypothesis/label or sentence1/sentence2/label"
        )
    return out


def unsupervised_pairs(
    texts: Iterable[str], mode: str = "dropout", max_pairs: int | None = None, seed: int = 0
) -> list[PairExample]:
    """Unsupervised positives from raw text.

    ``dropout`` (SimCSE): (s, s); the two views differ by the encoder's dropout. ``neighbour``: (s_i, s_{i+1})
    within a paragraph. Sentences are shuffled with ``seed`` and capped at ``max_pairs``.
    """
    if mode not in ("dropout", "neighbour"):
        raise ValueError(f"unsupervised mode must be 'dropout' or 'neighbour', got {mode!r}")
    out: list[PairExample] = []
    for sents in iter_text_sentences(texts):
        if mode == "dropout":
            out.extend(PairExample(s, s) for s in sents)
        else:
            out.extend(PairExample(a, b) for a, b in zip(sents, sents[1:], strict=False))
        if max_pairs is not None and len(out) >= 4 * max_pairs:
            break
    random.Random(seed).shuffle(out)
    return out[:max_pairs] if max_pairs is not None else out


def load_pair_sources(
    specs: Sequence[str] | None,
    data_dir: str | Path | None = None,
    subset: str | None = None,
    split: str = "train",
) -> list[PairExample]:
    """Load and convert every source; ``specs`` None -> the local mix under ``data_dir`` or the Hub default."""
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataError(f"--data-dir {data_dir}: no such folder (pass a folder laid out like ../shared/data)")
    if not specs:
        if data_dir is not None:
            specs = [s for s in DEFAULT_LOCAL_MIX if (Path(data_dir) / s).exists()]
            if not specs:
                raise DataError(f"--data-dir {data_dir}: none of the default pair files {list(DEFAULT_LOCAL_MIX)} "
                                "exist")
        else:
            specs = [DEFAULT_HUB_DATASET]
            subset = subset or "triplet"
    pairs: list[PairExample] = []
    for spec in specs:
        ds = load_rows(spec, data_dir, split=split, subset=subset)
        got = rows_to_pairs(ds, str(spec))
        if not got:
            labels = sorted(set(map(str, ds["label"])))[:10] if "label" in ds.column_names else "n/a"
            raise DataError(f"{spec}: {len(ds)} rows but no usable pairs (labels {labels})")
        pairs.extend(got)
    return pairs


class PairDataset:
    """A list of PairExamples as a map-style dataset (what the DataLoader samples)."""

    def __init__(self, examples: Sequence[PairExample]):
        if len(examples) == 0:
            raise DataError("no training examples: the training data is empty")
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> PairExample:
        return self.examples[i]


class PairCollator:
    """PairExamples -> one tokenised batch of anchors, then positives, then the hard negatives present.

    Returns ``input_ids``/``attention_mask`` [B + B + K, T] and ``num_pairs`` = B, ``num_negatives`` = K (ints).
    One forward pass encodes all texts; hard negatives need not line up with anchors (they are extra columns
    of the similarity matrix). ``texts`` is kept for the distillation teacher.
    """

    def __init__(self, tokenizer, max_length: int = 128, pad_to_multiple_of: int | None = 8, keep_texts: bool = False):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.keep_texts = keep_texts

    def __call__(self, examples: Sequence[PairExample]) -> dict:
        anchors = [e.anchor for e in examples]
        positives = [e.positive for e in examples]
        negatives = [e.negative for e in examples if e.negative]
        texts = anchors + positives + negatives
        enc = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            pad_to_multiple_of=self.pad_to_multiple_of,
            return_tensors="pt",
            return_token_type_ids=False,
        )
        batch = {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "num_pairs": len(anchors),
            "num_negatives": len(negatives),
        }
        if self.keep_texts:
            batch["texts"] = texts
        return batch
