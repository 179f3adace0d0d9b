"""An ALiBi AdaptiveSpanGPT (no adaptive span: the table is fixed, unbounded) training step at T=4096 on a 2-core
CPU: `sdpa` (the table as a dense bias) against `hf_blockwise` (the per-block fused path: each query block against
its causal key range, one fused call) and against `hf_blockwise` forced onto the online-softmax loop, the path such
unbounded tables took before the per-block path. 2 layers, hidden 128, 4 heads, B=1, fp32; medians of 3,
interleaved.

    python studies/span_training_step/alibi_step.py
"""

import statistics
import time

import torch

from hf_attn import AdaptiveSpanGPTConfig, AdaptiveSpanGPTForCausalLM
from hf_attn.attention import blockwise

T = 4096


def build(implementation: str) -> AdaptiveSpanGPTForCausalLM:
    torch.manual_seed(0)
    config = AdaptiveSpanGPTConfig(vocab_size=256, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   max_position_embeddings=T, position_embedding="alibi",
                                   attn_implementation=implementation)
    return AdaptiveSpanGPTForCausalLM(config).train()


def main() -> None:
    torch.set_num_threads(2)
    ids = torch.randint(0, 256, (1, T), generator=torch.Generator().manual_seed(0))
    models = {"sdpa (dense ALiBi bias)": build("sdpa"), "hf_blockwise": build("hf_blockwise"),
              "hf_blockwise, loop forced": build("hf_blockwise")}
    plan = blockwise._path

    def step(name: str) -> None:
        blockwise._path = (lambda *args: "loop") if "loop" in name else plan
        model = models[name]
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()

    for name in models:
        step(name)  # warm-up
    times = {name: [] for name in models}
    for _ in range(3):
        for name in models:
            start = time.perf_counter()
            step(name)
            times[name].append(time.perf_counter() - start)
    blockwise._path = plan
    base = statistics.median(times["sdpa (dense ALiBi bias)"])
    for name, samples in times.items():
        seconds = statistics.median(samples)
        print(f"{name:28s} {seconds:6.2f} s ({base / seconds:.2f}x)")


if __name__ == "__main__":
    main()
