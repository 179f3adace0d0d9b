"""Speed of the Triton kernels and of the blockwise CPU path, as tables of ratios measured in one run.

    python benchmarks/triton_kernels.py [--quick] [--out FILE] [--repeats N] [--cpu-only | --cuda-only]

CUDA (bf16; H100-class GPU; T in --cuda-lengths, default 4096 and 16384, H=16, B=16384 // T):
  1. hf_blockwise dense causal, D=64, forward+backward vs torch SDPA's flash backend               target >= 0.8x
  2. hf_blockwise with adaptive spans averaging T/8 (soft log-mask table + max_distance) vs its own
     dense causal run, forward+backward                                                        target >= 4x
  3. chebyshev_project fused, N=1M, K=hidden=256, forward+backward vs the unfused PyTorch
     reference (modeling_tan.chebyshev_project_reference), and peak memory                   target >= 3x
CPU (fp32):
  4. AdaptiveSpanGPT training step (forward+backward) at T=4096, spans ~T/8: the span model on hf_blockwise
     (banded path: fused sdpa over key slabs) against the dense model (no span table) on sdpa, measured
     in the same run; also the span model with spans at the maximum, the same span model on sdpa (dense bias),
     and the dense model on hf_blockwise.                              target: span on hf_blockwise >= 2.5x dense sdpa

Times are medians over `--repeats` runs after a warm-up (CUDA: events + synchronize). `--quick` shrinks the
repeats and the CPU model's length (T=1024) for a smoke run.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch  # noqa: E402

from hf_attn.modeling.modeling_tan import chebyshev_project_reference  # noqa: E402


def median_time(fn, repeats: int, warmup: int = 1, cuda: bool = False) -> float:
    """Median seconds of fn() over `repeats` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def adaptive_span_table(num_heads: int, mean_span: float, softness: float, length: int, device) -> tuple:
    """Adaptive-span log-mask table [H, L] with spans spread over [mean/2, 3 mean/2] (mean `mean_span`) and the
    max_distance past which every head's mask is 0 (as AdaptiveSpanAttention.distance_bias builds it)."""
    from hf_attn.modeling.distance_masks import adaptive_span_mask, safe_log, span_max_distance

    spans = torch.linspace(0.5 * mean_span, 1.5 * mean_span, num_heads, device=device)
    max_distance = span_max_distance(spans, softness)
    d = torch.arange(min(length, max_distance), device=device, dtype=torch.float32)
    return safe_log(adaptive_span_mask(spans, softness, d)), max_distance


def print_table(title: str, header: list[str], rows: list[list[str]], lines: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    block = [f"\n## {title}", fmt.format(*header), "-+-".join("-" * w for w in widths)]
    block += [fmt.format(*map(str, r)) for r in rows]
    for line in block:
        print(line)
    lines.extend(block)


def _bench_cuda_attention(t: int, b: int, repeats: int, dev, dtype, lines: list[str]) -> None:
    """hf_blockwise (Triton) dense causal vs SDPA's flash backend, and with spans ~T/8, at length t."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from hf_attn.kernels.flash_attention import flash_attention

    h, d = 16, 64
    q, k, v = (torch.randn(b, h, t, d, device=dev, dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn(b, t, h, d, device=dev, dtype=dtype)
    table, max_distance = adaptive_span_table(h, t / 8, 32.0, t, dev)

    def step(fn):
        def run():
            out = fn()
            torch.autograd.grad(out, (q, k, v), grad)
        return run

    def ours_dense():
        return flash_attention(q, k, v, is_causal=True)

    def ours_span():
        return flash_attention(q, k, v, is_causal=True, distance_bias=table, max_distance=max_distance)

    def sdpa_flash():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)

    timings = {}
    for name, fn in [("sdpa_flash", sdpa_flash), ("hf_blockwise_dense", ours_dense), ("hf_blockwise_span", ours_span)]:
        timings[name] = median_time(step(fn), repeats, warmup=2, cuda=True)
        timings[name + "_fwd"] = median_time(fn, repeats, warmup=2, cuda=True)
    rows = [
        [
            "dense causal fwd+bwd: hf_blockwise vs SDPA flash",
            f"{timings['hf_blockwise_dense'] * 1e3:.2f}",
            f"{timings['sdpa_flash'] * 1e3:.2f}",
            f"{timings['sdpa_flash'] / timings['hf_blockwise_dense']:.2f}x",
            ">= 0.8x",
        ],
        [
            "dense causal fwd: hf_blockwise vs SDPA flash",
            f"{timings['hf_blockwise_dense_fwd'] * 1e3:.2f}",
            f"{timings['sdpa_flash_fwd'] * 1e3:.2f}",
            f"{timings['sdpa_flash_fwd'] / timings['hf_blockwise_dense_fwd']:.2f}x",
            "-",
        ],
        [
            f"spans ~T/8 (max_distance {max_distance}) fwd+bwd vs own dense",
            f"{timings['hf_blockwise_span'] * 1e3:.2f}",
            f"{timings['hf_blockwise_dense'] * 1e3:.2f}",
            f"{timings['hf_blockwise_dense'] / timings['hf_blockwise_span']:.2f}x",
            ">= 4x",
        ],
    ]
    print_table(
        f"attention, bf16, B={b} H={h} T={t} D={d} (ms, median of {repeats})",
        ["case", "ours ms", "baseline ms", "speed-up", "target"],
        rows,
        lines,
    )


def bench_cuda(args, lines: list[str]) -> None:
    from hf_attn.kernels.chebyshev import chebyshev_project_triton

    dev = torch.device("cuda")
    dtype = torch.bfloat16
    repeats = 3 if args.quick else args.repeats
    lines.append(f"\ndevice: {torch.cuda.get_device_name(dev)}, torch {torch.__version__}, dtype {dtype}")
    print(lines[-1])

    # 1 + 2: attention, H=16, D=64 (FA papers' standard setting for head dim 64), B*T = 16384 tokens per step.
    for t in args.cuda_lengths:
        _bench_cuda_attention(t, max(1, 16384 // t), repeats, dev, dtype, lines)

    # 3: Chebyshev expansion + projection.
    n, kdeg, hidden = 1 << 20, 256, 256
    u = (torch.rand(n, device=dev) * 2 - 1).requires_grad_(True)
    weight = (torch.randn(hidden, kdeg, device=dev) / 16).to(dtype).requires_grad_(True)
    bias = torch.zeros(hidden, device=dev, dtype=dtype, requires_grad=True)
    gy = torch.randn(n, hidden, device=dev, dtype=dtype)

    def cheb_step(fn):
        def run():
            torch.autograd.grad(fn(u, weight, bias), (u, weight, bias), gy)

        return run

    res = {}
    for name, fn in [("fused", chebyshev_project_triton), ("reference", chebyshev_project_reference)]:
        res[name] = median_time(cheb_step(fn), repeats, warmup=2, cuda=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        cheb_step(fn)()
        torch.cuda.synchronize()
        res[name + "_mem"] = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
    rows = [
        [
            "fwd+bwd time (ms)",
            f"{res['fused'] * 1e3:.2f}",
            f"{res['reference'] * 1e3:.2f}",
            f"{res['reference'] / res['fused']:.2f}x",
            ">= 3x",
        ],
        [
            "peak extra memory (MiB)",
            f"{res['fused_mem']:.0f}",
            f"{res['reference_mem']:.0f}",
            f"{res['reference_mem'] / max(res['fused_mem'], 1e-9):.2f}x",
            "O(N x hidden)",
        ],
    ]
    print_table(
        f"chebyshev_project, bf16 weight, N={n} K={kdeg} hidden={hidden} (median of {repeats})",
        ["metric", "fused", "unfused ref", "ratio", "target"],
        rows,
        lines,
    )


def bench_cpu(args, lines: list[str]) -> None:
    from hf_attn import AdaptiveSpanGPTConfig, AdaptiveSpanGPTForCausalLM

    t = 1024 if args.quick else args.cpu_seq_len
    repeats = 1 if args.quick else max(1, min(args.repeats, 3))
    model_kwargs = dict(
        vocab_size=256,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=t,
        position_embedding="rope",
        max_span=t,
        softness_span_mask=32.0,
    )
    ids = torch.randint(0, 256, (1, t), generator=torch.Generator().manual_seed(0))

    def build(adaptive: bool, implementation: str):
        torch.manual_seed(0)
        model = AdaptiveSpanGPTForCausalLM(
            AdaptiveSpanGPTConfig(use_adaptive_attention=adaptive, attn_implementation=implementation, **model_kwargs)
        )
        model.train()
        return model

    def set_spans(model, ratio_of_max: torch.Tensor) -> int | None:
        logit = torch.logit(ratio_of_max.clamp(1e-6, 1 - 1e-6))
        with torch.no_grad():
            for layer in model.modules():
                if hasattr(layer, "span_logit"):
                    layer.span_logit.copy_(logit)
        attn = next((m for m in model.modules() if hasattr(m, "max_distance") and callable(m.max_distance)), None)
        return attn.max_distance() if attn is not None else None

    def step_of(model):
        def step():
            model.zero_grad(set_to_none=True)
            out = model(input_ids=ids, labels=ids, use_cache=False)
            out.loss.backward()

        return step

    heads = model_kwargs["num_attention_heads"]
    near_t8 = torch.linspace(0.5, 1.5, heads) / 8  # spans ~T/8, spread over [T/16, 3T/16] across heads
    cases = [  # (name, adaptive span, backend, span ratios)
        ("dense model, sdpa (baseline)", False, "sdpa", None),
        ("span model ~T/8, hf_blockwise", True, "hf_blockwise", near_t8),
        ("span model ~T/8, sdpa (dense bias)", True, "sdpa", near_t8),
        ("span model at max span, hf_blockwise", True, "hf_blockwise", torch.ones(heads)),
        ("dense model, hf_blockwise", False, "hf_blockwise", None),
    ]
    steps, max_dist = {}, {}
    for name, adaptive, implementation, ratio in cases:
        model = build(adaptive, implementation)
        max_dist[name] = set_spans(model, ratio) if ratio is not None else None
        steps[name] = step_of(model)
    # Interleaved rounds (one step of every case per round) so that load drifts hit all cases alike.
    for step in steps.values():
        step()  # warm-up
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times[cases[0][0]])
    rows = []
    for name, *_ in cases:
        sec = statistics.median(times[name])
        rows.append([name, "-" if max_dist[name] is None else str(max_dist[name]), f"{sec:.2f}", f"{base / sec:.2f}x"])
    print_table(
        f"CPU: AdaptiveSpanGPT training step (fwd+bwd), fp32, B=1 T={t}, 2 layers, hidden 128, 4 heads "
        f"({torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, median of {repeats}, "
        "interleaved); speed-up vs the dense model on sdpa (target: span ~T/8 on hf_blockwise >= 2.5x)",
        ["model, backend", "max_distance", "seconds", "speed-up"],
        rows,
        lines,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few repeats, T=1024 on CPU")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--cpu-seq-len", type=int, default=4096)
    parser.add_argument(
        "--cuda-lengths",
        type=int,
        nargs="+",
        default=[4096, 16384],
        help="sequence lengths of the CUDA attention table (B = 16384 // T)",
    )
    parser.add_argument("--cpu-only", action="store_true")
    parser.add_argument("--cuda-only", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the tables to this file")
    args = parser.parse_args(argv)

    lines = [f"# benchmarks/triton_kernels.py {' '.join(argv if argv is not None else sys.argv[1:])}"]
    if not args.cpu_only:
        if torch.cuda.is_available():
            bench_cuda(args, lines)
        else:
            lines.append("\n(no CUDA device: the Triton kernel tables are skipped)")
            print(lines[-1])
    if not args.cuda_only:
        bench_cpu(args, lines)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
