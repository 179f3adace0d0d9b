"""Publish hf_attn models: ``hf-attn export`` writes a Hub-ready folder, ``hf-attn push`` uploads it.

An exported folder works for someone who has never heard of hf_attn::

    config.json (auto_map)  model.safetensors  configuration_*.py  modeling_*.py  layers.py   remote code + weights
    tokenizer.json  tokenizer_config.json  ...                                               tokenizer
    modules.json  sentence_bert_config.json  config_sentence_transformers.json  [1_Normalize/] (embedders)
    README.md                                                                                the model card

`export` proves that before returning: `run_without_hf_attn` loads the folder in a fresh Python process where
``import hf_attn`` fails, through ``AutoModel``/``AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True)``
and (embedders) ``SentenceTransformer(..., trust_remote_code=True)``, and the outputs must match the source model's
within 1e-5.

`push` is ``HfApi.create_repo`` + ``HfApi.upload_folder``. Every failure a user can fix (not logged in, no network,
offline mode, a repo owned by someone else) becomes a `HubError` with one line saying what to do; the CLI prints
that line, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Mapping

from .model_cards import EXAMPLE_SENTENCES, architecture, render_model_card, set_model_id

VERIFY_ATOL = 1e-5

# Files an upload leaves out (editor/OS litter and caches; hidden files are never part of an export).
UPLOAD_IGNORE = [".*", "**/.*", "__pycache__", "**/__pycache__/**", "*.pyc"]


class HubError(RuntimeError):
    """A failure the user can fix; ``str(error)`` is one line saying what to do."""


class ExportVerificationError(RuntimeError):
    """The exported folder did not load, or did not reproduce the source model, without hf_attn."""


# ---------------------------------------------------------------------------------------------------------------
# A Python without hf_attn
# ---------------------------------------------------------------------------------------------------------------

_BLOCK_HF_ATTN = textwrap.dedent(
    """
    import importlib.abc, sys
    class _BlockHfAttn(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "hf_attn" or name.startswith("hf_attn."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked: this process must not use hf_attn)")
            return None
    sys.meta_path.insert(0, _BlockHfAttn())
    """
)


def run_without_hf_attn(
    code: str, cwd: str | Path | None = None, timeout: int = 300, check: bool = True, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python where ``import hf_attn`` fails (torch, transformers, sentence-transformers work).

    This is how an export proves it loads through remote code alone; tests use the same helper. The child runs
    offline (``HF_HUB_OFFLINE=1``) with its own remote-code module cache. With ``check`` (default), a non-zero
    exit raises ``RuntimeError`` carrying the child's output.
    """
    child_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    child_env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    with tempfile.TemporaryDirectory(prefix="hf_attn_modules_") as modules_cache:
        child_env.setdefault("HF_MODULES_CACHE", modules_cache)  # remote code copied fresh, never a stale module
        child_env.update(env or {})
        proc = subprocess.run(
            [sys.executable, "-c", _BLOCK_HF_ATTN + "\n" + textwrap.dedent(code)],
            cwd=str(cwd) if cwd else None,
            env=child_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    if check and proc.returncode != 0:
        raise RuntimeError(f"child process failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


# ---------------------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------------------

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model")


def _model_class(model_type: str):
    from .registry import get

    return get(model_type).export_class


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
    raise FileNotFoundError(f"no model in {path}: expected config.json (a save_pretrained folder or a run's best_model/)")


def load_checkpoint(checkpoint_dir: str | Path):
    """(model in eval mode, tokenizer or None, model_type) from a save_pretrained / sentence-transformers folder."""
    path = resolve_checkpoint(checkpoint_dir)
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    model = _model_class(model_type).from_pretrained(str(path)).eval()
    tokenizer = None
    if any((path / f).is_file() for f in _TOKENIZER_FILES):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path))
    return model, tokenizer, model_type


def _training_summary(path: Path) -> dict:
    """Training facts from a run's summary.json next to best_model/ (what train_embed / train_lm write), if any."""
    summary_file = path.parent / "summary.json"
    if not summary_file.is_file():
        return {}
    try:
        summary = json.loads(summary_file.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    keys = ("model", "params", "steps", "train_time_s", "samples_per_s", "best_dev_spearman", "best_dev_pearson",
            "batch_size", "learning_rate", "max_seq_length", "unsupervised", "teacher", "distill_target",
            "init_from_teacher", "dataset", "datasets", "tokens_per_s", "best_step", "best_val_bpc", "mean_span",
            "mean_period",
            "attention_flops_ratio",
            "optimizer", "mixed_precision", "device", "num_processes")
    return {k: summary[k] for k in keys if summary.get(k) is not None}


def _reference_inputs(model, tokenizer, kind: str):
    """A few inputs for the verification: texts (embedders) or token ids (language model)."""
    import torch

    if kind == "embedder":
        return {"texts": list(EXAMPLE_SENTENCES) + ["Attention lets every token look at every other token."]}
    g = torch.Generator().manual_seed(0)
    length = min(16, int(getattr(model.config, "max_position_embeddings", 16) or 16))
    return {"input_ids": torch.randint(0, model.config.vocab_size, (2, length), generator=g)}


def _uses_normalize(folder: Path) -> bool:
    modules = folder / "modules.json"
    return modules.is_file() and any(m.get("type", "").endswith("Normalize") for m in json.loads(modules.read_text()))


def _source_outputs(model, tokenizer, inputs: dict, folder: Path, kind: str) -> dict:
    """What the fresh process must reproduce, computed with the in-memory source model."""
    import torch

    with torch.no_grad():
        if kind != "embedder":
            return {"auto": model(input_ids=inputs["input_ids"]).logits.float()}
        batch = tokenizer(inputs["texts"], padding=True, truncation=True, return_tensors="pt")
        auto = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output.float()
        st_config = json.loads((folder / "sentence_bert_config.json").read_text())
        limit = st_config.get("max_seq_length")
        single = []
        for text in inputs["texts"]:  # one text at a time: no padding at all
            enc = tokenizer([text], truncation=limit is not None, max_length=limit, return_tensors="pt")
            single.append(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output[0])
        st = torch.stack(single).float()
        if _uses_normalize(folder):
            st = torch.nn.functional.normalize(st, dim=-1)
        return {"auto": auto, "sentence_transformers": st}


_VERIFY_CHILD = """
import json, sys, torch
folder, inputs_file, outputs_file, kind, auto_class = {args}
import transformers
inputs = torch.load(inputs_file)
model = getattr(transformers, auto_class).from_pretrained(folder, trust_remote_code=True).eval()
assert not type(model).__module__.startswith("hf_attn"), type(model).__module__
out = {{}}
with torch.no_grad():
    if kind == "embedder":
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        batch = tokenizer(inputs["texts"], padding=True, truncation=True, return_tensors="pt")
        out["auto"] = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output.float()
        from sentence_transformers import SentenceTransformer
        st = SentenceTransformer(folder, trust_remote_code=True, device="cpu")
        out["sentence_transformers"] = st.encode(inputs["texts"], convert_to_tensor=True, batch_size=8).float().cpu()
    else:
        out["auto"] = model(input_ids=inputs["input_ids"]).logits.float()
torch.save(out, outputs_file)
print("loaded", type(model).__module__, type(model).__name__)
"""


def verify_export(out_dir: str | Path, model=None, tokenizer=None, atol: float = VERIFY_ATOL, timeout: int = 600) -> dict:
    """Load `out_dir` without hf_attn and compare its outputs with `model`'s (default: the folder loaded with hf_attn).

    Returns ``{"auto": max_abs_diff, "sentence_transformers": max_abs_diff (embedders)}``; raises
    `ExportVerificationError` when loading fails or a difference exceeds `atol`.
    """
    import torch

    out_dir = Path(out_dir).resolve()
    if model is None:
        model, tokenizer, _ = load_checkpoint(out_dir)
    arch = architecture(model.config.model_type)
    inputs = _reference_inputs(model, tokenizer, arch.kind)
    expected = _source_outputs(model, tokenizer, inputs, out_dir, arch.kind)
    with tempfile.TemporaryDirectory(prefix="hf_attn_verify_") as tmp:
        inputs_file, outputs_file = Path(tmp) / "inputs.pt", Path(tmp) / "outputs.pt"
        torch.save(inputs, inputs_file)
        args = repr([str(out_dir), str(inputs_file), str(outputs_file), arch.kind, arch.auto_class])
        try:
            run_without_hf_attn(_VERIFY_CHILD.format(args=args), cwd=tmp, timeout=timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            raise ExportVerificationError(f"{out_dir} does not load without hf_attn: {exc}") from exc
        got = torch.load(outputs_file)
    diffs = {}
    for key, ref in expected.items():
        if got[key].shape != ref.shape:
            raise ExportVerificationError(f"{out_dir}: {key} output has shape {tuple(got[key].shape)}, source {tuple(ref.shape)}")
        diffs[key] = float((got[key] - ref).abs().max())
    bad = {k: d for k, d in diffs.items() if not d <= atol}
    if bad:
        raise ExportVerificationError(
            f"{out_dir}: outputs without hf_attn differ from the source model by {bad} (tolerance {atol})"
        )
    return diffs


def _byte_level_tokenizer_for(model):
    """The byte-level tokenizer (id = byte) for a language model trained on raw bytes without a saved tokenizer."""
    if architecture(model.config.model_type).kind != "causal_lm" or model.config.vocab_size < 256:
        return None
    from .modeling.tokenization_bytes import byte_level_tokenizer  # ids 0-255 bytes, then <|endoftext|>, <pad>

    return byte_level_tokenizer(model_max_length=int(model.config.max_position_embeddings))


# What from_pretrained was called with, which save_pretrained may copy into tokenizer_config.json: on a user's
# machine they would apply to every later load (local_files_only=True would even forbid the Hub).
LOAD_TIME_OPTIONS = ("is_local", "local_files_only", "cache_dir", "force_download", "proxies", "token", "revision",
                     "subfolder", "trust_remote_code", "_commit_hash", "name_or_path")


def _drop_load_time_options(folder: Path) -> None:
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    kept = {k: v for k, v in config.items() if k not in LOAD_TIME_OPTIONS}
    if kept != config:
        path.write_text(json.dumps(kept, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _prepare_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "config.json").is_file():
        raise FileExistsError(f"{out_dir} exists and is not an earlier export; choose an empty or new folder")


def export(
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    *,
    eval_results=None,
    training_config: Mapping[str, Any] | None = None,
    throughput=None,
    verify: bool = True,
    model_name: str | None = None,
    model_id: str | None = None,
    datasets: list[str] | None = None,
    license: str = "mit",
    base_model: str | None = None,
    onnx: bool = False,
) -> Path:
    """Write a Hub-ready folder for the model in `checkpoint_dir` to `out_dir` and return its path.

    ``checkpoint_dir``: a ``save_pretrained`` / `save_sentence_transformer` folder, or a training run's output
    folder (its ``best_model/`` is used and its ``summary.json`` fills the training section when
    ``training_config`` is None). ``eval_results``: MTEB result JSON (file, folder, dict or
    ``mteb_runner.evaluate``'s return) or the language model's ``{"bpc": ...}``; they become the card's
    ``model-index``. ``throughput``: measured rates for the card (left out when None). ``model_name``: the card's
    title (default: the folder name); ``model_id``: what the usage snippets load (default: the name; ``push`` sets
    the repo id). ``datasets`` / ``base_model`` / ``license``: the card's metadata (defaults: the data and the
    teacher named in the training configuration; MIT). With ``verify`` (default), the folder is loaded without
    hf_attn and compared with the source model before returning (`ExportVerificationError` on mismatch).

    ``onnx`` (embedders): also write ``onnx/model.onnx`` (`hf_attn.onnx_export`; checked against PyTorch with
    onnxruntime when ``verify``).

    An earlier export in `out_dir` is replaced; any other non-empty folder is refused.
    """
    source = resolve_checkpoint(checkpoint_dir)
    out_dir = Path(out_dir).resolve()
    if out_dir == source.resolve():
        raise ValueError("export: OUT_DIR must differ from the checkpoint folder")
    if onnx:  # refuse before loading anything (the config names the architecture)
        declared = json.loads((source / "config.json").read_text()).get("model_type") if (source / "config.json").is_file() else None
        if declared is not None and architecture(declared).kind != "embedder":
            raise ValueError(f"--onnx exports the embedders (TAN, GQAEmbedder), not {declared}")
    _prepare_out_dir(out_dir)
    model, tokenizer, model_type = load_checkpoint(source)
    arch = architecture(model_type)
    if arch.kind == "embedder" and tokenizer is None:
        raise FileNotFoundError(f"{source} has no tokenizer files; an embedder export needs its tokenizer")
    if onnx and arch.kind != "embedder":
        raise ValueError(f"--onnx exports the embedders (TAN, GQAEmbedder), not {model_type}")
    if training_config is None:
        training_config = _training_summary(source)

    # Write into a sibling temp folder, then swap it in: an interrupted export never leaves half a folder.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; an export is an ordinary folder
    try:
        if arch.kind == "embedder":
            from .embedding import save_sentence_transformer

            save_sentence_transformer(model, tokenizer, tmp)
        else:
            model.save_pretrained(str(tmp))
            if tokenizer is None:
                tokenizer = _byte_level_tokenizer_for(model)
            if tokenizer is not None:
                tokenizer.save_pretrained(str(tmp))
        _drop_load_time_options(tmp)
        name = model_name or out_dir.name
        card = render_model_card(
            model,
            model_name=name,
            model_id=model_id or name,
            eval_results=eval_results,
            training_config=training_config,
            throughput=throughput,
            datasets=datasets,
            has_tokenizer=tokenizer is not None,
            license=license,
            base_model=base_model,
        )
        card.save(str(tmp / "README.md"))
        if onnx:
            from .onnx_export import OnnxVerificationError, export_folder_onnx

            try:
                export_folder_onnx(tmp, model, verify=verify)
            except OnnxVerificationError as exc:
                raise ExportVerificationError(str(exc).replace(str(tmp), str(out_dir))) from exc
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if verify:
        verify_export(out_dir, model, tokenizer)
    return out_dir


# ---------------------------------------------------------------------------------------------------------------
# Push
# ---------------------------------------------------------------------------------------------------------------


def folder_files(folder: str | Path) -> list[tuple[str, int]]:
    """(relative path, size in bytes) of every file an upload sends, sorted."""
    import fnmatch

    folder = Path(folder)
    files = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in Path(rel).parts):
            if not fnmatch.fnmatch(rel, "*.pyc"):
                files.append((rel, p.stat().st_size))
    return files


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _explain(exc: BaseException, repo_id: str) -> str | None:
    """One line saying what to do about a huggingface_hub failure, or None if it is not one we know."""
    from huggingface_hub import errors

    if isinstance(exc, errors.OfflineModeIsEnabled):
        return "the Hub is switched off by HF_HUB_OFFLINE=1: unset it (and check your network) to push"
    if isinstance(exc, errors.LocalTokenNotFoundError):
        return "not logged in to the Hugging Face Hub: run `hf auth login` (or set HF_TOKEN to a write token) and try again"
    if isinstance(exc, errors.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 401:
            return "the Hub rejected your token (401): run `hf auth login` with a valid write token, or set HF_TOKEN"
        if status == 403:
            return (f"no write access to {repo_id} (403): it belongs to another user or organisation, or your token is "
                    f"read-only; push to a repo under your own name (--repo-id YOUR_NAME/MODEL) with a write token")
        if isinstance(exc, errors.RevisionNotFoundError):
            return f"revision not found in {repo_id}: check --revision"
        if isinstance(exc, errors.RepositoryNotFoundError) or status == 404:
            return (f"{repo_id} was not found and could not be created with your token: check the repo id (NAME or "
                    f"ORG/NAME you can write to) and run `hf auth login`")
        if status is not None and status >= 500:
            return f"the Hub answered {status} (a server problem): try again later"
        return f"the Hub refused the upload to {repo_id} ({status}): {str(exc).splitlines()[0]}"
    http_error = getattr(errors, "HTTPError", None)  # the HTTP client's base error: connection, timeout, ...
    if (http_error is not None and isinstance(exc, http_error)) or isinstance(exc, (ConnectionError, TimeoutError)):
        return "cannot reach huggingface.co (no network?): check your connection or proxy and run the push again"
    return None


def push(
    out_dir: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    print_fn=print,
) -> dict:
    """Upload an exported folder to the Hub repo `repo_id` (created if missing) -> ``{"repo_id", "url", "files", ...}``.

    The card's usage snippets are pointed at `repo_id` first. ``dry_run`` prints the files and sizes that would go
    up and the card's metadata, and touches neither the folder nor the network. Failures the user can fix raise
    `HubError` with one line saying what to do.
    """
    from huggingface_hub import ModelCard

    out_dir = Path(out_dir)
    if not (out_dir / "config.json").is_file() or not (out_dir / "README.md").is_file():
        raise HubError(f"{out_dir} is not an exported model folder (no config.json / README.md): run `hf-attn export` first")
    if not repo_id or repo_id.count("/") > 1 or repo_id.strip() != repo_id:
        raise HubError(f"invalid repo id {repo_id!r}: use NAME or YOUR_NAME/NAME")
    files = folder_files(out_dir)
    metadata = ModelCard((out_dir / "README.md").read_text(encoding="utf-8")).data.to_dict()
    report = {"repo_id": repo_id, "private": private, "revision": revision, "files": files, "metadata": metadata}

    if dry_run:
        total = sum(size for _, size in files)
        print_fn(f"dry run: would upload {len(files)} files ({_human(total)}) from {out_dir} to "
                 f"{'private ' if private else ''}model repo {repo_id}" + (f" (revision {revision})" if revision else ""))
        width = max(len(rel) for rel, _ in files)
        for rel, size in files:
            print_fn(f"  {rel:<{width}}  {_human(size):>9}")
        import yaml

        print_fn("card metadata:")
        print_fn(textwrap.indent(yaml.safe_dump(metadata, sort_keys=False).rstrip(), "  "))
        return {**report, "dry_run": True, "url": None}

    from huggingface_hub import HfApi, constants, errors, get_token

    # Known answers without a round trip: offline mode, then no token at all.
    if constants.HF_HUB_OFFLINE:
        raise HubError(_explain(errors.OfflineModeIsEnabled(), repo_id))
    if token is None and get_token() is None:
        raise HubError(_explain(errors.LocalTokenNotFoundError(), repo_id))
    api = HfApi(token=token)
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        full_id = getattr(repo_url, "repo_id", None) or repo_id
        readme = out_dir / "README.md"
        readme.write_text(set_model_id(readme.read_text(encoding="utf-8"), full_id), encoding="utf-8")
        if revision:
            api.create_branch(full_id, branch=revision, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=full_id,
            folder_path=str(out_dir),
            repo_type="model",
            revision=revision,
            commit_message=commit_message or "Upload hf_attn model",
            ignore_patterns=UPLOAD_IGNORE,
        )
    except Exception as exc:  # noqa: BLE001 - only the hub's own, known failures are translated; others re-raise
        message = _explain(exc, repo_id)
        if message is None:
            raise
        raise HubError(message) from exc
    url = getattr(commit, "commit_url", None) or str(repo_url)
    print_fn(f"pushed {len(files)} files to {repo_url}")
    return {**report, "repo_id": full_id, "dry_run": False, "url": str(repo_url), "commit_url": url}


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def export_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="model folder (save_pretrained / sentence-transformers) or a run's output folder")
    parser.add_argument("out_dir", help="where to write the Hub-ready folder")
    parser.add_argument("--eval-results", default=None, help="MTEB result JSON file or folder, or a JSON file with {\"bpc\": ...}")
    parser.add_argument("--training-config", default=None, help="JSON or YAML file of training settings for the card")
    parser.add_argument("--throughput", type=float, default=None, help="measured encode throughput (sentences/s) for the card")
    parser.add_argument("--model-name", default=None, help="the card's title (default: OUT_DIR's name)")
    parser.add_argument("--repo-id", default=None, help="repo id the card's snippets load (default: the model name)")
    parser.add_argument("--base-model", default=None,
                        help="Hub id for the card's base_model (default: the run's --teacher, when it had one)")
    parser.add_argument("--datasets", nargs="+", default=None, metavar="HUB_ID",
                        help="Hub dataset ids for the card's datasets (default: the data the run trained on)")
    parser.add_argument("--license", default="mit", help="the card's license (a Hub license id)")
    parser.add_argument("--onnx", action="store_true",
                        help="embedders: also write onnx/model.onnx (dynamic batch and length), checked against "
                             "PyTorch with onnxruntime (pip install 'hf-attn[onnx]')")
    parser.add_argument("--no-verify", action="store_true", help="skip loading the folder without hf_attn")


def _read_mapping(path: str) -> dict:
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_load(text) or {}
    return json.loads(text)


def export_run(args: argparse.Namespace) -> int:
    try:
        training_config = _read_mapping(args.training_config) if args.training_config else None
        out = export(
            args.checkpoint,
            args.out_dir,
            eval_results=args.eval_results,
            training_config=training_config,
            throughput=args.throughput,
            verify=not args.no_verify,
            model_name=args.model_name,
            model_id=args.repo_id,
            datasets=args.datasets,
            license=args.license,
            base_model=args.base_model,
            onnx=args.onnx,
        )
    except (FileNotFoundError, FileExistsError, ValueError, ExportVerificationError, ImportError) as exc:
        print(f"hf-attn export: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, ExportVerificationError) else 2
    print(f"exported to {out}" + ("" if args.no_verify else " (verified: loads without hf_attn, outputs match)"))
    for rel, size in folder_files(out):
        print(f"  {rel:<40} {_human(size):>9}")
    return 0


def push_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", help="a folder written by `hf-attn export`")
    parser.add_argument("--repo-id", required=True, help="NAME or YOUR_NAME/NAME on the Hub")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", default=None, help="branch to push to (created if missing)")
    parser.add_argument("--dry-run", action="store_true", help="print the files, sizes and card metadata; upload nothing")


def push_run(args: argparse.Namespace) -> int:
    try:
        push(args.out_dir, args.repo_id, private=args.private, revision=args.revision, dry_run=args.dry_run)
    except HubError as exc:
        print(f"hf-attn push: {exc}", file=sys.stderr)
        return 1
    return 0


__all__ = [
    "ExportVerificationError",
    "HubError",
    "export",
    "export_add_arguments",
    "export_run",
    "folder_files",
    "load_checkpoint",
    "push",
    "push_add_arguments",
    "push_run",
    "run_without_hf_attn",
    "verify_export",
]
