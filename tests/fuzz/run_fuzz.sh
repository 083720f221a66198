#!/usr/bin/env bash
# Runs each libFuzzer target for a bounded time; fails on any finding.
#
#   tests/fuzz/run_fuzz.sh                 # every target, 60 s each (what CI runs)
#   tests/fuzz/run_fuzz.sh 3600 fuzz_gguf  # one target for an hour
#   KESTREL_FUZZ_BUILD=build/fuzz          # the fuzz build (cmake --preset fuzz)
#
# Each target starts from its seed corpus (make_seeds.sh, regenerated every
# run from ../shared/models) plus its working corpus under
# <build>/corpus/<target>, which grows across runs. A crash, sanitizer report,
# leak, timeout (>10 s per input) or out-of-memory (> 2 GiB) is a finding: its
# input is kept in <build>/artifacts/<target>/ (reproduce with
# `<build>/fuzz/<target> <file>`). A summary line per target gives
# executions and time.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-60}
shift || true
BUILD=${KESTREL_FUZZ_BUILD:-build/fuzz}
ALL="fuzz_gguf fuzz_model_load fuzz_llama2c fuzz_tokenizer_bin fuzz_tokenize_spm fuzz_tokenize_bpe"
TARGETS=${*:-$ALL}

tests/fuzz/make_seeds.sh "$BUILD" "$BUILD/seeds"

max_len() {
  case "$1" in
    fuzz_gguf|fuzz_model_load) echo 65536 ;;
    fuzz_llama2c|fuzz_tokenizer_bin) echo 16384 ;;
    *) echo 4096 ;;
  esac
}

SUMMARY=()
failed=0
for t in $TARGETS; do
  bin="$BUILD/fuzz/$t"
  [ -x "$bin" ] || { echo "run_fuzz.sh: $bin not built" >&2; exit 2; }
  seeds="$BUILD/seeds/${t#fuzz_}"
  corpus="$BUILD/corpus/$t"
  artifacts="$BUILD/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  log="$BUILD/fuzz-$t.log"
  echo "=== $t: ${SECS}s (log $log)"
  t0=$(date +%s)
  set +e
  "$bin" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len="$(max_len "$t")" \
    -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" "$seeds" >"$log" 2>&1
  rc=$?
  set -e
  dt=$(($(date +%s) - t0))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*')
  result=ok
  if [ $rc -ne 0 ]; then
    result="FINDING (exit $rc)"
    failed=1
    tail -n 40 "$log"
  fi
  SUMMARY+=("$(printf '%-20s %10s execs %5ss %8s exec/s  cov %6s  %s' "$t" "${execs:-?}" "$dt" \
    "$([ -n "${execs:-}" ] && [ "$dt" -gt 0 ] && echo $((execs / dt)) || echo ?)" "${cov:-?}" "$result")")
done
printf '\n'
printf '%s\n' "${SUMMARY[@]}"
exit $failed
