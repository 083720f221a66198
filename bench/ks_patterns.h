// The Kronecker-sparse pattern set of bench_ks_matmul (also run by tests/test_ks_matmul.cpp).
//
// Patterns (a, b, c, d) from the set studied for KS layers: a in {1, 4, 16, 32, 64};
// b, c in {48, 64, 96, 128, 192, 256, 384, 512, 768, 1024} with b = c, b = 4c or c = 4b;
// d in {1, 2, 3, 4, 8, 12, 16, 32}; restricted to factors whose input and output widths
// (a*c*d, a*b*d) are transformer widths 768, 1024, 3072 or 4096. The enumeration of all
// 92 such patterns was thinned to every other one, keeping all with a >= 16: 56 patterns.
#pragma once

#include <cstdint>

namespace kestrel::bench {

struct KsPattern {
  int32_t a, b, c, d;
};

inline constexpr KsPattern kKsPatterns[] = {
    {1, 48, 48, 16},  {1, 192, 48, 16}, {1, 64, 64, 16},   {1, 256, 64, 12},   {1, 96, 96, 8},    {1, 384, 96, 8},
    {1, 128, 128, 32}, {1, 192, 192, 4}, {1, 768, 192, 4},  {1, 256, 256, 3},   {1, 256, 256, 12}, {1, 1024, 256, 3},
    {1, 64, 256, 12}, {1, 384, 384, 2}, {1, 96, 384, 8},   {1, 512, 512, 8},   {1, 768, 768, 1},  {1, 192, 768, 4},
    {1, 1024, 1024, 3}, {1, 256, 1024, 3}, {4, 48, 48, 4}, {4, 192, 48, 4},    {4, 64, 64, 4},    {4, 64, 64, 16},
    {4, 256, 64, 4},  {4, 96, 96, 8},   {4, 128, 128, 2},  {4, 512, 128, 2},   {4, 192, 192, 4},  {4, 48, 192, 4},
    {4, 256, 256, 3}, {4, 1024, 256, 1}, {4, 64, 256, 4},  {4, 96, 384, 2},    {4, 128, 512, 2},  {4, 192, 768, 1},
    {4, 256, 1024, 1}, {16, 48, 48, 1}, {16, 48, 48, 4},   {16, 192, 48, 1},   {16, 64, 64, 1},   {16, 64, 64, 3},
    {16, 64, 64, 4},  {16, 256, 64, 1}, {16, 96, 96, 2},   {16, 128, 128, 2},  {16, 192, 192, 1}, {16, 48, 192, 1},
    {16, 256, 256, 1}, {16, 64, 256, 1}, {32, 48, 48, 2},  {32, 64, 64, 2},    {32, 96, 96, 1},   {32, 128, 128, 1},
    {64, 48, 48, 1},  {64, 64, 64, 1},
};

}  // namespace kestrel::bench
