"""PLACEHOLDER (being written)."""
from transformers import PreTrainedModel

from .configuration_tan import TanConfig



class TanModel(PreTrainedModel):
    config_class = TanConfig
