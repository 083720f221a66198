// StopScanner: the text a request has generated so far, and how much of it may
// be handed to the client. A stop string must never reach the client, not
// even its first bytes: text that could be the start of a stop string is held
// back until the next piece shows whether it is one. Released text always ends
// on a UTF-8 character boundary.
//
//   StopScanner s;
//   s.reset({"\n\n", "END"});
//   StopScanner::Result r = s.push(piece);      // after each token's text
//   send(s.text().substr(s.released(), r.release_end - s.released()));
//   s.mark_released(r.release_end);
//   if (r.stopped) finish("stop");              // text() is cut at the match
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace kestrel::serve {

class StopScanner {
 public:
  struct Result {
    size_t release_end = 0;  // bytes of text() that may be released (>= released())
    bool stopped = false;    // a stop string matched; text() now ends where it began
  };

  // Forgets the text; empty strings in stops are ignored.
  void reset(std::vector<std::string> stops);
  // Appends a piece of generated text and scans for the stop strings.
  Result push(std::string_view piece);
  const std::string& text() const { return text_; }
  size_t released() const { return released_; }
  void mark_released(size_t end) { released_ = end; }

 private:
  std::vector<std::string> stops_;
  size_t max_stop_ = 0;  // longest stop string, bytes
  std::string text_;
  size_t released_ = 0;
};

// The largest n <= end such that text[0, n) ends on a UTF-8 character
// boundary (text[n] is not a continuation byte).
size_t utf8_boundary_before(std::string_view text, size_t end);

}  // namespace kestrel::serve
