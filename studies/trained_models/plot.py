"""Loss curves of the trained-models study -> docs/img/*.png (small PNGs)."""
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

OUT = Path("outputs/trained_models")
IMG = Path("docs/img")
IMG.mkdir(parents=True, exist_ok=True)
EMBEDDER_PNG = IMG / "embedder_training_curves.png"
LM_PNG = IMG / "adaptive_span_training_curves.png"


def smooth(y, k=10):
    y = np.asarray(y, float)
    if len(y) < k:
        return y
    return np.convolve(y, np.ones(k) / k, mode="valid")


def load(run):
    p = OUT / run / "summary.json"
    return json.loads(p.read_text()) if p.exists() else None


# round 1 (round1/, 13-29 min runs) and round 2 (round2/, the 57-minute budget runs)
emb = [("round1/tan_scratch_sup", "TAN scratch: pairs, 400 steps"),
       ("round1/tan_distill", "TAN distilled (embedding MSE), 270 steps"),
       ("round2/tan_scratch_long", "TAN scratch: pairs, 57 min"),
       ("round2/tan_distill_sim", "TAN distilled (similarity), 57 min"),
       ("round2/gqa_scratch", "GQAEmbedder scratch, 57 min"),
       ("round2/gqa_distill_sim_init", "GQAEmbedder distilled (similarity + teacher init), 57 min")]
fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
for run, label in emb:
    s = load(run)
    if not s:
        continue
    h = s["history"]
    x = [r["step"] for r in h]
    y = [r["loss"] for r in h]
    ys = smooth(y)
    a1.plot(x[len(x) - len(ys):], ys, label=label, lw=1.2)
    ev = s["evals"]
    a2.plot([e["step"] for e in ev], [e["spearman"] for e in ev], marker="o", ms=3, label=label, lw=1.2)
a1.set_xlabel("optimizer step")
a1.set_ylabel("training loss (10-step mean)")
a1.set_yscale("log")
a1.set_title("training loss")
a2.set_xlabel("optimizer step")
a2.set_ylabel("STS-B dev Spearman")
a2.set_title("STS-B dev (checkpoint selection)")
a2.axhline(0.8203, color="gray", ls="--", lw=0.8)
a2.text(0, 0.8203, " all-MiniLM-L6-v2 test 0.8203", fontsize=7, va="bottom", color="gray")
a2.legend(fontsize=7, loc="lower right")
fig.tight_layout()
fig.savefig(EMBEDDER_PNG, dpi=80)

lm = [("round1/lm_dense_sdpa", "T=512 dense causal (sdpa)"),
      ("round1/lm_span_blockwise", "T=512 adaptive span"),
      ("round1/lm_span_tw_blockwise", "T=512 adaptive span + triangle wave"),
      ("round2/lm2k_dense_sdpa", "T=2048 dense causal (sdpa)"),
      ("round2/lm2k_span", "T=2048 adaptive span"),
      ("round2/lm2k_span_tw", "T=2048 adaptive span + triangle wave")]
fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
for run, label in lm:
    s = load(run)
    if not s:
        continue
    h = s["history"]
    x = [r["step"] for r in h]
    y = [r["loss"] / math.log(2) for r in h]
    ls = "-" if run.startswith("round2") else ":"
    ys = smooth(y)
    (line,) = a1.plot(x[len(x) - len(ys):], ys, label=label, lw=1.2, ls=ls)
    ev = s["evals"]
    a1.plot([e["step"] for e in ev], [e["bpc"] for e in ev], "o", ms=3, color=line.get_color())
    a2.plot([e["step"] for e in ev], [e["attention_flops_ratio"] for e in ev], marker="o", ms=3, label=label, lw=1.2,
            ls=ls, color=line.get_color())
a1.set_xlabel("step")
a1.set_ylabel("bits per byte")
a1.set_title("Wikipedia bytes: train (10-step mean), val (dots)", fontsize=9)
a1.set_ylim(top=4)
a1.legend(fontsize=7)
a2.set_xlabel("step")
a2.set_ylabel("attention FLOPs / dense causal")
a2.set_title("attention FLOPs (mask > 0 entries)")
a2.set_ylim(0, 1.05)
fig.tight_layout()
fig.savefig(LM_PNG, dpi=80)
for f in (EMBEDDER_PNG, LM_PNG):
    print(f, f.stat().st_size)
