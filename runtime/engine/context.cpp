#include "runtime/engine/context.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <utility>

#include "platform/timer.h"
#include "runtime/model/gguf.h"
#include "runtime/sched/calib_cache.h"
#include "runtime/sched/calibration.h"

namespace kestrel {

namespace {
// Dynamic scheduling: another candidate replaces the current one for a shape, or the
// fixed thresholds' choice, only when its curve is this fraction cheaper at the step's
// rows (route.h): a single calibration's times of one candidate vary by several percent.
constexpr double kSchedMargin = 0.10;
}  // namespace

Context::~Context() = default;

Expected<std::unique_ptr<Context>> Context::create(const Model& model, const ContextParams& p) {
  if (model.vocab_only()) return Status::invalid_argument("a vocabulary-only model cannot run");
  const HParams& hp = model.hparams();
  if (p.n_ctx < 0 || p.n_ctx > kMaxContext) return Status::invalid_argument("n_ctx %lld out of range", (long long)p.n_ctx);
  if (p.n_batch < 1 || p.n_batch > 65536) return Status::invalid_argument("n_batch %lld out of range [1, 65536]", (long long)p.n_batch);
  if (p.n_threads < 1 || p.n_threads > 1024) return Status::invalid_argument("n_threads %d out of range [1, 1024]", p.n_threads);
  if (p.n_threads_batch < 0 || p.n_threads_batch > 1024)
    return Status::invalid_argument("n_threads_batch %d out of range [0, 1024]", p.n_threads_batch);
  const std::pair<const char*, ExpTier> tiers[] = {
      {"softmax", p.exp.softmax}, {"gelu", p.exp.gelu}, {"silu", p.exp.silu}, {"sigmoid", p.exp.sigmoid}};
  for (const auto& [op, t] : tiers)
    if (!exp_tier_valid(t)) return Status::invalid_argument("exp tier %d for %s is not exact, quake2 or quake1", (int)t, op);
  std::unique_ptr<Context> c(new (std::nothrow) Context(model));
  if (!c) return Status::out_of_memory("context");
  c->params_ = p;
  c->log_.set_sink(p.log);
  if (c->params_.n_ctx == 0) c->params_.n_ctx = std::min<int64_t>(hp.n_ctx_train, 4096);
  if (c->params_.n_threads_batch == 0) c->params_.n_threads_batch = p.n_threads;
  const int max_threads = std::max(c->params_.n_threads, c->params_.n_threads_batch);
  c->pool_.reset(new (std::nothrow) ThreadPool(max_threads, p.pool_engine));
  if (!c->pool_) return Status::out_of_memory("thread pool");

  BackendOptions bo;
  bo.n_threads = max_threads;
  bo.pool = c->pool_.get();
  bo.isa = p.isa;
  bo.graphs = p.gpu_graphs;
  bo.exact_f16_x = p.gpu_exact_f16;
  KESTREL_TRY(c->pick_backends(p, bo));
  if (p.sched == SchedMode::dynamic) KESTREL_TRY(c->start_sched(max_threads));

  const int64_t n_ctx = c->params_.n_ctx;
  const int64_t n_ubatch = std::min(c->params_.n_batch, n_ctx);
  c->params_.n_batch = n_ubatch;
  if (c->split_mode_) {
    KESTREL_TRY(c->kv_.init(hp, n_ctx, p.kv_type, p.n_seq_max, *c->cpu_, *c->gpu_, c->split_));
  } else {
    KESTREL_TRY(c->kv_.init(hp, n_ctx, p.kv_type, p.n_seq_max, *c->primary_));
  }
  KESTREL_TRY(c->forward_.init(model, n_ubatch));
  c->forward_.set_exp_tiers(p.exp);
  try {
    // One row up front, decode() growing it when a batch asks for more; on a device,
    // rows for a speculative verify or a few sequences (16): a move of the buffer drops
    // every ids_out plan (their device step memory is keyed by its address), and
    // verifies of growing draft lengths had moved it once per new size.
    const int64_t rows = c->on_device() ? std::min<int64_t>(n_ubatch, 16) : 1;
    c->logits_.assign(static_cast<size_t>(rows * hp.n_vocab), 0.0f);
    c->ids_.assign(static_cast<size_t>(rows), 0);
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory("logits buffer");
  }
  return c;
}

Status Context::validate(const BatchView& b) const {
  const HParams& hp = model_.hparams();
  if (b.n_tokens <= 0) return Status::invalid_argument("empty batch");
  if (!b.tokens || !b.pos) return Status::invalid_argument("batch has no tokens or positions");
  if (b.n_tokens > kv_.n_ctx())
    return Status::too_long("batch of %d tokens exceeds the context of %lld", b.n_tokens, (long long)kv_.n_ctx());
  for (int32_t i = 0; i < b.n_tokens; ++i) {
    if (b.tokens[i] < 0 || b.tokens[i] >= hp.n_vocab)
      return Status::invalid_argument("token id %d at batch index %d is outside [0, %lld)", b.tokens[i], i,
                                      (long long)hp.n_vocab);
    if (b.pos[i] < 0) return Status::invalid_argument("negative position %d at batch index %d", b.pos[i], i);
    const int32_t s = b.seq_id ? b.seq_id[i] : 0;
    if (s < 0 || s >= kv_.n_seq_max())
      return Status::invalid_argument("sequence id %d at batch index %d is outside [0, %d)", s, i, kv_.n_seq_max());
    // Each sequence's positions must increase, within a batch and after what
    // the cache holds (BAD-INPUTS row 18): a sequence's cells are kept in
    // position order, and a token placed before an earlier one of its
    // sequence would attend to that sequence's future.
    bool first = true;
    for (int32_t j = i - 1; j >= 0; --j) {
      if ((b.seq_id ? b.seq_id[j] : 0) != s) continue;
      if (b.pos[j] >= b.pos[i])
        return Status::invalid_argument("position %d at batch index %d does not follow position %d (index %d) of sequence %d",
                                        b.pos[i], i, b.pos[j], j, s);
      first = false;
      break;
    }
    if (first && b.pos[i] <= kv_.seq_pos_max(s))
      return Status::invalid_argument(
          "position %d at batch index %d does not follow position %d that sequence %d already holds (remove it first)",
          b.pos[i], i, kv_.seq_pos_max(s), s);
  }
  return kv_.check_room(b);
}

Status Context::pick_backends(const ContextParams& p, const BackendOptions& bo) {
  KESTREL_TRY_ASSIGN(ref_, backend_ref().create(bo));
  primary_ = host_ = ref_.get();
  if (p.backend == BackendChoice::ref) return {};
  KESTREL_TRY_ASSIGN(cpu_, backend_cpu().create(bo));
  primary_ = host_ = cpu_.get();
  if (p.backend == BackendChoice::cpu) return {};
  const bool must = p.backend == BackendChoice::cuda;
  if (!p.gpu) {
    if (must)
      return Status::unsupported("device cuda: this program has no GPU backend (it must link kestrel::cuda and pass "
                                 "it as the context's gpu backend)");
    log_.info("device auto: cpu (no GPU backend in this program)");
    return {};
  }
  // Layers on the GPU: with none, the GPU backend is not even created (no device context,
  // no device memory).
  const int L = static_cast<int>(model_.hparams().n_layer);
  const int ngl = p.n_gpu_layers < 0 ? L + 1 : std::min(p.n_gpu_layers, L + 1);
  if (ngl == 0) {
    log_.info("device %s: n_gpu_layers 0, the whole model on the cpu", must ? "cuda" : "auto");
    return {};
  }
  auto gpu = p.gpu->create(bo);
  if (!gpu) {
    if (must) {
      Status st = gpu.status();
      return std::move(st.with_context("device cuda: "));
    }
    log_.info("device auto: cpu (%s)", gpu.status().to_string().c_str());
    return {};
  }
  gpu_ = std::move(*gpu);
  if (ngl <= L) {
    split_mode_ = true;
    split_ = L - ngl;
    log_.info("device cuda: layers %d-%d on the GPU; the embedding, %d layer(s) and the output head on the cpu", split_,
              L - 1, split_);
  }
  KESTREL_TRY(upload_weights());
  primary_ = gpu_.get();
  return {};
}

namespace {
// The layer a tensor name belongs to ("blk.<n>."), or -1.
int layer_of(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return -1;
  int il = 0;
  size_t i = 4;
  if (i >= name.size() || name[i] < '0' || name[i] > '9') return -1;
  for (; i < name.size() && name[i] >= '0' && name[i] <= '9' && il < 1000000; ++i) il = il * 10 + (name[i] - '0');
  return i < name.size() && name[i] == '.' ? il : -1;
}
}  // namespace

Status Context::upload_weights() {
  // Weights resident once, in their stored formats: the file's tensor data
  // as a few contiguous ranges (tensors less than a page apart share one, so
  // every byte uploaded lies in memory the file's mapping or buffer holds).
  // Split between host and GPU, only the GPU's layers go up.
  std::vector<std::pair<const char*, const char*>> spans;
  try {
    for (const gguf::TensorInfo& t : model_.file().tensors()) {
      const char* lo = static_cast<const char*>(t.data);
      if (split_mode_ && layer_of(t.name) < split_) continue;
      if (lo && t.nbytes) spans.emplace_back(lo, lo + t.nbytes);
    }
    std::sort(spans.begin(), spans.end());
    std::vector<std::pair<const char*, const char*>> merged;
    for (const auto& sp : spans) {
      if (!merged.empty() && sp.first <= merged.back().second + 4096)
        merged.back().second = std::max(merged.back().second, sp.second);
      else
        merged.push_back(sp);
    }
    spans.swap(merged);
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory("weight ranges");
  }
  const int64_t t0 = now_ns();
  for (const auto& [lo, hi] : spans) {
    Status st = gpu_->make_resident(lo, static_cast<size_t>(hi - lo));
    if (!st.ok()) return std::move(st.with_context("device cuda: weights: "));
  }
  log_.info("device cuda: %.1f MiB of weights resident in %zu range(s), uploaded in %.1f ms",
            gpu_->resident_bytes() / 1048576.0, spans.size(), (now_ns() - t0) / 1e6);
  return {};
}

Status Context::start_sched(int max_threads) {
  if (!cpu_ || primary_ != cpu_.get()) {
    log_.warn("sched dynamic: the %s backend runs the plans, which has no matmul candidates: fixed thresholds",
              primary_->name());
    return {};
  }
  CalibrateOptions o;
  o.max_threads = max_threads;
  const std::string dir = params_.calib_dir ? std::string(params_.calib_dir) : calib_dir();
  KESTREL_TRY_ASSIGN(Calibration cal, load_or_calibrate(model_, *cpu_, o, dir, false, log_));
  log_.info("sched dynamic: %zu matmul shapes, calibration %s%s", cal.tables.size(),
            cal.from_cache ? "read from " : "measured", cal.from_cache ? cal.path.c_str() : "");
  try {
    CpuIsa isa = CpuIsa::scalar;
    cpu_backend_isa(*cpu_, &isa);
    sched_ = std::make_unique<MatmulScheduler>(std::move(cal.tables), kSchedMargin, isa, params_.n_threads_batch, log_);
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory("matmul scheduler");
  }
  cpu_set_matmul_router(*cpu_, sched_.get());
  return {};
}

void Context::set_n_threads(int n) {
  if (n == n_threads_now_) return;
  n_threads_now_ = n;
  if (cpu_) cpu_->set_n_threads(n);
  ref_->set_n_threads(n);
  if (sched_) sched_->set_static_threads(n);
}

Status Context::run_micro_batch(const BatchView& mb, bool last_chunk, const PassVariant& variant,
                                const float* uniforms) {
  const int64_t V = model_.hparams().n_vocab;
  const int64_t n_rows = token_bucket(mb.n_tokens, params_.n_batch);
  const int32_t n_out = forward_.set_inputs(mb, last_chunk, kv_, n_rows);
  const int64_t n_out_rows = Forward::output_rows(mb.n_tokens, n_out, n_rows);
  if (variant.draw) forward_.set_uniforms(uniforms + n_outputs_, n_out, n_out_rows);
  float* logits = logits_.data() + static_cast<size_t>(n_outputs_) * static_cast<size_t>(V);
  int32_t* ids = ids_.data() + n_outputs_;
  void* out = variant.ids_out ? static_cast<void*>(ids) : static_cast<void*>(logits);
  auto build = [&](Plan& plan, PlanCache::Entry& e) -> Status {
    const int64_t t0 = now_ns();
    if (split_mode_) {
      KESTREL_TRY(forward_.record(plan, n_rows, n_out_rows, variant, kv_, logits, PassPart::front).status());
      KESTREL_TRY_ASSIGN(e.front, cpu_->prepare(plan, ref_.get()));
      KESTREL_TRY_ASSIGN(e.head_output_root,
                         forward_.record(plan, n_rows, n_out_rows, variant, kv_, logits, PassPart::head, ids));
      KESTREL_TRY_ASSIGN(e.head, cpu_->prepare(plan, ref_.get()));
    }
    KESTREL_TRY_ASSIGN(e.output_root, forward_.record(plan, n_rows, n_out_rows, variant, kv_, logits,
                                                      split_mode_ ? PassPart::back : PassPart::whole, ids));
    KESTREL_TRY_ASSIGN(e.exe, primary_->prepare(plan, primary_->is_host() && primary_ != ref_.get() ? ref_.get() : nullptr));
    if (log_.enabled(LogLevel::debug)) {
      size_t on_fallback = 0;
      for (size_t i = 0; i < e.exe->n_nodes(); ++i) on_fallback += std::strcmp(e.exe->node_backend(i), ref_->name()) == 0 ? 1 : 0;
      log_.debug("plan for %lld tokens, %lld outputs%s%s: %zu nodes (%zu on ref), recorded and prepared in %.1f us",
                 (long long)n_rows, (long long)n_out_rows, variant.skip.empty() ? "" : ", layers skipped",
                 variant.out_vocab > 0 ? ", vocabulary subset" : "", e.exe->n_nodes(), on_fallback,
                 (now_ns() - t0) / 1e3);
    }
    return {};
  };
  const uint64_t built = plans_.n_built();
  KESTREL_TRY_ASSIGN(PlanCache::Entry * e, plans_.get(n_rows, n_out_rows, variant, build));
  const bool replayed = e->exe->replays_graph();
  if (e->front) {
    KESTREL_TRY(e->front->execute());
    KESTREL_TRY(e->exe->bind_output(e->output_root, forward_.gathered_rows()));
    KESTREL_TRY(e->exe->execute());
    if (n_out_rows > 0) {
      KESTREL_TRY(e->head->bind_output(e->head_output_root, out));
      KESTREL_TRY(e->head->execute());
    }
  } else {
    KESTREL_TRY(e->exe->bind_output(e->output_root, out));
    KESTREL_TRY(e->exe->execute());
  }
  if (plans_.n_built() != built || e->exe->replays_graph() != replayed) ++n_cold_;  // built or captured now
  n_outputs_ += n_out;
  if (params_.on_step) params_.on_step(params_.on_step_user, mb.n_tokens, n_out);
  return {};
}

Status Context::run_op(const OpCall& call) {
  KESTREL_TRY(validate_op(call));
  if (host_->implements(call)) return host_->run_validated(call);
  return ref_->run_validated(call);
}

Tensor Context::logits_tensor(int32_t first, int32_t n) {
  const int64_t V = model_.hparams().n_vocab;
  if (first < 0 || n < 0 || first + n > n_outputs_ || ids_only_) return Tensor{};
  return make_tensor(DType::F32, logits_.data() + static_cast<size_t>(first) * static_cast<size_t>(V), V, n);
}

Status Context::decode(const BatchView& b, const PassVariant& variant, const float* uniforms) {
  KESTREL_TRY(validate(b));
  if (variant.draw && (!variant.ids_out || !uniforms))
    return Status::invalid_argument("decode: a draw needs ids out and one uniform per logits row");
  const int64_t t0 = now_ns();
  const bool single = b.n_tokens == 1;
  set_n_threads(single ? params_.n_threads : params_.n_threads_batch);
  const int64_t V = model_.hparams().n_vocab;
  const int64_t ub = params_.n_batch;
  // Count the logits rows the micro-batches write (padded ones included) to
  // size the buffer once (grown, never per token).
  int64_t n_want = 0;
  for (int32_t off = 0, done = 0; off < b.n_tokens; off += static_cast<int32_t>(ub)) {
    const int64_t n = std::min<int64_t>(ub, b.n_tokens - off);
    int64_t n_out = 0;
    for (int64_t i = off; i < off + n; ++i) n_out += (b.logits ? b.logits[i] != 0 : i == b.n_tokens - 1) ? 1 : 0;
    n_want = std::max(n_want, done + Forward::output_rows(n, n_out, token_bucket(n, ub)));
    done += static_cast<int32_t>(n_out);
  }
  if (static_cast<size_t>(std::max<int64_t>(n_want, 1) * V) > logits_.size() ||
      static_cast<size_t>(std::max<int64_t>(n_want, 1)) > ids_.size()) {
    const float* old = logits_.data();
    try {
      logits_.resize(std::max(logits_.size(), static_cast<size_t>(std::max<int64_t>(n_want, 1) * V)));
      ids_.resize(static_cast<size_t>(std::max<int64_t>(n_want, 1)));
    } catch (const std::bad_alloc&) {
      return Status::out_of_memory("logits for %lld outputs", (long long)n_want);
    }
    // ids_out plans compute their logits at the buffer's old address.
    if (logits_.data() != old) plans_.drop_ids_plans();
  }
  n_outputs_ = 0;
  ids_only_ = variant.ids_out;
  for (int32_t off = 0; off < b.n_tokens; off += static_cast<int32_t>(ub)) {
    BatchView mb;
    mb.n_tokens = static_cast<int32_t>(std::min<int64_t>(ub, b.n_tokens - off));
    mb.tokens = b.tokens + off;
    mb.pos = b.pos + off;
    mb.seq_id = b.seq_id ? b.seq_id + off : nullptr;
    mb.logits = b.logits ? b.logits + off : nullptr;
    // Without flags only the very last token of the whole batch has logits.
    const bool last_chunk = off + mb.n_tokens == b.n_tokens;
    Status s = run_micro_batch(mb, last_chunk, variant, uniforms);
    if (!s.ok()) {
      // Leave the cache as it was: drop what this call stored.
      for (int32_t i = 0; i < b.n_tokens; ++i) kv_.seq_rm(b.seq_id ? b.seq_id[i] : 0, b.pos[i], b.pos[i] + 1);
      n_outputs_ = 0;
      return s;
    }
  }
  const int64_t dt = now_ns() - t0;
  if (single) {
    stats_.n_eval_tokens += 1;
    stats_.t_eval_ns += dt;
  } else {
    stats_.n_prompt_tokens += b.n_tokens;
    stats_.t_prompt_ns += dt;
  }
  return {};
}

int32_t Context::greedy_id(int32_t i) const {
  if (i < 0 || i >= n_outputs_ || !ids_only_) return -2;
  return ids_[static_cast<size_t>(i)];
}

const float* Context::logits(int32_t i) const {
  if (i < 0 || i >= n_outputs_ || ids_only_) return nullptr;
  return logits_.data() + static_cast<size_t>(i) * static_cast<size_t>(model_.hparams().n_vocab);
}

}  // namespace kestrel
