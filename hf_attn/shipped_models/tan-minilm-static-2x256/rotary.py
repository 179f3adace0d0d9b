"""Rotary position embedding (RoPE) in transformers' convention, shared by the three hf_attn models.

`RotaryEmbedding(config)`: inverse frequencies from `compute_default_rope_parameters` or transformers'
``ROPE_INIT_FUNCTIONS``, updated by its `dynamic_rope_update`, so every scaling transformers knows is transformers'
own, rebuilt by transformers' own `_init_weights`; partial rotary. `Fp32ConstantBuffers` keeps constant fp32
buffers (these frequencies, TAN's token codes) fp32 through casts.

This file is copied next to the modeling files when a model is saved with remote code, so it imports only torch
and transformers.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update


class Fp32ConstantBuffers(nn.Module):
    """Base of a module whose fp32 buffers are constants (RoPE frequencies, TAN's token codes), not weights.

    `nn.Module.to(dtype)` / `.half()` / `.bfloat16()` cast every floating buffer; here they follow the device only and
    stay fp32, as in a model loaded with `from_pretrained(..., dtype=torch.bfloat16)`, so a cast model computes
    exactly what the same weights loaded in that dtype compute.
    """

    def _apply(self, fn, recurse: bool = True):
        kept = {name: b for name, b in self._buffers.items() if b is not None and b.dtype == torch.float32}
        super()._apply(fn, recurse)
        for name, before in kept.items():
            after = self._buffers[name]
            if after is not None and after.dtype != torch.float32:
                self._buffers[name] = before.to(device=after.device)
        return self


class RotaryEmbedding(Fp32ConstantBuffers):
    """Rotary position embedding in transformers' convention (as `LlamaRotaryEmbedding(config)`).

    Built from the config alone: reads `config.rope_parameters` (transformers standardises a legacy `rope_scaling`
    / `rope_theta` / `partial_rotary_factor` into it) and the head dim (`config.head_dim`, else hidden_size /
    num_attention_heads). The inverse frequencies come from `compute_default_rope_parameters` for plain RoPE and
    from transformers' `ROPE_INIT_FUNCTIONS` for every other `rope_type` (linear, dynamic, yarn, longrope, llama3,
    ...), and transformers' `dynamic_rope_update` recomputes them in forward where the type asks for it (dynamic
    NTK grows them with the running length, longrope switches to its long factors past the original length).
    With `partial_rotary_factor` < 1 only the first `int(head_dim * factor)` features of each head are rotated
    (`apply_rotary_pos_emb` reads that width from `cos`).

    `inv_freq` and `original_inv_freq` are non-persistent fp32 buffers, which transformers' own
    `PreTrainedModel._init_weights` recomputes from `config` and `rope_type` (after loading from the meta device,
    say), so no model re-initialises them itself. They stay fp32 when the model is cast (`Fp32ConstantBuffers`).
    forward(x, position_ids [B, T]) -> (cos, sin), each [B, T, rotary_dim] in x's dtype.
    """

    def __init__(self, config, device: torch.device | None = None):
        super().__init__()
        self.config = config
        self.max_seq_len_cached = config.max_position_embeddings  # read by dynamic NTK's `dynamic_rope_update`
        self.original_max_seq_len = config.max_position_embeddings
        self.rope_type = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
        if self.rope_type == "default":
            rope_init_fn: Callable = self.compute_default_rope_parameters
        elif self.rope_type in ROPE_INIT_FUNCTIONS:
            rope_init_fn = ROPE_INIT_FUNCTIONS[self.rope_type]
        else:
            known = ", ".join(repr(name) for name in ("default", *ROPE_INIT_FUNCTIONS))
            raise ValueError(f"`rope_parameters['rope_type']` must be one of {known}, got {self.rope_type!r}.")
        inv_freq, self.attention_scaling = rope_init_fn(config, device)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("original_inv_freq", inv_freq.clone(), persistent=False)

    @staticmethod
    def compute_default_rope_parameters(
        config, device: torch.device | None = None, seq_len: int | None = None, **kwargs
    ) -> tuple[torch.Tensor, float]:
        """Plain RoPE (Su et al. 2021): inverse frequencies theta^(-2i / dim) over the rotated width
        dim = int(head_dim * partial_rotary_factor), and no attention scaling."""
        params = getattr(config, "rope_parameters", None) or {}
        base = params.get("rope_theta", 10000.0)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        dim = int(head_dim * params.get("partial_rotary_factor", 1.0))
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float, device=device) / dim))
        return inv_freq, 1.0

    @torch.no_grad()
    @dynamic_rope_update  # dynamic NTK and longrope recompute `inv_freq` from the positions; a no-op otherwise
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)  # [B, T, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        return (emb.cos() * self.attention_scaling).to(x.dtype), (emb.sin() * self.attention_scaling).to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin):
    """q [B, H, T, D], k [B, Hkv, T, D], cos/sin [B, T, R] -> rotated q, k.

    The first R features of each head are rotated and the other D - R pass through unchanged (partial rotary, as
    GPT-NeoX and transformers' `partial_rotary_factor`); R = D rotates the whole head.
    """
    cos, sin = cos[:, None], sin[:, None]
    rotary_dim = cos.shape[-1]
    if rotary_dim == q.shape[-1]:
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    q_rot, q_pass = q[..., :rotary_dim], q[..., rotary_dim:]
    k_rot, k_pass = k[..., :rotary_dim], k[..., rotary_dim:]
    q_rot = q_rot * cos + rotate_half(q_rot) * sin
    k_rot = k_rot * cos + rotate_half(k_rot) * sin
    return torch.cat((q_rot, q_pass), dim=-1), torch.cat((k_rot, k_pass), dim=-1)
