"""Ahead-of-time compilation of the Triton kernels for real GPU targets, on a machine without a GPU.

``triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", cc, 32))`` runs Triton's
whole pipeline down to ptxas and a cubin, so it checks what the CPU interpreter cannot: the shared memory a launch
needs (``CompiledKernel.metadata.shared``, which the launcher compares with the device's limit), registers and
spills (``cuobjdump -res-usage`` on the cubin, LOCAL = bytes of local memory per thread), and whether fp32 dots
use TF32 tensor cores. The signature mirrors what the wrappers' launches specialise to: pointers 16-byte aligned,
innermost strides 1, other strides multiples of 16.

    python -m hf_attn.kernels.aot             # every configuration the launch-config functions return
    python -m hf_attn.kernels.aot --sweep     # candidate configurations (how the tables were chosen)

    python -m hf_attn.kernels.aot --cases-json - < cases.json   # given cases, results as one JSON line

Needs triton with its NVIDIA backend (ptxas and cuobjdump ship in its wheel, under triton/backends/nvidia/bin); no
GPU, no torch device. ``triton.jit`` fixes interpreted vs compiled when a kernel module is imported, so a process
with ``TRITON_INTERPRET=1`` (the CPU test session) cannot compile: ``compile_in_subprocess`` runs the cases in a
fresh Python whose environment drops that variable (tests/test_kernels_aot.py does so).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from .launch_configs import (
    CHEBYSHEV_PASSES,
    DTYPES,
    FLASH_PASSES,
    SHARED_MEMORY_BYTES,
    ChebyshevConfig,
    FlashConfig,
    block_d,
    chebyshev_config,
    flash_config,
)

ARCHS = (75, 80, 86, 90)
HEAD_DIMS = (32, 64, 80, 96, 128, 256)
_TRITON_DT = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}


@dataclass
class AotResult:
    kernel: str
    cc: int
    dtype: str
    size: str
    config: str
    shared: int | None = None
    limit: int | None = None
    registers: int | None = None
    local: int | None = None  # bytes of local memory per thread (register spills); None without cuobjdump
    seconds: float = 0.0
    error: str | None = None
    ptx: str = ""

    @property
    def fits(self) -> bool:
        return self.error is None and self.shared is not None and self.shared <= self.limit


def available() -> str | None:
    """None when this machine can compile ahead of time (triton with its NVIDIA backend, ptxas), else why not.
    A process that runs the kernels under TRITON_INTERPRET=1 compiles through ``compile_in_subprocess``."""
    try:
        import triton  # noqa: F401
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
    except ImportError as err:
        return f"triton not importable: {err}"
    if _nvidia_bin("ptxas") is None:
        return "ptxas not found (triton's NVIDIA backend is missing)"
    return None


def _nvidia_bin(name: str) -> str | None:
    try:
        import triton
    except ImportError:
        return None
    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    return str(path) if path.exists() else shutil.which(name)


def _signature(kernel, dtype: str, constexprs: dict, pointers: dict[str, str], floats=("qk_scale", "sm_scale", "cap"),
               unit_strides=(), aligned_ints=(), tuples=None):
    """(signature, constexprs, attrs) for ``ASTSource``, as the launches specialise: pointers 16-byte aligned,
    `unit_strides` = 1 (constexpr), `aligned_ints` multiples of 16; `tuples` maps a tuple argument to the kinds
    of its elements ("unit", "aligned" or "i32"), keyed in constexprs / attrs by their path (i, j)."""
    sig, attrs, tuples = {}, {}, tuples or {}
    for i, name in enumerate(kernel.arg_names):
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in pointers:
            sig[name] = "*" + (_TRITON_DT[dtype] if pointers[name] == "dt" else pointers[name])
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in floats:
            sig[name] = "fp32"
        elif name in unit_strides:
            sig[name] = "constexpr"
            constexprs[name] = 1
        elif name in tuples:
            sig[name] = tuple("constexpr" if kind == "unit" else "i32" for kind in tuples[name])
            for j, kind in enumerate(tuples[name]):
                if kind == "unit":
                    constexprs[(i, j)] = 1
                elif kind == "aligned":
                    attrs[(i, j)] = [["tt.divisibility", 16]]
        else:
            sig[name] = "i32"
            if name in aligned_ints:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return sig, constexprs, attrs


def _flash_source(pass_: str, dtype: str, head_dim: int, has_bias: bool, has_mask: bool, cfg: FlashConfig,
                  precision: str):
    fa = importlib.import_module(".flash_attention", __package__)  # (the package's `flash_attention` is the function)

    # Soft-capping and sinks off: the launch configurations are checked for the models' plain calls (the cap
    # adds a few registers per tile; the sinks two scalars per program).
    const = dict(HAS_BIAS=has_bias, HAS_MASK=has_mask, HAS_SOFTCAP=False, HAS_SINKS=False, BLOCK_M=cfg.block_m,
                 BLOCK_N=cfg.block_n, BLOCK_D=block_d(head_dim), PRECISION=precision)
    dt = "dt"
    if pass_ == "fwd":
        kernel = fa._flash_fwd_kernel
        ptrs = dict(Q=dt, K=dt, V=dt, Out=dt, Lse="fp32", Bias="fp32", Mask="i8", Sinks="fp32")
    elif pass_ == "bwd_dkdv":
        kernel = fa._flash_bwd_dkdv_kernel
        ptrs = dict(Q=dt, K=dt, V=dt, DO=dt, Lse="fp32", Delta="fp32", DK=dt, DV=dt, Bias="fp32", Mask="i8")
    else:
        kernel = fa._flash_bwd_dq_kernel
        ptrs = dict(Q=dt, K=dt, V=dt, DO=dt, Lse="fp32", Delta="fp32", DQ=dt, Bias="fp32", DBias="fp32",
                    Mask="i8")
        const.update(BIAS_GRAD=has_bias, BLOCK_R=fa._block_r(cfg.block_m, cfg.block_n))
    # (batch, head, row, dim) strides: dim 1, the others multiples of 16 when the head dim is; the padding mask's
    # (batch, key) strides: key 1, batch = Tk (any); the table's head stride stays a plain int.
    outer = "aligned" if head_dim % 16 == 0 else "i32"
    tuples = {n: (outer, outer, outer, "unit") for n in kernel.arg_names
              if n.startswith("stride_") and n not in ("stride_bh", "stride_mask")}
    tuples["stride_mask"] = ("i32", "unit")
    return kernel, _signature(kernel, dtype, const, ptrs, tuples=tuples)


def _chebyshev_source(pass_: str, dtype: str, cfg: ChebyshevConfig, precision: str):
    ch = importlib.import_module(".chebyshev", __package__)

    const = dict(BLOCK_N=cfg.block_n, BLOCK_H=cfg.block_h, K_TILE=cfg.k_tile, SUB=cfg.sub, PRECISION=precision)
    if pass_ == "fwd":
        kernel = ch._chebyshev_fwd_kernel
        const["HAS_BIAS"] = True
        ptrs = dict(U="fp32", W="dt", Bias="dt", Out="dt")
        unit = ("stride_wk", "stride_oh")
    elif pass_ == "bwd_du":
        kernel = ch._chebyshev_bwd_du_kernel
        ptrs = dict(U="fp32", W="dt", DY="dt", DU="fp32")
        unit = ("stride_wk", "stride_dyh")
    else:
        kernel = ch._chebyshev_bwd_dw_kernel
        ptrs = dict(U="fp32", DY="dt", DWP="fp32")
        unit = ("stride_dyh",)
    aligned = ("stride_wh", "stride_on", "stride_dyn")
    return kernel, _signature(kernel, dtype, const, ptrs, floats=(), unit_strides=unit, aligned_ints=aligned)


def _resource_usage(cubin: bytes) -> tuple[int | None, int | None]:
    """(registers, local bytes) per thread from cuobjdump -res-usage; (None, None) without cuobjdump."""
    tool = _nvidia_bin("cuobjdump")
    if tool is None:
        return None, None
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, timeout=60).stdout
    regs = local = None
    for line in out.splitlines():
        if "REG:" in line:
            fields = dict(tok.split(":", 1) for tok in line.split() if ":" in tok)
            regs, local = int(fields["REG"]), int(fields.get("LOCAL", 0)) + int(fields.get("STACK", 0))
    return regs, local


def compile_one(kernel, sig_const_attrs, cc: int, num_warps: int, num_stages: int):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("TRITON_INTERPRET=1 is set in this process, so its kernels are interpreted functions; "
                           "compile through compile_in_subprocess")
    sig, const, attrs = sig_const_attrs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TRITON_DEFAULT_FP_FUSION notice
        return triton.compile(ASTSource(fn=kernel, signature=sig, constexprs=const, attrs=attrs),
                              target=GPUTarget("cuda", cc, 32), options=dict(num_warps=num_warps,
                                                                             num_stages=num_stages))


def _run(name, cc, dtype, size, cfg, build, keep_ptx=False) -> AotResult:
    res = AotResult(name, cc, dtype, size, _cfg_str(cfg), limit=SHARED_MEMORY_BYTES[cc])
    t0 = time.perf_counter()
    try:
        kernel, sca = build()
        compiled = compile_one(kernel, sca, cc, cfg.num_warps, cfg.num_stages)
        res.shared = int(compiled.metadata.shared)
        res.registers, res.local = _resource_usage(compiled.asm["cubin"])
        if keep_ptx:
            res.ptx = compiled.asm["ptx"]
    except Exception as err:  # an OutOfResources / compiler error is a result, reported by the caller
        res.error = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
    res.seconds = time.perf_counter() - t0
    return res


def _cfg_str(cfg) -> str:
    if isinstance(cfg, FlashConfig):
        return f"{cfg.block_m}x{cfg.block_n} w{cfg.num_warps} s{cfg.num_stages}"
    return f"n{cfg.block_n} h{cfg.block_h} k{cfg.k_tile} w{cfg.num_warps} s{cfg.num_stages}"


def precision_for(dtype: str, allow_tf32: bool = False) -> str:
    return "tf32" if dtype != "fp32" or allow_tf32 else "ieee"


def compile_flash(cc: int, dtype: str, head_dim: int, has_bias: bool, has_mask: bool, pass_: str,
                  cfg: FlashConfig | None = None, allow_tf32: bool = False, keep_ptx: bool = False) -> AotResult:
    """Compile one flash kernel at `cfg` (default: the launch-config function's choice)."""
    cfg = cfg or flash_config(cc, dtype, head_dim, has_bias, pass_)
    # bf16 below sm_80 is run in fp32 by the wrapper.
    run_dtype = "fp32" if dtype == "bf16" and cc < 80 else dtype
    prec = precision_for(run_dtype, allow_tf32)
    return _run(f"flash_{pass_}", cc, dtype, f"D={head_dim}{' bias' if has_bias else ''}{' mask' if has_mask else ''}",
                cfg, lambda: _flash_source(pass_, run_dtype, head_dim, has_bias, has_mask, cfg, prec), keep_ptx)


def compile_chebyshev(cc: int, dtype: str, hidden: int, degree: int, pass_: str,
                      cfg: ChebyshevConfig | None = None, allow_tf32: bool = False) -> AotResult:
    cfg = cfg or chebyshev_config(cc, dtype, hidden, degree, pass_)
    prec = precision_for(dtype, allow_tf32)
    return _run(f"chebyshev_{pass_}", cc, dtype, f"hidden={hidden} K={degree}", cfg,
                lambda: _chebyshev_source(pass_, dtype, cfg, prec))


def config_matrix(archs=ARCHS, dtypes=DTYPES, head_dims=HEAD_DIMS, cheb_sizes=((256, 32), (256, 256)),
                  bias_cases=(False, True)):
    """Every (kind, args) the project can launch: the launch-config functions' choices over the matrix."""
    cases = []
    for cc in archs:
        for dt in dtypes:
            for d in head_dims:
                for has_bias in bias_cases:
                    for pass_ in FLASH_PASSES:
                        if flash_config(cc, dt, d, has_bias, pass_) is not None:
                            cases.append(("flash", (cc, dt, d, has_bias, has_bias, pass_)))
            for hidden, degree in cheb_sizes:
                for pass_ in CHEBYSHEV_PASSES:
                    if chebyshev_config(cc, dt, hidden, degree, pass_) is not None:
                        cases.append(("chebyshev", (cc, dt, hidden, degree, pass_)))
    return cases


def run_case(kind, args) -> AotResult:
    return compile_flash(*args) if kind == "flash" else compile_chebyshev(*args)


def run_cases_json(text: str) -> str:
    """Compile the cases of a JSON list of [kind, args] (``config_matrix``'s form, lists for tuples) and return
    the results as one JSON line (a list of ``AotResult`` fields)."""
    return json.dumps([asdict(run_case(kind, args)) for kind, args in json.loads(text)])


def compile_in_subprocess(cases, jobs: int = 1, timeout: float = 1800.0) -> list[AotResult]:
    """Compile `cases` ((kind, args) as ``config_matrix`` gives them) in `jobs` fresh Python processes whose
    environment has no TRITON_INTERPRET, so that this works from a process running the kernels under the
    interpreter. Results in the order of `cases`; RuntimeError with the child's stderr if one fails."""
    cases = [[kind, list(args)] for kind, args in cases]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    n = max(1, min(jobs, len(cases)))
    chunks = [cases[i::n] for i in range(n)]
    cmd = [sys.executable, "-m", "hf_attn.kernels.aot", "--cases-json", "-"]
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in chunks]
    outputs = [p.communicate(json.dumps(chunk), timeout=timeout) for p, chunk in zip(procs, chunks, strict=True)]
    results = [None] * len(cases)
    for j, (proc, (stdout, stderr)) in enumerate(zip(procs, outputs, strict=True)):
        if proc.returncode != 0 or not stdout.strip():
            raise RuntimeError(f"AOT compile subprocess failed (exit {proc.returncode}):\n{stderr[-3000:]}")
        results[j::n] = [AotResult(**r) for r in json.loads(stdout.strip().splitlines()[-1])]
    return results


def format_table(results: list[AotResult]) -> str:
    rows = ["| kernel | sm | dtype | shape | config | shared B (limit) | regs | spill B | result |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        status = "ok" if r.fits else (r.error or "over shared memory")
        rows.append(f"| {r.kernel} | {r.cc} | {r.dtype} | {r.size} | {r.config} | "
                    f"{'-' if r.shared is None else r.shared} ({r.limit}) | {r.registers or '-'} | "
                    f"{'-' if r.local is None else r.local} | {status} |")
    return "\n".join(rows)


_SWEEP_FLASH = [FlashConfig(*c) for c in (
    (128, 64, 8, 3), (128, 64, 4, 3), (128, 64, 4, 2), (64, 64, 8, 3), (64, 64, 8, 2), (64, 64, 4, 3),
    (64, 64, 4, 2), (64, 32, 4, 2), (32, 64, 4, 2), (32, 32, 4, 2), (32, 32, 4, 1), (16, 16, 4, 1))]
_SWEEP_CHEB = [ChebyshevConfig(*c) for c in (
    (64, 128, 128, 16, 8, 3), (64, 128, 64, 16, 8, 2), (64, 64, 64, 16, 4, 2), (64, 64, 64, 16, 8, 2),
    (32, 64, 64, 16, 4, 2), (32, 64, 32, 4, 4, 2), (32, 32, 32, 4, 4, 1))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", action="store_true", help="compile candidate configs instead of the chosen")
    parser.add_argument("--archs", type=int, nargs="*", default=list(ARCHS))
    parser.add_argument("--dtypes", nargs="*", default=list(DTYPES))
    parser.add_argument("--head-dims", type=int, nargs="*", default=list(HEAD_DIMS))
    parser.add_argument("--passes", nargs="*", default=None)
    parser.add_argument("--bias-only", action="store_true", help="only launches with a bias table and padding")
    parser.add_argument("--cheb-sizes", nargs="*", default=["256x32", "256x256"], help="HIDDENxDEGREE")
    parser.add_argument("--cases-json", metavar="FILE", help="compile the [kind, args] cases of FILE (- = stdin) "
                        "and print the results as one JSON line")
    args = parser.parse_args(argv)
    why = available()
    if why:
        raise SystemExit(why)
    if args.cases_json:
        print(run_cases_json(sys.stdin.read() if args.cases_json == "-" else Path(args.cases_json).read_text()))
        return
    results = []
    if args.sweep:
        for cc in args.archs:
            for dt in args.dtypes:
                for d in args.head_dims:
                    for pass_ in args.passes or FLASH_PASSES:
                        if pass_ in CHEBYSHEV_PASSES and pass_ not in FLASH_PASSES:
                            continue
                        for cfg in _SWEEP_FLASH:
                            r = compile_flash(cc, dt, d, True, True, pass_, cfg)
                            results.append(r)
                            print(format_table([r]).splitlines()[-1], flush=True)
                for pass_ in args.passes or CHEBYSHEV_PASSES:
                    if pass_ not in CHEBYSHEV_PASSES:
                        continue
                    for cfg in _SWEEP_CHEB:
                        r = compile_chebyshev(cc, dt, 256, 256, pass_, cfg)
                        results.append(r)
                        print(format_table([r]).splitlines()[-1], flush=True)
        return
    cheb = [tuple(int(x) for x in c.split("x")) for c in args.cheb_sizes]
    for kind, case in config_matrix(args.archs, args.dtypes, args.head_dims, cheb,
                                    (True,) if args.bias_only else (False, True)):
        r = run_case(kind, case)
        results.append(r)
        print(format_table([r]).splitlines()[-1], flush=True)
    bad = [r for r in results if not r.fits]
    print(f"{len(results)} compiled, {len(bad)} failed, "
          f"{sum(1 for r in results if r.local)} spill, {sum(r.seconds for r in results):.0f} s")
    if bad:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
