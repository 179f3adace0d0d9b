"""Attention backends selected through ``attn_implementation``: the one table of them, ``BACKENDS``.

Each backend has transformers' signature (see ``hf_attn.modeling.layers``) and a plain PyTorch reference it is
tested against. ``register_attention_backends`` (called once by ``import hf_attn``) adds them to
``transformers.AttentionInterface`` and gives each a mask function in ``AttentionMaskInterface`` that hands it
the 2D key-padding mask ([B, Tk] bool, or None) instead of a [B, 1, Tq, Tk] tensor, so that O(T)-memory backends
stay O(T); the layer's own window, soft-capping and sinks reach them as transformers' keywords
(``_common.layer_features``).

Everything else that needs to know what a backend is reads ``BACKENDS``: registration, the tests, the language
model evaluation (``reference_for``: the function with weights behind a backend) and the README's backend table
(``backend_table_markdown``, checked by tests/test_readme.py). Adding a backend is one ``BackendEntry`` here.

Why "hf_blockwise" and not "hf_flash": transformers (5.x) treats every ``attn_implementation`` whose name
contains "flash" as a request for a flash-attention kernel package and tries to fetch it from the Hub, so a
backend so named cannot be selected with ``attn_implementation=`` / ``set_attn_implementation``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

from ..modeling.layers import eager_attention_forward
from . import _common, blockwise_backend, linear, local, topk
from ._common import MODEL_FEATURES, UnsupportedFeatureError
from .blockwise_backend import blockwise_attention_forward, blockwise_attention_reference
from .linear import linear_attention_forward, linear_attention_reference
from .local import local_attention_forward, local_attention_reference
from .topk import topk_attention_forward, topk_attention_reference


@dataclass(frozen=True)
class BackendEntry:
    """What the package needs to know about one attention backend."""

    name: str  # the `attn_implementation` it is registered under
    forward: Callable  # the fast path (returns no weights)
    reference: Callable  # the same function written densely, returning (out, weights)
    exact: bool  # True: the same function as eager softmax attention (only the computation differs)
    computes: str  # one line: the function, for the README table
    options: tuple[str, ...]  # config settings the backend itself reads (beyond the model's own)
    features: frozenset[str]  # model features it honours (keys of MODEL_FEATURES); the rest are refused
    use_for: str  # one line: when to pick it, for the README table
    accepts_distance_bias: bool = False  # takes the [H, L] distance table itself (``attention_bias_kwargs``)

    def __post_init__(self):
        unknown = set(self.features) - set(MODEL_FEATURES)
        if unknown:
            raise ValueError(f"{self.name}: unknown model features {sorted(unknown)}; known: {sorted(MODEL_FEATURES)}")


BACKENDS: dict[str, BackendEntry] = {
    entry.name: entry
    for entry in (
        BackendEntry("hf_blockwise", blockwise_attention_forward, blockwise_attention_reference, exact=True,
                     computes="exact softmax attention that skips key blocks outside a window, span or distance "
                              "table (Triton kernel on CUDA sm_80+, torch's fused kernel elsewhere)",
                     options=(), features=blockwise_backend.FEATURES, accepts_distance_bias=True,
                     use_for="any model, windows, spans and distance biases included: the same function as eager, "
                             "less work"),
        BackendEntry("hf_local", local_attention_forward, local_attention_reference, exact=False,
                     computes="sliding-window softmax (`sliding_window`); a model's full layers stay full",
                     options=("sliding_window",), features=local.FEATURES, accepts_distance_bias=True,
                     use_for="long inputs where local context suffices: cost ~ T x window; exact on a model whose "
                             "own windows it keeps"),
        BackendEntry("hf_topk", topk_attention_forward, topk_attention_reference, exact=False,
                     computes="top-k sparse softmax (`attention_topk`), inside the layer's window",
                     options=("attention_topk",), features=topk.FEATURES,
                     use_for="sparse attention with O(T x chunk) memory"),
        BackendEntry("hf_linear", linear_attention_forward, linear_attention_reference, exact=False,
                     computes="ELU+1 kernelised linear attention (Katharopoulos et al. 2020)", options=(),
                     features=linear.FEATURES, use_for="very long inputs, O(T), on models without logit features"),
    )
}

# transformers' own exact backends: eager attention is the reference of their function.
TRANSFORMERS_EXACT = ("eager", "sdpa", "flex_attention")

# Kept for existing imports: name -> fast path.
ATTENTION_BACKENDS = {name: entry.forward for name, entry in BACKENDS.items()}

_common.FEATURE_SUPPORT.update(
    {feature: tuple(n for n, e in BACKENDS.items() if feature in e.features) for feature in MODEL_FEATURES}
)


def reference_for(impl: str) -> Callable:
    """The attention function returning weights that computes the same function as backend `impl`: its table
    entry's reference, eager for transformers' exact backends; ValueError for any other name."""
    if impl in BACKENDS:
        return BACKENDS[impl].reference
    if impl in TRANSFORMERS_EXACT:
        return eager_attention_forward
    raise ValueError(f"no reference attention function is known for attn_implementation={impl!r}; known: "
                     f"{', '.join([*TRANSFORMERS_EXACT, *BACKENDS])}")


def backend_table_markdown() -> str:
    """The README's backend table, from ``BACKENDS``: per backend what it computes, whether it is exact, the
    settings it reads and the model features it honours (the others are refused with an error)."""
    rows = ["| backend | computes | exact | reads | model features honoured | refused (an error) | when to pick it |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            "| `sdpa`, `eager`, `flex_attention` | softmax attention (transformers' own) | yes | - | what the model's "
            "masks carry (sdpa refuses softcap) | - | the baseline |"]
    for entry in BACKENDS.values():
        honours = ", ".join(f for f in MODEL_FEATURES if f in entry.features) or "none"
        refuses = ", ".join(f for f in MODEL_FEATURES if f not in entry.features) or "-"
        reads = ", ".join(f"`{o}`" for o in entry.options) or "-"
        rows.append(f"| `{entry.name}` | {entry.computes} | {'yes' if entry.exact else 'no'} | {reads} | "
                    f"{honours} | {refuses} | {entry.use_for} |")
    features = "; ".join(f"{name}: {what}" for name, what in MODEL_FEATURES.items())
    return "\n".join(rows) + f"\n\nModel features: {features}."


def register_attention_backends() -> None:
    """Register every hf_* backend with transformers (idempotent)."""
    for name, entry in BACKENDS.items():
        entry.forward.accepts_distance_bias = entry.accepts_distance_bias  # read by ``attention_bias_kwargs``
        AttentionInterface.register(name, entry.forward)
        AttentionMaskInterface.register(name, flash_attention_mask)


__all__ = ["ATTENTION_BACKENDS", "BACKENDS", "BackendEntry", "UnsupportedFeatureError", "backend_table_markdown",
           "reference_for", "register_attention_backends"] + [f.__name__ for f in ATTENTION_BACKENDS.values()]
