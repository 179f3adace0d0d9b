"""Wall-clock of trained AdaptiveSpanGPT models, timed interleaved in one process (medians), and the attention
score entries hf_blockwise actually computes for each, vs a dense causal model.

    python studies/trained_models/lm_step_time.py NAME=RUN_DIR:ATTN_IMPL ... [--seq-len 2048 --batch-size 2 --repeats 7]

Each RUN_DIR is a train_lm output folder; its best_model/ is loaded with ATTN_IMPL (sdpa, hf_blockwise, ...: a
saved config does not carry the backend it was trained with). One pass
times every model once (forward, then forward+backward) on the same batch of Wikipedia bytes; passes repeat
`--repeats` times, so machine noise hits every model alike; medians are printed, with ratios to the first model.
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

import hf_attn  # noqa: F401  (registers the model and hf_blockwise)
from hf_attn.attention.blockwise import score_entries
from hf_attn.modeling.distance_masks import causal_attention_entries

BLOCK = 128  # hf_blockwise's default block size


def entries_computed(model, seq_len: int) -> int:
    """Query-key score entries hf_blockwise computes over all layers (per sequence), from the learned spans."""
    return sum(score_entries(seq_len, seq_len, is_causal=True, max_distance=layer.attn.max_distance(),
                             block_size=BLOCK) for layer in model.model.layers)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="NAME=RUN_DIR:ATTN_IMPL")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--data", default="../shared/data/wikipedia_en_extract/wiki_en_extract.jsonl.gz")
    a = p.parse_args()

    from hf_attn.training.lm.data import load_byte_splits

    val = load_byte_splits(a.data, False, 20_000_000)["validation"]
    n = a.batch_size * a.seq_len
    ids = torch.from_numpy(val[:n].astype("int64")).view(a.batch_size, a.seq_len)

    models = {}
    for spec in a.runs:
        name, rest = spec.split("=", 1)
        run, impl = rest.rsplit(":", 1)
        m = AutoModelForCausalLM.from_pretrained(str(Path(run) / "best_model"), attn_implementation=impl)
        m.train()  # training-mode forward (dropout is 0 in these runs), as in a training step
        models[name] = m
    dense_entries = len(next(iter(models.values())).model.layers) * causal_attention_entries(a.seq_len)
    times = {k: {"fwd": [], "fwd_bwd": []} for k in models}
    for rep in range(a.repeats + 1):  # the first pass warms up and is not counted
        for name, m in models.items():
            t = time.perf_counter()
            with torch.no_grad():
                m(ids)
            t_fwd = time.perf_counter() - t
            m.zero_grad(set_to_none=True)
            t = time.perf_counter()
            m(ids, labels=ids).loss.backward()
            t_step = time.perf_counter() - t
            if rep:
                times[name]["fwd"].append(t_fwd)
                times[name]["fwd_bwd"].append(t_step)
    base = next(iter(models))
    rows = []
    for name, m in models.items():
        fwd, step = statistics.median(times[name]["fwd"]), statistics.median(times[name]["fwd_bwd"])
        rows.append({"model": name, "attn_implementation": m.config._attn_implementation,
                     "fwd_s": round(fwd, 3), "fwd_bwd_s": round(step, 3),
                     "fwd_speedup_vs_" + base: round(statistics.median(times[base]["fwd"]) / fwd, 3),
                     "fwd_bwd_speedup_vs_" + base: round(statistics.median(times[base]["fwd_bwd"]) / step, 3),
                     "entries_computed_vs_dense_causal": round(
                         entries_computed(m, a.seq_len) / dense_entries, 3)
                     if m.config._attn_implementation == "hf_blockwise" else None})
    print(f"B={a.batch_size} T={a.seq_len}, {torch.get_num_threads()} thread(s), "
          f"median of {a.repeats} interleaved passes")
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
