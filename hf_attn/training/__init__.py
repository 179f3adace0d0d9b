"""What the recipes share, and the recipes themselves, one folder per job.

Shared (here):
- ``args``: arguments dataclasses <-> flags (both ``--foo-bar`` and ``--foo_bar``) <-> ``--config`` YAML, ``--quick``.
- ``common``: the run's Accelerator and trackers, the finite-loss check, the progress bar, the summary file.
- ``data``: Hub ids / local csv, jsonl, parquet (.gz) -> rows and texts; which file is broken and why.
- ``tokenizer``: train WordPiece / BPE, save and reuse as ``PreTrainedTokenizerFast``.
- ``optim``: AdamW or Muon + AdamW, warmup then decay.
- ``checkpoint``: atomic ``accelerator.save_state`` checkpoints and folders, verified resume.
- ``trackers``: ``--report-to`` checked before a run starts.

Jobs:
- ``embed``: ``train_embedder`` (recipes/train_embed.py): ``args``, ``pairs``, ``data``, ``teacher``, ``distill``,
  ``losses``, ``eval``, ``loop``.
- ``lm``: ``train_lm`` (recipes/train_lm.py): ``args``, ``data``, ``eval``, ``loop``, and ``compare``, the attention
  x position comparison (recipes/compare_attention.py).

Submodules import lazily so that ``import hf_attn.training`` stays light.
"""

__all__ = ["args", "checkpoint", "common", "data", "embed", "lm", "optim", "tokenizer", "trackers"]
