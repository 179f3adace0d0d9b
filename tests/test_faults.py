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
