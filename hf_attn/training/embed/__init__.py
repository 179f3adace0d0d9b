"""``train_embedder`` (recipes/train_embed.py), one job per module:

- ``args``: ``EmbedTrainingArguments``, the flags and ``--quick``;
- ``data``: the training examples, the run's tokenizer and the DataLoader;
- ``teacher``: the distillation teacher (loading, in the step, the student's start from it); ``distill``: its
  targets for a sentence pool computed once and cached, static token vectors;
- ``losses``: InfoNCE, distillation, gradient caching (and their sentence-transformers forms);
- ``eval``: the scores checkpoints are selected on, STS-B dev beside them, the best model;
- ``step``: the encoder and its loss as one module, one optimizer step, the batches in a resumable order;
- ``loop``: the run (the steps, evaluation, checkpoints, summary), the size sweep and the command line.

The names of ``loop`` and ``step`` (``train_embedder``, ``main``, ``EmbedderTrainingModule``, ...) are importable
from here, loaded on first use.
"""

_STEP = ("EmbedStep", "EmbedderTrainingModule", "build_loss", "build_model", "resumable_batches")
_LOOP = ("SWEEP_COLUMNS", "dump_final_weights", "embed_summary", "fit_distillation_projection", "initial_state",
         "log_train_step", "main", "run_size_sweep", "train_embedder", "train_steps",
         "warn_if_dropout_pairs_are_identical", "write_results_table")


def __getattr__(name):
    if name in _LOOP or name in _STEP:
        from . import loop, step

        return getattr(loop if name in _LOOP else step, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [*_STEP, *_LOOP]
