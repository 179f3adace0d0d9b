"""Triton kernels, each beside a PyTorch path and wrapped in a ``torch.autograd.Function``.

- ``chebyshev_project``: Chebyshev expansion fused with the following projection (TAN's input layer);
  reference: ``hf_attn.modeling.modeling_tan.chebyshev_project_reference``.
- ``flash_attention``: flash attention forward + backward with padding, GQA, sliding window and a distance
  bias table (ALiBi, adaptive-span and triangle-wave log-masks), skipping fully-masked key blocks; the
  ``hf_blockwise`` backend (``hf_attn.attention.blockwise_backend``) dispatches to it on CUDA; reference:
  ``eager_attention_forward``.

Both dispatch to Triton on CUDA tensors; ``HF_ATTN_FORCE_TRITON=1`` (with ``TRITON_INTERPRET=1`` set before
this package is imported) runs the kernels on CPU tensors, as the tests do. Without triton only the PyTorch
paths exist.
"""

from .chebyshev import chebyshev_project, chebyshev_project_triton
from .flash_attention import HAS_TRITON, flash_attention

__all__ = ["HAS_TRITON", "chebyshev_project", "chebyshev_project_triton", "flash_attention"]
