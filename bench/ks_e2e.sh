#!/usr/bin/env bash
# End to end: prompt and generation tokens/s of a model whose attention and FFN
# projections are Kronecker-sparse factor chains against its dense original, in one
# run on one machine (kestrel bench --no-mmap, same threads, same prompt/gen sizes).
#
# The dense model is a random-weight TinyLlama-shape GGUF (bench/make_model: dim 2048,
# ffn 5632, 22 layers, 32/4 heads, vocab 32000) in WEIGHTS; `kestrel ks-factorize`
# replaces every attn_q/k/v/output and ffn_gate/up/down by a PATTERN chain (default
# monarch4: a block-diagonal factor of 4 blocks, then a stride-4 factor) stored in the
# same float type. The weights are random, so only speed means anything here; the
# factorization's accuracy on a real model is what `kestrel ks-factorize --ppl-file`
# reports.
#
#   bench/ks_e2e.sh                                    # build/release/bin
#   BIN_DIR=build/h-ks/bin THREADS=2 REPS=3 bench/ks_e2e.sh
#   BIN_DIR=build/cuda/bin DEVICE=cuda FACTORS=random bench/ks_e2e.sh   # on the GPU
#
# Environment: BIN_DIR (kestrel + make_model), THREADS (2), REPS (3), PP (128), TG (32),
# WEIGHTS (f16: f32|f16|bf16, the factors' type too), PATTERN (monarch4), ITERS (0: one
# least-squares solve; the values do not change the speed), OUT (work dir, kept),
# DEVICE (cpu: kestrel bench --device), FACTORS (fit: kestrel ks-factorize; random:
# make_model --ks-monarch N writes the same chains with random factors, skipping the
# fit, which takes minutes on one core; PATTERN monarchN only).
# Prints the load average before and after: the figures are only as quiet as the
# machine was.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN_DIR=${BIN_DIR:-$ROOT/build/release/bin}
THREADS=${THREADS:-2}
REPS=${REPS:-3}
PP=${PP:-128}
TG=${TG:-32}
WEIGHTS=${WEIGHTS:-f16}
PATTERN=${PATTERN:-monarch4}
ITERS=${ITERS:-0}
OUT=${OUT:-$(mktemp -d /tmp/ks_e2e.XXXXXX)}
DEVICE=${DEVICE:-cpu}
FACTORS=${FACTORS:-fit}
mkdir -p "$OUT"

for b in kestrel make_model; do
  [ -x "$BIN_DIR/$b" ] || { echo "ks_e2e: no $b in $BIN_DIR (set BIN_DIR)" >&2; exit 2; }
done
case $WEIGHTS in f32|f16|bf16) ;; *) echo "ks_e2e: WEIGHTS must be f32, f16 or bf16" >&2; exit 2 ;; esac

dense=$OUT/tinyllama-$WEIGHTS.gguf
ks=$OUT/tinyllama-$WEIGHTS-ks-$PATTERN.gguf
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -f "$dense" ] || "$BIN_DIR/make_model" --shape tinyllama --weights "$WEIGHTS" -t "$THREADS" -o "$dense"
if [ ! -f "$ks" ] && [ "$FACTORS" = random ]; then
  case $PATTERN in monarch[0-9]*) ;; *) echo "ks_e2e: FACTORS=random needs PATTERN monarchN" >&2; exit 2 ;; esac
  "$BIN_DIR/make_model" --shape tinyllama --weights "$WEIGHTS" -t "$THREADS" --ks-monarch "${PATTERN#monarch}" -o "$ks"
fi
if [ ! -f "$ks" ]; then
  "$BIN_DIR/kestrel" ks-factorize -m "$dense" -o "$ks" --pattern "$PATTERN" --iters "$ITERS" --type "$WEIGHTS" \
    > "$OUT/factorize.log"
  tail -n 3 "$OUT/factorize.log"
fi
echo "files: dense $(du -h "$dense" | cut -f1), ks $(du -h "$ks" | cut -f1)"

# Interleaved: dense, ks, dense, ks ... one repetition each, so that a noisy
# machine slows both alike; the table takes the median per model and test.
for r in $(seq 1 "$REPS"); do
  for m in dense ks; do
    f=$dense; [ $m = ks ] && f=$ks
    "$BIN_DIR/kestrel" bench -m "$f" --no-mmap -p "$PP" -n "$TG" -t "$THREADS" --device "$DEVICE" -r 1 -o json > "$OUT/$m.$r.json"
  done
done

python3 - "$OUT" "$REPS" "$PP" "$TG" "$THREADS" "$PATTERN" "$WEIGHTS" "$DEVICE" <<'EOF'
import json, statistics, sys
out, reps, pp, tg, threads, pattern, weights, device = sys.argv[1:9]
def tps(model, kind):
    vals = []
    for r in range(1, int(reps) + 1):
        for row in json.load(open(f"{out}/{model}.{r}.json")):
            if (kind == "pp" and row.get("n_prompt", 0) > 0) or (kind == "tg" and row.get("n_gen", 0) > 0):
                vals.append(row["avg_ts"])
    return statistics.median(vals)
print(f"\nTinyLlama shape, {weights} weights, {threads} threads, device {device}, median of {reps} interleaved runs")
print(f"| model | pp{pp} t/s | tg{tg} t/s |")
print("|---|---|---|")
d = {k: tps("dense", k) for k in ("pp", "tg")}
s = {k: tps("ks", k) for k in ("pp", "tg")}
print(f"| dense | {d['pp']:.2f} | {d['tg']:.2f} |")
print(f"| KS {pattern} (attn + ffn) | {s['pp']:.2f} | {s['tg']:.2f} |")
print(f"| ratio | {s['pp']/d['pp']:.2f}x | {s['tg']/d['tg']:.2f}x |")
EOF
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "work dir: $OUT"
