"""Language-model metrics, for ``train_lm`` and ``compare_attention``: loss (nats/byte), bits per byte (= bpc for
ASCII text), perplexity, peak memory of a step, attention entropy, and the per-head spans and periods of
AdaptiveSpanGPT with its span regulariser."""

from __future__ import annotations

import math
import weakref

import torch

from ...attention import reference_for
from .data import ByteBatches


def lm_metrics(loss_nats: float) -> dict[str, float]:
    """loss (nats/byte) -> {"loss", "bpc", "perplexity"}."""
    return {"loss": loss_nats, "bpc": loss_nats / math.log(2), "perplexity": math.exp(min(loss_nats, 50.0))}


def next_byte_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats) of predicting ids[:, 1:] from logits[:, :-1]."""
    return torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                             ids[:, 1:].reshape(-1))


@torch.no_grad()
def evaluate_lm(model, batches: ByteBatches, device, max_batches: int | None = 20) -> dict[str, float]:
    """``lm_metrics`` of next-byte prediction over the first ``max_batches`` windows of ``batches``, in order."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for ids in batches.sequential(max_batches):
        ids = ids.to(device)
        logits = model(input_ids=ids, use_cache=False).logits
        n = ids[:, 1:].numel()
        total += next_byte_loss(logits, ids).item() * n
        count += n
    model.train(was)
    return lm_metrics(total / max(count, 1))


class PeakMemory:
    """Peak bytes of live tensors while the context is active.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: a dispatch mode adds each new output storage and subtracts it
    when its tensor is freed, so it measures live tensor bytes (parameters and inputs allocated before entering
    are not counted; the CPU caching allocator is not either).
    """

    def __init__(self, device):
        self.device = torch.device(device)
        self.peak = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        tracker = self

        class _Mode(TorchDispatchMode):
            def __init__(self):
                super().__init__()
                self.live = 0
                self.seen: set[int] = set()

            def _free(self, key, nbytes):
                if key in self.seen:
                    self.seen.discard(key)
                    self.live -= nbytes

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor) and t.device.type == "cpu" and not t.is_sparse:
                        try:
                            st = t.untyped_storage()
                        except Exception:  # noqa: BLE001 - tensors without storage (meta, functional)
                            continue
                        key = st.data_ptr()
                        if key and key not in self.seen:
                            self.seen.add(key)
                            nbytes = st.nbytes()
                            self.live += nbytes
                            weakref.finalize(t, self._free, key, nbytes)
                tracker.peak = max(tracker.peak, self.live)
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._mode.__exit__(*exc)
        return False

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20


@torch.no_grad()
def attention_entropy(model, ids: torch.Tensor) -> float:
    """Mean entropy (nats) of the attention distributions of ``model`` on ``ids``, over layers, heads, queries.

    The model runs once with a probe backend: the reference form of its own backend (same function, returns the
    weights), registered under a temporary name with the same mask function.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    impl = model.config._attn_implementation or "eager"
    probe = f"hf_attn_entropy_probe_{impl}"
    sums = {"h": 0.0, "n": 0}
    ref = reference_for(impl)  # the backend table's reference; ValueError for a backend it does not know

    def fn(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        out, w = ref(module, query, key, value, attention_mask, scaling, 0.0, **kwargs)
        w = w.float().clamp_min(0)
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
        h = -(w * torch.log(w.clamp_min(1e-12))).sum(-1)  # [B, H, Tq]
        sums["h"] += h.sum().item()
        sums["n"] += h.numel()
        return out, None

    AttentionInterface.register(probe, fn)
    mask_fn = ALL_MASK_ATTENTION_FUNCTIONS.get(impl) if impl in ALL_MASK_ATTENTION_FUNCTIONS else \
        ALL_MASK_ATTENTION_FUNCTIONS["eager"]
    AttentionMaskInterface.register(probe, mask_fn)
    configs = [m.config for m in model.modules() if hasattr(m, "config")]
    old = [(c, c._attn_implementation) for c in {id(c): c for c in configs}.values()]
    was = model.training
    model.eval()
    try:
        for c, _ in old:
            c._attn_implementation = probe
        model(input_ids=ids, use_cache=False)
    finally:
        for c, v in old:
            c._attn_implementation = v
        model.train(was)
    return sums["h"] / max(sums["n"], 1)


def span_summary(model) -> dict:
    """Spans, periods, regulariser, FLOP ratio (None where the model has no such feature)."""
    rep = model.attention_span_report() if hasattr(model, "attention_span_report") else {}
    out = {}
    for k in ("span", "period"):
        v = rep.get(k)
        out[f"{k}s"] = None if v is None else [[round(float(x), 2) for x in row] for row in v]
        out[f"mean_{k}"] = None if v is None else float(v.float().mean())
    reg = model.span_regularizer() if hasattr(model, "span_regularizer") else None
    out["span_regularizer"] = None if reg is None else float(reg.detach())
    return out


__all__ = ["PeakMemory", "attention_entropy", "evaluate_lm", "lm_metrics", "next_byte_loss", "span_summary"]
