# attention sanity check: random 32-byte string repeated twice; the 2nd copy is predictable only through attention
import sys
import time

import torch

from hf_attn.training.lm import build_lm_model
from hf_attn.training.lm.args import LMTrainingArguments, model_options

torch.manual_seed(0)
a = LMTrainingArguments(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, block_size=64,
                        attn_implementation=sys.argv[1] if len(sys.argv) > 1 else "sdpa")
m = build_lm_model(model_options(a), a.attn_implementation)
opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
t = time.time()
for step in range(301):
    x = torch.randint(0, 256, (16, 32))
    ids = torch.cat([x, x], 1)
    out = m(input_ids=ids, labels=ids, use_cache=False)
    lg = out.logits[:, 32:-1].reshape(-1, 256)
    second = torch.nn.functional.cross_entropy(lg, ids[:, 33:].reshape(-1))
    out.loss.backward()
    opt.step()
    opt.zero_grad()
    if step % 50 == 0:
        print(step, round(out.loss.item(), 3), "2nd-half loss", round(second.item(), 3), round(time.time() - t, 1),
              flush=True)
