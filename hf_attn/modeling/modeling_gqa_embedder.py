"""PLACEHOLDER (being written)."""
from transformers import PreTrainedModel

from .configuration_gqa_embedder import GQAEmbedderConfig



class GQAEmbedderModel(PreTrainedModel):
    config_class = GQAEmbedderConfig
