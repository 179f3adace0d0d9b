"""Optimizers and the learning-rate schedule shared by the recipes.

``--optimizer adamw``: AdamW, weight decay on 2-D weights only (not on norms, biases, embeddings, temperature).
``--optimizer muon`` (an option of the GQAEmbedder's T4 recipe): ``torch.optim.Muon`` for the 2-D weights of the
hidden layers, AdamW for everything else (embeddings, norms, biases, output heads / projections, loss parameters).
Muon orthogonalises the update of a matrix, which makes sense only for hidden weight matrices; embeddings and heads
are lookup / read-out maps and stay on AdamW (Keller Jordan's recipe).

Both optimizers live in one ``MuonAdamW`` object so that Accelerate sees a single optimizer: one GradScaler
``unscale_``/``step``/``update`` per step in fp16 (two prepared optimizers would each call ``scaler.update``),
one LR scheduler, one entry in ``save_state``.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

# Parameter names (or their module) that are never "hidden weight matrices".
_NOT_HIDDEN = re.compile(
    r"(^|\.)(embed|embeddings|wte|wpe|lm_head|head|pooler|projection|output_projection|chebyshev|"
    r"cheb|classifier|log_temperature|distill)",
    re.IGNORECASE,
)


# AdaptiveSpanGPT's triangle-wave scalars: a period and an offset per head, each through a sigmoid.
_DISTANCE_MASK = re.compile(r"(^|\.)(period_logit|offset_logit)$")
# Their learning rate relative to the base rate. Adam moves a parameter by at most ~lr per step, so at a matrix
# weight's lr (1e-4..2e-3) a logit whose useful range is O(1) can move only ~lr x steps in a run (700 steps at
# 2e-3, cosine: < 0.7, a period of the triangle wave by < 1 token): the scalars stay near their init. A larger
# scale lets them move, but in studies/periodic_mask/period_lr.py (120 steps, docs/RESULTS.md) 20x moved the periods
# up to 1 token without converging anywhere and raised the loss from one start (2.32 -> 3.04), so the default keeps
# the base rate; pass mask_lr_scale to build_optimizer to try more.
MASK_LR_SCALE = 1.0


def is_hidden_matrix(name: str, param: torch.Tensor, module: nn.Module | None = None) -> bool:
    """True for a 2-D weight of a hidden layer (Muon's domain)."""
    if param.ndim != 2 or isinstance(module, nn.Embedding):
        return False
    return _NOT_HIDDEN.search(name) is None


def _owner_modules(model: nn.Module) -> dict[str, nn.Module]:
    owners = {}
    for mod_name, mod in model.named_modules():
        for p_name, _ in mod.named_parameters(recurse=False):
            owners[f"{mod_name}.{p_name}" if mod_name else p_name] = mod
    return owners


def param_groups(model: nn.Module, weight_decay: float, muon: bool = False) -> dict[str, list]:
    """Split trainable parameters: {"muon": [...], "decay": [...], "no_decay": [...]} (lists of (name, param))."""
    owners = _owner_modules(model)
    groups = {"muon": [], "decay": [], "no_decay": []}
    seen = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        module = owners.get(name)
        if muon and is_hidden_matrix(name, p, module):
            groups["muon"].append((name, p))
        elif p.ndim >= 2 and not isinstance(module, nn.Embedding) and "log_temperature" not in name:
            groups["decay"].append((name, p))
        else:
            groups["no_decay"].append((name, p))
    return groups


class MuonAdamW(torch.optim.Optimizer):
    """torch.optim.Muon on ``muon_params`` + AdamW on ``adamw_groups``, presented as one optimizer.

    ``param_groups`` are the children's own group dicts, so an LR scheduler or GradScaler acting on this object
    acts on both.
    """

    def __init__(self, muon_params, adamw_groups, muon_kwargs: dict | None = None, adamw_kwargs: dict | None = None):
        muon_params = list(muon_params)
        self.muon = torch.optim.Muon(muon_params, **(muon_kwargs or {})) if muon_params else None
        self.adamw = torch.optim.AdamW(adamw_groups, **(adamw_kwargs or {}))
        groups = (self.muon.param_groups if self.muon else []) + self.adamw.param_groups
        super().__init__(groups, {})
        self._relink()

    def _children(self):
        return [o for o in (self.muon, self.adamw) if o is not None]

    def _relink(self):
        self.param_groups = [g for o in self._children() for g in o.param_groups]

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for o in self._children():
            o.step()
        return loss

    def zero_grad(self, set_to_none: bool = True):
        for o in self._children():
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return {"muon": self.muon.state_dict() if self.muon else None, "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict):
        if self.muon is not None:
            self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        self._relink()

    @property
    def state(self):
        merged = {}
        for o in self._children():
            merged.update(o.state)
        return merged

    @state.setter
    def state(self, value):  # Optimizer.__init__ assigns an empty state; the children own the real one.
        pass


def build_optimizer(
    modules: list[nn.Module],
    name: str = "adamw",
    lr: float = 2e-4,
    weight_decay: float = 0.01,
    muon_lr: float = 0.02,
    muon_momentum: float = 0.95,
    betas: tuple[float, float] = (0.9, 0.999),
    mask_lr_scale: float = MASK_LR_SCALE,
) -> torch.optim.Optimizer:
    """AdamW or MuonAdamW over the parameters of ``modules`` (the model and the loss); the triangle-wave
    scalars (period / offset logits) get ``lr * mask_lr_scale`` and no weight decay."""
    container = nn.ModuleList(modules)
    groups = param_groups(container, weight_decay, muon=(name == "muon"))
    adamw_groups = [
        {"params": [p for _, p in groups["decay"]], "weight_decay": weight_decay},
        {"params": [p for n, p in groups["no_decay"] if not _DISTANCE_MASK.search(n)], "weight_decay": 0.0},
        {
            "params": [p for n, p in groups["no_decay"] if _DISTANCE_MASK.search(n)],
            "weight_decay": 0.0,
            "lr": lr * mask_lr_scale,
        },
    ]
    adamw_groups = [g for g in adamw_groups if g["params"]]
    if name == "adamw":
        return torch.optim.AdamW(adamw_groups, lr=lr, betas=betas, fused=_fused_ok(adamw_groups))
    if name == "muon":
        return MuonAdamW(
            [p for _, p in groups["muon"]],
            adamw_groups,
            muon_kwargs={"lr": muon_lr, "momentum": muon_momentum, "weight_decay": weight_decay},
            adamw_kwargs={"lr": lr, "betas": betas, "fused": _fused_ok(adamw_groups)},
        )
    raise ValueError(f"unknown optimizer {name!r}; expected 'adamw' or 'muon'")


def _fused_ok(groups) -> bool:
    """Fused AdamW (one kernel for all parameters; CPU and CUDA) when every parameter is a floating tensor on one
    of those devices; the fp16 GradScaler handles fused optimizers too."""
    params = [p for g in groups for p in g["params"]]
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def warmup_decay_lambda(warmup_steps: int, total_steps: int, schedule: str = "linear"):
    """LR multiplier: linear 0 -> 1 over ``warmup_steps``, then linear (or cosine) decay to 0.

    Kept instead of transformers' ``get_linear/cosine_schedule_with_warmup``: theirs gives step 0 a learning rate of
    0 (``step / warmup``), so the first optimizer step trains nothing; ours warms up one step earlier (``(step + 1)
    / warmup``) and decays exactly as theirs, and switching would change the runs being measured."""

    def fn(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return fn


def build_scheduler(optimizer, warmup_steps: int, total_steps: int, schedule: str = "linear"):
    """``LambdaLR`` of ``warmup_decay_lambda``: linear warmup, then linear or cosine decay to 0 at ``total_steps``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_decay_lambda(warmup_steps, total_steps, schedule))
