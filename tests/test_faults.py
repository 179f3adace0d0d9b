"""Bad inputs and faults: each either works or stops with one clear message naming the option, file or line, and a
resumed run is the run it continues. Tiny fixtures in tmp_path; no network."""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
from pathlib import Path

import pytest
import torch

from hf_attn.training import checkpoint as ckpt
from hf_attn.training.args import ConfigError, UsageError
from hf_attn.training.checkpoint import CheckpointError, OutputError
from hf_attn.training.data import DataError

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------------------------
# flags: --quick / --config never override what the user passed; values that make no sense are refused
# ---------------------------------------------------------------------------------------------------------------


def test_quick_keeps_explicit_flags_equal_to_the_default():
    from hf_attn.training.embed.args import EmbedTrainingArguments, finalize_args, parse_args

    args = finalize_args(parse_args(["--quick", "--data-dir", "x", "--batch-size", "32", "--grad-accum-steps", "8"]))
    assert (args.batch_size, args.grad_accum_steps) == (32, 8)  # 32 and 8 are the defaults; --quick would set 64, 1
    assert args.max_train_samples == 6000  # what was not passed still comes from --quick
    api = finalize_args(EmbedTrainingArguments(quick=True, batch_size=32))  # the Python API: constructor keywords
    assert api.batch_size == 32 and api.grad_accum_steps == 1


def test_config_keeps_explicit_flags_equal_to_the_default(tmp_path):
    from hf_attn.training.args import resolve_config_and_quick
    from hf_attn.training.embed.args import EmbedTrainingArguments, finalize_args, parse_args
    from hf_attn.training.lm.args import LM_QUICK, LMTrainingArguments

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
        from hf_attn.training.embed.args import finalize_args, parse_args

        finalize_args(parse_args(flags + ["--output-dir", str(tmp_path / "o")]))
    assert main(flags + ["--output-dir", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_nonsense_numbers_in_the_lm_and_compare_recipes(tmp_path):
    from hf_attn.training.args import resolve_config_and_quick
    from hf_attn.training.lm.args import LM_QUICK, LMTrainingArguments
    from hf_attn.training.lm.compare import COMPARE_QUICK, CompareArguments

    with pytest.raises(UsageError, match="--max-steps 0"):
        resolve_config_and_quick(LMTrainingArguments(max_steps=0), LM_QUICK)
    with pytest.raises(UsageError, match="--dropout 1.0"):
        resolve_config_and_quick(LMTrainingArguments(dropout=1.0), LM_QUICK)
    with pytest.raises(UsageError, match="--seq-len -1"):
        resolve_config_and_quick(CompareArguments(seq_len=-1), COMPARE_QUICK)


def test_bad_config_yaml_names_the_file_and_line(tmp_path, capsys):
    from hf_attn.training.embed import main
    from hf_attn.training.embed.args import parse_args

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
    from hf_attn.training.lm.compare import CompareArguments, main, resolve_data, run_comparison

    out = tmp_path / "cmp"
    with pytest.raises(DataError, match=r"--data-dir .*nowhere: no such folder"):
        run_comparison(CompareArguments(data_dir=str(tmp_path / "nowhere"), output_dir=str(out), max_steps=1),
                       log=lambda *a: None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="--synthetic-data"):
        resolve_data(None, str(tmp_path / "empty"), None, log=lambda *a: None)
    with pytest.raises(DataError, match="--data missing.txt"):
        resolve_data("missing.txt", None, None, log=lambda *a: None)
    assert main(["--data-dir", str(tmp_path / "nowhere"), "--output-dir", str(out)]) == 2
    assert "no such folder" in capsys.readouterr().err and not out.exists()
    splits = resolve_data(None, None, max_bytes=10_000, synthetic_data=True, log=lambda *a: None)
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


# ---------------------------------------------------------------------------------------------------------------
# tokenizer: deterministic training; a checkpoint carries its tokenizer and resume uses it
# ---------------------------------------------------------------------------------------------------------------

from test_training import _tiny_embed_args  # noqa: E402


def test_wordpiece_training_is_deterministic():
    from hf_attn.training.tokenizer import train_tokenizer

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(400)]
    texts = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(300)]
    # tokenizers' own WordPieceTrainer numbers its ## symbols in hash-map order: 10 runs gave 10 vocabularies
    vocabs = [train_tokenizer(texts, kind="wordpiece", vocab_size=300).get_vocab() for _ in range(4)]
    assert all(v == vocabs[0] for v in vocabs[1:])
    assert len(vocabs[0]) == 300 and any(t.startswith("##") for t in vocabs[0])
    tok = train_tokenizer(texts, kind="wordpiece", vocab_size=300)
    assert tok.decode(tok(texts[0])["input_ids"], skip_special_tokens=True) == texts[0]
    bpe = [train_tokenizer(texts, kind="bpe", vocab_size=300).get_vocab() for _ in range(2)]
    assert bpe[0] == bpe[1]


def _final_weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "final_weights_rank0.safetensors"))


def _resume_copy(run: Path, dest: Path, step: int) -> Path:
    shutil.copytree(run / "checkpoints" / f"checkpoint-{step}", dest / "checkpoints" / f"checkpoint-{step}")
    return dest


@pytest.fixture(scope="module")
def full_run(data_dir, tmp_path_factory):
    """4 steps, checkpoints at 2 and 4, final weights dumped."""
    from hf_attn.training.embed import train_embedder

    os.environ["HF_ATTN_DUMP_FINAL_WEIGHTS"] = "1"
    try:
        out = tmp_path_factory.mktemp("full") / "run"
        res = train_embedder(_tiny_embed_args(data_dir, out, max_steps=4, save_steps=2, eval_steps=0))
    finally:
        del os.environ["HF_ATTN_DUMP_FINAL_WEIGHTS"]
    assert res["status"] == "completed" and res["steps"] == 4
    return out


def test_checkpoint_carries_the_tokenizer_and_a_file_manifest(full_run):
    c = full_run / "checkpoints" / "checkpoint-2"
    assert (c / "tokenizer" / "tokenizer.json").is_file() and (c / "checkpoint_files.json").is_file()
    assert json.loads((c / "tokenizer" / "tokenizer.json").read_text())["model"] == json.loads(
        (full_run / "tokenizer" / "tokenizer.json").read_text())["model"]
    assert ckpt.verify_checkpoint(c) is None


@pytest.mark.parametrize("cache", ["removed", "replaced"])
def test_resume_after_the_tokenizer_cache_was_removed_or_replaced_is_the_same_run(full_run, data_dir, tmp_path,
                                                                                   monkeypatch, cache):
    from hf_attn.training.embed import train_embedder
    from hf_attn.training.tokenizer import get_or_train_tokenizer

    out = _resume_copy(full_run, tmp_path / "resumed", 2)
    if cache == "replaced":  # another run (other data) wrote the shared cache; its record claims these settings
        other = get_or_train_tokenizer(["zebra quartz jumps " * 3 + str(i) for i in range(200)], out / "tokenizer",
                                       vocab_size=300, model_max_length=24, log=lambda *a: None)
        meta = json.loads((full_run / "tokenizer" / "hf_attn_tokenizer.json").read_text())
        (out / "tokenizer" / "hf_attn_tokenizer.json").write_text(json.dumps(meta))
        first_vocab = json.loads((full_run / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
        assert other.get_vocab() != first_vocab
    monkeypatch.setenv("HF_ATTN_DUMP_FINAL_WEIGHTS", "1")
    res = train_embedder(
        _tiny_embed_args(data_dir, out, max_steps=4, save_steps=2, eval_steps=0, resume_from_checkpoint="latest")
    )
    assert res["steps"] == 4
    full, resumed = _final_weights(full_run), _final_weights(out)
    assert full.keys() == resumed.keys()
    for k in full:
        assert torch.equal(full[k], resumed[k]), k


def test_resume_of_a_checkpoint_without_tokenizer_and_without_cache_refuses(full_run, data_dir, tmp_path):
    from hf_attn.training.embed import train_embedder

    out = _resume_copy(full_run, tmp_path / "legacy", 2)
    c = out / "checkpoints" / "checkpoint-2"
    shutil.rmtree(c / "tokenizer")
    (c / "checkpoint_files.json").unlink()  # as written before checkpoints carried a tokenizer
    with pytest.raises(UsageError, match="holds no tokenizer .* missing or was trained on other settings"):
        train_embedder(
            _tiny_embed_args(data_dir, out, max_steps=4, save_steps=2, eval_steps=0, resume_from_checkpoint="latest")
        )
    assert not (out / "tokenizer" / "tokenizer.json").exists()  # nothing trained


# ---------------------------------------------------------------------------------------------------------------
# incomplete or corrupt checkpoints: named, skipped for the newest complete one, or refused
# ---------------------------------------------------------------------------------------------------------------


def _damage(f: Path, how: str) -> None:
    if how == "delete":
        f.unlink()
    elif how == "truncate":
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2])
    else:  # flip bytes in the middle
        data = bytearray(f.read_bytes())
        mid = len(data) // 2
        data[mid : mid + 4] = bytes(255 - b for b in data[mid : mid + 4])
        f.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "name, how",
    [
        ("model.safetensors", "delete"),
        ("model.safetensors", "truncate"),
        ("model.safetensors", "garble"),
        ("optimizer.bin", "truncate"),
        ("trainer_state.json", "truncate"),
        ("tokenizer/tokenizer.json", "garble"),
        ("tokenizer/tokenizer_config.json", "truncate"),
    ],
)
def test_resume_latest_skips_a_bad_checkpoint_naming_the_file(full_run, tmp_path, name, how):
    ck = tmp_path / "checkpoints"
    shutil.copytree(full_run / "checkpoints", ck)
    _damage(ck / "checkpoint-4" / name, how)
    assert ckpt.verify_checkpoint(ck / "checkpoint-4").startswith(name)
    logs = []
    assert ckpt.resolve_resume("latest", ck, log=logs.append) == ck / "checkpoint-2"
    assert f"checkpoint-4 ({name}" in logs[0] and "resuming from" in logs[0]
    with pytest.raises(CheckpointError, match=f"{name}: .*newest complete checkpoint there is .*checkpoint-2"):
        ckpt.resolve_resume(str(ck / "checkpoint-4"), ck)
    _damage(ck / "checkpoint-2" / "model.safetensors", "truncate")
    with pytest.raises(
        CheckpointError,
        match="no complete checkpoint in .*checkpoint-4 .*checkpoint-2 "
        r"\(model.safetensors: truncated",
    ):
        ckpt.resolve_resume("latest", ck)


def test_legacy_checkpoint_without_manifest_is_checked_structurally(full_run, tmp_path):
    ck = tmp_path / "checkpoints"
    shutil.copytree(full_run / "checkpoints", ck)
    c = ck / "checkpoint-4"
    (c / "checkpoint_files.json").unlink()
    assert ckpt.verify_checkpoint(c) is None
    _damage(c / "optimizer.bin", "garble")
    assert ckpt.verify_checkpoint(c).startswith("optimizer.bin: ")
    shutil.copy(full_run / "checkpoints" / "checkpoint-4" / "optimizer.bin", c / "optimizer.bin")
    (c / "model.safetensors").unlink()
    assert ckpt.verify_checkpoint(c).startswith("model.safetensors: missing")


# ---------------------------------------------------------------------------------------------------------------
# data files and folders: a wrong --data-dir, a malformed line, a truncated .gz
# ---------------------------------------------------------------------------------------------------------------


def _jsonl_gz(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


_ROW = json.dumps({"premise": "a man plays", "hypothesis": "a man plays music", "label": "entailment"})


def test_data_dir_pointing_nowhere_is_named_not_looked_up_on_the_hub(tmp_path):
    from hf_attn.training.embed.data import load_training_pairs

    for dataset in (None, ["snli_devtest_esnli/snli_dev.jsonl.gz"]):
        with pytest.raises(DataError, match="--data-dir .*nowhere: no such folder"):
            load_training_pairs(dataset, str(tmp_path / "nowhere"), seed=42)
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match="nli/missing.jsonl.gz: no such file"):
        load_training_pairs(["nli/missing.jsonl.gz"], str(tmp_path / "d"), seed=42)


@pytest.mark.parametrize("fault", ["bad_json", "not_object", "truncated_gz"])
def test_malformed_jsonl_or_truncated_gz_names_the_file_and_line(tmp_path, fault):
    from hf_attn.training.embed.pairs import load_pair_sources

    lines = [_ROW] * 30
    if fault == "bad_json":
        lines[11] = '{"premise": "a man", "hypothesis": '
    elif fault == "not_object":
        lines[11] = "[1, 2]"
    f = _jsonl_gz(tmp_path / "d" / "nli" / "train.jsonl.gz", lines * (200 if fault == "truncated_gz" else 1))
    if fault == "truncated_gz":
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2])
        match = r"train.jsonl.gz: the gzip stream is truncated or corrupt after line \d+"
    else:
        match = r"train.jsonl.gz line 12: " + ("not valid JSON" if fault == "bad_json" else "expected a JSON object")
    with pytest.raises(DataError, match=match):
        load_pair_sources(["nli/train.jsonl.gz"], tmp_path / "d")


def test_malformed_csv_row_names_the_file_and_line(tmp_path):
    from hf_attn.training.data import diagnose_file
    from hf_attn.training.embed.pairs import load_pair_sources

    d = tmp_path / "d"
    d.mkdir()
    rows = ["sentence1,sentence2,label"] + [f"a man {i},a man {i} again,1" for i in range(20)]
    rows[7] = "a man,a man,again,1,extra"
    (d / "para.csv").write_text("\n".join(rows) + "\n")
    assert diagnose_file(d / "para.csv") == f"{d / 'para.csv'} line 8: 5 fields, the first row has 3"
    with pytest.raises(DataError, match=r"para.csv line 8: 5 fields"):
        load_pair_sources(["para.csv"], d)


def test_lm_text_source_with_a_malformed_line_or_truncated_gz(tmp_path):
    from hf_attn.training.lm.data import load_byte_splits

    lines = [json.dumps({"text": "some article text " * 20})] * 50
    lines[30] = "{broken"
    with pytest.raises(DataError, match=r"wiki.jsonl.gz line 31: not valid JSON"):
        load_byte_splits(_jsonl_gz(tmp_path / "wiki.jsonl.gz", lines))
    good = _jsonl_gz(tmp_path / "ok.jsonl.gz", [lines[0]] * 2000)
    data = good.read_bytes()
    good.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="ok.jsonl.gz: the gzip stream is truncated"):
        load_byte_splits(good)


# ---------------------------------------------------------------------------------------------------------------
# output folders: a file, read-only, full disk
# ---------------------------------------------------------------------------------------------------------------


def test_output_dir_that_is_a_file_fails_before_training(data_dir, tmp_path, capsys):
    from hf_attn.training.embed import main, train_embedder

    f = tmp_path / "out.txt"
    f.write_text("not a folder")
    with pytest.raises(OutputError, match="out.txt is a file, not a folder"):
        train_embedder(_tiny_embed_args(data_dir, f))
    assert main(["--data-dir", str(data_dir), "--dataset", "nli/train.jsonl.gz", "--output-dir", str(f)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    from hf_attn.training.lm import train_lm
    from hf_attn.training.lm.args import LMTrainingArguments

    with pytest.raises(OutputError, match="is a file"):
        train_lm(LMTrainingArguments(data=str(data_dir / "text.txt"), output_dir=str(f), max_steps=1))


def test_read_only_or_full_output_folder_is_named(tmp_path, monkeypatch):
    import errno

    real_open = open

    def failing_open(path, *a, **k):
        if ".write-test-" in str(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(OutputError, match=r"--output-dir .*ro: cannot write there \(read-only or no write permission"):
        ckpt.check_output_dir(tmp_path / "ro")
    monkeypatch.undo()

    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    acc.prepare(torch.nn.Linear(2, 2))
    first = ckpt.save_checkpoint(acc, tmp_path / "ck", 1, {"step": 1})

    def full_disk(path, *a, **k):  # what torch's zip writer raises when the disk fills up
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4480 vs 4374")

    monkeypatch.setattr(acc, "save_state", full_disk)
    with pytest.raises(
        OutputError,
        match=r"could not write checkpoint .*checkpoint-2 \(the disk is full.*; \d+ MB free "
        r"on .*\); the previous checkpoint .*checkpoint-1 is intact",
    ):
        ckpt.save_checkpoint(acc, tmp_path / "ck", 2, {"step": 2})
    assert not (tmp_path / "ck" / ".tmp-checkpoint-2").exists()
    assert ckpt.resolve_resume("latest", tmp_path / "ck") == first

    def enospc(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match=r"could not write .*best_model \(the disk is full"):
        ckpt.atomic_write_dir(tmp_path / "best_model", enospc)


# ---------------------------------------------------------------------------------------------------------------
# hf-attn toy
# ---------------------------------------------------------------------------------------------------------------


def test_toy_device_cuda_without_cuda_and_load_of_a_non_toy_file(tmp_path, capsys, monkeypatch):
    from hf_attn.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["toy", "--device", "cuda", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda: CUDA is not available" in err and err.count("\n") == 1
    assert main(["toy", "--device", "potato", "--epochs", "1"]) == 2
    assert "not a torch device" in capsys.readouterr().err
    for name, content in (("notes.txt", b"hello"), ("weights.pt", None), ("half.pt", "truncated")):
        f = tmp_path / name
        if content is None:
            torch.save({"weight": torch.zeros(2)}, f)
        elif content == "truncated":
            torch.save({"format": "hf_attn.toy/1", "config": {}, "state_dict": {"w": torch.zeros(1000)}}, f)
            f.write_bytes(f.read_bytes()[:500])
        else:
            f.write_bytes(content)
        assert main(["toy", "--load", str(f)]) == 2
        err = capsys.readouterr().err
        assert f"{f} is not a model saved by `hf-attn toy --save_path`" in err and err.count("\n") == 1, err
