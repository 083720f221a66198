#!/usr/bin/env bash
# kestrel's whole test suite: what CI runs and what a change should pass.
#
#   tests/run_all.sh                          # every default step
#   KESTREL_STEPS="release aarch64" tests/run_all.sh
#   KESTREL_JOBS=8 tests/run_all.sh           # more build jobs (default 2)
#
# Steps (default: all of them, in this order; CI's budget is 60 minutes on 2 cores,
# the times per step measured there are in the summary it prints at the end):
#   release   cmake --workflow --preset release: configure, build, ctest on this machine; then
#             the HTTP server suite (tests/server: pytest with the openai client) on its kestrel
#   aarch64   the aarch64 workflow preset: cross build, ctest under qemu-aarch64
#   armhf     the armhf preset: cross configure + build (no SIMD variant; no tests)
#   cuda      the cuda preset: configure + build with nvcc (no GPU needed); SKIP without nvcc
#   consumer  install build/release to a temporary prefix, then build and run
#             tests/consumer against it with CMake and with pkg-config
#   asan      the asan workflow preset: ASan + UBSan build and the whole ctest suite
#             (KESTREL_TEST_REDUCED=1: the heavy sweeps run their reduced set, see
#             tests/reduced_sweep.h; LeakSanitizer on), then the HTTP server suite on its kestrel
#   tsan      the tsan preset (clang): ThreadSanitizer build of the concurrency
#             and C API tests, which share one model between threads, and of the
#             request scheduler's test
#   fuzz      the fuzz preset (clang, libFuzzer + ASan + UBSan): every target in tests/fuzz
#             for KESTREL_FUZZ_SECONDS each (default 60); any finding fails the step
#             (inputs kept in build/fuzz/artifacts/); tests/fuzz/run_fuzz.sh runs longer
# The first failing step stops the script with a non-zero exit status.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
STEPS=${KESTREL_STEPS:-"release aarch64 armhf cuda consumer asan tsan fuzz"}
FUZZ_SECONDS=${KESTREL_FUZZ_SECONDS:-60}
JOBS=${KESTREL_JOBS:-2}
export CMAKE_BUILD_PARALLEL_LEVEL=$JOBS
export CTEST_PARALLEL_LEVEL=$JOBS

T0=$(date +%s)
SUMMARY=()

section() { printf '\n==================== %s ====================\n' "$*"; }
fail() {
  printf '\nFAILED: step %s (%s)\n' "$1" "$2" >&2
  exit 1
}
finish_step() {  # name, start time, result word
  local dt=$(($(date +%s) - $2))
  SUMMARY+=("$(printf '%-9s %-5s %5ds' "$1" "$3" "$dt")")
}

known_step() {
  case "$1" in release|aarch64|armhf|cuda|consumer|asan|tsan|fuzz) return 0 ;; *) return 1 ;; esac
}
for s in $STEPS; do known_step "$s" || { echo "unknown step '$s' in KESTREL_STEPS" >&2; exit 2; }; done

# tests/server against a build's kestrel, with the Python of build/pyvenv
# (tools/install-deps.sh --all) or python3 when it has the packages.
server_tests() {  # kestrel binary, slowdown factor of the build
  local py=${KESTREL_PYVENV:-$ROOT/build/pyvenv}/bin/python
  [ -x "$py" ] || py=python3
  "$py" -c "import openai, pytest, pytest_timeout" 2>/dev/null ||
    fail server "python packages openai, pytest, pytest-timeout missing (tools/install-deps.sh --all)"
  echo "--- tests/server against $1"
  PYTHONDONTWRITEBYTECODE=1 KESTREL_TEST_SLOWDOWN=$2 "$py" -m pytest -p no:cacheprovider -q tests/server --kestrel "$1"
}

step_release() {
  cmake --workflow --preset release
  server_tests build/release/bin/kestrel 1
}

step_aarch64() {
  command -v aarch64-linux-gnu-g++ >/dev/null || fail aarch64 "aarch64-linux-gnu-g++ not installed"
  command -v qemu-aarch64 >/dev/null || fail aarch64 "qemu-aarch64 not installed"
  cmake --workflow --preset aarch64
}

step_armhf() {
  command -v arm-linux-gnueabihf-g++ >/dev/null || fail armhf "arm-linux-gnueabihf-g++ not installed"
  cmake --preset armhf
  cmake --build --preset armhf
}

step_cuda() {
  if ! command -v nvcc >/dev/null; then
    echo "SKIP: cuda: nvcc not found on PATH (the cuda preset needs the CUDA toolkit, not a GPU)"
    return 3
  fi
  nvcc --version | tail -n 2
  cmake --preset cuda
  cmake --build --preset cuda
}

step_consumer() {
  [ -f build/release/CMakeCache.txt ] || fail consumer "build/release is not configured: run the release step first"
  cmake --build --preset release --target kestrel
  local tmp
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/kestrel-consumer.XXXXXX")
  trap 'rm -rf "$tmp"' RETURN
  cmake --install build/release --prefix "$tmp/prefix"

  echo "--- consumer via find_package(kestrel)"
  cmake -S tests/consumer -B "$tmp/cmake-build" -DCMAKE_PREFIX_PATH="$tmp/prefix" -DCMAKE_BUILD_TYPE=Release
  cmake --build "$tmp/cmake-build"
  # With the small shared model it also generates; without it, API checks only.
  local model="$ROOT/../shared/models/stories260K/stories260K.gguf"
  if [ -f "$model" ]; then
    "$tmp/cmake-build/kestrel_consumer" "$model"
  else
    echo "note: $model not found: consumer runs without a model"
    "$tmp/cmake-build/kestrel_consumer"
  fi

  echo "--- consumer via pkg-config"
  command -v pkg-config >/dev/null || fail consumer "pkg-config not installed"
  local flags
  flags=$(PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig" pkg-config --cflags --libs kestrel)
  echo "pkg-config --cflags --libs kestrel: $flags"
  # shellcheck disable=SC2086  # flags are words on purpose
  ${CC:-cc} -std=c99 -Wall -Werror -o "$tmp/pc-consumer" tests/consumer/main.c $flags
  "$tmp/pc-consumer"  # API checks only: the model run above covered generation
}

step_asan() {
  cmake --workflow --preset asan
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    server_tests build/asan/bin/kestrel 8
}

need_clang() {
  command -v clang++ >/dev/null || fail "$1" "clang++ not installed (apt-get install clang)"
}

step_tsan() {
  need_clang tsan
  cmake --preset tsan
  cmake --build --preset tsan --target test_concurrency test_c_api_c test_scheduler
  ctest --preset tsan
  # The request scheduler: submit / cancel / stats from test threads, events from the inference thread.
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 build/tsan/tests/test_scheduler
}

step_fuzz() {
  need_clang fuzz
  cmake --preset fuzz
  cmake --build --preset fuzz
  KESTREL_FUZZ_BUILD=build/fuzz tests/fuzz/run_fuzz.sh "$FUZZ_SECONDS"
}

for s in $STEPS; do
  section "$s"
  t=$(date +%s)
  # A subshell outside any `||` or `if`, so that errexit holds inside the step.
  set +e
  ( set -e; "step_$s" )
  rc=$?
  set -e
  case $rc in
    0) finish_step "$s" "$t" ok ;;
    3) finish_step "$s" "$t" SKIP ;;
    *) finish_step "$s" "$t" FAIL
       section "summary"; printf '%s\n' "${SUMMARY[@]}"
       fail "$s" "exit status $rc" ;;
  esac
done

section "summary"
printf '%s\n' "${SUMMARY[@]}"
echo "all steps passed in $(($(date +%s) - T0))s (root $ROOT)"
