// CPU feature detection, read once from the processor (cpuid / hwcaps).
//
//   const CpuFeatures& f = cpu_features();
//   if (f.avx2 && f.fma) ...
#pragma once

#include <string>

namespace kestrel {

struct CpuFeatures {
  // x86-64
  bool sse42 = false, avx = false, avx2 = false, fma = false, f16c = false, bmi2 = false, avx_vnni = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512vnni = false,
       avx512bf16 = false;
  // arm64
  bool neon = false, dotprod = false, fp16 = false, i8mm = false;
  int n_logical_cpus = 1;
  // The processor's name ("AMD EPYC 9R14 ..."; x86 brand string, "" where none is read).
  std::string model;
  // "avx2 fma f16c ..." for logs.
  std::string to_string() const;
};

// Detected once; safe to call from any thread.
const CpuFeatures& cpu_features();

}  // namespace kestrel
