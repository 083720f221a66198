#!/usr/bin/env bash
# Fidelity against llama.cpp (not CI): perplexity, KL divergence both ways
# through llama.cpp's logits file, and quantization.
#
#   bench/ppl_compare.sh LLAMA_BIN_DIR [MODEL.gguf ...]
#
# LLAMA_BIN_DIR holds llama-perplexity and llama-quantize. For each model (the
# shared stories260K, the synthetic F32 models `make_model --arch A --shape
# tiny` writes for every architecture it knows, and the GGUFs given):
#   - llama-perplexity and kestrel perplexity on TEXT with the same -c / --chunks,
#     each writing its logits file (--kl-divergence-base);
#   - kestrel --kl-divergence against llama.cpp's file, and llama-perplexity
#     --kl-divergence against kestrel's: mean KLD and same-top share each way;
#   - llama.cpp against itself with another micro-batch (-ub $FLOOR_UB) and another
#     flash-attention setting (-fa off): how far llama.cpp's own logits move when
#     only its batching changes, the floor under any comparison of two runtimes.
# Then `kestrel quantize` and `llama-quantize` of the same F32 / F16 inputs (the
# synthetic llama, stories260K and QUANT_INPUTS) to each type: whether every
# tensor got the same type, whether every tensor's data is byte-identical
# (bench/gguf_tensor_diff.py), and the perplexity of both outputs measured by
# kestrel and by llama-perplexity (which so also reads kestrel's files).
# Prints markdown tables; raw outputs stay in OUT.
#
# Environment: KESTREL (build/release/bin/kestrel), MAKE_MODEL (beside it),
# TEXT (tests/data/ppl_text.txt), CTX (128), CHUNKS (4), BIG_CTX / BIG_CHUNKS
# for the GGUFs given (512 / 4), THREADS (2), ARCHS (every --arch of make_model),
# QTYPES (Q8_0 Q4_0 Q5_0 Q4_1 Q5_1 Q4_K_M Q5_K_M Q6_K F16 BF16), QUANT_INPUTS (more
# "name=path=ctx=chunks" inputs to quantize, e.g. an F16 GGUF), PPL_TABLE (0:
# skip the perplexity / KL table), FLOOR_UB (32: llama.cpp's micro-batch for its
# run against itself), OUT (a temporary folder).
set -u
LLAMA=${1:?usage: bench/ppl_compare.sh LLAMA_BIN_DIR [MODEL.gguf ...]}
shift
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KESTREL=${KESTREL:-$ROOT/build/release/bin/kestrel}
MAKE_MODEL=${MAKE_MODEL:-$(dirname "$KESTREL")/make_model}
TEXT=${TEXT:-$ROOT/tests/data/ppl_text.txt}
CTX=${CTX:-128}
CHUNKS=${CHUNKS:-4}
BIG_CTX=${BIG_CTX:-512}
BIG_CHUNKS=${BIG_CHUNKS:-4}
THREADS=${THREADS:-2}
ARCHS=${ARCHS:-llama llama3 qwen2 qwen3 phi3 gemma2 gemma3}
QTYPES=${QTYPES:-Q8_0 Q4_0 Q5_0 Q4_1 Q5_1 Q4_K_M Q5_K_M Q6_K F16 BF16}
QUANT_INPUTS=${QUANT_INPUTS:-}
PPL_TABLE=${PPL_TABLE:-1}
FLOOR_UB=${FLOOR_UB:-32}
OUT=${OUT:-$(mktemp -d /tmp/ppl_compare.XXXXXX)}
STORIES=$ROOT/../shared/models/stories260K/stories260K.gguf
mkdir -p "$OUT"
for b in "$KESTREL" "$LLAMA/llama-perplexity" "$LLAMA/llama-quantize"; do
  [ -x "$b" ] || { echo "missing $b" >&2; exit 2; }
done

# Tensor name -> type of a GGUF file, one per line (header only, no numpy).
gguf_types() {
  python3 - "$1" <<'EOF'
import struct, sys
f = open(sys.argv[1], 'rb')
def rd(fmt): return struct.unpack('<' + fmt, f.read(struct.calcsize('<' + fmt)))[0]
def rstr(): return f.read(rd('Q')).decode('utf-8', 'replace')
sizes = {0: 'B', 1: 'b', 2: 'H', 3: 'h', 4: 'I', 5: 'i', 6: 'f', 7: '?', 10: 'Q', 11: 'q', 12: 'd'}
def skip(t):
    if t == 8: rstr()
    elif t == 9:
        et, n = rd('I'), rd('Q')
        for _ in range(n): skip(et)
    else: rd(sizes[t])
assert f.read(4) == b'GGUF'
rd('I'); nt = rd('Q'); nk = rd('Q')
for _ in range(nk): rstr(); skip(rd('I'))
names = {0: 'f32', 1: 'f16', 2: 'q4_0', 3: 'q4_1', 6: 'q5_0', 7: 'q5_1', 8: 'q8_0', 12: 'q4_K', 13: 'q5_K', 14: 'q6_K', 30: 'bf16'}
for _ in range(nt):
    name = rstr(); nd = rd('I')
    for _ in range(nd): rd('Q')
    t = rd('I'); rd('Q')
    print(name, names.get(t, str(t)))
EOF
}

num() { sed -nE "$1" "$2" | head -1; }

models=()
[ -f "$STORIES" ] && models+=("stories260K=$STORIES=$CTX=$CHUNKS")
if [ -x "$MAKE_MODEL" ]; then
  for a in $ARCHS; do
    if "$MAKE_MODEL" --arch "$a" --shape tiny --weights f32 -o "$OUT/synth-$a-f32.gguf" > /dev/null 2>&1; then
      models+=("synthetic $a f32=$OUT/synth-$a-f32.gguf=$CTX=$CHUNKS")
    else
      echo "# SKIP synthetic $a: make_model cannot write it" >&2
    fi
  done
fi
for m in "$@"; do models+=("$(basename "$m")=$m=$BIG_CTX=$BIG_CHUNKS"); done

rows=()
[ "$PPL_TABLE" = 1 ] || models=()
for entry in "${models[@]}"; do
  IFS='=' read -r name path ctx chunks <<< "$entry"
  tag=$(echo "$name" | tr ' /' '__')
  lk=$OUT/$tag.llama.kld kk=$OUT/$tag.kestrel.kld
  # llama.cpp's logger writes from a thread of its own; a run whose log lost its
  # last lines (it happens, exit status 0) is run again, up to four times.
  for try in 1 2 3 4; do
    "$LLAMA/llama-perplexity" -m "$path" -f "$TEXT" -c "$ctx" --chunks "$chunks" -t "$THREADS" \
      --kl-divergence-base "$lk" > "$OUT/$tag.llama.ppl" 2>&1
    grep -q "Final estimate" "$OUT/$tag.llama.ppl" && break
  done
  "$KESTREL" perplexity -m "$path" -f "$TEXT" -c "$ctx" --chunks "$chunks" -t "$THREADS" \
    --kl-divergence-base "$kk" > "$OUT/$tag.kestrel.ppl" 2>&1
  "$KESTREL" perplexity -m "$path" -f "$TEXT" -t "$THREADS" --kl-divergence-base "$lk" --kl-divergence \
    > "$OUT/$tag.kestrel_vs_llama.kl" 2>&1
  "$LLAMA/llama-perplexity" -m "$path" -t "$THREADS" -c "$ctx" --kl-divergence-base "$kk" --kl-divergence \
    > "$OUT/$tag.llama_vs_kestrel.kl" 2>&1
  "$LLAMA/llama-perplexity" -m "$path" -t "$THREADS" -c "$ctx" -ub "$FLOOR_UB" --kl-divergence-base "$lk" \
    --kl-divergence > "$OUT/$tag.llama_ub_vs_llama.kl" 2>&1
  "$LLAMA/llama-perplexity" -m "$path" -t "$THREADS" -c "$ctx" -fa off --kl-divergence-base "$lk" \
    --kl-divergence > "$OUT/$tag.llama_nofa_vs_llama.kl" 2>&1
  pl=$(num 's/.*Final estimate: PPL = ([0-9.]+).*/\1/p' "$OUT/$tag.llama.ppl")
  pk=$(num 's/.*Final estimate: PPL = ([0-9.]+).*/\1/p' "$OUT/$tag.kestrel.ppl")
  diff=-
  [ -n "$pl" ] && [ -n "$pk" ] && diff=$(awk -v a="$pk" -v b="$pl" 'BEGIN{printf "%+.3f%%", 100*(a/b-1)}')
  k1=$(num 's/^Mean +KLD: +([-0-9.]+).*/\1/p' "$OUT/$tag.kestrel_vs_llama.kl")
  t1=$(num 's/^Same top p: +([0-9.]+).*/\1/p' "$OUT/$tag.kestrel_vs_llama.kl")
  k2=$(num 's/.*Mean +KLD: +([-0-9.]+).*/\1/p' "$OUT/$tag.llama_vs_kestrel.kl")
  t2=$(num 's/.*Same top p: +([0-9.]+).*/\1/p' "$OUT/$tag.llama_vs_kestrel.kl")
  k3=$(num 's/.*Mean +KLD: +([-0-9.]+).*/\1/p' "$OUT/$tag.llama_ub_vs_llama.kl")
  t3=$(num 's/.*Same top p: +([0-9.]+).*/\1/p' "$OUT/$tag.llama_ub_vs_llama.kl")
  k4=$(num 's/.*Mean +KLD: +([-0-9.]+).*/\1/p' "$OUT/$tag.llama_nofa_vs_llama.kl")
  t4=$(num 's/.*Same top p: +([0-9.]+).*/\1/p' "$OUT/$tag.llama_nofa_vs_llama.kl")
  rows+=("| $name | $ctx x $chunks | ${pl:-fail} | ${pk:-fail} | $diff | ${k1:-fail} | ${t1:-fail}% | ${k2:-fail} | ${t2:-fail}% | ${k3:-fail} / ${t3:-fail}% | ${k4:-fail} / ${t4:-fail}% |")
  echo "# done: $name" >&2
done

[ "$PPL_TABLE" = 1 ] && echo "| model | -c x chunks | llama.cpp PPL | kestrel PPL | kestrel / llama.cpp | KLD kestrel vs llama.cpp base | same top | KLD llama.cpp vs kestrel base | same top | llama.cpp -ub $FLOOR_UB vs llama.cpp: KLD / same top | llama.cpp -fa off vs llama.cpp |"
[ "$PPL_TABLE" = 1 ] && echo "|---|---|---|---|---|---|---|---|---|---|---|" && printf '%s\n' "${rows[@]}"

qrows=()
qinputs=()
[ -f "$OUT/synth-llama-f32.gguf" ] && qinputs+=("synthetic llama f32=$OUT/synth-llama-f32.gguf=$CTX=$CHUNKS")
[ -f "$STORIES" ] && qinputs+=("stories260K=$STORIES=$CTX=$CHUNKS")
for q in $QUANT_INPUTS; do qinputs+=("$q"); done
for entry in "${qinputs[@]}"; do
  IFS='=' read -r name path ctx chunks <<< "$entry"
  tag=$(echo "$name" | tr ' /' '__')
  for q in $QTYPES; do
    ko=$OUT/$tag.$q.kestrel.gguf lo=$OUT/$tag.$q.llama.gguf
    "$KESTREL" quantize "$path" "$ko" "$q" -t "$THREADS" > "$OUT/$tag.$q.kq.log" 2>&1 || ko=
    "$LLAMA/llama-quantize" "$path" "$lo" "$q" "$THREADS" > "$OUT/$tag.$q.lq.log" 2>&1 || lo=
    if [ -z "$ko" ] || [ -z "$lo" ]; then
      why=$( [ -z "$ko" ] && [ -z "$lo" ] && echo "both refuse" || echo "kestrel ${ko:+ok}${ko:-refuses}, llama.cpp ${lo:+ok}${lo:-refuses}")
      qrows+=("| $name | $q | $why | - | - | - | - | - | - |")
      continue
    fi
    same=$(diff <(gguf_types "$ko") <(gguf_types "$lo") > "$OUT/$tag.$q.types.diff" && echo "all" ||
           echo "$(grep -c '^<' "$OUT/$tag.$q.types.diff") differ")
    if python3 "$ROOT/bench/gguf_tensor_diff.py" "$ko" "$lo" > "$OUT/$tag.$q.data.diff"; then
      same="$same; data identical"
    else
      same="$same; data differs: $(grep -c 'differ' "$OUT/$tag.$q.data.diff") types"
    fi
    kppl() { "$KESTREL" perplexity -m "$1" -f "$TEXT" -c "$ctx" --chunks "$chunks" -t "$THREADS" 2>/dev/null |
             sed -nE 's/.*Final estimate: PPL = ([0-9.]+).*/\1/p'; }
    lppl() { for try in 1 2 3 4; do
               "$LLAMA/llama-perplexity" -m "$1" -f "$TEXT" -c "$ctx" --chunks "$chunks" -t "$THREADS" > "$1.lppl" 2>&1
               grep -q "Final estimate" "$1.lppl" && break
             done
             sed -nE 's/.*Final estimate: PPL = ([0-9.]+).*/\1/p' "$1.lppl"; }
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a > 0 && b > 0) printf "%+.3f%%", 100*(a/b-1); else print "-" }'; }
    a=$(kppl "$ko") b=$(kppl "$lo") la=$(lppl "$ko") lb=$(lppl "$lo")
    qrows+=("| $name | $q | $same | ${a:-fail} | ${b:-fail} | $(ratio "$a" "$b") | ${la:-fail} | ${lb:-fail} | $(ratio "$la" "$lb") |")
  done
done
echo
echo "| input | type | same tensor types | kestrel PPL of kestrel quantize | of llama-quantize | difference | llama.cpp PPL of kestrel quantize | of llama-quantize | difference |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${qrows[@]}"
echo
echo "# raw outputs: $OUT"
