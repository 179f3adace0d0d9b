"""PLACEHOLDER (being written): hf_linear attention backend."""
from ..modeling.layers import eager_attention_forward


def linear_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    return eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
