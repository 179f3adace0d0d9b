"""`HfAttnPreTrainedMixin`: what every hf_attn model's PreTrainedModel base declares to transformers, once.

This file is copied next to the modeling files when a model is saved with remote code, so it imports only torch
and transformers (hf_attn, for the folder checks on save, is optional).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS


class HfAttnPreTrainedMixin:
    """For the three models' PreTrainedModel bases: what every hf_attn model declares to transformers, once
    (weights under `model.` in a task model, gradient checkpointing, any attention backend through the attention
    interface), and an unknown `attn_implementation` error that also names every registered backend
    (transformers' own message lists only eager / sdpa / flex_attention, not hf_local, hf_blockwise, ...)."""

    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def get_correct_attn_implementation(self, requested_attention: str | None, is_init_check: bool = False) -> str:
        try:
            return super().get_correct_attn_implementation(requested_attention, is_init_check)
        except ValueError as err:
            known = ["eager", *sorted(ALL_ATTENTION_FUNCTIONS.valid_keys())]
            if requested_attention in known:
                raise  # a known backend that cannot run here: transformers' message says why
            names = ", ".join(f'"{name}"' for name in known)
            raise ValueError(f"{err} Registered attention backends: {names}.") from None

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' `from_pretrained`, then one finite check of the loaded weights (`check_finite_weights`):
        a NaN or inf weight would turn every output into NaN without a word."""
        loaded = super().from_pretrained(*args, **kwargs)
        check_finite_weights(loaded[0] if isinstance(loaded, tuple) else loaded)
        return loaded

    def save_pretrained(self, save_directory, *args, **kwargs):
        """As transformers', but a file at ``save_directory`` is refused (transformers logs it and saves nothing),
        and an earlier model's remote code and manifest there are removed (``integrity.prepare_model_folder``)."""
        try:
            from hf_attn.integrity import prepare_model_folder
        except ImportError:  # remote code without hf_attn installed: transformers' own save
            return super().save_pretrained(save_directory, *args, **kwargs)
        keep = {f"{cls.__module__.rsplit('.', 1)[-1]}.py" for cls in (type(self), type(self.config))}
        prepare_model_folder(save_directory, keep)
        return super().save_pretrained(save_directory, *args, **kwargs)


def check_finite_weights(model: nn.Module) -> None:
    """Raise ValueError naming the parameters that hold NaN or inf (a damaged file, or a run that diverged).

    One pass over the floating-point weights at load time, read from the device once; weights still on the meta
    device (offloaded) are skipped.
    """
    params = [(name, p) for name, p in model.named_parameters() if p.is_floating_point() and p.device.type != "meta"]
    if not params:
        return
    finite = torch.stack([torch.isfinite(p).all() for _, p in params])
    if bool(finite.all()):
        return
    bad = [name for (name, _), ok in zip(params, finite.tolist(), strict=True) if not ok]
    shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    raise ValueError(
        f"The loaded weights hold NaN or inf values in {len(bad)} parameter(s): {shown}. The checkpoint is damaged "
        "or its training diverged; load an earlier checkpoint (or retrain with a lower learning rate)."
    )
