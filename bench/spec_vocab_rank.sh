#!/usr/bin/env bash
# Is a prefix of the vocabulary a frequency-ranked subset? For each text, the
# share of its tokens whose id is below N, for several N: the acceptance a
# vocabulary-subset draft head (kestrel run --draft-vocab N) can keep at most.
# BPE vocabularies (gpt2 / qwen2 / llama3 style) number their tokens in merge
# order, and earlier merges are the more frequent pairs, so small ids should
# cover most of any text; sentencepiece vocabularies are scored, not merged,
# and this checks them the same way.
#
#   bench/spec_vocab_rank.sh KESTREL_BINARY MODEL.gguf [TEXT_FILE ...]
# Without text files: README.md (prose) and a Python standard-library module
# (code). Each file's first 30000 characters are tokenized.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
kestrel=${1:?usage: $0 KESTREL_BINARY MODEL.gguf [TEXT_FILE ...]}
model=${2:?usage: $0 KESTREL_BINARY MODEL.gguf [TEXT_FILE ...]}
shift 2
files=("$@")
if [ ${#files[@]} -eq 0 ]; then
  files=("$here/README.md" "$(python3 -c 'import argparse; print(argparse.__file__)')")
fi
cuts=${CUTS:-4096,8192,16384,32768,65536}
echo "model $(basename "$model"); share of tokens with id < N"
echo
echo "| text | tokens | $(echo "$cuts" | sed 's/,/ | /g') |"
echo "|---|---|$(echo "$cuts" | sed 's/[0-9]*/---/g; s/,/|/g')|"
for f in "${files[@]}"; do
  text=$(head -c 30000 "$f")
  "$kestrel" tokenize -m "$model" --no-bos --ids -p "$text" | python3 -c '
import sys, json
ids = json.loads(sys.stdin.read())
cuts = [int(c) for c in sys.argv[2].split(",")]
cells = " | ".join("%.1f%%" % (100.0 * sum(i < c for i in ids) / len(ids)) for c in cuts)
print("| %s | %d | %s |" % (sys.argv[1], len(ids), cells))' "$(basename "$f")" "$cuts"
done
