"""The hf_attn architectures as Transformers models.

The modeling files sit side by side with ``layers.py`` (not in per-model subfolders) because transformers' remote
code follows only single-dot sibling imports (``from .layers import ...``) when it copies a model's files into a
saved folder; keeping them siblings lets ``save_pretrained`` write a folder that works with transformers alone.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_adaptive_span_gpt import AdaptiveSpanGPTConfig
from .configuration_gqa_embedder import GQAEmbedderConfig
from .configuration_tan import TanConfig
from .modeling_adaptive_span_gpt import AdaptiveSpanGPTForCausalLM, AdaptiveSpanGPTModel
from .modeling_gqa_embedder import GQAEmbedderModel
from .modeling_tan import TanModel


def register_auto_classes() -> None:
    """Register configs and models with the Auto classes (idempotent) and for remote-code export."""
    for config_cls, model_cls in (
        (TanConfig, TanModel),
        (AdaptiveSpanGPTConfig, AdaptiveSpanGPTModel),
        (GQAEmbedderConfig, GQAEmbedderModel),
    ):
        AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
        AutoModel.register(config_cls, model_cls, exist_ok=True)
        config_cls.register_for_auto_class()
        model_cls.register_for_auto_class("AutoModel")
    AutoModelForCausalLM.register(AdaptiveSpanGPTConfig, AdaptiveSpanGPTForCausalLM, exist_ok=True)
    AdaptiveSpanGPTForCausalLM.register_for_auto_class("AutoModelForCausalLM")


__all__ = [
    "AdaptiveSpanGPTConfig",
    "AdaptiveSpanGPTForCausalLM",
    "AdaptiveSpanGPTModel",
    "GQAEmbedderConfig",
    "GQAEmbedderModel",
    "TanConfig",
    "TanModel",
    "register_auto_classes",
]
