// kestrel_version() and kestrel_system_info() of the C API.
#include <string>

#include "kestrel/kestrel.h"
#include "ops/backend.h"
#include "platform/amx.h"
#include "platform/cpu_features.h"

namespace {

// project(kestrel VERSION ...) in CMakeLists.txt, passed in by runtime/CMakeLists.txt;
// the consumer check in tests/run_all.sh compares it with the installed package's.
constexpr const char* kVersion = KESTREL_VERSION_STRING;

std::string build_system_info() {
  std::string s = "kestrel ";
  s += kVersion;
  s += " | cpu: ";
  s += kestrel::cpu_features().to_string();
  s += " | compiled variants:";
#if defined(KESTREL_ISA_SSE42)
  s += " sse4.2";
#endif
#if defined(KESTREL_ISA_AVX2)
  s += " avx2";
#endif
#if defined(KESTREL_ISA_AVXVNNI)
  s += " avxvnni";
#endif
#if defined(KESTREL_ISA_AVX512)
  s += " avx512";
#endif
#if defined(KESTREL_ISA_NEON)
  s += " neon";
#endif
#if defined(KESTREL_ISA_NEONDOT)
  s += " neondot";
#endif
#if defined(KESTREL_ISA_NEONI8MM)
  s += " neoni8mm";
#endif
  s += " scalar | selected: ";
  kestrel::CpuIsa best[8];
  const int n = kestrel::cpu_isa_available(best, 8);
  s += n > 0 ? kestrel::cpu_isa_name(best[0]) : "scalar";
#if defined(KESTREL_HAVE_AMX)
  // Whether the AMX matmuls run, and if not why (refused permission, KESTREL_AMX=0, no
  // tile unit): a refusal is never an error, only a slower kernel.
  const kestrel::AmxState& amx = kestrel::amx_state();
  s += " | amx: ";
  s += amx.int8_usable() ? (amx.bf16_usable() ? "int8 bf16" : "int8") : "not used (";
  if (!amx.int8_usable()) s += std::string(amx.reason) + ")";
#elif defined(__x86_64__)
  s += " | amx: not in this build";
#endif
#if defined(KESTREL_HAVE_OPENMP)
  s += " | openmp";
#endif
  return s;
}

}  // namespace

extern "C" const char* kestrel_version(void) { return kVersion; }

extern "C" const char* kestrel_system_info(void) {
  // Built once (thread-safe static init), immutable afterwards. If building it
  // throws (out of memory), report that instead of letting it escape into C.
  static const std::string kInfo = [] {
    try {
      return build_system_info();
    } catch (...) {
      return std::string();
    }
  }();
  return kInfo.empty() ? "kestrel (system info unavailable)" : kInfo.c_str();
}
