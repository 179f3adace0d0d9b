"""`hf-attn export --onnx`: the embedders as ONNX (dynamo exporter, dynamic batch and length), checked against
PyTorch with onnxruntime, and `load_onnx_encoder(...).encode` against SentenceTransformer.encode."""

from __future__ import annotations

import importlib.util

import pytest
from test_hub import make_model, make_tokenizer  # the tiny models and tokenizer the export tests use

import hf_attn
from hf_attn import onnx_export
from hf_attn.exported import uses_normalize
from hf_attn.hub import export

HAVE_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="onnx extra not installed (pip install 'hf-attn[onnx]')")
SENTENCES = ["A man is playing a guitar.", "hi", "The stock market fell today, and so did the bond market.",
             "Someone is playing an instrument."] * 3


@needs_onnx
@pytest.mark.slow
@pytest.mark.parametrize("arch", ["tan", "gqa_embedder"])
def test_onnx_export_matches_pytorch_and_sentence_transformers(arch, tmp_path):
    """onnxruntime vs PyTorch within 1e-4 over batches 1-8 and lengths 1-64 (padded rows included); the ONNX
    encoder's sentence embeddings vs SentenceTransformer.encode within 1e-4."""
    from sentence_transformers import SentenceTransformer

    model = make_model(arch)
    checkpoint = tmp_path / "checkpoint"
    hf_attn.save_sentence_transformer(model, make_tokenizer(), checkpoint)
    out = export(checkpoint, tmp_path / "export", onnx=True, verify=False)
    onnx_file = out / "onnx" / "model.onnx"
    assert onnx_file.is_file()

    result = onnx_export.verify_onnx(model, onnx_file, normalize=uses_normalize(out))
    assert result["max_abs_diff"] <= 1e-4
    assert {b for b, _ in result["shapes"]} >= {1, 2, 3, 8} and len({t for _, t in result["shapes"]}) >= 4

    encoder = onnx_export.load_onnx_encoder(out)
    got = encoder.encode(SENTENCES, batch_size=5)
    expected = SentenceTransformer(str(out), trust_remote_code=True, device="cpu").encode(SENTENCES, batch_size=5)
    assert got.shape == expected.shape
    assert abs(got - expected).max() <= 1e-4
    assert encoder.encode(SENTENCES[0]).shape == expected[0].shape


def test_onnx_is_for_embedders_only(tmp_path, capsys):
    from hf_attn.cli import main

    checkpoint = tmp_path / "lm"
    make_model("adaptive_span_gpt").save_pretrained(checkpoint)
    capsys.readouterr()  # the save's progress bar
    assert main(["export", str(checkpoint), str(tmp_path / "out"), "--onnx", "--no-verify"]) == 2
    err = capsys.readouterr().err
    assert "--onnx exports the embedders" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_missing_onnx_packages_say_how_to_install(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(onnx_export.OnnxUnavailableError, match=r"pip install 'hf-attn\[onnx\]'"):
        onnx_export._session(tmp_path / "model.onnx")
    with pytest.raises(FileNotFoundError, match="--onnx"):
        onnx_export.load_onnx_encoder(tmp_path)
