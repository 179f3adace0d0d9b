"""Launch configurations and ahead-of-time compilation of the Triton kernels for real GPUs, without a GPU.

The launch-config functions are pure (no device query), so the first tests check them on any machine, even
without triton. The AOT tests compile kernels at the configurations those functions return with Triton's own
compiler and ptxas for real targets (``hf_attn.kernels.aot``) and check what the CPU interpreter never does: each
compiles, fits the architecture's shared memory, and spills (cuobjdump's LOCAL + STACK bytes per thread) stay
within a small budget. This session runs the kernels under TRITON_INTERPRET=1 (tests/conftest.py), which makes a
compile in this process impossible, so the cases compile in a fresh Python without that variable
(``aot.compile_in_subprocess``). A small set covering sm_80 / sm_90, fp16 / bf16, D=64 / 128 and every pass runs
in `make test`; every configuration over architectures x dtypes x head dims x bias/mask x passes is marked slow
(`make test-all`, or ``python -m hf_attn.kernels.aot`` for the table in docs/RESULTS.md). They skip where triton
or ptxas is absent.
"""

from __future__ import annotations

import os

import pytest

from hf_attn.kernels import aot
from hf_attn.kernels import launch_configs as lc

PRODUCTION_ARCHS = (80, 86, 90)


# ------------------------------------------------------------------------------------------------------------
# Launch configurations (pure; no triton needed)
# ------------------------------------------------------------------------------------------------------------


def test_flash_configs_cover_what_the_wrappers_accept():
    """Every dtype and head dim up to 256 has a forward and backward configuration on sm_80 / sm_86 / sm_90
    (a None would send hf_blockwise to the blockwise path); sm_75 has forward configurations for direct calls."""
    for cc in PRODUCTION_ARCHS:
        for dtype in lc.DTYPES:
            for d in (16, 32, 64, 80, 96, 128, 256):
                for pass_ in lc.FLASH_PASSES:
                    cfg = lc.flash_config(cc, dtype, d, True, pass_)
                    assert cfg is not None, (cc, dtype, d, pass_)
                    assert cfg.block_m >= 16 and cfg.block_n >= 16 and cfg.num_warps in (1, 2, 4, 8)
    for dtype in lc.DTYPES:
        for d in (32, 64, 128, 256):
            assert lc.flash_config(75, dtype, d, False, "fwd") is not None


def test_launch_configs_are_pure_functions_of_the_architecture():
    assert lc.flash_config((9, 0), "fp16", 64, True, "fwd") == lc.flash_config(90, "float16", 64, True, "fwd")
    assert lc.flash_config(89, "bf16", 128, False, "bwd_dq") == lc.flash_config(86, "bf16", 128, False, "bwd_dq")
    assert lc.flash_config(100, "fp16", 64, False, "fwd") == lc.flash_config(90, "fp16", 64, False, "fwd")
    assert lc.flash_config(70, "fp16", 64, False, "fwd") is None  # below sm_75: no configuration
    assert lc.flash_config(90, "fp16", 512, False, "fwd") is None
    # bf16 below sm_80 runs in fp32 (no bf16 tensor cores), so it gets the fp32 tiles.
    assert lc.flash_config(75, "bf16", 64, True, "bwd_dkdv") == lc.flash_config(75, "fp32", 64, True, "bwd_dkdv")
    assert lc.flash_route(75) == "pytorch" and lc.flash_route((8, 0)) == "triton" and lc.flash_route(90) == "triton"
    assert lc.shared_memory_limit(75) == 65_536 and lc.shared_memory_limit((9, 0)) == 232_448
    with pytest.raises(ValueError):
        lc.flash_config(90, "fp16", 64, False, "backward")


def test_chebyshev_configs_at_tan_sizes():
    """TAN's defaults (hidden 256, degree 32; degree up to 256) have fused configurations on every listed
    architecture, the T4 included; tiles shrink to small problems."""
    for cc in (75, 80, 86, 90):
        for dtype in lc.DTYPES:
            for hidden, degree in ((256, 32), (256, 256), (64, 8)):
                for pass_ in lc.CHEBYSHEV_PASSES:
                    cfg = lc.chebyshev_config(cc, dtype, hidden, degree, pass_)
                    assert cfg is not None, (cc, dtype, hidden, degree, pass_)
                    assert cfg.k_tile <= max(16, 1 << (degree - 1).bit_length())
                    assert cfg.k_tile % cfg.sub == 0
    assert lc.chebyshev_config(70, "fp32", 256, 32, "fwd") is None


# ------------------------------------------------------------------------------------------------------------
# Ahead-of-time compilation for real targets
# ------------------------------------------------------------------------------------------------------------

_WHY_NOT = aot.available()
needs_aot = pytest.mark.skipif(_WHY_NOT is not None, reason=f"no AOT compilation here: {_WHY_NOT}")

# Spill budget (bytes of local memory per thread) of the fp16 / bf16 kernels on sm_80+, the configurations
# hf_blockwise launches: the shipped tables spill 0-368 B there (docs/RESULTS.md; the dQ kernel, which carries the
# table-gradient window, the most), while a tile too large for the register file spills kilobytes (sm_75's former
# 64x64 tiles: 1.7-3.7 KB; fp32 FMA tiles: up to 10.8 KB). fp32 and sm_75 launches are checked for shared memory only.
SPILL_BUDGET = 512


def _label(res) -> str:
    return f"{res.kernel} sm_{res.cc} {res.dtype} {res.size} {res.config}"


def _problems(res) -> list[str]:
    """What is wrong with one compiled launch (nothing: it compiles, fits shared memory, spills within budget)."""
    if res.error is not None:
        return [f"{_label(res)}: {res.error}"]
    problems = []
    if not 0 < res.shared <= res.limit:
        problems.append(f"{_label(res)}: needs {res.shared} B of shared memory, the architecture has {res.limit} B")
    if res.registers is not None:  # None: cuobjdump absent, shared memory is all that can be checked
        if not 0 < res.registers <= 255:
            problems.append(f"{_label(res)}: {res.registers} registers per thread")
        if res.kernel.startswith("flash") and res.dtype in ("fp16", "bf16") and res.cc >= 80 and (
                res.local > SPILL_BUDGET):
            problems.append(f"{_label(res)}: spills {res.local} B per thread (budget {SPILL_BUDGET} B)")
    return problems


def _compile_and_check(cases, jobs: int):
    """Compile `cases` in subprocesses and assert every one is fine (one failure message listing all)."""
    results = aot.compile_in_subprocess(cases, jobs=max(1, min(jobs, os.cpu_count() or 1)))
    problems = [p for res in results for p in _problems(res)]
    assert not problems, "\n".join(problems)
    return results


# Each pair of (architecture, dtype, head dim) values once, every pass at least once, all with a distance table and
# key padding (the largest variant); and TAN's first layer on a T4 (Chebyshev, hidden 256, degree 256).
FAST_CASES = [
    ("flash", (90, "fp16", 64, True, True, "fwd")),  # the production kernel on H100/H200
    ("flash", (90, "bf16", 128, True, True, "bwd_dkdv")),
    ("flash", (80, "bf16", 64, True, True, "bwd_dq")),
    ("flash", (80, "fp16", 128, True, True, "fwd")),
    ("chebyshev", (75, "fp32", 256, 256, "fwd")),
]


@needs_aot
def test_aot_representative_launches_compile_and_fit():
    """The launch configurations hf_blockwise uses on A100 / H100-class GPUs (and TAN's on a T4), compiled for
    the real target: each compiles, fits shared memory and stays within the spill budget."""
    results = _compile_and_check(FAST_CASES, jobs=2)
    assert [(r.kernel, r.cc, r.dtype) for r in results] == [
        (f"{kind}_{args[-1]}", args[0], args[1]) for kind, args in FAST_CASES
    ]
    assert all(r.shared > 0 and r.config for r in results)


@needs_aot
@pytest.mark.slow
def test_aot_every_launch_config():
    """Every configuration the launch-config functions return: archs x dtypes x head dims 32..256 x
    bias+padding / neither x forward, dK/dV, dQ; and the Chebyshev kernels at TAN's sizes (~500 compiles)."""
    cases = aot.config_matrix()
    assert len(_compile_and_check(cases, jobs=os.cpu_count() or 1)) == len(cases)


@needs_aot
@pytest.mark.slow
def test_aot_fp32_dots_use_tf32_tensor_cores_only_when_allowed():
    """At torch's "high" / "medium" float32 matmul precision the fp32 kernels use TF32 mma on sm_80; at
    "highest" (the default) they use exact fp32 FMA."""
    tf32, ieee = aot.compile_in_subprocess([("flash", (80, "fp32", 64, False, False, "fwd", None, allow, True))
                                            for allow in (True, False)], jobs=2)
    assert tf32.fits and ieee.fits
    assert "mma.sync.aligned" in tf32.ptx and ".tf32" in tf32.ptx
    assert ".tf32" not in ieee.ptx
