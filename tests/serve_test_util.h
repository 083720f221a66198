// Shared pieces of the scheduler tests (test_scheduler.cpp, test_scheduler_spec.cpp):
// a collector of one request's events, a synthetic model and a context with one
// sequence per slot, greedy requests and deterministic prompts.
#pragma once

#include <catch2/catch.hpp>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/engine/context.h"
#include "runtime/model/synth.h"
#include "runtime/serve/scheduler.h"

namespace kestrel::servetest {

// Collects one request's events (called on the inference thread).
struct Collector {
  std::mutex mu;
  std::condition_variable cv;
  std::string text;
  std::vector<int32_t> tokens;
  std::vector<float> logprobs;
  std::vector<std::string> pieces;  // the non-empty text events
  bool in_top = true;               // every token among its listed alternatives
  bool done = false;
  serve::FinishReason finish = serve::FinishReason::none;
  serve::Usage usage;
  int32_t cancel_after = -1;  // > 0: the callback returns false at this many text events

  static bool on_event(const serve::Event& e, void* user) {
    auto* c = static_cast<Collector*>(user);
    std::lock_guard<std::mutex> lock(c->mu);
    c->text.append(e.text);
    if (!e.text.empty()) c->pieces.emplace_back(e.text);
    for (const serve::TokenLogprob& l : e.logprobs) {
      c->tokens.push_back(l.token);
      c->logprobs.push_back(l.logprob);
      bool found = false;
      for (const serve::TopLogprob& t : l.top) found = found || t.token == l.token;
      c->in_top = c->in_top && found;
    }
    if (e.done) {
      c->done = true;
      c->finish = e.finish;
      c->usage = e.usage;
      c->cv.notify_all();
    }
    return c->cancel_after < 0 || static_cast<int32_t>(c->pieces.size()) < c->cancel_after;
  }
  bool wait(int seconds = 120) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::seconds(seconds), [&] { return done; });
  }
};

// The synthetic llama (runtime/model/synth.h) with these weights, context and vocabulary.
inline std::unique_ptr<Model> synth_model(const std::string& weights, int64_t n_ctx, int64_t n_vocab = 320) {
  SynthSpec s;
  s.weights = weights;
  s.n_ctx = n_ctx;
  s.n_vocab = n_vocab;
  auto bytes = synth_model_gguf(s);
  REQUIRE(bytes.status().to_string() == "ok");
  auto m = Model::load_from_memory(bytes->data(), bytes->size(), ModelParams{});
  REQUIRE(m.status().to_string() == "ok");
  return std::move(m).value();
}

// A context with one sequence per slot, n_ctx cells each.
inline std::unique_ptr<Context> slots_ctx(const Model& m, int32_t n_slots, int64_t n_ctx, int threads = 2) {
  ContextParams cp;
  cp.n_ctx = n_ctx;
  cp.n_seq_max = n_slots;
  cp.n_batch = 64;
  cp.n_threads = threads;
  auto c = Context::create(m, cp);
  REQUIRE(c.status().to_string() == "ok");
  return std::move(c).value();
}

// A greedy request to max_tokens (random weights: end-of-generation ignored),
// with n_top alternatives per token, its events into c.
inline serve::Request greedy(const std::vector<int32_t>& prompt, int32_t max_tokens, Collector& c, int32_t n_top = 2) {
  serve::Request r;
  r.prompt = prompt;
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0.0f;
  r.ignore_eos = true;
  r.n_top_logprobs = n_top;
  r.on_event = Collector::on_event;
  r.user = &c;
  return r;
}

// n token ids: BOS, then ids from the salt.
inline std::vector<int32_t> prompt_of(int n, int salt) {
  std::vector<int32_t> p = {1};
  for (int i = 1; i < n; ++i) p.push_back(3 + (i * 37 + salt * 101) % 300);
  return p;
}

}  // namespace kestrel::servetest
