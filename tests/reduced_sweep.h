// Whether a test should run its reduced sweep: under an emulator
// (KESTREL_TEST_EMULATED, set by the aarch64 test preset) or under sanitizers
// (KESTREL_TEST_REDUCED, set by the asan test preset), where the full sweeps
// take many minutes. A reduced sweep still covers every kernel variant, weight
// type and tile edge (tile - 1, tile, tile + 1); it drops repeats of the same
// case at more sizes.
#pragma once

#include <cstdlib>

namespace kestrel::test {

inline bool reduced_sweep() {
  return std::getenv("KESTREL_TEST_EMULATED") != nullptr || std::getenv("KESTREL_TEST_REDUCED") != nullptr;
}

}  // namespace kestrel::test
