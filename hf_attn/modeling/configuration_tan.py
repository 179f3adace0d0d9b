"""PLACEHOLDER (being written)."""
from transformers import PreTrainedConfig


class TanConfig(PreTrainedConfig):
    model_type = "tan"
