// Byte-level BPE over merge ranks (tokenizer.ggml.model = "gpt2").
//
// Algorithm: the text is decoded to code points (invalid bytes become
// U+FFFD), split into words by the model's pre-tokenizer, and each word's
// UTF-8 bytes become symbols in a linked list, each carrying the id of its
// byte-level token. Adjacent pairs found in the merge table go into a min-heap
// on merge rank (ties: leftmost first); the best is merged and the pairs with
// its new neighbours pushed; stale entries are recognised by size. Merges are
// keyed by token ids, so no strings are built while merging. O(n log n) per
// word, no recursion.
#include <algorithm>
#include <climits>

#include "runtime/tokenizer/merge_heap.h"
#include "runtime/tokenizer/tokenizer_impl.h"
#include "runtime/tokenizer/unicode.h"

namespace kestrel {
namespace {

struct Symbol {
  int32_t prev, next;
  uint32_t start, n;  // bytes in the word; n == 0 once merged away
  int32_t id;         // token of these bytes, -1 if none
};

struct Bigram {
  int32_t left, right;
  int32_t rank, result;
  uint32_t size;
};

// Merge order: lowest rank first, then the leftmost pair.
struct BigramBefore {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.rank < b.rank || (a.rank == b.rank && a.left < b.left);
  }
};

class Session {
 public:
  explicit Session(const Tokenizer::Impl& t) : t_(t) {}

  Status word(std::string_view bytes, std::vector<int32_t>& out) {
    if (bytes.size() > static_cast<size_t>(INT32_MAX)) {
      return Status::too_long("pre-tokenized word of %zu bytes exceeds 2^31 - 1", bytes.size());
    }
    if (t_.pre.ignore_merges) {
      encoded_.clear();
      for (char c : bytes) encoded_.append(unicode::byte_to_utf8(static_cast<uint8_t>(c)));
      const int32_t id = t_.find_text(encoded_);
      if (id >= 0) {
        out.push_back(id);
        return {};
      }
    }
    sym_.clear();
    heap_.clear();
    const auto n = static_cast<int32_t>(bytes.size());
    for (int32_t i = 0; i < n; ++i) {
      sym_.push_back({i - 1, i + 1 == n ? -1 : i + 1, static_cast<uint32_t>(i), 1,
                      t_.byte_token[static_cast<uint8_t>(bytes[i])]});
    }
    for (int32_t i = 1; i < n; ++i) try_add(i - 1, i);
    while (!heap_.empty()) {
      const Bigram bg = heap_.pop();
      Symbol& l = sym_[bg.left];
      Symbol& r = sym_[bg.right];
      if (l.n == 0 || r.n == 0 || l.n + r.n != bg.size) continue;  // stale
      l.n += r.n;
      l.id = bg.result;
      r.n = 0;
      l.next = r.next;
      if (r.next >= 0) sym_[r.next].prev = bg.left;
      try_add(l.prev, bg.left);
      try_add(bg.left, l.next);
    }
    for (int32_t i = 0; i != -1; i = sym_[i].next) {
      const Symbol& s = sym_[i];
      if (s.id >= 0) {
        out.push_back(s.id);
        continue;
      }
      // Not a token (a vocab without some byte tokens): per-byte tokens,
      // else the unknown token.
      for (uint32_t k = 0; k < s.n; ++k) {
        const int32_t b = t_.byte_token[static_cast<uint8_t>(bytes[s.start + k])];
        if (b >= 0) out.push_back(b);
        else if (t_.vocab.unk_id >= 0) out.push_back(t_.vocab.unk_id);
      }
    }
    return {};
  }

 private:
  void try_add(int32_t l, int32_t r) {
    if (l < 0 || r < 0 || sym_[l].id < 0 || sym_[r].id < 0) return;
    const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(sym_[l].id)) << 32) |
                         static_cast<uint32_t>(sym_[r].id);
    auto it = t_.merges.find(key);
    if (it == t_.merges.end()) return;
    heap_.push({l, r, it->second.rank, it->second.result, sym_[l].n + sym_[r].n});
  }

  const Tokenizer::Impl& t_;
  std::vector<Symbol> sym_;
  MergeHeap<Bigram, BigramBefore> heap_;
  std::string encoded_;
};

}  // namespace

Status bpe_tokenize(const Tokenizer::Impl& t, std::string_view text, std::vector<int32_t>& out) {
  std::vector<uint32_t> cps;
  unicode::decode_utf8(text, cps);
  std::vector<size_t> words;
  pre_tokenize(t.pre.type, cps, words);
  Session session(t);
  std::string bytes;
  size_t b = 0;
  for (size_t len : words) {
    bytes.clear();
    for (size_t i = b; i < b + len; ++i) unicode::append_utf8(cps[i], bytes);
    b += len;
    KESTREL_TRY(session.word(bytes, out));
  }
  return {};
}

}  // namespace kestrel
