"""STS Benchmark loading and a fast cosine-similarity correlation for in-training dev evaluation.

Scores are always returned on the **0-5 scale** (the original STS-B scale, the one in ``../shared/data/stsb`` and
in MTEB's ``mteb/stsbenchmark-sts``). The Hub copy ``sentence-transformers/stsb`` stores scores divided by 5
(0-1); :func:`load_stsb` multiplies them back by 5 so both sources give identical rows. Correlations are
scale-invariant, so this only matters for code that uses the raw scores (e.g. CoSENT/regression targets: divide
by 5 yourself).

Local layout (``data_dir``): a folder like ``../shared/data``, i.e. containing ``stsb/stsb-en-{train,dev,test}.csv``
(csv, no header: ``sentence1,sentence2,score``). Passing the ``stsb`` folder itself also works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

HUB_ID = "sentence-transformers/stsb"
COLUMNS = ("sentence1", "sentence2", "score")

# accepted split names -> (local file stem suffix, Hub split name)
_SPLITS = {
    "train": ("train", "train"),
    "dev": ("dev", "validation"),
    "validation": ("dev", "validation"),
    "valid": ("dev", "validation"),
    "test": ("test", "test"),
}


def _normalise_split(split: str) -> tuple[str, str]:
    try:
        return _SPLITS[split.lower()]
    except KeyError:
        raise ValueError(f"unknown STS-B split {split!r}; expected one of: train, dev (= validation), test") from None


def stsb_local_file(split: str, data_dir: str | Path) -> Path:
    """Path of the local csv for ``split`` under ``data_dir`` (``data_dir/stsb/...`` or ``data_dir/...``)."""
    local, _ = _normalise_split(split)
    data_dir = Path(data_dir).expanduser()
    name = f"stsb-en-{local}.csv"
    candidates = [data_dir / "stsb" / name, data_dir / name]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"STS-B {split!r} split not found: looked for {candidates[0]} and {candidates[1]}. "
        f"data_dir must be a folder laid out like ../shared/data (containing stsb/{name}); "
        f"pass data_dir=None to download {HUB_ID} from the Hub instead."
    )


def load_stsb(split: str, data_dir: str | Path | None = None):
    """Load an STS-B split as a ``datasets.Dataset`` with columns sentence1 (str), sentence2 (str), score (float, 0-5).

    ``split``: ``train``, ``dev`` (alias ``validation``) or ``test``.
    ``data_dir``: a folder laid out like ``../shared/data`` (contains ``stsb/``); ``None`` loads the Hub dataset
    ``sentence-transformers/stsb`` (scores there are 0-1 and are rescaled to 0-5).
    """
    import datasets

    local, hub_split = _normalise_split(split)
    features = datasets.Features(
        {
            "sentence1": datasets.Value("string"),
            "sentence2": datasets.Value("string"),
            "score": datasets.Value("float64"),
        }
    )
    if data_dir is not None:
        import csv

        path = stsb_local_file(split, data_dir)
        rows = {"sentence1": [], "sentence2": [], "score": []}
        with open(path, newline="", encoding="utf-8") as f:
            for i, rec in enumerate(csv.reader(f)):
                if not rec:
                    continue
                if len(rec) != 3:
                    raise ValueError(f"{path}:{i + 1}: expected 3 columns (sentence1,sentence2,score), got {len(rec)}")
                rows["sentence1"].append(rec[0])
                rows["sentence2"].append(rec[1])
                rows["score"].append(float(rec[2]))
        return datasets.Dataset.from_dict(rows, features=features)

    try:
        ds = datasets.load_dataset(HUB_ID, split=hub_split)
    except Exception as e:  # offline, missing cache, ...
        raise RuntimeError(
            f"could not load {HUB_ID!r} split {hub_split!r} from the Hub ({type(e).__name__}: {e}). "
            "Without network, pass data_dir= a folder containing stsb/stsb-en-{train,dev,test}.csv "
            "(e.g. ../shared/data)."
        ) from e
    ds = ds.select_columns(list(COLUMNS))
    ds = ds.map(lambda b: {"score": [float(s) * 5.0 for s in b["score"]]}, batched=True)
    return ds.cast(features)


def stsb_correlations(
    encode_fn: Callable[[Sequence[str]], "np.ndarray"],
    split: str = "dev",
    data_dir: str | Path | None = None,
    batch_size: int = 64,
    max_rows: int | None = None,
) -> dict[str, float]:
    """Spearman and Pearson correlation between gold scores and cosine similarity of the embeddings.

    ``encode_fn(list_of_texts) -> array [n, dim]`` (numpy or torch); it is called on chunks of ``batch_size``
    texts. Each distinct sentence is encoded once. Returns ``{"spearman": float, "pearson": float}``.
    The same definition as MTEB's ``cosine_spearman`` / ``cosine_pearson``, without MTEB's overhead. Kept beside
    sentence-transformers' ``EmbeddingSimilarityEvaluator`` (which gives the same numbers for a SentenceTransformer:
    tests compare them) because it takes any encode function: the model inside the training loop, an onnxruntime
    graph.
    """
    from scipy.stats import pearsonr, spearmanr

    ds = load_stsb(split, data_dir)
    if max_rows is not None:
        ds = ds.select(range(min(max_rows, len(ds))))
    s1, s2, gold = ds["sentence1"], ds["sentence2"], np.asarray(ds["score"], dtype=np.float64)
    texts = list(dict.fromkeys(list(s1) + list(s2)))
    index = {t: i for i, t in enumerate(texts)}
    chunks = []
    for start in range(0, len(texts), batch_size):
        out = encode_fn(texts[start : start + batch_size])
        if hasattr(out, "detach"):
            out = out.detach().float().cpu().numpy()
        chunks.append(np.asarray(out, dtype=np.float64))
    emb = np.concatenate(chunks, axis=0)
    emb = emb / np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)
    a = emb[[index[t] for t in s1]]
    b = emb[[index[t] for t in s2]]
    cos = (a * b).sum(axis=1)
    return {"spearman": float(spearmanr(gold, cos).statistic), "pearson": float(pearsonr(gold, cos).statistic)}
