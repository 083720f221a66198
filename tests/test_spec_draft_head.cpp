// The draft head options of speculative decoding: the vocabulary-subset head
// (draft_vocab: the draft scores only ids [0, N) through a row view of the
// output matrix, Forward::set_output_rows) and the p_min draft-length cut.
// Neither may change the output: greedy speculative output stays plain
// greedy's, and the target still scores the whole vocabulary.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <kestrel/kestrel.h>

#include "runtime/model/synth.h"
#include "runtime/spec/speculative.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/model_test_util.h"
#include "tests/spec_test_util.h"

using namespace kestrel;
using namespace kestrel::testutil;
using namespace kestrel::spectest;

namespace {

const char* kPrompts[] = {"Once upon a time", "Lily went to the park and", "The cat sat"};

}  // namespace

TEST_CASE("forward: output row subset equals the full projection's prefix", "[spec][draft_head]") {
  struct Cfg {
    ArchId arch;
    const char* weights;
    int64_t n_embd;
  };
  // q8_0 / q4_k_m: the view cuts a quantized matrix between rows of blocks;
  // gemma3: tied output (the view is of tok_embd) and a final soft-cap.
  const Cfg cfgs[] = {{ArchId::llama, "f32", 64}, {ArchId::qwen2, "q8_0", 64}, {ArchId::gemma3, "q4_k_m", 256}};
  for (const Cfg& cfg : cfgs) {
    auto m = synth(cfg.arch, 5, 2, cfg.weights, cfg.n_embd);
    const int64_t V = m->hparams().n_vocab;
    auto full = make_ctx(*m), sub = make_ctx(*m);
    const std::vector<int32_t> toks = {1, 40, 7, 99, 3};
    const std::vector<int32_t> pos = {0, 1, 2, 3, 4};
    std::vector<int8_t> all(toks.size(), 1);
    for (int64_t nv : {int64_t(1), int64_t(37), int64_t(256), V - 1}) {
      for (bool every_row : {false, true}) {
        INFO("arch " << int(cfg.arch) << " " << cfg.weights << " rows " << nv << (every_row ? " every row" : " last row"));
        full->kv().clear();
        sub->kv().clear();
        BatchView b{int32_t(toks.size()), toks.data(), pos.data(), nullptr, every_row ? all.data() : nullptr};
        REQUIRE(full->decode(b).ok());
        PassVariant head;
        head.out_vocab = nv;
        REQUIRE(sub->decode(b, head).ok());
        REQUIRE(sub->n_outputs() == full->n_outputs());
        double worst = 0.0;
        bool tail_ok = true;
        for (int32_t r = 0; r < full->n_outputs(); ++r) {
          const float* a = full->logits(r);
          const float* s = sub->logits(r);
          for (int64_t i = 0; i < nv; ++i) worst = std::max(worst, double(std::fabs(a[i] - s[i])));
          for (int64_t i = nv; i < V; ++i) tail_ok = tail_ok && s[i] == -std::numeric_limits<float>::infinity();
        }
        // Same rows, same kernels: equal up to the rounding of a tile edge.
        CHECK(worst <= 1e-4);
        CHECK(tail_ok);
      }
    }
  }
}

TEST_CASE("spec: vocabulary-subset draft and p_min keep greedy output", "[spec][draft_head]") {
  for (ArchId arch : {ArchId::llama, ArchId::qwen2, ArchId::gemma3}) {
    auto target = synth(arch, 21, 4, "q8_0");
    auto draft = synth(arch, 22, 2, "q8_0");
    auto tctx = make_ctx(*target), rctx = make_ctx(*target), dctx = make_ctx(*draft, 1);
    const int64_t V = target->hparams().n_vocab;
    struct Cfg {
      SpecMode mode;
      int32_t vocab;
      float p_min;
    };
    // Subsets from tiny (most target tokens are outside it) to all but one id.
    const Cfg cfgs[] = {{SpecMode::draft, 8, 0.0f},         {SpecMode::draft, 100, 0.0f},
                        {SpecMode::draft, int32_t(V - 1), 0.3f}, {SpecMode::draft, 0, 0.5f},
                        {SpecMode::self, 64, 0.0f},         {SpecMode::self, 0, 0.2f},
                        {SpecMode::self, 200, 0.4f}};
    for (const Cfg& cfg : cfgs) {
      SpecParams sp;
      sp.mode = cfg.mode;
      sp.skip_auto = false;
      sp.skip_begin = 1;
      sp.skip_end = 2;
      sp.draft_max = 6;
      sp.draft_vocab = cfg.vocab;
      sp.p_min = cfg.p_min;
      auto dec = SpecDecoder::create(*tctx, cfg.mode == SpecMode::draft ? dctx.get() : nullptr, sp);
      REQUIRE(dec.ok());
      int64_t drafted = 0, rounds = 0;
      for (const char* prompt : kPrompts) {
        const auto ids = encode(*target, prompt);
        INFO("arch " << int(arch) << (cfg.mode == SpecMode::self ? " self" : " draft") << " vocab " << cfg.vocab
                     << " p_min " << cfg.p_min << " prompt " << prompt);
        CHECK(spec_run(**dec, ids, 40) == plain_greedy(*rctx, ids, 40));
        drafted += (*dec)->stats().n_drafted;
        rounds += (*dec)->stats().n_rounds;
      }
      std::printf("arch %d %s vocab %d p_min %.1f: %lld rounds, %lld drafted\n", int(arch),
                  cfg.mode == SpecMode::self ? "self" : "draft", cfg.vocab, cfg.p_min, (long long)rounds,
                  (long long)drafted);
      CHECK(rounds > 0);
    }
    // Neither context is left changed: a plain decode scores every row.
    for (Context* c : {dctx.get(), tctx.get()}) {
      c->kv().clear();
      const int32_t t = 1, p = 0;
      REQUIRE(c->decode(BatchView{1, &t, &p, nullptr, nullptr}).ok());
      CHECK(std::isfinite(c->logits(0)[c->model().hparams().n_vocab - 1]));
    }
  }
}

TEST_CASE("spec: p_min 1 drafts one token a round; a subset never drafts outside it", "[spec][draft_head]") {
  auto model = load_stories();
  if (!model) {
    WARN("SKIP: stories260K not found in ../shared/models");
    return;
  }
  auto ctx = make_ctx(*model), dctx = make_ctx(*model, 1);
  SpecParams sp;
  sp.mode = SpecMode::draft;
  sp.draft_max = 8;
  sp.adaptive = false;  // rounds of 8 (the policy could stop drafting on this pair)
  sp.p_min = 1.0f;  // no probability is above 1 but a certain one: every round stops after its first draft
  auto dec = SpecDecoder::create(*ctx, dctx.get(), sp);
  REQUIRE(dec.ok());
  const auto ids = encode(*model, "Once upon a time");
  spec_run(**dec, ids, 40);
  const SpecStats& s = (*dec)->stats();
  CHECK(s.n_drafted == s.n_rounds);
  CHECK(s.n_pmin_stops > 0);

  // Draft = target with a subset of 64 ids: a draft is accepted only when the
  // target's token is in the subset, so acceptance equals the share of emitted
  // tokens (those checked by a draft) below 64, up to rounding near-ties.
  sp.p_min = 0.0f;
  sp.draft_vocab = 64;
  auto sdec = SpecDecoder::create(*ctx, dctx.get(), sp);
  REQUIRE(sdec.ok());
  const auto out = spec_run(**sdec, ids, 60);
  const SpecStats& t = (*sdec)->stats();
  int64_t below = 0;
  for (int32_t id : out) below += id < 64;
  std::printf("stories260K draft = target, vocab 64: %lld of %zu tokens below 64, %lld drafted, %lld accepted\n",
              (long long)below, out.size(), (long long)t.n_drafted, (long long)t.n_accepted);
  CHECK(t.n_accepted <= below);
  CHECK(t.n_accepted < t.n_drafted);
}

TEST_CASE("spec: draft head parameters are validated", "[spec][draft_head][bad]") {
  auto m = synth(ArchId::llama, 3, 2);
  auto ctx = make_ctx(*m), dctx = make_ctx(*m, 1);
  SpecParams sp;
  sp.mode = SpecMode::draft;
  sp.draft_vocab = -1;
  CHECK(!SpecDecoder::create(*ctx, dctx.get(), sp).ok());
  sp.draft_vocab = 0;
  for (float bad : {-0.1f, 1.5f, std::numeric_limits<float>::quiet_NaN()}) {
    sp.p_min = bad;
    CHECK(!SpecDecoder::create(*ctx, dctx.get(), sp).ok());
  }
  sp.p_min = 0.5f;
  sp.draft_vocab = 1 << 30;  // larger than the vocabulary: all ids
  CHECK(SpecDecoder::create(*ctx, dctx.get(), sp).ok());
}

namespace {
int collect(const char* piece, size_t len, int32_t, void* user) {
  static_cast<std::string*>(user)->append(piece, len);
  return 1;
}
}  // namespace

TEST_CASE("spec: C API draft_vocab and p_min", "[spec][draft_head][c_api]") {
  const std::string path = shared_path("models/stories260K/stories260K.gguf");
  if (!file_exists(path)) {
    WARN("SKIP: stories260K not found in ../shared/models");
    return;
  }
  kestrel_model* m = nullptr;
  REQUIRE(kestrel_model_load(path.c_str(), nullptr, &m) == KESTREL_OK);
  kestrel_context_params cp = kestrel_context_default_params();
  cp.n_ctx = 256;
  cp.n_threads = 2;
  kestrel_context *ctx = nullptr, *dctx = nullptr;
  REQUIRE(kestrel_context_create(m, &cp, &ctx) == KESTREL_OK);
  REQUIRE(kestrel_context_create(m, &cp, &dctx) == KESTREL_OK);
  kestrel_sampler_params sp = kestrel_sampler_default_params();
  sp.temperature = 0.0f;
  std::string plain;
  REQUIRE(kestrel_generate(ctx, "Once upon a time", 50, &sp, collect, &plain) == KESTREL_OK);
  kestrel_spec_params p = kestrel_spec_default_params();
  CHECK(p.draft_vocab == 0);
  CHECK(p.p_min == 0.0f);
  p.mode = KESTREL_SPEC_DRAFT;
  p.draft_vocab = 300;
  p.p_min = 0.6f;
  std::string got;
  kestrel_spec_stats st;
  REQUIRE(kestrel_generate_spec(ctx, dctx, "Once upon a time", 50, &sp, &p, collect, &got, &st) == KESTREL_OK);
  CHECK(got == plain);
  std::printf("C API draft = target, vocab 300, p-min 0.6: %lld drafted, %lld accepted, %lld rounds cut by p-min\n",
              (long long)st.n_drafted, (long long)st.n_accepted, (long long)st.n_pmin_stops);
  CHECK(st.n_pmin_stops >= 0);
  CHECK(st.n_pmin_stops <= st.n_rounds);
  p.p_min = 2.0f;
  CHECK(kestrel_generate_spec(ctx, dctx, "x", 5, &sp, &p, nullptr, nullptr, nullptr) == KESTREL_ERR_INVALID_ARGUMENT);
  CHECK(std::string(kestrel_last_error(ctx)).find("p_min") != std::string::npos);
  p.p_min = 0.0f;
  p.draft_vocab = -5;
  CHECK(kestrel_generate_spec(ctx, dctx, "x", 5, &sp, &p, nullptr, nullptr, nullptr) == KESTREL_ERR_INVALID_ARGUMENT);
  kestrel_context_free(dctx);
  kestrel_context_free(ctx);
  kestrel_model_free(m);
}
