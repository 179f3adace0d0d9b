"""``train_lm`` (recipes/train_lm.py) and the attention comparison (recipes/compare_attention.py), one job per module:

- ``args``: ``LMTrainingArguments``, the flags and ``--quick``;
- ``data``: byte-level splits and batches;
- ``eval``: loss, bpc, perplexity, peak memory, attention entropy, spans;
- ``loop``: the model, the step, the loop and the command line;
- ``compare``: one small LM per attention variant x positional encoding.

The names of ``loop`` (``train_lm``, ``main``, ``build_lm_model``, ...) are importable from here, loaded on first use.
"""

_LOOP = ("LM_MODEL", "build_lm_model", "evaluate_and_save", "initial_state", "lm_step", "lm_summary", "main",
         "train_lm")


def __getattr__(name):
    if name in _LOOP:
        from . import loop

        return getattr(loop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LOOP)
