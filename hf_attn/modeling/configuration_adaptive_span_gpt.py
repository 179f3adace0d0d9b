"""PLACEHOLDER (being written)."""
from transformers import PreTrainedConfig


class AdaptiveSpanGPTConfig(PreTrainedConfig):
    model_type = "adaptive_span_gpt"
