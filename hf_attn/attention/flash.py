"""hf_blockwise: exact softmax attention that never builds the [Tq, Tk] matrix and skips fully-masked key blocks.

Same function as ``eager_attention_forward`` (and sdpa / flex_attention); only the computation differs:

| where                                   | path                                                            |
|-----------------------------------------|-----------------------------------------------------------------|
| CUDA tensors (or HF_ATTN_FORCE_TRITON=1) | Triton flash kernel, ``hf_attn.kernels.flash_attention``        |
| elsewhere (CPU, MPS, no triton)         | blockwise online softmax, ``hf_attn.attention.blockwise``        |
| training with attention dropout > 0     | blockwise (the Triton kernel has no dropout)                     |
| a 4D ``attention_mask`` or ``position_bias`` | dense eager reference (a dense mask cannot skip blocks)     |

Inside models, ``attention_mask`` is None or a [B, Tk] bool key-padding mask (the mask function registered for
hf_* backends); causality comes from ``resolve_is_causal``; a distance bias table arrives as
``distance_bias=[H, L], max_distance=...`` (``attention_bias_kwargs``), a sliding window as the
``sliding_window`` kwarg (as transformers passes it to flash-attention backends) or ``module.sliding_window``.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from transformers.utils import logging

from ..modeling.layers import eager_attention_forward, resolve_is_causal
from .blockwise import blockwise_attention

logger = logging.get_logger(__name__)

FORCE_TRITON_ENV = "HF_ATTN_FORCE_TRITON"


def use_triton_kernels(tensor: torch.Tensor) -> bool:
    """True when the Triton kernels should run on `tensor`: it is on CUDA, or HF_ATTN_FORCE_TRITON=1 (tests set
    that together with TRITON_INTERPRET=1 to run the kernels on CPU). False when triton is not installed."""
    if not (tensor.is_cuda or os.environ.get(FORCE_TRITON_ENV, "0") == "1"):
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def flash_attention_forward(
    module: nn.Module | None,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    distance_bias: torch.Tensor | None = None,
    max_distance: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """hf_blockwise attention: query [B, H, Tq, D], key/value [B, Hkv, Tk, D] -> (out [B, Tq, H, D], None).

    attention_mask: None or [B, Tk] bool key padding (True = real token); a 4D mask falls back to eager.
    distance_bias: [H, L] table added at distance d = q_pos - k_pos (see ``hf_attn.modeling.layers``);
    max_distance: pairs with d >= max_distance are excluded and their blocks skipped.
    """
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    is_causal = resolve_is_causal(module, kwargs)

    if kwargs.get("position_bias") is not None or (attention_mask is not None and attention_mask.dim() == 4):
        logger.warning_once(
            "hf_blockwise received a dense 4D attention_mask or position_bias; it cannot skip blocks with a dense "
            "mask, so it falls back to the eager reference (pass a [B, Tk] key-padding mask and a distance bias "
            "table to keep the O(T) path)."
        )
        if distance_bias is not None and max_distance is not None:
            idx = torch.arange(distance_bias.shape[1], device=distance_bias.device)
            distance_bias = distance_bias.masked_fill(idx >= max_distance, float("-inf"))
        out, _ = eager_attention_forward(
            module, query, key, value, attention_mask, scaling, dropout, distance_bias=distance_bias, **kwargs
        )
        return out, None

    window = kwargs.get("sliding_window")
    if window is None:
        window = getattr(module, "sliding_window", None)
    training = bool(module.training) if module is not None else False
    key_padding_mask = attention_mask

    if use_triton_kernels(query) and not (dropout > 0.0 and training) and query.shape[-1] <= 256:
        from ..kernels.flash_attention import flash_attention

        out = flash_attention(
            query, key, value, scaling=scaling, is_causal=is_causal, key_padding_mask=key_padding_mask,
            distance_bias=distance_bias, max_distance=max_distance, window=window,
        )
        return out, None

    return blockwise_attention(
        query, key, value, scaling=scaling, is_causal=is_causal, key_padding_mask=key_padding_mask,
        distance_bias=distance_bias, max_distance=max_distance, window=window,
        dropout=dropout, training=training,
    )


flash_attention_forward.accepts_distance_bias = True
