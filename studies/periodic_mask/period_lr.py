"""Do the triangle-wave periods move? A short AdaptiveSpanGPT run (CPU, < 2 minutes) per setting of the learning
rate the triangle-wave scalars (period_logit, offset_logit) get, from two initial periods.

    python studies/periodic_mask/period_lr.py [--steps 120] [--out studies/periodic_mask]

Bytes of tiny_shakespeare (../shared/data) or, absent that, of this checkout's docs; 2 layers x 64 wide, 4 heads,
T=128, batch 8, AdamW 2e-3 constant, spans and triangle wave on, backend hf_blockwise. Prints the periods
(per layer and head) before and after, the largest move, and the final training loss; writes
`learned_masks.png` (each head's learned span x triangle-wave mask over the distance) for the last setting.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

import hf_attn  # noqa: F401
from hf_attn import AdaptiveSpanGPTConfig, AdaptiveSpanGPTForCausalLM
from hf_attn.training.optim import build_optimizer


def load_bytes() -> torch.Tensor:
    root = Path(__file__).resolve().parents[2]
    shakespeare = root.parent / "shared/data/tiny_shakespeare"
    for path in (shakespeare / "input.txt", shakespeare / "train.txt"):
        if path.exists():
            return torch.tensor(list(path.read_bytes()[:400_000]), dtype=torch.long)
    text = b"".join(p.read_bytes() for p in sorted((root / "docs").glob("*.md")))
    return torch.tensor(list(text), dtype=torch.long)


def periods(model) -> torch.Tensor:
    return torch.stack([m.periods().detach() for m in model.modules() if hasattr(m, "period_logit")])


def run(data, steps: int, mask_lr_scale: float, init_period: float, seed: int = 0):
    torch.manual_seed(seed)
    config = AdaptiveSpanGPTConfig(
        vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128,
        max_span=128, softness_span_mask=16.0, use_adaptive_attention=True, use_triangle_wave_masking=True,
        position_embedding="rope", attn_implementation="hf_blockwise")
    model = AdaptiveSpanGPTForCausalLM(config)
    lo, hi = config.period_min_triangle_wave_masking, config.period_max_triangle_wave_masking
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "period_logit"):
                m.period_logit.fill_(math.log((init_period - lo) / (hi - init_period)))
    optimizer = build_optimizer([model], "adamw", lr=2e-3, weight_decay=0.1, mask_lr_scale=mask_lr_scale)
    before = periods(model)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - 129, (8,), generator=g)
        ids = torch.stack([data[s:s + 128] for s in starts])
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model, before, periods(model), loss.item()


def plot(model, out: Path) -> None:
    """One heat map per layer: each head's learned span x triangle-wave mask over the distance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [m for m in model.modules() if hasattr(m, "triangle_mask") and m.triangle_mask is not None]
    fig, axes = plt.subplots(len(layers), 1, figsize=(9, 1.2 + 0.45 * layers[0].num_heads * len(layers)),
                             squeeze=False, layout="constrained")
    for ax, layer in zip(axes[:, 0], layers, strict=True):
        with torch.no_grad():
            mask = layer.distance_mask(layer.config.max_span).cpu()
            period = layer.triangle_mask.periods().cpu()
        image = ax.imshow(mask, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_yticks(range(len(period)), [f"head {h}, P={p:.2f}" for h, p in enumerate(period.tolist())])
        ax.set_title(f"layer {layer.layer_idx}", fontsize=9)
    axes[-1, 0].set_xlabel("distance d = q - k (tokens)")
    fig.colorbar(image, ax=axes[:, 0].tolist(), label="mask (0 = key excluded)")
    fig.suptitle("learned span x triangle-wave mask per head")
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "learned_masks.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 20.0])
    parser.add_argument("--inits", type=float, nargs="+", default=[3.0, 7.0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_bytes()
    model = None
    for scale in args.scales:
        for init in args.inits:
            t0 = time.perf_counter()
            model, before, after, loss = run(data, args.steps, scale, init)
            print(f"mask lr scale {scale:g}, init period {init:g}: periods after {args.steps} steps "
                  f"{[[round(x, 2) for x in row] for row in after.tolist()]}; max |move| "
                  f"{(after - before).abs().max():.3f}; mean {after.mean():.2f}; loss {loss:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    plot(model, args.out)


if __name__ == "__main__":
    main()
