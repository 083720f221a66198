// The scheduler with a draft model (runtime/serve/spec_slots.h): several
// slots' drafts verified in one target batch give the tokens of plain serving,
// whatever ends a request inside a round (cancel, stop string, max_tokens, a
// full context), and the caches stay right for the slot's next request.
#include <catch2/catch.hpp>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <vector>

#include "kestrel/server.h"
#include "model_test_util.h"
#include "runtime/model/synth.h"
#include "runtime/serve/scheduler.h"
#include "tests/serve_test_util.h"

using namespace kestrel;
using namespace kestrel::serve;
using namespace kestrel::servetest;

namespace {

// A scheduler over its own contexts: plain (draft == nullptr) or speculative.
struct Served {
  std::unique_ptr<Context> ctx, dctx;
  std::unique_ptr<Scheduler> sched;
  // Round lengths come from a fixed draft-pass cost (SpecSlotParams::pass_cost,
  // a fifth of a target step), not from clocks: on a loaded machine the clocks
  // can switch drafting off, and these checks need rounds to happen.
  Served(const Model& target, const Model* draft, int32_t n_slots, int64_t n_ctx, int32_t draft_max = 6,
         double pass_cost = 0.2) {
    ctx = slots_ctx(target, n_slots, n_ctx);
    SchedulerParams sp;
    sp.n_chunk = 7;  // prompts read in pieces beside the other slots' rounds
    if (draft) {
      dctx = slots_ctx(*draft, n_slots, n_ctx);
      sp.draft = dctx.get();
      sp.spec.draft_max = draft_max;
      sp.spec.pass_cost = pass_cost;
    }
    auto s = Scheduler::create(*ctx, sp);
    REQUIRE(s.status().to_string() == "ok");
    sched = std::move(s).value();
  }
  // Runs the requests together; each collector gets its events.
  void run(std::vector<Request> reqs) {
    std::vector<Collector*> cs;
    for (Request& r : reqs) {
      cs.push_back(static_cast<Collector*>(r.user));
      REQUIRE(sched->submit(std::move(r)).ok());
    }
    for (Collector* c : cs) REQUIRE(c->wait());
  }
};

void check_same(const Collector& spec, const Collector& plain) {
  CHECK(spec.finish == plain.finish);
  CHECK(spec.tokens == plain.tokens);
  CHECK(spec.text == plain.text);
  CHECK(spec.usage.n_generated == plain.usage.n_generated);
  REQUIRE(spec.logprobs.size() == plain.logprobs.size());
  // Quantized weights: a row's logits do not depend on the batch it was decoded in.
  CHECK(std::memcmp(spec.logprobs.data(), plain.logprobs.data(), plain.logprobs.size() * sizeof(float)) == 0);
}

}  // namespace

TEST_CASE("speculative slots give the tokens of plain serving", "[serve][scheduler][spec]") {
  auto target = synth_model("q8_0", 512);
  auto other = synth_model("q4_0", 512);  // the same weights quantized coarser: a draft that agrees often, not always
  const int n_req = 4, n_gen = 24;
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < n_req; ++i) prompts.push_back(prompt_of(5 + 11 * i, i));

  Served plain(*target, nullptr, n_req, 128);
  std::vector<Collector> want(n_req);
  std::vector<Request> reqs;
  for (int i = 0; i < n_req; ++i) reqs.push_back(greedy(prompts[i], n_gen, want[i]));
  plain.run(std::move(reqs));
  CHECK(plain.sched->stats().n_spec_rounds == 0);

  for (const Model* draft : {target.get(), other.get()}) {
    const bool self = draft == target.get();
    INFO((self ? "the target as its own draft" : "a q4_0 draft"));
    // A draft pass at a fifth of a target step (Served's default): drafting pays
    // at the acceptance seen, whatever this machine's clocks say (under emulation
    // a self-draft's pass can cost what the step does, and drafting then switches off).
    Served spec(*target, draft, n_req, 128, 6);
    std::vector<Collector> got(n_req);
    reqs.clear();
    for (int i = 0; i < n_req; ++i) reqs.push_back(greedy(prompts[i], n_gen, got[i]));
    spec.run(std::move(reqs));
    for (int i = 0; i < n_req; ++i) {
      INFO("request " << i);
      check_same(got[i], want[i]);
      CHECK(got[i].usage.n_generated == n_gen);
    }
    const SchedulerStats st = spec.sched->stats();
    CHECK(st.n_spec_requests == n_req);
    CHECK(st.n_generated_tokens == n_req * n_gen);
    REQUIRE(st.n_spec_rounds > 0);
    int64_t rounds = 0, drafts = 0;
    for (int g = 1; g <= SpecPolicy::kMaxDraft; ++g) {
      rounds += st.spec_rounds_by_g[g];
      drafts += g * st.spec_rounds_by_g[g];
    }
    CHECK(rounds == st.n_spec_rounds);
    CHECK(drafts == st.n_spec_drafted);
    if (self) {
      CHECK(st.n_spec_accepted == st.n_spec_drafted);
      // Several tokens per round: fewer target batches than plain serving decoded.
      CHECK(st.n_steps < plain.sched->stats().n_steps);
    } else {
      CHECK(st.n_spec_accepted > 0);
      CHECK(st.n_spec_accepted < st.n_spec_drafted);
    }
  }
}

TEST_CASE("p_min and a draft vocabulary subset shorten drafts, not change tokens", "[serve][scheduler][spec]") {
  auto target = synth_model("q8_0", 512);
  auto other = synth_model("q4_0", 512);
  const std::vector<int32_t> p0 = prompt_of(9, 1), p1 = prompt_of(17, 2);
  Served plain(*target, nullptr, 2, 128);
  std::vector<Collector> want(2);
  plain.run({greedy(p0, 24, want[0]), greedy(p1, 24, want[1])});
  struct Case {
    float p_min;
    int32_t draft_vocab;
  };
  for (const Case& c : {Case{0.6f, 0}, Case{0.0f, 200}, Case{0.3f, 280}}) {
    INFO("p_min " << c.p_min << ", draft_vocab " << c.draft_vocab);
    auto ctx = slots_ctx(*target, 2, 128);
    auto dctx = slots_ctx(*other, 2, 128);
    SchedulerParams sp;
    sp.draft = dctx.get();
    sp.spec.p_min = c.p_min;
    sp.spec.draft_vocab = c.draft_vocab;
    sp.spec.pass_cost = 0.2;  // as Served: rounds whatever the clocks say
    auto sched = Scheduler::create(*ctx, sp);
    REQUIRE(sched.ok());
    std::vector<Collector> got(2);
    REQUIRE((*sched)->submit(greedy(p0, 24, got[0])).ok());
    REQUIRE((*sched)->submit(greedy(p1, 24, got[1])).ok());
    for (int i = 0; i < 2; ++i) {
      REQUIRE(got[i].wait());
      check_same(got[i], want[i]);
    }
    CHECK((*sched)->stats().n_spec_rounds > 0);
  }
}

TEST_CASE("requests the verify rule does not cover decode plainly beside speculating slots", "[serve][scheduler][spec]") {
  auto target = synth_model("q8_0", 512);
  auto run = [&](const Model* draft, std::vector<Collector>& cs) {
    Served s(*target, draft, 4, 128);
    std::vector<Request> reqs;
    reqs.push_back(greedy(prompt_of(9, 1), 20, cs[0]));
    reqs.push_back(greedy(prompt_of(14, 2), 20, cs[1]));
    reqs.push_back(greedy(prompt_of(12, 3), 20, cs[2]));
    reqs.back().sampling.repeat_penalty = 1.3f;  // moves the argmax
    reqs.push_back(greedy(prompt_of(10, 4), 20, cs[3]));
    reqs.back().sampling.temperature = 0.9f;  // with min-p (0.05 by default), outside the exact rule
    reqs.back().sampling.seed = 77;
    s.run(std::move(reqs));
    return s.sched->stats();
  };
  std::vector<Collector> want(4), got(4);
  run(nullptr, want);
  const SchedulerStats st = run(target.get(), got);
  CHECK(st.n_spec_requests == 2);
  CHECK(st.n_spec_rounds > 0);
  for (int i = 0; i < 4; ++i) {
    INFO("request " << i);
    check_same(got[i], want[i]);
  }
}

TEST_CASE("sampled requests speculate with the exact rule: top-k kept, a seed repeats", "[serve][scheduler][spec]") {
  auto target = synth_model("q8_0", 512);
  auto other = synth_model("q4_0", 512);
  auto sampled = [](const std::vector<int32_t>& p, uint64_t seed, Collector& c) {
    Request r = greedy(p, 32, c);
    r.sampling.temperature = 0.8f;
    r.sampling.top_k = 12;
    r.sampling.top_p = 0.9f;
    r.sampling.min_p = 0.0f;
    r.sampling.seed = seed;
    r.n_top_logprobs = 12;
    return r;
  };
  for (const Model* draft : {target.get(), other.get()}) {
    const bool self = draft == target.get();
    INFO((self ? "the target as its own draft" : "a q4_0 draft"));
    std::vector<Collector> a(3), b(3);
    for (std::vector<Collector>* cs : {&a, &b}) {
      Served spec(*target, draft, 3, 128);
      spec.run({sampled(prompt_of(9, 1), 11, (*cs)[0]), sampled(prompt_of(15, 2), 12, (*cs)[1]),
                greedy(prompt_of(7, 3), 32, (*cs)[2])});
      const SchedulerStats st = spec.sched->stats();
      CHECK(st.n_spec_requests == 3);
      REQUIRE(st.n_spec_rounds > 0);
      // Identical target and draft rows: p == q, so every draft is accepted.
      if (self) CHECK(st.n_spec_accepted == st.n_spec_drafted);
      else CHECK(st.n_spec_accepted < st.n_spec_drafted);
    }
    for (int i = 0; i < 3; ++i) {
      INFO("request " << i);
      CHECK(a[i].finish == FinishReason::length);
      CHECK(a[i].usage.n_generated == 32);
      CHECK(a[i].tokens == b[i].tokens);  // the same seeds, the same tokens
    }
    // Each sampled token is among the target's 12 most probable at its position (top-k).
    for (int i = 0; i < 3; ++i) CHECK(a[i].in_top);
    // Alone in a scheduler of one slot: the same tokens again.
    Served again(*target, draft, 1, 128);
    Collector c;
    again.run({sampled(prompt_of(9, 1), 11, c)});
    CHECK(c.tokens == a[0].tokens);
  }
}

TEST_CASE("cancel, stop strings and max_tokens inside a speculative round", "[serve][scheduler][spec]") {
  auto target = synth_model("q8_0", 512);
  const std::vector<int32_t> p = prompt_of(12, 5);
  // The target drafts for itself: every round accepts all of its drafts, so a
  // request that ends after a few tokens ends inside a round.
  Served plain(*target, nullptr, 1, 128);
  Served spec(*target, target.get(), 1, 128, 8);
  Collector full;
  plain.run({greedy(p, 32, full)});
  REQUIRE(full.text.size() >= 12);

  // After each ending, the slot's next request (the same prompt, from its
  // cache) must give the full greedy text: the caches kept only what a plain
  // run would have decoded.
  auto again = [&] {
    Collector c;
    spec.run({greedy(p, 32, c)});
    CHECK(c.usage.n_cached > 0);
    check_same(c, full);
  };

  SECTION("the callback cancels") {
    for (int k : {2, 5, 9}) {
      INFO("cancel at text event " << k);
      Collector a, b;
      a.cancel_after = b.cancel_after = k;
      plain.run({greedy(p, 32, a)});
      spec.run({greedy(p, 32, b)});
      CHECK(b.finish == FinishReason::cancelled);
      check_same(b, a);
      again();
    }
  }
  SECTION("a stop string") {
    for (size_t at : {full.text.size() / 3, full.text.size() / 2}) {
      const std::string stop = full.text.substr(at, 2);
      INFO("stop '" << stop << "'");
      Collector a, b;
      Request ra = greedy(p, 32, a), rb = greedy(p, 32, b);
      ra.stop = rb.stop = {stop};
      plain.run({std::move(ra)});
      spec.run({std::move(rb)});
      CHECK(b.finish == FinishReason::stop);
      CHECK(b.text == full.text.substr(0, full.text.find(stop)));
      check_same(b, a);
      again();
    }
  }
  SECTION("max_tokens") {
    for (int n : {1, 2, 3, 7, 10}) {
      INFO("max_tokens " << n);
      Collector b;
      spec.run({greedy(p, n, b)});
      CHECK(b.finish == FinishReason::length);
      REQUIRE(b.tokens.size() == static_cast<size_t>(n));
      CHECK(std::vector<int32_t>(full.tokens.begin(), full.tokens.begin() + n) == b.tokens);
      again();
    }
  }
  CHECK(spec.sched->stats().n_spec_rounds > 0);
}

TEST_CASE("a speculating slot stops where its context is full", "[serve][scheduler][spec]") {
  auto target = synth_model("q8_0", 512);
  auto other = synth_model("q4_0", 512);
  const int64_t n_ctx = 48;
  for (const Model* draft : {target.get(), other.get()}) {
    Served plain(*target, nullptr, 2, n_ctx);
    Served spec(*target, draft, 2, n_ctx, 8);
    std::vector<Collector> want(2), got(2);
    plain.run({greedy(prompt_of(30, 1), -1, want[0]), greedy(prompt_of(20, 2), -1, want[1])});
    spec.run({greedy(prompt_of(30, 1), -1, got[0]), greedy(prompt_of(20, 2), -1, got[1])});
    for (int i = 0; i < 2; ++i) {
      INFO("request " << i);
      CHECK(got[i].finish == FinishReason::length);
      check_same(got[i], want[i]);
    }
    CHECK(spec.sched->stats().n_spec_rounds > 0);
  }
}

TEST_CASE("a draft the target cannot use is refused at create", "[serve][scheduler][spec]") {
  auto target = synth_model("q8_0", 512);
  auto wide = synth_model("q8_0", 512, 600);  // another vocabulary
  auto ctx = slots_ctx(*target, 2, 64);
  auto dctx = slots_ctx(*wide, 2, 64);
  SchedulerParams sp;
  sp.draft = dctx.get();
  auto s = Scheduler::create(*ctx, sp);
  REQUIRE(!s.ok());
  CHECK(s.status().code() == StatusCode::invalid_argument);
  CHECK(s.status().message().find("draft model is incompatible") != std::string::npos);

  auto one = slots_ctx(*target, 1, 64);  // fewer sequences than slots
  sp.draft = one.get();
  s = Scheduler::create(*ctx, sp);
  REQUIRE(!s.ok());
  CHECK(s.status().message().find("sequences") != std::string::npos);

  auto dctx2 = slots_ctx(*target, 2, 64);
  sp.draft = dctx2.get();
  sp.spec.draft_max = 0;
  s = Scheduler::create(*ctx, sp);
  REQUIRE(!s.ok());
  CHECK(s.status().code() == StatusCode::invalid_argument);

  sp.spec.draft_max = 4;
  for (double bad : {-0.5, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    sp.spec.pass_cost = bad;
    s = Scheduler::create(*ctx, sp);
    REQUIRE(!s.ok());
    CHECK(s.status().message().find("pass_cost") != std::string::npos);
  }
}

namespace {
struct CState {
  std::mutex mu;
  std::condition_variable cv;
  std::string text;
  bool done = false;
  int32_t finish = -1;
};
int c_on_event(const kestrel_request_event* e, void* user) {
  auto* s = static_cast<CState*>(user);
  std::lock_guard<std::mutex> lock(s->mu);
  s->text.append(e->text, e->text_len);
  if (e->done) {
    s->done = true;
    s->finish = e->finish_reason;
    s->cv.notify_all();
  }
  return 1;
}
}  // namespace

TEST_CASE("speculative serving through the C API", "[serve][spec][c_api]") {
  const std::string path = testutil::shared_path("models/stories260K/stories260K.gguf");
  if (!testutil::file_exists(path)) {
    WARN("SKIP: " << path << " not found");
    return;
  }
  kestrel_model_params mp = kestrel_model_default_params();
  kestrel_model* model = nullptr;
  REQUIRE(kestrel_model_load(path.c_str(), &mp, &model) == KESTREL_OK);
  kestrel_context_params cp = kestrel_context_default_params();
  cp.n_ctx = 128;
  cp.n_seq_max = 2;
  cp.n_threads = 2;
  kestrel_context *ctx = nullptr, *dctx = nullptr, *small = nullptr;
  REQUIRE(kestrel_context_create(model, &cp, &ctx) == KESTREL_OK);
  REQUIRE(kestrel_context_create(model, &cp, &dctx) == KESTREL_OK);
  cp.n_seq_max = 1;
  REQUIRE(kestrel_context_create(model, &cp, &small) == KESTREL_OK);

  kestrel_scheduler_params sp = kestrel_scheduler_default_params();
  CHECK(sp.draft == nullptr);
  CHECK(sp.draft_max == 8);
  kestrel_scheduler* sched = nullptr;
  sp.draft = ctx;  // the target's own context
  CHECK(kestrel_scheduler_create(ctx, &sp, &sched) == KESTREL_ERR_INVALID_ARGUMENT);
  sp.draft = small;  // one sequence for two slots
  CHECK(kestrel_scheduler_create(ctx, &sp, &sched) == KESTREL_ERR_INVALID_ARGUMENT);
  CHECK(std::string(kestrel_last_error(nullptr)).find("sequences") != std::string::npos);
  CHECK(sched == nullptr);

  kestrel_token ids[64];
  int32_t n = 0;
  REQUIRE(kestrel_tokenize(model, "Once upon a time", 16, 1, 0, ids, 64, &n) == KESTREL_OK);
  auto complete = [&](kestrel_scheduler* s) {
    kestrel_request_params rp = kestrel_request_default_params();
    rp.prompt = ids;
    rp.n_prompt = n;
    rp.max_tokens = 40;
    rp.sampling.temperature = 0.0f;
    CState st;
    rp.on_event = c_on_event;
    rp.user_data = &st;
    uint64_t id = 0;
    REQUIRE(kestrel_scheduler_submit(s, &rp, &id) == KESTREL_OK);
    std::unique_lock<std::mutex> lock(st.mu);
    REQUIRE(st.cv.wait_for(lock, std::chrono::seconds(60), [&] { return st.done; }));
    return st.text;
  };
  REQUIRE(kestrel_scheduler_create(ctx, nullptr, &sched) == KESTREL_OK);
  const std::string plain = complete(sched);
  kestrel_scheduler_free(sched);

  sp.draft = dctx;
  sp.draft_max = 4;
  REQUIRE(kestrel_scheduler_create(ctx, &sp, &sched) == KESTREL_OK);
  CHECK(complete(sched) == plain);
  kestrel_scheduler_stats st;
  kestrel_scheduler_get_stats(sched, &st);
  CHECK(st.n_spec_requests == 1);
  CHECK(st.n_spec_rounds > 0);
  // The model drafts for itself; F32 rows of other batch shapes may part on a near-tie.
  CHECK(st.n_spec_accepted > 0);
  int64_t rounds = 0;
  for (int g = 1; g <= 4; ++g) rounds += st.spec_rounds_by_g[g];
  CHECK(rounds == st.n_spec_rounds);
  for (int g = 5; g <= 32; ++g) CHECK(st.spec_rounds_by_g[g] == 0);  // draft_max 4
  kestrel_scheduler_free(sched);
  kestrel_context_free(small);
  kestrel_context_free(dctx);
  kestrel_context_free(ctx);
  kestrel_model_free(model);
}

TEST_CASE("a draft behind after plain steps is fed only the last 16 tokens; a new prompt whole", "[serve][spec]") {
  auto target = synth_model("q8_0", 512);
  auto draft = synth_model("q4_0", 512);
  auto tctx = slots_ctx(*target, 1, 128);
  auto dctx = slots_ctx(*draft, 1, 128);
  auto slots = SpecSlots::create(*tctx, *dctx, SpecSlotParams{});
  REQUIRE(slots.status().to_string() == "ok");
  SpecSlots& spec = **slots;
  SamplerParams greedy_params;
  greedy_params.temperature = 0.0f;
  REQUIRE(spec.start(0, 0, greedy_params));
  const KvCache& kv = dctx->kv();
  int32_t drafts[4] = {};
  auto round = [&](const std::vector<int32_t>& cache, int32_t g) {
    SpecSlots::Job j;
    j.cache = cache;
    j.pending = 7;
    j.g = g;
    j.drafts = drafts;
    REQUIRE(spec.draft(std::span<SpecSlots::Job>(&j, 1)).ok());
    return j.n;
  };
  // The first round feeds the whole prompt (30 tokens) and the pending token.
  std::vector<int32_t> cache = prompt_of(30, 1);
  REQUIRE(round(cache, 1) == 1);
  CHECK(kv.seq_n_cells(0) == 31);
  spec.trim(0, 31);
  // 40 plain steps later: the tokens 31..70 fed only from 55 on, then the pending
  // token and one draft pass.
  cache.push_back(7);
  for (int i = 0; i < 40; ++i) cache.push_back(3 + i);
  REQUIRE(cache.size() == 71);
  REQUIRE(round(cache, 2) == 2);
  CHECK(kv.seq_pos_max(0) == 72);
  CHECK(kv.seq_n_cells(0) == 31 + 16 + 1 + 1);
  // A new request in the slot: its prompt is fed whole, however long.
  REQUIRE(spec.start(0, 0, greedy_params));
  CHECK(kv.seq_n_cells(0) == 0);
  std::vector<int32_t> prompt = prompt_of(50, 2);
  REQUIRE(round(prompt, 1) == 1);
  CHECK(kv.seq_n_cells(0) == 51);
}
