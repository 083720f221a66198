#include "platform/amx.h"

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace kestrel {

namespace {

#if defined(__x86_64__) && defined(__linux__)
// From asm/prctl.h and the kernel's xstate numbering (not in every libc's headers).
constexpr int kArchGetXcompPerm = 0x1022;
constexpr int kArchReqXcompPerm = 0x1023;
constexpr unsigned long kXfeatureXtiledata = 18;

bool tiledata_permitted() {
  unsigned long long mask = 0;
  if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &mask) != 0) return false;
  return (mask >> kXfeatureXtiledata) & 1;
}
#endif

bool env_disables_amx() {
  const char* v = std::getenv("KESTREL_AMX");
  return v && (std::strcmp(v, "0") == 0 || std::strcmp(v, "off") == 0);
}

}  // namespace

AmxState amx_probe(bool simulate_refusal) {
  AmxState s;
#if defined(__x86_64__) && defined(__linux__)
  unsigned a, b, c, d;
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    s.cpu_tile = (d >> 24) & 1;
    s.cpu_int8 = (d >> 25) & 1;
    s.cpu_bf16 = (d >> 22) & 1;
  }
  if (!s.cpu_tile) {
    s.reason = "the CPU has no AMX tile unit";
    return s;
  }
  bool osxsave = false;
  if (__get_cpuid(1, &a, &b, &c, &d)) osxsave = (c >> 27) & 1;
  if (osxsave) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    const unsigned long long xcr0 = (static_cast<unsigned long long>(hi) << 32) | lo;
    s.os_state = (xcr0 & (3ull << 17)) == (3ull << 17);
  }
  if (!s.os_state) {
    s.reason = "the OS does not enable the AMX tile state (XCR0)";
    return s;
  }
  if (simulate_refusal) {
    s.reason = "the OS refused the AMX tile-data permission (simulated)";
    return s;
  }
  // Granting is idempotent; a second request (another probe) returns 0 again.
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0 || !tiledata_permitted()) {
    s.reason = "the OS refused the AMX tile-data permission (arch_prctl)";
    return s;
  }
  s.permitted = true;
#else
  (void)simulate_refusal;
  s.reason = "AMX exists only on x86-64 Linux";
#endif
  return s;
}

const AmxState& amx_state() {
  static const AmxState kState = [] {
    if (!env_disables_amx()) return amx_probe(false);
    AmxState s = amx_probe(true);
    if (s.os_state) s.reason = "disabled by KESTREL_AMX=0";
    return s;
  }();
  return kState;
}

}  // namespace kestrel
