// MergeHeap: the priority queue of candidate merges used by the SPM and BPE
// tokenizers. A 4-ary heap: half the depth of a binary heap, and the four
// children of a node share one or two cache lines, which matters because a
// long word (a megabyte of one character) keeps ~n entries in the heap and
// every pop walks it from the root.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace kestrel {

// Before(a, b) is true when a must come out of the heap before b.
template <typename T, typename Before>
class MergeHeap {
 public:
  void clear() { v_.clear(); }
  void reserve(size_t n) { v_.reserve(n); }
  bool empty() const { return v_.empty(); }

  void push(const T& x) {
    size_t i = v_.size();
    v_.push_back(x);
    while (i > 0) {
      const size_t parent = (i - 1) / 4;
      if (!before_(x, v_[parent])) break;
      v_[i] = v_[parent];
      i = parent;
    }
    v_[i] = x;
  }

  T pop() {
    T top = v_[0];
    const T last = v_.back();
    v_.pop_back();
    const size_t n = v_.size();
    if (n == 0) return top;
    size_t i = 0;
    for (;;) {
      const size_t first = 4 * i + 1;
      if (first >= n) break;
      size_t best = first;
      const size_t end = first + 4 < n ? first + 4 : n;
      for (size_t c = first + 1; c < end; ++c) {
        if (before_(v_[c], v_[best])) best = c;
      }
      if (!before_(v_[best], last)) break;
      v_[i] = v_[best];
      i = best;
    }
    v_[i] = last;
    return top;
  }

 private:
  std::vector<T> v_;
  Before before_{};
};

}  // namespace kestrel
