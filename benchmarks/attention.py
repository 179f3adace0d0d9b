"""Attention backends: time and peak memory against `sdpa`, measured in the same run.

    python benchmarks/attention.py              # T in {512, 2048, 4096, 8192, 16384}
    python benchmarks/attention.py --quick      # T in {512, 2048}
    python benchmarks/attention.py --out FILE   # also write the Markdown tables to FILE
    python benchmarks/attention.py --backends hf_local local-attention   # only these (and sdpa)

B=1, H=8, D=64, causal, fp32. For each device (CPU, and CUDA when present) and each T: forward time, forward +
backward time (median of `--repeats` runs after one warm-up) and peak memory, each shown as `value (ratio to
sdpa)`. Peak memory of one call: on CPU the rise of the resident high-water mark (reset through
/proc/self/clear_refs, Linux) in a fresh child process, so no allocator cache hides it; on CUDA
`torch.cuda.max_memory_allocated`.
Backends: sdpa, eager (skipped where its T x T matrices would not fit), hf_local (window 512), the PyPI
`local-attention` package as a peer (`LocalAttention(dim=64, window_size=512, causal=True, look_backward=1,
use_rotary_pos_emb=False)`: each query sees its own 512-bucket and the previous one, 512..1024 keys; install with
`pip install -e ".[bench]"`, skipped when absent), hf_linear, hf_topk (k=64), hf_blockwise.

Targets: hf_local (window 512) forward and forward+backward >= 2.5x causal sdpa at T=4096, forward+backward
>= 8x at T=16384 and >= 2.5x the local-attention peer; hf_linear >= 5x sdpa at T=8192; peak memory of forward +
backward growing linearly in T for hf_local and hf_linear; hf_topk's peak at T=8192 <= 2x sdpa's.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import subprocess
import sys
import time

import torch  # noqa: E402

B, H, D = 1, 8, 64
WINDOW, TOPK = 512, 64
BACKENDS = ["sdpa", "eager", "hf_local", "local-attention", "hf_linear", "hf_topk", "hf_blockwise"]
PEER = "local-attention"  # PyPI package `local-attention` (lucidrains), optional extra `bench`


class _Module(torch.nn.Module):
    """What backends read from the attention module: causality and their settings."""

    def __init__(self):
        super().__init__()
        self.is_causal = True
        self.sliding_window = WINDOW
        self.attention_topk = TOPK
        self.num_key_value_groups = 1


def peer_available() -> bool:
    try:
        import local_attention  # noqa: F401
    except ImportError:
        return False
    return True


def peer_attention_fn():
    """local-attention's LocalAttention with the backends' signature (q, k, v [B, H, T, D] -> out [B, T, H, D])."""
    from local_attention import LocalAttention

    layers = {}

    def fn(module, q, k, v, attention_mask, scaling=None, dropout=0.0, **kwargs):
        key = (q.shape[-1], q.device)
        if key not in layers:
            layers[key] = LocalAttention(dim=q.shape[-1], window_size=WINDOW, causal=True, look_backward=1,
                                         look_forward=0, autopad=True, use_rotary_pos_emb=False).to(q.device)
        return layers[key](q, k, v).transpose(1, 2), None

    return fn


def attention_fn(name: str):
    from transformers import AttentionInterface

    import hf_attn  # noqa: F401  (registers the hf_* backends)
    from hf_attn.modeling.layers import eager_attention_forward

    if name == PEER:
        return peer_attention_fn()
    return eager_attention_forward if name == "eager" else AttentionInterface()[name]


def fits(name: str, t: int, device: str, backward: bool) -> bool:
    """Skip the peer when it is not installed, and eager where its [H, T, T] fp32 tensors (several kept for
    backward) won't fit (hf_topk works in query chunks: O(T x chunk) memory)."""
    if name == PEER:
        return peer_available()
    if name not in ("eager", "hf_blockwise"):
        return True
    per_matrix = B * H * t * t * 4
    budget = (torch.cuda.mem_get_info()[0] if device == "cuda" else _available_ram()) * 0.5
    if name == "hf_blockwise":  # off CUDA, dense causal runs the online-softmax loop: autograd keeps its tiles
        return device == "cuda" or not backward or per_matrix < budget
    return per_matrix * (8 if backward else 3) < budget


def _available_ram() -> int:
    try:
        import psutil

        return psutil.virtual_memory().available
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def measure(name: str, t: int, device: str, backward: bool, repeats: int) -> dict:
    """Median seconds per call and peak memory (bytes) of one backend at one length."""
    fn = attention_fn(name)
    module = _Module().to(device)
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(B, H, t, D, device=device, generator=g, requires_grad=backward) for _ in range(3))

    def step():
        out, _ = fn(module, q, k, v, None, scaling=D**-0.5, dropout=0.0)
        if backward:
            out.sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()

    with torch.set_grad_enabled(backward):
        step()  # warm-up (and, on CPU, the first touch of the allocator's pages)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
            q.grad = k.grad = v.grad = None
        if device == "cuda":
            peak = torch.cuda.max_memory_allocated() - base
        else:
            peak = cpu_peak_in_child(name, t, backward)
    return {"time": statistics.median(times), "peak": peak}


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def cpu_peak_bytes(step) -> int | None:
    """Peak resident-size increase during `step()` (Linux: reset the high-water mark via /proc/self/clear_refs)."""
    try:
        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size
        before = _proc_status_kb("VmRSS")
        step()
        return (_proc_status_kb("VmHWM") - before) * 1024
    except (OSError, KeyError):
        return None


def cpu_peak_in_child(name: str, t: int, backward: bool) -> int | None:
    """`cpu_peak_bytes` of one call in a fresh process: the allocator there has cached nothing yet, so the
    resident high-water mark sees every byte the call needs. glibc's malloc runs with a fixed mmap threshold
    (MALLOC_MMAP_THRESHOLD_=65536): by default it raises the threshold after large frees and then keeps freed
    buffers in its heap, so a loop of equal-sized temporaries (hf_topk's chunks) would read as their sum, not as
    the most alive at once. The fixed threshold returns every large buffer to the system when it is freed."""
    code = (
        "import sys, torch; sys.argv = ['x']; import benchmarks.attention as ba;"
        f"q, k, v = (torch.randn({B}, {H}, {t}, {D}, requires_grad={backward}) for _ in range(3));"
        f"fn = ba.attention_fn({name!r}); m = ba._Module(); torch.set_grad_enabled({backward});"
        "step = lambda: (lambda o: o.sum().backward() if o.requires_grad else None)("
        "fn(m, q, k, v, None, scaling=0.125)[0]);"
        "print(ba.cpu_peak_bytes(step))"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout: `import benchmarks.attention`
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, env=env)
    try:
        return int(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def fmt_time(sec: float | None, ref: float | None) -> str:
    if sec is None:
        return "skipped"
    ratio = f" ({ref / sec:.2f}x)" if ref else ""
    return f"{sec * 1e3:.1f} ms{ratio}"


def fmt_mem(nbytes: int | None, ref: int | None) -> str:
    if nbytes is None:
        return "skipped"
    ratio = f" ({nbytes / ref:.2f})" if ref else ""
    return f"{nbytes / 2**20:.1f} MiB{ratio}"


def run_device(device: str, lengths: list[int], repeats: int, backends: list[str]) -> str:
    rows = []
    for t in lengths:
        results = {}
        for name in backends:
            cell = {}
            for backward in (False, True):
                key = "fwd_bwd" if backward else "fwd"
                if not fits(name, t, device, backward):
                    cell[key] = None
                    continue
                r = measure(name, t, device, backward, repeats)
                cell[key] = r
                print(f"  {device} T={t} {name} {key}: {r['time'] * 1e3:.1f} ms", file=sys.stderr, flush=True)
            results[name] = cell
        ref = results["sdpa"]
        for name in backends:
            if results[name]["fwd"] is None and results[name]["fwd_bwd"] is None and name == PEER:
                continue
            fwd, fb = results[name]["fwd"], results[name]["fwd_bwd"]
            rows.append(
                f"| {t} | {name} | {fmt_time(fwd and fwd['time'], ref['fwd']['time'])} "
                f"| {fmt_time(fb and fb['time'], ref['fwd_bwd']['time'])} "
                f"| {fmt_mem(fwd and fwd['peak'], ref['fwd']['peak'])} "
                f"| {fmt_mem(fb and fb['peak'], ref['fwd_bwd']['peak'])} |"
            )
    what = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    header = (
        f"### {device} ({what}); B={B}, H={H}, D={D}, causal, fp32; hf_local window={WINDOW}, hf_topk k={TOPK}\n\n"
        "Time: median ms (speed-up vs sdpa, >1 = faster). Memory: peak MiB (ratio to sdpa, <1 = less).\n\n"
        "| T | backend | forward | forward+backward | peak mem fwd | peak mem fwd+bwd |\n"
        "|---|---|---|---|---|---|\n"
    )
    return header + "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="T in {512, 2048} only")
    parser.add_argument("--lengths", type=int, nargs="*", help="override the sequence lengths")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per cell (median reported)")
    parser.add_argument("--out", help="also write the Markdown tables to this file")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=BACKENDS,
                        help="backends to measure (sdpa, the baseline, always runs)")
    args = parser.parse_args()
    backends = ["sdpa", *[name for name in args.backends if name != "sdpa"]]
    lengths = args.lengths or ([512, 2048] if args.quick else [512, 2048, 4096, 8192, 16384])

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    peer = "absent" if not peer_available() else __import__("importlib.metadata").metadata.version("local-attention")
    tables = [
        f"<!-- torch {torch.__version__}; local-attention {peer}; load average at start {load:.1f}; command: "
        f"python benchmarks/attention.py {' '.join(sys.argv[1:])} -->\n"
    ]
    for device in devices:
        tables.append(run_device(device, lengths, args.repeats, backends))
    text = "\n".join(tables)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
