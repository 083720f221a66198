// Plans on the GPU: a Plan (ops/plan.h) prepared into a device executable,
// what CudaBackend::prepare() returns.
//
// prepare (once): every node is validated and must be one the cuda backend
// runs (a device plan has no host fallback: a node it cannot run fails the
// prepare, naming the node). Roots: one already in this device's memory (a KV
// cache allocated through the backend) is used in place; activation, input
// and output roots get the backend's shared step memory for their host
// address (cuda_residency.h); any other root is copied up. Weights (memory
// outside every root) resolve to the backend's resident copy
// (Backend::make_resident), else are uploaded for this executable. Kernel
// scratch is reserved. Two rewrites are decided once here: a residual add
// whose sum the next node normalises runs as one add + rms_norm kernel
// (bitwise the two ops' result), and a Q4_0 / Q8_0 decode matmul on the same x
// as the matmul before it reuses that one's 8-bit copy of x.
// execute (each step): the ids of get_rows nodes that come from an input root
// are checked on the host; the input roots are uploaded from their host
// memory; the nodes run through cuda::dispatch() with no per-op device
// selection, pointer query, validation, allocation or read-back: node by
// node on the first step, then (unless the backend was created with
// graphs = false) as a CUDA graph captured on the second step and replayed;
// the output roots are downloaded to where bind_output() put them; one stream
// synchronization ends the step and reports asynchronous faults as a Status.
//
//   auto gpu = backend_cuda().create({});
//   KESTREL_TRY_ASSIGN(auto exe, (*gpu)->prepare(plan, nullptr));
//   ... write the step's inputs into the input roots' host memory ...
//   KESTREL_TRY(exe->bind_output(out_root, logits));
//   KESTREL_TRY(exe->execute());   // logits hold the step's output
//
// The executable uses the backend's stream, cuBLAS handle and scratch: it
// must not outlive the backend, nor run concurrently with other work on it.
#pragma once

#include <memory>

#include "ops/backend.h"
#include "ops/cuda/cuda_context.h"
#include "ops/plan.h"

namespace kestrel::cuda {

// `backend` is the cuda backend whose context is ctx (its supports() decides
// which nodes run).
Expected<std::unique_ptr<Executable>> prepare_plan(Context& ctx, const Backend& backend, const Plan& plan);

}  // namespace kestrel::cuda
