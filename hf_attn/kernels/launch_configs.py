"""Launch configurations of the Triton kernels as data: pure functions of (compute capability, dtype, size, bias,
pass) with no device query inside, so every configuration the project can choose is known on any machine and is
compiled ahead of time for real targets in the tests (``hf_attn.kernels.aot``; ``tests/test_kernels_aot.py``).

``flash_config(cc, dtype, head_dim, has_bias, pass_)`` and ``chebyshev_config(cc, dtype, hidden, degree, pass_)``
return a config, or None where no configuration fits the architecture (the dispatchers then take the PyTorch
path, so a kernel that could not launch is never launched). ``cc`` is the compute capability as an int
(75, 80, 86, 89, 90, ...) or a (major, minor) tuple.

The tables were chosen by compiling candidates with Triton's own compiler and ptxas for sm_75, sm_80, sm_86 and
sm_90 (``python -m hf_attn.kernels.aot --sweep``): the largest tiles whose shared memory fits the architecture
with headroom and whose registers spill little (fp16 / bf16 from sm_80: at most a few hundred bytes per thread,
which tests/test_kernels_aot.py holds to a budget; exact-fp32 FMA tiles spill more, see docs/RESULTS.md).
Architectures not listed use the table of the nearest listed one with no more shared memory (sm_87 -> sm_80,
sm_89 / sm_120 -> sm_86, sm_100 -> sm_90).

Routing (``flash_route``): below sm_80 Triton compiles ``tl.dot`` to FMA (no tensor cores), so exact attention
goes to PyTorch (SDPA / the blockwise path) there; the kernels still have configs for sm_75, for direct calls.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "FLASH_PASSES",
    "CHEBYSHEV_PASSES",
    "SHARED_MEMORY_BYTES",
    "FlashConfig",
    "ChebyshevConfig",
    "flash_config",
    "chebyshev_config",
    "flash_route",
    "shared_memory_limit",
    "block_d",
]

# Opt-in shared memory per block (bytes): what the launcher compares CompiledKernel.metadata.shared with.
SHARED_MEMORY_BYTES = {75: 65_536, 80: 166_912, 86: 101_376, 87: 166_912, 89: 101_376, 90: 232_448,
                       100: 232_448, 120: 101_376}

FLASH_PASSES = ("fwd", "bwd_dkdv", "bwd_dq")
CHEBYSHEV_PASSES = ("fwd", "bwd_du", "bwd_dw")
DTYPES = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class FlashConfig:
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


@dataclass(frozen=True)
class ChebyshevConfig:
    block_n: int
    block_h: int
    k_tile: int
    sub: int
    num_warps: int
    num_stages: int


def _cc(cc) -> int:
    if isinstance(cc, tuple):
        return 10 * int(cc[0]) + int(cc[1])
    return int(cc)


def _family(cc) -> int | None:
    """The listed architecture whose table applies (None below sm_75: no configuration)."""
    cc = _cc(cc)
    if cc < 75:
        return None
    if cc < 80:
        return 75
    if cc in (86, 89) or cc >= 120:
        return 86
    if cc < 90:
        return 80
    return 90


def shared_memory_limit(cc) -> int | None:
    """Shared memory per block of the architecture, or None if not listed."""
    return SHARED_MEMORY_BYTES.get(_cc(cc))


def _dtype_name(dtype) -> str:
    name = str(dtype).replace("torch.", "")
    name = {"float32": "fp32", "float": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}.get(name, name)
    if name not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; expected one of {DTYPES}")
    return name


def block_d(head_dim: int) -> int:
    """The head-dim tile of the flash kernels: next power of two, at least 16."""
    return max(16, 1 << (int(head_dim) - 1).bit_length())


def flash_route(cc) -> str:
    """Where exact attention (hf_blockwise) runs on a CUDA device of capability `cc`: "triton" from sm_80
    (tensor-core tl.dot), "pytorch" below (Triton's tl.dot is plain FMA there; SDPA / blockwise is faster)."""
    return "triton" if _cc(cc) >= 80 else "pytorch"


# Flash kernel launches, one row per architecture family (the listed sm), operand width and head-dim tile BLOCK_D:
# BLOCK_M x BLOCK_N / warps / stages of the forward, dK/dV and dQ kernels; "-" = no configuration fits (the dispatcher
# takes the PyTorch path). Operands are 16-bit (fp16, bf16) or 32-bit (fp32, and bf16 below sm_80). Shared memory
# grows with the tiles held per program: the forward keeps a [BLOCK_M, D] query tile and `stages` [BLOCK_N, D] key and
# value tiles; dK/dV keeps [BLOCK_N, D] key/value tiles and `stages` [BLOCK_M, D] query / dO tiles; dQ the reverse;
# 32-bit operands double everything. Per-block shared memory: sm_90 232,448 B, sm_80 166,912 B, sm_86 / sm_89
# 101,376 B, sm_75 65,536 B. sm_75 has no cp.async, so one stage there (hf_blockwise routes sm_75 to PyTorch; its
# rows serve direct calls; 64x64 16-bit tiles spilled 1.7-3.7 KB there). Chosen with the ahead-of-time compile
# (docs/RESULTS.md has the numbers).
_FLASH_TABLE = """
sm  bits  BLOCK_D  fwd         dK/dV       dQ
90  16    16       128x64/4/3  64x64/8/2   64x64/8/2
90  16    32       128x64/4/3  64x64/8/2   64x64/8/2
90  16    64       128x64/4/3  64x64/8/2   64x64/8/2
90  16    128      128x64/8/3  64x64/8/2   64x64/8/2
90  16    256      64x64/8/2   32x64/8/2   64x32/8/2
90  32    16       64x64/4/2   64x64/8/2   64x64/8/2
90  32    32       64x64/4/2   64x64/8/2   64x64/8/2
90  32    64       64x64/4/2   64x64/8/2   64x64/8/2
90  32    128      64x64/4/2   32x32/4/2   32x32/4/2
90  32    256      32x32/4/2   32x32/4/1   32x32/4/1
80  16    16       128x64/4/3  64x64/8/2   64x64/8/2
80  16    32       128x64/4/3  64x64/8/2   64x64/8/2
80  16    64       128x64/4/3  64x64/8/2   64x64/8/2
80  16    128      128x64/8/3  64x64/8/2   64x64/8/2
80  16    256      64x32/4/2   32x64/8/2   64x32/8/2
80  32    16       64x64/4/2   64x64/8/2   64x64/8/2
80  32    32       64x64/4/2   64x64/8/2   64x64/8/2
80  32    64       64x64/4/2   64x64/8/2   64x64/8/2
80  32    128      64x32/4/2   32x32/4/2   32x32/4/2
80  32    256      32x32/4/1   32x32/4/1   32x32/4/1
86  16    16       128x64/4/2  64x64/8/2   64x64/8/2
86  16    32       128x64/4/2  64x64/8/2   64x64/8/2
86  16    64       128x64/4/2  64x64/8/2   64x64/8/2
86  16    128      64x64/4/2   32x32/4/2   32x32/4/2
86  16    256      32x32/4/2   32x32/4/1   32x32/4/1
86  32    16       64x32/4/2   32x32/4/2   32x32/4/2
86  32    32       64x32/4/2   32x32/4/2   32x32/4/2
86  32    64       64x32/4/2   32x32/4/2   32x32/4/2
86  32    128      32x32/4/2   32x32/4/1   32x32/4/1
86  32    256      16x32/4/1   16x16/4/1   16x16/4/1
75  16    16       32x32/4/1   32x32/4/1   32x32/4/1
75  16    32       32x32/4/1   32x32/4/1   32x32/4/1
75  16    64       32x32/4/1   32x32/4/1   32x32/4/1
75  16    128      64x64/4/1   32x32/4/1   32x32/4/1
75  16    256      32x32/4/1   16x16/4/1   16x16/4/1
75  32    16       32x32/4/1   32x32/4/1   32x32/4/1
75  32    32       32x32/4/1   32x32/4/1   32x32/4/1
75  32    64       32x32/4/1   32x32/4/1   32x32/4/1
75  32    128      32x32/4/1   16x16/4/1   16x16/4/1
75  32    256      16x16/4/1   -           -
"""


def _parse_flash_table(text: str) -> dict[tuple[int, bool, int], dict[str, FlashConfig | None]]:
    """(family, 32-bit operands?, BLOCK_D) -> {pass: FlashConfig or None}, from ``_FLASH_TABLE``."""
    table = {}
    for row in text.strip().splitlines()[1:]:
        sm, bits, dims, *cells = row.split()
        configs = {p: None if cell == "-" else FlashConfig(*map(int, cell.replace("x", "/").split("/")))
                   for p, cell in zip(FLASH_PASSES, cells, strict=True)}
        table[(int(sm), bits == "32", int(dims))] = configs
    return table


_FLASH = _parse_flash_table(_FLASH_TABLE)


def flash_config(cc, dtype, head_dim: int, has_bias: bool, pass_: str) -> FlashConfig | None:
    """Block sizes, warps and stages of one flash-attention kernel (pass_ in FLASH_PASSES) at head_dim on a GPU of
    capability `cc`, or None when no configuration fits. bf16 below sm_80 runs as fp32 (no bf16 tensor cores)."""
    if pass_ not in FLASH_PASSES:
        raise ValueError(f"pass_ must be one of {FLASH_PASSES}, got {pass_!r}")
    family = _family(cc)
    name = _dtype_name(dtype)
    if family is None or head_dim > 256:
        return None
    wide = name == "fp32" or (name == "bf16" and _cc(cc) < 80)
    entry = _FLASH.get((family, wide, block_d(head_dim)))
    if entry is None:
        return None
    return entry[pass_]


_CHEB: dict[tuple[int, bool], dict[str, ChebyshevConfig]] = {}


def chebyshev_config(cc, dtype, hidden: int, degree: int, pass_: str) -> ChebyshevConfig | None:
    """Tiles, warps and stages of one Chebyshev kernel (pass_ in CHEBYSHEV_PASSES), or None when none fits."""
    if pass_ not in CHEBYSHEV_PASSES:
        raise ValueError(f"pass_ must be one of {CHEBYSHEV_PASSES}, got {pass_!r}")
    family = _family(cc)
    name = _dtype_name(dtype)
    if family is None:
        return None
    wide = name == "fp32" or (name == "bf16" and _cc(cc) < 80)
    entry = _CHEB.get((family, wide))
    if entry is None:
        return None
    cfg = entry[pass_]
    k_tile = max(16, min(cfg.k_tile, 1 << (int(degree) - 1).bit_length()))
    block_h = max(16, min(cfg.block_h, 1 << (int(hidden) - 1).bit_length()))
    return ChebyshevConfig(cfg.block_n, block_h, k_tile, 16 if k_tile >= 64 else 4, cfg.num_warps, cfg.num_stages)


# (BLOCK_N, BLOCK_H, K_TILE, SUB, warps, stages) per family and operand width; K_TILE / BLOCK_H shrink to the
# problem (``chebyshev_config``). sm_75: 64-wide hidden tiles (TAN's hidden 256 x degree 256 needed 98,304 B with
# the former 128-wide tiles; these need 32,768 B).
_C = ChebyshevConfig
for _fam in (80, 86, 90):
    _CHEB[(_fam, False)] = {p: _C(64, 128, 64, 16, 8, 2) for p in CHEBYSHEV_PASSES}
    _CHEB[(_fam, True)] = {p: _C(64, 64, 64, 16, 8, 2) for p in CHEBYSHEV_PASSES}
_CHEB[(75, False)] = {p: _C(64, 64, 64, 16, 4, 2) for p in CHEBYSHEV_PASSES}
_CHEB[(75, True)] = {p: _C(64, 64, 64, 16, 4, 2) for p in CHEBYSHEV_PASSES}
