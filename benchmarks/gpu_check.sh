#!/usr/bin/env bash
# One GPU check on a CUDA machine, written to one Markdown report:
#   1. the Triton kernel tests on CUDA (tests/test_kernels.py, slow cases and the bf16 test included);
#   2. the banded path (hf_local / span-masked blockwise core: sdpa over key slabs) on CUDA against the dense
#      reference, fp32 and bf16, forward and backward;
#   3. the Triton benchmarks (benchmarks/triton_kernels.py --cuda-only): hf_blockwise vs SDPA's flash backend at
#      T=4096 and 16384, span skipping (spans ~T/8 vs dense), fused Chebyshev at N=1M.
# Budget: under 8 minutes on an H100/H200 (each step has its own timeout; a step that fails or times out is
# reported and the script goes on).
#
#   bash benchmarks/gpu_check.sh [REPORT.md]        # default: gpu_check_report.md in the checkout root
#   PY=/path/to/python bash benchmarks/gpu_check.sh  # default: .venv/bin/python if present, else python3
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
PY="${PY:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
REPORT="${1:-gpu_check_report.md}"
LOGDIR="$(mktemp -d)"
START=$(date +%s)
FAILED=0

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device visible to $PY" >&2
    exit 2
fi

# run NAME TIMEOUT_S CMD...: run a step, keep its output and status for the report.
run() {
    local name="$1" limit="$2"
    shift 2
    local t0 rc
    t0=$(date +%s)
    echo "== $name: $*" >&2
    timeout "$limit" "$@" >"$LOGDIR/$name.log" 2>&1
    rc=$?
    echo "$rc $(( $(date +%s) - t0 ))" >"$LOGDIR/$name.status"
    [ "$rc" -eq 0 ] || FAILED=1
    tail -n 5 "$LOGDIR/$name.log" >&2
}

# section NAME TITLE: the step's command status and (the tail of) its output as a fenced block.
section() {
    local name="$1" title="$2" rc secs
    read -r rc secs <"$LOGDIR/$name.status"
    local verdict="ok"
    [ "$rc" -eq 0 ] || verdict="FAILED (exit $rc$( [ "$rc" -eq 124 ] && echo ', timed out'))"
    {
        echo "## $title"
        echo
        echo "$verdict, ${secs} s"
        echo
        echo '```'
        tail -n 80 "$LOGDIR/$name.log"
        echo '```'
        echo
    } >>"$REPORT"
}

# 1. Kernel tests on CUDA (DEVICE is cuda when a GPU is visible; TRITON_INTERPRET stays unset).
run kernel_tests 240 env -u TRITON_INTERPRET "$PY" -m pytest -q -p no:cacheprovider -n 0 -m "slow or not slow" \
    tests/test_kernels.py

# 2. The banded path on CUDA against the dense reference (fp32 and bf16, padding, GQA, a span table with grad).
run banded_cuda 120 "$PY" - <<'EOF'
import torch

from hf_attn.attention.band import band, distances, pair_mask
from hf_attn.attention.blockwise import blockwise_attention
from hf_attn.modeling.layers import repeat_kv

dev = "cuda"
torch.manual_seed(0)


def reference(q, k, v, scaling, rule, mask, table):
    h, tq, tk = q.shape[1], q.shape[2], k.shape[2]
    k, v = repeat_kv(k, h // k.shape[1]), repeat_kv(v, h // v.shape[1])
    s = (q @ k.transpose(-1, -2)) * scaling
    if table is not None:
        s = s + table[:, distances(tq, tk, dev).clamp(0, table.shape[1] - 1)][None]
    s = s.masked_fill(~pair_mask(tq, tk, rule, mask, dev), float("-inf"))
    return (torch.softmax(s, -1).nan_to_num(0.0) @ v).transpose(1, 2)


worst = 0.0
for dtype, tol in ((torch.float32, 2e-4), (torch.bfloat16, 3e-2)):
    for window, length in ((64, None), (None, 96)):
        b, h, hkv, t, d = 2, 8, 2, 1000, 64
        q = torch.randn(b, h, t, d, device=dev, dtype=dtype, requires_grad=True)
        k = torch.randn(b, hkv, t, d, device=dev, dtype=dtype, requires_grad=True)
        v = torch.randn(b, hkv, t, d, device=dev, dtype=dtype, requires_grad=True)
        mask = torch.ones(b, t, dtype=torch.bool, device=dev)
        mask[1, -37:] = False
        table = None if length is None else (-0.05 * torch.rand(h, 1, device=dev) * torch.arange(length, device=dev)).requires_grad_()
        leaves = [q, k, v] + ([table] if table is not None else [])
        out, _ = blockwise_attention(q, k, v, scaling=d**-0.5, is_causal=True, key_padding_mask=mask,
                                     distance_bias=table, window=window, block_size=128)
        ref = reference(q.float(), k.float(), v.float(), d**-0.5, band(True, window, None, length), mask, table)
        probe = torch.randn_like(ref)
        got = torch.autograd.grad((out.float() * probe).sum(), leaves)
        want = torch.autograd.grad((ref * probe).sum(), leaves)
        errs = [((out.float() - ref).abs().max() / ref.abs().max()).item()]
        errs += [((g.float() - w).abs().max() / w.abs().max()).item() for g, w in zip(got, want)]
        print(f"{dtype} window={window} table={length}: max rel err out/dq/dk/dv/(dtable) "
              + " ".join(f"{e:.1e}" for e in errs))
        assert max(errs) < tol, (dtype, window, length, errs)
print("banded path on CUDA matches the dense reference")
EOF

# 3. Triton benchmarks: T=4096 and 16384 (B = 16384 // T), spans ~T/8, Chebyshev N=1M.
run triton_bench 330 "$PY" benchmarks/triton_kernels.py --cuda-only --repeats 10 --cuda-lengths 4096 16384

{
    echo "# GPU check"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    "$PY" - <<'EOF'
import torch
try:
    import triton
    tv = triton.__version__
except ImportError:
    tv = "absent"
print(f"\n{torch.cuda.get_device_name()} (sm_{''.join(map(str, torch.cuda.get_device_capability()))}), "
      f"torch {torch.__version__}, CUDA {torch.version.cuda}, triton {tv}\n")
EOF
} >"$REPORT"
section kernel_tests "Kernel tests on CUDA (tests/test_kernels.py, slow and bf16 included)"
section banded_cuda "Banded path (sdpa over key slabs) on CUDA vs the dense reference"
section triton_bench "Triton benchmarks (benchmarks/triton_kernels.py --cuda-only)"
echo "Total: $(( $(date +%s) - START )) s" >>"$REPORT"
rm -rf "$LOGDIR"
echo "gpu_check: report in $REPORT" >&2
exit "$FAILED"
