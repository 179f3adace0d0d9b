"""What the recipes share, and the recipes' training loops, one job per module.

Shared:
- ``args``: arguments dataclasses <-> flags (both ``--foo-bar`` and ``--foo_bar``) <-> ``--config`` YAML, ``--quick``.
- ``common``: the run's Accelerator and trackers, the finite-loss check, the progress bar, the summary file.
- ``data``: Hub ids / local csv, jsonl, parquet (.gz) -> (anchor, positive[, hard negative]) pairs; raw text ->
  unsupervised pairs.
- ``tokenizer``: train WordPiece / BPE, save and reuse as ``PreTrainedTokenizerFast``.
- ``losses``: InfoNCE (bidirectional, learnable clamped temperature), distillation, gradient caching.
- ``optim``: AdamW or Muon + AdamW, warmup then decay.
- ``checkpoint``: atomic ``accelerator.save_state`` checkpoints and folders, verified resume, the Hub push of a run.
- ``teacher``: the distillation teacher (loading, in-step, init from its tokens); ``distill``: its targets for a
  sentence pool computed once and cached, static token vectors.
- ``trackers``: ``--report-to`` checked before a run starts.

Recipes:
- ``embed``: ``train_embedder`` (recipes/train_embed.py), with ``embed_args`` (``EmbedTrainingArguments``),
  ``embed_data`` (pairs, tokenizer, DataLoader) and ``embed_eval`` (STS-B dev, best model).
- ``lm``: ``train_lm`` (recipes/train_lm.py), with ``lm_args`` (``LMTrainingArguments``), ``lm_data`` (byte
  splits and batches) and ``lm_eval`` (loss, bpc, perplexity, peak memory, attention entropy, spans).
- ``compare``: the attention x position comparison (recipes/compare_attention.py).

Submodules import lazily so that ``import hf_attn.training`` stays light.
"""

__all__ = ["args", "checkpoint", "common", "compare", "data", "distill", "embed", "embed_args", "embed_data",
           "embed_eval", "lm", "lm_args", "lm_data", "lm_eval", "losses", "optim", "teacher", "tokenizer", "trackers"]
