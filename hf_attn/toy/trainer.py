"""Train the readable attention modules on a task that cannot be solved without attention: reversing a sequence.

The model sees a sequence of random symbols ``x_0 .. x_{T-1}`` and must output ``x_{T-1} .. x_0``. Each output
position ``i`` needs the input at position ``T-1-i``, which only attention can fetch (the rest of the model works
on each position separately). A trained model's attention map is therefore an anti-diagonal, which makes the
heatmaps easy to read.

    tokens [B, T] -> token embedding + position embedding [B, T, C]
                  -> attention (SelfAttention or MultiHeadAttention) + residual
                  -> LayerNorm -> MLP -> logits [B, T, vocab]
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadAttention, SelfAttention

MODEL_TYPES = ("selfhead", "multihead")


@dataclass
class ToyConfig:
    """Everything needed to rebuild a toy model and its data (saved with the weights).

    The first eight fields are the seed's command-line options, with its defaults.
    """

    model: str = "multihead"
    embed_dim: int = 64
    num_heads: int = 8
    learning_rate: float = 0.001
    batch_size: int = 32
    seq_length: int = 10
    epochs: int = 100
    vocab_size: int = 10  # number of distinct symbols in the sequences
    num_train: int = 2000  # training sequences
    num_val: int = 500  # validation sequences
    seed: int = 0

    def validate(self) -> None:
        if self.model not in MODEL_TYPES:
            raise ValueError(f"model must be one of {', '.join(MODEL_TYPES)}, got {self.model!r}")
        for name in (
            "embed_dim",
            "num_heads",
            "batch_size",
            "seq_length",
            "epochs",
            "vocab_size",
            "num_train",
            "num_val",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.model == "multihead" and self.embed_dim % self.num_heads != 0:
            raise ValueError(
                f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads}) for the multihead "
                f"model: each head gets embed_dim / num_heads dimensions"
            )
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")


def make_reversal_data(num: int, seq_length: int, vocab_size: int, generator: torch.Generator):
    """Random sequences and their reversals: (inputs [num, T] long, targets [num, T] long)."""
    inputs = torch.randint(0, vocab_size, (num, seq_length), generator=generator)
    return inputs, inputs.flip(-1)


class ToySequenceModel(nn.Module):
    """Embeddings, one attention layer, and a per-position classifier over the symbols."""

    def __init__(self, config: ToyConfig):
        super().__init__()
        C = config.embed_dim
        self.token_embedding = nn.Embedding(config.vocab_size, C)
        # Positions must be visible to attention: reversal is a rule about *where* to look, not *what* is there.
        self.position_embedding = nn.Embedding(config.seq_length, C)
        if config.model == "selfhead":
            self.attention = SelfAttention(C)
        else:
            self.attention = MultiHeadAttention(C, config.num_heads)
        self.norm = nn.LayerNorm(C)
        self.mlp = nn.Sequential(nn.Linear(C, 2 * C), nn.GELU(), nn.Linear(2 * C, C))
        self.classifier = nn.Linear(C, config.vocab_size)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, T] -> (logits [B, T, vocab], attention weights [B, H, T, T])."""
        T = tokens.shape[1]
        positions = torch.arange(T, device=tokens.device)
        h = self.token_embedding(tokens) + self.position_embedding(positions)  # [B, T, C]
        attended, weights = self.attention(h)
        h = self.norm(h + attended)
        h = h + self.mlp(h)
        return self.classifier(h), weights


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    val_sequence_accuracy: float
    seconds: float


class AttentionTrainer:
    """Builds the toy model and its data from a `ToyConfig`, trains it, evaluates, saves, loads and plots.

    Accuracy is per symbol (fraction of output positions right); ``sequence_accuracy`` counts whole sequences.
    """

    def __init__(self, config: ToyConfig | None = None, device: str | torch.device = "cpu", **overrides):
        config = config or ToyConfig()
        if overrides:
            config = ToyConfig(**{**asdict(config), **overrides})
        config.validate()
        self.config = config
        self.device = torch.device(device)
        torch.manual_seed(config.seed)
        self.model = ToySequenceModel(config).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.learning_rate)
        # Train and validation data come from separate seeded generators, so a loaded model sees the same
        # validation set it was evaluated on when it was saved.
        g_train = torch.Generator().manual_seed(config.seed)
        g_val = torch.Generator().manual_seed(config.seed + 1_000_003)
        self.train_data = make_reversal_data(config.num_train, config.seq_length, config.vocab_size, g_train)
        self.val_data = make_reversal_data(config.num_val, config.seq_length, config.vocab_size, g_val)
        self.history: list[EpochResult] = []

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def _batches(self, data, shuffle: bool, generator: torch.Generator | None = None):
        inputs, targets = data
        order = torch.randperm(len(inputs), generator=generator) if shuffle else torch.arange(len(inputs))
        for start in range(0, len(inputs), self.config.batch_size):
            idx = order[start : start + self.config.batch_size]
            yield inputs[idx].to(self.device), targets[idx].to(self.device)

    def train(self, epochs: int | None = None, log: Callable[[str], None] | None = print) -> list[EpochResult]:
        """Run `epochs` epochs (default: the config's), printing one line per epoch through `log`."""
        epochs = self.config.epochs if epochs is None else epochs
        g = torch.Generator().manual_seed(self.config.seed + len(self.history))
        last_epoch = len(self.history) + epochs
        width = len(str(last_epoch))
        for _ in range(epochs):
            start = time.perf_counter()
            self.model.train()
            total_loss, correct, count = 0.0, 0, 0
            for x, y in self._batches(self.train_data, shuffle=True, generator=g):
                logits, _ = self.model(x)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                total_loss += loss.item() * y.numel()
                correct += (logits.argmax(-1) == y).sum().item()
                count += y.numel()
            val = self.evaluate()
            result = EpochResult(
                epoch=len(self.history) + 1,
                train_loss=total_loss / count,
                train_accuracy=correct / count,
                val_loss=val["loss"],
                val_accuracy=val["accuracy"],
                val_sequence_accuracy=val["sequence_accuracy"],
                seconds=time.perf_counter() - start,
            )
            self.history.append(result)
            if log is not None:
                log(
                    f"epoch {result.epoch:{width}d}/{last_epoch} "
                    f"train loss {result.train_loss:.4f} acc {result.train_accuracy:.3f} | "
                    f"val loss {result.val_loss:.4f} acc {result.val_accuracy:.3f} "
                    f"seq acc {result.val_sequence_accuracy:.3f} | {result.seconds:.2f}s"
                )
        return self.history

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss, per-symbol accuracy and whole-sequence accuracy."""
        self.model.eval()
        total_loss, correct, count, seq_correct, seqs = 0.0, 0, 0, 0, 0
        for x, y in self._batches(self.val_data, shuffle=False):
            logits, _ = self.model(x)
            total_loss += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
            hit = logits.argmax(-1) == y
            correct += hit.sum().item()
            count += y.numel()
            seq_correct += hit.all(-1).sum().item()
            seqs += y.shape[0]
        return {"loss": total_loss / count, "accuracy": correct / count, "sequence_accuracy": seq_correct / seqs}

    # ---- persistence ------------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the weights, the config (the run's arguments) and the history to one ``torch.save`` file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "format": "hf_attn.toy/1",
                "config": asdict(self.config),
                "state_dict": self.model.state_dict(),
                "history": [asdict(r) for r in self.history],
            },
            path,
        )
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "AttentionTrainer":
        """Rebuild a trainer (model, data, history) from a file written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no saved toy model at {path}")
        not_toy = f"{path} is not a model saved by `hf-attn toy --save_path`"
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - pickle, zip and torch errors alike: the file is not ours or damaged
            raise ValueError(
                f"{not_toy} (or it is truncated/corrupt: {type(e).__name__}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else 'unreadable'})"
            ) from None
        if not isinstance(ckpt, dict) or ckpt.get("format") != "hf_attn.toy/1":
            raise ValueError(not_toy)
        try:
            trainer = cls(ToyConfig(**ckpt["config"]), device=device)
            trainer.model.load_state_dict(ckpt["state_dict"])
            trainer.history = [EpochResult(**r) for r in ckpt.get("history", [])]
        except (KeyError, TypeError, RuntimeError) as e:
            raise ValueError(
                f"{path}: a toy checkpoint whose contents do not fit this version's model "
                f"({type(e).__name__}: {str(e).splitlines()[0]})"
            ) from None
        return trainer

    # ---- attention maps ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def attention_maps(self, index: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For validation example `index`: (input tokens [T], predicted tokens [T], weights [H, T, T])."""
        self.model.eval()
        x = self.val_data[0][index : index + 1].to(self.device)
        logits, weights = self.model(x)
        return x[0].cpu(), logits.argmax(-1)[0].cpu(), weights[0].cpu()

    def plot_attention(self, out_dir: str | Path, index: int = 0) -> list[Path]:
        """Save one PNG heatmap per head for validation example `index`; returns the paths."""
        import matplotlib

        matplotlib.use("Agg")  # files only; never needs a display
        import matplotlib.pyplot as plt

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tokens, predicted, weights = self.attention_maps(index)
        # Tick labels "position:symbol", so both where a head looks and what it finds there are visible.
        labels_in = [f"{i}:{t}" for i, t in enumerate(tokens.tolist())]
        labels_out = [f"{i}:{t}" for i, t in enumerate(predicted.tolist())]
        paths = []
        for h in range(weights.shape[0]):
            fig, ax = plt.subplots(figsize=(4.8, 4.2))
            im = ax.imshow(weights[h].numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_xticks(range(len(labels_in)), labels_in)
            ax.set_yticks(range(len(labels_out)), labels_out)
            ax.set_xlabel("key = input position:symbol")
            ax.set_ylabel("query = output position:predicted symbol")
            ax.set_title(f"{self.config.model}: head {h} of {weights.shape[0]}")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="attention weight")
            fig.tight_layout()
            path = out_dir / f"attention_head_{h}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            paths.append(path)
        return paths


__all__ = ["AttentionTrainer", "EpochResult", "MODEL_TYPES", "ToyConfig", "ToySequenceModel", "make_reversal_data"]
