"""Training data for the recipes: load Hub ids or local files through one function, turn rows into pairs.

Every source goes through ``datasets.load_dataset`` (a Hub id, or the ``json`` / ``csv`` / ``parquet`` builders
for local files, gzip included), then one of the converters below turns its rows into contrastive examples
``{"anchor", "positive", "negative"}`` (``negative`` is ``None`` when the row has no hard negative).

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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .args import UsageError

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
WIKIPEDIA_FILE = "wikipedia_en_extract/wiki_en_extract.jsonl.gz"

_LOCAL_SUFFIXES = {
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
}


class DataError(UsageError):
    """Input data that cannot be trained on (missing columns, empty file or dataset, unknown format)."""


@dataclass(frozen=True)
class PairExample:
    anchor: str
    positive: str
    negative: str | None = None


def _builder_for(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".xz", ".zst"):
        suffixes = suffixes[:-1]
    if not suffixes or suffixes[-1] not in _LOCAL_SUFFIXES:
        raise DataError(f"{path}: unknown file type; expected one of .csv/.tsv/.json/.jsonl/.parquet (optionally .gz)")
    return _LOCAL_SUFFIXES[suffixes[-1]]


def resolve_source(spec: str, data_dir: str | Path | None = None) -> str | Path:
    """A dataset spec -> an existing local path, or the spec itself (a Hub id).

    ``spec`` may be a path, or a path relative to ``data_dir`` (``msrp/msrp_train.jsonl.gz`` or a folder). A
    ``data_dir`` that does not exist, or a spec that names a data file (``.jsonl``, ``.csv``, ...) found nowhere,
    raises ``DataError`` (rather than being looked up on the Hub).
    """
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataError(f"--data-dir {data_dir}: no such folder (pass a folder laid out like ../shared/data)")
    candidates = [Path(spec)]
    if data_dir is not None:
        candidates.insert(0, Path(data_dir) / spec)
    for c in candidates:
        if c.exists():
            return c
    if is_data_file(Path(spec)) or str(spec).startswith((".", "/", "~")):
        raise DataError(f"{spec}: no such file (looked for {', '.join(str(c) for c in candidates)})")
    return spec


def diagnose_file(path: Path) -> str | None:
    """Where a local data file is malformed: "<file> line N: <problem>", or None when no fault is found.

    Reads it the way the loaders do (gzip included): a truncated .gz, a jsonl line that is not a JSON object, a
    csv row with another number of fields than the first, text that is not UTF-8.
    """
    import csv
    import gzip
    import io
    import json
    import zlib

    name = path.name.lower()
    opener = gzip.open if name.endswith(".gz") else open
    builder = _builder_for(path) if is_data_file(path) else None
    line_no = 0
    try:
        with opener(path, "rb") as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            if builder == "csv":
                delim = "\t" if ".tsv" in name else ","
                width = None
                reader = csv.reader(text, delimiter=delim)
                for row in reader:
                    line_no = reader.line_num
                    if not row:
                        continue
                    width = width or len(row)
                    if len(row) != width:
                        return f"{path} line {line_no}: {len(row)} fields, the first row has {width}"
            elif builder == "json" and not name.replace(".gz", "").endswith(".json"):
                for line_no, line in enumerate(text, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        return f"{path} line {line_no}: not valid JSON ({e.msg} at column {e.colno})"
                    if not isinstance(row, dict):
                        return f"{path} line {line_no}: expected a JSON object per line, got {type(row).__name__}"
            else:  # read it all: a truncated .gz or a byte that is not UTF-8 shows up here
                for line_no, _ in enumerate(text, 1):  # noqa: B007 - the count names the line in the errors below
                    pass
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        return (f"{path}: the gzip stream is truncated or corrupt after line {line_no} ({e}); re-download or "
                "re-compress the file")
    except UnicodeDecodeError as e:
        return f"{path} line {line_no + 1}: not UTF-8 text ({e.reason} at byte {e.start})"
    except csv.Error as e:
        return f"{path} line {line_no + 1}: malformed csv ({e})"
    return None


def _load_local(builder: str, files: list[Path], **kwargs):
    """``datasets.load_dataset`` on local files; a malformed file raises ``DataError`` naming the file and line."""
    import datasets

    try:
        return datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train", **kwargs)
    except Exception as e:  # noqa: BLE001 - datasets wraps parser errors in its own types; find the bad line
        for f in files:
            problem = diagnose_file(f)
            if problem:
                raise DataError(f"{problem}. Fix or remove that line (or the file) and run again") from e
        raise


def load_rows(
    spec: str | Path,
    data_dir: str | Path | None = None,
    split: str = "train",
    subset: str | None = None,
    column_names: Sequence[str] | None = None,
):
    """Load one source as a ``datasets.Dataset``: a Hub id (``subset`` = its config) or a local file/folder.

    A local ``.csv`` without a header (STS-B) needs ``column_names``. Raises ``DataError`` for an empty file or
    dataset, or an unknown file type.
    """
    import datasets

    source = resolve_source(str(spec), data_dir)
    if isinstance(source, Path):
        files = ([source] if not source.is_dir() else
                 sorted(p for p in source.rglob("*") if p.is_file() and not p.name.endswith(".md")))
        files = [f for f in files if is_data_file(f)]
        if not files:
            raise DataError(f"{source}: no data files (.csv/.jsonl/.json/.parquet[.gz]) found")
        for f in files:
            if f.stat().st_size == 0:
                raise DataError(f"{f}: file is empty")
        builder = _builder_for(files[0])
        kwargs = {}
        if builder == "csv":
            if files[0].suffixes and ".tsv" in files[0].suffixes:
                kwargs["delimiter"] = "\t"
            if column_names:
                kwargs["column_names"] = list(column_names)
        ds = _load_local(builder, files, **kwargs)
    else:
        ds = datasets.load_dataset(source, subset, split=split)
    if len(ds) == 0:
        raise DataError(f"{spec}: the dataset is empty (0 rows)")
    return ds


def is_data_file(path: Path) -> bool:
    """Whether ``path`` is a kind of file the loaders read (csv, json, jsonl, parquet; gzip included)."""
    try:
        _builder_for(path)
        return True
    except DataError:
        return False


def require_columns(columns: Iterable[str], expected: Sequence[str], source: str) -> None:
    found = list(columns)
    missing = [c for c in expected if c not in found]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {missing}; found columns {found}, expected {list(expected)} "
            "(or one of the layouts anchor/positive[/negative], premise/hypothesis/label, sentence1/sentence2/label, "
            "text)"
        )


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


_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def split_sentences(paragraph: str, min_words: int = 5, max_words: int = 64) -> list[str]:
    sents = [s.strip() for s in _SENTENCE_SPLIT.split(paragraph)]
    return [s for s in sents if min_words <= len(s.split()) <= max_words]


def iter_text_sentences(texts: Iterable[str]) -> Iterable[list[str]]:
    """Yield the sentences of each paragraph (Wikipedia: paragraphs are lines; headings end in '.')."""
    for text in texts:
        for para in text.split("\n"):
            sents = split_sentences(para)
            if sents:
                yield sents


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


def load_texts(spec: str | Path, data_dir: str | Path | None = None, max_texts: int | None = None) -> list[str]:
    """The 'text' column of a source (Wikipedia jsonl.gz, a Hub text dataset), or lines of a .txt file."""
    source = resolve_source(str(spec), data_dir)
    if isinstance(source, Path) and source.is_file() and source.suffix in (".txt",):
        text = source.read_text(encoding="utf-8", errors="replace")
        if not text.strip():
            raise DataError(f"{source}: text file is empty")
        lines = [line for line in text.split("\n") if line.strip()]
        return lines[:max_texts] if max_texts else lines
    ds = load_rows(source, data_dir)
    require_columns(ds.column_names, ["text"], str(spec))
    if max_texts is not None:
        ds = ds.select(range(min(max_texts, len(ds))))
    texts = [t for t in ds["text"] if isinstance(t, str) and t.strip()]
    if not texts:
        raise DataError(f"{spec}: no non-empty text rows")
    return texts


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
