#include "platform/timer.h"

#include <ctime>

namespace kestrel {

int64_t now_ns() {
  // CLOCK_MONOTONIC is vDSO-backed on Linux (tens of ns per call) and unaffected
  // by settimeofday / NTP steps, which is what durations need.
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

}  // namespace kestrel
