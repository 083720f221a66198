// Whole models on the GPU (ContextParams::backend = cuda): weights resident
// once on the device, the KV cache on the device, each plan a device
// executable replayed as a CUDA graph from its second step.
//   - per architecture (llama, qwen2, gemma3) and weight type: a prompt with
//     every row's logits, then single-token steps, against the cpu context;
//   - stories260K greedy ids on the GPU equal the reference ids, picked on the
//     host from the logits and on the device (PassVariant::ids_out);
//   - device-side greedy over a 64-step decode (graphs replayed) equals the
//     host's argmax of the same context's logits;
//   - a 256-step greedy decode replaying graphs equals the same decode
//     launching node by node, and the decode plan does replay a graph;
//   - two sequences in one batch, and removing positions from the middle of
//     one (KV cells moved on the device), equal the cpu context;
//   - a context too large for the device is an out-of-memory status (no
//     abort), and a context made after it works;
//   - greedy speculative decoding with the target on the GPU (self drafting,
//     and a draft model also on the GPU) equals plain greedy on the GPU.
//   - -ngl: every split of the layers between host and GPU gives the cpu
//     context's logits (two sequences, KV cells moved in both parts).
// Without a GPU every case prints "SKIP: no CUDA device".
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "ops/cuda/cuda_backend.h"
#include "runtime/engine/context.h"
#include "runtime/spec/speculative.h"
#include "tests/model_test_util.h"
#include "tests/spec_test_util.h"

using namespace kestrel;
using namespace kestrel::testutil;
using kestrel::spectest::synth;

namespace {

bool have_gpu() {
  static const bool ok = backend_cuda().create(BackendOptions{}).ok();
  return ok;
}

#define NEED_GPU()                       \
  do {                                   \
    if (!have_gpu()) {                   \
      WARN("SKIP: no CUDA device");      \
      return;                            \
    }                                    \
  } while (0)

Expected<std::unique_ptr<Context>> make(const Model& m, BackendChoice be, int64_t n_ctx = 128, int32_t n_seq = 1,
                                        bool graphs = true, DType kv = DType::F16) {
  ContextParams cp;
  cp.n_ctx = n_ctx;
  cp.n_batch = 64;
  cp.n_threads = 2;
  cp.n_seq_max = n_seq;
  cp.kv_type = kv;
  cp.backend = be;
  cp.gpu = &backend_cuda();
  cp.gpu_graphs = graphs;
  return Context::create(m, cp);
}

std::unique_ptr<Context> ctx_on(const Model& m, BackendChoice be, int64_t n_ctx = 128, int32_t n_seq = 1,
                                bool graphs = true, DType kv = DType::F16) {
  auto c = make(m, be, n_ctx, n_seq, graphs, kv);
  REQUIRE(c.status().to_string() == "ok");
  return std::move(c).value();
}

std::vector<int32_t> some_ids(size_t n, int64_t V, uint32_t seed) {
  std::vector<int32_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((seed * 2654435761u + i * 40503u) % (uint32_t)V);
  return ids;
}

// Greedy ids after `prompt` (one token per step), n steps; on_device: the
// device picks them (PassVariant::ids_out), else the host from the logits.
std::vector<int32_t> greedy(Context& c, const std::vector<int32_t>& prompt, int n, bool on_device = false) {
  const int64_t V = c.model().hparams().n_vocab;
  PassVariant pv;
  pv.ids_out = on_device;
  auto next = [&](int32_t row) { return on_device ? c.greedy_id(row) : argmax(c.logits(row), V); };
  std::vector<int32_t> pos(prompt.size());
  for (size_t i = 0; i < pos.size(); ++i) pos[i] = static_cast<int32_t>(i);
  REQUIRE(c.decode(BatchView{static_cast<int32_t>(prompt.size()), prompt.data(), pos.data(), nullptr, nullptr}, pv)
              .ok());
  int32_t tok = next(0);
  int32_t p = static_cast<int32_t>(prompt.size());
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(tok);
    REQUIRE(c.decode(BatchView{1, &tok, &p, nullptr, nullptr}, pv).ok());
    tok = next(0);
    ++p;
  }
  return out;
}

}  // namespace

TEST_CASE("cuda context: logits of every architecture and weight type against the cpu context", "[cuda][model]") {
  NEED_GPU();
  struct Cfg {
    ArchId arch;
    const char* weights;
    double tol;  // NMSE bound: F32 to rounding; otherwise the 8-bit activations of the cpu kernels dominate
  };
  const Cfg cfgs[] = {
      {ArchId::llama, "f32", 1e-8},    {ArchId::llama, "f16", 1e-5},    {ArchId::llama, "bf16", 1e-5},
      {ArchId::llama, "q8_0", 2e-3},   {ArchId::llama, "q4_0", 2e-3},   {ArchId::qwen2, "q5_0", 2e-3},
      {ArchId::qwen2, "q8_0", 2e-3},   {ArchId::qwen2, "q4_k_m", 2e-3}, {ArchId::gemma3, "q4_k_m", 2e-3},
      {ArchId::gemma3, "q5_k", 2e-3},  {ArchId::gemma3, "q6_k", 2e-3},  {ArchId::gemma3, "f16", 1e-5},
  };
  for (const Cfg& cfg : cfgs) {
    auto m = synth(cfg.arch, 21, 3, cfg.weights, cfg.arch == ArchId::gemma3 ? 256 : 128);
    const int64_t V = m->hparams().n_vocab;
    auto gpu = ctx_on(*m, BackendChoice::cuda);
    auto cpu = ctx_on(*m, BackendChoice::cpu);
    INFO("arch " << int(cfg.arch) << " " << cfg.weights << " on " << gpu->backend_name());
    CHECK(std::string(gpu->backend_name()) == "cuda");
    const auto ids = some_ids(19, V, 5);  // 19 tokens: a padded bucket (20 rows)
    std::vector<float> lg, lc;
    REQUIRE(decode_all(*gpu, ids, 0, 0, &lg).ok());
    REQUIRE(decode_all(*cpu, ids, 0, 0, &lc).ok());
    double worst = nmse(lc.data(), lg.data(), lc.size());
    for (int32_t step = 0; step < 4; ++step) {
      const int32_t pos = 19 + step;
      REQUIRE(decode_all(*gpu, {ids[static_cast<size_t>(step)]}, pos, 0, &lg).ok());
      REQUIRE(decode_all(*cpu, {ids[static_cast<size_t>(step)]}, pos, 0, &lc).ok());
      worst = std::max(worst, nmse(lc.data(), lg.data(), static_cast<size_t>(V)));
    }
    std::printf("cuda vs cpu: arch %d %-6s worst NMSE %.3g\n", int(cfg.arch), cfg.weights, worst);
    CHECK(worst < cfg.tol);
    // The weights are resident once, whatever the number of plans.
    CHECK(gpu->plans().size() >= 2);
  }
}

TEST_CASE("cuda context: stories260K greedy ids equal the reference ids", "[cuda][model][stories]") {
  NEED_GPU();
  const std::string path = shared_path("models/stories260K/stories260K.gguf");
  if (!file_exists(path)) {
    WARN("SKIP: " << path << " not found");
    return;
  }
  auto m = Model::load(path, ModelParams{});
  REQUIRE(m.ok());
  const std::vector<int32_t> want = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338,
                                     401, 396, 267, 337, 410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385};
  for (DType kv : {DType::F32, DType::F16}) {
    auto c = ctx_on(**m, BackendChoice::cuda, 256, 1, true, kv);
    INFO("kv " << dtype_name(kv));
    // From BOS: the first greedy token follows BOS.
    CHECK(greedy(*c, {1}, 32) == want);
    c->kv().clear();
    CHECK(greedy(*c, {1}, 32, true) == want);
  }
}

TEST_CASE("cuda context: device-side greedy ids equal the host's argmax of the logits", "[cuda][model][ids]") {
  NEED_GPU();
  for (const char* w : {"f16", "q4_0", "q4_k_m"}) {
    INFO(w);
    auto m = synth(ArchId::llama, 8, 2, w, 128);
    auto c = ctx_on(*m, BackendChoice::cuda, 300, 1, true);
    const auto prompt = some_ids(7, m->hparams().n_vocab, 5);
    const auto host = greedy(*c, prompt, 64);
    c->kv().clear();
    CHECK(greedy(*c, prompt, 64, true) == host);
    CHECK(c->logits(0) == nullptr);
    CHECK(c->plans().n_replaying() >= 2);  // the one-token plans of both variants replay graphs
  }
}

TEST_CASE("cuda context: device-side top-k draws equal the sample op's on the same logits", "[cuda][model][ids]") {
  NEED_GPU();
  auto ref = backend_ref().create(BackendOptions{});
  REQUIRE(ref.ok());
  auto m = synth(ArchId::llama, 8, 2, "q8_0", 128);
  const int64_t V = m->hparams().n_vocab;
  auto c = ctx_on(*m, BackendChoice::cuda, 300, 1, true);
  PassVariant draw;
  draw.ids_out = draw.draw = true;
  draw.sample = SampleParams{0.9f, 40, 0.95f, 0.05f};
  auto ref_draw = [&](const float* logits, int n, const float* u) {
    std::vector<int32_t> ids(static_cast<size_t>(n));
    Tensor lt = make_tensor(DType::F32, const_cast<float*>(logits), V, n);
    Tensor ut = make_tensor(DType::F32, const_cast<float*>(u), n), dt = make_tensor(DType::I32, ids.data(), n);
    REQUIRE((*ref)->run(OpCall{OpId::sample, &dt, {&lt, &ut}, 2, &draw.sample}).ok());
    return ids;
  };
  // A prompt with every row drawn, then single steps (the one-token plan replays a graph).
  std::vector<int32_t> toks = some_ids(7, V, 9), pos(7);
  std::vector<int8_t> all(7, 1);
  std::vector<float> u(7);
  for (int i = 0; i < 7; ++i) pos[static_cast<size_t>(i)] = i, u[static_cast<size_t>(i)] = 0.13f * static_cast<float>(i);
  const BatchView b{7, toks.data(), pos.data(), nullptr, all.data()};
  REQUIRE(c->decode(b).ok());
  const std::vector<int32_t> want = ref_draw(c->logits(0), 7, u.data());
  c->kv().clear();
  REQUIRE(c->decode(b, draw, u.data()).ok());
  for (int i = 0; i < 7; ++i) CHECK(c->greedy_id(i) == want[static_cast<size_t>(i)]);
  int32_t tok = want.back(), p = 7;
  int same = 0;
  for (int step = 0; step < 40; ++step, ++p) {
    const float us = static_cast<float>((step * 0.618034) - static_cast<int>(step * 0.618034));
    REQUIRE(c->decode(BatchView{1, &tok, &p, nullptr, nullptr}).ok());
    const int32_t w = ref_draw(c->logits(0), 1, &us)[0];
    c->kv().seq_rm(0, p, -1);
    REQUIRE(c->decode(BatchView{1, &tok, &p, nullptr, nullptr}, draw, &us).ok());
    same += c->greedy_id(0) == w ? 1 : 0;
    tok = w;
  }
  CHECK(same >= 39);  // a uniform within rounding of a boundary may pick the neighbour
  CHECK(c->plans().n_replaying() >= 1);
}

TEST_CASE("cuda context: a 256-step decode replaying graphs equals launching node by node", "[cuda][model][graph]") {
  NEED_GPU();
  for (const char* w : {"q4_0", "q4_k_m"}) {
    auto m = synth(ArchId::llama, 8, 2, w, 128);
    auto graphs = ctx_on(*m, BackendChoice::cuda, 300, 1, true);
    auto eager = ctx_on(*m, BackendChoice::cuda, 300, 1, false);
    const auto prompt = some_ids(7, m->hparams().n_vocab, 3);
    const auto a = greedy(*graphs, prompt, 256), b = greedy(*eager, prompt, 256);
    INFO(w);
    CHECK(a == b);
    CHECK(graphs->plans().n_replaying() >= 1);  // the one-token plan replays a graph
    CHECK(eager->plans().n_replaying() == 0);
  }
}

TEST_CASE("cuda context: two sequences, and positions removed from the middle, equal the cpu context",
          "[cuda][model][kv]") {
  NEED_GPU();
  auto m = synth(ArchId::qwen2, 13, 2, "q8_0", 128);
  const int64_t V = m->hparams().n_vocab;
  auto gpu = ctx_on(*m, BackendChoice::cuda, 128, 2);
  auto cpu = ctx_on(*m, BackendChoice::cpu, 128, 2);
  const auto a = some_ids(12, V, 1), b = some_ids(5, V, 2);
  for (Context* c : {gpu.get(), cpu.get()}) {
    std::vector<int32_t> ids, pos, seq;
    for (size_t i = 0; i < a.size(); ++i) ids.push_back(a[i]), pos.push_back((int32_t)i), seq.push_back(0);
    for (size_t i = 0; i < b.size(); ++i) ids.push_back(b[i]), pos.push_back((int32_t)i), seq.push_back(1);
    REQUIRE(c->decode(BatchView{(int32_t)ids.size(), ids.data(), pos.data(), seq.data(), nullptr}).ok());
    c->kv().seq_rm(0, 3, 7);  // the later cells of sequence 0 move down, on the device for gpu
  }
  std::vector<float> lg, lc;
  REQUIRE(decode_all(*gpu, {9, 10}, 12, 0, &lg).ok());
  REQUIRE(decode_all(*cpu, {9, 10}, 12, 0, &lc).ok());
  CHECK(nmse(lc.data(), lg.data(), lc.size()) < 2e-3);
  REQUIRE(decode_all(*gpu, {11}, 5, 1, &lg).ok());
  REQUIRE(decode_all(*cpu, {11}, 5, 1, &lc).ok());
  CHECK(nmse(lc.data(), lg.data(), lc.size()) < 2e-3);
}

TEST_CASE("cuda context: a KV cache larger than the device is an error, and the next context works",
          "[cuda][model][oom]") {
  NEED_GPU();
  auto m = synth(ArchId::llama, 3, 2, "q8_0", 512);
  // 256 sequences x 1M cells x 512 x 2 layers x F32 K and V: far past any GPU.
  auto big = make(*m, BackendChoice::cuda, 1 << 20, 256, true, DType::F32);
  REQUIRE(!big.ok());
  CHECK(big.status().code() == StatusCode::out_of_memory);
  INFO(big.status().to_string());
  auto ok = ctx_on(*m, BackendChoice::cuda);
  std::vector<float> l;
  CHECK(decode_all(*ok, some_ids(5, m->hparams().n_vocab, 4), 0, 0, &l).ok());
}

TEST_CASE("cuda context: greedy speculative decoding equals plain greedy", "[cuda][model][spec]") {
  NEED_GPU();
  auto m = spectest::load_stories();
  if (!m) {
    WARN("SKIP: stories260K not found");
    return;
  }
  auto plain = ctx_on(*m, BackendChoice::cuda, 256);
  const auto ids = spectest::encode(*m, "Once upon a time, there was a little");
  const auto want = spectest::plain_greedy(*plain, ids, 48);
  // Self drafting: layers 1..2 skipped (a plan variant on the device).
  auto target = ctx_on(*m, BackendChoice::cuda, 256);
  SpecParams sp;
  sp.mode = SpecMode::self;
  sp.skip_begin = 1;
  sp.skip_end = 2;
  sp.draft_max = sp.draft_init = 4;
  auto self = SpecDecoder::create(*target, nullptr, sp);
  REQUIRE(self.ok());
  CHECK(spectest::spec_run(**self, ids, 48) == want);
  // A draft model's context on the device too (the same file: every draft accepted).
  auto target2 = ctx_on(*m, BackendChoice::cuda, 256);
  auto draft = ctx_on(*m, BackendChoice::cuda, 256);
  SpecParams dp;
  dp.mode = SpecMode::draft;
  dp.draft_max = dp.draft_init = 4;
  auto pair = SpecDecoder::create(*target2, draft.get(), dp);
  REQUIRE(pair.ok());
  CHECK(spectest::spec_run(**pair, ids, 48) == want);
  CHECK((*pair)->stats().mean_accepted() > 3.0);
}

// -ngl: the last n layers on the GPU, the embedding, the first layers, their
// KV cells and the output head on the host; every split (and 0: all on the
// cpu, n_layer + 1 or -1: all on the GPU) gives the cpu context's logits for a
// prompt with every row's logits, single-token steps after positions removed
// from the middle of the sequence (KV cells moved in both parts) and a second
// sequence in the same batch.
TEST_CASE("cuda context: -ngl splits at every layer boundary give the cpu context's logits", "[cuda][model][ngl]") {
  NEED_GPU();
  struct Cfg {
    ArchId arch;
    const char* weights;
    double tol;
  };
  for (const Cfg& cfg : {Cfg{ArchId::llama, "f32", 1e-8}, Cfg{ArchId::gemma3, "q8_0", 2e-3}}) {
    auto m = synth(cfg.arch, 31, 3, cfg.weights, cfg.arch == ArchId::gemma3 ? 256 : 128);
    const int L = static_cast<int>(m->hparams().n_layer);
    auto cpu = ctx_on(*m, BackendChoice::cpu, 128, 2);
    const std::vector<float> want = two_sequence_trace(*cpu, 7);
    REQUIRE(!want.empty());
    for (int ngl : {0, 1, 2, 3, 4, -1}) {
      ContextParams cp;
      cp.n_ctx = 128;
      cp.n_batch = 64;
      cp.n_threads = 2;
      cp.n_seq_max = 2;
      cp.backend = BackendChoice::cuda;
      cp.gpu = &backend_cuda();
      cp.n_gpu_layers = ngl;
      auto c = Context::create(*m, cp);
      REQUIRE(c.status().to_string() == "ok");
      Context& ctx = **c;
      INFO(cfg.weights << " n_gpu_layers " << ngl << " on " << ctx.backend_name());
      CHECK(ctx.split() == (ngl >= 1 && ngl <= L));
      if (ctx.split()) CHECK(ctx.split_layer() == L - ngl);
      CHECK(std::string(ctx.backend_name()) == (ngl == 0 ? std::string(cpu->backend_name()) : std::string("cuda")));
      const std::vector<float> got = two_sequence_trace(ctx, 7);
      REQUIRE(got.size() == want.size());
      const double e = nmse(want.data(), got.data(), want.size());
      std::printf("-ngl %d (%s %s): NMSE %.3g against the cpu context\n", ngl, cfg.weights,
                  cfg.arch == ArchId::gemma3 ? "gemma3" : "llama", e);
      CHECK(e < cfg.tol);
    }
  }
}
