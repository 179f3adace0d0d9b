"""PLACEHOLDER (being written)."""
from transformers import PreTrainedConfig


class GQAEmbedderConfig(PreTrainedConfig):
    model_type = "gqa_embedder"
