"""TAN token code ablation: the same TAN (4 x 256), distilled from all-MiniLM-L6-v2 on the same cached teacher
targets for the same number of steps, with each way of coding a token (TanConfig.token_code):

  id       one coordinate per token, its id rescaled to [-1, 1], Chebyshev degree 256 (the original TAN design)
  hashed   16 coordinates from fixed pseudo-random orderings of the vocabulary, degree 32
  teacher  16 coordinates = top principal directions of the teacher's static token vectors, degree 32
  teacher64 the same with 64 coordinates of degree 8

Prints STS-B dev Spearman at every evaluation and a markdown table (best dev per run). Selection is on dev only.

    python studies/distillation/token_code_ablation.py --data-dir ../shared/data --steps 600 \
        --teacher-cache outputs/teacher_cache --out outputs/ablation_token_code
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CODES = {
    "id": {"token_code": "id", "num_token_coordinates": 1, "chebyshev_degree": 256},
    "hashed": {"token_code": "hashed", "num_token_coordinates": 16, "chebyshev_degree": 32},
    "teacher": {"token_code": "hashed", "num_token_coordinates": 16, "chebyshev_degree": 32, "_init": True},
    "teacher64": {"token_code": "hashed", "num_token_coordinates": 64, "chebyshev_degree": 8, "_init": True},
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--pool", type=int, default=200000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--teacher-cache", default="outputs/teacher_cache")
    p.add_argument("--out", default="outputs/ablation_token_code")
    p.add_argument("--codes", nargs="+", default=list(CODES), choices=list(CODES))
    args = p.parse_args()

    from hf_attn.training.embed import train_embedder
    from hf_attn.training.embed.args import EmbedTrainingArguments

    rows = []
    for name in args.codes:
        kwargs = dict(CODES[name])
        init = kwargs.pop("_init", False)
        res = train_embedder(EmbedTrainingArguments(
            model="tan", data_dir=args.data_dir, output_dir=f"{args.out}/{name}", teacher="all-MiniLM-L6-v2",
            tokenizer="all-MiniLM-L6-v2", distill_pool=args.pool, teacher_cache=args.teacher_cache,
            init_from_teacher=init, distill_target="both", model_kwargs=json.dumps(kwargs), max_seq_length=128,
            batch_size=args.batch_size, grad_accum_steps=1, max_steps=args.steps, learning_rate=args.lr,
            lr_schedule="cosine", warmup_ratio=0.05, eval_steps=args.steps // 4, save_steps=0,
            logging_steps=50))
        rows.append((name, kwargs, res))
    lines = ["| token code | coordinates x degree | params | steps | dev Spearman by step | best dev |",
             "|---|---|---:|---:|---|---:|"]
    for name, kw, res in rows:
        evals = ", ".join(f"{e['step']}: {e['spearman']:.4f}" for e in res["evals"])
        lines.append(f"| {name} | {kw['num_token_coordinates']} x {kw['chebyshev_degree']} | {res['params']:,} | "
                     f"{res['steps']} | {evals} | {res['best_dev_spearman']:.4f} |")
    table = "\n".join(lines)
    print(table)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "table.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
