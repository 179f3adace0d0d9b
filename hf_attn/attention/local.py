"""PLACEHOLDER (being written): hf_local attention backend."""
from ..modeling.layers import eager_attention_forward


def local_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    return eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
