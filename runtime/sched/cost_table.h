// The measured cost curves of one weight-bearing matmul shape: for each candidate (a named
// cpu matmul variant, or the default policy, on some number of threads), the time of one
// call at each of a few activation row counts M (1, 2, 4, ..., 512). The scheduler reads
// a candidate's time at any M off its curve (cost_at) and routes by it (route.h).
//
//   ShapeCosts c;
//   c.shape = {DType::Q4_K, 1536, 8960};
//   c.cands = {{v_dot8, 2}, {v_dot1, 1}};
//   c.rows = {1, 2, 4};
//   c.ns = {30e3, 32e3, 40e3,    // v_dot8 at M = 1, 2, 4
//           45e3, 80e3, 150e3};  // v_dot1
//   const double t = cost_at(c, 0, 3);  // 36e3: between M = 2 and 4
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ops/cpu/matmul_variants.h"
#include "ops/dtype.h"

namespace kestrel {

// A weight matrix [k, n] of type wtype: n output rows of k elements.
struct MatmulShape {
  DType wtype = DType::F32;
  int64_t k = 0, n = 0;
  bool operator==(const MatmulShape& o) const { return wtype == o.wtype && k == o.k && n == o.n; }
  bool operator<(const MatmulShape& o) const {
    if (wtype != o.wtype) return static_cast<int>(wtype) < static_cast<int>(o.wtype);
    return k != o.k ? k < o.k : n < o.n;
  }
};

// One way to run a matmul: variant (nullptr: the default policy's pick at each M) on
// n_threads threads (>= 1).
struct MatmulCandidate {
  const MatmulVariant* variant = nullptr;
  int n_threads = 1;
  bool operator==(const MatmulCandidate& o) const { return variant == o.variant && n_threads == o.n_threads; }
};

// "dot8x1/t2", "policy/t1": the variant's kind and tile (the part of its name after the
// ISA) and the threads.
std::string candidate_label(const MatmulCandidate& c);

struct ShapeCosts {
  MatmulShape shape;
  std::vector<MatmulCandidate> cands;
  std::vector<int64_t> rows;  // increasing activation row counts, >= 1
  std::vector<double> ns;     // (rows.size(), cands.size()): ns[c * rows.size() + r], nanoseconds per call

  double at(size_t cand, size_t row) const { return ns[cand * rows.size() + row]; }
};

// Candidate `cand`'s time at m rows: its measured time at a measured count; between two,
// on the line between them; past the last, that time plus the last segment's slope per
// row; below the first, the first time. Assumes a well-formed table (cost_table_valid).
double cost_at(const ShapeCosts& c, size_t cand, int64_t m);

// Whether the table is usable: candidates non-empty, rows increasing from >= 1, one
// finite positive time per (candidate, row).
bool cost_table_valid(const ShapeCosts& c);

}  // namespace kestrel
