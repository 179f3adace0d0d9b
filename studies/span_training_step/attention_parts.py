"""Where the span model's training step goes: one attention layer of the CPU benchmark's shape (B=1, H=4, T=4096,
D=32), causal sdpa against hf_blockwise with adaptive spans ~T/8 (max_distance 800, the banded path), with and
without the gradient of the distance table (what the span parameters learn from); with it, over whole slabs and
on the span ramp only (`trained_distances`, what AdaptiveSpanGPT declares). Medians of 3, interleaved.

    python studies/span_training_step/attention_parts.py [--head-dim 32] [--no-table-grad]
"""

import argparse
import statistics
import time

import torch

import hf_attn  # noqa: F401  (registers the backends)
from hf_attn.attention.blockwise_backend import blockwise_attention_forward
from hf_attn.modeling.distance_masks import adaptive_span_mask, safe_log, span_max_distance


class CausalModule(torch.nn.Module):
    is_causal = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--no-table-grad", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    b, h, t, d = 1, 4, 4096, args.head_dim
    q, k, v = (torch.randn(b, h, t, d, requires_grad=True) for _ in range(3))
    module = CausalModule().train()
    spans = torch.linspace(0.5, 1.5, h) * t / 8
    table = safe_log(adaptive_span_mask(spans, 32.0, torch.arange(t, dtype=torch.float)))
    table.requires_grad_(not args.no_table_grad)
    max_distance = span_max_distance(spans, 32.0)

    def sdpa():
        torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()

    def blockwise_dense():
        blockwise_attention_forward(module, q, k, v, None)[0].sum().backward()

    def blockwise_span():
        out, _ = blockwise_attention_forward(module, q, k, v, None, distance_bias=table, max_distance=max_distance)
        out.sum().backward()

    ramp = torch.stack([spans.floor(), (spans + 32.0).ceil() + 1], dim=-1).long()  # AdaptiveSpanMask.ramp

    def blockwise_span_on_ramp():
        out, _ = blockwise_attention_forward(module, q, k, v, None, distance_bias=table, max_distance=max_distance,
                                             trained_distances=ramp)
        out.sum().backward()

    def sdpa_forward():
        with torch.no_grad():
            torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

    def blockwise_span_forward():
        with torch.no_grad():
            blockwise_attention_forward(module, q, k, v, None, distance_bias=table, max_distance=max_distance)

    cases = {
        "sdpa fwd+bwd": sdpa,
        "hf_blockwise dense fwd+bwd": blockwise_dense,
        "hf_blockwise spans ~T/8 fwd+bwd": blockwise_span,
        "hf_blockwise spans ~T/8 fwd+bwd, table grad on the ramp": blockwise_span_on_ramp,
        "sdpa fwd": sdpa_forward,
        "hf_blockwise spans ~T/8 fwd": blockwise_span_forward,
    }
    for step in cases.values():
        step()  # warm-up
    times = {name: [] for name in cases}
    for _ in range(3):
        for name, step in cases.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["sdpa fwd+bwd"])
    print(f"B={b} H={h} T={t} D={d}, max_distance {max_distance}, table grad {not args.no_table_grad}")
    for name, samples in times.items():
        ms = statistics.median(samples) * 1e3
        print(f"{name:56s} {ms:8.1f} ms  ({base * 1e3 / ms:.2f}x of sdpa fwd+bwd)")


if __name__ == "__main__":
    main()
