// Draft tokens from a row of logits, shared by the single-sequence decoder
// (speculative.h) and the server's speculating slots (serve/spec_slots.h): the
// greedy pick, the stochastic draw from the distribution spec_verify's exact
// rule assumes for the draft, and the draft probability p_min compares.
//
//   int32_t t = temperature > 0 ? spec_draw(row, V, n_scored, temperature, top_k, top_p, u, work)
//                               : spec_argmax(row, n_scored);
//   if (spec_draft_prob(row, n_scored, t, temperature) < p_min) ... stop drafting
#pragma once

#include <cstdint>

namespace kestrel {

// The id of the largest of row[0, n); the lowest id on ties (spec_verify's
// greedy rule and the greedy sampler's).
int32_t spec_argmax(const float* row, int64_t n);

// A draw from softmax(row / temperature) over the top-k / top-p set of
// row[0, n) (spec_keep_threshold: the set spec_verify computes from the same
// row), among ids [0, n_scored) (n_scored <= n; the ids past it hold logits
// whose exp() is 0). u in [0, 1) picks the draw: the first id whose cumulative
// weight exceeds u times the total. temperature > 0; work: n floats of scratch.
int32_t spec_draw(const float* row, int64_t n, int64_t n_scored, float temperature, int32_t top_k, float top_p,
                  double u, float* work);

// The probability of id under softmax(row / temperature) over ids
// [0, n_scored) (temperature <= 0: at temperature 1, the greedy draft's top-1
// probability). Entries more than 20 (in units of the temperature) below the
// id's logit are left out of the sum: each weighs under e^-20 = 2e-9 of the
// id, at most 3e-4 in all over 152k ids, which moves the probability compared
// with p_min by less than that (a length heuristic; exactness does not depend
// on it).
float spec_draft_prob(const float* row, int64_t n_scored, int32_t id, float temperature);

}  // namespace kestrel
