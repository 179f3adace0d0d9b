"""PLACEHOLDER (being written)."""
from transformers import PreTrainedModel

from .configuration_adaptive_span_gpt import AdaptiveSpanGPTConfig



class AdaptiveSpanGPTModel(PreTrainedModel):
    config_class = AdaptiveSpanGPTConfig


class AdaptiveSpanGPTForCausalLM(PreTrainedModel):
    config_class = AdaptiveSpanGPTConfig
