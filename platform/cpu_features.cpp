#include "platform/cpu_features.h"

#include <thread>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace kestrel {

namespace {

CpuFeatures detect() {
  CpuFeatures f;
  f.n_logical_cpus = static_cast<int>(std::thread::hardware_concurrency());
  if (f.n_logical_cpus < 1) f.n_logical_cpus = 1;
#if defined(__x86_64__) || defined(_M_X64)
  unsigned a, b, c, d;
  if (__get_cpuid(1, &a, &b, &c, &d)) {
    f.sse42 = c & bit_SSE4_2;
    f.fma = c & bit_FMA;
    f.f16c = c & bit_F16C;
    const bool osxsave = c & bit_OSXSAVE;
    f.avx = (c & bit_AVX) && osxsave;
    unsigned long long xcr0 = 0;
    if (osxsave) {
      unsigned lo, hi;
      __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
      xcr0 = (static_cast<unsigned long long>(hi) << 32) | lo;
    }
    const bool ymm = (xcr0 & 0x6) == 0x6;
    const bool zmm = (xcr0 & 0xe6) == 0xe6;
    f.avx = f.avx && ymm;
    f.fma = f.fma && ymm;
    f.f16c = f.f16c && ymm;
    unsigned max_subleaf7 = 0;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
      max_subleaf7 = a;
      f.avx2 = (b & bit_AVX2) && ymm;
      f.bmi2 = b & bit_BMI2;
      f.avx512f = (b & bit_AVX512F) && zmm;
      f.avx512bw = (b & bit_AVX512BW) && zmm;
      f.avx512vl = (b & bit_AVX512VL) && zmm;
      f.avx512dq = (b & bit_AVX512DQ) && zmm;
      f.avx512vnni = (c & (1u << 11)) && zmm;
    }
    if (max_subleaf7 >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) {
      f.avx_vnni = (a & (1u << 4)) && ymm;  // VEX-encoded vpdpbusd / vpdpwssd on xmm, ymm
      f.avx512bf16 = (a & (1u << 5)) && zmm;
    }
  }
  if (__get_cpuid(0x80000000, &a, &b, &c, &d) && a >= 0x80000004) {
    char brand[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
      __get_cpuid(0x80000002 + i, &a, &b, &c, &d);
      const unsigned r[4] = {a, b, c, d};
      for (int j = 0; j < 16; ++j) brand[16 * i + j] = static_cast<char>(r[j / 4] >> (8 * (j % 4)));
    }
    f.model = brand;
    while (!f.model.empty() && f.model.back() == ' ') f.model.pop_back();
    const size_t lead = f.model.find_first_not_of(' ');
    f.model.erase(0, lead == std::string::npos ? f.model.size() : lead);
  }
#elif defined(__aarch64__)
  f.neon = true;  // mandatory on arm64
#if defined(__linux__)
  const unsigned long hw = getauxval(AT_HWCAP);
#ifdef HWCAP_ASIMDDP
  f.dotprod = hw & HWCAP_ASIMDDP;
#endif
#ifdef HWCAP_FPHP
  f.fp16 = (hw & HWCAP_FPHP) && (hw & HWCAP_ASIMDHP);
#endif
#ifdef HWCAP2_I8MM
  f.i8mm = getauxval(AT_HWCAP2) & HWCAP2_I8MM;
#endif
#endif
#endif
  return f;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures kFeatures = detect();  // immutable after first call
  return kFeatures;
}

std::string CpuFeatures::to_string() const {
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(sse42, "sse4.2");
  add(avx, "avx");
  add(avx2, "avx2");
  add(fma, "fma");
  add(f16c, "f16c");
  add(bmi2, "bmi2");
  add(avx_vnni, "avx_vnni");
  add(avx512f, "avx512f");
  add(avx512bw, "avx512bw");
  add(avx512vl, "avx512vl");
  add(avx512dq, "avx512dq");
  add(avx512vnni, "avx512vnni");
  add(avx512bf16, "avx512bf16");
  add(neon, "neon");
  add(dotprod, "dotprod");
  add(fp16, "fp16");
  add(i8mm, "i8mm");
  return s.empty() ? "none" : s;
}

}  // namespace kestrel
