#include "ops/op_table.h"

#include <type_traits>

namespace kestrel {

namespace {
struct OpInfo {
  const char* name;
  int min_src, max_src;
  size_t params_size;
};
constexpr OpInfo kOps[] = {
#define KESTREL_OP_INFO(name, P, lo, hi) {#name, lo, hi, std::is_empty_v<P> ? 0 : sizeof(P)},
    KESTREL_OPS(KESTREL_OP_INFO)
#undef KESTREL_OP_INFO
};
}  // namespace

const char* op_name(OpId op) {
  const int i = static_cast<int>(op);
  return i >= 0 && i < kOpCount ? kOps[i].name : "unknown";
}
int op_min_src(OpId op) { return kOps[static_cast<int>(op)].min_src; }
int op_max_src(OpId op) { return kOps[static_cast<int>(op)].max_src; }
size_t op_params_size(OpId op) { return kOps[static_cast<int>(op)].params_size; }

}  // namespace kestrel
