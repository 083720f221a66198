// Tokenizer: vocabulary validation, special-token splitting, encode / decode.
// The merge algorithms live in spm.cpp and bpe.cpp.
#include "runtime/tokenizer/tokenizer.h"

#include <algorithm>
#include <climits>
#include <cstring>

#include "runtime/tokenizer/tokenizer_impl.h"
#include "runtime/tokenizer/unicode.h"

namespace kestrel {
namespace {

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's visible space

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// "<0xNN>" -> NN, -1 if text has another form.
int parse_byte_token(std::string_view text) {
  if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return -1;
  const int hi = hex_digit(text[3]), lo = hex_digit(text[4]);
  return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
}

TokenType sanitize_type(TokenType t) {
  const auto v = static_cast<int32_t>(t);
  return (v >= 0 && v <= 6) ? t : TokenType::undefined;
}

bool is_special_type(TokenType t) {
  return t == TokenType::control || t == TokenType::user_defined || t == TokenType::unknown;
}

// Text shaped like a control marker: "<...>" or "[...]" with no whitespace
// inside ("</s>", "<|EOT|>", "<｜fim▁hole｜>", "[PAD32022]"). A user-defined
// token of this shape is markup the model was trained on as a unit, never
// something a user means by typing it; plain added text (runs of spaces,
// code words) has no such brackets and stays matched everywhere.
bool markup_shaped(std::string_view s) {
  if (s.size() < 3) return false;
  const char open = s.front(), close = s.back();
  if (!((open == '<' && close == '>') || (open == '[' && close == ']'))) return false;
  for (char c : s) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') return false;
  }
  return true;
}

// Texts of tokens that end a generation turn in common chat models.
constexpr std::string_view kEogTexts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                          "<|endoftext|>", "<|eom_id|>", "<EOT>"};
constexpr std::string_view kEotTexts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
                                          "<|endoftext|>", "<EOT>",
                                          "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"};

Status build_trie(Tokenizer::Impl& t) {
  SpecialTrie& trie = t.trie;
  // Build a pointer trie first, then flatten it into sorted edge ranges.
  struct Tmp {
    int32_t token = -1;
    std::vector<std::pair<uint8_t, int32_t>> children;
  };
  std::vector<Tmp> tmp(1);
  for (size_t rank = 0; rank < t.specials.size(); ++rank) {
    std::string_view s = t.vocab.tokens[t.specials[rank]];
    int32_t node = 0;
    for (char ch : s) {
      const auto b = static_cast<uint8_t>(ch);
      auto& ch_list = tmp[node].children;
      auto it = std::find_if(ch_list.begin(), ch_list.end(), [&](auto& e) { return e.first == b; });
      if (it != ch_list.end()) {
        node = it->second;
      } else {
        const auto next = static_cast<int32_t>(tmp.size());
        ch_list.emplace_back(b, next);
        tmp.emplace_back();
        node = next;
      }
    }
    if (tmp[node].token < 0) tmp[node].token = static_cast<int32_t>(rank);
    trie.first_byte[static_cast<uint8_t>(s[0])] = true;
  }
  // Subtree counts let the occurrence scan stop walking below a node whose
  // tokens have all been found already.
  std::vector<int32_t> n_user(tmp.size(), 0), n_all(tmp.size(), 0);
  for (size_t rank = 0; rank < t.specials.size(); ++rank) {
    std::string_view s = t.vocab.tokens[t.specials[rank]];
    const bool user = !t.markup[t.specials[rank]];
    int32_t node = 0;
    n_all[0]++, n_user[0] += user;
    for (char ch : s) {
      for (auto& e : tmp[node].children) {
        if (e.first == static_cast<uint8_t>(ch)) { node = e.second; break; }
      }
      n_all[node]++, n_user[node] += user;
    }
  }
  trie.nodes.resize(tmp.size());
  for (size_t i = 0; i < tmp.size(); ++i) {
    auto& c = tmp[i].children;
    std::sort(c.begin(), c.end());
    trie.nodes[i].token = tmp[i].token;
    trie.nodes[i].n_user = n_user[i];
    trie.nodes[i].n_all = n_all[i];
    trie.nodes[i].first_child = static_cast<int32_t>(trie.edges.size());
    trie.nodes[i].n_children = static_cast<int32_t>(c.size());
    for (auto& e : c) trie.edges.push_back({e.first, e.second});
  }
  return {};
}

}  // namespace

int32_t SpecialTrie::child(int32_t node, uint8_t b) const {
  const Node& n = nodes[node];
  const Edge* first = edges.data() + n.first_child;
  const Edge* last = first + n.n_children;
  const Edge* it = std::lower_bound(first, last, b, [](const Edge& e, uint8_t v) { return e.byte < v; });
  return (it != last && it->byte == b) ? it->node : -1;
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

Expected<std::unique_ptr<Tokenizer>> Tokenizer::create(VocabData vocab) {
  auto impl = std::unique_ptr<Impl>(new (std::nothrow) Impl);
  if (!impl) return Status::out_of_memory("tokenizer");
  Impl& t = *impl;
  t.vocab = std::move(vocab);
  const VocabData& v = t.vocab;

  if (v.model == "llama") {
    t.kind = Kind::spm;
  } else if (v.model == "gpt2") {
    t.kind = Kind::bpe;
    KESTREL_TRY_ASSIGN(t.pre, pre_tokenizer_from_name(v.pre));
  } else {
    return Status::unsupported("tokenizer model '%s' is not supported", v.model.c_str());
  }

  const size_t n = v.tokens.size();
  if (n == 0) return Status::bad_file("tokenizer has no tokens");
  if (n > static_cast<size_t>(INT32_MAX)) return Status::bad_file("tokenizer has %zu tokens", n);
  if (!v.scores.empty() && v.scores.size() != n) {
    return Status::bad_file("tokenizer.ggml.scores has %zu entries for %zu tokens", v.scores.size(), n);
  }
  if (!v.types.empty() && v.types.size() != n) {
    return Status::bad_file("tokenizer.ggml.token_type has %zu entries for %zu tokens", v.types.size(), n);
  }
  const std::pair<const char*, int32_t> ids[] = {{"bos", v.bos_id}, {"eos", v.eos_id}, {"unknown", v.unk_id},
                                                 {"padding", v.pad_id}, {"eot", v.eot_id}, {"separator", v.sep_id},
                                                 {"mask", v.mask_id}};
  for (auto& [name, id] : ids) {
    if (id < -1 || id >= static_cast<int64_t>(n)) {
      return Status::bad_file("%s token id %d is outside the vocabulary of %zu tokens", name, id, n);
    }
  }
  if (v.add_bos && v.bos_id < 0) return Status::bad_file("add_bos_token is set but there is no BOS token");
  if (v.add_eos && v.eos_id < 0) return Status::bad_file("add_eos_token is set but there is no EOS token");

  t.scores = v.scores.empty() ? std::vector<float>(n, 0.0f) : v.scores;
  t.types.resize(n, TokenType::normal);
  for (size_t i = 0; i < v.types.size(); ++i) t.types[i] = sanitize_type(v.types[i]);
  t.token_to_id.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const std::string& s = v.tokens[i];
    if (t.types[i] == TokenType::byte && parse_byte_token(s) < 0) {
      return Status::bad_file("byte token %zu has malformed text (expected <0xNN>)", i);
    }
    if (s.empty()) continue;  // never matches text; its piece is empty
    if (!t.token_to_id.emplace(std::string_view(s), static_cast<int32_t>(i)).second) {
      return Status::bad_file("token %zu duplicates token %d", i, t.token_to_id[s]);
    }
    t.max_token_bytes = std::max(t.max_token_bytes, s.size());
  }

  for (int b = 0; b < 256; ++b) {
    if (t.kind == Kind::spm) {
      static const char* hex = "0123456789ABCDEF";
      const char name[6] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>'};
      int32_t id = t.find(std::string_view(name, 6));
      if (id < 0) id = t.find(std::string_view(std::string(1, static_cast<char>(b))));
      t.byte_token[b] = id;
    } else {
      t.byte_token[b] = t.find(unicode::byte_to_utf8(static_cast<uint8_t>(b)));
    }
  }

  if (t.kind == Kind::bpe) {
    if (v.merges.size() > static_cast<size_t>(INT32_MAX)) return Status::bad_file("too many merges");
    t.merges.reserve(v.merges.size());
    std::string joined;
    for (size_t i = 0; i < v.merges.size(); ++i) {
      std::string_view m = v.merges[i];
      const size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string_view::npos;
      if (sp == std::string_view::npos) return Status::bad_file("merge %zu has no separating space", i);
      const int32_t a = t.find(m.substr(0, sp)), b = t.find(m.substr(sp + 1));
      if (a < 0 || b < 0) return Status::bad_file("merge %zu names a token that is not in the vocabulary", i);
      joined.assign(m.substr(0, sp));
      joined.append(m.substr(sp + 1));
      const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
      t.merges.emplace(key, MergeInfo{static_cast<int32_t>(i), t.find(joined)});  // first rank wins
    }
  }

  // End of generation: eos, eot (given or found by text) and turn-end texts;
  // such tokens are control tokens even if the file says otherwise.
  t.eog.assign(n, 0);
  if (t.vocab.eot_id < 0) {
    for (std::string_view s : kEotTexts) {
      const int32_t id = t.find(s);
      if (id >= 0) { t.vocab.eot_id = id; break; }
    }
  }
  for (std::string_view s : kEogTexts) {
    const int32_t id = t.find(s);
    if (id >= 0) { t.eog[id] = 1; t.types[id] = TokenType::control; }
  }
  for (int32_t id : {t.vocab.eos_id, t.vocab.eot_id}) {
    if (id >= 0) t.eog[id] = 1;
  }
  if (t.vocab.eot_id >= 0) t.types[t.vocab.eot_id] = TokenType::control;

  // Which special tokens need parse_special: the file's type alone is not
  // enough (see Impl::markup), so declared special ids, end-of-generation
  // tokens and control-shaped user-defined texts count as markup too.
  t.markup.assign(n, 0);
  for (size_t i = 0; i < n; ++i) {
    const TokenType ty = t.types[i];
    t.markup[i] = ty == TokenType::control || ty == TokenType::unknown || t.eog[i] ||
                  (ty == TokenType::user_defined && markup_shaped(v.tokens[i]));
  }
  for (int32_t id : {t.vocab.bos_id, t.vocab.eos_id, t.vocab.unk_id, t.vocab.pad_id, t.vocab.eot_id, t.vocab.sep_id,
                     t.vocab.mask_id}) {
    if (id >= 0) t.markup[id] = 1;
  }
  for (auto& [key, m] : t.merges) {
    if (m.result >= 0 && t.markup[m.result]) m.result = -1;  // a merge never spells a markup token
  }
  for (size_t i = 0; i < n; ++i) {
    if (is_special_type(t.types[i]) && !v.tokens[i].empty()) t.specials.push_back(static_cast<int32_t>(i));
  }
  std::stable_sort(t.specials.begin(), t.specials.end(), [&](int32_t a, int32_t b) {
    return v.tokens[a].size() > v.tokens[b].size();
  });
  KESTREL_TRY(build_trie(t));

  auto tok = std::unique_ptr<Tokenizer>(new (std::nothrow) Tokenizer(std::move(impl)));
  if (!tok) return Status::out_of_memory("tokenizer");
  tok->clean_spaces = tok->impl_->kind == Kind::bpe && tok->impl_->pre.clean_spaces;
  return tok;
}

namespace {

struct Fragment {
  size_t offset, length;
  int32_t token;  // -1: raw text
};

// Splits text at special-token texts, in llama.cpp's order: tokens by
// decreasing text length, each taking its leftmost non-overlapping
// occurrences in the text not yet claimed. One trie pass finds which
// specials occur at all, so the per-token scans only run for those.
// parse_special_at (nullptr: parse_special for every byte): per-byte flags;
// a markup token is split out only where all its bytes are flagged.
void partition(const Tokenizer::Impl& t, std::string_view text, bool parse_special, const uint8_t* parse_special_at,
               std::vector<Fragment>& frags) {
  if (parse_special_at) parse_special = true;  // the scan finds candidates; the flags decide below
  frags.clear();
  if (text.empty()) return;
  frags.push_back({0, text.size(), -1});
  if (t.specials.empty()) return;
  auto allowed = [&](int32_t rank) { return parse_special || !t.markup[t.specials[rank]]; };
  std::vector<uint8_t> present(t.specials.size(), 0);
  // Tokens not yet found below each node; a walk stops at a node with none
  // left, so a long run of one character does not walk the trie to full depth
  // at every position once its tokens are known.
  std::vector<int32_t> left(t.trie.nodes.size());
  for (size_t i = 0; i < left.size(); ++i) left[i] = parse_special ? t.trie.nodes[i].n_all : t.trie.nodes[i].n_user;
  std::vector<int32_t> path;
  bool any = false;
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  for (size_t i = 0; i < text.size() && left[0] > 0; ++i) {
    if (!t.trie.first_byte[p[i]]) continue;
    int32_t node = 0;
    path.clear();
    for (size_t k = i; k < text.size(); ++k) {
      node = t.trie.child(node, p[k]);
      if (node < 0 || left[node] == 0) break;
      path.push_back(node);
      const int32_t rank = t.trie.nodes[node].token;
      if (rank >= 0 && allowed(rank) && !present[rank]) {
        present[rank] = 1, any = true;
        left[0]--;
        for (int32_t q : path) left[q]--;
      }
    }
  }
  if (!any) return;
  std::vector<Fragment> next;
  for (size_t rank = 0; rank < t.specials.size(); ++rank) {
    if (!present[rank]) continue;
    const int32_t id = t.specials[rank];
    std::string_view s = t.vocab.tokens[id];
    const bool check_flags = parse_special_at && t.markup[id];
    auto flagged = [&](size_t at) {
      for (size_t k = at; k < at + s.size(); ++k)
        if (!parse_special_at[k]) return false;
      return true;
    };
    next.clear();
    for (const Fragment& f : frags) {
      if (f.token >= 0) { next.push_back(f); continue; }
      size_t pos = f.offset, search = f.offset;
      const size_t end = f.offset + f.length;
      for (;;) {
        const size_t m = text.substr(search, end - search).find(s);
        if (m == std::string_view::npos) break;
        const size_t at = search + m;
        if (check_flags && !flagged(at)) {  // message content: stays text
          search = at + 1;
          continue;
        }
        if (at > pos) next.push_back({pos, at - pos, -1});
        next.push_back({0, 0, id});
        pos = search = at + s.size();
      }
      if (pos < end) next.push_back({pos, end - pos, -1});
    }
    frags.swap(next);
  }
}

}  // namespace

Status Tokenizer::encode(std::string_view text, bool add_special, bool parse_special, std::vector<int32_t>& out) const {
  return encode_impl(text, add_special, parse_special, nullptr, out);
}

Status Tokenizer::encode_marked(std::string_view text, const std::vector<uint8_t>& parse_special_at, bool add_special,
                                std::vector<int32_t>& out) const {
  if (parse_special_at.size() != text.size()) {
    return Status::invalid_argument("%zu special-token flags for a text of %zu bytes", parse_special_at.size(),
                                    text.size());
  }
  return encode_impl(text, add_special, true, parse_special_at.data(), out);
}

Status Tokenizer::encode_impl(std::string_view text, bool add_special, bool parse_special,
                              const uint8_t* parse_special_at, std::vector<int32_t>& out) const {
  const Impl& t = *impl_;
  if (text.size() > max_input_bytes) {
    return Status::too_long("text of %zu bytes is above the tokenizer cap of %zu bytes", text.size(), max_input_bytes);
  }
  std::vector<Fragment> frags;
  partition(t, text, parse_special, parse_special_at, frags);
  const size_t first = out.size();
  if (add_special && t.vocab.add_bos) out.push_back(t.vocab.bos_id);
  if (t.kind == Kind::spm) {
    bool prev_special = true;  // the first fragment gets the space prefix too
    std::string escaped;
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        out.push_back(f.token);
        prev_special = true;
        continue;
      }
      escaped.clear();
      if (t.vocab.add_space_prefix && prev_special) escaped.append(kSpmSpace);
      for (char c : text.substr(f.offset, f.length)) {
        if (c == ' ') escaped.append(kSpmSpace);
        else escaped.push_back(c);
      }
      Status st = spm_tokenize(t, escaped, out);
      if (!st.ok()) { out.resize(first); return st; }
      prev_special = false;
    }
  } else {
    for (const Fragment& f : frags) {
      if (f.token >= 0) { out.push_back(f.token); continue; }
      Status st = bpe_tokenize(t, text.substr(f.offset, f.length), out);
      if (!st.ok()) { out.resize(first); return st; }
    }
  }
  if (add_special && t.vocab.add_eos) out.push_back(t.vocab.eos_id);
  return {};
}

Status Tokenizer::token_to_piece(int32_t id, bool render_special, std::string& out) const {
  const Impl& t = *impl_;
  if (id < 0 || id >= n_vocab()) return Status::invalid_argument("token id %d outside the vocabulary", id);
  const TokenType type = t.types[id];
  const std::string& text = t.vocab.tokens[id];
  if (type == TokenType::control || type == TokenType::unknown) {
    if (render_special) out.append(text);
    return {};
  }
  if (type == TokenType::user_defined) {
    out.append(text);
    return {};
  }
  if (t.kind == Kind::spm) {
    if (type == TokenType::normal) {
      for (size_t i = 0; i < text.size();) {
        if (text.compare(i, kSpmSpace.size(), kSpmSpace) == 0) { out.push_back(' '); i += kSpmSpace.size(); }
        else out.push_back(text[i++]);
      }
    } else if (type == TokenType::byte) {
      out.push_back(static_cast<char>(parse_byte_token(text)));
    }
    return {};  // undefined / unused: nothing
  }
  if (type == TokenType::normal) {
    for (size_t i = 0; i < text.size();) {
      const unicode::Utf8Char c = unicode::decode_utf8(text, i);
      const int b = c.valid ? unicode::cp_to_byte(c.cp) : -1;
      if (b >= 0) out.push_back(static_cast<char>(b));
      else out.append(text, i, c.len);  // not a byte-level code point: keep its UTF-8
      i += c.len;
    }
  }
  return {};
}

namespace {

// HF's clean_up_tokenization_spaces, as llama.cpp applies it: drop the space
// before ? ! . , ; drop both spaces around a lone ' ; drop the space before
// 's 'm 're 've.
void clean_up_spaces(std::string& s, size_t from) {
  char* text = s.data() + from;
  int64_t n = static_cast<int64_t>(s.size() - from);
  auto pass = [&](auto body) {
    int64_t total = n ? 1 : 0;
    for (int64_t i = 1; i < n; ++i) body(i, total);
    n = total;
  };
  pass([&](int64_t& i, int64_t& total) {
    const char x = text[i];
    if (text[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) --total;
    text[total++] = x;
  });
  pass([&](int64_t& i, int64_t& total) {
    const char x = text[i];
    if (x == '\'' && i + 1 < n && text[i - 1] == ' ' && text[i + 1] == ' ') {
      --total;
      text[++i] = '\0';  // the space after is dropped and no longer counts as a space
    }
    text[total++] = x;
  });
  pass([&](int64_t& i, int64_t& total) {
    const char x = text[i];
    if (text[i - 1] == ' ' && x == '\'' && i + 1 < n) {
      const char x1 = text[i + 1];
      if (x1 == 's' || x1 == 'm') {
        --total;
      } else if (i + 2 < n) {
        const char x2 = text[i + 2];
        if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) --total;
      }
    }
    text[total++] = x;
  });
  s.resize(from + static_cast<size_t>(n));
}

}  // namespace

Status Tokenizer::decode(const std::vector<int32_t>& ids, bool render_special, std::string& out) const {
  const size_t from = out.size();
  bool strip_space = impl_->vocab.add_space_prefix && impl_->kind == Kind::spm;
  for (int32_t id : ids) {
    const size_t before = out.size();
    Status st = token_to_piece(id, render_special, out);
    if (!st.ok()) { out.resize(from); return st; }
    if (strip_space && out.size() > before && out[before] == ' ') out.erase(before, 1);
    strip_space = false;
  }
  if (clean_spaces) clean_up_spaces(out, from);
  return {};
}

int32_t Tokenizer::n_vocab() const { return static_cast<int32_t>(impl_->vocab.tokens.size()); }
int32_t Tokenizer::bos() const { return impl_->vocab.bos_id; }
int32_t Tokenizer::eos() const { return impl_->vocab.eos_id; }
bool Tokenizer::is_eog(int32_t id) const { return id >= 0 && id < n_vocab() && impl_->eog[id]; }
bool Tokenizer::add_bos() const { return impl_->vocab.add_bos; }
Tokenizer::Kind Tokenizer::kind() const { return impl_->kind; }
TokenType Tokenizer::token_type(int32_t id) const {
  return (id >= 0 && id < n_vocab()) ? impl_->types[id] : TokenType::normal;
}
std::string_view Tokenizer::token_text(int32_t id) const {
  return (id >= 0 && id < n_vocab()) ? std::string_view(impl_->vocab.tokens[id]) : std::string_view();
}
const VocabData& Tokenizer::vocab() const { return impl_->vocab; }

}  // namespace kestrel
