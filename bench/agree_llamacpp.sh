#!/usr/bin/env bash
# Greedy agreement with llama.cpp on real models: for each model and prompt,
# 64 greedy tokens from kestrel (bench_greedy_trace) and from llama.cpp's
# llama-simple (greedy), compared as text. Where they diverge, prints the step
# and kestrel's logit margin (best - second best) there: a small margin means
# a near-tie that rounding differences between the two runtimes can flip.
#
#   bench/agree_llamacpp.sh LLAMA_SIMPLE_BINARY MODEL.gguf [MODEL.gguf ...]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
llama_simple=${1:?usage: $0 LLAMA_SIMPLE MODEL...}
shift
trace=${TRACE_BIN:-$here/build/release/bin/bench_greedy_trace}
n=${N_PREDICT:-64}
prompts=("The capital of France is" "Once upon a time, a little fox" "def fibonacci(n):")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for m in "$@"; do
  for p in "${prompts[@]}"; do
    "$llama_simple" -m "$m" -n "$n" "$p" 2>/dev/null > "$tmp/llama.txt" || true
    "$trace" -m "$m" -p "$p" -n "$n" -t "${THREADS:-2}" > "$tmp/trace.txt"
    python3 - "$tmp/llama.txt" "$tmp/trace.txt" "$(basename "$m")" "$p" <<'PY'
import re, sys
llama = open(sys.argv[1], encoding="utf-8", errors="replace").read()
prompt = sys.argv[4]
# llama-simple echoes the prompt (with special tokens rendered) before the generation.
i = llama.find(prompt)
gen = llama[i + len(prompt):] if i >= 0 else llama
steps = []
for line in open(sys.argv[2], encoding="utf-8", errors="replace"):
    m = re.match(r"step (\d+) id (-?\d+) margin ([0-9.eE+-]+) piece '(.*)'$", line.rstrip("\n"))
    if m:
        steps.append((int(m.group(1)), int(m.group(2)), float(m.group(3)), m.group(4)))
text = ""
prev_margin = None
for s, tid, margin, piece in steps:
    nxt = text + piece
    cmp_gen = gen.replace("\n", " ")
    if not cmp_gen.startswith(nxt):
        # Text diverges here; the token split may already have differed one
        # step earlier (e.g. '.' vs '.C'), so both margins are shown.
        prev = f", previous step {prev_margin:.3f}" if prev_margin is not None else ""
        print(f"{sys.argv[3]} | {prompt!r} | diverges at step {s} (kestrel {piece!r}, llama.cpp "
              f"{cmp_gen[len(text):len(text)+12]!r}) | kestrel margin {margin:.3f}{prev}")
        break
    text = nxt
    prev_margin = margin
else:
    print(f"{sys.argv[3]} | {prompt!r} | identical for {len(steps)} tokens | min margin "
          f"{min(s[2] for s in steps):.3f}")
PY
  done
done
