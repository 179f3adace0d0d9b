"""Contrastive and distillation losses for the embedders.

``info_nce`` is the normalised temperature-scaled cross-entropy (InfoNCE / NT-Xent, seeds 000 and 004) over
in-batch negatives plus optional hard negatives:

    s_ij = cos(a_i, c_j) / tau,   c = [p_1..p_B, n_1..n_K]
    L_a->p = mean_i CE(s_i, i)                        (anchor i must pick its own positive)
    L_p->a = mean_i CE(cos(p_i, a_j) / tau, i)       (positive i must pick its own anchor; anchors only)
    L = (L_a->p + L_p->a) / 2    when symmetric, else L_a->p

``InfoNCELoss`` holds the temperature as a learnable log-parameter, clamped to [min, max] (CLIP-style) so it
cannot collapse or explode. Two distillation terms for issue 9's ``--teacher`` (``--distill-target``):
``EmbeddingDistillationLoss`` is MSE between a learned projection of the student embedding and the teacher's
embedding; ``SimilarityDistillationLoss`` is MSE between the two models' in-batch cosine-similarity matrices, which
asks the student for the teacher's similarities (what STS measures) rather than its coordinates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def info_nce(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor | None = None,
    temperature: float | torch.Tensor = 0.05,
    symmetric: bool = True,
) -> torch.Tensor:
    """anchor/positive [B, C], negative [K, C] or None -> scalar loss (float32). See the module docstring."""
    a = F.normalize(anchor.float(), dim=-1)
    p = F.normalize(positive.float(), dim=-1)
    candidates = p if negative is None or negative.numel() == 0 else torch.cat([p, F.normalize(negative.float(), dim=-1)])
    labels = torch.arange(a.shape[0], device=a.device)
    loss = F.cross_entropy(a @ candidates.T / temperature, labels)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(p @ a.T / temperature, labels))
    return loss


class InfoNCELoss(nn.Module):
    """InfoNCE with a learnable temperature tau = exp(clamp(log_tau, log(min), log(max)))."""

    def __init__(
        self,
        temperature: float = 0.05,
        learnable: bool = True,
        min_temperature: float = 0.01,
        max_temperature: float = 1.0,
        symmetric: bool = True,
    ):
        super().__init__()
        if not (0 < min_temperature <= temperature <= max_temperature):
            raise ValueError(f"need 0 < min_temperature <= temperature <= max_temperature, got "
                             f"{min_temperature}, {temperature}, {max_temperature}")
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)), requires_grad=learnable)
        self.log_min, self.log_max = math.log(min_temperature), math.log(max_temperature)
        self.symmetric = symmetric

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.clamp(self.log_min, self.log_max).exp()

    def forward(self, anchor, positive, negative=None) -> torch.Tensor:
        return info_nce(anchor, positive, negative, self.temperature, self.symmetric)


class EmbeddingDistillationLoss(nn.Module):
    """MSE(W s, t) between a linear projection of the student embedding s [N, Cs] and the teacher's t [N, Ct].

    Both sides are L2-normalised first (the teacher is used by cosine similarity), so the loss is scale-free.
    """

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.projection = nn.Linear(student_dim, teacher_dim, bias=False)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        s = F.normalize(self.projection(student.float()), dim=-1)
        t = F.normalize(teacher.float(), dim=-1)
        return F.mse_loss(s, t, reduction="sum") / s.shape[0]


class SimilarityDistillationLoss(nn.Module):
    """MSE between the student's and the teacher's in-batch cosine similarities.

    For the N texts of a batch, S_ij = cos(s_i, s_j) and T_ij = cos(t_i, t_j) over every pair i != j (the diagonal
    is 1 on both sides). The loss is sum_{i != j} (S_ij - T_ij)^2 / N: a per-text sum, like
    ``EmbeddingDistillationLoss``. No parameters: the student keeps its own width and coordinates and only has to
    reproduce the teacher's geometry, which a model much smaller than the teacher can do long before it could
    reproduce the teacher's embedding.
    """

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.shape[0] != teacher.shape[0]:
            raise ValueError(f"student and teacher embed different numbers of texts: {student.shape[0]} vs "
                             f"{teacher.shape[0]}")
        s = F.normalize(student.float(), dim=-1)
        t = F.normalize(teacher.float(), dim=-1)
        diff = s @ s.T - t @ t.T
        diff = diff - torch.diag_embed(torch.diagonal(diff))  # the diagonal is 1 - 1 up to rounding
        return diff.pow(2).sum() / s.shape[0]


class EmbedderLoss(nn.Module):
    """What train_embed optimises: InfoNCE (+ distill_weight * distillation when a teacher is given).

    forward(embeddings [2B + K, C], num_pairs B, teacher_embeddings [2B + K, Ct] | None) -> (loss, parts dict).
    Its parameters (log-temperature, projection) are trained and checkpointed with the model.
    """

    def __init__(self, contrastive: InfoNCELoss, distill: nn.Module | None = None,
                 distill_weight: float = 1.0, contrastive_weight: float = 1.0):
        super().__init__()
        self.contrastive = contrastive
        self.distill = distill
        self.distill_weight = distill_weight
        self.contrastive_weight = contrastive_weight

    def forward(self, embeddings: torch.Tensor, num_pairs: int, teacher_embeddings: torch.Tensor | None = None):
        b = num_pairs
        anchor, positive, negative = embeddings[:b], embeddings[b : 2 * b], embeddings[2 * b :]
        contrastive = self.contrastive(anchor, positive, negative if negative.shape[0] else None)
        loss = self.contrastive_weight * contrastive
        parts = {"contrastive": contrastive.detach()}
        if self.distill is not None and teacher_embeddings is not None:
            distill = self.distill(embeddings, teacher_embeddings)
            loss = loss + self.distill_weight * distill
            parts["distill"] = distill.detach()
        return loss, parts
