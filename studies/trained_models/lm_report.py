"""Summarise the LM runs: val bpc, FLOP ratios, s/step, spans/periods.

    python studies/trained_models/lm_report.py                                  # round 1: T=512, batch 8
    python studies/trained_models/lm_report.py outputs/trained_models/round2 2048 2 \\
        lm2k_dense_sdpa lm2k_span lm2k_span_tw
(the first run is the dense baseline the others are compared with)
"""
import json
import statistics
import sys
from pathlib import Path

from hf_attn.attention.blockwise import score_entries
from hf_attn.modeling.distance_masks import causal_attention_entries, span_max_distance

RUN_DIR = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("outputs/trained_models/round1")
T = int(sys.argv[2]) if len(sys.argv) > 2 else 512  # block_size
B = int(sys.argv[3]) if len(sys.argv) > 3 else 8  # batch size
RUNS = sys.argv[4:] or ["lm_dense_sdpa", "lm_span_blockwise", "lm_span_tw_blockwise", "lm_dense_blockwise"]
R, BLK = 32, 128  # softness_span_mask, hf_blockwise block size


def blockwise_ratio(spans):
    """Score entries hf_blockwise computes (its own path choice) / the T(T+1)/2 pairs of dense causal attention."""
    if spans is None:
        return None
    dense = causal_attention_entries(T)
    computed = (
        score_entries(T, T, is_causal=True, max_distance=span_max_distance(layer, R), block_size=BLK)
        for layer in spans
    )
    return sum(computed) / (len(spans) * dense)


def min_mean_max(layer, ndigits=None):
    return round(min(layer), ndigits), round(sum(layer) / len(layer), ndigits), round(max(layer), ndigits)


rows = []
for run in RUNS:
    p = RUN_DIR / run / "summary.json"
    if not p.exists():
        continue
    s = json.loads(p.read_text())
    h = s["history"]
    tps = B * T
    sps = [tps / r["tokens_per_s"] for r in h[10:]]
    ev = s["evals"][-1]
    spans, periods = s.get("spans"), s.get("periods")
    r = dict(run=run, steps=s["steps"], train_time_s=round(s["train_time_s"], 1), val_bpc=round(s["val_bpc"], 4),
             flops_ratio_mask=round(s["attention_flops_ratio"], 3),
             blockwise_entries_ratio=blockwise_ratio(spans) and round(blockwise_ratio(spans), 3),
             s_per_step_mean=round(statistics.mean(sps), 3), s_per_step_median=round(statistics.median(sps), 3),
             params=s["params"], entropy=round(s["attention_entropy"], 3) if s.get("attention_entropy") else None)
    if spans:
        r["span_per_layer_min_mean_max"] = [min_mean_max(layer) for layer in spans]
    if periods:
        r["period_per_layer_min_mean_max"] = [min_mean_max(layer, 2) for layer in periods]
    r["evals_bpc"] = [(e["step"], round(e["bpc"], 4), round(e["attention_flops_ratio"], 3)) for e in s["evals"]]
    rows.append(r)
for r in rows:
    print(json.dumps(r))
if rows and rows[0]["run"] == RUNS[0]:
    d = rows[0]
    for r in rows[1:]:
        bpc_change = 100 * (r["val_bpc"] / d["val_bpc"] - 1)
        step_ratio = r["s_per_step_median"] / d["s_per_step_median"]
        print(f"{r['run']}: bpc {bpc_change:+.2f}% vs dense; s/step {step_ratio:.3f}x dense-sdpa")
