// Scalar reference kernels: readable, single-threaded, the oracle for every
// other backend. One function per op, called after validate_op() accepted the
// call, so shapes and types are already known good.
#pragma once

#include "ops/op_table.h"

namespace kestrel::ref {

#define KESTREL_REF_DECL(name, P, lo, hi) void name(const OpCall& call);
KESTREL_OPS(KESTREL_REF_DECL)
#undef KESTREL_REF_DECL

}  // namespace kestrel::ref
