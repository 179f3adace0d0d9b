"""The hf_attn architectures, one entry each: the single place that lists them.

Registration with the Auto classes, export, model cards, sentence-transformers folders, the training recipes and
the quickstart all read this table; adding a model is one `ModelEntry` here plus its configuration and modeling
files in ``hf_attn/modeling/`` (docs/ARCHITECTURE.md walks through it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from .modeling import (
    AdaptiveSpanGPTConfig,
    AdaptiveSpanGPTForCausalLM,
    AdaptiveSpanGPTModel,
    GQAEmbedderConfig,
    GQAEmbedderModel,
    TanConfig,
    TanModel,
)

_AUTO_CLASSES = {"AutoModel": AutoModel, "AutoModelForCausalLM": AutoModelForCausalLM}


@dataclass(frozen=True)
class ModelEntry:
    """What the rest of the package needs to know about one architecture."""

    config_class: type[PretrainedConfig]
    model_class: type[PreTrainedModel]  # the bare model, registered with AutoModel
    kind: str  # "embedder" (sentence vectors, trained by `hf-attn train-embed`) | "causal_lm" (`hf-attn train-lm`)
    # The class an exported folder is loaded with, and the Auto class that names it, when it is not the bare model.
    head_class: type[PreTrainedModel] | None = None
    head_auto_class: str | None = None
    normalized_output: bool = False  # whether pooler_output is already L2-normalised by the architecture
    pipeline_tag: str = "feature-extraction"
    library_name: str = "transformers"
    tags: tuple[str, ...] = ()
    citations: tuple[str, ...] = ()  # keys of model_cards.CITATIONS that always apply; the rest follow the config
    # Options that differ from the shared distillation recipe (`hf-attn quickstart`, whose recipe is
    # recipes/configs/quickstart_distill.yaml; recipes/configs/distill_*.yaml).
    distill_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def model_type(self) -> str:
        return self.config_class.model_type

    @property
    def export_class(self) -> type[PreTrainedModel]:
        """The class `hf-attn export` loads a checkpoint with (the LM head for a language model)."""
        return self.head_class or self.model_class

    @property
    def auto_class(self) -> str:
        """The transformers Auto class that loads an exported folder through remote code."""
        return self.head_auto_class or "AutoModel"

    @property
    def card_template(self) -> str:
        return f"{self.model_type}.md"


_EMBEDDER_TAGS = ("sentence-transformers", "feature-extraction", "sentence-similarity", "custom_code")
_EMBEDDER_CITATIONS = ("rope", "rmsnorm", "infonce", "sentence_bert", "mteb")

MODELS: dict[str, ModelEntry] = {
    entry.model_type: entry
    for entry in (
        ModelEntry(
            TanConfig, TanModel, "embedder",
            pipeline_tag="sentence-similarity", library_name="sentence-transformers",
            tags=("hf_attn", "tan", *_EMBEDDER_TAGS), citations=_EMBEDDER_CITATIONS,
            # the quickstart's TAN (docs/RESULTS.md): a narrow MLP (TAN's edge is speed), 2 layers, and a token code
            # wide enough to hold the 256-dim static start (255 coordinates + its norm channel)
            distill_options={"intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
                             "model_kwargs": '{"num_token_coordinates": 256, "chebyshev_degree": 8}'},
        ),
        ModelEntry(
            GQAEmbedderConfig, GQAEmbedderModel, "embedder", normalized_output=True,
            pipeline_tag="sentence-similarity", library_name="sentence-transformers",
            tags=("hf_attn", "gqa_embedder", *_EMBEDDER_TAGS), citations=("gqa", *_EMBEDDER_CITATIONS),
        ),
        ModelEntry(
            AdaptiveSpanGPTConfig, AdaptiveSpanGPTModel, "causal_lm",
            head_class=AdaptiveSpanGPTForCausalLM, head_auto_class="AutoModelForCausalLM",
            pipeline_tag="text-generation", library_name="transformers",
            tags=("hf_attn", "adaptive_span_gpt", "text-generation", "causal-lm", "custom_code"),
        ),
    )
}


def get(model_type: str) -> ModelEntry:
    """The entry of ``model_type``; a ValueError naming the known types otherwise."""
    try:
        return MODELS[model_type]
    except KeyError:
        raise ValueError(f"unknown hf_attn model_type {model_type!r}; known: {', '.join(MODELS)}") from None


def model_types(kind: str | None = None) -> tuple[str, ...]:
    """The registered model types, optionally only those of one kind ("embedder" or "causal_lm")."""
    return tuple(name for name, entry in MODELS.items() if kind is None or entry.kind == kind)


def register_auto_classes() -> None:
    """Register every entry with the Auto classes (idempotent) and for remote-code export (``auto_map``)."""
    for entry in MODELS.values():
        AutoConfig.register(entry.model_type, entry.config_class, exist_ok=True)
        AutoModel.register(entry.config_class, entry.model_class, exist_ok=True)
        entry.config_class.register_for_auto_class()
        entry.model_class.register_for_auto_class("AutoModel")
        if entry.head_class is not None:
            _AUTO_CLASSES[entry.head_auto_class].register(entry.config_class, entry.head_class, exist_ok=True)
            entry.head_class.register_for_auto_class(entry.head_auto_class)


__all__ = ["MODELS", "ModelEntry", "get", "model_types", "register_auto_classes"]
