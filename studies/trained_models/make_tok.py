import sys
import time

from hf_attn.training import data as D
from hf_attn.training.embed import pairs as P
from hf_attn.training.tokenizer import train_tokenizer

vocab = int(sys.argv[2])
out = sys.argv[1]
t=time.time()
pairs = P.load_pair_sources(None, '../shared/data')
wiki = D.load_texts(D.WIKIPEDIA_FILE, '../shared/data', max_texts=4000)
up = P.unsupervised_pairs(wiki, 'dropout', 20000, seed=42)
texts = []
for e in pairs + up:
    texts += [e.anchor, e.positive] + ([e.negative] if e.negative else [])
texts = list(dict.fromkeys(texts))
print(len(texts), 'texts', time.time()-t)
tok = train_tokenizer(texts, 'wordpiece', vocab, model_max_length=128)
tok.save_pretrained(out)
print('done', len(tok), time.time()-t)
