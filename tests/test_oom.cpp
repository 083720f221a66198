// Out-of-memory injection: every allocation of a model load, a context create
// and a decode of stories260K is refused in turn, through the C API.
//
// This executable replaces the global operator new / delete (every form) and
// installs the library's aligned-allocation fault hook (platform/aligned_alloc.h),
// so one counter sees every heap allocation kestrel makes. A sweep first counts
// the allocations of the whole sequence, then reruns it once per allocation index
// k, refusing allocation k (one-shot) or every allocation from k on (persistent).
// Each run must end in KESTREL_OK with the same logits as the unfailed run, or
// in KESTREL_ERR_OUT_OF_MEMORY with a message; nothing may crash, throw into the
// test, or leak (live-allocation count back to where it was; LeakSanitizer in the
// asan build), and a model / context created before the failure keeps working.
#include <catch2/catch.hpp>

#include <execinfo.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "kestrel/kestrel.h"
#include "platform/aligned_alloc.h"

// ---- the counting, failing allocator ----

namespace {

std::atomic<bool> g_armed{false};
std::atomic<int64_t> g_count{0};     // allocations seen while armed
std::atomic<int64_t> g_fail_at{-1};  // first refused index; -1: none
std::atomic<bool> g_persistent{false};
std::atomic<int64_t> g_refused{0};
std::atomic<int64_t> g_live{0};  // operator new blocks not yet deleted (armed or not)

bool refuse_this_one() {
  if (!g_armed.load(std::memory_order_relaxed)) return false;
  const int64_t i = g_count.fetch_add(1, std::memory_order_relaxed);
  const int64_t f = g_fail_at.load(std::memory_order_relaxed);
  if (f < 0 || i < f || (i > f && !g_persistent.load(std::memory_order_relaxed))) return false;
  g_refused.fetch_add(1, std::memory_order_relaxed);
  // KESTREL_OOM_TRACE=1: the stack of every refused allocation on stderr (addresses;
  // addr2line -f -C -e test_oom names them), to find the code a failing case hit.
  static const bool trace = std::getenv("KESTREL_OOM_TRACE") != nullptr;
  if (trace) {
    void* frames[24];
    const int n = backtrace(frames, 24);
    std::fprintf(stderr, "refused allocation %lld:\n", static_cast<long long>(i));
    backtrace_symbols_fd(frames, n, 2);
  }
  return true;
}

void* counted_malloc(std::size_t n, std::size_t align) {
  if (refuse_this_one()) return nullptr;
  void* p = nullptr;
  if (align <= alignof(std::max_align_t)) {
    p = std::malloc(n ? n : 1);
  } else if (posix_memalign(&p, align, n ? n : 1) != 0) {
    p = nullptr;
  }
  if (p) g_live.fetch_add(1, std::memory_order_relaxed);
  return p;
}

void counted_free(void* p) {
  if (!p) return;
  g_live.fetch_sub(1, std::memory_order_relaxed);
  std::free(p);
}

bool aligned_hook(size_t) { return refuse_this_one(); }

}  // namespace

void* operator new(std::size_t n) {
  void* p = counted_malloc(n, 0);
  if (!p) throw std::bad_alloc();
  return p;
}
void* operator new[](std::size_t n) { return ::operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted_malloc(n, 0); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted_malloc(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) {
  void* p = counted_malloc(n, static_cast<std::size_t>(a));
  if (!p) throw std::bad_alloc();
  return p;
}
void* operator new[](std::size_t n, std::align_val_t a) { return ::operator new(n, a); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return counted_malloc(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return counted_malloc(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete(void* p, std::align_val_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { counted_free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { counted_free(p); }

// ---- the sequences under test ----

namespace {

const char* model_path() { return KESTREL_SHARED_DIR "/models/stories260K/stories260K.gguf"; }
const char* llama2c_path() { return KESTREL_SHARED_DIR "/models/stories260K/stories260K.bin"; }
const char* llama2c_tok_path() { return KESTREL_SHARED_DIR "/models/stories260K/tok512.bin"; }

bool have_model() {
  FILE* f = std::fopen(model_path(), "rb");
  if (!f) return false;
  std::fclose(f);
  return true;
}

// Arms the allocator for one run; disarmed on scope exit (Catch2's own
// allocations must never be refused).
struct Armed {
  Armed(int64_t fail_at, bool persistent) {
    g_count = 0;
    g_refused = 0;
    g_fail_at = fail_at;
    g_persistent = persistent;
    kestrel::set_alloc_fault_hook(aligned_hook);
    g_armed = true;
  }
  ~Armed() { disarm(); }
  void disarm() {
    g_armed = false;
    kestrel::set_alloc_fault_hook(nullptr);
  }
};

// What one run saw; recorded while armed, checked after.
struct Outcome {
  kestrel_status status = KESTREL_OK;
  std::string where;    // the step that failed
  std::string message;  // its last-error text
  std::vector<float> logits;
};

enum class Loader { gguf_mmap, gguf_read, llama2c };

constexpr int32_t kPrompt[4] = {1, 403, 407, 261};  // BOS + "Once upon a" (stories260K ids)

// Load -> context -> decode 4 tokens -> copy the last logits -> free all.
// Plain C API calls only; the copy into `out` happens after disarming.
void run_sequence(Loader loader, int n_threads, int64_t fail_at, bool persistent, Outcome* out, int64_t* n_allocs) {
  // Reserved before arming so that recording the outcome allocates nothing.
  out->where.reserve(64);
  out->message.reserve(512);
  std::vector<float> logits_copy(512);
  Armed armed(fail_at, persistent);
  kestrel_model_params mp = kestrel_model_default_params();
  if (loader == Loader::gguf_read) mp.use_mmap = 0;
  if (loader == Loader::llama2c) mp.llama2c_tokenizer = llama2c_tok_path();
  kestrel_model* model = nullptr;
  kestrel_context* ctx = nullptr;
  auto fail = [&](kestrel_status st, const char* where, const void* handle) {
    out->status = st;
    out->where = where;
    const char* m = kestrel_last_error(handle);
    out->message.assign(m ? m : "");
  };
  kestrel_status st = kestrel_model_load(loader == Loader::llama2c ? llama2c_path() : model_path(), &mp, &model);
  if (st != KESTREL_OK) {
    fail(st, "kestrel_model_load", nullptr);
  } else {
    kestrel_context_params cp = kestrel_context_default_params();
    cp.n_ctx = 32;
    cp.n_batch = 8;
    cp.n_threads = n_threads;
    st = kestrel_context_create(model, &cp, &ctx);
    if (st != KESTREL_OK) {
      fail(st, "kestrel_context_create", nullptr);
    } else {
      int32_t toks[4], pos[4];
      for (int i = 0; i < 4; ++i) {
        toks[i] = kPrompt[i];
        pos[i] = i;
      }
      kestrel_batch b = {4, toks, pos, nullptr, nullptr};
      st = kestrel_decode(ctx, &b);
      if (st != KESTREL_OK) {
        fail(st, "kestrel_decode", ctx);
      } else {
        const float* l = kestrel_get_logits(ctx, 0);
        if (!l) fail(KESTREL_ERR_INTERNAL, "kestrel_get_logits", ctx);
        else std::memcpy(logits_copy.data(), l, logits_copy.size() * sizeof(float));
      }
    }
  }
  kestrel_context_free(ctx);
  kestrel_model_free(model);
  if (n_allocs) *n_allocs = g_count.load();
  armed.disarm();
  if (out->status == KESTREL_OK) out->logits = std::move(logits_copy);
}

// The thread's last-error records (handle-less calls, model calls) are strings
// that grow on first use; give them a heap buffer before counting live blocks so
// that a later message only reuses it.
void warm_error_records() {
  kestrel_model* m = nullptr;
  const std::string long_path = "/nonexistent/kestrel/" + std::string(200, 'x') + ".gguf";
  (void)kestrel_model_load(long_path.c_str(), nullptr, &m);
  REQUIRE(kestrel_model_load(model_path(), nullptr, &m) == KESTREL_OK);
  kestrel_tensor_info ti;
  const std::string long_key(200, 'k');
  CHECK(kestrel_model_tensor_info(m, 1 << 30, &ti) == KESTREL_ERR_INVALID_ARGUMENT);
  CHECK(kestrel_model_meta_val_str(m, long_key.c_str(), nullptr, 0) == -1);
  kestrel_model_free(m);
}

const char* loader_name(Loader l) {
  return l == Loader::gguf_mmap ? "gguf (mmap)" : l == Loader::gguf_read ? "gguf (read)" : "llama2.c + tokenizer.bin";
}

// Decodes the 4-token prompt at positions 0..3 of sequence 0 (after clearing the
// context) and returns the status.
kestrel_status decode_prompt_status(kestrel_context* c) {
  int32_t toks[4], pos[4];
  for (int i = 0; i < 4; ++i) {
    toks[i] = kPrompt[i];
    pos[i] = i;
  }
  kestrel_batch b = {4, toks, pos, nullptr, nullptr};
  if (kestrel_status st = kestrel_kv_seq_rm(c, -1, 0, -1); st != KESTREL_OK) return st;
  return kestrel_decode(c, &b);
}

std::vector<float> decode_prompt(kestrel_context* c) {
  REQUIRE(decode_prompt_status(c) == KESTREL_OK);
  const float* l = kestrel_get_logits(c, 0);
  REQUIRE(l != nullptr);
  return std::vector<float>(l, l + 512);
}

// Context create + first decode with allocation k refused, next to a working context.
void check_context_refusal(kestrel_model* model, kestrel_context* ctx, const kestrel_context_params& cp,
                           const std::vector<float>& base, int64_t k, int64_t n_total, int64_t* n_failed) {
  kestrel_context* c2 = nullptr;
  kestrel_status st_create, st_decode = KESTREL_OK;
  std::string msg;
  msg.reserve(512);
  {
    Armed armed(k, false);
    st_create = kestrel_context_create(model, &cp, &c2);
    if (st_create != KESTREL_OK) msg.assign(kestrel_last_error(nullptr));
    else if ((st_decode = decode_prompt_status(c2)) != KESTREL_OK) msg.assign(kestrel_last_error(c2));
  }
  INFO("allocation " << k << " of " << n_total << " refused: create " << kestrel_status_name(st_create)
                     << ", decode " << kestrel_status_name(st_decode) << " \"" << msg << "\"");
  if (st_create != KESTREL_OK) {
    REQUIRE(st_create == KESTREL_ERR_OUT_OF_MEMORY);
    REQUIRE(c2 == nullptr);
  } else if (st_decode != KESTREL_OK) {
    REQUIRE(st_decode == KESTREL_ERR_OUT_OF_MEMORY);
    CHECK(decode_prompt(c2) == base);  // the failed context recovers
  }
  if (st_create != KESTREL_OK || st_decode != KESTREL_OK) {
    ++*n_failed;
    REQUIRE(!msg.empty());
  }
  kestrel_context_free(c2);
  CHECK(decode_prompt(ctx) == base);  // the context the caller already had
}

// One run with allocation k refused: OK with the unfailed logits, or out_of_memory
// with a message.
void check_outcome(Loader loader, int n_threads, bool persistent, int64_t k, int64_t n_total, const Outcome& base,
                   int64_t* n_failed_runs, int64_t* n_ok_runs) {
  Outcome o;
  run_sequence(loader, n_threads, k, persistent, &o, nullptr);
  INFO(loader_name(loader) << (persistent ? ", persistent" : ", one-shot") << ": allocation " << k << " of "
                           << n_total << " refused; " << o.where << " -> " << kestrel_status_name(o.status) << " \""
                           << o.message << "\"");
  if (o.status == KESTREL_OK) {
    // The refusal was absorbed (a path that tolerates it): the result must still be
    // the unfailed one.
    ++*n_ok_runs;
    REQUIRE(o.logits == base.logits);
  } else {
    ++*n_failed_runs;
    REQUIRE(o.status == KESTREL_ERR_OUT_OF_MEMORY);
    REQUIRE(!o.message.empty());
  }
}

// Sweep fail_at over every allocation index (or every `stride`-th one).
void sweep(Loader loader, int n_threads, bool persistent, int64_t stride) {
  warm_error_records();
  Outcome base;
  int64_t n_total = 0;
  run_sequence(loader, n_threads, -1, false, &base, &n_total);
  INFO(loader_name(loader) << ": unfailed run: " << base.where << " " << base.message);
  REQUIRE(base.status == KESTREL_OK);
  REQUIRE(n_total > 10);
  // A second unfailed run: first-use caches (thread-locals, statics) are warm now.
  run_sequence(loader, n_threads, -1, false, &base, &n_total);
  const int64_t live_before = g_live.load();
  int64_t n_failed_runs = 0, n_ok_runs = 0;
  for (int64_t k = 0; k < n_total; k += stride) {
    check_outcome(loader, n_threads, persistent, k, n_total, base, &n_failed_runs, &n_ok_runs);
    // Everything the run allocated is freed again (read before INFO allocates its text).
    const int64_t live_now = g_live.load();
    INFO(loader_name(loader) << ": allocation " << k << " refused");
    REQUIRE(live_now == live_before);
  }
  // Most refusals must surface as errors; a sweep that never failed tested nothing.
  CHECK(n_failed_runs > 0);
  WARN(loader_name(loader) << ", " << n_threads << " thread(s)" << (persistent ? ", persistent" : ", one-shot") << ": " << n_total
                           << " allocations, stride " << stride << ": " << n_failed_runs << " runs out_of_memory, "
                           << n_ok_runs << " absorbed");
}

}  // namespace

TEST_CASE("every allocation of load + context + decode can fail: out_of_memory, no leak", "[oom][c_api]") {
  if (!have_model()) {
    WARN("SKIP: " << model_path() << " not found");
    return;
  }
  // 3 threads: the pool starts 2 workers, so a refusal can hit the second one
  // while the first is running.
  SECTION("gguf, mmap, 1 thread, one-shot") { sweep(Loader::gguf_mmap, 1, false, 1); }
  SECTION("gguf, mmap, 3 threads, one-shot") { sweep(Loader::gguf_mmap, 3, false, 1); }
  SECTION("gguf, read into memory, 1 thread, one-shot") { sweep(Loader::gguf_read, 1, false, 1); }
  SECTION("llama2.c checkpoint + tokenizer.bin, 1 thread, one-shot") { sweep(Loader::llama2c, 1, false, 1); }
  SECTION("gguf, mmap, 3 threads, persistent") { sweep(Loader::gguf_mmap, 3, true, 1); }
}

TEST_CASE("a model and context created before an out-of-memory failure keep working", "[oom][c_api]") {
  if (!have_model()) {
    WARN("SKIP: " << model_path() << " not found");
    return;
  }
  warm_error_records();
  kestrel_model* model = nullptr;
  REQUIRE(kestrel_model_load(model_path(), nullptr, &model) == KESTREL_OK);
  kestrel_context_params cp = kestrel_context_default_params();
  cp.n_ctx = 32;
  cp.n_batch = 8;
  cp.n_threads = 1;
  kestrel_context* ctx = nullptr;
  REQUIRE(kestrel_context_create(model, &cp, &ctx) == KESTREL_OK);

  const std::vector<float> base = decode_prompt(ctx);

  // Fresh contexts: the first decode of a context sizes its buffers, so both the
  // create and that decode allocate. Each allocation is refused in turn; then the
  // original context must give the same logits, and the new context must either
  // be absent (create failed) or decode correctly once memory is back.
  int64_t n_total = 0;
  {
    kestrel_status st_create, st_decode = KESTREL_ERR_INTERNAL;
    kestrel_context* c2 = nullptr;
    {
      Armed armed(-1, false);
      st_create = kestrel_context_create(model, &cp, &c2);
      if (st_create == KESTREL_OK) st_decode = decode_prompt_status(c2);
      n_total = g_count.load();
    }
    REQUIRE(st_create == KESTREL_OK);
    REQUIRE(st_decode == KESTREL_OK);
    kestrel_context_free(c2);
  }
  REQUIRE(n_total > 0);
  const int64_t live_before = g_live.load();
  int64_t n_failed = 0;
  for (int64_t k = 0; k < n_total; ++k) {
    check_context_refusal(model, ctx, cp, base, k, n_total, &n_failed);
    const int64_t live_now = g_live.load();
    INFO("allocation " << k << " refused");
    REQUIRE(live_now == live_before);
  }
  CHECK(n_failed > 0);

  // Calls on the live model that allocate (tokenize, detokenize, sampler create)
  // fail cleanly and leave it usable.
  const char* text = "Once upon a time, there was a little girl named Lily.";
  int32_t ids[64];
  int32_t n_ids = 0;
  REQUIRE(kestrel_tokenize(model, text, std::strlen(text), 1, 0, ids, 64, &n_ids) == KESTREL_OK);
  for (int64_t k = 0;; ++k) {
    int32_t got[64];
    int32_t n_got = 0;
    kestrel_status st;
    kestrel_sampler* smpl = nullptr;
    kestrel_status st_smpl;
    int64_t seen = 0;
    {
      Armed armed(k, false);
      st = kestrel_tokenize(model, text, std::strlen(text), 1, 0, got, 64, &n_got);
      st_smpl = kestrel_sampler_create(model, nullptr, &smpl);
      seen = g_count.load();
    }
    INFO("allocation " << k << " refused: tokenize " << kestrel_status_name(st) << ", sampler_create "
                       << kestrel_status_name(st_smpl));
    REQUIRE((st == KESTREL_OK || st == KESTREL_ERR_OUT_OF_MEMORY));
    REQUIRE((st_smpl == KESTREL_OK || st_smpl == KESTREL_ERR_OUT_OF_MEMORY));
    if (st_smpl != KESTREL_OK) REQUIRE(smpl == nullptr);
    kestrel_sampler_free(smpl);
    int32_t again[64];
    int32_t n_again = 0;
    REQUIRE(kestrel_tokenize(model, text, std::strlen(text), 1, 0, again, 64, &n_again) == KESTREL_OK);
    REQUIRE(std::vector<int32_t>(again, again + n_again) == std::vector<int32_t>(ids, ids + n_ids));
    if (k >= seen) break;  // past the last allocation: every one has been refused once
  }

  kestrel_context_free(ctx);
  kestrel_model_free(model);
}
