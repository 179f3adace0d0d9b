"""hf_attn: compact, efficient attention models for the Hugging Face ecosystem.

Importing the package registers, once:
- the attention backends ``hf_local``, ``hf_linear``, ``hf_topk``, ``hf_blockwise`` with transformers'
  ``AttentionInterface`` (select them with ``attn_implementation=...``);
- the configs and models of ``hf_attn.registry`` with the Auto classes.
"""

__version__ = "0.1.0"

from .attention import register_attention_backends
from .modeling import *  # noqa: F403  (the configuration and model classes, listed in modeling.__all__)
from .modeling import __all__ as _MODEL_CLASSES
from .registry import register_auto_classes

register_attention_backends()
register_auto_classes()


def __getattr__(name):
    # Heavier entry points (sentence-transformers, MTEB, hub) load on first use, not at `import hf_attn`.
    if name in ("load_model", "save_sentence_transformer"):
        from . import embedding

        return getattr(embedding, name)
    if name in ("pretrained", "pretrained_path"):
        from . import pretrained_models

        return getattr(pretrained_models, name)
    raise AttributeError(f"module 'hf_attn' has no attribute {name!r}")


# load_model, save_sentence_transformer, pretrained and pretrained_path resolve through __getattr__ above.
__all__ = [*_MODEL_CLASSES, "load_model", "pretrained", "pretrained_path",  # noqa: F405
           "save_sentence_transformer", "__version__"]  # noqa: F405
