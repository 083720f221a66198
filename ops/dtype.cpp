#include "ops/dtype.h"

namespace kestrel {

namespace {
constexpr DTypeTraits kF32{"f32", 1, 4, false, true};
constexpr DTypeTraits kF16{"f16", 1, 2, false, true};
constexpr DTypeTraits kBF16{"bf16", 1, 2, false, true};
constexpr DTypeTraits kQ4_0{"q4_0", kQK, sizeof(BlockQ4_0), true, true};
constexpr DTypeTraits kQ4_1{"q4_1", kQK, sizeof(BlockQ4_1), true, true};
constexpr DTypeTraits kQ5_1{"q5_1", kQK, sizeof(BlockQ5_1), true, true};
constexpr DTypeTraits kQ5_0{"q5_0", kQK, sizeof(BlockQ5_0), true, true};
constexpr DTypeTraits kQ8_0{"q8_0", kQK, sizeof(BlockQ8_0), true, true};
constexpr DTypeTraits kQ4_K{"q4_K", kQKK, sizeof(BlockQ4_K), true, true};
constexpr DTypeTraits kQ5_K{"q5_K", kQKK, sizeof(BlockQ5_K), true, true};
constexpr DTypeTraits kQ6_K{"q6_K", kQKK, sizeof(BlockQ6_K), true, true};
constexpr DTypeTraits kQ8_K{"q8_K", kQKK, sizeof(BlockQ8_K), true, false};
constexpr DTypeTraits kI8{"i8", 1, 1, false, false};
constexpr DTypeTraits kI16{"i16", 1, 2, false, false};
constexpr DTypeTraits kI32{"i32", 1, 4, false, false};
}  // namespace

const DTypeTraits* dtype_traits_from_id(uint32_t id) {
  switch (id) {
    case 0: return &kF32;
    case 1: return &kF16;
    case 2: return &kQ4_0;
    case 3: return &kQ4_1;
    case 6: return &kQ5_0;
    case 7: return &kQ5_1;
    case 8: return &kQ8_0;
    case 12: return &kQ4_K;
    case 13: return &kQ5_K;
    case 14: return &kQ6_K;
    case 15: return &kQ8_K;
    case 24: return &kI8;
    case 25: return &kI16;
    case 26: return &kI32;
    case 30: return &kBF16;
    default: return nullptr;
  }
}

const DTypeTraits* dtype_traits(DType t) { return dtype_traits_from_id(static_cast<uint32_t>(t)); }

const char* dtype_name(DType t) {
  const DTypeTraits* tr = dtype_traits(t);
  return tr ? tr->name : "unknown";
}

}  // namespace kestrel
