// Execution plans (ops/plan.h, runtime/engine/forward.h, plan_cache.h): the
// forward pass recorded once per micro-batch shape and variant, then run.
//   - one plan on ref and on every cpu ISA variant gives the same logits
//     within the op tolerances, for several token counts;
//   - executing a prepared plan 1000 times with changing inputs allocates nothing;
//   - two sequences of different lengths in one batch give what each gives alone;
//   - the plan's slots have the roles they should, a skip variant is a smaller
//     plan, and the plan cache builds a key once.
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdlib>
#include <new>

#include "ops/backend.h"
#include "ops/plan.h"
#include "runtime/engine/context.h"
#include "runtime/model/synth.h"
#include "tests/model_test_util.h"
#include "tests/spec_test_util.h"

#include "tests/alloc_counter.h"

using namespace kestrel;
using namespace kestrel::testutil;
using kestrel::spectest::synth;

namespace {

std::unique_ptr<Context> ctx_on(const Model& m, BackendChoice be, CpuIsa isa, int threads, int32_t n_seq = 1,
                                int64_t n_batch = 64) {
  ContextParams cp;
  cp.n_ctx = 128;
  cp.n_batch = n_batch;
  cp.n_threads = threads;
  cp.backend = be;
  cp.isa = isa;
  cp.kv_type = DType::F32;
  cp.n_seq_max = n_seq;
  auto c = Context::create(m, cp);
  REQUIRE(c.status().to_string() == "ok");
  return std::move(c).value();
}

std::vector<int32_t> some_ids(size_t n, int64_t V, uint32_t seed) {
  std::vector<int32_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((seed * 2654435761u + i * 40503u) % (uint32_t)V);
  return ids;
}

}  // namespace

TEST_CASE("one plan on ref and every cpu variant: same logits at every token count", "[plan]") {
  struct Cfg {
    ArchId arch;
    const char* weights;
  };
  const Cfg cfgs[] = {{ArchId::llama, "f32"}, {ArchId::qwen2, "q8_0"}, {ArchId::gemma3, "q4_k_m"}};
  CpuIsa isas[8];
  const int n_isa = cpu_isa_available(isas, 8);
  for (const Cfg& cfg : cfgs) {
    auto m = synth(cfg.arch, 3, 2, cfg.weights, cfg.arch == ArchId::gemma3 ? 256 : 64);
    const int64_t V = m->hparams().n_vocab;
    for (int64_t n : {1, 2, 7, 16, 33}) {
      const auto ids = some_ids(static_cast<size_t>(n), V, 7);
      auto ref = ctx_on(*m, BackendChoice::ref, CpuIsa::auto_detect, 1);
      std::vector<float> lr, lc;
      REQUIRE(decode_all(*ref, ids, 0, 0, &lr).ok());
      for (int i = 0; i < n_isa; ++i) {
        INFO("arch " << int(cfg.arch) << " " << cfg.weights << " n " << n << " isa " << cpu_isa_name(isas[i]));
        auto cpu = ctx_on(*m, BackendChoice::cpu, isas[i], 2);
        REQUIRE(decode_all(*cpu, ids, 0, 0, &lc).ok());
        REQUIRE(lc.size() == lr.size());
        // Quantized weights go through 8-bit activations on cpu: an NMSE well
        // under the quantization noise; float weights agree to rounding.
        const double tol = std::string(cfg.weights) == "f32" ? 1e-9 : 2e-3;
        CHECK(nmse(lr.data(), lc.data(), lr.size()) < tol);
      }
    }
  }
}

TEST_CASE("a prepared plan re-executed 1000 times with changing inputs allocates nothing", "[plan][alloc]") {
  auto m = synth(ArchId::llama, 5, 2, "q4_0", 64);
  auto c = ctx_on(*m, BackendChoice::cpu, CpuIsa::auto_detect, 2, 1, 8);
  const int64_t V = m->hparams().n_vocab;
  int32_t tok = 1, pos = 0;
  // Warm up: the decode plan and the logits buffer exist afterwards.
  REQUIRE(c->decode(BatchView{1, &tok, &pos, nullptr, nullptr}).ok());
  const uint64_t built = c->plans().n_built();
  const long before = g_allocs.load();
  for (int step = 0; step < 1000; ++step) {
    pos = step % 120 + 1;
    if (pos == 1) c->kv().seq_rm(0, 1, -1);
    tok = static_cast<int32_t>((step * 7919) % V);
    REQUIRE(c->decode(BatchView{1, &tok, &pos, nullptr, nullptr}).ok());
  }
  const long allocs = g_allocs.load() - before;
  std::printf("plan steps: 1000 decode steps, %ld heap allocations, %llu plans built\n", allocs,
              (unsigned long long)(c->plans().n_built() - built));
  CHECK(allocs == 0);
  CHECK(c->plans().n_built() == built);
}

TEST_CASE("two sequences of different lengths in one batch equal each alone", "[plan][seq]") {
  for (const char* w : {"f32", "q8_0"}) {
    auto m = synth(ArchId::qwen2, 9, 2, w, 64);
    const int64_t V = m->hparams().n_vocab;
    const auto a = some_ids(9, V, 1), b = some_ids(4, V, 2);
    auto alone = ctx_on(*m, BackendChoice::cpu, CpuIsa::auto_detect, 2);
    std::vector<float> la, lb;
    REQUIRE(decode_all(*alone, a, 0, 0, &la).ok());
    alone->kv().clear();
    REQUIRE(decode_all(*alone, b, 0, 0, &lb).ok());

    // Interleaved in one batch: a's tokens and b's, sequence ids 0 and 1.
    auto both = ctx_on(*m, BackendChoice::cpu, CpuIsa::auto_detect, 2, 2);
    std::vector<int32_t> ids, pos, seq;
    std::vector<int8_t> flags;
    size_t ia = 0, ib = 0;
    while (ia < a.size() || ib < b.size()) {
      if (ia < a.size()) ids.push_back(a[ia]), pos.push_back((int32_t)ia), seq.push_back(0), ++ia;
      if (ia % 2 == 0 && ib < b.size()) ids.push_back(b[ib]), pos.push_back((int32_t)ib), seq.push_back(1), ++ib;
    }
    flags.assign(ids.size(), 1);
    REQUIRE(both->decode(BatchView{(int32_t)ids.size(), ids.data(), pos.data(), seq.data(), flags.data()}).ok());
    size_t ra = 0, rb = 0;
    double worst = 0.0;
    for (size_t i = 0; i < ids.size(); ++i) {
      const float* got = both->logits((int32_t)i);
      const float* want = seq[i] == 0 ? &la[(ra++) * V] : &lb[(rb++) * V];
      worst = std::max(worst, nmse(want, got, (size_t)V));
    }
    INFO(w);
    // Quantized weights: each token's row is bitwise the same at every batch size.
    if (std::string(w) == "q8_0") CHECK(worst == 0.0);
    else CHECK(worst < 1e-10);
    // Then both sequences decode on, one token each, in one batch.
    int32_t t2[2] = {5, 6}, p2[2] = {9, 4}, s2[2] = {0, 1};
    REQUIRE(both->decode(BatchView{2, t2, p2, s2, nullptr}).ok());
    CHECK(both->kv().seq_pos_max(0) == 9);
    CHECK(both->kv().seq_pos_max(1) == 4);
  }
}

TEST_CASE("plan slots have their roles; variants are plans; the cache builds once", "[plan]") {
  auto m = synth(ArchId::llama, 4, 4, "f32", 64);
  auto c = ctx_on(*m, BackendChoice::cpu, CpuIsa::auto_detect, 1);
  Forward fw;
  REQUIRE(fw.init(*m, 8).ok());
  std::vector<float> logits(static_cast<size_t>(3 * m->hparams().n_vocab));
  Plan full, skip;
  auto out = fw.record(full, 5, 3, PassVariant{}, c->kv(), logits.data());
  REQUIRE(out.ok());
  PassVariant sv;
  sv.skip = {false, true, true, false};
  REQUIRE(fw.record(skip, 5, 3, sv, c->kv(), logits.data()).ok());
  CHECK(skip.nodes().size() < full.nodes().size());
  CHECK(full.roots()[static_cast<size_t>(*out)].role == SlotRole::output);
  int n_weight = 0, n_kv_write = 0;
  for (const PlanNode& n : full.nodes()) {
    if (n.op == OpId::matmul && full.role_of(n.src[0]) == SlotRole::weight) ++n_weight;
    if (n.op == OpId::set_rows) {
      CHECK(full.role_of(n.dst) == SlotRole::kv);
      CHECK(full.role_of(n.src[1]) == SlotRole::input);
      ++n_kv_write;
    }
    if (n.op == OpId::attention) CHECK(full.role_of(n.src[3]) == SlotRole::input);
  }
  CHECK(n_weight == 4 * 7 + 1);
  CHECK(n_kv_write == 2 * 4);
  // A recorded plan prepares on ref and on cpu; every node runs somewhere.
  auto ref = backend_ref().create(BackendOptions{});
  REQUIRE(ref.ok());
  auto exe = (*ref)->prepare(full, nullptr);
  REQUIRE(exe.ok());
  CHECK((*exe)->n_nodes() == full.nodes().size());
  CHECK(!(*exe)->execute().ok());  // the output root is not bound yet

  // The context builds a plan per (tokens, outputs, variant) once.
  const int64_t V = m->hparams().n_vocab;
  std::vector<float> l;
  const uint64_t b0 = c->plans().n_built(), cold0 = c->n_cold();
  REQUIRE(decode_all(*c, some_ids(5, V, 3), 0, 0, &l).ok());
  CHECK(c->n_cold() == cold0 + 1);  // built in this decode: a cold step
  c->kv().clear();
  REQUIRE(decode_all(*c, some_ids(5, V, 4), 0, 0, &l).ok());
  CHECK(c->plans().n_built() == b0 + 1);
  CHECK(c->n_cold() == cold0 + 1);  // reused: warm (host plans capture no graph)
  c->kv().clear();
  int32_t t = 1, p = 0;
  REQUIRE(c->decode(BatchView{1, &t, &p, nullptr, nullptr}, sv).ok());
  CHECK(c->plans().n_built() == b0 + 2);
  CHECK(c->n_cold() == cold0 + 2);
}

TEST_CASE("removing positions from the middle of a sequence moves its later cells down", "[plan][kv]") {
  auto m = synth(ArchId::llama, 6, 2, "f32", 64);
  auto c = ctx_on(*m, BackendChoice::cpu, CpuIsa::auto_detect, 1, 2);
  const int64_t V = m->hparams().n_vocab;
  std::vector<float> l;
  REQUIRE(decode_all(*c, some_ids(10, V, 5), 0, 1, &l).ok());  // sequence 1, positions 0..9
  KvCache& kv = c->kv();
  const int il = 1;
  const Tensor k = kv.k_rows(il), v = kv.v_rows(il);
  const size_t row = static_cast<size_t>(k.ne[0]) * dtype_type_size(k.type);
  auto row_bytes = [&](const Tensor& t, int64_t cell) {
    const uint8_t* p = t.row<const uint8_t>(kv.n_ctx() + cell);  // stream 1
    return std::vector<uint8_t>(p, p + row);
  };
  std::vector<std::vector<uint8_t>> k_before, v_before;
  for (int64_t cell = 0; cell < 10; ++cell) k_before.push_back(row_bytes(k, cell)), v_before.push_back(row_bytes(v, cell));
  kv.seq_rm(1, 3, 6);
  CHECK(kv.seq_n_cells(1) == 7);
  CHECK(kv.seq_pos_max(1) == 9);
  const int32_t want_pos[7] = {0, 1, 2, 6, 7, 8, 9};
  for (int64_t cell = 0; cell < 7; ++cell) {
    CHECK(kv.cell_pos(kv.n_ctx() + cell) == want_pos[cell]);
    CHECK(kv.cell_seq(kv.n_ctx() + cell) == 1);
    const int64_t was = want_pos[cell];  // position p sat in cell p before
    CHECK(row_bytes(k, cell) == k_before[static_cast<size_t>(was)]);
    CHECK(row_bytes(v, cell) == v_before[static_cast<size_t>(was)]);
  }
  CHECK(kv.cell_seq(kv.n_ctx() + 7) == -1);
  // The sequence goes on after its last position; one before it is refused.
  int32_t t = 3, p = 10, s = 1;
  CHECK(c->decode(BatchView{1, &t, &p, &s, nullptr}).ok());
  p = 4;
  CHECK(c->decode(BatchView{1, &t, &p, &s, nullptr}).code() == StatusCode::invalid_argument);
  CHECK(kv.seq_n_cells(0) == 0);
}

TEST_CASE("token buckets: exact below 16, at most 1/8 padding above, capped by the micro-batch", "[plan][bucket]") {
  int64_t prev = 0;
  int n_buckets = 0;
  for (int64_t n = 1; n <= 512; ++n) {
    const int64_t b = token_bucket(n, 512);
    INFO("n " << n << " bucket " << b);
    CHECK(b >= n);
    CHECK(b >= prev);
    if (n < 16) CHECK(b == n);
    CHECK((b - n) * 8 <= b);
    CHECK(token_bucket(b, 512) == b);  // a bucket is its own bucket
    n_buckets += b != prev ? 1 : 0;
    prev = b;
  }
  CHECK(n_buckets <= 60);
  CHECK(token_bucket(500, 500) == 500);  // a micro-batch size that is no bucket caps them
  CHECK(token_bucket(497, 500) == 500);
  CHECK(token_bucket(100, 64) == 100);   // never below n
}

TEST_CASE("every bucket: padded rows change no logit and write no KV cell", "[plan][bucket]") {
  // Quantized weights: a token's logits are bitwise the same at every batch
  // size, so a padded plan must reproduce one-token steps exactly.
  auto m = synth(ArchId::gemma3, 2, 2, "q8_0", 64);  // gemma3: sliding-window ranges too
  const int64_t V = m->hparams().n_vocab;
  const auto ids = some_ids(128, V, 11);
  auto one = ctx_on(*m, BackendChoice::cpu, CpuIsa::auto_detect, 2, 1, 128);
  std::vector<float> steps(ids.size() * static_cast<size_t>(V)), l;
  for (size_t i = 0; i < ids.size(); ++i) {
    REQUIRE(decode_all(*one, {ids[i]}, static_cast<int32_t>(i), 0, &l).ok());
    std::copy(l.begin(), l.end(), steps.begin() + static_cast<ptrdiff_t>(i * V));
  }
  auto c = ctx_on(*m, BackendChoice::cpu, CpuIsa::auto_detect, 2, 2, 128);
  const size_t kv_bytes = c->kv().k_bytes();
  for (int64_t n : {15, 16, 17, 19, 33, 47, 63, 65, 70, 100, 127, 128}) {
    INFO("n " << n << " plan rows " << token_bucket(n, 128));
    c->kv().clear();
    // Sequence 1 holds three tokens; its cells must not change.
    REQUIRE(decode_all(*c, {3, 4, 5}, 0, 1, &l).ok());
    const std::vector<uint8_t> k_before(static_cast<uint8_t*>(c->kv().k_base()),
                                        static_cast<uint8_t*>(c->kv().k_base()) + kv_bytes);
    const std::vector<int32_t> prefix(ids.begin(), ids.begin() + n);
    REQUIRE(decode_all(*c, prefix, 0, 0, &l).ok());  // every row's logits
    bool same = true;
    for (size_t i = 0; i < l.size() && same; ++i) same = l[i] == steps[i];
    CHECK(same);
    // Only sequence 0's first n cells changed, in every layer.
    const uint8_t* k_after = static_cast<const uint8_t*>(c->kv().k_base());
    const size_t layer = kv_bytes / static_cast<size_t>(m->hparams().n_layer);
    const size_t row = layer / static_cast<size_t>(2 * c->n_ctx());
    size_t changed_elsewhere = 0;
    for (size_t off = 0; off < kv_bytes; ++off) {
      const size_t cell = (off % layer) / row;  // stream 0: [0, n_ctx), stream 1 after
      if (cell >= static_cast<size_t>(n) && k_after[off] != k_before[off]) ++changed_elsewhere;
    }
    CHECK(changed_elsewhere == 0);
    // The last token only: the same row again.
    c->kv().seq_rm(0, 0, -1);
    std::vector<int32_t> pos(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    REQUIRE(c->decode(BatchView{static_cast<int32_t>(n), prefix.data(), pos.data(), nullptr, nullptr}).ok());
    REQUIRE(c->n_outputs() == 1);
    CHECK(std::equal(c->logits(0), c->logits(0) + V, steps.begin() + static_cast<ptrdiff_t>((n - 1) * V)));
  }
}

// n_gpu_layers 0 keeps the whole model on the host without creating the GPU backend:
// a GPU backend that cannot be created (no device) fails a context that puts layers
// on it, never one that puts none there.
TEST_CASE("n_gpu_layers 0 never creates the GPU backend", "[plan][ngl]") {
  static int creates = 0;
  static const BackendInfo no_device{"cuda", [](const BackendOptions&) -> Expected<std::unique_ptr<Backend>> {
                                       ++creates;
                                       return Status::unsupported("no GPU in this test");
                                     }};
  auto m = synth(ArchId::llama, 5, 3, "q8_0", 64);
  for (int ngl : {0, 1}) {
    INFO("n_gpu_layers " << ngl);
    creates = 0;
    ContextParams cp;
    cp.n_ctx = 64;
    cp.backend = BackendChoice::cuda;
    cp.gpu = &no_device;
    cp.n_gpu_layers = ngl;
    auto c = Context::create(*m, cp);
    CHECK(creates == ngl);
    CHECK(c.ok() == (ngl == 0));
    if (c.ok()) CHECK(std::string((*c)->backend_name()).rfind("cpu", 0) == 0);
  }
}

// A model split between the host and a second backend (ContextParams::
// n_gpu_layers, PassPart): the front plan (embedding, first layers) on the
// cpu backend, the back plan (the other layers, gathering the logits rows)
// on the "GPU", the head (output norm and projection) on the cpu again, with
// the KV cache split between the two. The ref backend stands in for the GPU
// here, so the split runs on every machine; test_cuda_model runs it on CUDA.
TEST_CASE("layers split between host and a second backend give the unsplit logits", "[plan][ngl]") {
  struct Cfg {
    ArchId arch;
    const char* weights;
  };
  for (const Cfg& cfg : {Cfg{ArchId::llama, "f32"}, Cfg{ArchId::gemma3, "q8_0"}}) {
    auto m = synth(cfg.arch, 5, 3, cfg.weights, cfg.arch == ArchId::gemma3 ? 256 : 64);
    const int L = static_cast<int>(m->hparams().n_layer);
    auto ref = ctx_on(*m, BackendChoice::ref, CpuIsa::auto_detect, 1, 2);
    const std::vector<float> want = two_sequence_trace(*ref, 3);
    REQUIRE(!want.empty());
    for (int ngl : {1, 2, 3, 4, 0}) {
      ContextParams cp;
      cp.n_ctx = 128;
      cp.n_batch = 64;
      cp.n_threads = 2;
      cp.kv_type = DType::F32;
      cp.n_seq_max = 2;
      cp.backend = BackendChoice::cuda;
      cp.gpu = &backend_ref();
      cp.n_gpu_layers = ngl;
      auto c = Context::create(*m, cp);
      REQUIRE(c.status().to_string() == "ok");
      INFO(cfg.weights << " n_gpu_layers " << ngl);
      CHECK((*c)->split() == (ngl >= 1 && ngl <= L));
      CHECK((*c)->split_layer() == ((*c)->split() ? L - ngl : 0));
      const std::string be = (*c)->backend_name();
      CHECK((ngl == 0 ? be.rfind("cpu", 0) == 0 : be == "ref"));
      const std::vector<float> got = two_sequence_trace(**c, 3);
      REQUIRE(got.size() == want.size());
      // The front and head run the cpu kernels (8-bit activations on
      // quantized weights); float weights agree to rounding.
      const double tol = std::string(cfg.weights) == "f32" ? 1e-9 : 2e-3;
      CHECK(nmse(want.data(), got.data(), want.size()) < tol);
      if (ngl == L) CHECK((*c)->kv().k_bytes(0) == 0);
      if (ngl == 1) CHECK((*c)->kv().k_bytes(0) == 2 * (*c)->kv().k_bytes(1));
    }
  }
}

TEST_CASE("greedy ids out: each logits row's argmax, picked where the logits are computed", "[plan][ids]") {
  // The op's strict rule: a row holding a NaN or an infinity gives -1.
  auto ref = backend_ref().create(BackendOptions{});
  REQUIRE(ref.ok());
  std::vector<float> x = {1, 3, 3, 2, NAN, 5, 1, 0, 1, INFINITY, 0, 0, -INFINITY, 0, 2, 0};
  std::vector<int32_t> y(4, 7);
  Tensor xt = make_tensor(DType::F32, x.data(), 4, 4), yt = make_tensor(DType::I32, y.data(), 4);
  REQUIRE((*ref)->run(OpCall{OpId::argmax, &yt, {&xt}, 1, nullptr}).ok());
  CHECK(y == std::vector<int32_t>{1, 1, 1, 2});
  const ArgmaxParams strict{true};
  REQUIRE((*ref)->run(OpCall{OpId::argmax, &yt, {&xt}, 1, &strict}).ok());
  CHECK(y == std::vector<int32_t>{1, -1, -1, -1});

  auto m = synth(ArchId::llama, 4, 4, "q8_0", 64);
  const int64_t V = m->hparams().n_vocab;
  for (int ngl : {-1, 2}) {
    INFO("n_gpu_layers " << ngl << " (-1: the cpu alone; 2: two layers and the head on a second backend)");
    ContextParams cp;
    cp.n_ctx = 128;
    cp.n_batch = 64;
    cp.n_threads = 2;
    cp.kv_type = DType::F32;
    if (ngl > 0) {
      cp.backend = BackendChoice::cuda;
      cp.gpu = &backend_ref();
      cp.n_gpu_layers = ngl;
    }
    auto made = Context::create(*m, cp);
    REQUIRE(made.status().to_string() == "ok");
    Context& c = **made;
    PassVariant ids_out;
    ids_out.ids_out = true;
    for (int n : {1, 6, 40}) {
      INFO(n << " tokens, every row's logits");
      const std::vector<int32_t> toks = some_ids(static_cast<size_t>(n), V, static_cast<uint32_t>(n));
      std::vector<int32_t> pos(toks.size());
      std::vector<int8_t> want_logits(toks.size(), 1);
      for (int i = 0; i < n; ++i) pos[static_cast<size_t>(i)] = i;
      const BatchView b{n, toks.data(), pos.data(), nullptr, want_logits.data()};
      c.kv().clear();
      REQUIRE(c.decode(b).ok());
      std::vector<int32_t> want(toks.size());
      for (int i = 0; i < n; ++i) want[static_cast<size_t>(i)] = argmax(c.logits(i), V);
      // The draws the sample op makes from these logits with uniforms u.
      PassVariant draw = ids_out;
      draw.draw = true;
      draw.sample = SampleParams{0.9f, 40, 0.95f, 0.05f};
      std::vector<float> u(toks.size());
      std::vector<int32_t> drawn(toks.size());
      for (int i = 0; i < n; ++i) u[static_cast<size_t>(i)] = static_cast<float>((i * 0.37) - static_cast<int>(i * 0.37));
      Tensor lt = make_tensor(DType::F32, const_cast<float*>(c.logits(0)), V, n);
      Tensor ut = make_tensor(DType::F32, u.data(), n), dt = make_tensor(DType::I32, drawn.data(), n);
      REQUIRE((*ref)->run(OpCall{OpId::sample, &dt, {&lt, &ut}, 2, &draw.sample}).ok());
      CHECK(c.greedy_id(0) == -2);
      c.kv().clear();
      REQUIRE(c.decode(b, ids_out).to_string() == "ok");
      CHECK(c.logits(0) == nullptr);
      CHECK(c.logits_tensor(0, 1).data == nullptr);
      for (int i = 0; i < n; ++i) CHECK(c.greedy_id(i) == want[static_cast<size_t>(i)]);
      CHECK(c.greedy_id(n) == -2);
      c.kv().clear();
      CHECK(!c.decode(b, draw).ok());  // a draw without uniforms
      c.kv().clear();
      REQUIRE(c.decode(b, draw, u.data()).to_string() == "ok");
      for (int i = 0; i < n; ++i) CHECK(c.greedy_id(i) == drawn[static_cast<size_t>(i)]);
      // The next plain decode returns logits again.
      c.kv().clear();
      REQUIRE(c.decode(b).ok());
      CHECK(argmax(c.logits(n - 1), V) == want.back());
    }
  }
}
