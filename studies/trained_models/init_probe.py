"""STS-B dev Spearman of an *untrained* default GQAEmbedder, with and without --init-from-teacher.

What the teacher's token embeddings buy before any step: python studies/trained_models/init_probe.py
(also prints mean-pooled teacher input embeddings alone, the table the student starts from).
"""
import torch

from hf_attn import GQAEmbedderConfig, GQAEmbedderModel
from hf_attn.evaluation.stsb import stsb_correlations
from hf_attn.training.embed.eval import make_encode_fn
from hf_attn.training.embed.teacher import InStepTeacher, resolve_teacher, teacher_input_embeddings
from hf_attn.training.tokenizer import load_tokenizer

DATA = "../shared/data"
teacher = InStepTeacher("all-MiniLM-L6-v2", "cpu", max_seq_length=64)
tok = load_tokenizer(resolve_teacher("all-MiniLM-L6-v2"))
table = teacher.model[0].auto_model.get_input_embeddings().weight.detach()


@torch.no_grad()
def mean_table(texts):
    enc = tok(list(texts), padding=True, truncation=True, max_length=64, return_tensors="pt")
    m = enc["attention_mask"].float()[..., None]
    return (table[enc["input_ids"]] * m).sum(1) / m.sum(1)


print("teacher input table, mean-pooled:", stsb_correlations(mean_table, "dev", data_dir=DATA))
for init in (False, True):
    torch.manual_seed(42)
    model = GQAEmbedderModel(GQAEmbedderConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id)).eval()
    if init:
        model.init_from_static_vectors(teacher_input_embeddings(tok, teacher.model))
    res = stsb_correlations(make_encode_fn(model, tok, 64, "cpu"), "dev", data_dir=DATA, batch_size=128)
    print(f"untrained GQAEmbedder, init_from_teacher={init}:", res)
