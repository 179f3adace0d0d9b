#!/usr/bin/env python
"""Train a TAN (Chebyshev-expansion encoder) or GQAEmbedder (GQA + RoPE/YaRN) sentence encoder with InfoNCE.

    accelerate launch recipes/train_embed.py --model gqa_embedder --data-dir ../shared/data
    python recipes/train_embed.py --quick --data-dir ../shared/data --output-dir outputs/quick
    python recipes/train_embed.py --config recipes/configs/train_embed_t4.yaml --data-dir ../shared/data
    python recipes/train_embed.py --model tan --num_hidden_layers_list 2 4 --hidden_size_list 128 256 --quick ...

All options: ``--help`` (they are the fields of ``hf_attn.training.embed.args.EmbedTrainingArguments``).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from hf_attn.training.embed import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
