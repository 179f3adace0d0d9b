#!/usr/bin/env python
"""Byte-level AdaptiveSpanGPT language model: adaptive attention span (Sukhbaatar et al. 2019) + triangle-wave masks.

    accelerate launch recipes/train_lm.py --data enwik8 --use_adaptive_attention --use_triangle_wave_masking --compile
    python recipes/train_lm.py --quick --data-dir ../shared/data --use_adaptive_attention --output-dir outputs/lm
    python recipes/train_lm.py --config recipes/configs/train_lm_enwik8.yaml --data /path/to/enwik8

Logs loss, bits per character, perplexity, tokens/s, peak memory, per-head spans/periods, the span regulariser,
attention FLOPs vs dense and attention entropy. Options: ``--help``
(fields of ``hf_attn.training.lm.args.LMTrainingArguments``).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hf_attn.training.lm import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
