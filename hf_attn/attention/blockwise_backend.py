"""The `hf_blockwise` backend: exact softmax attention that never builds the [Tq, Tk] matrix and skips
fully-masked key blocks, routed to the Triton flash kernel, torch SDPA or the blockwise PyTorch core.

Same function as ``eager_attention_forward`` (and sdpa / flex_attention); only the computation differs:

| where                                   | path                                                            |
|-----------------------------------------|-----------------------------------------------------------------|
| CUDA sm_80+ (or HF_ATTN_FORCE_TRITON=1)  | Triton flash kernel, ``hf_attn.kernels.flash_attention``        |
| CUDA below sm_80 (T4: no tensor-core tl.dot) | SDPA when it computes the same function (no table, window or |
|                                         | max_distance; causal only with Tq == Tk), else blockwise         |
| CUDA, no launch config fits (dtype/head dim) | blockwise, said once                                        |
| CPU, nothing to skip (no table, window or max_distance; causal only with Tq == Tk) | SDPA (torch's fused kernel) |
| elsewhere (CPU, MPS, no triton)         | blockwise core, ``hf_attn.attention.blockwise``                 |
| training with attention dropout > 0     | blockwise (the Triton kernel has no dropout)                     |
| a 4D ``attention_mask`` or ``position_bias`` | dense eager reference (a dense mask cannot skip blocks)     |

Inside models, ``attention_mask`` is None or a [B, Tk] bool key-padding mask (the mask function registered for
hf_* backends); causality comes from ``resolve_is_causal``; a distance bias table arrives as
``distance_bias=[H, L], max_distance=...`` (``attention_bias_kwargs``); the layer's sliding window, logit
soft-capping and attention sinks as transformers passes them, ``sliding_window=``, ``softcap=``, ``s_aux=``
(``_common.layer_features``). Soft-capping and sinks are not in torch's SDPA: those calls take the blockwise
core (or the Triton kernel, which computes both).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.utils import logging

from ..kernels.band import band, distances
from ..modeling.layers import eager_attention_forward, resolve_is_causal
from ._common import is_training, keep_keys, layer_features, warn_no_weights
from .blockwise import blockwise_attention

# The model features hf_blockwise computes exactly (see ``_common.layer_features``).
FEATURES = frozenset({"window", "layer_windows", "softcap", "sinks", "distance_bias"})

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


def choose_path(cc: tuple[int, int] | None, *, kernel_fits: bool, sdpa_ok: bool) -> str:
    """Where exact attention runs: "triton", "sdpa" or "blockwise". `cc` is the CUDA capability (None: not CUDA,
    the kernel was forced onto the interpreter); `kernel_fits`: every kernel pass the call needs has a launch
    configuration (``launch_configs``); `sdpa_ok`: SDPA computes the same function for these arguments."""
    from ..kernels.launch_configs import flash_route

    if cc is not None and flash_route(cc) != "triton":
        return "sdpa" if sdpa_ok else "blockwise"
    return "triton" if kernel_fits else "blockwise"


def sdpa_attention(query: Tensor, key: Tensor, value: Tensor, *, scaling: float, is_causal: bool,
                   key_padding_mask: Tensor | None = None) -> Tensor:
    """torch SDPA with the kernel's conventions: out [B, Tq, H, D]; causal only for Tq == Tk (callers check);
    a query that sees no key gets zeros (its mask row is opened for SDPA, then its output zeroed, so neither
    the output nor the gradients see a NaN)."""
    b, h, q_len, _ = query.shape
    hkv, k_len = key.shape[1], key.shape[2]
    mask = None
    if key_padding_mask is not None:
        keep = keep_keys(key_padding_mask, k_len, query.device)[:, None, None, :]
        if is_causal:
            keep = keep & torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril()
        seen = keep.any(-1, keepdim=True)  # [B, 1, Tq, 1]
        mask = keep | ~seen
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, is_causal=is_causal and mask is None, scale=scaling,
        enable_gqa=h != hkv,
    )
    if mask is not None:
        out = out * seen.to(out.dtype)
    return out.transpose(1, 2)


def blockwise_attention_reference(module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                                  scaling: float | None = None, dropout: float = 0.0,
                                  distance_bias: Tensor | None = None, max_distance: int | None = None,
                                  **kwargs) -> tuple[Tensor, Tensor]:
    """What hf_blockwise computes, densely: the eager reference with the layer's window (the `sliding_window`
    kwarg, which eager does not read: transformers puts it into eager's 4D mask) and `max_distance` as -inf
    biases; softcap and sinks go to eager. Returns (out, weights)."""
    window = layer_features("hf_blockwise", kwargs, FEATURES).window
    kwargs = {k: v for k, v in kwargs.items() if k != "sliding_window"}
    if distance_bias is not None and max_distance is not None:
        idx = torch.arange(distance_bias.shape[1], device=distance_bias.device)
        distance_bias = distance_bias.masked_fill(idx >= max_distance, float("-inf"))
    if window is not None:
        d = distances(query.shape[2], key.shape[2], query.device)
        outside = torch.zeros(d.shape, device=query.device).masked_fill(
            ~band(resolve_is_causal(module, kwargs), window).allows(d), float("-inf"))[None, None]
        bias = kwargs.get("position_bias")
        kwargs["position_bias"] = outside if bias is None else bias.float() + outside
    return eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout,
                                   distance_bias=distance_bias, **kwargs)


def sdpa_computes_it(query: Tensor, key: Tensor, args: dict) -> bool:
    """True when `sdpa_attention` computes the same function for these arguments (`args`: the keyword arguments
    of ``flash_attention``): no distance table, window, max_distance, softcap or sinks; causal only with Tq == Tk."""
    return (args["distance_bias"] is None and args["max_distance"] is None and args["window"] is None
            and args["softcap"] is None and args["sinks"] is None
            and (not args["is_causal"] or query.shape[2] == key.shape[2]))


def _triton_or_sdpa(query: Tensor, key: Tensor, value: Tensor, **args) -> Tensor | None:
    """The Triton kernel or SDPA, as `choose_path` picks for this GPU and these arguments (`args`: the keyword
    arguments of ``flash_attention``); None when the blockwise path should run instead."""
    from ..kernels.flash_attention import flash_attention, kernel_fits

    cc = torch.cuda.get_device_capability(query.device) if query.is_cuda else None
    table = args["distance_bias"]
    backward = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (query, key, value, table))
    path = choose_path(cc, kernel_fits=kernel_fits(query, table is not None, backward),
                       sdpa_ok=sdpa_computes_it(query, key, args))
    if path == "triton":
        return flash_attention(query, key, value, **args)
    if path == "sdpa":
        return sdpa_attention(query, key, value, scaling=args["scaling"], is_causal=args["is_causal"],
                              key_padding_mask=args["key_padding_mask"])
    if cc is not None and cc[0] >= 8:
        logger.warning_once(
            f"hf_blockwise: no launch configuration of the Triton flash kernel fits sm_{cc[0]}{cc[1]} at "
            f"{query.dtype}, head_dim={query.shape[-1]}; using the blockwise PyTorch path (same result)."
        )
    return None


def blockwise_attention_forward(
    module: nn.Module | None, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
    scaling: float | None = None, dropout: float = 0.0, distance_bias: Tensor | None = None,
    max_distance: int | None = None, **kwargs,
) -> tuple[Tensor, None]:
    """hf_blockwise attention: query [B, H, Tq, D], key/value [B, Hkv, Tk, D] -> (out [B, Tq, H, D], None).

    attention_mask: None or [B, Tk] bool key padding (True = real token); a 4D mask falls back to eager.
    distance_bias: [H, L] table added at distance d = q_pos - k_pos (see ``hf_attn.modeling.layers``);
    max_distance: pairs with d >= max_distance are excluded and their blocks skipped.
    trained_distances: [H, 2] (lo, hi), where the table depends on trained parameters (``blockwise_attention``).
    """
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    features = layer_features("hf_blockwise", kwargs, FEATURES)
    warn_no_weights("hf_blockwise", kwargs)
    if kwargs.get("position_bias") is not None or (attention_mask is not None and attention_mask.dim() == 4):
        logger.warning_once(
            "hf_blockwise received a dense 4D attention_mask or position_bias; it cannot skip blocks with a dense "
            "mask, so it falls back to the eager reference (pass a [B, Tk] key-padding mask and a distance bias "
            "table to keep the O(T) path)."
        )
        out, _ = blockwise_attention_reference(module, query, key, value, attention_mask, scaling, dropout,
                                               distance_bias, max_distance, **kwargs)
        return out, None
    training = is_training(module)
    args = dict(scaling=scaling, is_causal=resolve_is_causal(module, kwargs), key_padding_mask=attention_mask,
                distance_bias=distance_bias, max_distance=max_distance, window=features.window,
                softcap=features.softcap, sinks=features.sinks)
    dropout_on = dropout > 0.0 and training
    if use_triton_kernels(query) and not dropout_on and query.shape[-1] <= 256:
        out = _triton_or_sdpa(query, key, value, **args)
        if out is not None:
            return out, None
    elif not query.is_cuda and not dropout_on and sdpa_computes_it(query, key, args):
        # Nothing to skip: torch's fused CPU kernel, forward and backward, beats the blockwise loop.
        return sdpa_attention(query, key, value, scaling=scaling, is_causal=args["is_causal"],
                              key_padding_mask=attention_mask), None
    return blockwise_attention(query, key, value, **args, dropout=dropout, training=training,
                               trained_distances=kwargs.get("trained_distances"))
