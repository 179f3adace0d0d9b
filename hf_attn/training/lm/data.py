"""Byte-level language-model data: a file's bytes split into train / validation / test, and batches of windows.

Sources (``load_byte_splits``):
- enwik8 (a file named ``enwik8``, or ``--enwik8``): the standard split, first 90M bytes train, next 5M valid,
  last 5M test (Al-Rfou et al.; Sukhbaatar et al.).
- any other text file (``--data``): the same 90 / 5 / 5 proportions of its bytes.
- a ``.jsonl(.gz)`` with a ``text`` column (the Wikipedia extract in ../shared/data, the stand-in for enwik8
  here): articles joined by newlines, capped at ``max_bytes``, split 90 / 5 / 5.
An empty file raises ``DataError`` before any model is built.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import torch

from ..data import DataError, diagnose_file

ENWIK8_SPLIT = (90_000_000, 5_000_000, 5_000_000)


def _read_source_bytes(path: Path, max_bytes: int | None) -> bytes:
    try:
        return _read_source_bytes_unchecked(path, max_bytes)
    except (EOFError, OSError, UnicodeDecodeError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        problem = diagnose_file(path) if not isinstance(e, FileNotFoundError) else None
        raise DataError(f"{problem or f'{path}: cannot be read ({e})'}. Fix or re-create the file") from e


def _read_source_bytes_unchecked(path: Path, max_bytes: int | None) -> bytes:
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".json.gz")):
        opener = gzip.open if name.endswith(".gz") else open
        parts, total = [], 0
        with opener(path, "rt", encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise DataError(f"{path} line {line_no}: expected a JSON object with a 'text' field")
                text = row.get("text")
                if not text:
                    continue
                b = text.encode("utf-8") + b"\n"
                parts.append(b)
                total += len(b)
                if max_bytes is not None and total >= max_bytes:
                    break
        data = b"".join(parts)
    else:
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rb") as fh:
            data = fh.read() if max_bytes is None else fh.read(max_bytes)
    return data[:max_bytes] if max_bytes is not None else data


def lm_dataset_name(path: str | Path, enwik8: bool | None = None) -> str:
    """The dataset name a model card reports: "enwik8" for the enwik8 split, else the file's stem."""
    path = Path(path)
    if enwik8 or (enwik8 is None and path.name.split(".")[0] == "enwik8"):
        return "enwik8"
    return path.name.split(".")[0]


def load_byte_splits(path: str | Path, enwik8: bool | None = None, max_bytes: int | None = None,
                     fractions=(0.9, 0.05, 0.05)) -> dict[str, np.ndarray]:
    """{"train", "validation", "test"} -> uint8 arrays. See the module docstring for the split rules."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    if enwik8 is None:
        enwik8 = path.name.split(".")[0] == "enwik8"
    if enwik8:
        data = _read_source_bytes(path, None)
        if len(data) < sum(ENWIK8_SPLIT):
            raise DataError(f"{path}: {len(data)} bytes; enwik8 has 100,000,000 (use --data for other files)")
        a, b, _ = ENWIK8_SPLIT
        arr = np.frombuffer(data, dtype=np.uint8)
        return {"train": arr[:a], "validation": arr[a : a + b], "test": arr[a + b : a + 2 * b]}
    data = _read_source_bytes(path, max_bytes)
    if not data.strip():
        raise DataError(f"{path}: no text (empty after reading)")
    arr = np.frombuffer(data, dtype=np.uint8)
    n_train = int(len(arr) * fractions[0])
    n_val = int(len(arr) * fractions[1])
    splits = {"train": arr[:n_train], "validation": arr[n_train : n_train + n_val], "test": arr[n_train + n_val :]}
    return splits


def resolve_lm_data(data: str | None, data_dir: str | None) -> Path:
    """--data, else the Wikipedia extract, else tiny_shakespeare in --data-dir."""
    if data:
        p = Path(data)
        if not p.exists() and data_dir:
            p = Path(data_dir) / data
        if p.is_dir():
            raise DataError(f"--data {data}: is a folder, not a file (pass a text, enwik8 or jsonl(.gz) file, or the "
                            "folder as --data-dir)")
        if not p.exists():
            raise DataError(f"--data {data}: no such file" + (f" (nor in --data-dir {data_dir})" if data_dir else ""))
        return p
    if data_dir:
        for rel in ("wikipedia_en_extract/wiki_en_extract.jsonl.gz", "tiny_shakespeare/input.txt"):
            if (Path(data_dir) / rel).exists():
                return Path(data_dir) / rel
    raise DataError("no LM data: pass --data FILE (enwik8, a text file, or jsonl with 'text') or --data-dir DIR")


class ByteBatches:
    """Random windows of a byte array: batch(step) -> [B, T] long, a pure function of (seed, step).

    Being indexed by step makes a resumed run see exactly the batches the uninterrupted run would have.
    """

    def __init__(self, data: np.ndarray, seq_len: int, batch_size: int, seed: int = 0):
        if len(data) <= seq_len + 1:
            raise DataError(f"split of {len(data)} bytes is shorter than one sequence of {seq_len + 1}")
        self.data = torch.from_numpy(np.ascontiguousarray(data).astype(np.int64))
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed

    def batch(self, step: int, rank: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 97 + rank)
        starts = torch.randint(0, len(self.data) - self.seq_len, (self.batch_size,), generator=g)
        return torch.stack([self.data[s : s + self.seq_len] for s in starts.tolist()])

    def sequential(self, max_batches: int | None = None):
        """Non-overlapping windows in order (evaluation)."""
        n = (len(self.data) - 1) // self.seq_len
        windows = self.data[: n * self.seq_len].view(n, self.seq_len)
        for i, start in enumerate(range(0, n, self.batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            yield windows[start : start + self.batch_size]


__all__ = ["ENWIK8_SPLIT", "ByteBatches", "lm_dataset_name", "load_byte_splits", "resolve_lm_data"]
