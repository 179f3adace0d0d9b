"""The input checks of the three hf_attn models: forward keywords, the KV cache keyword, ids, masks and lengths.

One place checks what reaches a model's forward, so every model fails the same way with a message that names the fix.
Checks that read tensor *values* (`.item()`, `int(tensor)`) are skipped while tracing (`is_tracing`), so
torch.export and torch.compile see no data-dependent control flow.

This file is copied next to the modeling files when a model is saved with remote code, so it imports only torch,
transformers and its `.`-siblings.
"""

from __future__ import annotations

import torch

from .config_checks import describe_length_limit, max_sequence_length

try:  # the keywords transformers itself passes to a model's forward (generate, Trainer, attention kernels)
    from transformers.utils import TransformersKwargs as _TransformersKwargs
except ImportError:  # pragma: no cover - older transformers
    _TransformersKwargs = None
try:
    from transformers.modeling_flash_attention_utils import FlashAttentionKwargs as _FlashAttentionKwargs
except ImportError:  # pragma: no cover
    _FlashAttentionKwargs = None

# transformers renamed the cache keyword of forward from `past_key_values` to `cache`; generate() passes whichever
# name the installed version uses. Models accept both (`resolve_cache`) and refuse any keyword they do not know
# (`check_forward_kwargs`), so a renamed argument can never again fall silently into **kwargs.

FORWARD_KWARGS = frozenset(
    {"output_attentions", "output_hidden_states", "return_dict", "cache_position", "num_items_in_batch",
     "is_causal", "position_ids", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx",
     "output_router_logits", "ignore_index", "shift_labels"}
    | set(getattr(_TransformersKwargs, "__optional_keys__", ()))
    | set(getattr(_FlashAttentionKwargs, "__optional_keys__", ()))
)


def check_forward_kwargs(kwargs: dict, owner: str, extra: tuple[str, ...] = ()) -> None:
    """Raise TypeError naming any keyword of `kwargs` that is neither a transformers forward keyword nor in `extra`."""
    unknown = sorted(k for k in kwargs if k not in FORWARD_KWARGS and k not in extra)
    if unknown:
        raise TypeError(
            f"{owner}.forward() got unexpected keyword argument(s) {', '.join(repr(k) for k in unknown)}; "
            "check the spelling (the KV cache is passed as `cache`, or `past_key_values` in older transformers)."
        )


def resolve_cache(cache, past_key_values):
    """The cache passed under transformers' current name (`cache`) or its old one (`past_key_values`)."""
    if cache is not None and past_key_values is not None and cache is not past_key_values:
        raise ValueError("Pass the KV cache once: as `cache` (current transformers) or `past_key_values`, not both.")
    return cache if cache is not None else past_key_values


def is_tracing() -> bool:
    """True under torch.compile, torch.export, torch.jit tracing or torch.fx: data-dependent checks are skipped."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    try:
        from torch.fx._symbolic_trace import is_fx_symbolic_tracing as is_fx_tracing
    except ImportError:  # older torch
        try:
            from torch.fx._symbolic_trace import is_fx_tracing
        except ImportError:  # pragma: no cover
            return False
    return is_fx_tracing()


def check_model_inputs(
    config,
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    attention_mask: torch.Tensor | None = None,
    *,
    past_length: int = 0,
    position_ids: torch.Tensor | None = None,
    model_name: str = "the model",
) -> None:
    """The input checks of all three models, each failure one ValueError / TypeError that names the fix.

    Shapes, dtypes and the length limit (`max_sequence_length`: the RoPE scaling in force, None for ALiBi) are
    checked always; they only read sizes, which torch.export / torch.compile turn into guards. Checks that read
    tensor *values* (ids inside the vocabulary, mask values in {0, 1}, position ids inside a learned table) are
    skipped while tracing or compiling (`is_tracing`), where they would need `.item()`.
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError(f"Pass exactly one of `input_ids` or `inputs_embeds` to {model_name}.")
    if input_ids is not None:
        if not isinstance(input_ids, torch.Tensor):
            raise TypeError(
                f"`input_ids` must be a torch.Tensor of token ids, got {type(input_ids).__name__}; "
                "use tokenizer(..., return_tensors='pt')."
            )
        if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
            raise TypeError(
                f"`input_ids` must hold integer token ids, got dtype {input_ids.dtype}; pass `input_ids.long()` "
                "(or `inputs_embeds` for vectors)."
            )
        if input_ids.dim() != 2:
            hint = " add a batch dimension: input_ids[None] (or unsqueeze(0))" if input_ids.dim() == 1 else ""
            raise ValueError(
                f"`input_ids` must be [batch, seq_len], got shape {tuple(input_ids.shape)};{hint or ' reshape it'}."
            )
        x = input_ids
    else:
        hidden = config.hidden_size
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != hidden:
            shape = tuple(inputs_embeds.shape)
            raise ValueError(f"`inputs_embeds` must be [batch, seq_len, hidden_size={hidden}], got shape {shape}.")
        x = inputs_embeds
    batch, seq_len = x.shape[0], x.shape[1]
    if batch == 0:
        raise ValueError(f"Empty batch: {model_name} got {tuple(x.shape)}; pass at least one sequence.")
    if seq_len == 0:
        raise ValueError(
            f"Zero-length input: {model_name} got {tuple(x.shape)}; every sequence needs at least one token."
        )
    limit = max_sequence_length(config)
    total = past_length + seq_len
    if limit is not None and total > limit:
        cached = f" (cached {past_length} + new {seq_len})" if past_length else ""
        raise ValueError(
            f"Sequence length {total}{cached} exceeds the model's limit of {limit} tokens "
            f"({describe_length_limit(config)}); truncate the input, e.g. tokenizer(..., truncation=True, "
            f"max_length={limit}), or generate fewer tokens."
        )

    if attention_mask is not None:
        check_attention_mask(attention_mask, batch, seq_len, past_length)

    if is_tracing():
        return
    # The value checks: each a tensor that is True when the input is fine, all read from the device at once (one
    # host sync per forward); only when one fails are they read one by one, for the message.
    checks = []
    if attention_mask is not None and isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2:
        if attention_mask.dtype != torch.bool:
            checks.append((((attention_mask == 0) | (attention_mask == 1)).all(), lambda: _bad_mask(attention_mask)))
    if input_ids is not None:
        checks.append((((input_ids >= 0) & (input_ids < config.vocab_size)).all(), lambda: _bad_ids(config, input_ids)))
    if position_ids is not None and limit is not None and position_ids.numel():
        in_table = ((position_ids >= 0) & (position_ids < limit)).all()
        checks.append((in_table, lambda: _bad_positions(config, limit, position_ids)))
    if checks and not bool(torch.stack([ok for ok, _ in checks]).all()):
        for ok, error in checks:
            if not bool(ok):
                raise error()


def _bad_mask(attention_mask: torch.Tensor) -> ValueError:
    return ValueError(
        "`attention_mask` must hold only 1 (token) and 0 (padding), got other values "
        f"(range [{attention_mask.min().item()}, {attention_mask.max().item()}]); pass the tokenizer's mask "
        "or `mask.bool()`."
    )


def _bad_ids(config, input_ids: torch.Tensor) -> ValueError:
    vocab = config.vocab_size
    low, high = int(input_ids.min()), int(input_ids.max())
    return ValueError(
        f"Token id {low if low < 0 else high} is outside the vocabulary [0, {vocab}) (vocab_size={vocab}); is the "
        "tokenizer the one this model was trained with?"
    )


def _bad_positions(config, limit: int, position_ids: torch.Tensor) -> ValueError:
    low, high = int(position_ids.min()), int(position_ids.max())
    return ValueError(
        f"position_ids must lie in [0, {limit}) ({describe_length_limit(config)}), got values in [{low}, {high}]."
    )


def check_attention_mask(attention_mask: torch.Tensor, batch: int, seq_len: int, past_length: int = 0) -> None:
    """A [batch, cached + new] padding mask, or a prepared 4D mask [batch|1, heads|1, new, keys]: the shapes.
    `check_model_inputs` checks that a 2D mask holds only 0 and 1, with the other values it reads."""
    if not isinstance(attention_mask, torch.Tensor):
        return  # a flex_attention BlockMask or another prepared object: transformers passes it through
    keys = past_length + seq_len
    if attention_mask.dim() == 2:
        if attention_mask.shape[0] != batch or attention_mask.shape[1] != keys:
            cached = f" (cached {past_length} + new {seq_len})" if past_length else ""
            raise ValueError(
                f"`attention_mask` has shape {tuple(attention_mask.shape)} but the input needs [batch, tokens] = "
                f"[{batch}, {keys}]{cached}: one 1/0 (token/padding) per token, from the same tokenizer call."
            )
    elif attention_mask.dim() == 4:
        if attention_mask.shape[0] not in (1, batch) or attention_mask.shape[-2] != seq_len or (
            attention_mask.shape[-1] < keys
        ):
            raise ValueError(
                f"A 4D `attention_mask` must be [batch (={batch}) or 1, heads or 1, new tokens (={seq_len}), "
                f"keys (>= {keys})], got {tuple(attention_mask.shape)}."
            )
    else:
        raise ValueError(
            f"`attention_mask` must be [batch, tokens] (1 = token, 0 = padding) or a prepared 4D mask, got shape "
            f"{tuple(attention_mask.shape)}."
        )
