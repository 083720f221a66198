#include "ops/op_table.h"

namespace kestrel {

namespace {
struct OpInfo {
  const char* name;
  int min_src, max_src;
};
constexpr OpInfo kOps[] = {
#define KESTREL_OP_INFO(name, P, lo, hi) {#name, lo, hi},
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

}  // namespace kestrel
