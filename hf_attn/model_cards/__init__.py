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
from .eval_results import load_eval_results
from .record import (
    DISTILLED_RELATION,
    TOKENIZER_KEYS,
    base_model_from,
    check_eval_results,
    datasets_from,
    lm_dataset,
    lm_eval_from,
    tokenizer_facts,
    training_objective,
)

TEMPLATE_DIR = Path(__file__).resolve().parent


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


# ---------------------------------------------------------------------------------------------------- snippets


def usage_snippets(model_type: str, model_id: str, has_tokenizer: bool = True) -> dict[str, str]:
    """Python snippets for the card, keyed by section. Each starts with ``model_id = "<model_id>"``.

    Embedders: ``sentence_transformers``, ``transformers``, ``feature_extraction`` (the pipeline: token states,
    then the sentence embedding), ``hf_attn``. Language model: ``transformers``,
    ``hf_attn``. Tests run every one of them against an exported folder.
    """
    arch = architecture(model_type)
    head = f'model_id = "{model_id}"  # a Hub repo id or a local folder\n'
    if arch.kind == "embedder":
        return _embedder_snippets(head)
    return _causal_lm_snippets(head, arch.export_class.__name__, has_tokenizer)


def _embedder_snippets(head: str) -> dict[str, str]:
    """``usage_snippets`` of an embedder; ``head`` sets ``model_id``."""
    sentences = "sentences = [\n" + "".join(f'    "{s}",\n' for s in EXAMPLE_SENTENCES) + "]\n"
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


def _causal_lm_snippets(head: str, class_name: str, has_tokenizer: bool) -> dict[str, str]:
    """``usage_snippets`` of a language model (class ``class_name`` of hf_attn); ``head`` sets ``model_id``."""
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
            + f"model = hf_attn.{class_name}.from_pretrained(model_id).eval()\n"
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


def _onnx_section(onnx: Mapping | None, model_id: str) -> str:
    """The card's ONNX paragraph: each graph in ``onnx/`` with its size and (when measured) STS-B Spearman."""
    if not onnx:
        return ""
    split = onnx.get("split", "test")
    rows = [
        f"| `onnx/{name}` | {human_bytes(info['bytes'])} | "
        + (f"{info['stsb_spearman']:.4f} |" if info.get("stsb_spearman") is not None else "not measured |")
        for name, info in onnx["files"].items()
    ]
    return "\n".join(
        [
            "## ONNX",
            "",
            "ONNX graphs of the whole sentence pipeline (`input_ids`, `attention_mask` -> `sentence_embedding`), run "
            "with onnxruntime and no PyTorch. The int8 file is onnxruntime's dynamic quantisation of the fp32 graph "
            f"(int8 weights); each score is cosine Spearman on the STS-B {split} pairs, measured on this model.",
            "",
            f"| file | size | STS-B {split} Spearman |",
            "| --- | --- | --- |",
            *rows,
            "",
            "```python",
            "import hf_attn  # pip install 'hf-attn[onnx]'; onnxruntime only, no optimum",
            "",
            f'model_id = "{model_id}"  # a Hub repo id or a local folder',
            'model = hf_attn.load_model(model_id, backend="onnx", file_name='
            + repr(list(onnx["files"])[-1])
            + ")",
            f'print(model.similarity("{EXAMPLE_SENTENCES[0]}", "{EXAMPLE_SENTENCES[1]}"))',
            "```",
            "",
            '`SentenceTransformer(model_id, backend="onnx")` needs optimum, which does not yet install beside '
            "transformers 5; the files follow its layout (`onnx/model.onnx`, `onnx/model_qint8_*.onnx`).",
            "",
        ]
    )


def human_bytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} KB"


def _lm_eval_defaults(eval_results, training: Mapping):
    """A language model's results: its run's own validation bpc when none are given; a bare ``{"bpc": ...}`` is
    placed on the run's data (validation split)."""
    if eval_results is None:
        return lm_eval_from(training)
    if isinstance(eval_results, Mapping) and "bpc" in eval_results and "dataset" not in eval_results:
        return {**lm_dataset(training), "split": "validation", **eval_results}
    return eval_results


def _fact_rows(config, num_parameters: int, token_facts, training: Mapping):
    """(architecture rows with the saved tokenizer's real type and size, training rows without the tokenizer
    options a run might not have used)."""
    arch_rows = [("model_type", config.model_type), ("parameters", f"{num_parameters:,}")]
    arch_rows += [(f, getattr(config, f, None)) for f in ARCHITECTURE_FIELDS]
    if token_facts:
        arch_rows.append(("tokenizer", f"{token_facts[0]}, {token_facts[1]:,} entries"))
    hidden = TOKENIZER_KEYS if token_facts else ()
    train_rows = [(str(k), v) for k, v in training.items()
                  if k not in hidden and (not isinstance(v, (dict, list)) or v)]
    return arch_rows, train_rows


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
    onnx: Mapping | None = None,
    tokenizer=None,
):
    """Render the card of `model` (a hf_attn PreTrainedModel) -> ``huggingface_hub.ModelCard``.

    ``eval_results``: anything `load_eval_results` accepts. ``training_config``: a flat dict shown as a table
    (its ``dataset`` entries also fill the ``datasets`` metadata). ``throughput``: sentences/s, or a dict of
    measured rates; the section is left out when None. ``model_id``: what the snippets load (default: the name).
    ``datasets``: Hub dataset ids for the metadata (default: from the training configuration's ``dataset`` /
    ``datasets``). ``base_model``: a Hub model id (default: the configuration's ``teacher``, when it has one).
    ``tokenizer``: the tokenizer saved with the model (its real type and size go into the architecture table).
    A language model without ``eval_results`` reports its run's validation bpc, on the data the run names.
    ``onnx``: the ONNX record of an export (`hf_attn.onnx_export.quantize_folder`'s form), shown in its own section.
    """
    from huggingface_hub import ModelCard, ModelCardData

    config = model.config
    arch = architecture(config.model_type)
    model_name = model_name or f"{config.model_type}-model"
    model_id = model_id or model_name
    training = dict(training_config or {})
    check_eval_results(eval_results, model)
    results = load_eval_results(_lm_eval_defaults(eval_results, training) if arch.kind == "causal_lm" else eval_results)
    num_parameters = sum(p.numel() for p in model.parameters())
    datasets = list(datasets) if datasets is not None else datasets_from(training)
    relation = DISTILLED_RELATION if base_model is None and base_model_from(training) else None
    base_model = base_model or base_model_from(training)
    token_facts = tokenizer_facts(tokenizer)

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
        **({"base_model_relation": relation} if relation else {}),
    )
    arch_rows, train_rows = _fact_rows(config, num_parameters, token_facts, training)
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
        training=training,
        objective=training_objective(training),
        results_table=_results_table(results),
        throughput_table=_table(_throughput_rows(throughput), ("measurement", "value")),
        snippets=usage_snippets(config.model_type, model_id, has_tokenizer=has_tokenizer),
        has_tokenizer=has_tokenizer,
        citations=[CITATIONS[k] for k in citation_keys],
        citation_keys=citation_keys,
        onnx_section=_onnx_section(onnx, model_id),
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
