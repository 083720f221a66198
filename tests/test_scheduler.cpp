// The request scheduler (runtime/serve/scheduler.h, kestrel/server.h): a
// greedy request gives bit for bit the same tokens and log-probabilities
// whether it runs alone or beside others (quantized weights: the engine's batch
// consistency), prefix reuse skips the shared prompt and still gives the same
// tokens, stop strings never leak, limits, cancel, queue and input errors.
#include <catch2/catch.hpp>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "kestrel/server.h"
#include "model_test_util.h"
#include "runtime/model/synth.h"
#include "runtime/serve/scheduler.h"
#include "runtime/serve/stop_scanner.h"
#include "tests/serve_test_util.h"

using namespace kestrel;
using namespace kestrel::serve;
using namespace kestrel::servetest;

TEST_CASE("stop scanner: held back prefixes, matches across pieces, UTF-8 boundaries", "[serve][stop]") {
  StopScanner s;
  s.reset({"END", "\n\n"});
  auto r = s.push("abc E");
  CHECK(!r.stopped);
  CHECK(r.release_end == 4);  // "abc " out, "E" could start "END"
  s.mark_released(r.release_end);
  r = s.push("N");
  CHECK(r.release_end == 4);  // "EN" still a prefix
  r = s.push("Dx");
  CHECK(r.stopped);
  CHECK(r.release_end == 4);
  CHECK(s.text() == "abc ");

  s.reset({"END"});
  r = s.push("EX");  // "E" then "X": not a stop
  CHECK(!r.stopped);
  CHECK(r.release_end == 2);

  s.reset({});
  r = s.push("caf\xC3");  // an incomplete character is not released
  CHECK(r.release_end == 3);
  s.mark_released(3);
  r = s.push("\xA9!");
  CHECK(r.release_end == 6);

  s.reset({"\xC3\xA9t\xC3\xA9"});  // "été"
  r = s.push("l\xC3\xA9t");
  CHECK(r.release_end == 1);
  s.mark_released(1);
  r = s.push("\xC3\xA9 fin");
  CHECK(r.stopped);
  CHECK(s.text() == "l");
  CHECK(utf8_boundary_before("a\xE2\x82\xAC", 3) == 1);
}

TEST_CASE("greedy requests give the same tokens alone and in a batch of four", "[serve][scheduler]") {
  for (const char* w : {"q8_0", "q4_0"}) {
    INFO(w);
    auto m = synth_model(w, 256);
    const int n_req = 4, n_gen = 24;
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < n_req; ++i) prompts.push_back(prompt_of(5 + 13 * i, i));

    // Alone: one slot, one request at a time, a fresh scheduler each.
    std::vector<Collector> alone(n_req);
    for (int i = 0; i < n_req; ++i) {
      auto ctx = slots_ctx(*m, 1, 128);
      auto sched = Scheduler::create(*ctx, SchedulerParams{});
      REQUIRE(sched.status().to_string() == "ok");
      REQUIRE((*sched)->submit(greedy(prompts[i], n_gen, alone[i])).ok());
      REQUIRE(alone[i].wait());
    }
    // Together: four slots, prompt chunks of 7 tokens so that prompts are read
    // in pieces beside the other slots' generation.
    auto ctx = slots_ctx(*m, n_req, 128);
    SchedulerParams sp;
    sp.n_chunk = 7;
    auto sched = Scheduler::create(*ctx, sp);
    REQUIRE(sched.ok());
    std::vector<Collector> together(n_req);
    for (int i = 0; i < n_req; ++i) REQUIRE((*sched)->submit(greedy(prompts[i], n_gen, together[i])).ok());
    for (int i = 0; i < n_req; ++i) {
      INFO("request " << i);
      REQUIRE(together[i].wait());
      CHECK(together[i].finish == FinishReason::length);
      CHECK(together[i].usage.n_generated == n_gen);
      CHECK(together[i].usage.n_prompt == static_cast<int32_t>(prompts[i].size()));
      REQUIRE(alone[i].tokens.size() == static_cast<size_t>(n_gen));
      CHECK(together[i].tokens == alone[i].tokens);
      CHECK(std::memcmp(together[i].logprobs.data(), alone[i].logprobs.data(), alone[i].logprobs.size() * sizeof(float)) == 0);
      CHECK(together[i].text == alone[i].text);
      // Mostly byte tokens (random weights over a byte-fallback vocabulary):
      // every event still holds whole characters.
      for (const std::string& piece : together[i].pieces) {
        CHECK((static_cast<unsigned char>(piece[0]) & 0xC0u) != 0x80u);
        CHECK(utf8_boundary_before(piece, piece.size()) == piece.size());
      }
    }
    const SchedulerStats st = (*sched)->stats();
    CHECK(st.n_requests_done == n_req);
    CHECK(st.n_generated_tokens == n_req * n_gen);
    // Steps packed several slots: fewer decodes than one per token and prompt chunk.
    CHECK(st.n_steps < n_req * n_gen);
  }
}

TEST_CASE("a slot reuses the prompt prefix it shares with its last request", "[serve][scheduler]") {
  auto m = synth_model("q8_0", 256);
  auto ctx = slots_ctx(*m, 2, 128);
  auto sched = Scheduler::create(*ctx, SchedulerParams{});
  REQUIRE(sched.ok());
  const std::vector<int32_t> a = prompt_of(40, 1);
  std::vector<int32_t> b(a.begin(), a.begin() + 30);
  for (int i = 0; i < 6; ++i) b.push_back(7 + i);
  const std::vector<int32_t> other = prompt_of(20, 9);
  Collector ca, co;
  REQUIRE((*sched)->submit(greedy(a, 4, ca)).ok());
  REQUIRE(ca.wait());
  // Another request in between takes the other (empty) slot: LRU on equal prefixes.
  REQUIRE((*sched)->submit(greedy(other, 4, co)).ok());
  REQUIRE(co.wait());
  CHECK(co.usage.n_cached == 0);
  Collector cb;
  REQUIRE((*sched)->submit(greedy(b, 8, cb)).ok());
  REQUIRE(cb.wait());
  CHECK(cb.usage.n_cached == 30);
  // The whole prompt again: all but the last token come from the cache.
  Collector cb2;
  REQUIRE((*sched)->submit(greedy(b, 8, cb2)).ok());
  REQUIRE(cb2.wait());
  CHECK(cb2.usage.n_cached == static_cast<int32_t>(b.size()) - 1);
  CHECK(cb2.tokens == cb.tokens);
  CHECK((*sched)->stats().n_cached_tokens == 30 + static_cast<int64_t>(b.size()) - 1);

  // The same tokens as a fresh context that decodes the whole prompt.
  auto ctx2 = slots_ctx(*m, 1, 128);
  auto fresh = Scheduler::create(*ctx2, SchedulerParams{});
  REQUIRE(fresh.ok());
  Collector cf;
  REQUIRE((*fresh)->submit(greedy(b, 8, cf)).ok());
  REQUIRE(cf.wait());
  CHECK(cf.usage.n_cached == 0);
  CHECK(cf.tokens == cb.tokens);
  CHECK(std::memcmp(cf.logprobs.data(), cb.logprobs.data(), cb.logprobs.size() * sizeof(float)) == 0);
}

TEST_CASE("stop strings end a request and never reach its text", "[serve][scheduler]") {
  auto m = synth_model("q8_0", 256);
  auto ctx = slots_ctx(*m, 1, 128);
  auto sched = Scheduler::create(*ctx, SchedulerParams{});
  REQUIRE(sched.ok());
  const std::vector<int32_t> p = prompt_of(10, 3);
  Collector full;
  REQUIRE((*sched)->submit(greedy(p, 32, full)).ok());
  REQUIRE(full.wait());
  REQUIRE(full.text.size() >= 8);
  // A stop string from the middle of the greedy text: the text ends right before it.
  const size_t at = full.text.size() / 2;
  const std::string stop = full.text.substr(at, 3);
  const size_t first = full.text.find(stop);
  Collector c;
  Request r = greedy(p, 32, c);
  r.stop = {stop, "never appears \x01"};
  REQUIRE((*sched)->submit(std::move(r)).ok());
  REQUIRE(c.wait());
  CHECK(c.finish == FinishReason::stop);
  CHECK(c.text == full.text.substr(0, first));
  CHECK(c.usage.n_generated < 32);
}

TEST_CASE("cancel, callback cancel, queue limit and bad requests", "[serve][scheduler]") {
  auto m = synth_model("q8_0", 512);
  auto ctx = slots_ctx(*m, 1, 256);
  SchedulerParams sp;
  sp.max_queue = 1;
  auto sched_r = Scheduler::create(*ctx, sp);
  REQUIRE(sched_r.ok());
  Scheduler& sched = **sched_r;
  const std::vector<int32_t> p = prompt_of(8, 5);

  Collector longest, queued;
  REQUIRE(sched.submit(greedy(p, -1, longest)).ok());  // runs until its context is full
  auto q = sched.submit(greedy(p, 4, queued));
  REQUIRE(q.ok());
  // The slot is busy and one request waits: a third is refused.
  Collector refused;
  auto third = sched.submit(greedy(p, 4, refused));
  if (third.ok()) {
    // The first finished already (a fast machine): nothing to check here.
    WARN("SKIP: the first request ended before the queue filled");
    REQUIRE(refused.wait());
  } else {
    CHECK(third.status().code() == StatusCode::too_long);
    CHECK(third.status().message().find("queue") != std::string::npos);
  }
  sched.cancel(*q);
  REQUIRE(queued.wait());
  CHECK(queued.finish == FinishReason::cancelled);
  CHECK(queued.usage.n_generated == 0);

  Collector by_callback;
  by_callback.cancel_after = 3;
  REQUIRE(sched.submit(greedy(p, 200, by_callback)).ok());
  REQUIRE(longest.wait());
  CHECK(longest.finish == FinishReason::length);
  CHECK(longest.usage.n_generated == 256 - 8 + 1);  // the last token is emitted, not decoded
  REQUIRE(by_callback.wait());
  CHECK(by_callback.finish == FinishReason::cancelled);
  CHECK(by_callback.pieces.size() == 3);

  // The slot still serves after cancellations.
  Collector after;
  REQUIRE(sched.submit(greedy(p, 5, after)).ok());
  REQUIRE(after.wait());
  CHECK(after.finish == FinishReason::length);
  CHECK(after.usage.n_generated == 5);

  Collector unused;
  CHECK(sched.submit(greedy({}, 4, unused)).status().code() == StatusCode::invalid_argument);
  CHECK(sched.submit(greedy({1, 320}, 4, unused)).status().code() == StatusCode::invalid_argument);
  CHECK(sched.submit(greedy(prompt_of(257, 1), 4, unused)).status().code() == StatusCode::too_long);
  Request bad = greedy(p, 4, unused);
  bad.sampling.top_p = std::nanf("");
  CHECK(sched.submit(std::move(bad)).status().code() == StatusCode::invalid_argument);
  Request no_cb = greedy(p, 4, unused);
  no_cb.on_event = nullptr;
  CHECK(sched.submit(std::move(no_cb)).status().code() == StatusCode::invalid_argument);
  const SchedulerStats st = sched.stats();
  CHECK(st.n_requests_cancelled == 2);
  CHECK(st.n_slots_busy == 0);
  CHECK(st.n_queued == 0);
}

namespace {
struct CState {
  std::mutex mu;
  std::condition_variable cv;
  std::string text;
  int done = 0;
  int32_t finish = -1, n_generated = 0;
};
int c_on_event(const kestrel_request_event* e, void* user) {
  auto* s = static_cast<CState*>(user);
  std::lock_guard<std::mutex> lock(s->mu);
  s->text.append(e->text, e->text_len);
  if (e->done) {
    s->done = 1;
    s->finish = e->finish_reason;
    s->n_generated = e->usage.n_generated;
    s->cv.notify_all();
  }
  return 1;
}
}  // namespace

TEST_CASE("the scheduler through the C API", "[serve][c_api]") {
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
  kestrel_context* ctx = nullptr;
  REQUIRE(kestrel_context_create(model, &cp, &ctx) == KESTREL_OK);
  kestrel_scheduler* sched = nullptr;
  REQUIRE(kestrel_scheduler_create(ctx, nullptr, &sched) == KESTREL_OK);
  CHECK(kestrel_scheduler_n_slots(sched) == 2);
  CHECK(kestrel_scheduler_n_ctx(sched) == 128);

  kestrel_token ids[64];
  int32_t n = 0;
  REQUIRE(kestrel_tokenize(model, "Once upon a time", 16, 1, 0, ids, 64, &n) == KESTREL_OK);
  kestrel_request_params rp = kestrel_request_default_params();
  rp.prompt = ids;
  rp.n_prompt = n;
  rp.max_tokens = 20;
  rp.sampling.temperature = 0.0f;
  CHECK(kestrel_scheduler_submit(sched, &rp, nullptr) == KESTREL_ERR_INVALID_ARGUMENT);  // no callback
  CHECK(std::string(kestrel_last_error(nullptr)).find("on_event") != std::string::npos);
  CState st;
  rp.on_event = c_on_event;
  rp.user_data = &st;
  uint64_t id = 0;
  REQUIRE(kestrel_scheduler_submit(sched, &rp, &id) == KESTREL_OK);
  CHECK(id > 0);
  {
    std::unique_lock<std::mutex> lock(st.mu);
    REQUIRE(st.cv.wait_for(lock, std::chrono::seconds(60), [&] { return st.done == 1; }));
  }
  CHECK(st.finish == KESTREL_FINISH_LENGTH);
  CHECK(std::string(kestrel_finish_reason_name(st.finish)) == "length");
  CHECK(st.n_generated == 20);
  // The model's greedy story (shared/models/README.md).
  CHECK(st.text.rfind(", there was a little girl named Lily", 0) == 0);
  kestrel_scheduler_stats stats;
  kestrel_scheduler_get_stats(sched, &stats);
  CHECK(stats.n_requests_done == 1);
  CHECK(stats.n_generated_tokens == 20);
  CHECK(stats.n_slots == 2);
  kestrel_scheduler_free(sched);
  kestrel_scheduler_free(nullptr);
  kestrel_context_free(ctx);
  kestrel_model_free(model);
}
