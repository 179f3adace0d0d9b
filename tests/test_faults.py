"""Bad inputs and faults: each either works or stops with one clear message naming the option, file or line, and a
resumed run is the run it continues. Tiny fixtures in tmp_path; no network."""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_attn.training import checkpoint as ckpt
from hf_attn.training.args import ConfigError, UsageError
from hf_attn.training.data import DataError

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------------------------
# flags: --quick / --config never override what the user passed; values that make no sense are refused
# ---------------------------------------------------------------------------------------------------------------


def test_quick_keeps_explicit_flags_equal_to_the_default():
    from hf_attn.training.embed import EmbedTrainingArguments, finalize_args, parse_args

    args = finalize_args(parse_args(["--quick", "--data-dir", "x", "--batch-size", "32", "--grad-accum-steps", "8"]))
    assert (args.batch_size, args.grad_accum_steps) == (32, 8)  # 32 and 8 are the defaults; --quick would set 64, 1
    assert args.max_train_samples == 6000  # what was not passed still comes from --quick
    api = finalize_args(EmbedTrainingArguments(quick=True, batch_size=32))  # the Python API: constructor keywords
    assert api.batch_size == 32 and api.grad_accum_steps == 1


def test_config_keeps_explicit_flags_equal_to_the_default(tmp_path):
    from hf_attn.training.embed import EmbedTrainingArguments, finalize_args, parse_args
    from hf_attn.training.lm import LM_QUICK, LMTrainingArguments
    from hf_attn.training.args import resolve_config_and_quick

    cfg = tmp_path / "c.yaml"
    cfg.write_text("batch_size: 7\nlearning-rate: 0.01\n")
    args = finalize_args(parse_args(["--config", str(cfg), "--batch-size", "32"]))
    assert (args.batch_size, args.learning_rate) == (32, 0.01)
    api = finalize_args(EmbedTrainingArguments(config=str(cfg), batch_size=32))
    assert (api.batch_size, api.learning_rate) == (32, 0.01)
    # --config wins over --quick, the command line over both
    lm = resolve_config_and_quick(LMTrainingArguments(config=str(cfg), quick=True, max_steps=5000), LM_QUICK)
    assert (lm.batch_size, lm.learning_rate, lm.max_steps, lm.block_size) == (7, 0.01, 5000, LM_QUICK["block_size"])


@pytest.mark.parametrize("flags, named", [
    (["--max-steps", "0"], "--max-steps 0"),
    (["--max-steps", "-5"], "--max-steps -5"),
    (["--batch-size", "0"], "--batch-size 0"),
    (["--lr", "-0.001"], "--learning-rate -0.001"),
    (["--warmup-ratio", "1.5"], "--warmup-ratio 1.5"),
    (["--logging-steps", "0"], "--logging-steps 0"),
])
def test_nonsense_numbers_are_refused_before_training(tmp_path, flags, named):
    from hf_attn.training.embed import main

    # no data at all: the error must come from the flag check, before data is looked at
    with pytest.raises(UsageError, match=named):
        from hf_attn.training.embed import finalize_args, parse_args

        finalize_args(parse_args(flags + ["--output-dir", str(tmp_path / "o")]))
    assert main(flags + ["--output-dir", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_nonsense_numbers_in_the_lm_and_compare_recipes(tmp_path):
    from hf_attn.training.args import resolve_config_and_quick
    from hf_attn.training.compare import COMPARE_QUICK, CompareArguments
    from hf_attn.training.lm import LM_QUICK, LMTrainingArguments

    with pytest.raises(UsageError, match="--max-steps 0"):
        resolve_config_and_quick(LMTrainingArguments(max_steps=0), LM_QUICK)
    with pytest.raises(UsageError, match="--dropout 1.0"):
        resolve_config_and_quick(LMTrainingArguments(dropout=1.0), LM_QUICK)
    with pytest.raises(UsageError, match="--seq-len -1"):
        resolve_config_and_quick(CompareArguments(seq_len=-1), COMPARE_QUICK)


def test_bad_config_yaml_names_the_file_and_line(tmp_path, capsys):
    from hf_attn.training.embed import main, parse_args

    bad = tmp_path / "bad.yaml"
    bad.write_text("batch_size: 8\nlearning_rate: [0.1\nseed: 1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml line \d+, column \d+: not valid YAML"):
        parse_args(["--config", str(bad)])
    typo = tmp_path / "typo.yaml"
    typo.write_text("batch_size: 8\nbatch_sise: 9\n")
    with pytest.raises(ConfigError, match=r"typo.yaml line 2: unknown option 'batch_sise'; did you mean 'batch_size'"):
        parse_args(["--config", str(typo)])
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("seed: 1\nbatch_size: '32'\n")
    with pytest.raises(ConfigError, match=r"wrong.yaml line 2: batch_size: expected an integer, got '32'"):
        parse_args(["--config", str(wrong)])
    with pytest.raises(ConfigError, match="no such file"):
        parse_args(["--config", str(tmp_path / "missing.yaml")])
    assert main(["--config", str(bad), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "train_embed.py: error: --config" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------------------------
# compare_attention: real text or a clear error; the synthetic corpus only when asked for
# ---------------------------------------------------------------------------------------------------------------


def test_compare_attention_missing_data_dir_fails_instead_of_training_on_synthetic_text(tmp_path, capsys):
    from hf_attn.training.compare import CompareArguments, main, resolve_data, run_comparison

    out = tmp_path / "cmp"
    with pytest.raises(DataError, match=r"--data-dir .*nowhere: no such folder"):
        run_comparison(CompareArguments(data_dir=str(tmp_path / "nowhere"), output_dir=str(out), max_steps=1),
                       log=lambda *a: None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="--synthetic-data"):
        resolve_data(CompareArguments(data_dir=str(tmp_path / "empty")), log=lambda *a: None)
    with pytest.raises(DataError, match="--data missing.txt"):
        resolve_data(CompareArguments(data="missing.txt"), log=lambda *a: None)
    assert main(["--data-dir", str(tmp_path / "nowhere"), "--output-dir", str(out)]) == 2
    assert "no such folder" in capsys.readouterr().err and not out.exists()
    splits = resolve_data(CompareArguments(synthetic_data=True, max_bytes=10_000), log=lambda *a: None)
    assert sum(len(v) for v in splits.values()) == 10_000


# ---------------------------------------------------------------------------------------------------------------
# the inference API: wrong argument types, and model folders that are mistyped, truncated or corrupt
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def st_folder(tmp_path_factory):
    from test_embedding import make_model, make_tokenizer

    from hf_attn import save_sentence_transformer

    tok = make_tokenizer()
    path = tmp_path_factory.mktemp("st") / "model"
    save_sentence_transformer(make_model("gqa_embedder", len(tok)), tok, path)
    return path


@pytest.fixture(scope="module")
def embedder(st_folder):
    from hf_attn import load_model

    return load_model(st_folder, device="cpu")


def test_encode_and_find_similar_refuse_wrong_types(embedder):
    with pytest.raises(TypeError, match="got None"):
        embedder.encode(None)
    with pytest.raises(TypeError, match="got bytes: decode it first"):
        embedder.encode(b"a man plays")
    with pytest.raises(TypeError, match="got bytes at position 1"):
        embedder.encode(["ok", b"bytes"])
    with pytest.raises(TypeError, match="got int"):
        embedder.encode(3)
    with pytest.raises(TypeError, match="candidates must be a list of strings, got a str"):
        embedder.find_similar("a man", "abc")
    for bad in (None, 1.5, "2", True):
        with pytest.raises(TypeError, match="top_k must be an integer"):
            embedder.find_similar("a man", ["a", "b"], top_k=bad)
    with pytest.raises(ValueError, match="top_k must be 0 or more"):
        embedder.find_similar("a man", ["a", "b"], top_k=-1)
    assert embedder.find_similar("a man", ["a", "b"], top_k=0) == []
    assert [t for t, _ in embedder.find_similar("a man", ("a man", "b"), top_k=1)] == ["a man"]


def test_load_model_of_a_mistyped_path_says_it_does_not_exist(st_folder, monkeypatch):
    from hf_attn import load_model

    monkeypatch.chdir(st_folder.parent)
    for typo in ("modle", "./modle", "model/../modle", str(st_folder) + "x"):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            load_model(typo)


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "tokenizer.json"])
@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_load_model_names_a_truncated_or_corrupt_file(st_folder, tmp_path, name, damage):
    from hf_attn import load_model

    broken = tmp_path / "broken"
    shutil.copytree(st_folder, broken)
    f = broken / name
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" + data[8:])
    with pytest.raises(ValueError, match=f"{name}: .*(truncated|corrupt)"):
        load_model(broken)


@pytest.mark.slow  # importing mteb takes ~15 s
def test_hf_attn_eval_of_a_missing_or_corrupt_model_is_one_line(st_folder, tmp_path, capsys):
    from hf_attn.cli import main

    (tmp_path / "stsb").mkdir()
    rows = "\n".join(f"a man plays {i}.,a man plays {i + 1}.,{i % 5}.0" for i in range(8)) + "\n"
    for split in ("dev", "test"):
        (tmp_path / "stsb" / f"stsb-en-{split}.csv").write_text(rows)
    assert main(["eval", str(tmp_path / "nope"), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err and err.count("\n") == 1
    broken = tmp_path / "broken"
    shutil.copytree(st_folder, broken)
    (broken / "config.json").write_text('{"model_type": "gqa_emb')
    assert main(["eval", str(broken), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "config.json: not valid JSON" in err and err.count("\n") == 1
