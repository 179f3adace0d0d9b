"""Contrastive and distillation losses for the embedders.

``info_nce`` is the normalised temperature-scaled cross-entropy (InfoNCE / NT-Xent, as TAN and GQAEmbedder train) over
in-batch negatives plus optional hard negatives:

    s_ij = cos(a_i, c_j) / tau,   c = [p_1..p_B, n_1..n_K]
    L_a->p = mean_i CE(s_i, i)                        (anchor i must pick its own positive)
    L_p->a = mean_i CE(cos(p_i, a_j) / tau, i)       (positive i must pick its own anchor; anchors only)
    L = (L_a->p + L_p->a) / 2    when symmetric, else L_a->p

``InfoNCELoss`` holds the temperature as a learnable log-parameter, clamped to [min, max] (CLIP-style) so it
cannot collapse or explode. Two distillation terms for ``--teacher`` (``--distill-target``):
``EmbeddingDistillationLoss`` is MSE between a learned projection of the student embedding and the teacher's
embedding; ``SimilarityDistillationLoss`` is MSE between the two models' in-batch cosine-similarity matrices, which
asks the student for the teacher's similarities (what STS measures) rather than its coordinates.

``GradientCache`` makes the contrastive batch larger than what fits through the encoder with gradients (what
``--grad-accum-steps`` does in train_embed). ``STInfoNCELoss`` and ``STSimilarityDistillationLoss`` are the same
losses as sentence-transformers losses, for ``SentenceTransformerTrainer``.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn


def _wide(x: torch.Tensor) -> torch.Tensor:
    """float32 for half-precision inputs; float64 stays float64 (exact comparisons in tests)."""
    return x if x.dtype == torch.float64 else x.float()


def info_nce(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor | None = None,
    temperature: float | torch.Tensor = 0.05,
    symmetric: bool = True,
) -> torch.Tensor:
    """anchor/positive [B, C], negative [K, C] or None -> scalar loss (float32). See the module docstring."""
    a = F.normalize(_wide(anchor), dim=-1)
    p = F.normalize(_wide(positive), dim=-1)
    if negative is not None and negative.numel() > 0:
        candidates = torch.cat([p, F.normalize(_wide(negative), dim=-1)])
    else:
        candidates = p
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
        s = F.normalize(self.projection(_wide(student).to(self.projection.weight.dtype)), dim=-1)
        t = F.normalize(_wide(teacher), dim=-1).to(s.dtype)
        return F.mse_loss(s, t, reduction="sum") / s.shape[0]

    @torch.no_grad()
    def fit_(self, student: torch.Tensor, teacher: torch.Tensor) -> float:
        """Set the projection to the least-squares map from ``student`` [N, Cs] to the normalised ``teacher``
        [N, Ct] embeddings (float64, a tiny ridge); returns the mean cosine it reaches on them.

        A random projection makes the first steps' gradients point at a random map of the teacher: they pull a
        student that starts as a good model (a static start) away from where it is. Fitted, the loss at step 0
        measures what the student lacks, and training adds it.
        """
        if student.shape[0] != teacher.shape[0] or student.shape[0] < student.shape[1]:
            raise ValueError(f"fitting the projection needs at least as many texts as student dimensions, and one "
                             f"teacher row per text: got {student.shape[0]} x {student.shape[1]} student, "
                             f"{teacher.shape[0]} teacher rows")
        s = _wide(student).double()
        t = F.normalize(_wide(teacher).double(), dim=-1)
        gram = s.T @ s
        gram += 1e-6 * gram.diagonal().mean() * torch.eye(s.shape[1], dtype=s.dtype)
        w = torch.linalg.solve(gram, s.T @ t)  # [Cs, Ct]
        self.projection.weight.copy_(w.T.to(self.projection.weight))
        return float(F.cosine_similarity(s @ w, t, dim=-1).mean())


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
        s = F.normalize(_wide(student), dim=-1)
        t = F.normalize(_wide(teacher), dim=-1).to(s.dtype)
        diff = s @ s.T - t @ t.T
        diff = diff - torch.diag_embed(torch.diagonal(diff))  # the diagonal is 1 - 1 up to rounding
        return diff.pow(2).sum() / s.shape[0]


class CombinedDistillationLoss(nn.Module):
    """``EmbeddingDistillationLoss`` + ``SimilarityDistillationLoss``: the teacher's coordinates (through a learned
    projection) and its in-batch similarities, summed with equal weight."""

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.embedding = EmbeddingDistillationLoss(student_dim, teacher_dim)
        self.similarity = SimilarityDistillationLoss()

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return self.embedding(student, teacher) + self.similarity(student, teacher)

    def fit_(self, student: torch.Tensor, teacher: torch.Tensor) -> float:
        """``EmbeddingDistillationLoss.fit_`` of the projection."""
        return self.embedding.fit_(student, teacher)


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
        if b > 0:
            anchor, positive, negative = embeddings[:b], embeddings[b : 2 * b], embeddings[2 * b :]
            contrastive = self.contrastive(anchor, positive, negative if negative.shape[0] else None)
            loss = self.contrastive_weight * contrastive
            parts = {"contrastive": contrastive.detach()}
        else:  # a batch of single texts (teacher-target distillation): no pairs to contrast
            loss = embeddings.new_zeros((), dtype=torch.float32)
            parts = {}
        if self.distill is not None and teacher_embeddings is not None:
            distill = self.distill(embeddings, teacher_embeddings)
            loss = loss + self.distill_weight * distill
            parts["distill"] = distill.detach()
        return loss, parts


# ---------------------------------------------------------------------------------------------------------------
# Gradient caching: a contrastive batch larger than what fits through the encoder with gradients at once
# ---------------------------------------------------------------------------------------------------------------


class _RngState:
    """The RNG state before a mini-batch's first forward, so the second forward draws the same dropout masks."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.get_rng_state()
        self.accel = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    @contextlib.contextmanager
    def restored(self):
        with torch.random.fork_rng(devices=[self.device] if self.accel is not None else [], device_type="cuda"):
            torch.set_rng_state(self.cpu)
            if self.accel is not None:
                torch.cuda.set_rng_state(self.accel, self.device)
            yield


class GradientCache:
    """Gradient caching (Gao et al. 2021; sentence-transformers' ``CachedMultipleNegativesRankingLoss``).

    A contrastive loss over N texts needs all N embeddings at once, but only ``mini_batch_size`` texts need to go
    through the encoder with gradients at a time:

    1. ``loss(...)`` embeds the batch in mini-batches without gradients, then computes the loss on the full
       batch of (detached, grad-requiring) embeddings;
    2. ``backward(loss)`` backpropagates the loss to those embeddings (and to the loss's own parameters), then
       re-runs each mini-batch with gradients, from the same RNG state (same dropout masks), and backpropagates
       the cached embedding gradients through it.

    The parameter gradients equal those of the full batch computed at once (up to float rounding); peak
    activation memory is that of one mini-batch. ``encode(input_ids, attention_mask) -> [n, C]``; each
    mini-batch is trimmed to its own longest row (right padding).

        cache = GradientCache(lambda ids, mask: model(input_ids=ids, attention_mask=mask).pooler_output, 32)
        loss, parts = cache.loss(embedder_loss, input_ids, attention_mask, num_pairs)
        cache.backward(loss)                      # or cache.backward(loss, accelerator.backward)
    """

    def __init__(self, encode, mini_batch_size: int):
        if mini_batch_size < 1:
            raise ValueError(f"mini_batch_size must be >= 1, got {mini_batch_size}")
        self.encode = encode
        self.mini_batch_size = mini_batch_size
        self._pending = None

    def _chunks(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        for start in range(0, input_ids.shape[0], self.mini_batch_size):
            ids = input_ids[start : start + self.mini_batch_size]
            mask = attention_mask[start : start + self.mini_batch_size]
            width = int(mask.sum(dim=1).max())
            if width > 0 and bool((mask[:, width:] == 0).all()):  # right padding only: trim it
                ids, mask = ids[:, :width], mask[:, :width]
            yield slice(start, start + ids.shape[0]), ids, mask

    def loss(self, loss_fn, input_ids: torch.Tensor, attention_mask: torch.Tensor, *args, **kwargs):
        """Embed without gradients, then ``loss_fn(embeddings, *args, **kwargs)`` on the whole batch."""
        chunks, embeddings = [], []
        with torch.no_grad():
            for rows, ids, mask in self._chunks(input_ids, attention_mask):
                state = _RngState(ids.device)
                embeddings.append(self.encode(ids, mask))
                chunks.append((rows, ids, mask, state))
        cached = torch.cat(embeddings).detach().requires_grad_(True)
        self._pending = (cached, chunks)
        return loss_fn(cached, *args, **kwargs)

    def backward(self, loss: torch.Tensor, backward=None) -> None:
        """Backpropagate `loss` (from the last ``loss`` call) through the encoder, one mini-batch at a time.

        ``backward``: how to backpropagate the loss itself (default ``loss.backward()``; pass
        ``accelerator.backward`` for mixed-precision loss scaling). The mini-batch passes reuse its gradients as
        they are, so a scaled loss gives consistently scaled parameter gradients.
        """
        if self._pending is None:
            raise RuntimeError("GradientCache.backward: call loss(...) first")
        cached, chunks = self._pending
        self._pending = None
        (backward or torch.Tensor.backward)(loss)
        if cached.grad is None:
            return  # the loss does not depend on the embeddings
        grad = cached.grad
        for rows, ids, mask, state in chunks:
            with state.restored():
                emb = self.encode(ids, mask)
            torch.autograd.backward(emb, grad_tensors=grad[rows].to(emb.dtype))


# ---------------------------------------------------------------------------------------------------------------
# The same losses as sentence-transformers losses (SentenceTransformerTrainer)
# ---------------------------------------------------------------------------------------------------------------


def _embed_columns(model, sentence_features) -> list[torch.Tensor]:
    """One embedding tensor per input column, as sentence-transformers' own losses compute them."""
    try:  # sentence-transformers >= 6: one merged forward for columns that tokenise alike
        from sentence_transformers.base.losses.merged_forward import embed_columns
    except ImportError:
        return [model(features)["sentence_embedding"] for features in sentence_features]
    return embed_columns(model, list(sentence_features))


class STInfoNCELoss(nn.Module):
    """`InfoNCELoss` (learnable temperature, symmetric, hard negatives) as a sentence-transformers loss.

    Columns: (anchor, positive) or (anchor, positive, negative_1, ..., negative_n); no labels. Every negative
    column joins the candidates of every anchor, like ``MultipleNegativesRankingLoss``; unlike it, the
    temperature is learned (it is a parameter of this loss, which ``SentenceTransformerTrainer`` optimises
    together with the model) and the loss is symmetric by default.

        loss = STInfoNCELoss(model, temperature=0.05)
        SentenceTransformerTrainer(model=model, train_dataset=pairs, loss=loss).train()
    """

    def __init__(self, model, temperature: float = 0.05, learnable: bool = True, min_temperature: float = 0.01,
                 max_temperature: float = 1.0, symmetric: bool = True):
        super().__init__()
        self.model = model
        self.info_nce = InfoNCELoss(temperature, learnable, min_temperature, max_temperature, symmetric)

    @property
    def temperature(self) -> torch.Tensor:
        return self.info_nce.temperature

    def forward(self, sentence_features, labels: torch.Tensor | None = None) -> torch.Tensor:
        embeddings = _embed_columns(self.model, sentence_features)
        if len(embeddings) < 2:
            raise ValueError(f"STInfoNCELoss needs (anchor, positive[, negatives...]) columns, got {len(embeddings)}")
        anchor, positive, *negatives = embeddings
        return self.info_nce(anchor, positive, torch.cat(negatives) if negatives else None)

    def get_config_dict(self) -> dict:
        return {"temperature": float(self.temperature.detach()),
                "learnable": self.info_nce.log_temperature.requires_grad, "symmetric": self.info_nce.symmetric}

    @property
    def citation(self) -> str:
        return """
@article{oord2018cpc,
  title   = {Representation Learning with Contrastive Predictive Coding},
  author  = {van den Oord, Aaron and Li, Yazhe and Vinyals, Oriol},
  journal = {arXiv preprint arXiv:1807.03748},
  year    = {2018},
}
"""


class STSimilarityDistillationLoss(nn.Module):
    """`SimilarityDistillationLoss` as a sentence-transformers loss: the student's in-batch cosine similarities
    are pulled onto the teacher's.

    Like sentence-transformers' ``MSELoss``, the teacher's embeddings are precomputed into the dataset's
    ``label`` column (``dataset.map(lambda b: {"label": teacher.encode(b["text"])}, batched=True)``); the
    teacher's width need not match the student's. Labels [B, Ct] with several text columns: every column is
    compared with the same teacher embeddings (the similarity matrix covers all columns' texts); labels
    [B, columns, Ct]: one teacher embedding per column.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.distill = SimilarityDistillationLoss()

    def forward(self, sentence_features, labels: torch.Tensor) -> torch.Tensor:
        if labels is None:
            raise ValueError("STSimilarityDistillationLoss needs the teacher's embeddings in a 'label' column")
        embeddings = _embed_columns(self.model, sentence_features)
        labels = labels.detach()
        if labels.dim() == 2:
            teacher = [labels] * len(embeddings)
        elif labels.dim() == 3 and labels.shape[1] == len(embeddings):
            teacher = [labels[:, i] for i in range(labels.shape[1])]
        else:
            raise ValueError(f"labels of shape {tuple(labels.shape)} do not fit {len(embeddings)} text column(s): "
                             "expected [batch, teacher_dim] or [batch, columns, teacher_dim]")
        return self.distill(torch.cat(embeddings), torch.cat(teacher))

    def get_config_dict(self) -> dict:
        return {}
