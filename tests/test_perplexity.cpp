// Perplexity by llama-perplexity's rule and the older all-positions rule, and
// llama.cpp's logits file (KL divergence): the chunking against hand-made
// expectations, the statistic against a hand computation on a tiny synthetic
// model, the file written and read back, KL(a, a) = 0, and bad files refused.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "model_test_util.h"
#include "runtime/eval/kl_divergence.h"
#include "runtime/eval/logits_file.h"
#include "runtime/eval/perplexity.h"
#include "runtime/eval/ppl_run.h"
#include "runtime/model/synth.h"
#include "runtime/tokenizer/tokenizer.h"

using namespace kestrel;
using namespace kestrel::eval;

namespace {

struct Tiny {
  std::vector<uint8_t> bytes;
  std::unique_ptr<Model> model;
  std::unique_ptr<Context> ctx;
};

// A 2-layer synthetic llama (SPM vocabulary of 320, BOS added) with a context of n_ctx.
Tiny make_tiny(int64_t n_ctx) {
  Tiny t;
  SynthSpec s;
  s.n_vocab = 320;
  s.n_ctx = 256;
  auto bytes = synth_model_gguf(s);
  REQUIRE(bytes.ok());
  t.bytes = std::move(bytes.value());
  auto m = Model::load_from_memory(t.bytes.data(), t.bytes.size(), ModelParams{});
  REQUIRE(m.ok());
  t.model = std::move(m.value());
  ContextParams cp;
  cp.n_ctx = n_ctx;
  cp.n_batch = n_ctx;
  cp.n_threads = 1;
  cp.kv_type = DType::F32;
  auto c = Context::create(*t.model, cp);
  REQUIRE(c.ok());
  t.ctx = std::move(c.value());
  return t;
}

// Words of the synthetic vocabulary ("▁w300" ... are single tokens), seeded.
std::string make_text(int n_words, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string text;
  for (int i = 0; i < n_words; ++i) text += (i ? " w" : "w") + std::to_string(259 + rng() % 61);
  return text;
}

std::string tmp_path(const char* name) { return std::string("test_perplexity_") + name; }

std::vector<char> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_all(const std::string& path, const std::vector<char>& b) {
  std::ofstream out(path, std::ios::binary);
  out.write(b.data(), static_cast<std::streamsize>(b.size()));
}

const auto always = [](const PplRunResult&) { return true; };

// A good logits file of two 32-token chunks of text, written to path; its bytes.
std::vector<char> write_base_file(Context& ctx, const std::string& text, const std::string& path) {
  PplRunParams w;
  w.n_ctx = 32;
  w.max_chunks = 2;
  w.kl_base_out = path;
  REQUIRE(run_perplexity(ctx, nullptr, text, w, always).ok());
  return read_all(path);
}

}  // namespace

TEST_CASE("llama rule: chunk count, first scored position, BOS per chunk", "[perplexity]") {
  auto p = plan_chunks(PplRule::llama, 1000, 128, 0, 1, true);
  REQUIRE(p.ok());
  CHECK(p->n_chunk == 7);  // 1000 / 128
  CHECK(p->first == 64);
  CHECK(p->n_scored_per_chunk() == 63);
  CHECK(p->stride == 128);
  CHECK(p->bos == 1);
  auto p3 = plan_chunks(PplRule::llama, 1000, 128, 3, 1, true);
  REQUIRE(p3.ok());
  CHECK(p3->n_chunk == 3);
  // Fewer than two chunks' worth of tokens: refused as llama-perplexity does.
  CHECK(plan_chunks(PplRule::llama, 255, 128, 0, 1, true).status().code() == StatusCode::invalid_argument);
  CHECK(plan_chunks(PplRule::llama, 256, 128, 0, 1, true).ok());
  CHECK(plan_chunks(PplRule::llama, 1000, 1, 0, 1, true).status().code() == StatusCode::invalid_argument);
  // A vocabulary without add_bos keeps each chunk's own first token.
  auto nb = plan_chunks(PplRule::llama, 600, 5, 0, 1, false);
  REQUIRE(nb.ok());
  CHECK(nb->bos == -1);
  CHECK(nb->first == 2);

  std::vector<int32_t> toks(20);
  for (int i = 0; i < 20; ++i) toks[static_cast<size_t>(i)] = 100 + i;
  auto q = plan_chunks(PplRule::llama, 20, 6, 0, 1, true);
  REQUIRE(q.ok());
  CHECK(q->n_chunk == 3);
  std::vector<int32_t> ids;
  chunk_tokens(*q, toks, 1, ids);
  CHECK(ids == std::vector<int32_t>{1, 107, 108, 109, 110, 111});  // BOS replaces token 6
  chunk_tokens(*nb, toks, 2, ids);
  CHECK(ids == std::vector<int32_t>{110, 111, 112, 113, 114});

  auto a = plan_chunks(PplRule::score_all, 20, 6, 0, 1, true);
  REQUIRE(a.ok());
  CHECK(a->stride == 5);  // BOS + 5 text tokens
  CHECK(a->n_chunk == 4);
  CHECK(a->first == 0);
  chunk_tokens(*a, toks, 1, ids);
  CHECK(ids == std::vector<int32_t>{1, 105, 106, 107, 108, 109});
}

TEST_CASE("perplexity statistic: llama-perplexity's uncertainty", "[perplexity]") {
  PplStats s;
  for (double v : {1.0, 2.0, 3.0, 4.0}) s.add(v);
  CHECK(s.ppl() == Approx(std::exp(2.5)).epsilon(1e-12));
  // population variance 1.25, over count - 1 = 3
  CHECK(s.ppl_error() == Approx(std::exp(2.5) * std::sqrt(1.25 / 3.0)).epsilon(1e-12));
  PplStats one;
  one.add(1.0);
  CHECK(one.ppl_error() == 0.0);
  const float logits[4] = {0.0f, 1.0f, 3.0f, 3.0f};
  const RowScore r = score_row(logits, 4, 1);
  CHECK(r.top1 == 2);  // the first of equal maxima
  const double lse = std::log(std::exp(0.0) + std::exp(1.0) + 2 * std::exp(3.0));
  CHECK(r.nll == Approx(lse - 1.0).epsilon(1e-12));
}

TEST_CASE("run_perplexity on a tiny model equals a hand computation of the rule", "[perplexity][model]") {
  Tiny t = make_tiny(32);
  const std::string text = make_text(150, 7);
  std::vector<int32_t> toks;
  REQUIRE(t.model->tokenizer().encode(text, true, false, toks).ok());
  REQUIRE(toks[0] == 1);  // BOS from the vocabulary
  const int32_t n_ctx = 32, V = static_cast<int32_t>(t.model->hparams().n_vocab);

  for (PplRule rule : {PplRule::llama, PplRule::score_all}) {
    INFO((rule == PplRule::llama ? "llama" : "score_all"));
    // By hand: which tokens each chunk decodes and which positions count.
    std::vector<int32_t> text_toks = toks;
    if (rule == PplRule::score_all) text_toks.erase(text_toks.begin());  // tokenized without BOS
    const int64_t stride = rule == PplRule::llama ? n_ctx : n_ctx - 1;
    const int32_t first = rule == PplRule::llama ? n_ctx / 2 : 0;
    const int64_t n_chunk = std::min<int64_t>(3, static_cast<int64_t>(text_toks.size()) / stride);
    double sum = 0, sum2 = 0;
    int64_t count = 0;
    std::vector<float> logits;
    for (int64_t c = 0; c < n_chunk; ++c) {
      std::vector<int32_t> ids;
      if (rule == PplRule::score_all) ids.push_back(1);
      ids.insert(ids.end(), text_toks.begin() + c * stride, text_toks.begin() + (c + 1) * stride);
      ids[0] = 1;
      t.ctx->kv().clear();
      REQUIRE(testutil::decode_all(*t.ctx, ids, 0, 0, &logits).ok());
      for (int32_t p = first; p + 1 < n_ctx; ++p) {
        const double nll = -testutil::log_softmax_at(logits.data() + static_cast<size_t>(p) * V, V, ids[p + 1]);
        sum += nll;
        sum2 += nll * nll;
        ++count;
      }
    }
    PplRunParams pp;
    pp.rule = rule;
    pp.n_ctx = n_ctx;
    pp.max_chunks = 3;
    int calls = 0;
    auto r = run_perplexity(*t.ctx, nullptr, text, pp, [&](const PplRunResult& so_far) {
      ++calls;
      CHECK(so_far.chunks_done == calls);
      return true;
    });
    REQUIRE(r.ok());
    CHECK(calls == n_chunk);
    CHECK(r->stats.count == count);
    CHECK(r->stats.count == n_chunk * (rule == PplRule::llama ? n_ctx - 1 - n_ctx / 2 : n_ctx - 1));
    const double mean = sum / count;
    CHECK(r->stats.ppl() == Approx(std::exp(mean)).epsilon(1e-6));
    CHECK(r->stats.ppl_error() ==
          Approx(std::exp(mean) * std::sqrt((sum2 / count - mean * mean) / (count - 1))).epsilon(1e-5));
  }
}

TEST_CASE("logits file: stored rows decode to the log-softmax within half a step", "[perplexity][kl]") {
  std::mt19937 rng(3);
  std::normal_distribution<float> g(0.0f, 4.0f);
  for (int32_t n_vocab : {1, 7, 320}) {
    std::vector<float> logits(static_cast<size_t>(n_vocab));
    for (auto& x : logits) x = g(rng);
    std::vector<uint16_t> row(static_cast<size_t>(logprob_row_u16(n_vocab)), 0xffff);
    const int32_t target = n_vocab / 2;
    const double nll = encode_logprob_row(logits.data(), n_vocab, target, row.data());
    CHECK(nll == Approx(score_row(logits.data(), n_vocab, target).nll).margin(1e-5));
    float scale, floor;
    std::memcpy(&scale, row.data(), 4);
    std::memcpy(&floor, row.data() + 2, 4);
    for (int32_t i = 0; i < n_vocab; ++i) {
      const double ls = testutil::log_softmax_at(logits.data(), n_vocab, i);
      if (ls < floor) continue;
      CHECK(std::fabs(scale * row[static_cast<size_t>(4 + i)] + floor - ls) <= 0.5 * scale + 1e-5);
    }
    if (n_vocab % 2) CHECK(row.back() == 0);  // the pad
    const KlRow k = kl_row(logits.data(), n_vocab, row.data(), target);
    CHECK(std::fabs(k.kld) < 1e-4);
    CHECK(k.same_top);
  }
}

TEST_CASE("KL divergence file: written by one run and read by another; KL(a, a) = 0", "[perplexity][kl][model]") {
  Tiny t = make_tiny(32);
  const std::string text = make_text(150, 11);
  const std::string path = tmp_path("base.kld");
  PplRunParams w;
  w.n_ctx = 32;
  w.max_chunks = 3;
  w.kl_base_out = path;
  auto base = run_perplexity(*t.ctx, nullptr, text, w, always);
  REQUIRE(base.ok());
  const int32_t V = static_cast<int32_t>(t.model->hparams().n_vocab);
  // Exact layout: header, 3 x 32 tokens, 3 x 15 rows of (V + 4) uint16 (V even).
  CHECK(read_all(path).size() == 20 + 3 * 32 * 4 + 3 * 15 * static_cast<size_t>(logprob_row_u16(V)) * 2);
  auto h = LogitsReader::peek(path);
  REQUIRE(h.ok());
  CHECK(h->n_ctx == 32);
  CHECK(h->n_vocab == V);
  CHECK(h->n_chunk == 3);

  PplRunParams r;
  r.kl_base_in = path;
  auto kl = run_perplexity(*t.ctx, nullptr, text, r, always);
  REQUIRE(kl.ok());
  REQUIRE(kl->has_kl);
  const KlSummary s = kl->kl.summary();
  CHECK(s.count == 45);
  CHECK(std::fabs(s.kld) < 1e-4);
  CHECK(s.kld_pct[0] < 1e-3);  // the largest
  CHECK(s.same_top == 1.0);
  CHECK(s.ppl == Approx(base->stats.ppl()).epsilon(1e-9));
  CHECK(s.ppl_base == Approx(base->stats.ppl()).epsilon(1e-3));
  CHECK(std::fabs(s.p_diff) < 1e-3);
  // Without a text the file's tokens are used as they are.
  auto no_text = run_perplexity(*t.ctx, nullptr, "", r, always);
  REQUIRE(no_text.ok());
  CHECK(no_text->kl.summary().kld == Approx(s.kld).margin(1e-12));
  std::remove(path.c_str());
}

TEST_CASE("KL divergence file: bad files are refused with a clear error", "[perplexity][kl][bad_inputs]") {
  Tiny t = make_tiny(32);
  const std::string text = make_text(150, 5);
  const std::string good = tmp_path("good.kld"), bad = tmp_path("bad.kld");
  const std::vector<char> bytes = write_base_file(*t.ctx, text, good);
  PplRunParams r;
  r.kl_base_in = bad;
  auto expect = [&](const std::vector<char>& b, const std::string& text_in, StatusCode code, const char* words) {
    write_all(bad, b);
    auto res = run_perplexity(*t.ctx, nullptr, text_in, r, always);
    REQUIRE_FALSE(res.ok());
    INFO(res.status().to_string());
    CHECK(res.status().code() == code);
    CHECK(res.status().message().find(words) != std::string::npos);
  };
  SECTION("truncated in the rows, in the tokens, in the header; empty") {
    for (size_t keep : {bytes.size() - 1, size_t{100}, size_t{15}, size_t{0}}) {
      INFO("kept " << keep);
      expect(std::vector<char>(bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(keep)), text,
             StatusCode::bad_file, "bytes");
    }
  }
  SECTION("longer than its header says") {
    std::vector<char> b = bytes;
    b.push_back(0);
    expect(b, text, StatusCode::bad_file, "need");
  }
  SECTION("wrong magic") {
    std::vector<char> b = bytes;
    b[0] = 'X';
    expect(b, text, StatusCode::bad_file, "_logits_");
  }
  SECTION("another vocabulary") {
    std::vector<char> b = bytes;
    const int32_t v = 32000;
    std::memcpy(b.data() + 12, &v, 4);
    expect(b, text, StatusCode::bad_file, "vocabulary");
  }
  SECTION("absurd header values") {
    for (int32_t bad_ctx : {-5, 0, 1 << 30}) {
      std::vector<char> b = bytes;
      std::memcpy(b.data() + 8, &bad_ctx, 4);
      expect(b, text, StatusCode::bad_file, "n_ctx");
    }
    std::vector<char> b = bytes;
    const int32_t huge = 0x7fffffff;
    std::memcpy(b.data() + 16, &huge, 4);  // n_chunk
    expect(b, text, StatusCode::bad_file, "bytes");
  }
  SECTION("a token outside the vocabulary") {
    std::vector<char> b = bytes;
    const int32_t id = 100000;
    std::memcpy(b.data() + 20 + 4 * 5, &id, 4);
    expect(b, "", StatusCode::bad_file, "outside the vocabulary");
  }
  SECTION("made from another text") {
    expect(bytes, make_text(150, 6), StatusCode::bad_file, "another text");
  }
  SECTION("a row that is not a stored row") {
    std::vector<char> b = bytes;
    const float nan = std::nanf("");
    std::memcpy(b.data() + 20 + 2 * 32 * 4, &nan, 4);  // the first row's scale
    expect(b, text, StatusCode::bad_file, "not a stored row");
  }
  SECTION("a file that is not there") {
    std::remove(bad.c_str());
    auto res = run_perplexity(*t.ctx, nullptr, text, r, always);
    CHECK(res.status().code() == StatusCode::io_error);
  }
  SECTION("score-all and a logits file do not mix") {
    PplRunParams m;
    m.n_ctx = 32;
    m.max_chunks = 2;
    m.kl_base_out = good;
    m.rule = PplRule::score_all;
    CHECK(run_perplexity(*t.ctx, nullptr, text, m, always).status().code() == StatusCode::invalid_argument);
  }
  std::remove(good.c_str());
  std::remove(bad.c_str());
}

TEST_CASE("run_perplexity: a reference context on the same weights agrees", "[perplexity][model]") {
  Tiny t = make_tiny(32);
  ContextParams cp;
  cp.n_ctx = 32;
  cp.n_batch = 32;
  cp.kv_type = DType::F32;
  auto ref = Context::create(*t.model, cp);
  REQUIRE(ref.ok());
  PplRunParams p;
  p.n_ctx = 32;
  p.max_chunks = 2;
  auto r = run_perplexity(*t.ctx, ref->get(), make_text(100, 2), p, always);
  REQUIRE(r.ok());
  REQUIRE(r->has_ref);
  CHECK(r->ref.n_same_top == r->stats.count);
  CHECK(r->ref.sum_kl / static_cast<double>(r->stats.count) < 1e-9);
  CHECK(r->ref.stats.ppl() == Approx(r->stats.ppl()).epsilon(1e-9));
  // A stop request ends the run with cancelled.
  auto stopped = run_perplexity(*t.ctx, nullptr, make_text(100, 2), p, [](const PplRunResult&) { return false; });
  CHECK(stopped.status().code() == StatusCode::cancelled);
}

TEST_CASE("KL divergence file: random damage is refused or read, never a crash", "[perplexity][kl][bad_inputs]") {
  Tiny t = make_tiny(32);
  const std::string text = make_text(150, 9);
  const std::string good = tmp_path("fuzz_good.kld"), bad = tmp_path("fuzz_bad.kld");
  const std::vector<char> bytes = write_base_file(*t.ctx, text, good);
  PplRunParams r;
  r.kl_base_in = bad;
  std::mt19937 rng(17);
  int refused = 0, read = 0;
  for (int i = 0; i < 150; ++i) {
    std::vector<char> b = bytes;
    // Damage the header and token list more often than the rows.
    const size_t span = i % 2 ? b.size() : std::min<size_t>(b.size(), 20 + 64 * 4 * 2);
    for (int k = 0; k < 1 + i % 4; ++k) b[rng() % span] = static_cast<char>(rng());
    if (i % 5 == 0) b.resize(rng() % b.size());
    write_all(bad, b);
    auto res = run_perplexity(*t.ctx, nullptr, "", r, always);
    if (res.ok()) {
      ++read;
      CHECK(std::isfinite(res->kl.summary().kld));
    } else {
      ++refused;
      INFO(res.status().to_string());
      CHECK(res.status().code() == StatusCode::bad_file);
    }
  }
  CHECK(refused > 0);
  CHECK(read > 0);  // codes flipped inside rows still make a file
  std::remove(good.c_str());
  std::remove(bad.c_str());
}
