"""What the recipes share: data loading, tokenizer training, losses, optimizers, training loops.

- ``data``: Hub ids / local csv, jsonl, parquet (.gz) -> (anchor, positive[, hard negative]) pairs; raw text ->
  unsupervised pairs.
- ``tokenizer``: train WordPiece / BPE, save and reuse as ``PreTrainedTokenizerFast``.
- ``losses``: InfoNCE (bidirectional, learnable clamped temperature), distillation.
- ``optim``: AdamW or Muon + AdamW, warmup then decay.
- ``checkpoint``: atomic ``accelerator.save_state`` checkpoints.
- ``embed``: ``EmbedTrainingArguments``, ``train_embedder`` (recipes/train_embed.py).
- ``lm``: byte-level LM data and ``train_lm`` (recipes/train_lm.py).
- ``compare``: the attention x position comparison (recipes/compare_attention.py).

Submodules import lazily so that ``import hf_attn.training`` stays light.
"""

__all__ = ["args", "checkpoint", "compare", "data", "embed", "lm", "losses", "optim", "tokenizer"]
