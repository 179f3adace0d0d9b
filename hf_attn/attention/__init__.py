"""Attention backends selected through ``attn_implementation``.

Each backend has transformers' attention signature (see ``hf_attn.modeling.layers``) and a plain PyTorch
reference it is tested against. ``register_attention_backends`` (called once by ``import hf_attn``) adds them to
``transformers.AttentionInterface`` and gives each a mask function in ``AttentionMaskInterface`` that hands it
the 2D key-padding mask ([B, Tk] bool, or None) instead of a [B, 1, Tq, Tk] tensor, so that O(T)-memory backends
stay O(T).

| name         | function                                                      | exact? |
|--------------|---------------------------------------------------------------|--------|
| hf_local     | sliding-window softmax, blockwise                             | window-limited softmax |
| hf_linear    | ELU+1 kernelised linear attention                             | no (different function) |
| hf_topk      | top-k sparse softmax                                          | no (different function) |
| hf_blockwise | flash attention (Triton on CUDA, blockwise PyTorch elsewhere) | yes: equals eager/sdpa |

Why "hf_blockwise" and not "hf_flash": transformers (5.x) treats every ``attn_implementation`` whose name
contains "flash" as a request for a flash-attention kernel package and tries to fetch it from the Hub, so a
backend so named cannot be selected with ``attn_implementation=`` / ``set_attn_implementation``.
"""

from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

from .blockwise_backend import blockwise_attention_forward
from .linear import linear_attention_forward
from .local import local_attention_forward
from .topk import topk_attention_forward

ATTENTION_BACKENDS = {
    "hf_local": local_attention_forward,
    "hf_linear": linear_attention_forward,
    "hf_topk": topk_attention_forward,
    "hf_blockwise": blockwise_attention_forward,
}


def register_attention_backends() -> None:
    """Register every hf_* backend with transformers (idempotent)."""
    for name, fn in ATTENTION_BACKENDS.items():
        AttentionInterface.register(name, fn)
        AttentionMaskInterface.register(name, flash_attention_mask)


__all__ = ["ATTENTION_BACKENDS", "register_attention_backends"] + [f.__name__ for f in ATTENTION_BACKENDS.values()]
