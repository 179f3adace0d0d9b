#!/usr/bin/env python
"""The attention comparison: the same small byte-level LM per (attention variant x positional encoding).

    python recipes/compare_attention.py --quick                      # whole matrix, < 10 min on a 2-core CPU
    accelerate launch recipes/compare_attention.py --data-dir ../shared/data --output-dir outputs/compare
    python recipes/compare_attention.py --variants eager sdpa hf_linear --positions rope alibi --max-steps 500

Writes results.csv, results.md, loss_curves.png, scaling.csv, scaling.png. Options: ``--help``
(fields of ``hf_attn.training.lm.compare.CompareArguments``).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hf_attn.training.lm.compare import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
