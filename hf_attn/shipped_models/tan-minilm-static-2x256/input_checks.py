"""The input checks of the three hf_attn models: forward keywords, the KV cache keyword, ids, masks and lengths.

One place checks what reaches a model's forward, so every model fails the same way with a message that names the fix.
Checks that read tensor *values* (`.item()`, `int(tensor)`) are skipped while tracing (`is_tracing`), so
torch.export and torch.compile see no data-dependent control flow.

This file is copied next to the modeling files when a model is saved with remote code, so it imports only torch,
transformers and its `.`-siblings.
"""

from __future__ import annotations

import torch
from transformers.utils import logging

from .config_checks import describe_length_limit, enforced_length_limit, max_sequence_length

logger = logging.get_logger(__name__)

try:  # the keywords transformers itself passes to a model's forward (generate, Trainer, attention kernels)
    from transformers.utils import TransformersKwargs as _TransformersKwargs
except ImportError:  # pragma: no cover - older transformers
    _TransformersKwargs = None
try:
    from transformers.modeling_flash_attention_utils import FlashAttentionKwargs as _FlashAttentionKwargs
except ImportError:  # pragma: no cover
    _FlashAttentionKwargs = None

# transformers renamed the cache keyword of forward from `past_key_values` (and `cache_params`, for state-space models)
# to `cache`, and still accepts the old names (`utils.generic._rename_kwargs_for_bc`); generate() passes whichever name
# the installed version uses. Models accept all three (`resolve_cache`) and refuse any keyword they do not know
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


def resolve_cache(cache, past_key_values, cache_params=None):
    """The cache passed under transformers' current name (`cache`) or an old one (`past_key_values`,
    `cache_params`); ValueError when two different caches are given."""
    given = [(name, c) for name, c in (("cache", cache), ("past_key_values", past_key_values),
                                      ("cache_params", cache_params)) if c is not None]
    if any(c is not given[0][1] for _, c in given[1:]):
        names = " and ".join(f"`{name}`" for name, _ in given)
        raise ValueError(f"Pass the KV cache once: got {names}; use `cache` (current transformers).")
    return given[0][1] if given else None


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
    dtype: torch.dtype | None = None,
    model_name: str = "the model",
) -> None:
    """The input checks of all three models, each failure one ValueError / TypeError that names the fix.

    Types, shapes, dtypes (`inputs_embeds` must have the model's float `dtype` unless autocast is on) and the length
    limit are checked always; they only read sizes, which torch.export / torch.compile turn into guards. A position
    table (learned, sinusoidal) is a hard limit (`enforced_length_limit`); RoPE has none, as in transformers' RoPE
    models, and an input longer than the context its scaling covers (`max_sequence_length`) gets a warning, once.
    Checks that read tensor *values* (ids inside the vocabulary, mask values in {0, 1}, position ids inside a
    position table) are skipped while tracing or compiling (`is_tracing`), where they would need `.item()`.
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError(f"Pass exactly one of `input_ids` or `inputs_embeds` to {model_name}.")
    if input_ids is not None:
        check_input_ids(input_ids)
        x = input_ids
    else:
        check_inputs_embeds(config, inputs_embeds, dtype)
        x = inputs_embeds
    batch, seq_len = x.shape[0], x.shape[1]
    if batch == 0:
        raise ValueError(f"Empty batch: {model_name} got {tuple(x.shape)}; pass at least one sequence.")
    if seq_len == 0:
        raise ValueError(
            f"Zero-length input: {model_name} got {tuple(x.shape)}; every sequence needs at least one token."
        )
    limit = enforced_length_limit(config)
    total = past_length + seq_len
    cached = f" (cached {past_length} + new {seq_len})" if past_length else ""
    if limit is not None and total > limit:
        raise ValueError(
            f"Sequence length {total}{cached} exceeds the model's limit of {limit} tokens "
            f"({describe_length_limit(config)}); truncate the input, e.g. tokenizer(..., truncation=True, "
            f"max_length={limit}), or generate fewer tokens."
        )
    context = max_sequence_length(config)
    if limit is None and context is not None and not is_tracing() and total > context:
        # Not while tracing: comparing a symbolic length would add an export guard. One message per model type and
        # context (warning_once keys on the text): generation would otherwise repeat it at every new token.
        logger.warning_once(
            f"{model_name}: an input longer than the {context} tokens its RoPE covers "
            f"({describe_length_limit(config)}) runs, but the model was not made for that length: raise "
            "`rope_parameters['factor']` (or add a scaling such as YaRN) to cover it, or truncate the input."
        )

    if attention_mask is not None:
        check_attention_mask(attention_mask, batch, seq_len, past_length)
    if position_ids is not None:
        check_position_ids(position_ids, batch, seq_len)

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


def check_input_ids(input_ids) -> None:
    """`input_ids` is an integer tensor [batch, seq_len] (its type, dtype and shape; not its values)."""
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


def check_inputs_embeds(config, inputs_embeds, dtype: torch.dtype | None) -> None:
    """A float tensor [batch, seq_len, hidden_size] in the model's `dtype` (any float dtype under autocast)."""
    if not isinstance(inputs_embeds, torch.Tensor):
        raise TypeError(f"`inputs_embeds` must be a torch.Tensor [batch, seq_len, hidden_size], got "
                        f"{type(inputs_embeds).__name__}.")
    hidden = config.hidden_size
    if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != hidden:
        shape = tuple(inputs_embeds.shape)
        raise ValueError(f"`inputs_embeds` must be [batch, seq_len, hidden_size={hidden}], got shape {shape}.")
    if not inputs_embeds.is_floating_point():
        raise TypeError(f"`inputs_embeds` must be floating point vectors, got dtype {inputs_embeds.dtype}; for token "
                        "ids pass `input_ids`.")
    if dtype is not None and inputs_embeds.dtype != dtype and not torch.is_autocast_enabled(inputs_embeds.device.type):
        raise TypeError(
            f"`inputs_embeds` has dtype {inputs_embeds.dtype} but the model's weights are {dtype}; pass "
            f"`inputs_embeds.to({dtype})`, cast the model (`model.to({inputs_embeds.dtype})`) or run under "
            "torch.autocast."
        )


def check_position_ids(position_ids, batch: int, seq_len: int) -> None:
    """Integer positions [batch or 1, seq_len], one per new token."""
    if not isinstance(position_ids, torch.Tensor):
        raise TypeError(f"`position_ids` must be a torch.Tensor [batch, seq_len], got {type(position_ids).__name__}.")
    if position_ids.is_floating_point() or position_ids.is_complex() or position_ids.dtype == torch.bool:
        raise TypeError(f"`position_ids` must hold integer positions, got dtype {position_ids.dtype}; pass "
                        "`position_ids.long()`.")
    if position_ids.dim() != 2 or position_ids.shape[0] not in (1, batch) or position_ids.shape[1] != seq_len:
        raise ValueError(
            f"`position_ids` must be [batch (={batch}) or 1, seq_len (={seq_len})]: one position per input token, "
            f"got shape {tuple(position_ids.shape)}; e.g. torch.arange(seq_len)[None]."
        )


def check_labels(config, labels, batch: int, seq_len: int) -> None:
    """Causal LM labels: integer token ids [batch, seq_len] in [0, vocab_size), or -100 (ignored). The value check
    reads the device (one host sync), skipped while tracing."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"`labels` must be a torch.Tensor [batch, seq_len] of token ids, got {type(labels).__name__}.")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"`labels` must hold integer token ids, got dtype {labels.dtype}; pass `labels.long()`.")
    if tuple(labels.shape) != (batch, seq_len):
        raise ValueError(
            f"`labels` must have the shape of the input, [batch, seq_len] = [{batch}, {seq_len}], got "
            f"{tuple(labels.shape)}."
        )
    if is_tracing():
        return
    vocab = config.vocab_size
    if not bool((((labels >= 0) & (labels < vocab)) | (labels == -100)).all()):
        bad = labels[((labels < 0) | (labels >= vocab)) & (labels != -100)]
        raise ValueError(
            f"`labels` must be token ids in [0, vocab_size={vocab}) or -100 (ignored), got {int(bad[0])}; are the "
            "labels from the tokenizer this model was trained with?"
        )


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
        if type(attention_mask).__name__ == "BlockMask":
            return  # a prepared flex_attention mask: transformers passes it through
        raise TypeError(
            f"`attention_mask` must be a torch.Tensor [batch, tokens] (1 = token, 0 = padding), got "
            f"{type(attention_mask).__name__}; use tokenizer(..., return_tensors='pt') or torch.tensor(mask)."
        )
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
