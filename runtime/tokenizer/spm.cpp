// SentencePiece-style BPE over token scores (tokenizer.ggml.model = "llama").
//
// Algorithm: the fragment is split into UTF-8 characters, kept as a doubly
// linked list of symbols. Every adjacent pair whose concatenation is a token
// goes into a max-heap keyed by that token's score (ties: leftmost first). The
// best pair is merged, and the pairs it forms with its new neighbours are
// pushed; entries made stale by earlier merges are recognised by their size
// and skipped. O(n log n) in the fragment length, no recursion. Symbols that
// are not tokens at the end fall back to <0xNN> byte tokens, or to the unknown
// token when the vocab has no byte tokens.
#include <algorithm>
#include <climits>

#include "runtime/tokenizer/merge_heap.h"
#include "runtime/tokenizer/tokenizer_impl.h"
#include "runtime/tokenizer/unicode.h"

namespace kestrel {
namespace {

struct Symbol {
  int32_t prev, next;
  uint32_t start, n;  // bytes in the fragment; n == 0 once merged away
};

struct Bigram {
  int32_t left, right;
  float score;
  uint32_t size;
};

// Merge order: higher score first, then the leftmost pair.
struct BigramBefore {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.score > b.score || (a.score == b.score && a.left < b.left);
  }
};

}  // namespace

Status spm_tokenize(const Tokenizer::Impl& t, std::string_view text, std::vector<int32_t>& out) {
  if (text.empty()) return {};
  if (text.size() > static_cast<size_t>(INT32_MAX)) {
    return Status::too_long("SPM fragment of %zu bytes exceeds 2^31 - 1", text.size());
  }
  std::vector<Symbol> sym;
  sym.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const uint32_t len = unicode::decode_utf8(text, i).len;
    const auto idx = static_cast<int32_t>(sym.size());
    sym.push_back({idx - 1, i + len == text.size() ? -1 : idx + 1, static_cast<uint32_t>(i), len});
    i += len;
  }

  MergeHeap<Bigram, BigramBefore> heap;
  heap.reserve(sym.size());
  auto try_add = [&](int32_t l, int32_t r) {
    if (l < 0 || r < 0) return;
    const uint32_t size = sym[l].n + sym[r].n;
    if (size > t.max_token_bytes) return;
    const int32_t id = t.find_text(text.substr(sym[l].start, size));
    if (id < 0) return;
    heap.push({l, r, t.scores[id], size});
  };
  for (int32_t i = 1; i < static_cast<int32_t>(sym.size()); ++i) try_add(i - 1, i);

  while (!heap.empty()) {
    const Bigram bg = heap.pop();
    Symbol& l = sym[bg.left];
    Symbol& r = sym[bg.right];
    if (l.n == 0 || r.n == 0 || l.n + r.n != bg.size) continue;  // stale
    l.n += r.n;
    r.n = 0;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = bg.left;
    try_add(l.prev, bg.left);
    try_add(bg.left, l.next);
  }

  for (int32_t i = 0; i != -1; i = sym[i].next) {
    const Symbol& s = sym[i];
    const int32_t id = t.find_text(text.substr(s.start, s.n));
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    bool all_bytes = true;
    for (uint32_t k = 0; k < s.n; ++k) all_bytes &= t.byte_token[static_cast<uint8_t>(text[s.start + k])] >= 0;
    if (all_bytes) {
      for (uint32_t k = 0; k < s.n; ++k) out.push_back(t.byte_token[static_cast<uint8_t>(text[s.start + k])]);
    } else if (t.vocab.unk_id >= 0) {
      out.push_back(t.vocab.unk_id);
    }
  }
  return {};
}

}  // namespace kestrel
