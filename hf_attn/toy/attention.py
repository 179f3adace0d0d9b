"""Attention written to be read: one head (`SelfAttention`) and several heads (`MultiHeadAttention`).

These two classes are the teaching versions of what the hf_attn models do with fused backends. Every step is a
separate line with the tensor shapes beside it. Shapes: ``B`` batch, ``T`` sequence length, ``C`` embedding
width (``embed_dim``), ``H`` heads, ``D = C // H`` the width of one head.

Both modules return ``(output, weights)``: ``output`` is ``[B, T, C]`` like the input, ``weights`` is
``[B, H, T, T]`` (``H = 1`` for `SelfAttention`) where ``weights[b, h, i, j]`` says how much position ``i`` took
from position ``j``; each row sums to 1. The toy trainer draws those rows as heatmaps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def causal_mask(T: int, device: torch.device | None = None) -> torch.Tensor:
    """[T, T] bool, True where query i may look at key j (j <= i): a language model must not peek ahead."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


class SelfAttention(nn.Module):
    """Single-head scaled dot-product self-attention.

    Args:
        embed_dim: width ``C`` of the token vectors going in and out.
        bias: whether the four linear maps have a bias.
    """

    def __init__(self, embed_dim: int, bias: bool = True):
        super().__init__()
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be positive, got {embed_dim}")
        self.embed_dim = embed_dim
        self.num_heads = 1
        # Three learned views of the same token vector:
        #   query: what this position is looking for,
        #   key:   what this position offers to be found by,
        #   value: what this position hands over when it is found.
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        # After mixing, one more linear map brings the result back into the model's own coordinates.
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def forward(self, x: torch.Tensor, causal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, T, C] -> (output [B, T, C], weights [B, 1, T, T])."""
        B, T, C = x.shape

        # 1. Project every token into its query, key and value.
        q = self.q_proj(x)  # [B, T, C]
        k = self.k_proj(x)  # [B, T, C]
        v = self.v_proj(x)  # [B, T, C]

        # 2. Compare every query with every key: a dot product is large when the two vectors point the same way.
        scores = q @ k.transpose(-2, -1)  # [B, T, T]; scores[b, i, j] = <q_i, k_j>

        # 3. Scale by 1/sqrt(C). A dot product of C terms grows like sqrt(C) for random vectors; without the
        #    scaling, wide models would feed softmax huge numbers, it would put all weight on one key, and the
        #    gradients through the other keys would vanish.
        scores = scores / math.sqrt(C)

        # 4. Optionally forbid looking ahead: masked pairs get -inf, which softmax turns into exactly 0.
        if causal:
            scores = scores.masked_fill(~causal_mask(T, x.device), float("-inf"))

        # 5. Softmax over the keys turns each row of scores into weights that are positive and sum to 1.
        weights = F.softmax(scores, dim=-1)  # [B, T, T]

        # 6. Each position's output is the weighted average of all values.
        mixed = weights @ v  # [B, T, C]

        # 7. Final linear map.
        out = self.out_proj(mixed)  # [B, T, C]
        return out, weights.unsqueeze(1)  # weights as [B, 1, T, T], the multi-head layout with H = 1


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product self-attention.

    The C-wide vectors are cut into H heads of width D = C / H. Each head runs the single-head recipe above on
    its own slice, so each can learn a different pattern (one follows position, another follows content...).
    The heads' outputs are put side by side again and mixed by the output projection.

    Args:
        embed_dim: width ``C``; must be divisible by ``num_heads``.
        num_heads: number of heads ``H``.
        bias: whether the linear maps have a bias.
    """

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True):
        super().__init__()
        if num_heads < 1 or embed_dim < 1:
            raise ValueError(
                f"embed_dim and num_heads must be positive, got embed_dim={embed_dim}, num_heads={num_heads}"
            )
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads}): each head gets "
                f"embed_dim / num_heads dimensions; try embed_dim={num_heads * max(1, round(embed_dim / num_heads))}"
            )
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        # One C x C map per role computes all heads' projections at once; head h owns columns [h*D, (h+1)*D).
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        """[B, T, C] -> [B, H, T, D]: give every head its own slice of the channels."""
        B, T, _ = t.shape
        return t.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, causal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, T, C] -> (output [B, T, C], weights [B, H, T, T])."""
        B, T, C = x.shape

        # 1. Queries, keys and values for all heads, then split into heads.
        q = self._split_heads(self.q_proj(x))  # [B, H, T, D]
        k = self._split_heads(self.k_proj(x))  # [B, H, T, D]
        v = self._split_heads(self.v_proj(x))  # [B, H, T, D]

        # 2-3. Per head: every query against every key, scaled by 1/sqrt(D) (the width of one head, since that is
        #      the length of the dot products here).
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # [B, H, T, T]

        # 4. Optional causal mask, shared by all heads.
        if causal:
            scores = scores.masked_fill(~causal_mask(T, x.device), float("-inf"))

        # 5. Softmax per head and per query row.
        weights = F.softmax(scores, dim=-1)  # [B, H, T, T]

        # 6. Weighted average of each head's values.
        mixed = weights @ v  # [B, H, T, D]

        # 7. Put the heads side by side again ("concatenate") and mix them with the output projection.
        mixed = mixed.transpose(1, 2).reshape(B, T, C)  # [B, T, H*D] = [B, T, C]
        out = self.out_proj(mixed)  # [B, T, C]
        return out, weights


__all__ = ["MultiHeadAttention", "SelfAttention", "causal_mask"]
