"""Eval results for a card's ``model-index``: MTEB's result JSON (embedders) or a language model's bits per
character, as ``huggingface_hub.EvalResult`` rows with the task, dataset and split of every metric."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping

from .record import lm_dataset


def _mteb_task_results(data: Mapping) -> list:
    """One MTEB result JSON (``{"task_name", "dataset_revision", "scores": {split: [subset, ...]}}``) -> EvalResults."""
    from huggingface_hub import EvalResult

    task = data["task_name"]
    dataset = _MTEB_DATASETS.get(task, f"mteb/{task.lower()}")
    results = []
    for split, subsets in data["scores"].items():
        for subset in subsets:
            for metric in ("cosine_spearman", "cosine_pearson"):
                if subset.get(metric) is None:
                    continue
                results.append(
                    EvalResult(
                        task_type="sentence-similarity",
                        task_name="Semantic Textual Similarity",
                        dataset_type=dataset,
                        dataset_name=f"MTEB {task}",
                        dataset_config=subset.get("hf_subset", "default"),
                        dataset_split=split,
                        dataset_revision=data.get("dataset_revision"),
                        metric_type=metric,
                        metric_name=f"{metric.replace('_', ' ').capitalize()} (MTEB)",
                        metric_value=round(float(subset[metric]), 6),
                        source_name="MTEB",
                        source_url="https://github.com/embeddings-benchmark/mteb",
                    )
                )
    return results


_MTEB_DATASETS = {"STSBenchmark": "mteb/stsbenchmark-sts"}


def _lm_results(data: Mapping) -> list:
    """``{"bpc": 1.1, "dataset": "English Wikipedia extract", "dataset_id": "wikimedia/wikipedia", "split":
    "validation"}`` (+ optional "perplexity", "loss") -> EvalResults. Dataset and split must be named."""
    from huggingface_hub import EvalResult

    missing = [k for k in ("dataset", "split") if not data.get(k)]
    if missing:
        raise ValueError(f"eval results: a language model's bpc needs its {' and '.join(missing)} (which text, which "
                         f"split it was measured on), got keys {sorted(data)}")
    named = data if data.get("dataset_id") else lm_dataset({"dataset": [str(data["dataset"])]})  # a file stem: named
    where = dict(
        task_type="text-generation",
        task_name="Language modeling",
        dataset_type=str(named["dataset_id"]),
        dataset_name=str(named["dataset"]),
        dataset_split=data["split"],
    )
    metrics = (("bpc", "Bits per character"), ("perplexity", "Perplexity"), ("loss", "Cross-entropy loss"))
    return [
        EvalResult(**where, metric_type=metric, metric_name=name, metric_value=round(float(data[metric]), 6))
        for metric, name in metrics
        if data.get(metric) is not None
    ]


def load_eval_results(source) -> list:
    """Eval results for a card's ``model-index``, from any of:

    - a path to one of MTEB's result JSON files, or a folder searched for them (``model_meta.json`` skipped);
    - one MTEB result dict (``task_name`` + ``scores``);
    - the dict returned by ``hf_attn.evaluation.mteb_runner.evaluate`` (its ``result_files`` are read);
    - a language-model dict with ``bpc`` (optionally ``perplexity``, ``loss``, ``dataset``, ``split``);
    - a list of the above, or of ``huggingface_hub.EvalResult``.
    """
    from huggingface_hub import EvalResult

    if source is None:
        return []
    if isinstance(source, EvalResult):
        return [source]
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*.json") if p.name != "model_meta.json")
            return [r for f in files for r in load_eval_results(f)]
        if not path.is_file():
            raise FileNotFoundError(f"eval results: no such file or folder {path}")
        return load_eval_results(json.loads(path.read_text()))
    if isinstance(source, Mapping):
        if "task_name" in source and "scores" in source:
            return _mteb_task_results(source)
        if "tasks" in source:  # mteb_runner.evaluate's summary: prefer MTEB's own files (they carry the revision)
            files = [f for f in (source.get("result_files") or {}).values() if f and Path(f).is_file()]
            if files:
                return [r for f in files for r in load_eval_results(f)]
            synthetic = [
                {"task_name": task, "scores": {split: [s.get("scores") or s] for split, s in per_split.items()}}
                for task, per_split in source["tasks"].items()
            ]
            return [r for d in synthetic for r in _mteb_task_results(d)]
        if "bpc" in source or "perplexity" in source:
            return _lm_results(source)
        raise ValueError(f"eval results: unrecognised dict with keys {sorted(source)[:8]}")
    if isinstance(source, Iterable):
        return [r for item in source for r in load_eval_results(item)]
    raise TypeError(f"eval results: unsupported type {type(source).__name__}")


__all__ = ["load_eval_results"]
