"""Checks shared by the three configurations, so a bad field gets the same message in every model.

Kept free of torch: configuration files import it (as a sibling, which transformers' remote code copies along).
"""

from __future__ import annotations

from collections.abc import Iterable


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
