"""Checks shared by the three configurations, so a bad field gets the same message in every model.

Imports nothing but transformers' rope utilities (which `PreTrainedConfig` itself is built on): configuration files
import it (as a sibling, which transformers' remote code copies along).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS


class HfAttnConfigMixin:
    """What the three configurations share, in transformers' dataclass-config shape.

    Each configuration declares its fields as class annotations; its `__post_init__` calls this one (which lets
    `PreTrainedConfig.__post_init__` apply aliases and standardise `rope_parameters`, folding in a legacy
    `rope_theta` / `rope_scaling` keyword, then fills the defaults all three share), fills its own derived
    defaults, and calls last the one hook that holds every check of its own fields, `validate_architecture`:
    transformers' name for the validator of a configuration's architecture. `validate()` (transformers' save-time
    validation) runs it too, before transformers' own hooks.

    transformers' own configurations add huggingface_hub's `@strict`, which runs the hooks at construction too but
    type-checks fields first and re-raises every failure as `StrictDataclass*Error` (not a `ValueError`); ours
    raise one `ValueError` that names the field and the fix, so they call the hook themselves instead.
    """

    def __post_init__(self, **kwargs):
        if self.rope_parameters is not None:
            self.rope_parameters = dict(self.rope_parameters)  # transformers fills defaults in: not the caller's dict
        super().__post_init__(**kwargs)
        if self.num_key_value_heads is None:  # after the aliases (nanoGPT's n_head) are applied
            self.num_key_value_heads = self.num_attention_heads

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rope_theta(self) -> float | None:
        """The RoPE base wavelength, read from `rope_parameters` (its one home); None without RoPE."""
        if self.rope_parameters is None:
            return None
        return self.rope_parameters.get("rope_theta", self.default_theta)

    @property
    def max_sequence_length(self) -> int | None:
        """Longest accepted input under the RoPE scaling in force (see `max_sequence_length`); None for ALiBi."""
        return max_sequence_length(self)

    def validate(self) -> None:
        self.validate_architecture()
        super().validate()


def check_positive_ints(config, names: Iterable[str], optional: Iterable[str] = ()) -> None:
    """Every field in ``names`` must be an int >= 1; every field in ``optional`` an int >= 1 or None."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    for name in optional:
        value = getattr(config, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"`{name}` must be a positive integer or None, got {value!r}.")


SIZE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
               "intermediate_size", "max_position_embeddings")


def check_sizes(config, extra: Iterable[str] = ()) -> None:
    """The sizes every configuration has (`SIZE_FIELDS`) and `extra` ones are positive ints, the backend settings
    `sliding_window` / `attention_topk` positive ints or None, and the heads split evenly (`check_head_grouping`)."""
    check_positive_ints(config, (*SIZE_FIELDS, *extra), optional=("sliding_window", "attention_topk"))
    check_head_grouping(config)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _got(value) -> str:
    return f"{value!r} (a string: write the number without quotes)" if isinstance(value, str) else repr(value)


def check_numbers(
    config,
    positive: Iterable[str] = (),
    non_negative: Iterable[str] = (),
    probabilities: Iterable[str] = (),
) -> None:
    """Float fields: `positive` must be finite numbers > 0 (epsilons, RoPE theta, ...), `non_negative` >= 0
    (regulariser weights, init std), `probabilities` in [0, 1) (dropouts)."""
    for name in positive:
        value = getattr(config, name)
        if not _is_number(value) or value <= 0:
            raise ValueError(f"`{name}` must be a positive number, got {_got(value)}; fix `{name}` in the config.")
    for name in non_negative:
        value = getattr(config, name)
        if not _is_number(value) or value < 0:
            raise ValueError(f"`{name}` must be a number >= 0, got {_got(value)}; fix `{name}` in the config.")
    for name in probabilities:
        value = getattr(config, name)
        if not _is_number(value) or not 0.0 <= value < 1.0:
            raise ValueError(
                f"`{name}` is a dropout probability and must be in [0, 1), got {_got(value)}; fix `{name}`."
            )


# Every rope_type of the installed transformers: plain RoPE and each of its `ROPE_INIT_FUNCTIONS` (linear, dynamic
# NTK, YaRN, longrope, llama3, ... in transformers 5).
SUPPORTED_ROPE_TYPES = ("default", *ROPE_INIT_FUNCTIONS)
FACTOR_REQUIRED = ("linear", "dynamic", "yarn", "llama3")  # transformers' validators require `factor` for these
MAX_ROPE_FACTOR = 256.0  # a 256x longer context than trained is already far past what scaled RoPE recovers


def check_rope_parameters(config) -> None:
    """`rope_parameters` of a model that uses RoPE, each failure one ValueError naming the key and the fix: a
    `rope_type` the installed transformers knows, a positive `rope_theta`, a sane `factor`, a `partial_rotary_factor`
    that leaves at least one rotated pair, longrope's per-frequency factors of the right length, llama3's frequency
    band, and the keys transformers' `validate_rope` requires (its KeyError becomes a ValueError here)."""
    params = config.rope_parameters
    if not isinstance(params, dict):
        raise ValueError(f"`rope_parameters` must be a dict such as {{'rope_type': 'default', 'rope_theta': 10000.0}}, "
                         f"got {params!r}.")
    rope_type = params.get("rope_type", "default")
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(
            f"Unknown `rope_parameters['rope_type']` {rope_type!r}; supported: {', '.join(SUPPORTED_ROPE_TYPES)}."
        )
    theta = params.get("rope_theta")
    if not _is_number(theta) or theta <= 0:
        raise ValueError(
            f"`rope_theta` (rope_parameters['rope_theta']) must be a positive number, got {_got(theta)}; "
            "the usual value is 10000.0."
        )
    factor = params.get("factor")
    if rope_type in FACTOR_REQUIRED and factor is None:
        raise ValueError(
            f"{rope_type} RoPE needs `rope_parameters['factor']` (target length / trained length), e.g. 2.0."
        )
    if factor is not None and (not _is_number(factor) or not 1.0 <= factor <= MAX_ROPE_FACTOR):
        raise ValueError(
            f"`rope_parameters['factor']` for {rope_type} RoPE must be a number in [1, {MAX_ROPE_FACTOR:g}] "
            f"(target length / trained length), got {_got(factor)}."
        )
    original = params.get("original_max_position_embeddings")
    if original is not None and (not isinstance(original, int) or isinstance(original, bool) or original < 1):
        raise ValueError(
            f"`rope_parameters['original_max_position_embeddings']` must be a positive integer, got {_got(original)}."
        )
    rotary_dim = config.head_dim
    partial = params.get("partial_rotary_factor")
    if partial is not None:
        if not _is_number(partial) or not 0.0 < partial <= 1.0:
            raise ValueError(
                f"`partial_rotary_factor` (the fraction of each head's features that RoPE rotates) must be in (0, 1], "
                f"got {_got(partial)}."
            )
        rotary_dim = int(config.head_dim * partial)
        if rotary_dim < 2:
            raise ValueError(
                f"`partial_rotary_factor`={partial} rotates int({config.head_dim} * {partial}) = {rotary_dim} features "
                f"of a {config.head_dim}-wide head: no position would reach attention. Use at least "
                f"{2 / config.head_dim:g}."
            )
    if rope_type == "longrope":
        pairs = len(range(0, rotary_dim, 2))
        for key in ("short_factor", "long_factor"):
            values = params.get(key)
            if not isinstance(values, list) or len(values) != pairs or not all(_is_number(v) and v > 0 for v in values):
                raise ValueError(
                    f"longrope needs `rope_parameters['{key}']`: a list of {pairs} positive numbers (one per rotated "
                    f"frequency), got {_got(values)}."
                )
    if rope_type == "llama3":
        low, high = params.get("low_freq_factor"), params.get("high_freq_factor")
        if not (_is_number(low) and _is_number(high) and 0 < low < high):
            raise ValueError(
                "llama3 RoPE needs numbers 0 < `rope_parameters['low_freq_factor']` < "
                f"`rope_parameters['high_freq_factor']` (Llama 3.1: 1.0 and 4.0), got {_got(low)} and {_got(high)}."
            )
    try:
        config.validate_rope()  # then transformers' own checks of the keys each rope_type needs
    except KeyError as err:  # "Missing required keys in `rope_parameters` ..."
        raise ValueError(f"{err.args[0] if err.args else err}; add them to `rope_parameters`.") from None


def check_special_token_ids(config) -> None:
    """`pad_token_id` must be None or a token id inside the vocabulary, [0, vocab_size)."""
    pad = getattr(config, "pad_token_id", None)
    if pad is not None and (not isinstance(pad, int) or isinstance(pad, bool) or not 0 <= pad < config.vocab_size):
        raise ValueError(
            f"`pad_token_id` must be None or a token id in [0, vocab_size={config.vocab_size}), got {_got(pad)}; use "
            "the tokenizer's `pad_token_id` (or raise `vocab_size`)."
        )


def check_head_grouping(config) -> None:
    """``hidden_size`` must split into ``num_attention_heads`` heads, which must split into the K/V groups."""
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"`hidden_size` ({config.hidden_size}) must be divisible by `num_attention_heads` "
            f"({config.num_attention_heads})."
        )
    if config.num_attention_heads % config.num_key_value_heads:
        raise ValueError(
            f"`num_attention_heads` ({config.num_attention_heads}) must be divisible by `num_key_value_heads` "
            f"({config.num_key_value_heads})."
        )


# ---------------------------------------------------------------------------------------------------------------
# Sequence-length limit under the RoPE scaling in force
# ---------------------------------------------------------------------------------------------------------------


def uses_rope(config) -> bool:
    """Whether the configuration's model rotates queries and keys (the encoders always; the LM when asked)."""
    return getattr(config, "position_embedding", "rope") == "rope"


def max_sequence_length(config) -> int | None:
    """Longest input (cached + new tokens) the model is made for; None when there is no such length (ALiBi).

    Learned and sinusoidal positions: `max_position_embeddings`, a hard limit (`enforced_length_limit`). RoPE: the
    context the scaling in force covers. Without scaling it is `max_position_embeddings`; linear, dynamic NTK and
    proportional scaling stretch it by `factor`; YaRN, llama3 and longrope extend the pre-training length
    `original_max_position_embeddings` (default `max_position_embeddings`) by `factor` (longrope without `factor`:
    `max_position_embeddings`, Phi-3's convention). Longer RoPE inputs still run, as in transformers' RoPE models,
    with a warning (`check_model_inputs`).
    """
    if getattr(config, "position_embedding", "rope") == "alibi":
        return None
    params = (config.rope_parameters or {}) if uses_rope(config) else {}
    rope_type, factor = params.get("rope_type", "default"), params.get("factor")
    if rope_type == "default" or factor is None:
        return config.max_position_embeddings
    base = config.max_position_embeddings
    if rope_type in ("yarn", "llama3", "longrope"):
        base = params.get("original_max_position_embeddings") or base
    return int(base * factor)


def enforced_length_limit(config) -> int | None:
    """The length a forward pass refuses to exceed: `max_position_embeddings` for a learned or sinusoidal position
    table; None for RoPE (no table: any position can be rotated, as in transformers' RoPE models) and ALiBi."""
    if uses_rope(config) or getattr(config, "position_embedding", None) == "alibi":
        return None
    return config.max_position_embeddings


def describe_length_limit(config) -> str:
    """Where `max_sequence_length` comes from, for messages."""
    params = (config.rope_parameters or {}) if uses_rope(config) else {}
    rope_type, factor = params.get("rope_type", "default"), params.get("factor")
    if rope_type == "default" or factor is None:
        return f"max_position_embeddings={config.max_position_embeddings}"
    if rope_type in ("yarn", "llama3", "longrope"):
        original = params.get("original_max_position_embeddings") or config.max_position_embeddings
        return f"{rope_type} RoPE: original_max_position_embeddings={original} x factor={factor}"
    return f"max_position_embeddings={config.max_position_embeddings} x {rope_type} RoPE factor={factor}"
