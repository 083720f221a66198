// Context: the mutable state of one inference stream over a shared Model:
// backends and threads, the KV cache, the activation arena, the logits.
// One context per thread; a Model may be shared by several contexts.
//
//   ContextParams cp; cp.n_ctx = 512; cp.n_threads = 2;
//   KESTREL_TRY_ASSIGN(auto ctx, Context::create(*model, cp));
//   KESTREL_TRY(ctx->decode(batch));
//   const float* logits = ctx->logits(0);
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "ops/backend.h"
#include "platform/status.h"
#include "platform/thread_pool.h"
#include "runtime/engine/batch.h"
#include "runtime/engine/forward.h"
#include "runtime/engine/kv_cache.h"
#include "runtime/engine/op_runner.h"
#include "runtime/model/model.h"

namespace kestrel {

enum class BackendChoice { cpu, ref };

struct ContextParams {
  int64_t n_ctx = 0;          // cells in the KV cache; 0 = min(train context, 4096)
  int64_t n_batch = 512;      // tokens per micro-batch (prompt chunks)
  int32_t n_seq_max = 1;      // distinct sequence ids
  int n_threads = 1;          // threads for single-token decoding
  int n_threads_batch = 0;    // threads for multi-token batches; 0 = n_threads
  DType kv_type = DType::F16;
  BackendChoice backend = BackendChoice::cpu;  // ref: every op on the scalar oracle
  CpuIsa isa = CpuIsa::auto_detect;
  PoolEngine pool_engine = PoolEngine::native;  // see platform/thread_pool.h
  OpExpTiers exp;             // exp tier per op (forward.h); default all exact
};

struct ContextStats {
  int64_t n_prompt_tokens = 0;  // tokens in batches of more than one token
  int64_t n_eval_tokens = 0;    // single-token batches
  int64_t t_prompt_ns = 0;
  int64_t t_eval_ns = 0;
};

class Context {
 public:
  static Expected<std::unique_ptr<Context>> create(const Model& model, const ContextParams& params);
  ~Context();

  // Runs the batch (split into micro-batches). Validates ids, positions and
  // sequence ids first; on error the cache is as before the call.
  Status decode(const BatchView& batch);
  // Logits of the i-th token that asked for them in the last decode [n_vocab].
  const float* logits(int32_t i) const;
  int32_t n_outputs() const { return n_outputs_; }

  KvCache& kv() { return kv_; }
  const Model& model() const { return model_; }
  const ContextParams& params() const { return params_; }
  ContextStats& stats() { return stats_; }
  Forward& forward() { return forward_; }
  // The context's worker threads (ops run outside decode(), e.g. spec_verify, share them).
  ThreadPool& pool() { return *pool_; }
  int64_t n_ctx() const { return kv_.n_ctx(); }

 private:
  explicit Context(const Model& model) : model_(model) {}
  Status validate(const BatchView& batch) const;

  const Model& model_;
  ContextParams params_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<Backend> cpu_, ref_;
  OpRunner ops_;
  KvCache kv_;
  Forward forward_;
  std::vector<float> logits_;  // [n_batch][n_vocab]
  int32_t n_outputs_ = 0;
  ContextStats stats_;
};

}  // namespace kestrel
