"""Probes: a table of bad inputs, misuses and faults, each with the answer a user must get.

Every console entry point (``hf-attn ...``, ``recipes/train_embed.py``, ``train_lm.py``, ``compare_attention.py``)
must answer a user error with one line ``prog: error: <what> (<how to fix>)`` and exit code 2, never a traceback;
the Python API with a TypeError / ValueError naming the argument. A row is (id, call, expected): the call is an argv
for an entry function run in this process, or a Python callable; expected is (exit code or exception type, a word
the message must contain) or ("ok", check). A new entry point or option that regresses shows up here.

The kill tests below make a folder replace die after each of its steps (``os._exit``, as ``kill -9``) and check that
nothing is lost; the lock tests run two writers into one folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
ATOMIC = REPO / "hf_attn" / "atomic.py"
NO_CUDA = not torch.cuda.is_available()


# ---------------------------------------------------------------------------------------------------------------
# shared material: a tiny data folder (conftest), a saved embedder, an export, a tiny training run
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory, data_dir):
    """Paths the rows refer to as {name}: files, folders, a saved embedder, an export, a checkpoint."""
    from test_embedding import make_model, make_tokenizer

    from hf_attn import save_sentence_transformer
    from hf_attn.hub import export

    root = tmp_path_factory.mktemp("probes")
    tok = make_tokenizer()
    st = save_sentence_transformer(make_model("gqa_embedder", len(tok)), tok, root / "st")
    exported = export(st, root / "exported", verify=False)
    (root / "a_file").write_text("not a folder\n")
    (root / "bad.yaml").write_text("batch_size: [1, 2\n")
    (root / "unknown.yaml").write_text("batch_sise: 32\n")
    (root / "text.txt").write_text((data_dir / "text.txt").read_text())
    (root / "full").mkdir()
    (root / "full" / "something.txt").write_text("x")
    (root / "state_ckpt").mkdir()
    (root / "state_ckpt" / "trainer_state.json").write_text('{"step": 1}')
    paths = {"root": root, "data": data_dir, "st": st, "exported": exported, "file": root / "a_file",
             "bad_yaml": root / "bad.yaml", "unknown_yaml": root / "unknown.yaml", "text": root / "text.txt",
             "full": root / "full", "state_ckpt": root / "state_ckpt", "nowhere": root / "no" / "such"}
    return {k: str(v) for k, v in paths.items()}


TINY_EMBED = ["--model", "gqa_embedder", "--hidden-size", "32", "--num-hidden-layers", "1", "--num-attention-heads",
              "2", "--num-key-value-heads", "1", "--intermediate-size", "64", "--embedding-size", "32", "--vocab-size",
              "300", "--max-seq-length", "24", "--batch-size", "8", "--grad-accum-steps", "1", "--max-steps", "2",
              "--eval-steps", "0", "--save-steps", "2", "--logging-steps", "1", "--dataset", "nli/train.jsonl.gz"]
TINY_LM = ["--hidden-size", "32", "--num-hidden-layers", "1", "--num-attention-heads", "2", "--block-size", "16",
           "--batch-size", "2", "--grad-accum-steps", "1", "--max-steps", "2", "--eval-steps", "0", "--save-steps", "0",
           "--eval-batches", "1", "--warmup-steps", "0"]


def _entry(kind: str):
    if kind == "train_embed":
        from hf_attn.training.embed import main
    elif kind == "train_lm":
        from hf_attn.training.lm import main
    elif kind == "compare":
        from hf_attn.training.lm.compare import main
    else:
        from hf_attn.cli import main
    return main


# (id, entry point, argv with {placeholders}, expected exit code, a word the one-line message must contain)
CLI_ROWS = [
    # --- recipes/train_embed.py: values refused before any data is read
    ("te-batch-size-0", "train_embed", ["--batch-size", "0"], 2, "--batch-size 0"),
    ("te-lr-negative", "train_embed", ["--lr", "-1"], 2, "--learning-rate"),
    ("te-max-steps-0", "train_embed", ["--max-steps", "0"], 2, "--max-steps 0"),
    ("te-warmup-ratio", "train_embed", ["--warmup-ratio", "1.5"], 2, "--warmup-ratio"),
    ("te-max-seq-length-0", "train_embed", ["--max-seq-length", "0"], 2, "--max-seq-length"),
    ("te-save-total-limit", "train_embed", ["--save-total-limit", "-1"], 2, "--save-total-limit"),
    ("te-eval-steps", "train_embed", ["--eval-steps", "-1"], 2, "--eval-steps"),
    ("te-temperatures", "train_embed", ["--min-temperature", "1", "--max-temperature", "0.5"], 2, "above"),
    ("te-distill-pool-negative", "train_embed", ["--distill-pool", "-5", "--teacher", "x"], 2, "--distill-pool -5"),
    ("te-distill-pool-no-teacher", "train_embed", ["--distill-pool", "5"], 2, "needs --teacher"),
    ("te-init-no-teacher", "train_embed", ["--init-from-teacher"], 2, "needs --teacher"),
    ("te-model-kwargs-not-json", "train_embed", ["--model-kwargs", "not json"], 2, "not valid JSON"),
    ("te-model-kwargs-list", "train_embed", ["--model-kwargs", "[1, 2]"], 2, "JSON object"),
    ("te-model-kwargs-typo", "train_embed", ["--model", "tan", "--model-kwargs", '{"chebyshev_degre": 4}'], 2,
     "did you mean 'chebyshev_degree'"),
    ("te-model-kwargs-unknown", "train_embed", ["--model-kwargs", '{"zzzqqq": 1}'], 2, "not a field"),
    ("te-vocab-size-5-bpe", "train_embed", ["--vocab-size", "5", "--tokenizer-type", "bpe"], 2, "--vocab-size 5"),
    ("te-vocab-size-5", "train_embed", [*TINY_EMBED, "--vocab-size", "5", "--data-dir", "{data}", "--output-dir",
                                        "{root}/v5"], 2, "smallest wordpiece tokenizer"),
    ("te-unknown-flag", "train_embed", ["--no-such-flag"], 2, "unrecognized"),
    ("te-model-choice", "train_embed", ["--model", "bogus"], 2, "invalid choice"),
    ("te-config-missing", "train_embed", ["--config", "{nowhere}.yaml"], 2, "no such file"),
    ("te-config-bad-yaml", "train_embed", ["--config", "{bad_yaml}"], 2, "not valid YAML"),
    ("te-config-unknown-key", "train_embed", ["--config", "{unknown_yaml}"], 2, "did you mean 'batch_size'"),
    ("te-push-bad-repo", "train_embed", ["--push-to-hub", "bad repo!!"], 2, "invalid --repo-id"),
    ("te-output-dir-file", "train_embed", ["--output-dir", "{file}"], 2, "is a file"),
    ("te-fp16-cpu", "train_embed", ["--mixed-precision", "fp16", "--output-dir", "{root}/fp16"], 2, "fp16"),
    ("te-resume-missing", "train_embed", ["--resume-from-checkpoint", "{nowhere}", "--output-dir", "{root}/rm"], 2,
     "no such folder"),
    ("te-data-dir-nowhere", "train_embed", ["--data-dir", "{nowhere}", "--output-dir", "{root}/dd"], 2,
     "no such folder"),
    # --- ... and those that need the data (tiny)
    ("te-heads-not-dividing", "train_embed", [*TINY_EMBED, "--num-attention-heads", "3", "--num-key-value-heads", "3",
                                              "--data-dir", "{data}", "--output-dir", "{root}/h3"], 2, "divisible"),
    ("te-teacher-missing", "train_embed", [*TINY_EMBED, "--teacher", "{nowhere}", "--data-dir", "{data}",
                                           "--output-dir", "{root}/tm"], 2, "--teacher"),
    ("te-tokenizer-missing", "train_embed", [*TINY_EMBED, "--tokenizer", "{nowhere}", "--data-dir", "{data}",
                                             "--output-dir", "{root}/tk"], 2, "--tokenizer"),
    ("te-max-seq-beyond-model", "train_embed", [*TINY_EMBED, "--max-seq-length", "4096", "--model-kwargs",
                                                '{"max_position_embeddings": 64}', "--data-dir", "{data}",
                                                "--output-dir", "{root}/ms"], 2, "beyond the model's limit"),
    # --- recipes/train_lm.py
    ("tl-batch-size-0", "train_lm", ["--batch-size", "0"], 2, "--batch-size 0"),
    ("tl-block-size-0", "train_lm", ["--block-size", "0"], 2, "--block-size"),
    ("tl-dropout-1", "train_lm", ["--dropout", "1.0"], 2, "--dropout"),
    ("tl-max-steps-negative", "train_lm", ["--max-steps", "-1"], 2, "--max-steps"),
    ("tl-position-choice", "train_lm", ["--position-embedding", "bogus"], 2, "invalid choice"),
    ("tl-push-bad-repo", "train_lm", ["--push-to-hub", "a/b/c"], 2, "invalid --repo-id"),
    ("tl-data-missing", "train_lm", [*TINY_LM, "--data", "{nowhere}", "--output-dir", "{root}/lm1"], 2, "no such"),
    ("tl-data-folder", "train_lm", [*TINY_LM, "--data", "{full}", "--output-dir", "{root}/lm2"], 2, "folder"),
    ("tl-fp16-cpu", "train_lm", [*TINY_LM, "--mixed-precision", "fp16", "--output-dir", "{root}/lm3"], 2, "fp16"),
    ("tl-periods-reversed", "train_lm", [*TINY_LM, "--data", "{text}", "--use-adaptive-attention",
                                         "--use-triangle-wave-masking", "--period-min-triangle-wave-masking", "8",
                                         "--period-max-triangle-wave-masking", "2", "--output-dir", "{root}/lm4"], 2,
     "period"),
    ("tl-attn-nonsense", "train_lm", [*TINY_LM, "--data", "{text}", "--attn-implementation", "nonsense",
                                      "--output-dir", "{root}/lm5"], 2, "nonsense"),
    # --- recipes/compare_attention.py
    ("ca-scaling-lens", "compare", ["--scaling-seq-lens", "0", "-5"], 2, "--scaling-seq-lens"),
    ("ca-scaling-position", "compare", ["--scaling-position", "bogus"], 2, "invalid choice"),
    ("ca-variants", "compare", ["--variants", "bogus", "--synthetic-data"], 2, "bogus"),
    ("ca-positions", "compare", ["--positions", "bogus", "--synthetic-data"], 2, "bogus"),
    ("ca-seq-len-0", "compare", ["--seq-len", "0"], 2, "--seq-len"),
    ("ca-data-dir-nowhere", "compare", ["--data-dir", "{nowhere}", "--output-dir", "{root}/ca"], 2, "no such folder"),
    # --- hf-attn export
    ("export-missing", "hf-attn", ["export", "{nowhere}", "{root}/out1"], 2, "no model in"),
    ("export-into-file", "hf-attn", ["export", "{st}", "{file}", "--no-verify"], 2, "is a file"),
    ("export-into-full-folder", "hf-attn", ["export", "{st}", "{full}", "--no-verify"], 2, "not an earlier export"),
    ("export-state-checkpoint", "hf-attn", ["export", "{state_ckpt}", "{root}/out2"], 2, "training-state"),
    ("export-throughput", "hf-attn", ["export", "{st}", "{root}/out3", "--throughput", "-5"], 2, "throughput"),
    ("export-license", "hf-attn", ["export", "{st}", "{root}/out4", "--license", "not-a-license"], 2,
     "not a Hub license"),
    ("export-license-typo", "hf-attn", ["export", "{st}", "{root}/out4", "--license", "apache2.0"], 2,
     "'apache-2.0'"),
    ("export-training-config-yaml", "hf-attn", ["export", "{st}", "{root}/out5", "--training-config", "{bad_yaml}"], 2,
     "not valid YAML"),
    ("export-training-config-missing", "hf-attn", ["export", "{st}", "{root}/out6", "--training-config",
                                                   "{nowhere}.json"], 2, "no such file"),
    ("export-onnx-lm", "hf-attn", ["export", "{nowhere}", "{root}/out7", "--bogus"], 2, "unrecognized"),
    # --- hf-attn push
    ("push-bad-repo", "hf-attn", ["push", "{exported}", "--repo-id", "bad repo!!", "--dry-run"], 2,
     "invalid --repo-id"),
    ("push-nested-repo", "hf-attn", ["push", "{exported}", "--repo-id", "a/b/c", "--dry-run"], 2, "invalid --repo-id"),
    ("push-not-export", "hf-attn", ["push", "{full}", "--repo-id", "me/m", "--dry-run"], 2, "not an exported"),
    ("push-no-repo-id", "hf-attn", ["push", "{exported}"], 2, "--repo-id"),
    # --- hf-attn eval
    ("eval-cuda", "hf-attn", ["eval", "{st}", "--device", "cuda"], 2, "CUDA is not available"),
    ("eval-device-potato", "hf-attn", ["eval", "{st}", "--device", "potato"], 2, "not a torch device"),
    ("eval-missing", "hf-attn", ["eval", "{nowhere}"], 2, "does not exist"),
    # --- hf-attn toy
    ("toy-plot-dir-file", "hf-attn", ["toy", "--plot-dir", "{file}", "--epochs", "1"], 2, "is a file"),
    ("toy-save-path-folder", "hf-attn", ["toy", "--save_path", "{root}", "--epochs", "1"], 2, "is a folder"),
    ("toy-cuda", "hf-attn", ["toy", "--device", "cuda", "--epochs", "1"], 2, "CUDA is not available"),
    ("toy-device-potato", "hf-attn", ["toy", "--device", "potato"], 2, "not a torch device"),
    ("toy-heads", "hf-attn", ["toy", "--model", "multihead", "--embed_dim", "30", "--num_heads", "8"], 2, "embed_dim"),
    ("toy-load-missing", "hf-attn", ["toy", "--load", "{nowhere}.pt"], 2, "no saved toy model"),
    ("toy-load-not-toy", "hf-attn", ["toy", "--load", "{file}"], 2, "not a model saved"),
    ("toy-interactive-no-tty", "hf-attn", ["toy", "--interactive"], 2, "terminal"),
    # --- hf-attn itself
    ("cli-unknown-command", "hf-attn", ["frobnicate"], 2, "invalid choice"),
    ("bench-unknown", "hf-attn", ["bench", "no_such_benchmark"], 2, "no benchmark named"),
    ("quickstart-data-dir-missing", "hf-attn", ["quickstart", "--data-dir", "{nowhere}"], 2, "does not exist"),
    ("quickstart-model-choice", "hf-attn", ["quickstart", "--model", "bogus"], 2, "invalid choice"),
]
if not NO_CUDA:  # these probe what a CPU-only machine answers
    CLI_ROWS = [r for r in CLI_ROWS if r[0] not in ("te-fp16-cpu", "tl-fp16-cpu", "eval-cuda", "toy-cuda")]


def run_cli(kind: str, argv: list[str], capsys) -> tuple[int, str]:
    """(exit code, stderr) of an entry point run in this process; argparse's own exit counts as its code."""
    capsys.readouterr()
    try:
        code = _entry(kind)(argv)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("row_id,kind,argv,code,word", CLI_ROWS, ids=[r[0] for r in CLI_ROWS])
def test_cli_probe(row_id, kind, argv, code, word, env, capsys, monkeypatch):
    monkeypatch.chdir(env["root"])  # default output folders land in the temporary folder
    monkeypatch.delenv("HF_ATTN_DEBUG", raising=False)
    argv = [_fill(a, env) for a in argv]
    got, err = run_cli(kind, argv, capsys)
    assert got == code, err
    assert word in err, err
    assert "Traceback" not in err
    if "usage:" not in err:  # argparse's own errors print the usage line first
        errors = [line for line in err.splitlines() if ": error: " in line]
        assert len(errors) == 1 and errors[0].startswith(_prog(kind, argv)), err


def _fill(arg: str, env: dict) -> str:
    for name, value in env.items():
        arg = arg.replace("{" + name + "}", value)
    return arg


def _prog(kind: str, argv: list[str]) -> str:
    return {"train_embed": "train_embed.py", "train_lm": "train_lm.py", "compare": "compare_attention.py"}.get(
        kind, f"hf-attn {argv[0]}")


def test_debug_flag_and_env_show_the_traceback(env, capsys, monkeypatch):
    argv = ["export", env["nowhere"], env["root"] + "/dbg"]
    code, err = run_cli("hf-attn", ["--debug", *argv], capsys)
    assert code == 2 and "Traceback" in err and "hf-attn export: error: no model in" in err
    monkeypatch.setenv("HF_ATTN_DEBUG", "1")
    code, err = run_cli("train_embed", ["--batch-size", "0"], capsys)
    assert code == 2 and "Traceback" in err and "train_embed.py: error: --batch-size 0" in err


@pytest.mark.slow  # a fresh interpreter importing torch and transformers: 5-20 s
def test_a_recipe_run_as_a_script_prints_one_line(env):
    proc = subprocess.run([sys.executable, str(REPO / "recipes" / "train_embed.py"), "--model-kwargs", "not json"],
                          capture_output=True, text=True, timeout=300, cwd=env["root"],
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("train_embed.py: error: --model-kwargs")
    assert "Traceback" not in proc.stderr


def test_flag_and_model_kwargs_for_the_same_field_say_which_wins(capsys):
    from hf_attn.training.embed.args import finalize_args, parse_args

    args = finalize_args(parse_args(["--hidden-size", "32", "--model-kwargs", '{"hidden_size": 64}']))
    err = capsys.readouterr().err
    assert "--hidden-size wins" in err and err.count("note:") == 1
    from hf_attn import registry
    from hf_attn.training.embed.args import model_kwargs

    assert "hidden_size" not in model_kwargs(args, registry.get(args.model).config_class, log=lambda *a: None)


def test_config_value_overridden_by_a_flag_is_named(env, capsys):
    from hf_attn.training.embed.args import parse_args

    cfg = Path(env["root"]) / "bs.yaml"
    cfg.write_text("batch_size: 32\n")
    assert parse_args(["--config", str(cfg), "--batch-size", "64"]).batch_size == 64
    assert "the command line's --batch-size 64 wins" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# the Python API: (id, call(env, embedder), expected exception type or "ok", a word of the message / a check)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder(env):
    from hf_attn import load_model

    return load_model(env["st"], device="cpu")


def _copy(env, name: str) -> Path:
    dest = Path(env["root"]) / f"copy-{name}-{time.monotonic_ns()}"
    shutil.copytree(env["st"], dest)
    return dest


def _garbage_weights(env):
    from hf_attn import load_model

    folder = _copy(env, "garbage")
    w = folder / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-64:] = os.urandom(64)  # same size, header intact: only the manifest can tell
    w.write_bytes(bytes(data))
    return load_model(folder)


def _edited_card(env):
    from hf_attn import load_model

    folder = _copy(env, "card")
    (folder / "README.md").write_text("# my own words about this model\n")
    return load_model(folder).encode("a man").shape


def _damaged_manifest(env, content):
    from hf_attn import load_model

    folder = _copy(env, "manifest")
    (folder / "model_files.json").write_text(json.dumps(content))
    return load_model(folder)


def _save_pretrained_into_file(env):
    from test_embedding import make_model

    make_model("tan", 100).save_pretrained(env["file"])


def _save_st_into_file(env):
    from test_embedding import make_model, make_tokenizer

    from hf_attn import save_sentence_transformer

    tok = make_tokenizer()
    save_sentence_transformer(make_model("tan", len(tok)), tok, env["file"])


def _tan_over_gqa(env):
    from test_embedding import make_model, make_tokenizer

    from hf_attn import load_model, save_sentence_transformer

    folder = _copy(env, "tan-over-gqa")
    tok = make_tokenizer()
    save_sentence_transformer(make_model("tan", len(tok)), tok, folder)
    left = sorted(p.name for p in folder.glob("*gqa*"))
    assert left == [] and not (folder / "1_Normalize").exists(), left
    assert load_model(folder).encode(["a man plays"]).shape == (1, 24)
    return True


def _checkpoint_with_state(env, state, folder_step=3, manifest=None):
    from hf_attn.training.checkpoint import verify_checkpoint

    c = Path(env["root"]) / f"ckpt-{time.monotonic_ns()}" / f"checkpoint-{folder_step}"
    c.mkdir(parents=True)
    (c / "trainer_state.json").write_text(json.dumps(state))
    if manifest is not None:
        (c / "checkpoint_files.json").write_text(json.dumps(manifest))
    (c / "model.safetensors").write_bytes(b"x")
    problem = verify_checkpoint(c)
    if problem:
        raise ValueError(problem)
    return problem


def _byte_decode(ids):
    from hf_attn.modeling.tokenization_bytes import byte_level_tokenizer

    return byte_level_tokenizer().decode(ids)


def _license(name):
    from hf_attn.push import check_license

    return check_license(name)


def _repo_id(name):
    from hf_attn.push import check_repo_id

    return check_repo_id(name)


API_ROWS = [
    ("encode-dict", lambda env, e: e.encode({"a": 1}), TypeError, "dict"),
    ("encode-set", lambda env, e: e.encode({"x", "y"}), TypeError, "set"),
    ("encode-frozenset", lambda env, e: e.encode(frozenset({"x"})), TypeError, "frozenset"),
    ("encode-none", lambda env, e: e.encode(None), TypeError, "None"),
    ("encode-bytes", lambda env, e: e.encode(b"x"), TypeError, "bytes"),
    ("encode-int-in-list", lambda env, e: e.encode(["a", 3]), TypeError, "position 1"),
    ("encode-token-embeddings", lambda env, e: e.encode(["a"], output_value="token_embeddings"), ValueError,
     "output_value"),
    ("encode-empty-list", lambda env, e: e.encode([]).shape, "ok", (0, 24)),
    ("encode-str", lambda env, e: e.encode("a man").shape, "ok", (24,)),
    ("find-similar-set", lambda env, e: e.find_similar("q", {"a", "b"}), TypeError, "set"),
    ("find-similar-dict", lambda env, e: e.find_similar("q", {"a": 1}), TypeError, "dict"),
    ("find-similar-str", lambda env, e: e.find_similar("q", "abc"), TypeError, "wrap a single candidate"),
    ("find-similar-top-k-negative", lambda env, e: e.find_similar("q", ["a"], top_k=-1), ValueError, "0 or more"),
    ("find-similar-top-k-0", lambda env, e: e.find_similar("q", ["a"], top_k=0), "ok", []),
    ("load-model-hand-edited-card", lambda env, e: _edited_card(env), "ok", (24,)),
    ("load-model-garbage-weights", lambda env, e: _garbage_weights(env), ValueError, "sha256 differs"),
    ("load-model-manifest-list", lambda env, e: _damaged_manifest(env, ["model.safetensors"]), ValueError, "damaged"),
    ("load-model-manifest-no-size", lambda env, e: _damaged_manifest(env, {"config.json": {"sha256": "0"}}),
     ValueError, "damaged"),
    ("load-model-missing", lambda env, e: __import__("hf_attn").load_model(env["nowhere"]), FileNotFoundError,
     "does not exist"),
    ("save-pretrained-into-file", lambda env, e: _save_pretrained_into_file(env), NotADirectoryError, "is a file"),
    ("save-st-into-file", lambda env, e: _save_st_into_file(env), NotADirectoryError, "is a file"),
    ("tan-over-gqa-leaves-no-old-code", lambda env, e: _tan_over_gqa(env), "ok", True),
    ("ckpt-step-not-a-number", lambda env, e: _checkpoint_with_state(env, {"step": "abc"}), ValueError, "not a count"),
    ("ckpt-step-disagrees-with-folder", lambda env, e: _checkpoint_with_state(env, {"step": 7}), ValueError,
     "says step 7"),
    ("ckpt-manifest-a-list", lambda env, e: _checkpoint_with_state(env, {"step": 3}, manifest=["x"]), ValueError,
     "damaged"),
    ("ckpt-manifest-no-size", lambda env, e: _checkpoint_with_state(env, {"step": 3},
                                                                   manifest={"model.safetensors": {"sha256": "0"}}),
     ValueError, "damaged"),
    ("byte-decode-out-of-range", lambda env, e: _byte_decode([300, -1]), ValueError, "outside"),
    ("byte-decode-negative", lambda env, e: _byte_decode([-1]), ValueError, "outside"),
    ("byte-decode-ok", lambda env, e: _byte_decode([104, 105]), "ok", "hi"),
    ("license-unknown", lambda env, e: _license("not-a-license"), ValueError, "not a Hub license"),
    ("license-ok", lambda env, e: _license("apache-2.0"), "ok", "apache-2.0"),
    ("repo-id-bad", lambda env, e: _repo_id("bad repo!!"), Exception, "invalid --repo-id"),
    ("repo-id-ok", lambda env, e: _repo_id("me/model"), "ok", "me/model"),
]


@pytest.mark.parametrize("row_id,call,expected,word", API_ROWS, ids=[r[0] for r in API_ROWS])
def test_api_probe(row_id, call, expected, word, env, embedder):
    if expected == "ok":
        assert call(env, embedder) == word
        return
    with pytest.raises(expected) as info:
        call(env, embedder)
    assert word in str(info.value)


def test_toy_save_path_into_missing_folders_saves_there(tmp_path, capsys):
    target = tmp_path / "new" / "dir" / "toy.pt"
    code, err = run_cli("hf-attn", ["toy", "--epochs", "1", "--seq_length", "4", "--embed_dim", "16", "--save_path",
                                    str(target), "--plot-dir", ""], capsys)
    assert code == 0, err
    assert target.is_file() and target.stat().st_size > 0


def test_the_probe_table_is_large_enough():
    assert len(CLI_ROWS) + len(API_ROWS) >= 80


# ---------------------------------------------------------------------------------------------------------------
# nothing lost: kill a folder replace after each step; two writers into one folder
# ---------------------------------------------------------------------------------------------------------------


def _run_atomic(code: str, env_extra: dict | None = None, timeout: int = 60) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter with ``atomic`` loaded by path (no torch import: fast)."""
    prelude = ("import importlib.util, sys\n"
               f"spec = importlib.util.spec_from_file_location('atomic', {str(ATOMIC)!r})\n"
               "atomic = importlib.util.module_from_spec(spec); spec.loader.exec_module(atomic)\n")
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env_extra or {})})


def _folder(path: Path, tag: str) -> Path:
    path.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "layers.py"):
        (path / name).write_text(f"{tag}:{name}")
    return path


def _version(path: Path) -> str | None:
    """'old' or 'new' when ``path`` is a complete folder of that version, None otherwise."""
    if not path.is_dir():
        return None
    tags = {(path / n).read_text().split(":")[0] for n in ("config.json", "model.safetensors", "tokenizer.json",
                                                           "layers.py") if (path / n).is_file()}
    files = len(list(path.iterdir()))
    return tags.pop() if len(tags) == 1 and files == 4 else None


@pytest.mark.parametrize("step", [1, 2, 3])
def test_a_replace_killed_after_any_step_loses_nothing(tmp_path, step):
    final = _folder(tmp_path / "OUT", "old")
    code = (f"from pathlib import Path\nfinal = Path({str(final)!r})\n"
            "def write(tmp):\n"
            "    for n in ('config.json', 'model.safetensors', 'tokenizer.json', 'layers.py'):\n"
            "        (tmp / n).write_text('new:' + n)\n"
            "atomic.write_folder(final, write)\n")
    proc = _run_atomic(code, {"HF_ATTN_DIE_AFTER_SWAP_STEP": str(step)})
    assert proc.returncode == 137, proc.stderr
    # at the moment of death: a complete version under OUT, or (after step 2) the old one under its aside name
    if step == 2:
        assert not final.exists() and _version(tmp_path / ".OUT.old") == "old"
    else:
        assert _version(final) == ("old" if step == 1 else "new")
    # the next run recovers: OUT complete, nothing left beside it
    proc = _run_atomic(f"from pathlib import Path\nprint(atomic.recover(Path({str(final)!r})))")
    assert proc.returncode == 0, proc.stderr
    assert _version(final) == ("new" if step == 3 else "old")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["OUT"]
    # and a replace run to its end gives the new version
    proc = _run_atomic(code)
    assert proc.returncode == 0 and _version(final) == "new"


@pytest.mark.slow  # a fresh interpreter that imports hf_attn and exports: ~20 s on a busy 2-core machine
def test_an_export_killed_during_its_swap_keeps_the_earlier_export(env, tmp_path, capsys):
    """hf-attn export over an earlier export, killed when the old folder is aside: the next export restores it, and
    push refuses the folder in between with a line naming the leftover."""
    out = tmp_path / "OUT"
    shutil.copytree(env["exported"], out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    code = ("import sys\nfrom hf_attn.hub import export\n"
            f"export({env['st']!r}, {str(out)!r}, verify=False, model_name='second')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "HF_ATTN_DIE_AFTER_SWAP_STEP": "2"})
    assert proc.returncode == 137, proc.stderr[-2000:]
    assert not out.exists() and (tmp_path / ".OUT.old").is_dir()
    code, err = run_cli("hf-attn", ["push", str(out), "--repo-id", "me/m", "--dry-run"], capsys)
    assert code == 2 and "interrupted export" in err
    from hf_attn import atomic

    assert sorted(p.name for p in tmp_path.iterdir()) == [".OUT.lock", ".OUT.old", ".OUT.tmp"]
    with atomic.FolderLock(out, beside=True):  # what the next export does first: take the stale lock, recover
        atomic.recover(out)
    assert "taking over a stale lock" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["OUT"]
    code, err = run_cli("hf-attn", ["push", str(out), "--repo-id", "me/m", "--dry-run"], capsys)
    assert code == 0, err


def test_interrupted_checkpoint_writes_are_recovered_before_resuming(tmp_path, capsys):
    """A checkpoint saved again and killed with the old one aside comes back; a half-deleted rotated checkpoint and a
    half-written new one are removed -- before ``latest`` is looked for."""
    from hf_attn.training.checkpoint import latest_checkpoint, locked_output_dir

    ckpts = tmp_path / "run" / "checkpoints"
    for name in (".checkpoint-4.old", ".checkpoint-2.del", ".tmp-checkpoint-6"):
        (ckpts / name).mkdir(parents=True)
        (ckpts / name / "trainer_state.json").write_text('{"step": 4}')
    with locked_output_dir(tmp_path / "run"):
        assert latest_checkpoint(ckpts) == ckpts / "checkpoint-4"
    assert sorted(p.name for p in ckpts.iterdir()) == ["checkpoint-4"]
    assert "restored" in capsys.readouterr().err


def test_push_refuses_an_export_that_does_not_match_its_manifest(env, tmp_path, capsys):
    out = tmp_path / "OUT"
    shutil.copytree(env["exported"], out)
    (out / "tokenizer.json").unlink()
    code, err = run_cli("hf-attn", ["push", str(out), "--repo-id", "me/m", "--dry-run"], capsys)
    assert code == 2 and "does not match its manifest (tokenizer.json: missing)" in err
    (out / "model_files.json").unlink()
    code, err = run_cli("hf-attn", ["push", str(out), "--repo-id", "me/m", "--dry-run"], capsys)
    assert code == 2 and "has no model_files.json" in err


HOLD = ("from pathlib import Path\nimport time\n"
        "lock = atomic.FolderLock(Path(sys.argv[1])).acquire()\nprint('held', flush=True)\ntime.sleep(60)\n")


def test_two_trainings_into_one_folder(tmp_path, data_dir, capsys):
    """A second run into a folder in use stops at once naming the running process; once that process is gone
    (killed: its lock stays behind), the next run takes the stale lock over, says so, and trains."""
    out = tmp_path / "run"
    prelude = ("import importlib.util, sys\n"
               f"spec = importlib.util.spec_from_file_location('atomic', {str(ATOMIC)!r})\n"
               "atomic = importlib.util.module_from_spec(spec); spec.loader.exec_module(atomic)\n")
    holder = subprocess.Popen([sys.executable, "-c", prelude + HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        argv = [*TINY_EMBED, "--data-dir", str(data_dir), "--output-dir", str(out)]
        t0 = time.perf_counter()
        code, err = run_cli("train_embed", argv, capsys)
        assert code == 2 and f"is in use by another run (process {holder.pid}" in err, err
        assert time.perf_counter() - t0 < 30 and not (out / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()
    assert (out / ".hf_attn.lock").exists()  # killed: the lock stays, and is stale now
    code, err = run_cli("train_embed", argv, capsys)
    assert code == 0, err
    assert f"taking over a stale lock (process {holder.pid}" in err
    assert (out / "checkpoints" / "checkpoint-2").is_dir() and not (out / ".hf_attn.lock").exists()
    # resuming with other settings than the run saved, or fewer steps than done, is refused naming the difference
    for extra, word in ((["--batch-size", "4"], "was trained with --batch-size 8"),
                        (["--hidden-size", "64", "--intermediate-size", "64"], "another architecture"),
                        (["--model", "tan"], "another architecture"),
                        (["--max-steps", "1"], "already done 2 steps")):
        code, err = run_cli("train_embed", [*argv, *extra, "--resume-from-checkpoint", "latest"], capsys)
        assert code == 2 and word in err, err


def test_lock_of_another_host_is_not_taken_over(tmp_path):
    from hf_attn.atomic import LOCK_NAME, FolderLock, FolderLockedError

    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere-" + socket.gethostname()}))
    with pytest.raises(FolderLockedError, match="on host elsewhere-.*delete .*hf_attn.lock"):
        FolderLock(tmp_path).acquire()
    with FolderLock(tmp_path / "other"), FolderLock(tmp_path / "other"):  # re-entrant in one process
        assert (tmp_path / "other" / LOCK_NAME).exists()
    assert not (tmp_path / "other" / LOCK_NAME).exists()
