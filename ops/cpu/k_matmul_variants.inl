// CPU matmul, part 6: this ISA's table of named matmul variants (included by k_matmul.inl;
// the naming scheme and the API are in ops/cpu/matmul_variants.h).
//
// One entry per (weight type, path of k_matmul.inl) that this ISA compiles, in the order
// of the default policy's row ranges; paths the policy never picks for a type follow with
// the empty range {0, 0}. The ranges come from the same constants as k_matmul (kX4MinRows,
// kGemmMt), and tests/test_matmul_variants.cpp checks that the variant whose range holds M
// gives bitwise what the backend's run() gives.
#define KESTREL_MM_STR2(x) #x
#define KESTREL_MM_STR(x) KESTREL_MM_STR2(x)
#define KESTREL_MM_CAT2(a, b) a##b
#define KESTREL_MM_CAT(a, b) KESTREL_MM_CAT2(a, b)

namespace kestrel::cpu::KESTREL_ISA_NS {
namespace mm {

inline bool isa_available() { return isa_runs_here(CpuIsa::KESTREL_ISA_NS); }

// dtype_name() at compile time.
constexpr const char* wtype_tag(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::Q8_0: return "q8_0";
    case DType::Q4_0: return "q4_0";
    case DType::Q5_0: return "q5_0";
    case DType::Q4_1: return "q4_1";
    case DType::Q5_1: return "q5_1";
    case DType::Q4_K: return "q4_K";
    case DType::Q5_K: return "q5_K";
    case DType::Q6_K: return "q6_K";
    default: return "?";
  }
}

struct VariantSpec {
  DType t = DType::F32;
  Path p = Path::dot4;
  int32_t lo = 0, hi = 0;
  int32_t bits = 0;  // bits_group
};

constexpr int kMaxVariants = 48;

struct VariantSpecs {
  VariantSpec v[kMaxVariants];
  int n = 0;
  constexpr void add(DType t, Path p, int32_t lo, int32_t hi, int32_t bits) {
    v[n++] = VariantSpec{t, p, lo, hi, bits};
  }
};

constexpr VariantSpecs make_specs() {
  VariantSpecs s;
  constexpr int32_t kInf = kRowsUnbounded;
  for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0}) {
    if (has_vnni_tiles(t)) {
      // The few-rows tile does the decode tile's float operations per output too.
      s.add(t, Path::rows, 1, static_cast<int32_t>(kVnniMinRows - 1), 1);
      s.add(t, Path::vnni, static_cast<int32_t>(kVnniMinRows), kInf, 1);
      s.add(t, Path::x4, 0, 0, 1);
      s.add(t, Path::dot4, 0, 0, 0);
      s.add(t, Path::dot1, 0, 0, 2);
    } else if (has_i8mm_tiles(t)) {
      // The i8mm tile does the row kernel's float operations per output (both sum each
      // output block by block in one chain).
      s.add(t, Path::dot4, 1, static_cast<int32_t>(kI8mmMinRows - 1), 1);
      s.add(t, Path::i8mm, static_cast<int32_t>(kI8mmMinRows), kInf, 1);
      s.add(t, Path::dot1, 0, 0, 1);
    } else if (has_q8_tiles(t)) {
      // The two tiles do the same float operations per output. The x86 row kernel keeps
      // 4 accumulator chains for one activation row and 2 for several, so its rows
      // depend on the group they fall in (dot4x1) and differ from the tiles' (dot1x1).
      s.add(t, Path::rows, 1, static_cast<int32_t>(kX4MinRows - 1), 1);
      s.add(t, Path::x4, static_cast<int32_t>(kX4MinRows), kInf, 1);
      s.add(t, Path::dot4, 0, 0, 0);
      s.add(t, Path::dot1, 0, 0, 2);
    } else {
      s.add(t, Path::dot4, 1, kInf, 1);
      s.add(t, Path::dot1, 0, 0, 1);
    }
  }
  for (DType t : {DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    if (has_i8mm_tiles(t)) {
      s.add(t, Path::dot4, 1, static_cast<int32_t>(kI8mmMinRows - 1), 1);
      s.add(t, Path::i8mm, static_cast<int32_t>(kI8mmMinRows), kInf, 1);
    } else {
      s.add(t, Path::dot4, 1, kInf, 1);
    }
    s.add(t, Path::dot1, 0, 0, 1);
  }
  // Float weights: the GEMM and the 4 x 3 tiles each sum an output in one order whatever
  // the tile it falls in, in different orders; the row kernel's order depends on the group.
  for (DType t : {DType::F32, DType::F16, DType::BF16}) {
    s.add(t, Path::dot4, 1, 1, 0);
    s.add(t, Path::ftile, 2, static_cast<int32_t>(kGemmMt - 1), 2);
    s.add(t, Path::gemm, static_cast<int32_t>(kGemmMt), kInf, 1);
    s.add(t, Path::dot1, 0, 0, 3);
  }
  return s;
}
inline constexpr VariantSpecs kSpecs = make_specs();

// Name: the path's kind and its micro-tile, MR activation rows x NR weight rows.
constexpr VariantName spec_name(const VariantSpec& v) {
  const char* isa = KESTREL_MM_STR(KESTREL_ISA_NS);
  const char* w = wtype_tag(v.t);
  switch (v.p) {
    case Path::dot1: return variant_name(w, isa, "dot", 1, 1);
    case Path::dot4: return variant_name(w, isa, "dot", row_group(v.t), 1);
    case Path::rows: return variant_name(w, isa, "tile", 1, v.t == DType::Q8_0 ? 4 : 8);
    case Path::x4: return variant_name(w, isa, "tile", 4, 2);
    case Path::ftile: return variant_name(w, isa, "tile", 4, 3);
    case Path::gemm: return variant_name(w, isa, "gemm", kGemmMR, kGemmNR);
    case Path::vnni: return variant_name(w, isa, "vnni", 4, 4);
    case Path::i8mm: return variant_name(w, isa, "mmla", 2 * kI8mmPairs, 2);
  }
  return {};
}

constexpr KernelFn path_fn(Path p) {
  switch (p) {
    case Path::dot1: return &matmul_run<Path::dot1>;
    case Path::dot4: return &matmul_run<Path::dot4>;
    case Path::rows: return &matmul_run<Path::rows>;
    case Path::x4: return &matmul_run<Path::x4>;
    case Path::ftile: return &matmul_run<Path::ftile>;
    case Path::gemm: return &matmul_run<Path::gemm>;
    case Path::vnni: return &matmul_vnni;
    case Path::i8mm: return &matmul_i8mm;
  }
  return nullptr;
}

struct VariantNames {
  VariantName v[kMaxVariants];
};
constexpr VariantNames make_names() {
  VariantNames out;
  for (int i = 0; i < kSpecs.n; ++i) out.v[i] = spec_name(kSpecs.v[i]);
  return out;
}
inline constexpr VariantNames kNames = make_names();

struct VariantArray {
  MatmulVariant v[kMaxVariants];
};
constexpr VariantArray make_variants() {
  VariantArray out{};
  for (int i = 0; i < kSpecs.n; ++i) {
    const VariantSpec& s = kSpecs.v[i];
    out.v[i] = MatmulVariant{kNames.v[i].s, s.t, s.lo, s.hi, &isa_available, path_fn(s.p), s.bits};
  }
  return out;
}
inline constexpr VariantArray kVariants = make_variants();

}  // namespace mm
}  // namespace kestrel::cpu::KESTREL_ISA_NS

namespace kestrel::cpu {
MatmulVariantList KESTREL_MM_CAT(matmul_variants_, KESTREL_ISA_NS)() {
  namespace isa = KESTREL_ISA_NS;
  return MatmulVariantList{isa::mm::kVariants.v, isa::mm::kSpecs.n};
}
}  // namespace kestrel::cpu

#undef KESTREL_MM_CAT
#undef KESTREL_MM_CAT2
#undef KESTREL_MM_STR
#undef KESTREL_MM_STR2
