"""`hf-attn bench NAME`: run `benchmarks/NAME.py` from a source checkout (benchmarks are scripts, not tests)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def _benchmarks_dir() -> Path | None:
    for base in (Path.cwd(), Path(__file__).resolve().parent.parent):
        if (base / "benchmarks").is_dir():
            return base / "benchmarks"
    return None


def add_arguments(parser) -> None:
    parser.add_argument("name", help="benchmark script name, e.g. attention, kernels, encode, train_throughput")
    parser.add_argument("script_args", nargs="*", help="arguments passed to the script (after --)")


def run(args) -> int:
    from .errors import UsageError

    bench_dir = _benchmarks_dir()
    if bench_dir is None:
        raise UsageError("no benchmarks/ folder found (run it from a clone of the hf_attn repository)")
    script = bench_dir / f"{args.name}.py"
    if not script.exists():
        names = sorted(p.stem for p in bench_dir.glob("*.py") if not p.stem.startswith("_"))
        raise UsageError(f"no benchmark named {args.name!r} (available: {', '.join(names)})")
    sys.argv = [str(script), *args.script_args]
    runpy.run_path(str(script), run_name="__main__")
    return 0
