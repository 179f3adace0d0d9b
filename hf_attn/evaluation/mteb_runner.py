"""Run MTEB (``mteb.evaluate``) on any sentence-transformers model; ``hf-attn eval``.

The scores are MTEB's own, computed by MTEB. What this module adds:

- **Offline data** (``data_dir``): the task's splits are read from local files and put into the MTEB task object
  (``task.dataset`` + ``task.data_loaded = True``) before ``mteb.evaluate`` runs, so MTEB skips its download and
  evaluates exactly as usual. Supported layouts:

  * ``STSBenchmark``: ``data_dir/stsb/stsb-en-{train,dev,test}.csv`` (the ``../shared/data`` layout; the same pairs
    as MTEB's ``mteb/stsbenchmark-sts``). MTEB's split ``validation`` is read from the ``dev`` file.
  * any other task: ``data_dir/<TaskName>/<split>.{jsonl,json,csv,parquet}`` with the columns the MTEB task
    expects (e.g. ``sentence1, sentence2, score`` for STS tasks).

- **Throughput**: sentences/s of the model's encode calls during the run (time inside
  ``SentenceTransformer.encode*``, tokenisation included).

- **Results on disk** (``output_dir``): MTEB's ``ResultCache`` layout, i.e.
  ``<output_dir>/results/<model_name with "/" -> "__">/<revision>/<TaskName>.json`` plus ``model_meta.json`` in the
  same folder. ``model_name`` is ``model_name=`` if given, else the model's name (a local folder -> its basename,
  prefixed ``local/``); ``revision`` is ``"no_revision_available"`` for local folders. The returned dict gives the
  exact paths under ``"result_files"``.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import functools
import json
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

DEFAULT_TASKS = ("STSBenchmark",)
# Other genres than STS-B's captions and news, both readable offline from ../shared/data (``--other-genres``): tweets
# (MTEB's TwitterURLCorpus) and news paraphrases (MSRP, the same pair-classification protocol). Main score: MTEB's
# max_ap, the average precision of the best similarity (cosine, dot, euclidean, manhattan) at telling paraphrases.
OTHER_GENRE_TASKS = ("TwitterURLCorpus", "MSRPParaphrase")
# where ``--data-dir`` holds each pair-classification task's test split: (file, column renames)
_LOCAL_PAIR_FILES = {
    "TwitterURLCorpus": ("twitter_url_paraphrase/twitter_url_test.jsonl.gz",
                         {"sentence1": "sent1", "sentence2": "sent2"}),
    "MSRPParaphrase": ("msrp/msrp_test.jsonl.gz", {}),
}

# user-facing split aliases -> MTEB split names
_SPLIT_ALIASES = {"dev": "validation", "valid": "validation"}


# --------------------------------------------------------------------------------------------------- task lookup
def _all_task_names() -> list[str]:
    try:  # every registered task, superseded / beta / private ones included (mteb.get_task accepts them all)
        from mteb.get_tasks import _TASKS_REGISTRY

        return sorted(_TASKS_REGISTRY)
    except ImportError:  # pragma: no cover - private name moved in a later mteb
        import mteb

        return sorted({t.metadata.name for t in mteb.get_tasks(exclude_superseded=False, exclude_beta=False)})


@functools.cache
def _msrp_task_class():
    """MSRP (Dolan & Brockett 2005) as an MTEB pair-classification task: TwitterURLCorpus's protocol and metadata
    fields, its own name and source. MTEB has no MSRP task; this one reads only local files (``--data-dir``)."""
    from mteb.abstasks.pair_classification import AbsTaskPairClassification
    from mteb.tasks.pair_classification.eng.twitter_url_corpus_pc import TwitterURLCorpus

    class MSRPParaphrase(AbsTaskPairClassification):
        metadata = TwitterURLCorpus.metadata.model_copy(update={
            "name": "MSRPParaphrase", "dataset": {"path": "local/msrp", "revision": "local"},
            "description": "Microsoft Research Paraphrase Corpus test pairs (news sentences), 1 = paraphrase.",
            "reference": "https://aclanthology.org/I05-5002/", "domains": ["News", "Written"],
            "date": ("2005-01-01", "2005-12-31"), "prompt": None})

        def dataset_transform(self, num_proc: int | None = None):
            pass

    return MSRPParaphrase


def get_task(name: str, splits: Sequence[str] | None = None):
    """``mteb.get_task`` with an error listing close matches (difflib) for an unknown name; ``MSRPParaphrase`` is
    hf_attn's own (local data only)."""
    import mteb

    if name == "MSRPParaphrase":
        task = _msrp_task_class()()
        if splits:
            task.metadata = task.metadata.model_copy(update={"eval_splits": list(splits)})
        return task
    names = _all_task_names()
    if name not in names:
        lowered = {n.lower(): n for n in names}
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        close += [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), n=5, cutoff=0.5)]
        close = list(dict.fromkeys(close))[:5]
        hint = f" Did you mean: {', '.join(close)}?" if close else " No similar task names found."
        raise ValueError(f"Unknown MTEB task {name!r}.{hint} (`mteb.get_tasks()` lists all {len(names)} tasks.)")
    return mteb.get_task(name, eval_splits=list(splits) if splits else None)


def _normalise_splits(splits: Sequence[str] | None) -> list[str] | None:
    if not splits:
        return None
    return [_SPLIT_ALIASES.get(s.lower(), s) for s in splits]


# ----------------------------------------------------------------------------------------------- local data
def _load_local_split(task, split: str, data_dir: Path):
    import datasets

    name = task.metadata.name
    if name == "STSBenchmark":
        from .stsb import load_stsb

        return load_stsb({"validation": "dev"}.get(split, split), data_dir)
    if name in _LOCAL_PAIR_FILES and (data_dir / _LOCAL_PAIR_FILES[name][0]).is_file():
        file, renames = _LOCAL_PAIR_FILES[name]
        if split != "test":
            raise FileNotFoundError(f"{name}: only the test split is available locally ({data_dir / file})")
        ds = datasets.load_dataset("json", data_files=str(data_dir / file), split="train")
        ds = ds.filter(lambda r: r["label"] is not None)  # Twitter URL: 3 of 6 votes is neither (the paper's rule)
        ds = ds.map(lambda r: {"sentence1": r["sentence1"].strip(), "sentence2": r["sentence2"].strip()})
        ds = ds.select_columns(["sentence1", "sentence2", "label"]).rename_column("label", "labels")
        return ds.rename_columns(renames) if renames else ds
    folder = data_dir / name
    for ext, builder in (("jsonl", "json"), ("json", "json"), ("csv", "csv"), ("parquet", "parquet")):
        path = folder / f"{split}.{ext}"
        if path.is_file():
            return datasets.load_dataset(builder, data_files={split: str(path)}, split=split)
    raise FileNotFoundError(
        f"No local data for MTEB task {name!r} split {split!r} under {data_dir}: expected "
        f"{folder}/{split}.(jsonl|json|csv|parquet)"
        + (" or stsb/stsb-en-*.csv" if "STSBenchmark" in name else "")
    )


def inject_local_data(task, data_dir: str | Path):
    """Fill ``task.dataset`` from local files for the task's eval splits and mark it loaded (no download)."""
    import datasets

    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data_dir {data_dir} does not exist")
    if task.metadata.is_multilingual:
        raise ValueError(
            f"--data-dir supports monolingual tasks only; {task.metadata.name!r} is multilingual (leave out --data-dir "
            "to load it from the Hub)"
        )
    splits = {split: _load_local_split(task, split, data_dir) for split in task.eval_splits}
    task.dataset = datasets.DatasetDict(splits)
    task.dataset_transform()
    task.data_loaded = True
    return task


# ------------------------------------------------------------------------------------------------ throughput
class _EncodeMeter:
    """Times the outermost ``encode*`` calls of a SentenceTransformer (instance-level wrappers, removable)."""

    METHODS = ("encode", "encode_query", "encode_document")

    def __init__(self, model):
        self.model = model
        self.seconds = 0.0
        self.sentences = 0
        self._depth = 0
        self._saved: dict[str, Any] = {}

    def __enter__(self):
        for name in self.METHODS:
            fn = getattr(self.model, name, None)
            if fn is None:
                continue
            self._saved[name] = self.model.__dict__.get(name)
            object.__setattr__(self.model, name, self._wrap(fn))
        return self

    def __exit__(self, *exc):
        for name, prev in self._saved.items():
            if prev is None:
                self.model.__dict__.pop(name, None)
            else:
                object.__setattr__(self.model, name, prev)
        return False

    def _wrap(self, fn):
        @functools.wraps(fn)
        def wrapper(inputs, *args, **kwargs):
            self._depth += 1
            start = time.perf_counter()
            try:
                return fn(inputs, *args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.seconds += time.perf_counter() - start
                    self.sentences += 1 if isinstance(inputs, (str, dict)) else len(inputs)

        return wrapper

    @property
    def sentences_per_second(self) -> float:
        return self.sentences / self.seconds if self.seconds > 0 else float("nan")


# ------------------------------------------------------------------------------------------- quiet mteb calls
# Warnings mteb raises from its own code against the installed sentence-transformers / its own deprecations, on
# every run, that a user of `hf-attn eval` cannot act on. Filtered only around our calls into mteb.
_MTEB_NOISE = (
    r"The `get_sentence_embedding_dimension` method has been renamed",  # mteb calls the old ST name
    r"The fill_missing parameter is deprecated",  # mteb's own default trips its own check
    r"The compute_metadata parameter is deprecated",
    r"The task '.*' is superseded by",  # said once by us instead (`_superseded_notice`)
)


@contextlib.contextmanager
def _quiet_mteb():
    import logging

    abstask_logger = logging.getLogger("mteb.abstasks.abstask")  # logs the superseded notice besides warning it
    level = abstask_logger.level
    with warnings.catch_warnings():
        for pattern in _MTEB_NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        abstask_logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            abstask_logger.setLevel(level)


def _superseded_notice(task_objs) -> list[str]:
    """One line per task that MTEB lists as superseded (MTEB itself says it twice, at every run)."""
    lines = []
    for task in task_objs:
        newer = getattr(task, "superseded_by", None)
        if newer:
            lines.append(f"note: MTEB lists {task.metadata.name} as superseded by {newer}; scores here are for "
                         f"{task.metadata.name} (the version published results use); --tasks {newer} evaluates the "
                         f"newer one")
    return lines


# ---------------------------------------------------------------------------------------------------- evaluate
def _load_st(model_or_path, device=None):
    from sentence_transformers import SentenceTransformer

    if isinstance(model_or_path, SentenceTransformer):
        return model_or_path, None
    if hasattr(model_or_path, "model") and isinstance(model_or_path.model, SentenceTransformer):
        return model_or_path.model, None  # hf_attn.embedding.Embedder
    from ..embedding import load_model

    path = str(model_or_path)
    return load_model(path, device=device).model, path


def _model_meta(st_model, model_name: str | None, path: str | None):
    from mteb.models import ModelMeta

    with _quiet_mteb():
        meta = ModelMeta.from_sentence_transformer_model(st_model, fill_missing=None)
    name = model_name
    if name is None and path is not None:
        p = Path(path)
        p = p.resolve() if p.exists() else p
        base = p.name if p.name not in ("model", "final", "best", "checkpoint") else f"{p.parent.name}-{p.name}"
        name = f"local/{base}" if p.exists() else path
    if name is None and meta.name is None:
        name = "local/unnamed-model"
    if name is not None:
        meta = meta.model_copy(update={"name": name})
    return meta


def evaluate(
    model_or_path,
    tasks: Iterable[str] = DEFAULT_TASKS,
    data_dir: str | Path | None = None,
    output_dir: str | Path | None = None,
    batch_size: int = 64,
    splits: Sequence[str] | None = None,
    model_name: str | None = None,
    device: str | None = None,
    verbose: bool = True,
) -> dict:
    """Evaluate a sentence-transformers model (object, ``hf_attn`` Embedder, folder or Hub id) with MTEB.

    Returns ``{"model": name, "tasks": {TaskName: {split: {"cosine_spearman", "cosine_pearson", "main_score",
    "scores": <MTEB's full score dict>}}}, "throughput": {"sentences", "seconds", "sentences_per_second"},
    "result_files": {TaskName: path or None}}``. Scores are MTEB's (for STS: cosine similarity correlations,
    on MTEB's 0-1 scale of correlations, e.g. 0.8203).
    """
    import mteb
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper

    if isinstance(tasks, str):
        tasks = [tasks]
    task_names = list(tasks)
    mteb_splits = _normalise_splits(splits)
    task_objs = [get_task(name, mteb_splits) for name in task_names]  # fail fast on unknown names
    if data_dir is not None:
        for t in task_objs:
            inject_local_data(t, data_dir)

    st_model, path = _load_st(model_or_path, device=device)
    with _quiet_mteb():
        wrapper = SentenceTransformerEncoderWrapper(st_model)
    wrapper.mteb_model_meta = _model_meta(st_model, model_name, path)
    cache = mteb.ResultCache(cache_path=str(Path(output_dir).expanduser())) if output_dir is not None else None
    if verbose:
        for line in _superseded_notice(task_objs):
            print(line)

    with _EncodeMeter(st_model) as meter, _quiet_mteb():
        result = mteb.evaluate(
            wrapper,
            task_objs,
            encode_kwargs={"batch_size": batch_size},
            cache=cache,
            overwrite_strategy="always",
            show_progress_bar=False,
            co2_tracker=False,
        )
    if result.exceptions:
        raise RuntimeError(f"MTEB failed: {result.exceptions}")

    out: dict[str, Any] = {
        "model": wrapper.mteb_model_meta.name,
        "tasks": {},
        "throughput": {
            "sentences": meter.sentences,
            "seconds": meter.seconds,
            "sentences_per_second": meter.sentences_per_second,
        },
        "result_files": {},
    }
    for tr in result.task_results:
        per_split = {}
        for split, subsets in tr.scores.items():
            s = subsets[0]
            per_split[split] = {
                "cosine_spearman": s.get("cosine_spearman"),
                "cosine_pearson": s.get("cosine_pearson"),
                "main_score": s.get("main_score"),
                "scores": s,
            }
        out["tasks"][tr.task_name] = per_split
        out["result_files"][tr.task_name] = (
            str(cache.get_task_result_path(tr.task_name, wrapper.mteb_model_meta)) if cache is not None else None
        )

    if verbose:
        print(format_report(out))
    return out


def format_report(out: dict) -> str:
    lines = [f"model: {out['model']}"]
    lines.append(f"{'task':<24} {'split':<11} {'cos Pearson':>12} {'cos Spearman':>13} {'main score':>11}")
    for task, per_split in out["tasks"].items():
        for split, s in per_split.items():
            pear = s["cosine_pearson"]
            spear = s["cosine_spearman"]
            fmt = lambda v: f"{v:.4f}" if isinstance(v, (int, float)) else "n/a"  # noqa: E731
            lines.append(f"{task:<24} {split:<11} {fmt(pear):>12} {fmt(spear):>13} {fmt(s['main_score']):>11}")
    tp = out["throughput"]
    lines.append(
        f"encode throughput: {tp['sentences_per_second']:.1f} sentences/s "
        f"({tp['sentences']} sentences in {tp['seconds']:.2f} s)"
    )
    for task, path in out["result_files"].items():
        if path:
            lines.append(f"MTEB results ({task}): {path}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="sentence-transformers model: local folder or Hub id")
    parser.add_argument(
        "--tasks", nargs="+", default=list(DEFAULT_TASKS), help="MTEB task names (default: STSBenchmark)"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="evaluate offline from local files (a folder laid out like ../shared/data, e.g. with stsb/)",
    )
    parser.add_argument(
        "--output-dir",
        default=None,
        help="save MTEB's JSON results under DIR/results/<model>/<revision>/<Task>.json (default: not saved)",
    )
    parser.add_argument(
        "--other-genres",
        action="store_true",
        help=f"also evaluate {' and '.join(OTHER_GENRE_TASKS)} (tweets, news paraphrases; offline from --data-dir)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--split", nargs="+", default=None, dest="splits", help="splits to evaluate (default: the task's eval splits)"
    )
    parser.add_argument("--model-name", default=None, help="name recorded in MTEB's results (default: from the model)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", action="store_true", help="also print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    if args.device is not None:
        from hf_attn.errors import check_device

        args.device = check_device(args.device)
    out = evaluate(
        args.model,
        tasks=list(dict.fromkeys(args.tasks + (list(OTHER_GENRE_TASKS) if args.other_genres else []))),
        data_dir=args.data_dir,
        output_dir=args.output_dir,
        batch_size=args.batch_size,
        splits=args.splits,
        model_name=args.model_name,
        device=args.device,
    )
    if args.json:
        slim = {
            **out,
            "tasks": {
                t: {s: {k: v for k, v in d.items() if k != "scores"} for s, d in ps.items()}
                for t, ps in out["tasks"].items()
            },
        }
        print(json.dumps(slim, indent=2))
    return 0
