"""Which (query, key) pairs attention may use: the one rule behind every backend, kernel and test reference.

Queries are the last Tq of the Tk key positions (query i sits at key position Tk - Tq + i, bottom-right causal
alignment as in KV-cache decoding) and a pair's distance is d = q_pos - k_pos. Every position-dependent exclusion
bounds d to one interval

    -fwd <= d <= back

- causality excludes the future: fwd = 0;
- a sliding window keeps 0 <= d < window (causal) or |d| < window (bidirectional): back, fwd <= window - 1;
- `max_distance` and a distance-bias table of length L exclude d < 0 and d >= max_distance / L (a table has no
  entry for them): fwd = 0, back <= max_distance - 1, L - 1;

and key padding ([B, Tk] bool, True = real token) excludes keys whatever their distance. `Band` holds the interval
(None = unbounded on that side); `band` builds it, `Band.allows` evaluates it on distances, `Band.key_range` gives
the keys a run of queries can see, `Band.limits` the integer form the Triton kernels take, and `pair_mask` the
dense boolean mask the references use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Band:
    """Allowed distances -fwd <= d <= back; None = no bound on that side."""

    back: int | None
    fwd: int | None

    @property
    def bounded(self) -> bool:
        """True when both sides are bounded: every query sees at most back + fwd + 1 keys."""
        return self.back is not None and self.fwd is not None

    @property
    def empty(self) -> bool:
        """True when no distance is allowed (e.g. max_distance=0)."""
        return self.bounded and self.back < -self.fwd

    def allows(self, d: torch.Tensor) -> torch.Tensor:
        """Bool tensor: which distances the band keeps."""
        allowed = torch.ones_like(d, dtype=torch.bool)
        if self.back is not None:
            allowed &= d <= self.back
        if self.fwd is not None:
            allowed &= d >= -self.fwd
        return allowed

    def covers(self, d_min: int, d_max: int) -> bool:
        """True when every distance in [d_min, d_max] is allowed (a tile needs no element-wise mask)."""
        return (self.back is None or d_max <= self.back) and (self.fwd is None or d_min >= -self.fwd)

    def key_range(self, q_first: int, q_end: int, k_len: int) -> tuple[int, int]:
        """Key positions [lo, hi) that at least one query at key positions [q_first, q_end) may see."""
        lo = 0 if self.back is None else max(0, q_first - self.back)
        hi = k_len if self.fwd is None else min(k_len, q_end + self.fwd)
        return (lo, lo) if self.empty else (lo, max(lo, hi))

    def limits(self, q_len: int, k_len: int) -> tuple[int, int]:
        """(back, fwd) as integers, an unbounded side as q_len + k_len + 1 (no pair is that far apart)."""
        unbounded = q_len + k_len + 1
        return (unbounded if self.back is None else self.back), (unbounded if self.fwd is None else self.fwd)


def band(is_causal: bool, window: int | None = None, max_distance: int | None = None,
         table_len: int | None = None) -> Band:
    """The band of allowed distances for these settings (see the module docstring)."""
    back = fwd = None
    if is_causal or max_distance is not None or table_len is not None:
        fwd = 0
    for bound in (window, max_distance, table_len):
        if bound is not None:
            back = bound - 1 if back is None else min(back, bound - 1)
    if window is not None:
        fwd = window - 1 if fwd is None else min(fwd, window - 1)
    return Band(back, fwd)


def distances(q_len: int, k_len: int, device=None, rows: tuple[int, int] | None = None) -> torch.Tensor:
    """[Tq, Tk] long: d = q_pos - k_pos with queries the last `q_len` key positions (only query rows
    [start, stop) when `rows` is given: [stop - start, Tk])."""
    start, stop = rows if rows is not None else (0, q_len)
    q_pos = torch.arange(k_len - q_len + start, k_len - q_len + stop, device=device)
    return q_pos[:, None] - torch.arange(k_len, device=device)[None, :]


def pair_mask(q_len: int, k_len: int, rule: Band, key_padding_mask: torch.Tensor | None = None,
              device=None) -> torch.Tensor:
    """Dense bool mask [B|1, 1, Tq, Tk] of the pairs the band and the key padding allow (True = attend)."""
    mask = rule.allows(distances(q_len, k_len, device))[None, None]
    if key_padding_mask is not None:
        mask = mask & key_padding_mask[:, -k_len:].to(device=mask.device, dtype=torch.bool)[:, None, None, :]
    return mask
