"""Shared building blocks of the hf_attn models.

This file is copied next to the modeling files when a model is saved with remote code, so it imports only torch,
transformers and its `.`-siblings. Everything that more than one model uses lives here, once (the input checks
live beside it, in ``input_checks.py``):

- the attention seam: the eager reference, mask normalisation, the per-head *distance bias* and how it reaches
  each backend;
- positional encodings: RoPE in transformers' convention (`RotaryEmbedding(config)`: inverse frequencies from
  `compute_default_rope_parameters` or transformers' ``ROPE_INIT_FUNCTIONS``, updated by its `dynamic_rope_update`,
  so every scaling transformers knows is transformers' own, rebuilt by transformers' own `_init_weights`; partial
  rotary), sinusoidal, ALiBi;
- layers: ``DecomposedLinear`` (TAN's low-rank maps), masked mean pooling, the encoders' bidirectional attention.

Shapes: ``B`` batch, ``H`` query heads, ``Hkv`` key/value heads, ``Tq``/``Tk`` query/key lengths, ``D`` head dim.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

# The hf_* attention backends register themselves when hf_attn is imported. A model loaded as remote code (its
# modules live under transformers_modules, not hf_attn) imports hf_attn here for that, when it is installed. A module
# that is itself part of hf_attn must not: hf_attn imports it while initialising, and registers the backends itself.
if not __name__.startswith("hf_attn."):
    try:
        import hf_attn  # noqa: F401
    except ImportError:
        pass

# ---------------------------------------------------------------------------------------------------------------
# Attention seam
# ---------------------------------------------------------------------------------------------------------------
#
# Every attention function has transformers' signature
#     fn(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs) -> (out, weights)
# with query [B, H, Tq, D], key/value [B, Hkv, Tk, D], out [B, Tq, H, D].
#
# `attention_mask` arrives in whatever form transformers' mask interface produced for the backend:
#   None                       no padding (causality then comes from `is_causal`)
#   [B, Tk] bool               key padding, True = real token (what the hf_* backends receive: O(T) memory)
#   [B, 1|H, Tq, Tk] bool      True = attend (sdpa-style, causality already inside)
#   [B, 1|H, Tq, Tk] float     additive (eager-style, causality already inside)
#
# Per-head biases that depend only on the distance d = q_pos - k_pos (ALiBi, the adaptive-span soft mask, the
# triangle-wave mask) are passed as a *distance bias table* `[H, L]`: entry [h, d] is added to the logit of every
# (query, key) pair at distance d >= 0; -inf excludes the pair; distances >= L are excluded. Backends that can use
# the table directly (and skip key blocks past `max_distance`) mark themselves with `accepts_distance_bias = True`;
# all others (eager, sdpa, flex_attention) receive the same function densely as transformers' `position_bias`
# [1, H, Tq, Tk]. `attention_bias_kwargs` chooses, so model code never branches on the backend.
#
# Model attention modules pick their backend exactly as transformers' own models do, by writing
#     ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
# in the modeling file (transformers looks for that text to allow `model.set_attn_implementation`).


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """[B, Hkv, T, D] -> [B, Hkv * n_rep, T, D], each key/value head repeated for its group of query heads."""
    if n_rep == 1:
        return hidden_states
    b, hkv, t, d = hidden_states.shape
    return hidden_states[:, :, None, :, :].expand(b, hkv, n_rep, t, d).reshape(b, hkv * n_rep, t, d)


def resolve_is_causal(module: nn.Module | None, kwargs: dict) -> bool:
    """Causality as transformers' sdpa decides it: the `is_causal` kwarg, else `module.is_causal`."""
    is_causal = kwargs.get("is_causal")
    if is_causal is None:
        is_causal = getattr(module, "is_causal", False)
    return bool(is_causal)


def additive_attention_mask(
    attention_mask: torch.Tensor | None,
    is_causal: bool,
    q_len: int,
    k_len: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor | None:
    """Normalise any accepted `attention_mask` form to an additive float mask [B|1, 1|H, Tq, Tk] (or None).

    Queries are the last `q_len` positions of the keys (KV-cache decoding), so the causal edge is bottom-right.
    A 4D mask is trusted to contain causality already, as transformers builds it.
    """
    neg = torch.finfo(dtype).min
    if attention_mask is not None and attention_mask.dim() == 4:
        mask = attention_mask[..., :k_len]
        if mask.dtype == torch.bool:
            return torch.zeros((), dtype=dtype, device=device).masked_fill(~mask, neg)
        return mask.to(dtype)
    allowed = None
    if is_causal:
        q_pos = torch.arange(k_len - q_len, k_len, device=device)
        allowed = (q_pos[:, None] >= torch.arange(k_len, device=device)[None, :])[None, None]  # [1, 1, Tq, Tk]
    if attention_mask is not None:  # [B, Tk] key padding
        keep = attention_mask[:, None, None, -k_len:].to(device=device, dtype=torch.bool)
        allowed = keep if allowed is None else (allowed & keep)
    if allowed is None:
        return None
    return torch.zeros((), dtype=dtype, device=device).masked_fill(~allowed, neg)


def distance_index(
    q_len: int, k_len: int, device: torch.device, rows: tuple[int, int] | None = None
) -> torch.Tensor:
    """[Tq, Tk] long: d = q_pos - k_pos with queries the last `q_len` key positions; only query rows
    [start, stop) when `rows` is given. (The remote-code twin of `hf_attn.kernels.band.distances`.)"""
    start, stop = rows if rows is not None else (0, q_len)
    q_pos = torch.arange(k_len - q_len + start, k_len - q_len + stop, device=device)
    return q_pos[:, None] - torch.arange(k_len, device=device)[None, :]


def dense_distance_bias(
    table: torch.Tensor, q_len: int, k_len: int, rows: tuple[int, int] | None = None
) -> torch.Tensor:
    """Expand a distance bias table [H, L] to transformers' `position_bias` [1, H, Tq, Tk] (query rows
    [start, stop) only when `rows` is given).

    Pairs with d < 0 (the future) or d >= L get -inf; differentiable with respect to `table`.
    """
    h, length = table.shape
    d = distance_index(q_len, k_len, table.device, rows)
    valid = (d >= 0) & (d < length)
    dense = table[:, d.clamp(0, length - 1)]  # [H, Tq, Tk]
    dense = dense.masked_fill(~valid, float("-inf"))
    return dense[None]


def attention_bias_kwargs(
    attention_fn: Callable,
    table: torch.Tensor | None,
    query: torch.Tensor,
    k_len: int,
    max_distance: int | None = None,
    trained_distances: torch.Tensor | None = None,
) -> dict:
    """The kwargs that carry a distance bias table to `attention_fn` in the form it understands.

    `query` [B, H, Tq, D] gives the batch size, query length and dtype of the dense form: transformers'
    flex_attention indexes `position_bias` by batch entry, so the dense bias gets a (free, expanded) batch
    dimension, and sdpa wants it in the query's dtype. `trained_distances` ([H, 2] lo, hi: the table depends
    on trained parameters only at lo_h <= d < hi_h) goes to table backends, which may then compute the table's
    gradient there only.
    """
    if table is None:
        return {}
    if getattr(attention_fn, "accepts_distance_bias", False):
        kwargs = {"distance_bias": table, "max_distance": max_distance}
        return kwargs if trained_distances is None else {**kwargs, "trained_distances": trained_distances}
    b, _, q_len, _ = query.shape
    dense = dense_distance_bias(table, q_len, k_len).to(query.dtype)
    return {"position_bias": dense.expand(b, -1, -1, -1)}


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


def softmax_or_zero(scores: torch.Tensor) -> torch.Tensor:
    """softmax over the last dim, with zero weights in a row whose logits are all excluded (-inf or finfo.min).

    Such rows are replaced before the softmax, so neither the forward nor the backward meets exp(-inf - -inf): a
    NaN there would reach every parameter's gradient.
    """
    no_key = scores.amax(dim=-1, keepdim=True) <= torch.finfo(torch.float32).min / 2
    return torch.softmax(scores.masked_fill(no_key, 0.0), dim=-1).masked_fill(no_key, 0.0)


def eager_attention_forward(
    module: nn.Module | None,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    position_bias: torch.Tensor | None = None,
    distance_bias: torch.Tensor | None = None,
    softcap: float | None = None,
    s_aux: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention, the reference every exact backend is tested against.

    softmax(cap(q k^T * scaling) + mask + bias) v, with the softmax in fp32. `softcap` (Gemma 2) caps the logits,
    cap(x) = softcap * tanh(x / softcap), before any mask or bias; `s_aux` [H] (gpt-oss's attention sinks) is one
    extra logit per head in every row's softmax denominator, attending to nothing. The `sliding_window` kwarg is
    not read: transformers puts a layer's window into the 4D mask it hands eager. Returns (out [B, Tq, H, D],
    weights [B, H, Tq, Tk]).
    """
    b, h, q_len, d = query.shape
    k_len = key.shape[2]
    scaling = d**-0.5 if scaling is None else scaling
    key = repeat_kv(key, h // key.shape[1])
    value = repeat_kv(value, h // value.shape[1])

    scores = torch.matmul(query, key.transpose(2, 3)).float() * scaling  # [B, H, Tq, Tk]
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    mask = additive_attention_mask(
        attention_mask, resolve_is_causal(module, kwargs), q_len, k_len, torch.float32, query.device
    )
    if mask is not None:
        scores = scores + mask
    if distance_bias is not None:
        position_bias = dense_distance_bias(distance_bias, q_len, k_len)
    if position_bias is not None:
        scores = scores + position_bias.float()
    # A query whose keys are all excluded (a padding row) gets zero weights, as in the blockwise and Triton
    # backends, rather than NaN (-inf rows) or a uniform average (rows of finfo.min).
    if s_aux is not None:  # the sink's column joins the softmax and is dropped after it
        sink = s_aux.float().reshape(1, h, 1, 1).expand(b, h, q_len, 1)
        weights = softmax_or_zero(torch.cat([scores, sink], dim=-1))[..., :-1].to(query.dtype)
    else:
        weights = softmax_or_zero(scores).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training if module is not None else False)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()  # [B, Tq, H, D]
    return out, weights


# ---------------------------------------------------------------------------------------------------------------
# Positional encodings
# ---------------------------------------------------------------------------------------------------------------


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


def sinusoidal_position_embedding(position_ids: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Vaswani et al. (2017) sinusoidal table for `position_ids` [B, T] -> [B, T, dim] (float32)."""
    half = dim // 2
    inv_freq = torch.exp(-math.log(base) * torch.arange(half, dtype=torch.float, device=position_ids.device) / half)
    angles = position_ids[..., None].float() * inv_freq
    emb = torch.cat((angles.sin(), angles.cos()), dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """Press et al. (2022) head slopes: a geometric sequence starting at 2^(-8/n) (interleaved for non powers of 2)."""

    def power_of_2_slopes(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(num_heads).is_integer():
        slopes = power_of_2_slopes(num_heads)
    else:
        closest = 2 ** math.floor(math.log2(num_heads))
        slopes = power_of_2_slopes(closest) + power_of_2_slopes(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float)


def alibi_distance_bias(slopes: torch.Tensor, length: int) -> torch.Tensor:
    """ALiBi as a distance bias table [H, L]: -slope_h * d."""
    d = torch.arange(length, device=slopes.device, dtype=slopes.dtype)
    return -slopes[:, None] * d[None, :]


# ---------------------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------------------


class DecomposedLinear(nn.Module):
    """Low-rank factorised linear map (TAN): in -> in/4 -> SiLU -> out.

    Parameters: in*r + r*out (+ biases) with r = max(1, in // 4), against in*out for a dense linear.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, rank_divisor: int = 4):
        super().__init__()
        rank = max(1, in_features // rank_divisor)
        self.down = nn.Linear(in_features, rank, bias=bias)
        self.up = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(F.silu(self.down(x)))


def masked_mean_pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the real tokens: hidden [B, T, C], mask [B, T] (1 = token) -> [B, C].

    A row with no real token pools to zeros instead of dividing by zero.
    """
    if attention_mask is None:
        return hidden_states.mean(dim=1)
    mask = attention_mask[:, :, None].to(hidden_states.dtype)
    return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


class BidirectionalRopeAttention(nn.Module):
    """Bidirectional multi-head / grouped-query self-attention with RoPE, shared by the encoders.

    `linear(in_features, out_features)` builds the q/k/v/o projections: TAN uses DecomposedLinear,
    GQAEmbedder bias-free nn.Linear. K/V stay at `num_key_value_heads` heads; each backend handles the
    grouping (without materialising repeats where it can). `sliding_window` / `attention_topk` are read by the
    approximate hf_* backends only.
    """

    def __init__(self, config, layer_idx: int, linear: Callable[[int, int], nn.Module]):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = False
        self.sliding_window = getattr(config, "sliding_window", None)
        self.attention_topk = getattr(config, "attention_topk", None)

        self.q_proj = linear(config.hidden_size, self.num_heads * self.head_dim)
        self.k_proj = linear(config.hidden_size, self.num_key_value_heads * self.head_dim)
        self.v_proj = linear(config.hidden_size, self.num_key_value_heads * self.head_dim)
        self.o_proj = linear(self.num_heads * self.head_dim, config.hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]  # [B, T]
        hidden_shape = (*input_shape, -1, self.head_dim)

        q = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # [B, H, T, D]
        k = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # [B, Hkv, T, D]
        v = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # [B, Hkv, T, D]
        cos, sin = position_embeddings
        q, k = apply_rotary_pos_emb(q, k, cos, sin)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        out, weights = attention_interface(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )  # out [B, T, H, D]
        out = out.reshape(*input_shape, -1).contiguous()
        return self.o_proj(out), weights
