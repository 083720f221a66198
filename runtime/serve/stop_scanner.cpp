// Stop strings are matched on text, not tokens: a stop string may begin in
// the middle of one token and end inside another.
#include "runtime/serve/stop_scanner.h"

#include <algorithm>

namespace kestrel::serve {

size_t utf8_boundary_before(std::string_view text, size_t end) {
  end = std::min(end, text.size());
  auto is_cont = [&](size_t i) { return (static_cast<unsigned char>(text[i]) & 0xC0u) == 0x80u; };
  // The lead byte of the last character before end, past at most three
  // continuation bytes; the cut goes before that character when it is not
  // complete by end. Bytes that are no character at all pass as they are.
  size_t k = 0;
  while (k < 3 && end > k && is_cont(end - k - 1)) ++k;
  if (end == k) return end;
  const size_t lead = end - k - 1;
  const unsigned char b = static_cast<unsigned char>(text[lead]);
  const size_t need = b < 0x80u ? 1 : (b & 0xE0u) == 0xC0u ? 2 : (b & 0xF0u) == 0xE0u ? 3 : (b & 0xF8u) == 0xF0u ? 4 : 1;
  return k + 1 < need ? lead : end;
}

void StopScanner::reset(std::vector<std::string> stops) {
  stops_.clear();
  max_stop_ = 0;
  for (auto& s : stops)
    if (!s.empty()) {
      max_stop_ = std::max(max_stop_, s.size());
      stops_.push_back(std::move(s));
    }
  text_.clear();
  released_ = 0;
}

StopScanner::Result StopScanner::push(std::string_view piece) {
  Result r;
  // A match lies wholly in the unreleased tail (nothing that could start one
  // was released) and it was not complete before this piece, so it ends in it.
  const size_t old_size = text_.size();
  text_.append(piece);
  if (stops_.empty()) {
    r.release_end = utf8_boundary_before(text_, text_.size());
    return r;
  }
  size_t first = std::string::npos;
  const size_t from = released_;
  for (const std::string& s : stops_) {
    const size_t scan_from = std::max(from, old_size >= s.size() ? old_size - s.size() + 1 : size_t{0});
    const size_t at = text_.find(s, scan_from);
    if (at != std::string::npos && at < first) first = at;
  }
  if (first != std::string::npos) {
    text_.resize(first);
    r.stopped = true;
    r.release_end = first;
    return r;
  }
  // Hold back the longest tail that is a proper prefix of some stop string.
  size_t hold = 0;
  const size_t tail_max = std::min(text_.size() - released_, max_stop_ - 1);
  for (size_t n = tail_max; n > 0 && hold == 0; --n) {
    const std::string_view tail(text_.data() + text_.size() - n, n);
    for (const std::string& s : stops_)
      if (s.size() > n && std::string_view(s).substr(0, n) == tail) {
        hold = n;
        break;
      }
  }
  r.release_end = utf8_boundary_before(text_, text_.size() - hold);
  if (r.release_end < released_) r.release_end = released_;
  return r;
}

}  // namespace kestrel::serve
