"""Evaluation: STS-B loading and fast in-training correlations (:mod:`.stsb`), MTEB runner (:mod:`.mteb_runner`).

``mteb_runner`` imports MTEB (heavy) and is loaded only when used.
"""

from .stsb import load_stsb, stsb_correlations

__all__ = ["load_stsb", "stsb_correlations"]
