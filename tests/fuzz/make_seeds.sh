#!/usr/bin/env bash
# Generates the fuzz seed corpora from ../shared/models (nothing is committed):
#   tests/fuzz/make_seeds.sh [build_dir] [out_dir]
# build_dir: the fuzz build (default build/fuzz, holding fuzz/fuzz_seeds);
# out_dir: default <build_dir>/seeds, one folder per target.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build/fuzz}
OUT=${2:-$BUILD/seeds}
SHARED=${KESTREL_SHARED_DIR:-$(pwd)/../shared}
[ -x "$BUILD/fuzz/fuzz_seeds" ] || { echo "make_seeds.sh: $BUILD/fuzz/fuzz_seeds not built" >&2; exit 2; }
rm -rf "$OUT"
mkdir -p "$OUT"
"$BUILD/fuzz/fuzz_seeds" "$SHARED" "$OUT"
for d in "$OUT"/*/; do printf '%-16s %4d seeds\n' "$(basename "$d")" "$(find "$d" -type f | wc -l)"; done
