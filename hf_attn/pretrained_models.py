"""Ready models: ``hf_attn.pretrained()`` lists them, ``hf_attn.pretrained_path(name)`` finds one that ships inside
the package, ``hf_attn.load_model(name)`` loads it offline.

The list is ``hf_attn/shipped_models/index.json`` (package data)::

    {"models": [{"name": "tan-...", "description": "...", "recipe": "the command that trains it",
                 "folder": "tan-..."}]}            # shipped: hf_attn/shipped_models/tan-.../ is an export folder
                {"name": "...", "description": "...", "recipe": "...", "scores": {"...": 0.8}}   # listed only

A shipped model's scores are read from its own card (the model-index `hf-attn export` wrote from measured
results), so the list cannot disagree with the model.
"""

from __future__ import annotations

import json
from pathlib import Path

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped_models"


def _entries() -> list[dict]:
    index = SHIPPED_DIR / "index.json"
    return json.loads(index.read_text())["models"] if index.is_file() else []


def _card_scores(folder: Path) -> dict[str, float]:
    """``{"<dataset> <split> <metric>": value}`` from the model-index of an export folder's README.md."""
    readme = folder / "README.md"
    if not readme.is_file():
        return {}
    from huggingface_hub import ModelCard

    results = ModelCard.load(readme).data.eval_results or []
    return {f"{r.dataset_name} {r.dataset_split} {r.metric_type}": r.metric_value for r in results}


def pretrained() -> list[dict]:
    """The ready models: ``name``, ``description``, ``shipped`` (inside the package, loads offline), ``path``
    (shipped ones), ``scores`` (measured; a shipped model's come from its card) and ``recipe`` (how to train it)."""
    out = []
    for entry in _entries():
        folder = SHIPPED_DIR / entry["folder"] if entry.get("folder") else None
        shipped = folder is not None and (folder / "config.json").is_file()
        out.append({
            "name": entry["name"],
            "description": entry.get("description", ""),
            "shipped": shipped,
            "path": str(folder) if shipped else None,
            "scores": _card_scores(folder) if shipped else dict(entry.get("scores") or {}),
            "recipe": entry.get("recipe"),
        })
    return out


def shipped_names() -> list[str]:
    return [m["name"] for m in pretrained() if m["shipped"]]


def pretrained_path(name: str) -> Path:
    """The folder of the shipped model `name` (for ``SentenceTransformer(hf_attn.pretrained_path(name))`` or
    ``AutoModel.from_pretrained(..., trust_remote_code=True)``). A listed model that does not ship raises
    FileNotFoundError with the command that trains it; an unknown name, one listing the known ones."""
    for model in pretrained():
        if model["name"] == name:
            if not model["shipped"]:
                raise FileNotFoundError(f"{name} does not ship with hf_attn; train it with: {model['recipe']}")
            return Path(model["path"])
    known = ", ".join(m["name"] for m in pretrained()) or "none yet"
    raise KeyError(f"no pretrained hf_attn model named {name!r}; hf_attn.pretrained() lists them ({known})")


__all__ = ["SHIPPED_DIR", "pretrained", "pretrained_path", "shipped_names"]
