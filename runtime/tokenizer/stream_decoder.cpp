// StreamDecoder: detokenizes generated ids without ever emitting part of a
// UTF-8 character (see tokenizer.h).
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/tokenizer/unicode.h"

namespace kestrel {

StreamDecoder::StreamDecoder(const Tokenizer& t, bool render_special) : tok_(&t), render_special_(render_special) {}

Status StreamDecoder::push(int32_t id, std::string& out) {
  const size_t before = pending_.size();
  Status st = tok_->token_to_piece(id, render_special_, pending_);
  if (!st.ok()) {
    pending_.resize(before);
    return st;
  }
  // Emit everything up to an unfinished (still completable) character at the end.
  const size_t ready = unicode::complete_utf8_prefix(pending_);
  unicode::append_sanitized_utf8(std::string_view(pending_).substr(0, ready), out);
  pending_.erase(0, ready);
  return {};
}

void StreamDecoder::flush(std::string& out) {
  unicode::append_sanitized_utf8(pending_, out);
  pending_.clear();
}

void StreamDecoder::reset() { pending_.clear(); }

}  // namespace kestrel
