"""Starting an encoder exactly where a static embedding model ends (model2vec, Tulkens & van Dongen 2024; tokenlearn).

A static model embeds a sentence as the mean of its tokens' vectors, each scaled by a per-token weight. Our encoders
pass token vectors through RMSNorms (TAN's embedding, every pre-norm block, the final norm), which would erase those
weights: every token would count the same. ``static_layout`` keeps them by writing each weighted vector y_i into the
first columns of a row and a *norm channel* sqrt(R^2 - |y_i|^2) into the last, so every row has the same norm R and
an RMSNorm only rescales it; the mean over a sentence's rows then carries the static model's mean in its first
columns and a head that reads those columns (and drops the norm channel) gives the static embedding. With the
attention and MLP outputs zero-initialised into the residual stream, the encoder at step 0 *is* the static model;
training adds context on top.

Imports only torch: this file is copied next to the weights with the models' remote code.
"""

from __future__ import annotations

import torch


def static_layout(vectors: torch.Tensor, weights: torch.Tensor | None, width: int,
                  vocab_size: int) -> tuple[torch.Tensor, int]:
    """Static token vectors [V, D] (and per-token weights [V] or None) -> (rows [vocab_size, width], k).

    Row i holds token i's weighted vector y_i = weights[i] * vectors[i] in columns 0 .. k-1 (k = min(D, width - 1);
    when D > width - 1, its coordinates on the top k right singular vectors of the *uncentred* vectors, which keep
    dot products best and keep a sentence mean a mean) and sqrt(R^2 - |y_i|^2) in column width - 1, R the largest
    |y_i|: every row has norm R. Float64 SVD. Raises ValueError for mismatched shapes, too few rows, a width below 2
    or non-finite values.
    """
    if vectors.dim() != 2:
        raise ValueError(f"static vectors must be [vocab, dim], got shape {list(vectors.shape)}")
    if vectors.shape[0] < vocab_size:
        raise ValueError(f"static vectors cover {vectors.shape[0]} tokens, the model's vocabulary has {vocab_size}")
    if width < 2:
        raise ValueError(f"a static start needs a width of at least 2 (content + norm channel), got {width}")
    y = vectors[:vocab_size].double()
    if weights is not None:
        if weights.shape != (vectors.shape[0],):
            raise ValueError(f"weights must be [{vectors.shape[0]}] (one per vector), got {list(weights.shape)}")
        y = y * weights[:vocab_size].double()[:, None]
    if not torch.isfinite(y).all():
        raise ValueError("static vectors or weights contain NaN or inf")
    k = min(y.shape[1], width - 1)
    if k < y.shape[1]:
        _, _, vh = torch.linalg.svd(y, full_matrices=False)
        y = y @ vh[:k].T
    sq = (y * y).sum(1)
    radius2 = sq.max().clamp_min(1e-24)
    rows = torch.zeros(vocab_size, width, dtype=torch.float64)
    rows[:, :k] = y
    rows[:, width - 1] = (radius2 - sq).clamp_min(0).sqrt()
    return rows, k


def content_readout(k: int, out_features: int, in_features: int, scale: float = 1.0) -> torch.Tensor:
    """[out_features, in_features] weight that copies input columns 0 .. k-1 (times ``scale``) to outputs 0 .. k-1
    and drops the rest (the norm channel): the sentence head of a static start."""
    if out_features < k:
        raise ValueError(f"the sentence embedding (embedding_size={out_features}) is narrower than the static "
                         f"vectors' {k} columns; set embedding_size >= {k} for a static start")
    w = torch.zeros(out_features, in_features, dtype=torch.float64)
    w[torch.arange(k), torch.arange(k)] = scale
    return w


__all__ = ["content_readout", "static_layout"]
