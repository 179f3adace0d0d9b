"""Byte-level language modelling with AdaptiveSpanGPT (seed 001): data, metrics and ``train_lm``.

Data (``load_byte_splits``):
- enwik8 (a file named ``enwik8``, or ``--enwik8``): the standard split, first 90M bytes train, next 5M valid,
  last 5M test (Al-Rfou et al.; Sukhbaatar et al.).
- any other text file (``--data``): the same 90 / 5 / 5 proportions of its bytes.
- a ``.jsonl(.gz)`` with a ``text`` column (the Wikipedia extract in ../shared/data, the stand-in for enwik8
  here): articles joined by newlines, capped at ``max_bytes``, split 90 / 5 / 5.
An empty file raises ``DataError`` before any model is built.

Metrics per evaluation: loss (nats/byte), bits per byte (= bpc for ASCII text), perplexity, tokens/s, peak memory,
per-head spans and periods, the span regulariser, attention FLOPs spent vs dense causal, attention entropy.
"""

from __future__ import annotations

import gzip
import json
import math
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .args import (
    add_dataclass_arguments,
    cli_errors,
    parse_into,
    resolve_config_and_quick,
    to_flat_dict,
    track_explicit,
)
from .data import DataError
from .embed import _f, use_cpu

ENWIK8_SPLIT = (90_000_000, 5_000_000, 5_000_000)


# ---------------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------------


def _read_source_bytes(path: Path, max_bytes: int | None) -> bytes:
    try:
        return _read_source_bytes_unchecked(path, max_bytes)
    except (EOFError, OSError, UnicodeDecodeError, ValueError) as e:
        from .data import diagnose_file

        if isinstance(e, DataError):
            raise
        problem = diagnose_file(path) if not isinstance(e, FileNotFoundError) else None
        raise DataError(f"{problem or f'{path}: cannot be read ({e})'}. Fix or re-create the file") from e


def _read_source_bytes_unchecked(path: Path, max_bytes: int | None) -> bytes:
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".json.gz")):
        opener = gzip.open if name.endswith(".gz") else open
        parts, total = [], 0
        with opener(path, "rt", encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise DataError(f"{path} line {line_no}: expected a JSON object with a 'text' field")
                text = row.get("text")
                if not text:
                    continue
                b = text.encode("utf-8") + b"\n"
                parts.append(b)
                total += len(b)
                if max_bytes is not None and total >= max_bytes:
                    break
        data = b"".join(parts)
    else:
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rb") as fh:
            data = fh.read() if max_bytes is None else fh.read(max_bytes)
    return data[:max_bytes] if max_bytes is not None else data


def lm_dataset_name(path: str | Path, enwik8: bool | None = None) -> str:
    """The dataset name a model card reports: "enwik8" for the enwik8 split, else the file's stem."""
    path = Path(path)
    if enwik8 or (enwik8 is None and path.name.split(".")[0] == "enwik8"):
        return "enwik8"
    return path.name.split(".")[0]


def load_byte_splits(path: str | Path, enwik8: bool | None = None, max_bytes: int | None = None,
                     fractions=(0.9, 0.05, 0.05)) -> dict[str, np.ndarray]:
    """{"train", "validation", "test"} -> uint8 arrays. See the module docstring for the split rules."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    if enwik8 is None:
        enwik8 = path.name.split(".")[0] == "enwik8"
    if enwik8:
        data = _read_source_bytes(path, None)
        if len(data) < sum(ENWIK8_SPLIT):
            raise DataError(f"{path}: {len(data)} bytes; enwik8 has 100,000,000 (use --data for other files)")
        a, b, _ = ENWIK8_SPLIT
        arr = np.frombuffer(data, dtype=np.uint8)
        return {"train": arr[:a], "validation": arr[a : a + b], "test": arr[a + b : a + 2 * b]}
    data = _read_source_bytes(path, max_bytes)
    if not data.strip():
        raise DataError(f"{path}: no text (empty after reading)")
    arr = np.frombuffer(data, dtype=np.uint8)
    n_train = int(len(arr) * fractions[0])
    n_val = int(len(arr) * fractions[1])
    splits = {"train": arr[:n_train], "validation": arr[n_train : n_train + n_val], "test": arr[n_train + n_val :]}
    return splits


def resolve_lm_data(data: str | None, data_dir: str | None) -> Path:
    """--data, else the Wikipedia extract, else tiny_shakespeare in --data-dir."""
    if data:
        p = Path(data)
        if not p.exists() and data_dir:
            p = Path(data_dir) / data
        return p
    if data_dir:
        for rel in ("wikipedia_en_extract/wiki_en_extract.jsonl.gz", "tiny_shakespeare/input.txt"):
            if (Path(data_dir) / rel).exists():
                return Path(data_dir) / rel
    raise DataError("no LM data: pass --data FILE (enwik8, a text file, or jsonl with 'text') or --data-dir DIR")


class ByteBatches:
    """Random windows of a byte array: batch(step) -> [B, T] long, a pure function of (seed, step).

    Being indexed by step makes a resumed run see exactly the batches the uninterrupted run would have.
    """

    def __init__(self, data: np.ndarray, seq_len: int, batch_size: int, seed: int = 0):
        if len(data) <= seq_len + 1:
            raise DataError(f"split of {len(data)} bytes is shorter than one sequence of {seq_len + 1}")
        self.data = torch.from_numpy(np.ascontiguousarray(data).astype(np.int64))
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed

    def batch(self, step: int, rank: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step * 97 + rank)
        starts = torch.randint(0, len(self.data) - self.seq_len, (self.batch_size,), generator=g)
        return torch.stack([self.data[s : s + self.seq_len] for s in starts.tolist()])

    def sequential(self, max_batches: int | None = None):
        """Non-overlapping windows in order (evaluation)."""
        n = (len(self.data) - 1) // self.seq_len
        windows = self.data[: n * self.seq_len].view(n, self.seq_len)
        for i, start in enumerate(range(0, n, self.batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            yield windows[start : start + self.batch_size]


# ---------------------------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------------------------


def lm_metrics(loss_nats: float) -> dict[str, float]:
    return {"loss": loss_nats, "bpc": loss_nats / math.log(2), "perplexity": math.exp(min(loss_nats, 50.0))}


def next_byte_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats) of predicting ids[:, 1:] from logits[:, :-1]."""
    return torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                             ids[:, 1:].reshape(-1))


@torch.no_grad()
def evaluate_lm(model, batches: ByteBatches, device, max_batches: int | None = 20) -> dict[str, float]:
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for ids in batches.sequential(max_batches):
        ids = ids.to(device)
        logits = model(input_ids=ids, use_cache=False).logits
        n = ids[:, 1:].numel()
        total += next_byte_loss(logits, ids).item() * n
        count += n
    model.train(was)
    return lm_metrics(total / max(count, 1))


class PeakMemory:
    """Peak bytes of live tensors while the context is active.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: a dispatch mode adds each new output storage and subtracts it
    when its tensor is freed, so it measures live tensor bytes (parameters and inputs allocated before entering
    are not counted; the CPU caching allocator is not either).
    """

    def __init__(self, device):
        self.device = torch.device(device)
        self.peak = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        tracker = self

        class _Mode(TorchDispatchMode):
            def __init__(self):
                super().__init__()
                self.live = 0
                self.seen: set[int] = set()

            def _free(self, key, nbytes):
                if key in self.seen:
                    self.seen.discard(key)
                    self.live -= nbytes

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor) and t.device.type == "cpu" and not t.is_sparse:
                        try:
                            st = t.untyped_storage()
                        except Exception:  # noqa: BLE001 - tensors without storage (meta, functional)
                            continue
                        key = st.data_ptr()
                        if key and key not in self.seen:
                            self.seen.add(key)
                            nbytes = st.nbytes()
                            self.live += nbytes
                            weakref.finalize(t, self._free, key, nbytes)
                tracker.peak = max(tracker.peak, self.live)
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._mode.__exit__(*exc)
        return False

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20


_ENTROPY_SOURCES = {}


def _reference_for(impl: str):
    """The attention function returning weights that computes the same function as backend ``impl``."""
    from hf_attn.attention.linear import linear_attention_reference
    from hf_attn.attention.local import local_attention_reference
    from hf_attn.attention.topk import topk_attention_reference
    from hf_attn.modeling.layers import eager_attention_forward

    return {"hf_linear": linear_attention_reference, "hf_local": local_attention_reference,
            "hf_topk": topk_attention_reference}.get(impl, eager_attention_forward)


@torch.no_grad()
def attention_entropy(model, ids: torch.Tensor) -> float:
    """Mean entropy (nats) of the attention distributions of ``model`` on ``ids``, over layers, heads, queries.

    The model runs once with a probe backend: the reference form of its own backend (same function, returns the
    weights), registered under a temporary name with the same mask function.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    impl = model.config._attn_implementation or "eager"
    probe = f"hf_attn_entropy_probe_{impl}"
    sums = {"h": 0.0, "n": 0}
    ref = _reference_for(impl)

    def fn(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        out, w = ref(module, query, key, value, attention_mask, scaling, 0.0, **kwargs)
        w = w.float().clamp_min(0)
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
        h = -(w * torch.log(w.clamp_min(1e-12))).sum(-1)  # [B, H, Tq]
        sums["h"] += h.sum().item()
        sums["n"] += h.numel()
        return out, None

    AttentionInterface.register(probe, fn)
    mask_fn = ALL_MASK_ATTENTION_FUNCTIONS.get(impl) if impl in ALL_MASK_ATTENTION_FUNCTIONS else \
        ALL_MASK_ATTENTION_FUNCTIONS["eager"]
    AttentionMaskInterface.register(probe, mask_fn)
    configs = [m.config for m in model.modules() if hasattr(m, "config")]
    old = [(c, c._attn_implementation) for c in {id(c): c for c in configs}.values()]
    was = model.training
    model.eval()
    try:
        for c, _ in old:
            c._attn_implementation = probe
        model(input_ids=ids, use_cache=False)
    finally:
        for c, v in old:
            c._attn_implementation = v
        model.train(was)
    return sums["h"] / max(sums["n"], 1)


def span_summary(model) -> dict:
    """Spans, periods, regulariser, FLOP ratio (None where the model has no such feature)."""
    rep = model.attention_span_report() if hasattr(model, "attention_span_report") else {}
    out = {}
    for k in ("span", "period"):
        v = rep.get(k)
        out[f"{k}s"] = None if v is None else [[round(float(x), 2) for x in row] for row in v]
        out[f"mean_{k}"] = None if v is None else float(v.float().mean())
    reg = model.span_regularizer() if hasattr(model, "span_regularizer") else None
    out["span_regularizer"] = None if reg is None else float(reg.detach())
    return out


# ---------------------------------------------------------------------------------------------------------------
# train_lm
# ---------------------------------------------------------------------------------------------------------------


@track_explicit
@dataclass
class LMTrainingArguments:
    """Options of ``recipes/train_lm.py`` (seed 001's flags keep their names)."""

    config: str | None = _f(None, "YAML file of option defaults")
    quick: bool = _f(False, "tiny CPU config (minutes)")
    data: str | None = _f(None, "enwik8 file, any text file, or jsonl(.gz) with a 'text' column")
    data_dir: str | None = _f(None, "folder laid out like ../shared/data (default data: its Wikipedia extract)")
    enwik8: bool | None = _f(None, "force the enwik8 90M/5M/5M split (default: when the file is named enwik8)")
    max_bytes: int | None = _f(None, "read at most this many bytes of a non-enwik8 source")
    output_dir: str = _f("outputs/train_lm", "checkpoints, metrics.jsonl, summary.json")
    # model (AdaptiveSpanGPTConfig fields)
    hidden_size: int = _f(512, "n_embd")
    num_hidden_layers: int = _f(8, "n_layer")
    num_attention_heads: int = _f(8, "n_head")
    num_key_value_heads: int | None = _f(None, "GQA key/value heads")
    block_size: int = _f(512, "sequence length (max_position_embeddings)")
    position_embedding: str = _f("learned", "positions", choices=("learned", "sinusoidal", "rope", "alibi"))
    dropout: float = _f(0.0, "dropout")
    attn_implementation: str | None = _f(None, "eager, sdpa, hf_blockwise, hf_local, hf_linear, hf_topk")
    sliding_window: int | None = _f(None, "hf_local window")
    attention_topk: int | None = _f(None, "hf_topk k")
    use_adaptive_attention: bool = _f(False, "adaptive attention span (Sukhbaatar et al. 2019)")
    use_triangle_wave_masking: bool = _f(False, "learnable periodic (triangle-wave) mask; needs adaptive attention")
    softness_span_mask: float = _f(32.0, "R, ramp length of the soft span mask")
    span_reg: float = _f(4e-6, "L1 coefficient on spans")
    period_min_triangle_wave_masking: float = _f(2.0, "min period")
    period_max_triangle_wave_masking: float = _f(8.0, "max period")
    max_span: int | None = _f(None, "largest span (default: block size)")
    # optimisation
    batch_size: int = _f(12, "sequences per micro-batch")
    grad_accum_steps: int = _f(5, "micro-batches per step", aliases=("--gradient-accumulation-steps",))
    max_steps: int = _f(5000, "optimizer steps")
    learning_rate: float = _f(6e-4, "peak LR", aliases=("--lr",))
    min_lr_ratio: float = _f(0.1, "final LR / peak (cosine)")
    warmup_steps: int = _f(200, "linear warmup")
    weight_decay: float = _f(0.1, "AdamW weight decay")
    max_grad_norm: float = _f(1.0, "clipping")
    optimizer: str = _f("adamw", "adamw or muon", choices=("adamw", "muon"))
    mixed_precision: str = _f("no", "Accelerate mixed precision", choices=("no", "fp16", "bf16"))
    compile: bool = _f(False, "torch.compile the model (seed 001 trains with it)")
    seed: int = _f(1337, "seed")
    cpu: bool = _f(False, "force CPU")
    eval_steps: int = _f(250, "evaluate every N steps (0 = only at the end)")
    eval_batches: int = _f(20, "validation batches per evaluation")
    save_steps: int = _f(1000, "checkpoint every N steps (0 = never)")
    save_total_limit: int = _f(2, "checkpoints kept")
    resume_from_checkpoint: str | None = _f(None, "checkpoint folder or 'latest'")
    logging_steps: int = _f(10, "log every N steps")
    report_to: str = _f("none", "Accelerate tracker", choices=("none", "tensorboard", "trackio", "wandb"))
    push_to_hub: str | None = _f(None, "repo id: export best_model (lowest validation loss) with hf_attn.hub and push it")
    hub_private: bool = _f(False, "create the Hub repo private")
    _config_applied: bool = False


LM_QUICK = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, block_size=128, batch_size=8,
                grad_accum_steps=1, max_steps=60, learning_rate=2e-3, warmup_steps=10, eval_steps=30, eval_batches=4,
                save_steps=30, logging_steps=10, max_bytes=2_000_000)


def build_lm_arg_parser():
    import argparse

    p = argparse.ArgumentParser(prog="train_lm.py", description="Byte-level AdaptiveSpanGPT LM (seed 001).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    return add_dataclass_arguments(p, LMTrainingArguments)


def build_lm_model(args, vocab_size: int = 256):
    from hf_attn import AdaptiveSpanGPTConfig, AdaptiveSpanGPTForCausalLM

    cfg = AdaptiveSpanGPTConfig(
        vocab_size=vocab_size, hidden_size=args.hidden_size, num_hidden_layers=args.num_hidden_layers,
        num_attention_heads=args.num_attention_heads, num_key_value_heads=args.num_key_value_heads,
        max_position_embeddings=args.block_size, position_embedding=args.position_embedding, dropout=args.dropout,
        use_adaptive_attention=args.use_adaptive_attention, use_triangle_wave_masking=args.use_triangle_wave_masking,
        softness_span_mask=args.softness_span_mask, span_reg=args.span_reg,
        period_min_triangle_wave_masking=args.period_min_triangle_wave_masking,
        period_max_triangle_wave_masking=args.period_max_triangle_wave_masking, max_span=args.max_span,
        sliding_window=args.sliding_window, attention_topk=args.attention_topk, use_cache=False,
    )
    model = AdaptiveSpanGPTForCausalLM(cfg)
    if args.attn_implementation:
        model.set_attn_implementation(args.attn_implementation)
    return model


def train_lm(args: LMTrainingArguments, log_fn=None) -> dict:
    """Train AdaptiveSpanGPT on bytes; returns a summary (also OUTPUT_DIR/summary.json, metrics.jsonl)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from . import checkpoint as ckpt
    from .optim import build_optimizer, build_scheduler

    args = resolve_config_and_quick(args, LM_QUICK)
    from .trackers import require_tracker

    require_tracker(args.report_to)  # Accelerate would skip a missing tracker silently
    out_dir = Path(args.output_dir)
    accelerator = Accelerator(mixed_precision=args.mixed_precision, gradient_accumulation_steps=args.grad_accum_steps,
                              log_with=None if args.report_to == "none" else args.report_to, project_dir=str(out_dir),
                              cpu=use_cpu(args.cpu))
    log = log_fn or accelerator.print
    set_seed(args.seed)
    ckpt.check_output_dir(out_dir)
    source = resolve_lm_data(args.data, args.data_dir)
    splits = load_byte_splits(source, args.enwik8, args.max_bytes)
    log(f"data: {source} -> train {len(splits['train']):,} / valid {len(splits['validation']):,} / "
        f"test {len(splits['test']):,} bytes")
    train = ByteBatches(splits["train"], args.block_size, args.batch_size, args.seed)
    valid = ByteBatches(splits["validation"], args.block_size, args.batch_size, args.seed + 1)
    model = build_lm_model(args)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f}M params, attn {model.config._attn_implementation}, positions "
        f"{args.position_embedding}, adaptive span {args.use_adaptive_attention}, triangle wave "
        f"{args.use_triangle_wave_masking}")
    optimizer = build_optimizer([model], args.optimizer, lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = build_scheduler(optimizer, args.warmup_steps, args.max_steps, "cosine")
    train_model = torch.compile(model) if args.compile else model
    train_model, optimizer = accelerator.prepare(train_model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    state = {"step": 0, "history": [], "evals": []}
    resume = ckpt.resolve_resume(args.resume_from_checkpoint, out_dir / "checkpoints", log=log)
    if resume is not None:
        accelerator.load_state(str(resume))
        state.update(ckpt.read_state(resume))
        log(f"resumed from {resume} at step {state['step']}")
    if args.report_to != "none":
        accelerator.init_trackers("train_lm", config=to_flat_dict(args))
    metrics_path = out_dir / "metrics.jsonl"
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
    unwrapped = accelerator.unwrap_model(train_model)
    if hasattr(unwrapped, "_orig_mod"):
        unwrapped = unwrapped._orig_mod
    device = accelerator.device
    tokens_per_step = args.batch_size * args.block_size * args.grad_accum_steps * accelerator.num_processes
    train_time, status, message = 0.0, "completed", None
    progress = tqdm(total=args.max_steps, initial=state["step"], disable=not accelerator.is_local_main_process,
                    desc="train_lm", dynamic_ncols=True)
    peak = PeakMemory(device)
    first_step = state["step"]
    while state["step"] < args.max_steps:
        step = state["step"]
        t0 = time.perf_counter()
        losses = []
        ctx = peak if step == first_step else _Null()  # peak memory of one full step (first of this run)
        with ctx:
            for micro in range(args.grad_accum_steps):
                ids = train.batch(step * args.grad_accum_steps + micro, accelerator.process_index).to(device)
                with accelerator.accumulate(train_model):
                    out = train_model(input_ids=ids, labels=ids, use_cache=False)
                    loss = out.loss
                    if not torch.isfinite(loss).item():
                        status = "non_finite_loss"
                        message = f"non-finite loss at step {step + 1}; last good checkpoint kept"
                        break
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and args.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(train_model.parameters(), args.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                losses.append(loss.item())
        if status != "completed":
            log(message)
            break
        scheduler.step()
        dt = time.perf_counter() - t0
        train_time += dt
        state["step"] = step = step + 1
        progress.update(1)
        rec = {"step": step, "loss": float(np.mean(losses)), "tokens_per_s": tokens_per_step / dt,
               "lr": scheduler.get_last_lr()[0]}
        if out.span_loss is not None:
            rec["span_reg"] = float(out.span_loss.detach())
        state["history"].append(rec)
        if step % args.logging_steps == 0 or step == args.max_steps:
            log(f"step {step} | loss {rec['loss']:.4f} | bpc {rec['loss'] / math.log(2):.3f} | "
                f"{rec['tokens_per_s']:.0f} tok/s | peak mem {peak.peak_mb:.1f} MB")
            accelerator.log({f"train/{k}": v for k, v in rec.items() if k != "step"}, step=step)
        if (args.eval_steps and step % args.eval_steps == 0) or step == args.max_steps:
            ev = evaluate_lm(unwrapped, valid, device, args.eval_batches)
            ev["step"] = step
            ev.update(span_summary(unwrapped))
            ev["attention_flops_ratio"] = unwrapped.attention_flops(args.block_size)["ratio"]
            ids_eval = next(valid.sequential(1))[:2].to(device)
            ev["attention_entropy"] = attention_entropy(unwrapped, ids_eval)
            state["evals"].append(ev)
            log(f"step {step} | eval | loss {ev['loss']:.4f} | bpc {ev['bpc']:.4f} | ppl {ev['perplexity']:.3f} | "
                f"attn FLOPs {ev['attention_flops_ratio']:.3f} x dense | entropy {ev['attention_entropy']:.3f}"
                + (f" | mean span {ev['mean_span']:.1f}" if ev["mean_span"] is not None else "")
                + (f" | mean period {ev['mean_period']:.2f}" if ev["mean_period"] is not None else ""))
            accelerator.log({f"eval/{k}": v for k, v in ev.items() if isinstance(v, (int, float)) and v is not None},
                            step=step)
            if accelerator.is_main_process:
                with open(metrics_path, "a") as fh:
                    fh.write(json.dumps(ev) + "\n")
            if state.get("best_val_loss") is None or ev["loss"] < state["best_val_loss"]:
                state["best_val_loss"], state["best_val_bpc"], state["best_step"] = ev["loss"], ev["bpc"], step
                if accelerator.is_main_process:  # atomic: a run killed mid-write keeps the previous best
                    ckpt.atomic_write_dir(out_dir / "best_model", unwrapped.save_pretrained)
        if args.save_steps and step % args.save_steps == 0:
            ckpt.save_checkpoint(accelerator, out_dir / "checkpoints", step, json.loads(json.dumps(state)),
                                 keep=args.save_total_limit)
    progress.close()
    last_eval = state["evals"][-1] if state["evals"] else {}
    flops = unwrapped.attention_flops(args.block_size)
    summary = {
        "output_dir": str(out_dir), "status": status, "message": message, "params": n_params,
        "dataset": [lm_dataset_name(source, args.enwik8)],
        "best_model_dir": str(out_dir / "best_model") if state.get("best_step") else None,
        "best_step": state.get("best_step"), "best_val_bpc": state.get("best_val_bpc"),
        "steps": state["step"], "train_time_s": train_time,
        "tokens_per_s": tokens_per_step * len([h for h in state["history"]]) / max(train_time, 1e-9)
        if train_time else None,
        "peak_memory_mb": peak.peak_mb, "final_train_loss": state["history"][-1]["loss"] if state["history"] else None,
        "val_loss": last_eval.get("loss"), "val_bpc": last_eval.get("bpc"), "val_perplexity": last_eval.get("perplexity"),
        "attention_flops": flops["attention_flops"], "dense_attention_flops": flops["dense_causal_flops"],
        "attention_flops_ratio": flops["ratio"], "attention_entropy": last_eval.get("attention_entropy"),
        **span_summary(unwrapped), "history": state["history"], "evals": state["evals"],
    }
    if accelerator.is_main_process:
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    if args.push_to_hub and status == "completed" and summary["best_model_dir"] and accelerator.is_main_process:
        summary["hub"] = ckpt.push_best_model(summary["best_model_dir"], out_dir, args.push_to_hub, args.hub_private,
                                              log=log, eval_results={"bpc": summary["best_val_bpc"],
                                                                     "dataset": lm_dataset_name(source, args.enwik8),
                                                                     "split": "validation"})
    accelerator.end_training()
    return summary


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@cli_errors("train_lm.py")
def main(argv=None) -> int:
    args = parse_into(LMTrainingArguments, build_lm_arg_parser(), argv)
    summary = train_lm(args)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("history", "evals", "spans", "periods")}, indent=1))
    return 0 if summary["status"] == "completed" else 1
