// Plans on the GPU: a Plan (ops/plan.h) prepared into a device executable,
// what CudaBackend::prepare() returns.
//
// prepare (once): every node is validated and must be one the cuda backend
// runs (a device plan has no host fallback: a node it cannot run fails the
// prepare, naming the node); each root of role activation / input / kv /
// output gets a device buffer of its size; every node tensor inside a root is
// rebased to the same offset in that buffer; the weights (memory outside
// every root) are uploaded once; kv roots start as their host memory's
// contents; kernel scratch is reserved.
// execute (each step): the ids of get_rows nodes that come from an input root
// are checked on the host; the input roots are uploaded from their host
// memory; the nodes are enqueued through cuda::dispatch() with no per-op
// device selection, pointer query, validation, allocation or read-back; the
// output roots are downloaded to where bind_output() put them; one stream
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
