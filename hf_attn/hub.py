"""Export hf_attn models: ``hf-attn export`` writes a Hub-ready folder (``hf-attn push`` uploads it).

An exported folder works for someone who has never heard of hf_attn::

    config.json (auto_map)  model.safetensors  configuration_*.py  modeling_*.py  layers.py   remote code + weights
    tokenizer.json  tokenizer_config.json  ...                                               tokenizer
    modules.json  sentence_bert_config.json  config_sentence_transformers.json  [1_Normalize/] (embedders)
    README.md                                                                                the model card

`export` proves that before returning: `run_without_hf_attn` loads the folder in a fresh Python process where
``import hf_attn`` fails, through ``AutoModel``/``AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True)``
and (embedders) ``SentenceTransformer(..., trust_remote_code=True)``, and the outputs must match the source model's
within 1e-5.

Uploading lives in `hf_attn.push` (re-exported here as ``hub.push``).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch

from . import atomic
from .export_check import ExportVerificationError, run_without_hf_attn, verify_export
from .exported import load_exported_model, model_type_of, resolve_checkpoint
from .integrity import write_manifest
from .model_cards import architecture, render_model_card
from .model_cards.record import card_facts
from .onnx_export import ONNX_FILE, OnnxVerificationError, export_folder_onnx, quantize_folder
from .push import HubError, check_license, folder_files, human_size, push  # noqa: F401  (hf_attn.hub.push, as documented)

# ---------------------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------------------

TRAINING_RECORD = "training_summary.json"  # the run's facts an export keeps, so a re-export renders the same card


def _training_summary(path: Path) -> dict:
    """Training facts for the card: an earlier export's ``training_summary.json``, else the run's summary.json next
    to best_model/ (what train_embed / train_lm write), else nothing."""
    summary_file = path / TRAINING_RECORD
    if not summary_file.is_file():
        summary_file = path.parent / "summary.json"
    if not summary_file.is_file():
        return {}
    try:
        summary = json.loads(summary_file.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return card_facts(summary)


def _byte_level_tokenizer_for(model):
    """The byte-level tokenizer (id = byte) for a language model trained on raw bytes without a saved tokenizer."""
    if architecture(model.config.model_type).kind != "causal_lm" or model.config.vocab_size < 256:
        return None
    from .modeling.tokenization_bytes import byte_level_tokenizer  # ids 0-255 bytes, then <|endoftext|>, <pad>

    return byte_level_tokenizer(
        model_max_length=int(model.config.max_position_embeddings), vocab_size=model.config.vocab_size
    )


def _set_generation_tokens(generation_config, tokenizer, vocab_size: int) -> None:
    """bos / eos / pad of `generation_config` from `tokenizer`, where unset and the id exists in the model."""
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        token_id = getattr(tokenizer, name, None)
        if getattr(generation_config, name, None) is None and token_id is not None and token_id < vocab_size:
            setattr(generation_config, name, token_id)


# What from_pretrained was called with, which save_pretrained may copy into tokenizer_config.json: on a user's
# machine they would apply to every later load (local_files_only=True would even forbid the Hub).
LOAD_TIME_OPTIONS = (
    "is_local",
    "local_files_only",
    "cache_dir",
    "force_download",
    "proxies",
    "token",
    "revision",
    "subfolder",
    "trust_remote_code",
    "_commit_hash",
    "name_or_path",
)


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


def _check_onnx_request(model_type: str | None) -> None:
    if model_type is not None and architecture(model_type).kind != "embedder":
        raise ValueError(f"--onnx exports the embedders (TAN, GQAEmbedder), not {model_type}")


def _save_model_and_tokenizer(model, tokenizer, kind: str, folder: Path):
    """Weights, remote code and tokenizer (a sentence-transformers folder for an embedder); returns the tokenizer
    saved (a language model trained on raw bytes gets the byte-level one)."""
    if kind == "embedder":
        from .embedding import save_sentence_transformer

        save_sentence_transformer(model, tokenizer, folder)
    else:
        if tokenizer is None:
            tokenizer = _byte_level_tokenizer_for(model)
        if tokenizer is not None:  # generation_config.json names its bos / eos / pad, so pipelines batch and stop
            _set_generation_tokens(model.generation_config, tokenizer, model.config.vocab_size)
        model.save_pretrained(str(folder))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(folder))
    _drop_load_time_options(folder)
    return tokenizer


def _check_request(source: Path, out_dir: Path, onnx: bool, quantize: str | None) -> bool:
    """Refuse a bad request before loading anything; returns whether ONNX is written (asked, implied by
    ``quantize``, or an earlier export being re-exported had it)."""
    if out_dir == source.resolve():
        raise ValueError("export: OUT_DIR must differ from the checkpoint folder")
    if quantize not in (None, "int8"):
        raise ValueError(f"--quantize: expected int8, got {quantize!r}")
    onnx = onnx or quantize is not None or (source / "onnx" / ONNX_FILE).is_file()
    if onnx:  # the config names the architecture
        _check_onnx_request(model_type_of(source))
    return onnx


def _earlier_facts(source: Path, training_config, eval_results):
    """(training facts, eval results) for the card, where the caller gave none: the run's summary.json or an
    earlier export's training_summary.json, and an earlier export's model-index (a re-export keeps its card)."""
    if training_config is None:
        training_config = _training_summary(source)
    if eval_results is None and (source / "README.md").is_file():
        from huggingface_hub import ModelCard

        eval_results = ModelCard.load(source / "README.md").data.eval_results
    return training_config, eval_results


def _write_onnx(folder: Path, out_dir: Path, model, verify: bool, quantize: str | None, stsb_data_dir) -> dict:
    """onnx/model.onnx (and its int8 version) in `folder` -> the card's ONNX record; failures name `out_dir`."""
    try:
        export_folder_onnx(folder, model, verify=verify)
        record = {"files": {ONNX_FILE: {"bytes": (folder / "onnx" / ONNX_FILE).stat().st_size}}}
        if quantize:
            record = quantize_folder(folder, data_dir=stsb_data_dir)
    except OnnxVerificationError as exc:
        raise ExportVerificationError(str(exc).replace(str(folder), str(out_dir))) from exc
    return record


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
    quantize: str | None = None,
    stsb_data_dir: str | Path | None = None,
    weights_dtype: str = "float32",
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
    onnxruntime when ``verify``). ``quantize="int8"`` (implies ``onnx``): also ``onnx/model_qint8_quantized.onnx``
    (onnxruntime dynamic quantisation), scored against the fp32 graph on the STS-B test pairs read from
    ``stsb_data_dir`` (a folder like ../shared/data; None: the Hub); the scores and sizes go into the card.

    ``weights_dtype="float16"``: the safetensors weights (parameters and saved buffers, e.g. TAN's token code) are
    stored in float16, half the file; the model is rounded to float16 first, so the folder loads (as float32)
    exactly the model that was verified.

    Re-exporting an export keeps its card: the training facts (its ``training_summary.json``), the eval results
    (its card's model-index) and, when it had them, the ONNX graph (rebuilt and verified).

    An earlier export in `out_dir` is replaced; any other non-empty folder is refused.
    """
    check_license(license)
    if throughput is not None and isinstance(throughput, (int, float)) and not throughput > 0:
        raise ValueError(f"throughput: expected a positive rate (sentences/s), got {throughput}")
    if weights_dtype not in WEIGHTS_DTYPES:
        raise ValueError(f"--weights-dtype: expected one of {', '.join(WEIGHTS_DTYPES)}, got {weights_dtype!r}")
    source = resolve_checkpoint(checkpoint_dir)
    out_dir = Path(out_dir).resolve()
    onnx = _check_request(source, out_dir, onnx, quantize)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file, not a folder (pass a folder for the export: new, empty, or an "
                              "earlier export)")
    with atomic.FolderLock(out_dir, beside=True):  # one export into OUT_DIR at a time
        atomic.recover(out_dir)  # an earlier export killed during its swap: put the complete version back
        _prepare_out_dir(out_dir)
        model, tokenizer = _write_export(
            source, out_dir, eval_results=eval_results, training_config=training_config, throughput=throughput,
            verify=verify, model_name=model_name, model_id=model_id, datasets=datasets, license=license,
            base_model=base_model, onnx=onnx, quantize=quantize, stsb_data_dir=stsb_data_dir,
            weights_dtype=weights_dtype,
        )

    if verify:
        verify_export(out_dir, model, tokenizer)
    return out_dir


WEIGHTS_DTYPES = ("float32", "float16")


@torch.no_grad()
def _round_to_float16(model) -> None:
    """Every floating parameter and buffer of ``model`` rounded to the nearest float16 value (kept in its dtype)."""
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_floating_point():
            t.copy_(t.to(torch.float16).to(t.dtype))


def _store_float16(folder: Path) -> None:
    """Rewrite the safetensors weight files in ``folder`` with their floating tensors in float16 (lossless after
    `_round_to_float16`); transformers loads them back in the model's dtype."""
    from safetensors.torch import load_file, save_file

    for path in folder.glob("*.safetensors"):
        tensors = load_file(str(path))
        save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in tensors.items()}, str(path),
                  metadata={"format": "pt"})


def _write_export(source: Path, out_dir: Path, *, eval_results, training_config, throughput, verify, model_name,
                  model_id, datasets, license, base_model, onnx, quantize, stsb_data_dir, weights_dtype="float32"):
    """The body of `export`, under OUT_DIR's lock: load the model, write the folder beside OUT_DIR, swap it in;
    returns (model, tokenizer) for the verification."""
    model, tokenizer, model_type = load_exported_model(source)
    arch = architecture(model_type)
    if arch.kind == "embedder" and tokenizer is None:
        raise FileNotFoundError(f"{source} has no tokenizer files; an embedder export needs its tokenizer")
    training_config, eval_results = _earlier_facts(source, training_config, eval_results)
    if weights_dtype == "float16":
        _round_to_float16(model)

    # Written beside OUT_DIR, then swapped in (old aside, new in, old deleted): an export killed at any point leaves a
    # complete folder, the old or the new one, under OUT_DIR or a name `atomic.recover` restores at the next run.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic.temp_path(out_dir)
    tmp.mkdir()
    try:
        tokenizer = _save_model_and_tokenizer(model, tokenizer, arch.kind, tmp)
        if weights_dtype == "float16":
            _store_float16(tmp)
        onnx_record = _write_onnx(tmp, out_dir, model, verify, quantize, stsb_data_dir) if onnx else None
        if training_config:
            (tmp / TRAINING_RECORD).write_text(json.dumps(dict(training_config), indent=2, default=str) + "\n")
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
            onnx=onnx_record,
            tokenizer=tokenizer,
        )
        card.save(str(tmp / "README.md"))
        write_manifest(tmp)  # last: the size and sha256 of every file above, checked by load_model and push
        atomic.replace_folder(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model, tokenizer


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def export_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint", help="model folder (save_pretrained / sentence-transformers) or a run's output folder"
    )
    parser.add_argument("out_dir", help="where to write the Hub-ready folder")
    parser.add_argument(
        "--eval-results", default=None, help='MTEB result JSON file or folder, or a JSON file with {"bpc": ...}'
    )
    parser.add_argument("--training-config", default=None, help="JSON or YAML file of training settings for the card")
    parser.add_argument(
        "--throughput", type=float, default=None, help="measured encode throughput (sentences/s) for the card"
    )
    parser.add_argument("--model-name", default=None, help="the card's title (default: OUT_DIR's name)")
    parser.add_argument("--repo-id", default=None, help="repo id the card's snippets load (default: the model name)")
    parser.add_argument(
        "--base-model",
        default=None,
        help="Hub id for the card's base_model (default: the run's --teacher, when it had one)",
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=None,
        metavar="HUB_ID",
        help="Hub dataset ids for the card's datasets (default: the data the run trained on)",
    )
    parser.add_argument("--license", default="mit", help="the card's license (a Hub license id)")
    parser.add_argument(
        "--weights-dtype",
        choices=WEIGHTS_DTYPES,
        default="float32",
        help="how the weights are stored: float16 halves the folder (the model is rounded to float16 first and "
        "loads as float32; the verification checks that model) (default: %(default)s)",
    )
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="embedders: also write onnx/model.onnx (dynamic batch and length), checked against "
        "PyTorch with onnxruntime (pip install 'hf-attn[onnx]')",
    )
    parser.add_argument(
        "--quantize",
        choices=["int8"],
        default=None,
        help="embedders: also write onnx/model_qint8_quantized.onnx (onnxruntime dynamic int8; implies --onnx), "
        "scored against fp32 on the STS-B test pairs; scores and sizes go into the card",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder holding stsb/stsb-en-test.csv (like ../shared/data) for --quantize (default: the Hub)",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip loading the folder without hf_attn")


def _read_mapping(path: str) -> dict:
    """The settings in a ``--training-config`` JSON or YAML file; ``ValueError`` naming the file and line if not."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"--training-config {path}: no such file") from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise ValueError(f"--training-config {path}: not a text file ({e})") from None
    if path.endswith((".yaml", ".yml")):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ValueError(f"--training-config {path}{where}: not valid YAML ({getattr(e, 'problem', e)}) "
                             "(fix that line)") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"--training-config {path} line {e.lineno}, column {e.colno}: not valid JSON ({e.msg}) "
                             "(fix that line; name the file .yaml for YAML)") from None
    if not isinstance(data, dict):
        raise ValueError(f"--training-config {path}: expected a mapping of setting names to values, got a "
                         f"{type(data).__name__}")
    return data


def export_run(args: argparse.Namespace) -> int:
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
        quantize=args.quantize,
        weights_dtype=args.weights_dtype,
        stsb_data_dir=args.data_dir,
    )
    print(f"exported to {out}" + ("" if args.no_verify else " (verified: loads without hf_attn, outputs match)"))
    for rel, size in folder_files(out):
        print(f"  {rel:<40} {human_size(size):>9}")
    return 0


def push_best_model(best_dir: str | Path, output_dir: str | Path, repo_id: str, private: bool = False, log=print,
                    **export_kwargs) -> dict:
    """After a finished training run: ``export`` the best model to OUTPUT_DIR/export and push it to
    ``repo_id``.

    A failed upload (no network, no token, no permission) does not fail the run: the trained model is on disk, so
    the error is logged with the command that finishes the upload, and returned as ``{"error": message}``.
    """
    export_dir = Path(output_dir) / "export"
    try:
        out = export(best_dir, export_dir, **export_kwargs)
        return push(out, repo_id, private=private)
    except HubError as err:
        log(f"push to the Hub failed: {err} Upload later with: hf-attn push {export_dir} --repo-id {repo_id}")
        return {"error": str(err)}


__all__ = [
    "ExportVerificationError",
    "HubError",
    "export",
    "export_add_arguments",
    "export_run",
    "folder_files",
    "load_exported_model",
    "push",
    "push_best_model",
    "run_without_hf_attn",
    "verify_export",
]
