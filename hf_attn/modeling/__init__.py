"""The hf_attn architectures as Transformers models.

The modeling files sit side by side with ``layers.py`` (not in per-model subfolders) because transformers' remote
code follows only single-dot sibling imports (``from .layers import ...``) when it copies a model's files into a
saved folder; keeping them siblings lets ``save_pretrained`` write a folder that works with transformers alone.
Registration with the Auto classes reads ``hf_attn.registry``, the one list of architectures.
"""

from .configuration_adaptive_span_gpt import AdaptiveSpanGPTConfig
from .configuration_gqa_embedder import GQAEmbedderConfig
from .configuration_tan import TanConfig
from .modeling_adaptive_span_gpt import AdaptiveSpanGPTForCausalLM, AdaptiveSpanGPTModel
from .modeling_gqa_embedder import GQAEmbedderModel
from .modeling_tan import TanModel

__all__ = [
    "AdaptiveSpanGPTConfig",
    "AdaptiveSpanGPTForCausalLM",
    "AdaptiveSpanGPTModel",
    "GQAEmbedderConfig",
    "GQAEmbedderModel",
    "TanConfig",
    "TanModel",
]
