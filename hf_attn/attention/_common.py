"""Plumbing every hf_* backend shares: reading its settings, checking heads, and the forms masks and biases take.

A backend is called as transformers calls an attention function,
``fn(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs)``, with query [B, H, Tq, D],
key/value [B, Hkv, Tk, D] and ``attention_mask`` None, a [B, Tk] bool key-padding mask (what the mask function
registered for hf_* backends hands them) or a 4D mask. Distance biases arrive as ``distance_bias=[H, L]`` with
``max_distance`` (``attention_bias_kwargs``) or as a dense ``position_bias``.

What a transformers model's layer is arrives as keywords (``layer_features`` reads them):

- ``sliding_window``: the layer's own window (None on a full-attention layer of a mixed model; transformers'
  mask convention: causal keeps 0 <= d < window, bidirectional |d| < window);
- ``softcap``: logit soft-capping, logits -> softcap * tanh(logits / softcap) before any mask or bias (Gemma 2);
- ``s_aux``: attention sinks, one learned logit per query head [H] that joins every row's softmax denominator
  and attends to nothing (gpt-oss).

Keywords that carry a feature no hf_* backend computes (``UNSUPPORTED_KWARGS``) are refused, never ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.utils import logging

logger = logging.get_logger(__name__)

BIAS_KWARGS = ("distance_bias", "max_distance", "position_bias", "trained_distances")

# Keywords some transformers models pass that carry a model feature no hf_* backend computes: refused by name.
UNSUPPORTED_KWARGS = {
    "sinks": "per-token attention sinks",
    "indices": "sparse attention indices (DeepSeek sparse attention)",
    "block_indices": "block-sparse attention indices",
    # Packed (padding-free) batches: the sequence boundaries would be crossed; pad the batch instead.
    "cu_seq_lens_q": "packed sequences (flash-attention's varlen boundaries)",
    "cu_seq_lens_k": "packed sequences (flash-attention's varlen boundaries)",
}

# The model features a backend may honour (the backend table in ``hf_attn.attention`` says which honours what).
MODEL_FEATURES = {
    "window": "a sliding window on every layer (Mistral's `sliding_window`)",
    "layer_windows": "windows on some layers only (`config.layer_types`: Gemma 2, Qwen 2, ModernBERT, gpt-oss)",
    "softcap": "logit soft-capping (Gemma 2's `attn_logit_softcapping`)",
    "sinks": "attention sinks, one logit per head (gpt-oss's `s_aux`)",
    "distance_bias": "a distance bias on the logits (ALiBi, AdaptiveSpanGPT's adaptive span)",
}

# Which registered backends honour each model feature; filled from the backend table (``hf_attn.attention``)
# when the package is imported, so that a refusal can name the backends to use instead.
FEATURE_SUPPORT: dict[str, tuple[str, ...]] = {}


class UnsupportedFeatureError(ValueError):
    """A backend was asked to compute a model feature it cannot honour (raised, never silently dropped)."""

    def __init__(self, backend: str, feature: str, detail: str):
        others = ", ".join(FEATURE_SUPPORT.get(feature, ())) or "eager"
        super().__init__(
            f"attn_implementation={backend!r} cannot honour this model's {feature} ({detail}); it would compute a "
            f"different function. Use a backend that honours {feature}: {others} (or eager)."
        )


@dataclass(frozen=True)
class LayerFeatures:
    """The model features of one attention call: the layer's window (None: full attention), softcap, sinks [H]."""

    window: int | None = None
    softcap: float | None = None
    sinks: torch.Tensor | None = None

    def present(self) -> dict[str, str]:
        """{feature: detail} of the features this call has (for refusals)."""
        found = {}
        if self.window is not None:
            found["window"] = f"sliding_window={self.window}"
        if self.softcap is not None:
            found["softcap"] = f"softcap={self.softcap}"
        if self.sinks is not None:
            found["sinks"] = f"s_aux of shape {tuple(self.sinks.shape)}"
        return found


def layer_features(backend: str, kwargs: dict, honoured: frozenset[str] = frozenset()) -> LayerFeatures:
    """The call's model features from transformers' keywords (`sliding_window`, `softcap`, `s_aux`).

    Raises `UnsupportedFeatureError` for a feature not in `honoured` and for any `UNSUPPORTED_KWARGS` keyword;
    ValueError for a malformed value.
    """
    for name, what in UNSUPPORTED_KWARGS.items():
        if kwargs.get(name) is not None:
            raise UnsupportedFeatureError(backend, name, f"{what}, passed as `{name}=`")
    window, softcap, sinks = kwargs.get("sliding_window"), kwargs.get("softcap"), kwargs.get("s_aux")
    if window is not None and (isinstance(window, bool) or int(window) != window or window <= 0):
        raise ValueError(f"{backend} needs a positive integer sliding_window or None, got sliding_window={window!r}")
    if softcap is not None and not softcap > 0:
        raise ValueError(f"{backend} needs a positive softcap or None, got softcap={softcap!r}")
    if sinks is not None and sinks.dim() != 1:
        raise UnsupportedFeatureError(backend, "sinks", f"s_aux of shape {tuple(sinks.shape)}; only one sink "
                                                        "logit per head, [H], is computed")
    features = LayerFeatures(None if window is None else int(window), None if softcap is None else float(softcap),
                             sinks)
    for feature, detail in features.present().items():
        if feature not in honoured:
            raise UnsupportedFeatureError(backend, feature, detail)
    return features


def warn_no_weights(backend: str, kwargs: dict) -> None:
    """What transformers' sdpa does with `output_attentions=True`: say once that no weights come back."""
    if kwargs.get("output_attentions"):
        logger.warning_once(
            f"`{backend}` attention does not support `output_attentions=True`: it never materialises the weights, "
            "so the model returns no attention weights. Please set your attention to `eager` if you want them "
            "(the weights of an approximate backend: its reference, `hf_attn.attention.BACKENDS[name].reference`)."
        )


def declares_layer_windows(module) -> bool:
    """True when the model says which layers slide (`config.layer_types` holds "sliding_attention"): then a
    layer called with `sliding_window=None` is a full-attention layer."""
    layer_types = getattr(getattr(module, "config", None), "layer_types", None) or ()
    return "sliding_attention" in layer_types


def check_heads(num_heads: int, num_kv_heads: int) -> int:
    """Group size H // Hkv; ValueError naming `num_key_value_heads` when H is not a multiple of it."""
    if num_kv_heads <= 0 or num_heads % num_kv_heads != 0:
        raise ValueError(
            f"num_key_value_heads={num_kv_heads} must be positive and divide num_attention_heads={num_heads}"
        )
    return num_heads // num_kv_heads


def config_value(module, kwargs: dict, name: str):
    """A backend setting from the call's kwargs, else `module.<name>`, else `module.config.<name>` (else None)."""
    if kwargs.get(name) is not None:
        return kwargs[name]
    if getattr(module, name, None) is not None:
        return getattr(module, name)
    return getattr(getattr(module, "config", None), name, None)


def positive_int_setting(module, kwargs: dict, name: str, backend: str) -> int:
    """`config_value` of a setting that must be a positive integer; ValueError naming it and the backend."""
    value = config_value(module, kwargs, name)
    if value is None or isinstance(value, bool) or int(value) != value or value <= 0:
        raise ValueError(f"{backend} needs a positive integer {name}, got {name}={value!r}")
    return int(value)


def is_training(module) -> bool:
    """Whether the calling module is in training mode (False without a module)."""
    return bool(getattr(module, "training", False))


def split_mask(attention_mask: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(key padding [B, Tk] or None, dense 4D mask or None) from whichever form `attention_mask` has."""
    if attention_mask is None:
        return None, None
    return (attention_mask, None) if attention_mask.dim() == 2 else (None, attention_mask)


def keep_keys(key_padding_mask: torch.Tensor, k_len: int, device, dtype=torch.bool) -> torch.Tensor:
    """[B, Tk] key padding (True / 1 = real token) cut to its last Tk columns, on `device` in `dtype`."""
    return key_padding_mask[:, -k_len:].to(device=device, dtype=dtype)


def distance_table(kwargs: dict) -> torch.Tensor | None:
    """The call's distance-bias table [H, L] cut to its first `max_distance` entries (None without a table)."""
    table = kwargs.get("distance_bias")
    if table is not None and kwargs.get("max_distance") is not None:
        table = table[:, : kwargs["max_distance"]]
    return table


def without(kwargs: dict, names=BIAS_KWARGS) -> dict:
    """`kwargs` less `names` (a reference that folded the biases into one `position_bias` passes the rest on)."""
    return {k: v for k, v in kwargs.items() if k not in names}


def group_heads(x: torch.Tensor, num_heads: int, groups: int) -> torch.Tensor:
    """A per-head tensor [B|1, H|1, ...] in the GQA group layout [B|1, Hkv|1, G|1, ...] (query head h is row
    h // G, column h % G), so that it broadcasts against logits [B, Hkv, G, ...]."""
    heads = (num_heads // groups, groups) if x.shape[1] == num_heads else (1, 1)
    return x.reshape(x.shape[0], *heads, *x.shape[2:])


def excluded_as_neg_inf(bias: torch.Tensor | None) -> torch.Tensor | None:
    """An fp32 additive bias with every entry at (or near) the dtype's min set to -inf, so that a row with no
    visible key is all -inf (not a finite min that softmax would spread evenly)."""
    if bias is None:
        return None
    return bias.masked_fill(bias <= torch.finfo(torch.float32).min / 2, float("-inf"))


def slabs(x: torch.Tensor, first: int, count: int, span: int, step: int, fill=0.0) -> torch.Tensor:
    """Overlapping windows of dim 2 of x [B, Hx, T, D]: window i holds positions first + i*step + c (c < span),
    zero-filled outside [0, T). Returns [B * count, Hx, span, D] (a copy: span / step times x's size)."""
    t = x.shape[2]
    end = first + (count - 1) * step + span
    x = x[:, :, max(first, 0):min(end, t)]
    if first < 0 or end > t:  # zero-fill the positions outside [0, T) (inside, no copy before the one below)
        x = F.pad(x, (0, 0, max(0, -first), max(0, end - t)), value=fill)
    x = x.unfold(2, span, step)  # [B, Hx, count, D, span], a view
    return x.permute(0, 2, 1, 4, 3).reshape(x.shape[0] * count, x.shape[1], span, x.shape[3])
