// End-to-end golden tests on the real stories260K model (../shared/models):
// greedy ids, teacher-forced NLL, ref vs cpu logits, batch vs incremental
// decoding, several sequences at once, KV truncation, and zero heap
// allocations per generated token.
#include <atomic>
#include <cstdlib>
#include <new>

#include <catch2/catch.hpp>

#include "model_test_util.h"

using namespace kestrel;
using namespace kestrel::testutil;

#include "tests/alloc_counter.h"

namespace {

const std::vector<int32_t> kGreedy = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338,
                                      401, 396, 267, 337, 410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385};
const std::vector<int32_t> kSentence = {1,   385, 328, 432, 261, 280, 305, 330, 272, 414, 444, 272,
                                        277, 264, 261, 262, 415, 271, 422, 410, 354, 422, 318, 264,
                                        285, 265, 334, 341, 334, 412, 433, 259, 276, 411, 426};
constexpr double kSentenceNll = 54.404;

struct Loaded {
  std::unique_ptr<Model> model;
};

std::unique_ptr<Model> load_gguf() {
  const std::string path = shared_path("models/stories260K/stories260K.gguf");
  if (!file_exists(path)) return nullptr;
  auto m = Model::load(path, ModelParams{});
  REQUIRE(m.status().to_string() == "ok");
  return std::move(m).value();
}

std::unique_ptr<Model> load_bin() {
  const std::string path = shared_path("models/stories260K/stories260K.bin");
  if (!file_exists(path)) return nullptr;
  ModelParams mp;
  mp.llama2c_tokenizer_path = shared_path("models/stories260K/tok512.bin");
  auto m = Model::load(path, mp);
  REQUIRE(m.status().to_string() == "ok");
  return std::move(m).value();
}

std::unique_ptr<Context> make_ctx(const Model& m, BackendChoice be, int threads = 1, DType kv = DType::F32,
                                  int32_t n_seq = 1) {
  ContextParams cp;
  cp.n_ctx = 256;
  cp.n_batch = 64;
  cp.n_threads = threads;
  cp.backend = be;
  cp.kv_type = kv;
  cp.n_seq_max = n_seq;
  auto c = Context::create(m, cp);
  REQUIRE(c.status().to_string() == "ok");
  return std::move(c).value();
}

std::vector<int32_t> greedy(Context& ctx, int n) {
  std::vector<int32_t> out;
  int32_t tok = 1, pos = 0;
  for (int i = 0; i < n; ++i) {
    BatchView b{1, &tok, &pos, nullptr, nullptr};
    REQUIRE(ctx.decode(b).to_string() == "ok");
    tok = argmax(ctx.logits(0), ctx.model().hparams().n_vocab);
    out.push_back(tok);
    ++pos;
  }
  return out;
}

double sentence_nll(Context& ctx, std::vector<float>* logits_out = nullptr) {
  std::vector<float> logits;
  REQUIRE(decode_all(ctx, kSentence, 0, 0, &logits).to_string() == "ok");
  const int64_t V = ctx.model().hparams().n_vocab;
  double nll = 0;
  for (size_t i = 0; i + 1 < kSentence.size(); ++i) nll -= log_softmax_at(&logits[i * V], V, kSentence[i + 1]);
  if (logits_out) *logits_out = logits;
  return nll;
}

}  // namespace

TEST_CASE("stories260K greedy ids from BOS match the reference", "[model][stories]") {
  for (bool bin : {false, true}) {
    auto m = bin ? load_bin() : load_gguf();
    if (!m) {
      WARN("SKIP: ../shared/models/stories260K not found");
      return;
    }
    for (BackendChoice be : {BackendChoice::ref, BackendChoice::cpu}) {
      for (DType kv : {DType::F32, DType::F16}) {
        INFO((bin ? ".bin" : ".gguf") << (be == BackendChoice::ref ? " ref" : " cpu") << " kv " << dtype_name(kv));
        auto ctx = make_ctx(*m, be, 2, kv);
        CHECK(greedy(*ctx, 32) == kGreedy);
      }
    }
  }
}

TEST_CASE("stories260K teacher-forced NLL of the reference sentence", "[model][stories]") {
  auto m = load_gguf();
  if (!m) {
    WARN("SKIP: stories260K.gguf not found");
    return;
  }
  auto ref = make_ctx(*m, BackendChoice::ref);
  auto cpu = make_ctx(*m, BackendChoice::cpu, 2);
  std::vector<float> lr, lc;
  const double nll_ref = sentence_nll(*ref, &lr);
  const double nll_cpu = sentence_nll(*cpu, &lc);
  CHECK(std::abs(nll_ref - kSentenceNll) < 0.01);
  CHECK(std::abs(nll_cpu - kSentenceNll) < 0.01);
  const double e = nmse(lr.data(), lc.data(), lr.size());
  INFO("ref vs cpu logit NMSE " << e);
  CHECK(e < 1e-8);
}

TEST_CASE("incremental decoding equals one batch", "[model][stories]") {
  auto m = load_gguf();
  if (!m) {
    WARN("SKIP: stories260K.gguf not found");
    return;
  }
  auto a = make_ctx(*m, BackendChoice::cpu);
  auto b = make_ctx(*m, BackendChoice::cpu);
  std::vector<float> batch;
  REQUIRE(decode_all(*a, kSentence, 0, 0, &batch).to_string() == "ok");
  const int64_t V = m->hparams().n_vocab;
  // Uneven chunks: 1, then 5, then the rest one token at a time.
  size_t i = 0;
  for (size_t chunk : {size_t(1), size_t(5)}) {
    std::vector<int32_t> ids(kSentence.begin() + static_cast<ptrdiff_t>(i),
                             kSentence.begin() + static_cast<ptrdiff_t>(i + chunk));
    std::vector<float> l;
    REQUIRE(decode_all(*b, ids, static_cast<int32_t>(i), 0, &l).to_string() == "ok");
    CHECK(nmse(&batch[i * V], l.data(), l.size()) < 1e-10);
    i += chunk;
  }
  for (; i < kSentence.size(); ++i) {
    std::vector<float> l;
    REQUIRE(decode_all(*b, {kSentence[i]}, static_cast<int32_t>(i), 0, &l).to_string() == "ok");
    CHECK(nmse(&batch[i * V], l.data(), static_cast<size_t>(V)) < 1e-10);
  }
}

TEST_CASE("two sequences in one batch equal each run alone; truncation restores state", "[model][stories][kv]") {
  auto m = load_gguf();
  if (!m) {
    WARN("SKIP: stories260K.gguf not found");
    return;
  }
  const int64_t V = m->hparams().n_vocab;
  const std::vector<int32_t> s0(kSentence.begin(), kSentence.begin() + 12);
  const std::vector<int32_t> s1 = {1, 403, 407, 261, 378, 432, 383, 286};
  auto solo = make_ctx(*m, BackendChoice::cpu);
  std::vector<float> l0, l1;
  REQUIRE(decode_all(*solo, s0, 0, 0, &l0).to_string() == "ok");
  solo->kv().clear();
  REQUIRE(decode_all(*solo, s1, 0, 0, &l1).to_string() == "ok");

  auto both = make_ctx(*m, BackendChoice::cpu, 2, DType::F32, 2);
  // Interleave the two sequences in one batch.
  std::vector<int32_t> ids, pos, seq;
  std::vector<int8_t> flags;
  for (size_t i = 0; i < std::max(s0.size(), s1.size()); ++i) {
    if (i < s0.size()) ids.push_back(s0[i]), pos.push_back(static_cast<int32_t>(i)), seq.push_back(0), flags.push_back(1);
    if (i < s1.size()) ids.push_back(s1[i]), pos.push_back(static_cast<int32_t>(i)), seq.push_back(1), flags.push_back(1);
  }
  BatchView b{static_cast<int32_t>(ids.size()), ids.data(), pos.data(), seq.data(), flags.data()};
  REQUIRE(both->decode(b).to_string() == "ok");
  size_t i0 = 0, i1 = 0;
  for (int32_t r = 0; r < b.n_tokens; ++r) {
    const float* got = both->logits(r);
    if (seq[static_cast<size_t>(r)] == 0) {
      CHECK(nmse(&l0[i0++ * V], got, static_cast<size_t>(V)) < 1e-10);
    } else {
      CHECK(nmse(&l1[i1++ * V], got, static_cast<size_t>(V)) < 1e-10);
    }
  }

  // Truncate sequence 0 after 6 tokens and re-run its tail: same logits as before.
  both->kv().seq_rm(0, 6, -1);
  CHECK(both->kv().seq_pos_max(0) == 5);
  CHECK(both->kv().seq_pos_max(1) == static_cast<int32_t>(s1.size()) - 1);
  std::vector<int32_t> tail(s0.begin() + 6, s0.end());
  std::vector<float> lt;
  REQUIRE(decode_all(*both, tail, 6, 0, &lt).to_string() == "ok");
  CHECK(nmse(&l0[6 * V], lt.data(), lt.size()) < 1e-10);
}

TEST_CASE("bad batches are errors and leave the cache unchanged", "[model][stories][bad-input]") {
  auto m = load_gguf();
  if (!m) {
    WARN("SKIP: stories260K.gguf not found");
    return;
  }
  auto ctx = make_ctx(*m, BackendChoice::cpu);
  int32_t tok = 1, pos = 0, bad_tok = 512, neg = -1, seq = 3;
  CHECK(ctx->decode(BatchView{0, &tok, &pos, nullptr, nullptr}).code() == StatusCode::invalid_argument);
  CHECK(ctx->decode(BatchView{1, &bad_tok, &pos, nullptr, nullptr}).code() == StatusCode::invalid_argument);
  CHECK(ctx->decode(BatchView{1, &neg, &pos, nullptr, nullptr}).code() == StatusCode::invalid_argument);
  CHECK(ctx->decode(BatchView{1, &tok, &neg, nullptr, nullptr}).code() == StatusCode::invalid_argument);
  CHECK(ctx->decode(BatchView{1, &tok, &pos, &seq, nullptr}).code() == StatusCode::invalid_argument);
  CHECK(ctx->kv().seq_n_cells(0) == 0);
  // A prompt longer than the context.
  std::vector<int32_t> many(300, 5), ps(300);
  for (int i = 0; i < 300; ++i) ps[static_cast<size_t>(i)] = i;
  CHECK(ctx->decode(BatchView{300, many.data(), ps.data(), nullptr, nullptr}).code() == StatusCode::too_long);
  CHECK(ctx->kv().seq_n_cells(0) == 0);
}

TEST_CASE("steady-state decoding makes no heap allocation", "[model][stories][alloc]") {
  auto m = load_gguf();
  if (!m) {
    WARN("SKIP: stories260K.gguf not found");
    return;
  }
  for (int threads : {1, 2}) {
    auto ctx = make_ctx(*m, BackendChoice::cpu, threads);
    int32_t tok = 1, pos = 0;
    auto step = [&] {
      BatchView b{1, &tok, &pos, nullptr, nullptr};
      REQUIRE(ctx->decode(b).ok());
      tok = argmax(ctx->logits(0), m->hparams().n_vocab);
      ++pos;
    };
    for (int i = 0; i < 4; ++i) step();  // warm-up: scratch buffers grow once
    const long before = g_allocs.load();
    for (int i = 0; i < 32; ++i) step();
    INFO("threads " << threads);
    CHECK(g_allocs.load() - before == 0);
  }
}
