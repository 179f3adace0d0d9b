"""Sentence-transformers integration and the inference API.

Saved folder (:func:`save_sentence_transformer`) = a transformers remote-code model **and** a sentence-transformers
model::

    config.json  model.safetensors  configuration_*.py  modeling_*.py  layers.py ...   (model.save_pretrained)
    tokenizer.json  tokenizer_config.json ...                                        (tokenizer.save_pretrained)
    modules.json                       [0: Transformer (path "")] (+ [1: Normalize] when the model L2-normalises)
    sentence_bert_config.json          Transformer module config, see below
    config_sentence_transformers.json  similarity_fn_name = "cosine"
    1_Normalize/config.json            (only when present)

Design: our models pool inside (``pooler_output`` is the sentence embedding: TAN = mean + projection + tanh,
GQAEmbedder = mean + projection + L2 norm). Instead of re-implementing pooling in a ``Pooling`` module (which would
have to duplicate the projection), the sentence-transformers v6 ``Transformer`` module is configured to return the
model's own ``pooler_output`` as the sentence embedding::

    "modality_config": {"text": {"method": "forward", "method_output_name": "pooler_output"}},
    "module_output_name": "sentence_embedding"

so ``SentenceTransformer(path, trust_remote_code=True).encode(texts)`` runs exactly the model's forward and returns
its ``pooler_output`` -- no custom module code in the folder, nothing beyond torch / transformers /
sentence-transformers needed. For architectures whose embedding is L2-normalised (GQAEmbedder) a ``Normalize``
module follows; it is idempotent on an already normalised vector and documents the geometry to ST tooling.

The embedding width is recorded as ``projection_dim`` in config.json (sentence-transformers reads that attribute
for ``get_sentence_embedding_dimension()`` when a Transformer module outputs sentence embeddings).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

logger = logging.getLogger(__name__)

ST_TRANSFORMER = "sentence_transformers.sentence_transformer.modules.Transformer"
ST_NORMALIZE = "sentence_transformers.sentence_transformer.modules.Normalize"


def _embedding_dim(model) -> int:
    config = model.config
    for attr in ("embedding_size", "projection_dim", "embedding_dim", "hidden_size"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError(f"cannot determine the embedding width of {type(model).__name__} from its config")


def _is_normalised(model) -> bool:
    config = model.config
    for attr in ("normalize_embeddings", "normalize", "l2_normalize"):
        if isinstance(getattr(config, attr, None), bool):
            return getattr(config, attr)
    from .registry import MODELS

    entry = MODELS.get(getattr(config, "model_type", ""))
    return entry.normalized_output if entry else False


def _default_max_seq_length(model, tokenizer) -> int | None:
    """The smaller of the tokenizer's ``model_max_length`` and the model's position limit (None: neither known)."""
    model_limit = getattr(model.config, "max_sequence_length", None)  # e.g. GQAEmbedder with YaRN scaling
    if not isinstance(model_limit, int):
        model_limit = getattr(model.config, "max_position_embeddings", None)
    limits = [getattr(tokenizer, "model_max_length", None), model_limit]
    limits = [v for v in limits if isinstance(v, int) and 0 < v < 1_000_000]
    return min(limits) if limits else None


def save_sentence_transformer(
    model,
    tokenizer,
    path: str | os.PathLike,
    max_seq_length: int | None = None,
    normalize: bool | None = None,
    safe_serialization: bool = True,
) -> Path:
    """Write ``path`` as both a transformers remote-code model and a sentence-transformers model.

    ``model``: a hf_attn embedding model (``pooler_output`` = sentence embedding), registered for remote code.
    ``tokenizer``: a ``PreTrainedTokenizerFast`` (or any transformers tokenizer).
    ``max_seq_length``: truncation length for sentence-transformers; default: the smaller of the tokenizer's
    ``model_max_length`` and ``config.max_position_embeddings``.
    ``normalize``: append a ``Normalize`` module; default: as the architecture defines (GQAEmbedder yes, TAN no).
    Returns the folder path.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"save_sentence_transformer: {path} is a file, not a folder (pass a folder path; it "
                                 "is created if missing)")
    path.mkdir(parents=True, exist_ok=True)
    dim = _embedding_dim(model)
    if getattr(model.config, "projection_dim", None) != dim:
        model.config.projection_dim = dim  # read by sentence-transformers' get_sentence_embedding_dimension()
    model.save_pretrained(str(path), safe_serialization=safe_serialization)
    tokenizer.save_pretrained(str(path))

    if max_seq_length is None:
        max_seq_length = _default_max_seq_length(model, tokenizer)
    normalize = _is_normalised(model) if normalize is None else normalize

    st_config: dict[str, Any] = {
        "transformer_task": "feature-extraction",
        "modality_config": {"text": {"method": "forward", "method_output_name": "pooler_output"}},
        "module_output_name": "sentence_embedding",
    }
    if max_seq_length is not None:
        st_config["max_seq_length"] = int(max_seq_length)
    (path / "sentence_bert_config.json").write_text(json.dumps(st_config, indent=4))

    modules = [{"idx": 0, "name": "0", "path": "", "type": ST_TRANSFORMER}]
    if normalize:
        norm_dir = path / "1_Normalize"
        norm_dir.mkdir(exist_ok=True)
        (norm_dir / "config.json").write_text(json.dumps(
            {"module_input_name": "sentence_embedding", "module_output_name": "sentence_embedding"}, indent=4))
        modules.append({"idx": 1, "name": "1", "path": "1_Normalize", "type": ST_NORMALIZE})
    elif (path / "1_Normalize").is_dir():  # left by an earlier, normalising model saved here
        import shutil

        shutil.rmtree(path / "1_Normalize")
    (path / "modules.json").write_text(json.dumps(modules, indent=2))

    import sentence_transformers
    import torch
    import transformers

    versions = {"sentence_transformers": sentence_transformers.__version__, "transformers": transformers.__version__,
                "pytorch": torch.__version__}
    (path / "config_sentence_transformers.json").write_text(json.dumps(
        {"model_type": "SentenceTransformer", "__version__": versions, "prompts": {}, "default_prompt_name": None,
         "similarity_fn_name": "cosine"}, indent=2))
    from .integrity import write_manifest

    write_manifest(path)  # last: load_model checks every file against it
    return path


# ------------------------------------------------------------------------------------------------ loading
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "tokenizer.model",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def _check_local_folder(folder: Path) -> None:
    """Raise FileNotFoundError naming the first missing file of a local sentence-transformers / transformers folder."""
    if not folder.exists():
        raise FileNotFoundError(f"model folder {folder} does not exist (no such path; check its spelling)")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is a file, not a model folder (pass the folder that holds config.json)")
    modules_json = folder / "modules.json"
    roots = [folder]
    if modules_json.is_file():
        try:
            modules = json.loads(modules_json.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{modules_json} is not valid JSON: {e}") from e
        roots = []
        for m in modules:
            sub = folder / m.get("path", "")
            if m.get("type", "").endswith("Transformer"):
                roots.append(sub)
            elif m.get("type", "").endswith(("Pooling", "Dense")) and not (sub / "config.json").is_file():
                raise FileNotFoundError(
                    f"missing file {sub / 'config.json'} (module {m.get('type')} in {modules_json})"
                )
    for root in roots:
        if not (root / "config.json").is_file():
            raise FileNotFoundError(f"missing file {root / 'config.json'} (the transformers model config)")
        if not any((root / f).is_file() for f in _WEIGHT_FILES):
            raise FileNotFoundError(
                f"missing file {root / 'model.safetensors'} (model weights; none of {_WEIGHT_FILES})"
            )
        if not any((root / f).is_file() for f in _TOKENIZER_FILES):
            raise FileNotFoundError(f"missing file {root / 'tokenizer.json'} (tokenizer; none of {_TOKENIZER_FILES})")
        _check_files_whole(root)
        _check_manifest(folder)
        config = json.loads((root / "config.json").read_text())
        for ref in (config.get("auto_map") or {}).values():
            ref = ref[0] if isinstance(ref, (list, tuple)) else ref
            if ref and "--" not in ref:  # "module.Class" -> module.py must be in the folder
                module_file = root / (ref.rsplit(".", 1)[0] + ".py")
                if not module_file.is_file():
                    raise FileNotFoundError(f"missing file {module_file} (remote code named in config.json auto_map)")


def _check_files_whole(root: Path) -> None:
    """Raise ValueError naming the first truncated or corrupt file (config, weights, tokenizer) of a model folder."""
    from hf_attn.integrity import check_file

    names = [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "sentence_bert_config.json",
        "modules.json",
        "model.safetensors.index.json",
    ]
    for name in names:
        f = root / name
        if f.is_file():
            problem = check_file(f)
            if problem:
                raise ValueError(
                    f"{f}: {problem}. Re-save or re-download the model (a training run keeps its best "
                    "model in OUTPUT_DIR/best_model and its checkpoints in OUTPUT_DIR/checkpoints)"
                )


def _check_manifest(folder: Path) -> None:
    """Raise ValueError naming the first file that differs from the folder's sha256 manifest (when it has one)."""
    from hf_attn.integrity import check_manifest

    problem = check_manifest(folder)
    if problem:
        raise ValueError(f"{folder}: {problem}. Re-save or re-download the model (a training run keeps its best model "
                         "in OUTPUT_DIR/best_model and its checkpoints in OUTPUT_DIR/checkpoints)")


def _check_collection(texts, what: str) -> None:
    """A dict or set of texts would be read in an order the caller did not choose (a dict's keys, a set's hash
    order), so the rows could not be matched back to the texts: refuse them, saying what to pass."""
    if isinstance(texts, dict):
        raise TypeError(f"{what} must be a string or a list of strings, got a dict (iterating it gives its keys); "
                        "pass list(d.values()) or list(d.keys())")
    if isinstance(texts, (set, frozenset)):
        raise TypeError(f"{what} must be a string or a list of strings, got a {type(texts).__name__} (its order is "
                        "arbitrary, so rows would not match your texts); pass sorted(s) or a list")


def _check_texts(texts) -> None:
    if texts is None:
        raise TypeError("encode expects a string or a list of strings, got None")
    if isinstance(texts, (bytes, bytearray)):
        raise TypeError("encode expects str, got bytes: decode it first, e.g. encode(data.decode('utf-8'))")
    _check_collection(texts, "encode: texts")


class Embedder:
    """Thin inference API over a ``SentenceTransformer`` (all encoding goes through ``SentenceTransformer.encode``).

    ``model`` is the underlying SentenceTransformer; use it directly for anything not wrapped here.
    """

    def __init__(self, model):
        self.model = model
        self._warned_truncation = False

    # -- properties
    @property
    def dim(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        dim = getter()
        if dim is None:
            dim = int(self.model.encode(["x"], convert_to_numpy=True).shape[-1])
        return int(dim)

    @property
    def max_seq_length(self) -> int | None:
        return self.model.max_seq_length

    def __repr__(self) -> str:
        return f"Embedder(dim={self.dim}, max_seq_length={self.max_seq_length}, device={self.model.device})"

    # -- encoding
    def _warn_if_truncated(self, texts: Sequence[str]) -> None:
        if self._warned_truncation:
            return
        limit = self.model.max_seq_length
        tok = getattr(self.model, "tokenizer", None)
        if not limit or tok is None:
            return
        # A token covers at least one character, so only texts longer than the limit (in characters) can be cut.
        long = [t for t in texts if isinstance(t, str) and len(t) > limit - 2]
        if not long:
            return
        lengths = [len(ids) for ids in tok(long, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]]
        n_cut = sum(n > limit for n in lengths)
        if n_cut:
            self._warned_truncation = True
            msg = (
                f"{n_cut} text(s) exceed the model's max_seq_length of {limit} tokens (longest: {max(lengths)}) "
                "and are truncated; this warning is shown once."
            )
            logger.warning(msg)
            warnings.warn(msg, UserWarning, stacklevel=3)

    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        normalize: bool = False,
        show_progress_bar: bool = False,
        **kwargs,
    ) -> np.ndarray:
        """Embed ``texts`` -> float32 array ``[n, dim]`` (a single string -> ``[dim]``).

        Empty and whitespace-only strings are fine; texts over the model's limit are truncated (one-time warning);
        an empty list gives an array of shape ``(0, dim)``. Extra kwargs go to ``SentenceTransformer.encode``.
        """
        _check_texts(texts)
        single = isinstance(texts, str)
        try:
            items = [texts] if single else list(texts)
        except TypeError:
            raise TypeError(f"encode expects a string or a list of strings, got {type(texts).__name__}") from None
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        bad = [(i, t) for i, t in enumerate(items) if not isinstance(t, str)]
        if bad:
            i, t = bad[0]
            hint = " (decode bytes first, e.g. b.decode('utf-8'))" if isinstance(t, (bytes, bytearray)) else ""
            raise TypeError(f"encode expects strings, got {type(t).__name__} at position {i}{hint}")
        self._warn_if_truncated(items)
        try:
            emb = self.model.encode(
                items,
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=normalize,
                show_progress_bar=show_progress_bar,
                **kwargs,
            )
        except KeyError as e:  # an output this model's modules do not produce (e.g. token_embeddings)
            if "output_value" not in kwargs:
                raise
            raise ValueError(
                f"encode: output_value={kwargs['output_value']!r} is not an output of this model (it has no {e}); "
                "hf_attn embedders return only 'sentence_embedding' (for per-token states call "
                "embedder.model[0].model(...) and read last_hidden_state)"
            ) from None
        emb = np.asarray(emb, dtype=np.float32)
        return emb[0] if single else emb

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two texts (the model's similarity function, cosine for our models)."""
        emb = self.encode([a, b])
        return float(self.model.similarity(emb[:1], emb[1:]).reshape(-1)[0])

    def find_similar(self, query: str, candidates: Sequence[str], top_k: int = 5) -> list[tuple[str, float]]:
        """The ``top_k`` candidates most similar to ``query``, best first, as ``(text, score)`` pairs.

        ``candidates`` is a list (or any iterable) of strings -- a single string is refused rather than read as a list
        of characters; ``top_k`` is an integer >= 0 (0 gives an empty list).
        """
        if not isinstance(query, str):
            raise TypeError(f"find_similar: query must be a string, got {type(query).__name__}")
        _check_collection(candidates, "find_similar: candidates")
        if isinstance(candidates, (str, bytes, bytearray)) or candidates is None:
            raise TypeError(
                f"find_similar: candidates must be a list of strings, got a {type(candidates).__name__}"
                + (f" ({candidates!r:.40}); wrap a single candidate as [text]" if candidates is not None else "")
            )
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
            raise TypeError(f"find_similar: top_k must be an integer, got {top_k!r}")
        if top_k < 0:
            raise ValueError(f"find_similar: top_k must be 0 or more, got {top_k}")
        candidates = list(candidates)
        if not candidates or top_k == 0:
            return []
        emb = self.encode([query] + candidates)
        scores = np.asarray(self.model.similarity(emb[:1], emb[1:]), dtype=np.float64).reshape(-1)
        order = np.argsort(-scores, kind="stable")[: min(top_k, len(candidates))]
        return [(candidates[i], float(scores[i])) for i in order]


def load_model(
    path_or_repo_id: str | os.PathLike,
    device: str | None = None,
    trust_remote_code: bool = True,
    backend: str = "torch",
    file_name: str | None = None,
) -> Embedder:
    """Load any sentence-transformers model (ours through remote code, or e.g. all-MiniLM-L6-v2) as an Embedder.

    A name from ``hf_attn.pretrained()`` that ships with the package loads offline. A local folder is checked
    first: a missing file raises FileNotFoundError naming it. ``backend="onnx"`` runs
    an exported folder's ``onnx/`` graph with onnxruntime (no optimum, no PyTorch forward); ``file_name`` picks
    the graph (default ``model.onnx``; ``model_qint8_quantized.onnx`` for ``hf-attn export --quantize int8``).
    """
    from .pretrained_models import pretrained_path, shipped_names

    if isinstance(path_or_repo_id, str) and path_or_repo_id in shipped_names():  # a model shipped in the package
        path_or_repo_id = pretrained_path(path_or_repo_id)
    if backend == "onnx":
        from .onnx_export import ONNX_FILE, load_onnx_encoder

        return Embedder(load_onnx_encoder(Path(path_or_repo_id).expanduser(), file_name or ONNX_FILE))
    if backend != "torch":
        raise ValueError(f"load_model: backend must be 'torch' or 'onnx', got {backend!r}")
    if file_name is not None:
        raise ValueError("load_model: file_name picks an ONNX graph; pass it with backend='onnx'")
    from sentence_transformers import SentenceTransformer

    p = Path(path_or_repo_id).expanduser()
    name = str(path_or_repo_id)
    # Hub ids are "name" or "org/name"; anything else (absolute/relative path, deeper nesting) is a local folder.
    # "outputs/best_modl" whose first part is a local folder is a mistyped path, not the Hub id of user "outputs".
    looks_local = (
        p.exists()
        or name.startswith((".", "/", "~"))
        or name.count("/") > 1
        or os.sep != "/"
        and os.sep in name
        or name.count("/") == 1
        and p.parent.is_dir()
    )
    if looks_local:
        _check_local_folder(p)
        path_or_repo_id = str(p)
        return Embedder(SentenceTransformer(str(path_or_repo_id), device=device, trust_remote_code=trust_remote_code))
    try:
        model = SentenceTransformer(str(path_or_repo_id), device=device, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:  # not found on the Hub, offline, not in the cache, invalid repo id
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FileNotFoundError(
            f"{name!r}: no such local folder ({p.resolve()} does not exist), and it could not be loaded as a Hub model "
            f"id either ({first}). Check the path's spelling, or the repo id and your network / HF_HUB_OFFLINE"
        ) from e
    return Embedder(model)


__all__ = ["Embedder", "load_model", "save_sentence_transformer"]
