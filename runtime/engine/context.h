// Context: the mutable state of one inference stream over a shared Model:
// backends and threads, the KV cache, the activation arena, the prepared
// plans of the forward pass (one per micro-batch shape and pass variant), the
// logits. One context per thread; a Model may be shared by several contexts.
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
#include "platform/log.h"
#include "platform/status.h"
#include "platform/thread_pool.h"
#include "runtime/engine/batch.h"
#include "runtime/engine/forward.h"
#include "runtime/engine/kv_cache.h"
#include "runtime/engine/plan_cache.h"
#include "runtime/model/model.h"
#include "runtime/sched/matmul_sched.h"

namespace kestrel {

// How the cpu backend picks each matmul's kernel and threads. fixed_thresholds: the
// default policy's row ranges (ops/cpu/matmul_variants.h); dynamic: calibrated cost curves
// per shape, routed by the rows of each step with hysteresis (runtime/sched/). Either
// gives the same output bits.
enum class SchedMode { fixed_thresholds, dynamic };

// Where the forward pass runs. cuda: on ContextParams::gpu (weights resident
// on the device, KV cache on the device, each plan a device executable);
// auto: the GPU when one is linked in and present, else cpu.
enum class BackendChoice { cpu, ref, cuda, auto_select };

struct ContextParams {
  int64_t n_ctx = 0;          // KV cells per sequence; 0 = min(train context, 4096)
  int64_t n_batch = 512;      // tokens per micro-batch (prompt chunks)
  int32_t n_seq_max = 1;      // distinct sequence ids
  int n_threads = 1;          // threads for single-token decoding
  int n_threads_batch = 0;    // threads for multi-token batches; 0 = n_threads
  DType kv_type = DType::F16;
  BackendChoice backend = BackendChoice::cpu;  // ref: every op on the scalar oracle
  CpuIsa isa = CpuIsa::auto_detect;
  PoolEngine pool_engine = PoolEngine::native;  // see platform/thread_pool.h
  OpExpTiers exp;             // exp tier per op (forward.h); default all exact
  LogSink log;                // where the context's messages go (platform/log.h); default nowhere
  // The GPU backend for cuda / auto_select: backend_cuda() of the separate
  // kestrel::cuda archive (the runtime does not link it); nullptr = none.
  const BackendInfo* gpu = nullptr;
  bool gpu_graphs = true;     // replay each plan's step as a device graph
  // Layers resident and run on the GPU (llama.cpp's -ngl): the last
  // n_gpu_layers repeating layers; n_layer + 1 or more (or < 0) puts the
  // embedding and output head there too (the whole model); otherwise those,
  // the first layers and their KV cells stay on the host and run on the cpu
  // backend. 0: the GPU runs nothing.
  int32_t n_gpu_layers = -1;
  bool gpu_exact_f16 = false;  // F16-weight prompt GEMMs keep x's 22 bits (BackendOptions::exact_f16_x)
  SchedMode sched = SchedMode::fixed_thresholds;  // dynamic: only where the cpu backend runs the plans
  // dynamic: the calibration cache directory; nullptr = calib_dir() (runtime/sched/calib_cache.h), "" = no cache.
  const char* calib_dir = nullptr;
  // Called after each micro-batch with its tokens and the tokens that kept
  // logits (kestrel_context_params::step_callback); nullptr = none.
  void (*on_step)(void* user, int32_t n_tokens, int32_t n_outputs) = nullptr;
  void* on_step_user = nullptr;
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

  // Runs the batch (split into micro-batches) with the pass `variant`
  // (default: the whole model, every logit). Validates ids, positions and
  // sequence ids first; on error the cache is as before the call.
  // variant.draw: uniforms holds one value in [0, 1) per logits row of the
  // batch (in order), the draws of the sample op.
  Status decode(const BatchView& batch, const PassVariant& variant = {}, const float* uniforms = nullptr);
  // Logits of the i-th token that asked for them in the last decode [n_vocab];
  // nullptr after a decode with variant.ids_out.
  const float* logits(int32_t i) const;
  // After a decode with variant.ids_out: the i-th logits row's argmax (-1 for
  // a row with a NaN or infinite logit), computed where the logits were; -2
  // when i is out of range or the last decode returned logits.
  int32_t greedy_id(int32_t i) const;
  // Whether the plans run on a device (logits computed there: greedy ids save
  // copying them back).
  bool on_device() const { return !primary_->is_host(); }
  // Rows [first, first + n) of those logits as an F32 [n_vocab, n] tensor, in
  // the memory of the backend that wrote them (ops such as spec_verify read it).
  Tensor logits_tensor(int32_t first, int32_t n);
  int32_t n_outputs() const { return n_outputs_; }
  // Micro-batches so far whose plan was built, or whose device graph was
  // captured, in the decode that ran them: their time is a shape's one-off
  // cost, not a step's (a policy timing steps leaves such a decode out).
  uint64_t n_cold() const { return n_cold_; }
  // Runs one op where the context's logits live (host memory: the cpu
  // backend, the ref backend taking what it lacks). Validates the call.
  Status run_op(const OpCall& call);

  KvCache& kv() { return kv_; }
  const Model& model() const { return model_; }
  const ContextParams& params() const { return params_; }
  ContextStats& stats() { return stats_; }
  const Forward& forward() const { return forward_; }
  const PlanCache& plans() const { return plans_; }
  // The context's worker threads (shared by run_op()).
  ThreadPool& pool() { return *pool_; }
  const Logger& log() const { return log_; }
  int64_t n_ctx() const { return kv_.n_ctx(); }
  // The backend that runs the plans ("cuda", "cpu-avx512", "ref"); with
  // layers split (n_gpu_layers), the one that runs the layers from split_layer().
  const char* backend_name() const { return primary_->name(); }
  // The first layer the GPU runs when the model is split between host and
  // GPU; 0 otherwise (the whole model on one backend).
  int split_layer() const { return split_; }
  bool split() const { return split_mode_; }
  // The dynamic matmul scheduler; nullptr with fixed thresholds.
  const MatmulScheduler* sched() const { return sched_.get(); }

 private:
  explicit Context(const Model& model) : model_(model) {}
  Status validate(const BatchView& batch) const;
  Status pick_backends(const ContextParams& p, const BackendOptions& bo);
  Status upload_weights();
  Status start_sched(int max_threads);
  Status run_micro_batch(const BatchView& mb, bool last_chunk, const PassVariant& variant, const float* uniforms);
  void set_n_threads(int n);

  const Model& model_;
  ContextParams params_;
  Logger log_;
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<MatmulScheduler> sched_;  // routes cpu_'s matmuls (dynamic scheduling)
  std::unique_ptr<Backend> gpu_, cpu_, ref_;
  Backend* primary_ = nullptr;  // runs the plans (gpu, cpu, or ref when asked for)
  Backend* host_ = nullptr;     // runs run_op() on host logits (cpu, else ref)
  int n_threads_now_ = 0;
  bool split_mode_ = false;  // front / back / head plans (PassPart)
  int split_ = 0;
  KvCache kv_;
  Forward forward_;
  PlanCache plans_;
  std::vector<float> logits_;  // [n_batch][n_vocab]
  std::vector<int32_t> ids_;   // [n_batch] greedy ids (PassVariant::ids_out)
  int32_t n_outputs_ = 0;
  bool ids_only_ = false;      // the last decode returned ids, not logits
  uint64_t n_cold_ = 0;
  ContextStats stats_;
};

}  // namespace kestrel
