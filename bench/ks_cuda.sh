#!/bin/sh
# GPU benchmark of ks_matmul: bench_ks_cuda (kestrel's kernel against cuBLAS permute +
# batched GEMM + permute and dense GEMM) and bench/ks_torch_baseline.py (the PyTorch
# permute + bmm + permute baseline and dense matmul, when torch is importable), then one
# merged CSV and a markdown table of median speedups per dtype and batch, and the plots.
#
#   bench/ks_cuda.sh [BIN_DIR] [OUT_DIR]     # defaults: build/cuda/bin and .
#   KS_REPS=15 KS_BATCHES=1,16,128,4096,25088 bench/ks_cuda.sh build/cuda/bin out
#
# Writes OUT_DIR/ks_cuda_kestrel.csv, ks_torch.csv (if torch), ks_cuda.csv (merged),
# ks_cuda.md and, with gnuplot, ks_cuda_fp32.png and ks_cuda_bf16.png. KS_MERGE_ONLY=1
# skips the two runs and merges the CSVs already in OUT_DIR (measured elsewhere).
set -eu
BIN=${1:-build/cuda/bin}
OUT=${2:-.}
REPS=${KS_REPS:-15}
BATCHES=${KS_BATCHES:-1,16,128,4096,25088}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
if [ "${KS_MERGE_ONLY:-0}" != 1 ]; then
  "$BIN/bench_ks_cuda" --reps "$REPS" --batches "$BATCHES" > "$OUT/ks_cuda_kestrel.csv" 2> "$OUT/ks_cuda_kestrel.log"
  if python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
    python3 "$HERE/ks_torch_baseline.py" --reps "$REPS" --batches "$BATCHES" > "$OUT/ks_torch.csv" 2> "$OUT/ks_torch.log"
  else
    echo "torch with CUDA not available: no PyTorch baseline" >&2
    : > "$OUT/ks_torch.csv"
  fi
fi
python3 - "$OUT" <<'PY'
import csv, statistics, sys
out = sys.argv[1]
rows = list(csv.DictReader(open(f"{out}/ks_cuda_kestrel.csv")))
torch_rows = {}
try:
    for r in csv.DictReader(open(f"{out}/ks_torch.csv")):
        torch_rows[(r["a"], r["b"], r["c"], r["d"], r["batch"], r["dtype"])] = r
except (FileNotFoundError, StopIteration):
    pass
fields = list(rows[0].keys()) + ["t_torch_bmm_us", "t_torch_dense_us", "speedup_torch_bmm_bl", "speedup_torch_bmm_tm"]
with open(f"{out}/ks_cuda.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    for r in rows:
        t = torch_rows.get((r["a"], r["b"], r["c"], r["d"], r["batch"], r["dtype"]))
        r["t_torch_bmm_us"] = t["t_torch_bmm_us"] if t else ""
        r["t_torch_dense_us"] = t["t_torch_dense_us"] if t else ""
        r["speedup_torch_bmm_bl"] = f"{float(t['t_torch_bmm_us']) / float(r['t_ks_bl_us']):.3f}" if t else ""
        r["speedup_torch_bmm_tm"] = f"{float(t['t_torch_bmm_us']) / float(r['t_ks_tm_us']):.3f}" if t else ""
        w.writerow(r)
groups = {}
for r in rows:
    groups.setdefault((r["dtype"], int(r["batch"])), []).append(r)
def med(v):
    return f"{statistics.median(v):.2f}x" if v else "-"
def below(v):
    return f"{sum(1 for s in v if s < 1)}/{len(v)}" if v else "-"
lines = ["| dtype | batch | patterns | vs cuBLAS bmm, batch_last | below 1x | vs cuBLAS bmm, token_major | below 1x "
         "| vs PyTorch bmm (kernel batch_last) | below 1x | vs PyTorch bmm (kernel token_major) | below 1x "
         "| vs dense (best layout) | density <= 1/4 slower than dense |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
for (dt, batch), g in sorted(groups.items()):
    s_bl = [float(r["speedup_bmm_bl"]) for r in g]
    s_tm = [float(r["speedup_bmm_tm"]) for r in g]
    s_pb = [float(r["speedup_torch_bmm_bl"]) for r in g if r["speedup_torch_bmm_bl"]]
    s_pt = [float(r["speedup_torch_bmm_tm"]) for r in g if r["speedup_torch_bmm_tm"]]
    s_d = [float(r["speedup_dense"]) for r in g]
    sparse = [r for r in g if float(r["density"]) <= 0.25 + 1e-9]
    slow = sum(1 for r in sparse if float(r["speedup_dense"]) < 1)
    lines.append(f"| {dt} | {batch} | {len(g)} | {med(s_bl)} | {below(s_bl)} | {med(s_tm)} | {below(s_tm)} "
                 f"| {med(s_pb)} | {below(s_pb)} | {med(s_pt)} | {below(s_pt)} | {med(s_d)} | {slow}/{len(sparse)} |")
open(f"{out}/ks_cuda.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
if command -v gnuplot > /dev/null; then
  for dt in fp32 bf16; do
    gnuplot -e "csv='$OUT/ks_cuda.csv'; png='$OUT/ks_cuda_$dt.png'; dtype='$dt'" "$HERE/ks_cuda_plot.gp"
  done
fi
