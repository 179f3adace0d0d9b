"""`hf-attn quickstart` (= `make quickstart`): a small embedder end to end, in minutes on a laptop CPU.

    tokenizer -> contrastive training (train_embedder, its --quick config) -> STS-B test through MTEB
              -> Hub-ready export with its model card (verified without hf_attn) -> a table of what happened

Data comes from the Hub by default, or from ``--data-dir`` (a folder laid out like ``../shared/data``: pair files
such as ``snli_devtest_esnli/`` and ``msrp/``, and ``stsb/`` for evaluation). With neither network nor local data
it stops at once with one line saying what to pass. Everything lands in ``--output-dir``; a second run reuses the
tokenizer trained by the first (``OUTPUT_DIR/tokenizer``) and the datasets cache.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

MODELS = ("tan", "gqa_embedder")
DEFAULT_OUTPUT_DIR = "outputs/quickstart"

NO_DATA_MESSAGE = (
    "hf-attn quickstart: no training data: the Hugging Face Hub is unreachable (offline) and no --data-dir was "
    "given; point it at a local copy with `hf-attn quickstart --data-dir DIR` (a folder with stsb/ and pair files "
    "such as snli_devtest_esnli/, like ../shared/data), or run `make quickstart`, which passes ../shared/data when "
    "it exists."
)

# --tiny: the whole code path in well under a minute (smoke tests, CI); the numbers mean nothing.
TINY = dict(
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    intermediate_size=64,
    embedding_size=32,
    max_train_samples=256,
    max_seq_length=32,
    vocab_size=600,
    max_steps=6,
    eval_steps=3,
    save_steps=0,
    logging_steps=3,
    eval_max_rows=64,
)


def _offline_env() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub can be used: not switched off by HF_*_OFFLINE and huggingface.co answers on port 443."""
    if _offline_env():
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        with socket.create_connection((host.split(":")[0], 443), timeout=timeout):
            return True
    except OSError:
        return False


def check_data(data_dir: str | Path | None) -> tuple[Path | None, Path | None]:
    """(training data dir or None for the Hub, STS-B data dir or None for the Hub); raises SystemExit-ready
    ``ValueError`` with one line when neither local data nor the Hub is available."""
    if data_dir is None:
        if not hub_reachable():
            raise ValueError(NO_DATA_MESSAGE)
        return None, None
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise ValueError(f"hf-attn quickstart: --data-dir {data_dir} does not exist; pass a folder laid out like "
                         f"../shared/data (stsb/ and pair files such as snli_devtest_esnli/)")
    stsb = data_dir / "stsb" / "stsb-en-test.csv"
    if stsb.is_file():
        return data_dir, data_dir
    if hub_reachable():
        return data_dir, None  # STS-B from the Hub
    raise ValueError(f"hf-attn quickstart: --data-dir {data_dir} has no stsb/stsb-en-test.csv and the Hub is "
                     f"unreachable; add STS-B there (stsb/stsb-en-{{train,dev,test}}.csv) or run with network")


def training_arguments(model: str, data_dir: Path | None, output_dir: Path, tiny: bool = False, max_steps: int | None = None):
    """The `EmbedTrainingArguments` of a quickstart run: the recipe's --quick config (+ TINY), output under OUTPUT_DIR."""
    from hf_attn.training.embed import EmbedTrainingArguments

    overrides: dict[str, Any] = dict(TINY) if tiny else {}
    if max_steps is not None:
        overrides["max_steps"] = max_steps
    return EmbedTrainingArguments(
        model=model,
        quick=True,
        data_dir=str(data_dir) if data_dir is not None else None,
        output_dir=str(output_dir / "train"),
        tokenizer_cache=str(output_dir / "tokenizer"),  # kept across runs: the second run reuses it
        **overrides,
    )


def format_table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    vwidth = max(len(v) for _, v in rows)
    line = f"+-{'-' * width}-+-{'-' * vwidth}-+"
    body = [f"| {k:<{width}} | {v:<{vwidth}} |" for k, v in rows]
    return "\n".join([line, *body, line])


def _fmt_score(v) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) else "n/a"


def run_quickstart(
    model: str = "tan",
    data_dir: str | Path | None = None,
    output_dir: str | Path = DEFAULT_OUTPUT_DIR,
    tiny: bool = False,
    max_steps: int | None = None,
    verify: bool = True,
    log=print,
) -> dict:
    """Train, evaluate, export; returns the numbers of the final table (and prints it through `log`).

    Keys: model, parameters, train_time_s, samples_per_s, stsb_spearman, stsb_pearson, encode_sentences_per_s,
    output_folder, best_model_dir, mteb_results, total_time_s.
    """
    from hf_attn.evaluation.mteb_runner import evaluate
    from hf_attn.hub import export
    from hf_attn.training.embed import finalize_args, train_embedder

    if model not in MODELS:
        raise ValueError(f"hf-attn quickstart: --model must be one of {', '.join(MODELS)}, got {model!r}")
    start = time.perf_counter()
    train_dir, stsb_dir = check_data(data_dir)
    output_dir = Path(output_dir)
    args = training_arguments(model, train_dir, output_dir, tiny=tiny, max_steps=max_steps)

    log(f"[1/3] training {model} ({'tiny' if tiny else 'quick'} config) -> {args.output_dir}")
    summary = train_embedder(args)
    if summary.get("status") not in (None, "completed") or not summary.get("best_model_dir"):
        raise RuntimeError(f"hf-attn quickstart: training did not finish: {summary.get('message') or summary.get('status')}")
    best = Path(summary["best_model_dir"])

    log("[2/3] evaluating on STS-B test with MTEB")
    mteb_out = evaluate(best, tasks=("STSBenchmark",), data_dir=stsb_dir, output_dir=output_dir / "mteb",
                        splits=["test"], model_name=f"local/{model}-quickstart", verbose=False)
    scores = mteb_out["tasks"]["STSBenchmark"]["test"]
    encode_sps = mteb_out["throughput"]["sentences_per_second"]

    log("[3/3] exporting a Hub-ready folder (weights, remote code, tokenizer, model card) and verifying it")
    used = finalize_args(args)  # the settings train_embedder actually ran with (--quick applied)
    training_config = {
        "recipe": "hf-attn quickstart" + (" --tiny" if tiny else ""),
        "dataset": list(used.dataset) if used.dataset else ("local mix of --data-dir" if train_dir else "sentence-transformers/all-nli"),
        "max_train_samples": used.max_train_samples,
        "loss": "symmetric InfoNCE, in-batch negatives, learnable temperature",
        "optimizer": used.optimizer,
        "learning_rate": used.learning_rate,
        "batch_size": used.batch_size,
        "max_seq_length": used.max_seq_length,
        "tokenizer": f"{used.tokenizer_type}, vocab {used.vocab_size}",
        "steps": summary.get("steps"),
        "best_dev_spearman (STS-B dev)": summary.get("best_dev_spearman"),
        "device": summary.get("device"),
    }
    training_config = {k: v for k, v in training_config.items() if v is not None}
    out = export(
        best,
        output_dir / "export" / f"{model}-quickstart",
        eval_results=mteb_out,
        training_config=training_config,
        throughput={
            "training samples/s": round(float(summary["samples_per_s"]), 1),
            "encode sentences/s (MTEB STS-B run)": round(float(encode_sps), 1),
            "device": summary.get("device", "cpu"),
        },
        verify=verify,
    )

    result = {
        "model": model,
        "parameters": summary["params"],
        "train_time_s": summary["train_time_s"],
        "samples_per_s": summary["samples_per_s"],
        "stsb_spearman": scores["cosine_spearman"],
        "stsb_pearson": scores["cosine_pearson"],
        "encode_sentences_per_s": encode_sps,
        "output_folder": str(out),
        "best_model_dir": str(best),
        "mteb_results": mteb_out["result_files"].get("STSBenchmark"),
        "total_time_s": time.perf_counter() - start,
    }
    log("")
    log(format_table(table_rows(result)))
    return result


def table_rows(result: dict) -> list[tuple[str, str]]:
    return [
        ("model", result["model"]),
        ("parameters", f"{result['parameters']:,}"),
        ("train time", f"{result['train_time_s']:.1f} s"),
        ("train samples/s", f"{result['samples_per_s']:.1f}"),
        ("STS-B test Spearman", _fmt_score(result["stsb_spearman"])),
        ("STS-B test Pearson", _fmt_score(result["stsb_pearson"])),
        ("encode throughput", f"{result['encode_sentences_per_s']:.1f} sentences/s"),
        ("output folder", result["output_folder"]),
        ("total time", f"{result['total_time_s']:.1f} s"),
    ]


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=MODELS, default="tan", help="architecture (default: %(default)s)")
    parser.add_argument("--data-dir", default=None,
                        help="local data laid out like ../shared/data (default: download from the Hub)")
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help="where everything goes (default: %(default)s)")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run of the same code path")
    parser.add_argument("--max-steps", type=int, default=None, help="override the number of training steps")


def run(args: argparse.Namespace) -> int:
    from hf_attn.training.data import DataError

    try:
        run_quickstart(args.model, args.data_dir, args.output_dir, tiny=args.tiny, max_steps=args.max_steps)
    except (ValueError, DataError, FileNotFoundError, RuntimeError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(message if message.startswith("hf-attn quickstart") else f"hf-attn quickstart: {message}", file=sys.stderr)
        return 2
    return 0


__all__ = ["NO_DATA_MESSAGE", "TINY", "add_arguments", "check_data", "hub_reachable", "run", "run_quickstart"]
