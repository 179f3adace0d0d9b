"""Attention backends inside transformers' own models with windows: prefill, decoding and a training step.

    python benchmarks/models.py                                   # the full run (see below; long)
    python benchmarks/models.py --seq-lens 256 --layers 2 --decode-tokens 4   # a smoke test
    python benchmarks/models.py --models mistral --backends hf_local sdpa --out FILE

Models (each backend gets its own copy of the model and its own config object, same weights: transformers reads
`config._attn_implementation` at run time, so two models sharing a config would run one backend):

- mistral: transformers' Mistral, hidden 512, 8 layers, 8 heads, 2 KV heads, MLP 1536, window 512 on every layer;
- gemma2: transformers' Gemma 2 of the same shape, windows on alternate layers, logit soft-capping 50;
- modernbert: a ModernBERT-shaped encoder (ModernBertForMaskedLM), hidden 512, 8 layers, 8 heads, MLP 1536,
  `local_attention` 1024 (|d| <= 512) with a global layer every third.

At each T (`--seq-lens`, default 4096 8192 16384), batch 1, fp32, on CPU (or `--device`):

- prefill: a forward of T tokens with `use_cache=True` and `logits_to_keep=1` (decoders), no grad;
- decode: `--decode-tokens` greedy steps after that prompt, one token at a time through the KV cache: tokens/s;
- train: forward + backward of the causal-LM / masked-LM loss on all T tokens (no optimiser step).

Backends: hf_local and hf_blockwise against transformers' sdpa (its own window mask), flex_attention and eager
where they run (eager is skipped above `--eager-max-len`; flex_attention has no backward on CPU). The baseline of
each cell is the first of `--baselines` that ran that phase (Gemma 2 does not support sdpa: soft-capping).
Each cell is `time (ratio to the baseline; FLOP-limited ratio)`, the second ratio being the baseline's
floating-point work over the backend's (projections, MLP, LM head and the attention score entries each one
computes: dense T x T for a dense mask, the visited blocks for flex_attention,
`hf_attn.attention.blockwise.score_entries` for hf_local / hf_blockwise): the ratio if time followed work. At the
first T every backend's last hidden state is checked against the first baseline's (max abs difference, printed).

Timings are medians of `--repeats` runs after one warm-up at T = 256 (flex_attention compiles there).
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import transformers  # noqa: E402

import hf_attn  # noqa: E402, F401  (registers the hf_* backends)
from hf_attn.attention.blockwise import score_entries  # noqa: E402

HIDDEN, HEADS, KV_HEADS, MLP, WINDOW, VOCAB = 512, 8, 2, 1536, 512, 32000
MODELS = ("mistral", "gemma2", "modernbert")
BACKENDS = ("sdpa", "flex_attention", "eager", "hf_local", "hf_blockwise")
FLEX_BLOCK = 128  # flex_attention's block size: it computes every block its block mask keeps


def build_model(name: str, layers: int, max_len: int):
    """(model, is_decoder, layer kinds: "window" | "full" per layer, window half-width or window)."""
    torch.manual_seed(0)
    if name == "mistral":
        config = transformers.MistralConfig(
            vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=MLP, num_hidden_layers=layers,
            num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, sliding_window=WINDOW,
            max_position_embeddings=max_len)
        return transformers.MistralForCausalLM(config), True, ["window"] * layers
    if name == "gemma2":
        config = transformers.Gemma2Config(
            vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=MLP, num_hidden_layers=layers,
            num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=HIDDEN // HEADS, sliding_window=WINDOW,
            query_pre_attn_scalar=HIDDEN // HEADS, attn_logit_softcapping=50.0, max_position_embeddings=max_len)
        kinds = ["window" if t == "sliding_attention" else "full" for t in config.layer_types]
        return transformers.Gemma2ForCausalLM(config), True, kinds
    if name == "modernbert":
        config = transformers.ModernBertConfig(
            vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=MLP, num_hidden_layers=layers,
            num_attention_heads=HEADS, local_attention=2 * WINDOW, global_attn_every_n_layers=3,
            max_position_embeddings=max_len, pad_token_id=0)
        kinds = ["window" if t == "sliding_attention" else "full" for t in config.layer_types]
        return transformers.ModernBertForMaskedLM(config), False, kinds
    raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")


def on_backend(model, impl: str):
    """A copy of `model` with its own config, on `impl` (ValueError / ImportError when it cannot run it)."""
    other = copy.deepcopy(model)
    other.set_attn_implementation(impl)
    return other


# --------------------------------------------------------------------------------------------------------------
# Work: the FLOP-limited ratio
# --------------------------------------------------------------------------------------------------------------


def _flex_entries(t: int, causal: bool, window: int | None) -> int:
    """Score entries of flex_attention's visited blocks (FLEX_BLOCK x FLEX_BLOCK) for one head."""
    total = 0
    for qs in range(0, t, FLEX_BLOCK):
        qe = min(qs + FLEX_BLOCK, t)
        lo = 0 if window is None else max(0, qs - window + 1)
        hi = qe if causal else (t if window is None else min(t, qe + window - 1))
        lo = lo // FLEX_BLOCK * FLEX_BLOCK
        total += (qe - qs) * (-(-(hi - lo) // FLEX_BLOCK) * FLEX_BLOCK)
    return total


def attention_entries(impl: str, t: int, causal: bool, window: int | None) -> int:
    """Score entries one head of one layer computes over T queries."""
    if impl in ("hf_local", "hf_blockwise"):
        return score_entries(t, t, is_causal=causal, window=window)
    if impl == "flex_attention":
        return _flex_entries(t, causal, window)
    if impl == "sdpa" and window is None and causal:
        return t * (t + 1) // 2  # no mask: the causal kernel skips the upper triangle
    return t * t  # a dense mask: every entry


def forward_flops(impl: str, t: int, kinds: list[str], causal: bool, window: int, head_dim: int,
                  logits_tokens: int) -> float:
    """Multiply-adds x 2 of one forward over T tokens."""
    q, kv = HEADS * head_dim, KV_HEADS * head_dim
    per_token = 2 * (HIDDEN * q + 2 * HIDDEN * kv + q * HIDDEN + 3 * HIDDEN * MLP)
    total = per_token * t * len(kinds) + 2 * HIDDEN * VOCAB * logits_tokens
    for kind in kinds:
        entries = attention_entries(impl, t, causal, window if kind == "window" else None)
        total += 4 * head_dim * HEADS * entries  # q k^T and p v
    return total


# --------------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------------


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def prefill(model, ids, decoder: bool):
    with torch.no_grad():
        if decoder:
            return model(input_ids=ids, use_cache=True, logits_to_keep=1)
        return model(input_ids=ids)


def decode_rate(model, ids, steps: int) -> float:
    """Tokens/s of `steps` greedy steps after a prefill of `ids` (the prefill not timed)."""
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        cache, token = out.cache, out.logits[:, -1:].argmax(-1)
        start = time.perf_counter()
        for _ in range(steps):
            out = model(input_ids=token, cache=cache, use_cache=True)
            cache, token = out.cache, out.logits[:, -1:].argmax(-1)
        return steps / (time.perf_counter() - start)


def train_step(model, ids):
    model.train()
    model.zero_grad(set_to_none=True)
    model(input_ids=ids, labels=ids).loss.backward()
    model.eval()


def measure(model, impl: str, ids, decoder: bool, args) -> dict:
    """{phase: seconds (or tokens/s for decode)} of `model` on `impl` at this T; a phase that fails: its error."""
    result = {}
    phases = [p for p in args.phases if decoder or p != "decode"]
    for phase in phases:
        try:
            if phase == "prefill":
                result[phase] = _median_time(lambda: prefill(model, ids, decoder), args.repeats)
            elif phase == "decode":
                result[phase] = statistics.median(decode_rate(model, ids, args.decode_tokens)
                                                  for _ in range(args.repeats))
            else:
                result[phase] = _median_time(lambda: train_step(model, ids), args.repeats)
        except (RuntimeError, ValueError, NotImplementedError, torch.OutOfMemoryError) as err:
            result[phase] = f"{type(err).__name__}: {str(err).splitlines()[0][:80]}"
    return result


def run_model(name: str, args, log=print) -> list[str]:
    """Markdown lines of one model's table."""
    base, decoder, kinds = build_model(name, args.layers, max(args.seq_lens) + args.decode_tokens + 8)
    base = base.to(args.device).eval()
    causal = decoder
    window = WINDOW + 1 if name == "modernbert" else WINDOW  # ModernBERT's layers: |d| <= 512, i.e. |d| < 513
    head_dim = HIDDEN // HEADS
    models, baseline = {}, None
    warm = torch.randint(1, VOCAB, (1, 256), generator=torch.Generator().manual_seed(0)).to(args.device)
    for impl in args.backends:
        try:
            model = on_backend(base, impl)
            prefill(model, warm, decoder)  # warm-up (flex_attention compiles here)
        except Exception as err:  # noqa: BLE001 - a backend this model or machine cannot run is reported, not fatal
            log(f"{name}: {impl} does not run here ({type(err).__name__}: {str(err).splitlines()[0][:120]})")
            continue
        models[impl] = model
    if not any(b in models for b in args.baselines):
        log(f"{name}: none of the baselines {args.baselines} runs; skipped")
        return []
    phases = [p for p in args.phases if decoder or p != "decode"]
    lines = [f"### {name} (layers: {', '.join(kinds)}; baseline: the first of {', '.join(args.baselines)} that "
             "ran the phase)", "",
             "| T | phase | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for i, t in enumerate(args.seq_lens):
        ids = torch.randint(1, VOCAB, (1, t), generator=torch.Generator().manual_seed(t)).to(args.device)
        results = {}
        for impl, model in models.items():
            if impl == "eager" and t > args.eager_max_len:
                results[impl] = {p: "skipped (T x T weights)" for p in phases}
                continue
            results[impl] = measure(model, impl, ids, decoder, args)
            log(f"{name} T={t} {impl}: {results[impl]}")
        if i == 0:  # the backends compute the model's function: their hidden states agree on every token
            check = next(b for b in args.baselines if b in models)
            with torch.no_grad():
                ref = models[check].base_model(input_ids=ids).last_hidden_state
                for impl, model in models.items():
                    if not (impl == "eager" and t > args.eager_max_len):
                        diff = (model.base_model(input_ids=ids).last_hidden_state - ref).abs().max().item()
                        log(f"{name} T={t} {impl}: max |last hidden state - {check}'s| = {diff:.2e}")
        for phase in phases:
            baseline = next((b for b in args.baselines
                             if b in results and not isinstance(results[b][phase], str)), None)
            if baseline is None:
                lines.append(f"| {t} | {phase} | " + " | ".join(str(results[m][phase]) for m in models) + " |")
                continue
            logits_tokens = 1 if phase == "prefill" and decoder else t
            work = {impl: forward_flops(impl, t, kinds, causal, window, head_dim, logits_tokens) for impl in models}
            cells = []
            for impl in models:
                value, ref = results[impl][phase], results[baseline][phase]
                if isinstance(value, str):
                    cells.append(value)
                    continue
                # Decoding: one query against the same cached keys on every backend, so the work is the same.
                flop_ratio = work[baseline] / work[impl] if phase != "decode" else 1.0
                if phase == "decode":  # tokens/s: higher is better
                    cells.append(f"{value:.1f} tok/s ({value / ref:.2f}x; {flop_ratio:.2f}x)")
                else:
                    cells.append(f"{value:.3f} s ({ref / value:.2f}x; {flop_ratio:.2f}x)")
            lines.append(f"| {t} | {phase} (vs {baseline}) | " + " | ".join(cells) + " |")
    return lines + [""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--backends", nargs="+", default=list(BACKENDS))
    p.add_argument("--baselines", nargs="+", default=["sdpa", "flex_attention", "eager"],
                   help="the first of these that runs a model is its baseline")
    p.add_argument("--seq-lens", nargs="+", type=int, default=[4096, 8192, 16384])
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--phases", nargs="+", default=["prefill", "decode", "train"],
                   choices=["prefill", "decode", "train"])
    p.add_argument("--decode-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--eager-max-len", type=int, default=4096, help="skip eager above this T")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="also write the Markdown tables here")
    args = p.parse_args(argv)
    header = [f"# Attention backends in transformers models ({platform.processor() or platform.machine()}, "
              f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} "
              f"threads, {args.device})", "",
              "Cell: time (ratio to the baseline; FLOP-limited ratio). Decode: tokens/s after a T-token prompt.", ""]
    lines = list(header)
    for name in args.models:
        lines += run_model(name, args)
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
