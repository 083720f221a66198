#!/usr/bin/env bash
# A/B of two kestrel binaries on the same GGUF files, alternating in one run:
# `kestrel bench --no-mmap` (pp and tg at each thread count), ROUNDS rounds of
# A then B (then B then A, so neither always runs on a warmer machine), each
# cell the median over its rounds' samples, and the ratio B / A.
#
#   bench/plan_ab.sh OLD_KESTREL NEW_KESTREL MODEL [MODEL ...]
#
# Environment: THREADS (default 1,2), ROUNDS (default 3), REPS per bench call
# (default 3), PP (default 512), TG (default 128), EXTRA (more `kestrel bench`
# flags for both). Used for the execution-plans change: the eager forward (old)
# against the recorded plan (new); with AMX machines, KESTREL_AMX=0 in the
# environment keeps the matmul kernels the same on both sides.
set -euo pipefail

a=${1:?usage: $0 OLD_KESTREL NEW_KESTREL MODEL...}
b=${2:?usage: $0 OLD_KESTREL NEW_KESTREL MODEL...}
shift 2
threads=${THREADS:-1,2}
rounds=${ROUNDS:-3}
reps=${REPS:-3}
pp=${PP:-512}
tg=${TG:-128}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for m in "$@"; do
  for r in $(seq 1 "$rounds"); do
    order="a b"
    [ $((r % 2)) -eq 0 ] && order="b a"
    for side in $order; do
      bin=$a
      [ "$side" = b ] && bin=$b
      # shellcheck disable=SC2086
      "$bin" bench -m "$m" -p "$pp" -n "$tg" -t "$threads" -r "$reps" --no-mmap -o json ${EXTRA:-} \
        2>/dev/null > "$tmp/$side.$r.json"
    done
  done
  python3 - "$tmp" "$rounds" "$m" <<'PY'
import json, statistics, sys, os
tmp, rounds, model = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cells = {}
for side in "ab":
    for r in range(1, rounds + 1):
        for row in json.load(open(os.path.join(tmp, f"{side}.{r}.json"))):
            cells.setdefault((row["test"], row["n_threads"]), {}).setdefault(side, []).extend(row["samples_ts"])
print(f"\n{os.path.basename(model)}")
print("| test | threads | old t/s | new t/s | new / old |")
print("|---|---|---|---|---|")
for (test, th), v in sorted(cells.items(), key=lambda kv: (kv[0][0].startswith("tg"), kv[0][1])):
    ma, mb = statistics.median(v["a"]), statistics.median(v["b"])
    print(f"| {test} | {th} | {ma:.2f} | {mb:.2f} | {mb / ma:.3f} |")
PY
done
