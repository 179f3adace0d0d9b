"""Load a saved hf_attn model: the one low-level reader that export, its checks and the ONNX export build on.

`resolve_checkpoint` finds the model folder (a ``save_pretrained`` / sentence-transformers folder, or a training
run's ``best_model/``); `load_exported_model` loads it with hf_attn's own classes (no remote code);
`uses_normalize` says whether its sentence-transformers pipeline ends in a ``Normalize`` module.

Import direction: this module imports only the registry. ``hub`` (export), ``export_check`` (the no-hf_attn
verification) and ``onnx_export`` import it, never each other, so no import cycle hides behind a function-level
import. (Not to be confused with ``training.checkpoint.load_checkpoint``, which resumes Accelerate training state.)
"""

from __future__ import annotations

import json
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model")


def resolve_checkpoint(checkpoint_dir: str | Path) -> Path:
    """The folder holding config.json: `checkpoint_dir` itself, or the ``best_model/`` of a training run."""
    path = Path(checkpoint_dir)
    if (path / "config.json").is_file():
        return path
    if (path / "best_model" / "config.json").is_file():
        return path / "best_model"
    if (path / "trainer_state.json").is_file():
        raise FileNotFoundError(
            f"{path} is a training-state checkpoint (for resuming), not a model; export the run's best_model/ folder"
        )
    raise FileNotFoundError(
        f"no model in {path}: expected config.json (a save_pretrained folder or a run's best_model/)"
    )


def model_type_of(folder: str | Path) -> str | None:
    """``model_type`` from a model folder's config.json (reads nothing else)."""
    return json.loads((Path(folder) / "config.json").read_text()).get("model_type")


def load_exported_model(checkpoint_dir: str | Path):
    """(model in eval mode, tokenizer or None, model_type) from a save_pretrained / sentence-transformers folder
    or a run's output folder, loaded with hf_attn's classes (``registry.get(model_type).export_class``)."""
    from .registry import get

    path = resolve_checkpoint(checkpoint_dir)
    model_type = model_type_of(path)
    model = get(model_type).export_class.from_pretrained(str(path)).eval()
    tokenizer = None
    if any((path / f).is_file() for f in TOKENIZER_FILES):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path))
    return model, tokenizer, model_type


def uses_normalize(folder: str | Path) -> bool:
    """Whether the sentence-transformers pipeline saved in `folder` (modules.json) L2-normalises its output."""
    modules = Path(folder) / "modules.json"
    return modules.is_file() and any(m.get("type", "").endswith("Normalize") for m in json.loads(modules.read_text()))


__all__ = ["TOKENIZER_FILES", "load_exported_model", "model_type_of", "resolve_checkpoint", "uses_normalize"]
