"""Reading training data for the recipes: Hub ids or local files (csv, tsv, json, jsonl, parquet, gzip included)
through ``datasets.load_dataset``, one function (``load_rows``), with the file and line named when a file is broken
(``diagnose_file``); raw text as sentences (``load_texts``, ``iter_text_sentences``).

What the rows become is the job's: contrastive pairs in ``embed/pairs.py``, byte streams in ``lm/data.py``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Sequence

from .args import UsageError

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
