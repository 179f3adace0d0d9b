"""`hf-attn encode` / `hf-attn generate` run an exported folder from the shell."""

from __future__ import annotations

import io
import json

import numpy as np
from test_hub import make_model, make_tokenizer  # the tiny models and tokenizer the export tests use

import hf_attn
from hf_attn.cli import main
from hf_attn.hub import export

TEXTS = ["A man is playing a guitar.", "The stock market fell today."]


def test_encode_prints_the_embeddings_of_load_model(tmp_path, capsys, monkeypatch):
    checkpoint = tmp_path / "checkpoint"
    hf_attn.save_sentence_transformer(make_model("tan"), make_tokenizer(), checkpoint)
    out = export(checkpoint, tmp_path / "tan", verify=False)
    expected = hf_attn.load_model(out).encode(TEXTS)
    capsys.readouterr()
    assert main(["encode", str(out), *TEXTS]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert np.abs(np.array(rows) - expected).max() < 1e-5
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(TEXTS) + "\n"))  # one text per line from stdin
    assert main(["encode", str(out), "--out", str(tmp_path / "e.npy")]) == 0
    assert np.abs(np.load(tmp_path / "e.npy") - expected).max() < 1e-5
    assert main(["encode", str(tmp_path / "missing"), "x"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_generate_continues_the_prompt(tmp_path, capsys):
    checkpoint = tmp_path / "lm"
    make_model("adaptive_span_gpt").save_pretrained(checkpoint)
    out = export(checkpoint, tmp_path / "lm-export", verify=False)
    capsys.readouterr()
    assert main(["generate", str(out), "The", "--max-new-tokens", "5"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("The") and len(text.rstrip("\n").encode("utf-8", "replace")) > len("The")
    assert main(["generate", str(tmp_path / "missing"), "x"]) == 2
