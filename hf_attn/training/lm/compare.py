"""The attention comparison: the same small byte-level LM once per (attention variant x positional encoding).

Every run shares the data, the seed, the model size and the step budget; only ``attn_implementation`` (and the
knob that defines the variant) and ``position_embedding`` change. It runs under Accelerate, with ``python`` or
``accelerate launch``: each run is prepared by one ``Accelerator`` (data-parallel over the processes, each on its
own batches), and the main process writes the outputs in OUTPUT_DIR:

- ``results.csv`` / ``results.md``: per run, validation loss, perplexity, bits per byte, peak memory (one training
  step), train time, tokens/s, attention entropy, parameters (``error`` when a combination is unsupported);
- ``loss_curves.png``: training loss per step, one panel per positional encoding;
- ``scaling.csv`` / ``scaling.png``: forward+backward time and peak memory vs sequence length per variant.

Variants: eager (dot product), hf_linear (ELU+1 linear), hf_topk (top-k sparse), hf_local (sliding window),
gqa (sdpa with num_key_value_heads = heads / 2), sdpa, hf_blockwise (blockwise flash).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ... import registry
from ..args import (
    build_parser,
    cli_errors,
    load_recipe,
    option,
    parse_into,
    resolve_config_and_quick,
    track_explicit,
)
from ..common import check_finite, use_cpu
from .data import ByteBatches, load_byte_splits
from .eval import PeakMemory, attention_entropy, evaluate_lm, next_byte_loss
from .loop import LM_MODEL

VARIANTS = ("eager", "hf_linear", "hf_topk", "hf_local", "gqa", "sdpa", "hf_blockwise")
POSITIONS = ("sinusoidal", "rope", "alibi", "learned")


@track_explicit
@dataclass
class CompareArguments:
    """Options of ``recipes/compare_attention.py``."""

    config: str | None = option(None, "YAML file of option defaults")
    quick: bool = option(False, "the whole matrix in under 10 minutes on a 2-core CPU")
    data: str | None = option(None, "text / enwik8 / jsonl(.gz) file (default: --data-dir's tiny_shakespeare, then its "
                                    "Wikipedia extract)")
    data_dir: str | None = option(None, "folder laid out like ../shared/data")
    synthetic_data: bool = option(False, "train on a synthetic word corpus instead of real text (smoke tests only; "
                                         "never used unless asked for)")
    max_bytes: int | None = option(5_000_000, "bytes read from the source")
    output_dir: str = option("outputs/compare_attention", "results.csv, results.md, PNG plots")
    variants: list[str] = option(list(VARIANTS), "attention variants")
    positions: list[str] = option(list(POSITIONS), "positional encodings")
    hidden_size: int = option(256, "width")
    num_hidden_layers: int = option(4, "depth")
    num_attention_heads: int = option(8, "heads (gqa uses heads / 2 key/value heads)")
    seq_len: int = option(256, "training sequence length")
    batch_size: int = option(16, "sequences per step")
    max_steps: int = option(1000, "steps per run (the shared budget)")
    learning_rate: float = option(1e-3, "peak LR (cosine after warmup)")
    warmup_steps: int = option(50, "warmup")
    topk: int | None = option(None, "hf_topk keys per query (default seq_len / 4)")
    window: int | None = option(None, "hf_local window (default seq_len / 4)")
    eval_batches: int = option(10, "validation batches")
    scaling_seq_lens: list[int] = option([128, 256, 512, 1024], "sequence lengths of the time/memory plot")
    scaling_position: str = option("rope", "positional encoding used for the scaling measurement", choices=POSITIONS)
    seed: int = option(0, "seed (same for every run)")
    cpu: bool = option(False, "force CPU")
    _config_applied: bool = False  # set by the parser once --config has been merged


# --quick: the whole matrix in under 10 minutes on a 2-core CPU (recipes/configs/compare_attention_quick.yaml).
COMPARE_QUICK = load_recipe("compare_attention_quick", CompareArguments)


def parse_args(argv=None) -> CompareArguments:
    parser = build_parser(CompareArguments, "compare_attention.py", __doc__.splitlines()[0], COMPARE_QUICK)
    return parse_into(CompareArguments, parser, argv)


def variant_config(variant: str, seq_len: int, num_attention_heads: int, topk: int | None = None,
                   window: int | None = None) -> tuple[str, dict]:
    """variant -> (attn_implementation, extra config fields). ``topk`` / ``window`` (hf_topk, hf_local) default to
    a quarter of ``seq_len``; gqa has half of ``num_attention_heads`` as key/value heads."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    if variant == "gqa":
        return "sdpa", {"num_key_value_heads": max(1, num_attention_heads // 2)}
    if variant == "hf_topk":
        return variant, {"attention_topk": topk or max(1, seq_len // 4)}
    if variant == "hf_local":
        return variant, {"sliding_window": window or max(1, seq_len // 4)}
    return variant, {}


def build_variant_model(variant: str, position: str, max_len: int, seq_len: int, hidden_size: int,
                        num_hidden_layers: int, num_attention_heads: int, topk: int | None = None,
                        window: int | None = None):
    """The byte-level LM of ``train_lm`` (AdaptiveSpanGPT), at the comparison's size, for one combination (its
    top-k / window set for ``seq_len``, see ``variant_config``)."""
    entry = registry.get(LM_MODEL)
    impl, extra = variant_config(variant, seq_len, num_attention_heads, topk, window)
    cfg = entry.config_class(vocab_size=256, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
                             num_attention_heads=num_attention_heads, max_position_embeddings=max_len,
                             position_embedding=position, use_cache=False, **extra)
    model = entry.head_class(cfg)
    model.set_attn_implementation(impl)
    return model


_SYNTHETIC_WORDS = ("the cat dog sat on a mat and ran far away while birds sang in tall green trees near the old "
                    "river bank where children play every summer day").split()


def _synthetic_text(n_bytes: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    words = rng.choice(_SYNTHETIC_WORDS, size=n_bytes // 4)
    return (" ".join(words) + ".\n").encode()[:n_bytes]


def resolve_data(data: str | None, data_dir: str | None, max_bytes: int | None, synthetic_data: bool = False,
                 seed: int = 0, log=print) -> dict[str, np.ndarray]:
    """The byte splits: ``--data``, else ``--data-dir``'s tiny_shakespeare then its Wikipedia extract, else
    ../shared/data beside the checkout. A missing file or folder raises ``DataError``; the synthetic corpus (of
    ``seed``) is used only with ``--synthetic-data``."""
    from ..data import DataError

    if synthetic_data:
        log("data: synthetic word corpus (--synthetic-data)")
        arr = np.frombuffer(_synthetic_text(max_bytes or 1_000_000, seed), dtype=np.uint8)
        n = len(arr)
        return {"train": arr[: int(0.9 * n)], "validation": arr[int(0.9 * n) : int(0.95 * n)],
                "test": arr[int(0.95 * n) :]}
    if data_dir and not Path(data_dir).is_dir():
        raise DataError(f"--data-dir {data_dir}: no such folder (pass a folder laid out like ../shared/data, or "
                        "--data FILE)")
    candidates = []
    if data:
        candidates.append(Path(data))
        if data_dir:
            candidates.append(Path(data_dir) / data)
    elif data_dir:
        candidates += [Path(data_dir) / "tiny_shakespeare/input.txt",
                       Path(data_dir) / "wikipedia_en_extract/wiki_en_extract.jsonl.gz"]
    else:
        default = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "tiny_shakespeare" / "input.txt"
        candidates.append(default)
    for c in candidates:
        if c.is_file():
            log(f"data: {c}")
            return load_byte_splits(c, max_bytes=max_bytes)
    what = "--data " + data if data else ("--data-dir " + data_dir if data_dir else "no --data")
    raise DataError(f"{what}: none of {[str(c) for c in candidates]} exists; pass --data FILE (text, enwik8 or "
                    "jsonl(.gz) with 'text') or --data-dir DIR, or --synthetic-data for a synthetic smoke-test corpus")


def train_one(variant: str, position: str, splits, accelerator, *, size: dict, seq_len: int, batch_size: int,
              max_steps: int, learning_rate: float, warmup_steps: int, eval_batches: int, seed: int,
              log=print) -> dict:
    """Train one combination of the model of ``size`` (``build_variant_model``'s size fields) for ``max_steps`` and
    evaluate it on ``eval_batches``: its row of results.csv (``curve``: the train loss per step). Raises when the
    combination fails (unsupported, or a non-finite loss)."""
    from ..optim import build_optimizer, build_scheduler

    torch.manual_seed(seed)
    model = build_variant_model(variant, position, seq_len, seq_len, **size)
    train = ByteBatches(splits["train"], seq_len, batch_size, seed)
    valid = ByteBatches(splits["validation"], seq_len, batch_size, seed + 1)
    optimizer = build_optimizer([model], "adamw", lr=learning_rate, weight_decay=0.1)
    scheduler = build_scheduler(optimizer, warmup_steps, max_steps, "cosine")
    model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device
    model.train()
    curve, train_time = [], 0.0
    peak = PeakMemory(device)
    for step in range(max_steps):
        ids = train.batch(step, accelerator.process_index).to(device)
        t0 = time.perf_counter()
        with peak if step == 1 else nullcontext(), accelerator.accumulate(model):  # step 1: optimizer state exists
            loss = next_byte_loss(model(input_ids=ids, use_cache=False).logits, ids)
            check_finite(accelerator, loss, step)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_time += time.perf_counter() - t0
        curve.append(loss.item())
    model = accelerator.unwrap_model(model)
    ev = evaluate_lm(model, valid, device, eval_batches)
    entropy = attention_entropy(model, next(valid.sequential(1))[:2].to(device))
    tokens = max_steps * batch_size * seq_len * accelerator.num_processes
    row = {"variant": variant, "position": position, "attn_implementation": model.config._attn_implementation,
           "params": sum(p.numel() for p in model.parameters()), "final_train_loss": float(np.mean(curve[-5:])),
           "val_loss": ev["loss"], "val_perplexity": ev["perplexity"], "val_bpc": ev["bpc"],
           "peak_memory_mb": peak.peak_mb, "train_time_s": train_time, "tokens_per_s": tokens / train_time,
           "attention_entropy": entropy, "error": "", "curve": curve}
    log(f"{variant:>9} x {position:<10} val loss {ev['loss']:.4f} ppl {ev['perplexity']:.2f} | "
        f"{row['tokens_per_s']:.0f} tok/s | peak {row['peak_memory_mb']:.1f} MB | entropy {entropy:.3f}")
    return row


def measure_scaling(variant: str, position: str, seq_lens: list[int], device, *, size: dict, seq_len: int,
                    batch_size: int, seed: int, reps: int = 2) -> list[dict]:
    """Forward+backward time (s, median of ``reps``) and peak memory per sequence length of ``seq_lens``, for the
    model of ``size`` trained at ``seq_len``, on batches of a quarter of ``batch_size``."""
    rows = []
    max_len = max(seq_lens)
    torch.manual_seed(seed)
    model = build_variant_model(variant, position, max_len, seq_len, **size).to(device)
    model.train()
    for T in seq_lens:
        impl, extra = variant_config(variant, T, size["num_attention_heads"], size.get("topk"), size.get("window"))
        for k, v in extra.items():  # window / top-k follow the sequence length, as in training
            if k != "num_key_value_heads":
                setattr(model.config, k, v)
        ids = torch.randint(0, 256, (max(1, batch_size // 4), T), generator=torch.Generator().manual_seed(T))
        ids = ids.to(device)
        times = []
        peak = PeakMemory(device)
        for r in range(reps + 2):  # 0: warm-up; 1..reps: timed; last: peak memory (the tracker slows it down)
            measure = r == reps + 1
            t0 = time.perf_counter()
            with peak if measure else nullcontext():
                loss = next_byte_loss(model(input_ids=ids, use_cache=False).logits, ids)
                loss.backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if 1 <= r <= reps:
                times.append(time.perf_counter() - t0)
            model.zero_grad(set_to_none=True)
        rows.append({"variant": variant, "seq_len": T, "time_s": float(np.median(times)) if times else float("nan"),
                     "peak_memory_mb": peak.peak_mb})
    return rows


RESULT_COLUMNS = ("variant", "position", "attn_implementation", "params", "val_loss", "val_perplexity", "val_bpc",
                  "final_train_loss", "peak_memory_mb", "train_time_s", "tokens_per_s", "attention_entropy", "error")


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def write_outputs(rows: list[dict], scaling: list[dict], out: Path, description: str, scaling_position: str
                  ) -> dict[str, Path]:
    """results.csv / .md (under ``description``, a line saying what was compared), loss_curves.png, scaling.csv /
    .png (measured with ``scaling_position``) in ``out``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "results.csv", "md": out / "results.md", "loss_png": out / "loss_curves.png",
             "scaling_csv": out / "scaling.csv", "scaling_png": out / "scaling.png"}
    with open(paths["csv"], "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    md_cols = ("variant", "position", "val_loss", "val_perplexity", "peak_memory_mb", "train_time_s", "tokens_per_s",
               "attention_entropy", "error")
    header = ("| variant | position | val loss | perplexity | peak memory (MB) | train time (s) | tokens/s | "
              "attention entropy | error |")
    lines = [description, "", header, "|" + "---|" * len(md_cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in md_cols) + " |")
    paths["md"].write_text("\n".join(lines) + "\n")
    with open(paths["scaling_csv"], "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=("variant", "seq_len", "time_s", "peak_memory_mb"))
        w.writeheader()
        w.writerows(scaling)

    positions = list(dict.fromkeys(r["position"] for r in rows))
    fig, axes = plt.subplots(1, max(1, len(positions)), figsize=(4.5 * max(1, len(positions)), 3.6), squeeze=False)
    for ax, pos in zip(axes[0], positions, strict=False):
        for r in rows:
            if r["position"] == pos and r.get("curve"):
                c = np.asarray(r["curve"])
                k = max(1, len(c) // 20)
                smooth = np.convolve(c, np.ones(k) / k, mode="valid")
                ax.plot(np.arange(len(smooth)) + k, smooth, label=r["variant"])
        ax.set_title(f"positions: {pos}")
        ax.set_xlabel("step")
        ax.set_ylabel("train loss (nats/byte)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(paths["loss_png"], dpi=110)
    plt.close(fig)

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 3.8))
    for v in dict.fromkeys(s["variant"] for s in scaling):
        pts = [s for s in scaling if s["variant"] == v]
        ax_t.plot([p["seq_len"] for p in pts], [p["time_s"] * 1000 for p in pts], marker="o", label=v)
        ax_m.plot([p["seq_len"] for p in pts], [p["peak_memory_mb"] for p in pts], marker="o", label=v)
    for ax, label in ((ax_t, "forward+backward time (ms)"), (ax_m, "peak memory (MB)")):
        ax.set_xlabel("sequence length")
        ax.set_ylabel(label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    ax_t.legend(fontsize=7)
    fig.suptitle(f"positions: {scaling_position}")
    fig.tight_layout()
    fig.savefig(paths["scaling_png"], dpi=110)
    plt.close(fig)
    return paths


def train_or_fail(variant: str, position: str, splits, accelerator, log=print, **settings) -> dict:
    """``train_one``'s row (``settings``: its keyword options), or when the combination fails, a row of NaNs that
    names the error."""
    try:
        return train_one(variant, position, splits, accelerator, log=log, **settings)
    except Exception as e:  # noqa: BLE001 - an unsupported combination is a result, not a crash
        log(f"{variant:>9} x {position:<10} FAILED: {type(e).__name__}: {e}")
        return {"variant": variant, "position": position, "error": f"{type(e).__name__}: {e}"[:200],
                **{c: float("nan") for c in RESULT_COLUMNS if c not in ("variant", "position", "error",
                                                                         "attn_implementation")}}
    finally:
        accelerator.free_memory()  # the prepared model and optimizer go before the next combination


def run_comparison(args: CompareArguments, log=None) -> dict:
    """Run the matrix; returns {"rows", "scaling", "paths", "total_time_s"} (``paths`` None off the main process,
    which alone writes the outputs). ``log`` defaults to ``accelerator.print`` (the main process)."""
    from accelerate import Accelerator

    from ..checkpoint import locked_output_dir

    args = resolve_config_and_quick(args, COMPARE_QUICK)
    size = {"hidden_size": args.hidden_size, "num_hidden_layers": args.num_hidden_layers,
            "num_attention_heads": args.num_attention_heads, "topk": args.topk, "window": args.window}
    for v in args.variants:
        variant_config(v, args.seq_len, args.num_attention_heads, args.topk, args.window)
    bad = [p for p in args.positions if p not in POSITIONS]
    if bad:
        raise ValueError(f"unknown position encodings {bad}; expected {POSITIONS}")
    accelerator = Accelerator(cpu=use_cpu(args.cpu))
    log = log or accelerator.print
    t_start = time.perf_counter()
    splits = resolve_data(args.data, args.data_dir, args.max_bytes, args.synthetic_data, args.seed, log)
    budget = {"seq_len": args.seq_len, "batch_size": args.batch_size, "max_steps": args.max_steps,
              "learning_rate": args.learning_rate, "warmup_steps": args.warmup_steps, "eval_batches": args.eval_batches,
              "seed": args.seed}
    with locked_output_dir(args.output_dir):  # one run per output folder; nothing is created before the data
        rows = [train_or_fail(variant, position, splits, accelerator, log, size=size, **budget)
                for variant in args.variants for position in args.positions]
        scaling = []
        for variant in args.variants:
            try:
                scaling += measure_scaling(variant, args.scaling_position, args.scaling_seq_lens, accelerator.device,
                                           size=size, seq_len=args.seq_len, batch_size=args.batch_size, seed=args.seed)
            except Exception as e:  # noqa: BLE001
                log(f"scaling {variant} FAILED: {type(e).__name__}: {e}")
        description = (f"Same byte-level LM ({args.num_hidden_layers} layers, hidden {args.hidden_size}, "
                       f"{args.num_attention_heads} heads, seq {args.seq_len}, batch {args.batch_size}, "
                       f"{args.max_steps} steps, seed {args.seed}) per attention variant x positional encoding.")
        paths = (write_outputs(rows, scaling, Path(args.output_dir), description, args.scaling_position)
                 if accelerator.is_main_process else None)
        total = time.perf_counter() - t_start
        if accelerator.is_main_process:
            (Path(args.output_dir) / "summary.json").write_text(json.dumps(
                {"total_time_s": total, "device": str(accelerator.device), "num_processes": accelerator.num_processes,
                 "args": dataclasses.asdict(args), "rows": [{k: v for k, v in r.items() if k != "curve"} for r in rows],
                 "scaling": scaling}, indent=1, default=str))
            log(paths["md"].read_text())
        log(f"total time {total:.1f} s; outputs in {args.output_dir}")
        accelerator.wait_for_everyone()
    return {"rows": rows, "scaling": scaling, "paths": paths, "total_time_s": total}


@cli_errors("compare_attention.py")
def main(argv=None) -> int:
    res = run_comparison(parse_args(argv))
    return 0 if all(not r.get("error") for r in res["rows"]) else 1
