"""AdaptiveSpanGPT's distance masks (learnable, and ALiBi), and the attention work a distance mask leaves to compute.

Both masks depend only on the head and on the query-key distance d = i - j >= 0, so they reach every attention
backend as one distance bias table (see ``layers.py``):

- `AdaptiveSpanMask`: adaptive attention span (Sukhbaatar et al. 2019), one learnable span per head;
- `TriangleWaveMask`: a learnable periodic (triangle-wave) mask, one period and offset per head;
- ALiBi (Press et al. 2022), a fixed linear bias per head: `alibi_slopes`, `alibi_distance_bias`.

`causal_attention_entries` / `attention_flops` are the one formula for how much attention a distance mask leaves
to compute (the span formula: T - d entries at each distance d the mask keeps); the model's `attention_flops`
report, the training logs, benchmarks and studies all call it.

This file is copied next to ``modeling_adaptive_span_gpt.py`` when a model is saved with remote code, so it imports
only torch and its `.`-siblings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Callable

import torch
from torch import nn

from .input_checks import is_tracing


def safe_log(mask: torch.Tensor) -> torch.Tensor:
    """log(mask) with -inf where mask == 0, and no NaN gradient there (the -inf branch has zero gradient)."""
    tiny = torch.finfo(mask.dtype).tiny
    return torch.where(mask > 0, torch.log(mask.clamp_min(tiny)), torch.full_like(mask, float("-inf")))


# ---------------------------------------------------------------------------------------------------------------
# Adaptive span
# ---------------------------------------------------------------------------------------------------------------


def adaptive_span_mask(spans: torch.Tensor, softness: float, distance: torch.Tensor) -> torch.Tensor:
    """m_h(d) = clamp((R + z_h - d) / R, 0, 1): spans z [H], softness R, distance [L] float -> mask [H, L] in [0, 1].

    m = 1 up to d = z, then a linear ramp of length R down to 0 at d = z + R.
    """
    return ((softness + spans[:, None] - distance[None, :]) / softness).clamp(0.0, 1.0)


def span_max_distance(spans: torch.Tensor | Sequence[float], softness: float) -> int:
    """Smallest L such that `adaptive_span_mask` is 0 for every head and every d >= L: ceil(max_h z_h + R).

    Reads the value (`.item()`): not for use while tracing (see `AdaptiveSpanMask.max_distance`).
    """
    return int(torch.ceil((torch.as_tensor(spans) + softness).max()).item())


class AdaptiveSpanMask(nn.Module):
    """Adaptive attention span (Sukhbaatar et al. 2019), one span per head.

    z_h = sigmoid(p_h) * max_span; the mask over the distance is `adaptive_span_mask(z, R, d)`.
    """

    def __init__(self, num_heads: int, max_span: int, softness: float, init_ratio: float):
        super().__init__()
        self.max_span = max_span
        self.softness = softness
        self.init_ratio = init_ratio
        self.span_logit = nn.Parameter(torch.full((num_heads,), math.log(init_ratio / (1 - init_ratio))))

    def spans(self) -> torch.Tensor:
        """[H] current spans z in tokens."""
        return torch.sigmoid(self.span_logit.float()) * self.max_span

    def max_distance(self) -> int:
        """Smallest L such that m_h(d) = 0 for every head and every d >= L (`span_max_distance`).

        While tracing or compiling (no `.item()` there) it is the static bound ceil(max_span + R), which the span
        can never exceed: the distance table is longer, its extra entries are -inf, the function is the same.
        """
        if is_tracing():
            return math.ceil(self.max_span + self.softness)
        return span_max_distance(self.spans(), self.softness)

    def ramp(self) -> torch.Tensor:
        """[H, 2] long (lo, hi): the distances lo <= d < hi where the mask depends on the span, its ramp
        floor(z) <= d <= ceil(z + R) (1 before it, 0 after; clamp passes the gradient at its ends too)."""
        z = self.spans().detach()
        return torch.stack([z.floor(), (z + self.softness).ceil() + 1], dim=-1).long()

    def forward(self, distance: torch.Tensor) -> torch.Tensor:
        """distance [L] float -> mask [H, L] in [0, 1]."""
        return adaptive_span_mask(self.spans(), self.softness, distance)


def distance_limit_mask_function(limit: torch.Tensor) -> Callable:
    """transformers' mask_function(b, h, q_idx, kv_idx) -> q_idx - kv_idx < limit: the hard edge of the span mask,
    so flex_attention's BlockMask skips the key blocks no head can reach."""

    def within_span(batch_idx, head_idx, q_idx, kv_idx):
        return (q_idx - kv_idx) < limit

    return within_span


# ---------------------------------------------------------------------------------------------------------------
# Triangle wave
# ---------------------------------------------------------------------------------------------------------------


class TriangleWaveMask(nn.Module):
    """Learnable periodic (triangle-wave) mask over the distance, one period and offset per head.

    period P in [period_min, period_max] and offset o in [-1/4, 1/4], both through sigmoids. The wave is a
    triangle of period P and amplitude P/4 (unit slope), written as its truncated Fourier series
        w(d) = P/4 * 8/pi^2 * sum_n (-1)^n sin((2n+1) 2 pi d / P) / (2n+1)^2,
    and the mask is clamp(w(d) + 0.5 + o, 0, 1). Long periods give plateaus of 1 and runs of 0 (skipped keys);
    at d = 0 the mask is 0.5 + o > 0, so a query always sees itself.
    """

    def __init__(self, num_heads: int, period_min: float, period_max: float, fourier_terms: int):
        super().__init__()
        self.period_min = period_min
        self.period_max = period_max
        self.fourier_terms = fourier_terms
        self.period_logit = nn.Parameter(torch.zeros(num_heads))
        self.offset_logit = nn.Parameter(torch.zeros(num_heads))

    def periods(self) -> torch.Tensor:
        """[H] periods in tokens."""
        return self.period_min + torch.sigmoid(self.period_logit.float()) * (self.period_max - self.period_min)

    def offsets(self) -> torch.Tensor:
        """[H] vertical offsets in [-1/4, 1/4]."""
        return (torch.sigmoid(self.offset_logit.float()) - 0.5) * 0.5

    def forward(self, distance: torch.Tensor) -> torch.Tensor:
        """distance [L] float -> mask [H, L] in [0, 1]."""
        period = self.periods()[:, None]
        phase = 2 * math.pi * distance[None, :] / period  # [H, L]
        wave = torch.zeros_like(phase)
        for n in range(self.fourier_terms):
            k = 2 * n + 1
            wave = wave + (-1) ** n * torch.sin(k * phase) / k**2
        wave = wave * (8 / math.pi**2) * period / 4
        return (wave + 0.5 + self.offsets()[:, None]).clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------------------------------------
# ALiBi
# ---------------------------------------------------------------------------------------------------------------


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
# Attention work under a distance mask
# ---------------------------------------------------------------------------------------------------------------


def causal_attention_entries(seq_len: int, distance_mask: torch.Tensor | None = None, num_heads: int = 1) -> int:
    """(head, query i, key j <= i) entries that causal attention over one sequence of `seq_len` tokens computes.

    Without a mask, every entry of every head: num_heads * T (T + 1) / 2. With `distance_mask` [H, L] (entry
    [h, d] the mask of head h at distance d; distances >= L are masked), only the entries whose mask is nonzero:
    sum over h and d < min(L, T) of (T - d) [mask[h, d] > 0], as there are T - d pairs at distance d.
    """
    if distance_mask is None:
        return num_heads * seq_len * (seq_len + 1) // 2
    kept = (distance_mask[:, :seq_len].detach() > 0).long().sum(0).cpu()  # heads that keep each distance
    pairs = torch.arange(seq_len, seq_len - kept.shape[0], -1)  # T - d pairs at distance d
    return int((kept * pairs).sum())


def attention_flops(seq_len: int, head_dim: int, distance_mask: torch.Tensor | None = None, num_heads: int = 1) -> int:
    """Attention FLOPs of one causal sequence in one layer: each entry of `causal_attention_entries` costs
    4 * head_dim (2 * head_dim for its q.k logit, 2 * head_dim for its share of P V)."""
    return 4 * head_dim * causal_attention_entries(seq_len, distance_mask, num_heads)


__all__ = [
    "AdaptiveSpanMask",
    "TriangleWaveMask",
    "adaptive_span_mask",
    "attention_flops",
    "causal_attention_entries",
    "distance_limit_mask_function",
    "safe_log",
    "span_max_distance",
]
