"""Checks shared by the three configurations, so a bad field gets the same message in every model.

Kept free of torch: configuration files import it (as a sibling, which transformers' remote code copies along).
"""

from __future__ import annotations

import math
from collections.abc import Iterable


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


SUPPORTED_ROPE_TYPES = ("default", "linear", "yarn", "llama3")
MAX_ROPE_FACTOR = 256.0  # a 256x longer context than trained is already far past what scaled RoPE recovers


def check_rope_parameters(config) -> None:
    """`rope_parameters` of a model that uses RoPE: a supported `rope_type`, a positive `rope_theta`, a sane
    `factor`, and the keys transformers' `validate_rope` requires. Dynamic NTK is refused here: its frequencies
    depend on the running length, which the models' RotaryEmbedding (one table, like transformers' default rope)
    does not recompute."""
    params = config.rope_parameters
    if not isinstance(params, dict):
        raise ValueError(f"`rope_parameters` must be a dict such as {{'rope_type': 'default', 'rope_theta': 10000.0}}, "
                         f"got {params!r}.")
    rope_type = params.get("rope_type", "default")
    if rope_type == "dynamic":
        raise ValueError(
            "`rope_parameters['rope_type']='dynamic'` (dynamic NTK) is not supported: its frequencies change with "
            "the sequence length. Use 'yarn' or 'linear' with factor = target length / max_position_embeddings."
        )
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
    if rope_type != "default":
        factor = params.get("factor")
        if not _is_number(factor) or not 1.0 <= factor <= MAX_ROPE_FACTOR:
            raise ValueError(
                f"`rope_parameters['factor']` for {rope_type} RoPE must be a number in [1, {MAX_ROPE_FACTOR:g}] "
                f"(target length / trained length), got {_got(factor)}."
            )
    original = params.get("original_max_position_embeddings")
    if original is not None and (not isinstance(original, int) or isinstance(original, bool) or original < 1):
        raise ValueError(
            f"`rope_parameters['original_max_position_embeddings']` must be a positive integer, got {_got(original)}."
        )
    config.validate_rope()  # then transformers' own checks of the keys each rope_type needs


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
    """Longest input (cached + new tokens) the model accepts; None when there is no limit (ALiBi).

    Without RoPE scaling it is `max_position_embeddings`. Linear scaling stretches positions by `factor`, so the
    limit is `max_position_embeddings * factor`; YaRN and llama3 scaling extend the pre-training length
    `original_max_position_embeddings` (default `max_position_embeddings`) by `factor`.
    """
    if getattr(config, "position_embedding", "rope") == "alibi":
        return None
    params = (config.rope_parameters or {}) if uses_rope(config) else {}
    rope_type = params.get("rope_type", "default")
    if rope_type == "linear":
        return int(config.max_position_embeddings * params["factor"])
    if rope_type in ("yarn", "llama3"):
        original = params.get("original_max_position_embeddings") or config.max_position_embeddings
        return int(original * params["factor"])
    return config.max_position_embeddings


def describe_length_limit(config) -> str:
    """Where `max_sequence_length` comes from, for error messages."""
    params = (config.rope_parameters or {}) if uses_rope(config) else {}
    rope_type = params.get("rope_type", "default")
    if rope_type == "linear":
        return f"max_position_embeddings={config.max_position_embeddings} x linear RoPE factor={params['factor']}"
    if rope_type in ("yarn", "llama3"):
        original = params.get("original_max_position_embeddings") or config.max_position_embeddings
        return f"{rope_type} RoPE: original_max_position_embeddings={original} x factor={params['factor']}"
    return f"max_position_embeddings={config.max_position_embeddings}"
