"""ONNX export of the embedders (TAN, GQAEmbedder) and an onnxruntime encoder: ``hf-attn export --onnx``.

`export_onnx` traces the model with the dynamo exporter (``torch.onnx.export(..., dynamo=True)``; the TorchScript
exporter cannot: it has no ``aten::rms_norm``) with a dynamic batch and sequence length, into ``onnx/model.onnx``
of an exported folder (the layout Hub tools look for). The graph maps

    input_ids [batch, sequence] int64, attention_mask [batch, sequence] int64
        -> sentence_embedding [batch, embedding_size]   (what SentenceTransformer.encode returns, Normalize included)
           token_embeddings   [batch, sequence, hidden] (last_hidden_state)

and `verify_onnx` runs it with onnxruntime on several batch sizes and lengths (random ids, padded rows) against the
PyTorch model: the largest difference must be within `ONNX_ATOL`. `load_onnx_encoder(folder)` gives an object whose
``encode(sentences, batch_size)`` returns sentence embeddings with onnxruntime and the folder's tokenizer, like
``SentenceTransformer.encode`` (needs ``pip install hf-attn[onnx]``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from .exported import load_exported_model, uses_normalize

ONNX_ATOL = 1e-4
ONNX_SUBDIR = "onnx"
ONNX_FILE = "model.onnx"
# sentence-transformers' name for a dynamically quantised int8 graph (``model_<weights dtype>_<config>.onnx``)
QUANTIZED_FILE = "model_qint8_quantized.onnx"
# the int8 graph may lose at most this much STS-B Spearman against the fp32 graph it was made from
QUANT_MAX_DROP = 0.01
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAMES = ("sentence_embedding", "token_embeddings")
# (batch, sequence length) pairs the verification runs; lengths are capped to the model's limit
VERIFY_SHAPES = ((1, 1), (1, 7), (2, 16), (3, 33), (8, 64))


class OnnxUnavailableError(ImportError):
    """onnxruntime / onnx / onnxscript are not installed."""


def _require_onnx(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise OnnxUnavailableError(
            f"ONNX export needs {', '.join(missing)}: pip install 'hf-attn[onnx]' (onnx, onnxscript, onnxruntime)"
        )


def _max_length(model) -> int:
    config = model.config
    return int(getattr(config, "max_sequence_length", None) or config.max_position_embeddings)


def _sentence_module(model, normalize: bool):
    import torch

    class SentenceEmbedding(torch.nn.Module):
        """input_ids, attention_mask -> (sentence embedding, token states): what the ONNX graph computes."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
            emb = out.pooler_output
            if normalize:
                emb = torch.nn.functional.normalize(emb, p=2.0, dim=-1)
            return emb, out.last_hidden_state

    return SentenceEmbedding().eval()


def export_onnx(model, out_file: str | Path, normalize: bool = False, opset_version: int | None = None) -> Path:
    """Trace the embedder `model` (dynamo exporter, dynamic batch and length) into `out_file`; returns its path.

    ``normalize``: L2-normalise the sentence embedding in the graph (as a sentence-transformers folder with a
    Normalize module does).
    """
    _require_onnx("onnx", "onnxscript")
    import torch

    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    module = _sentence_module(model.eval(), normalize)
    max_len = _max_length(model)
    example_len = min(8, max_len)
    input_ids = torch.full((2, example_len), min(5, model.config.vocab_size - 1), dtype=torch.long)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, example_len // 2 :] = 0
    batch = torch.export.Dim("batch", min=1, max=4096)
    sequence = torch.export.Dim("sequence", min=1, max=max_len)
    dynamic = {"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}}
    kwargs = {} if opset_version is None else {"opset_version": opset_version}
    with torch.no_grad():
        program = torch.onnx.export(
            module, (input_ids, attention_mask), dynamo=True, input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES), dynamic_shapes=dynamic, external_data=False, verbose=False, **kwargs,
        )
    program.save(str(out_file))
    return out_file


def _session(onnx_file: str | Path):
    _require_onnx("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(onnx_file), sess_options=options, providers=["CPUExecutionProvider"])


def verify_onnx(model, onnx_file: str | Path, normalize: bool = False, atol: float = ONNX_ATOL,
                shapes: Sequence[tuple[int, int]] = VERIFY_SHAPES, seed: int = 0) -> dict:
    """Run `onnx_file` with onnxruntime and `model` with PyTorch on random padded batches of several shapes.

    Returns ``{"max_abs_diff": ..., "shapes": [...]}`` (the sentence embeddings, and the token states of real
    tokens); raises `OnnxVerificationError` when a difference exceeds `atol`.
    """
    import torch

    session = _session(onnx_file)
    module = _sentence_module(model.eval(), normalize)
    g = torch.Generator().manual_seed(seed)
    max_len, worst, checked = _max_length(model), 0.0, []
    for batch, length in shapes:
        length = max(1, min(length, max_len))
        input_ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=g)
        attention_mask = torch.ones_like(input_ids)
        for row in range(1, batch):  # every row but the first is padded on the right to a random length
            attention_mask[row, int(torch.randint(1, length + 1, (1,), generator=g)) :] = 0
        with torch.no_grad():
            ref_emb, ref_tok = module(input_ids, attention_mask)
        emb, tok = session.run(list(OUTPUT_NAMES), {"input_ids": input_ids.numpy(),
                                                    "attention_mask": attention_mask.numpy()})
        real = attention_mask.bool()
        diff = max(float((torch.from_numpy(emb) - ref_emb).abs().max()),
                   float((torch.from_numpy(tok) - ref_tok)[real].abs().max()))
        worst = max(worst, diff)
        checked.append((batch, length))
        if not diff <= atol:
            raise OnnxVerificationError(f"{onnx_file}: onnxruntime differs from PyTorch by {diff:.3g} on a batch of "
                                        f"{batch} x {length} tokens (tolerance {atol})")
    return {"max_abs_diff": worst, "shapes": checked}


class OnnxVerificationError(RuntimeError):
    """The ONNX model's outputs differ from the PyTorch model's."""


def export_folder_onnx(folder: str | Path, model=None, verify: bool = True) -> dict:
    """Write ``FOLDER/onnx/model.onnx`` for the embedder saved in `folder` (a sentence-transformers / export folder).

    Returns ``{"path": ..., "max_abs_diff": ..., "shapes": ...}`` (the last two with ``verify``).
    """
    folder = Path(folder)
    if model is None:
        model, _, _ = load_exported_model(folder)
    normalize = uses_normalize(folder)
    path = export_onnx(model, folder / ONNX_SUBDIR / ONNX_FILE, normalize=normalize)
    result = {"path": str(path)}
    if verify:
        result.update(verify_onnx(model, path, normalize=normalize))
    return result


def quantize_onnx(onnx_file: str | Path, out_file: str | Path | None = None) -> Path:
    """Dynamic int8 quantisation of an fp32 graph with onnxruntime (``quantize_dynamic``: int8 weights, activations
    quantised at run time; no calibration data) -> the int8 file (default: ``model_qint8_quantized.onnx`` beside)."""
    _require_onnx("onnxruntime", "onnx")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx_file = Path(onnx_file)
    out_file = Path(out_file) if out_file is not None else onnx_file.with_name(QUANTIZED_FILE)
    quantize_dynamic(onnx_file, out_file, weight_type=QuantType.QInt8)
    return out_file


def stsb_quality(folder: str | Path, files: Sequence[str], data_dir: str | Path | None = None,
                 split: str = "test") -> dict:
    """STS-B Spearman (cosine) of each ONNX file in ``FOLDER/onnx/`` with onnxruntime: ``{file: spearman}``.

    ``data_dir``: a folder laid out like ../shared/data (``None``: the Hub's sentence-transformers/stsb).
    """
    from .evaluation.stsb import stsb_correlations

    return {name: stsb_correlations(load_onnx_encoder(folder, name).encode, split=split, data_dir=data_dir)["spearman"]
            for name in files}


def quantize_folder(folder: str | Path, data_dir: str | Path | None = None, max_drop: float | None = None,
                    split: str = "test") -> dict:
    """Write ``FOLDER/onnx/model_qint8_quantized.onnx`` from the verified ``onnx/model.onnx`` and score both on the
    STS-B `split`; raises `OnnxVerificationError` when int8 loses more than `max_drop` Spearman (default
    `QUANT_MAX_DROP`).

    Returns the record the card shows: ``{"split", "files": {name: {"bytes", "stsb_spearman"}}}``.
    """
    onnx_dir = Path(folder) / ONNX_SUBDIR
    if not (onnx_dir / ONNX_FILE).is_file():
        raise FileNotFoundError(f"no {onnx_dir / ONNX_FILE} to quantise: export with --onnx first")
    quantize_onnx(onnx_dir / ONNX_FILE)
    quality = stsb_quality(folder, (ONNX_FILE, QUANTIZED_FILE), data_dir=data_dir, split=split)
    drop = quality[ONNX_FILE] - quality[QUANTIZED_FILE]
    max_drop = QUANT_MAX_DROP if max_drop is None else max_drop
    if not drop <= max_drop:
        raise OnnxVerificationError(
            f"int8 quantisation loses {drop:.4f} STS-B {split} Spearman ({quality[ONNX_FILE]:.4f} fp32 -> "
            f"{quality[QUANTIZED_FILE]:.4f} int8; allowed {max_drop}): keep the fp32 graph (export without --quantize)"
        )
    files = {name: {"bytes": (onnx_dir / name).stat().st_size, "stsb_spearman": round(score, 6)}
             for name, score in quality.items()}
    return {"split": split, "files": files}


class OnnxEncoder:
    """Sentence embeddings from an ONNX graph with onnxruntime and the folder's tokenizer (no optimum).

    It answers the part of ``SentenceTransformer``'s interface that `hf_attn.embedding.Embedder` uses (``encode``,
    ``similarity``, ``max_seq_length``, ``tokenizer``, ``get_sentence_embedding_dimension``, ``device``), so
    ``hf_attn.load_model(folder, backend="onnx")`` wraps it like a SentenceTransformer.
    """

    device = "cpu"

    def __init__(self, onnx_file: str | Path, tokenizer, max_seq_length: int | None = None):
        self.onnx_file = Path(onnx_file)
        self.session = _session(onnx_file)
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length

    def get_sentence_embedding_dimension(self) -> int:
        return int(self.session.get_outputs()[0].shape[-1])

    def encode(self, sentences: str | Sequence[str], batch_size: int = 32, normalize_embeddings: bool = False,
               **_ignored):
        """-> numpy array [len(sentences), embedding_size] (one row for a single string)."""
        import numpy as np

        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # similar lengths together: less padding
        out: list = [None] * len(texts)
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=self.max_seq_length is not None,
                                 max_length=self.max_seq_length, return_tensors="np")
            (emb,) = self.session.run([OUTPUT_NAMES[0]], {"input_ids": enc["input_ids"].astype(np.int64),
                                                          "attention_mask": enc["attention_mask"].astype(np.int64)})
            for row, i in enumerate(idx):
                out[i] = emb[row]
        if not texts:
            return np.zeros((0, self.get_sentence_embedding_dimension()), dtype=np.float32)
        result = np.stack(out)
        if normalize_embeddings:
            result = result / np.clip(np.linalg.norm(result, axis=-1, keepdims=True), 1e-12, None)
        return result[0] if single else result

    @staticmethod
    def similarity(a, b):
        """Cosine similarities [len(a), len(b)] (the similarity function of every hf_attn embedder)."""
        import numpy as np

        a, b = (np.atleast_2d(np.asarray(x, dtype=np.float64)) for x in (a, b))
        a = a / np.clip(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12, None)
        b = b / np.clip(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12, None)
        return a @ b.T


def load_onnx_encoder(path: str | Path, file_name: str = ONNX_FILE) -> OnnxEncoder:
    """An `OnnxEncoder` for an exported folder (``hf-attn export --onnx``; ``file_name`` picks the graph in its
    ``onnx/`` folder, e.g. ``model_qint8_quantized.onnx``) or for one ``.onnx`` file inside such a folder."""
    from transformers import AutoTokenizer

    path = Path(path)
    onnx_file = path if path.suffix == ".onnx" else path / ONNX_SUBDIR / file_name
    if not onnx_file.is_file():
        raise FileNotFoundError(f"no ONNX model at {onnx_file}: export with `hf-attn export CHECKPOINT OUT --onnx`"
                                + ("" if file_name == ONNX_FILE else " --quantize int8"))
    folder = onnx_file.parent.parent if onnx_file.parent.name == ONNX_SUBDIR else onnx_file.parent
    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=True)
    st_config = folder / "sentence_bert_config.json"
    max_len = json.loads(st_config.read_text()).get("max_seq_length") if st_config.is_file() else None
    return OnnxEncoder(onnx_file, tokenizer, max_len)


__all__ = [
    "ONNX_ATOL",
    "QUANTIZED_FILE",
    "QUANT_MAX_DROP",
    "OnnxEncoder",
    "OnnxUnavailableError",
    "OnnxVerificationError",
    "export_folder_onnx",
    "export_onnx",
    "load_onnx_encoder",
    "quantize_folder",
    "quantize_onnx",
    "stsb_quality",
    "verify_onnx",
]
