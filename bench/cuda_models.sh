#!/usr/bin/env bash
# Whole models on a GPU: the CUDA tests, then `kestrel bench --device cuda` on
# random-weight TinyLlama-1.1B-shape models made on the spot (make_model),
# one per weight type, with the fraction of the HBM roofline per tg figure.
#
#   bench/cuda_models.sh BUILD_DIR OUT_DIR [TYPES]
#
# BUILD_DIR holds a -DKESTREL_CUDA=ON build (bin/kestrel, bin/make_model,
# tests/test_cuda*); OUT_DIR receives tests.txt and bench.md. TYPES default
# "f16 q8_0 q4_0 q4_k_m". REPS (default 5) repetitions per test; HBM_TBS
# (default 3.35, the H100 SXM's TB/s) for the roofline; SKIP_TESTS=1 skips the
# tests. Models go to ${MODEL_DIR:-/tmp/kestrel-models}.
set -uo pipefail
build=${1:?build dir}
out=${2:?out dir}
types=${3:-"f16 q8_0 q4_0 q4_k_m"}
reps=${REPS:-5}
hbm=${HBM_TBS:-3.35}
mdir=${MODEL_DIR:-/tmp/kestrel-models}
mkdir -p "$out" "$mdir"

# cuBLAS / cudart beside the toolkit or the driver.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib $(dirname "$(ldconfig -p | awk '/libcublas\.so/ {print $NF; exit}')" 2>/dev/null); do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  grep -m1 'model name' /proc/cpuinfo
} > "$out/machine.txt" 2>&1

if [ "${SKIP_TESTS:-0}" != 1 ]; then
  : > "$out/tests.txt"
  for t in "$build"/tests/test_cuda*; do
    [ -x "$t" ] || continue
    echo "== $(basename "$t")" >> "$out/tests.txt"
    "$t" >> "$out/tests.txt" 2>&1
    echo "exit $?" >> "$out/tests.txt"
  done
fi

{
  echo "| weights | file MiB | pp512 t/s | tg128 t/s | tg roofline (weight bytes x t/s / ${hbm} TB/s) |"
  echo "|---|---|---|---|---|"
} > "$out/bench.md"
for w in $types; do
  m="$mdir/tinyllama-$w.gguf"
  [ -f "$m" ] || "$build/bin/make_model" --arch llama --shape tinyllama --weights "$w" -t 16 -o "$m" > /dev/null || continue
  json="$out/bench-$w.json"
  "$build/bin/kestrel" bench -m "$m" --device cuda -p 512 -n 128 -r "$reps" -t 1 -o json > "$json" 2> "$out/bench-$w.err"
  python3 - "$json" "$m" "$w" "$hbm" >> "$out/bench.md" <<'PY'
import json, os, sys
rows = json.load(open(sys.argv[1]))
size = os.path.getsize(sys.argv[2])
pp = next((r for r in rows if r["n_prompt"] > 0), None)
tg = next((r for r in rows if r["n_gen"] > 0), None)
w_bytes = rows[0]["model_size"]
roof = tg["avg_ts"] * w_bytes / (float(sys.argv[4]) * 1e12) if tg else 0
f = lambda r: "%.1f ± %.1f" % (r["avg_ts"], r["stddev_ts"]) if r else "-"
print("| %s | %.0f | %s | %s | %.1f%% |" % (sys.argv[3], size / 1048576, f(pp), f(tg), 100 * roof))
PY
done
cat "$out/bench.md"
