"""``train_embedder`` (recipes/train_embed.py), one job per module:

- ``args``: ``EmbedTrainingArguments``, the flags and ``--quick``;
- ``data``: the training examples, the run's tokenizer and the DataLoader;
- ``teacher``: the distillation teacher (loading, in the step, the student's start from it); ``distill``: its
  targets for a sentence pool computed once and cached, static token vectors;
- ``losses``: InfoNCE, distillation, gradient caching (and their sentence-transformers forms);
- ``eval``: the scores checkpoints are selected on, STS-B dev beside them, the best model;
- ``loop``: the model, the step, the loop, the size sweep and the command line.

The names of ``loop`` (``train_embedder``, ``main``, ``EmbedderTrainingModule``, ...) are importable from here,
loaded on first use.
"""

_LOOP = ("EmbedStep", "EmbedderTrainingModule", "SWEEP_COLUMNS", "build_loss", "build_model", "dump_final_weights",
         "embed_summary", "fit_distillation_projection", "log_train_step", "main", "resumable_batches",
         "run_size_sweep", "train_embedder", "warn_if_dropout_pairs_are_identical", "write_results_table")


def __getattr__(name):
    if name in _LOOP:
        from . import loop

        return getattr(loop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LOOP)
