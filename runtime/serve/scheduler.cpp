// The scheduler's inference loop: admit queued requests into slots, build one
// batch per step, decode, sample, release text. Slot state is touched only by
// the inference thread; the lock guards the queue, cancellations and counters.
#include "runtime/serve/scheduler.h"

#include <algorithm>
#include <cmath>

#include "platform/timer.h"
#include "runtime/serve/stop_scanner.h"
#include "runtime/tokenizer/tokenizer.h"

namespace kestrel::serve {

namespace {
constexpr int32_t kMaxTopLogprobs = 64;
}

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::none: return "none";
    case FinishReason::stop: return "stop";
    case FinishReason::length: return "length";
    case FinishReason::cancelled: return "cancelled";
    case FinishReason::error: return "error";
  }
  return "?";
}

void token_logprob(const float* logits, int32_t n_vocab, int32_t token, int32_t n_top, TokenLogprob* out) {
  float mx = logits[0];
  for (int32_t i = 1; i < n_vocab; ++i) mx = std::max(mx, logits[i]);
  double sum = 0.0;
  for (int32_t i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  const double log_z = static_cast<double>(mx) + std::log(sum);
  out->token = token;
  out->logprob = static_cast<float>(logits[token] - log_z);
  out->top.clear();
  n_top = std::min(n_top, n_vocab);
  // Insertion into a short sorted list: n_top is small (at most kMaxTopLogprobs).
  for (int32_t i = 0; i < n_vocab && n_top > 0; ++i) {
    const float l = logits[i];
    if (static_cast<int32_t>(out->top.size()) == n_top && l <= out->top.back().logprob) continue;
    auto at = std::find_if(out->top.begin(), out->top.end(), [&](const TopLogprob& t) { return l > t.logprob; });
    out->top.insert(at, TopLogprob{i, l});
    if (static_cast<int32_t>(out->top.size()) > n_top) out->top.pop_back();
  }
  for (TopLogprob& t : out->top) t.logprob = static_cast<float>(t.logprob - log_z);
}

struct Scheduler::Slot {
  explicit Slot(const Tokenizer& tok) : decoder(tok) {}
  int32_t seq = 0;
  std::vector<int32_t> cache;  // tokens in this sequence's KV cells, positions 0..size-1
  uint64_t last_use = 0;       // use_clock_ at the end of its last request (LRU on ties)
  bool busy = false;
  uint64_t id = 0;
  uint64_t start_order = 0;    // prompts are read in the order their requests started
  Request req;
  size_t n_read = 0;           // prompt tokens in the cache
  int32_t pending = -1;        // sampled, not yet decoded
  int32_t g = 0;               // drafts in this step's batch after the pending token
  std::vector<int32_t> drafts;  // [draft_max] the step's drafts
  bool cancel = false;
  Sampler sampler;
  StreamDecoder decoder;
  StopScanner scanner;
  std::string piece;
  std::vector<TokenLogprob> lp;  // tokens whose text is not released yet
  std::vector<size_t> lp_begin, lp_end;  // their text in scanner.text()
  std::vector<TokenLogprob> lp_out;      // the current event's
  Usage usage;
  int64_t t_slot_ns = 0, t_first_ns = 0;
};

Scheduler::Scheduler(Context& ctx, const SchedulerParams& params) : ctx_(ctx) {
  n_slots_ = ctx.params().n_seq_max;
  n_ctx_ = ctx.n_ctx();
  n_batch_ = params.n_batch > 0 ? params.n_batch : static_cast<int32_t>(ctx.params().n_batch);
  n_chunk_ = params.n_chunk > 0 ? std::min(params.n_chunk, n_batch_) : n_batch_;
  max_queue_ = params.max_queue;
  n_vocab_ = ctx.model().tokenizer().n_vocab();
  stats_.n_slots = n_slots_;
}

Expected<std::unique_ptr<Scheduler>> Scheduler::create(Context& ctx, const SchedulerParams& params) {
  if (params.n_batch < 0) return Status::invalid_argument("scheduler n_batch %d < 0", params.n_batch);
  if (params.n_chunk < 0) return Status::invalid_argument("scheduler n_chunk %d < 0", params.n_chunk);
  if (params.max_queue < 0) return Status::invalid_argument("scheduler max_queue %d < 0", params.max_queue);
  std::unique_ptr<Scheduler> s(new Scheduler(ctx, params));
  if (s->n_batch_ < s->n_slots_)
    return Status::invalid_argument("scheduler n_batch %d is below the %d slots (one token each per step)", s->n_batch_,
                                    s->n_slots_);
  if (params.draft) {
    KESTREL_TRY_ASSIGN(s->spec_, SpecSlots::create(ctx, *params.draft, params.spec));
  }
  ctx.kv().clear();
  const Tokenizer& tok = ctx.model().tokenizer();
  for (int32_t i = 0; i < s->n_slots_; ++i) {
    s->slots_.push_back(std::make_unique<Slot>(tok));
    s->slots_.back()->seq = i;
    if (s->spec_) s->slots_.back()->drafts.resize(static_cast<size_t>(s->spec_->draft_max()));
  }
  s->b_jobs_.reserve(static_cast<size_t>(s->n_slots_));
  s->b_gen_.reserve(static_cast<size_t>(s->n_slots_));
  const size_t cap = static_cast<size_t>(s->n_batch_);
  s->b_tokens_.reserve(cap);
  s->b_pos_.reserve(cap);
  s->b_seq_.reserve(cap);
  s->b_logits_.reserve(cap);
  s->b_out_slot_.reserve(cap);
  s->b_reading_.reserve(static_cast<size_t>(s->n_slots_));
  s->b_chunks_.reserve(static_cast<size_t>(s->n_slots_));
  try {
    s->thread_ = std::thread([p = s.get()] { p->run(); });
  } catch (const std::system_error& e) {
    return Status::runtime_error("cannot start the inference thread: %s", e.what());
  }
  return s;
}

Scheduler::~Scheduler() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Expected<uint64_t> Scheduler::submit(Request&& request) {
  if (!request.on_event) return Status::invalid_argument("request without an event callback");
  if (request.prompt.empty()) return Status::invalid_argument("empty prompt (give at least one token)");
  for (int32_t t : request.prompt)
    if (t < 0 || t >= n_vocab_) return Status::invalid_argument("prompt token %d outside the vocabulary [0, %d)", t, n_vocab_);
  if (static_cast<int64_t>(request.prompt.size()) > n_ctx_)
    return Status::too_long("the prompt has %zu tokens, a slot's context holds %lld", request.prompt.size(),
                            static_cast<long long>(n_ctx_));
  if (request.n_top_logprobs > kMaxTopLogprobs)
    return Status::invalid_argument("n_top_logprobs %d above %d", request.n_top_logprobs, kMaxTopLogprobs);
  KESTREL_TRY_ASSIGN(request.sampling, normalize_sampler_params(request.sampling, n_vocab_));
  Queued q{0, std::move(request), now_ns()};
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return Status::cancelled("the scheduler is shutting down");
    const size_t idle = static_cast<size_t>(n_slots_ - stats_.n_slots_busy);
    if (queue_.size() >= static_cast<size_t>(max_queue_) + idle)
      return Status::too_long("the queue is full (%zu requests waiting, max_queue %d)", queue_.size(), max_queue_);
    q.id = next_id_++;
    queue_.push_back(std::move(q));
    ++stats_.n_requests;
    stats_.n_queued = static_cast<int32_t>(queue_.size());
    const uint64_t id = queue_.back().id;
    cv_.notify_all();
    return id;
  }
}

void Scheduler::cancel(uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancels_.push_back(id);
  }
  cv_.notify_all();
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void Scheduler::run() {
  std::vector<Queued> dropped;
  for (;;) {
    dropped.clear();
    bool stop = false;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !cancels_.empty() || !queue_.empty() || stats_.n_slots_busy > 0; });
      stop = stopping_;
      if (stop) {
        for (auto& q : queue_) dropped.push_back(std::move(q));
        queue_.clear();
        stats_.n_queued = 0;
      } else {
        admit(lock, dropped);
      }
    }
    for (Queued& q : dropped) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        ++stats_.n_requests_done;
        ++stats_.n_requests_cancelled;
      }
      finish_unstarted(q, FinishReason::cancelled, Status::cancelled("request cancelled before it started"));
    }
    if (stop) break;
    step();
  }
  for (auto& s : slots_)
    if (s->busy) finish(*s, FinishReason::cancelled, Status::cancelled("the scheduler is shutting down"));
}

bool Scheduler::admit(std::unique_lock<std::mutex>&, std::vector<Queued>& dropped) {
  for (uint64_t id : cancels_) {
    auto it = std::find_if(queue_.begin(), queue_.end(), [&](const Queued& q) { return q.id == id; });
    if (it != queue_.end()) {
      dropped.push_back(std::move(*it));
      queue_.erase(it);
      continue;
    }
    for (auto& s : slots_)
      if (s->busy && s->id == id) s->cancel = true;
  }
  cancels_.clear();
  while (!queue_.empty()) {
    const std::vector<int32_t>& prompt = queue_.front().req.prompt;
    // The slot whose cache holds the longest prefix of the prompt when that
    // covers at least half of it (a shared BOS or a few words are not worth
    // evicting another slot's cache for); otherwise the least recently used.
    Slot* best = nullptr;
    Slot* lru = nullptr;
    size_t best_lcp = 0;
    for (auto& s : slots_) {
      if (s->busy) continue;
      if (!lru || s->last_use < lru->last_use) lru = s.get();
      const size_t n = std::min(s->cache.size(), prompt.size());
      size_t lcp = 0;
      while (lcp < n && s->cache[lcp] == prompt[lcp]) ++lcp;
      if (2 * lcp >= prompt.size() && lcp > best_lcp) {
        best = s.get();
        best_lcp = lcp;
      }
    }
    if (!best) best = lru;
    if (!best) break;
    Queued q = std::move(queue_.front());
    queue_.pop_front();
    start(*best, std::move(q));
    ++stats_.n_slots_busy;
  }
  stats_.n_queued = static_cast<int32_t>(queue_.size());
  return stats_.n_slots_busy > 0;
}

void Scheduler::start(Slot& s, Queued&& q) {
  s.busy = true;
  s.cancel = false;
  s.id = q.id;
  s.start_order = ++use_clock_;
  s.req = std::move(q.req);
  const std::vector<int32_t>& prompt = s.req.prompt;
  // Reuse the longest shared prefix, but decode at least the prompt's last
  // token: its logits give the first sampled token.
  size_t keep = 0;
  const size_t n = std::min(s.cache.size(), prompt.size() - 1);
  while (keep < n && s.cache[keep] == prompt[keep]) ++keep;
  ctx_.kv().seq_rm(s.seq, static_cast<int32_t>(keep), -1);
  s.cache.resize(keep);
  if (spec_ && spec_->start(s.seq, keep, s.req.sampling)) ++stats_.n_spec_requests;
  s.n_read = keep;
  s.pending = -1;
  s.usage = Usage{};
  s.usage.n_prompt = static_cast<int32_t>(prompt.size());
  s.usage.n_cached = static_cast<int32_t>(keep);
  s.t_slot_ns = now_ns();
  s.usage.t_queue_ns = s.t_slot_ns - q.t_submit_ns;
  s.t_first_ns = 0;
  s.decoder.reset();
  s.scanner.reset(std::move(s.req.stop));
  s.lp.clear();
  s.lp_begin.clear();
  s.lp_end.clear();
  stats_.n_cached_tokens += static_cast<int64_t>(keep);
  // Parameters were checked by submit(); init can still fail on memory.
  Status st = s.sampler.init(n_vocab_, s.req.sampling);
  if (st.ok())
    for (int32_t t : prompt) s.sampler.accept(t);
  else
    s.cancel = true;  // finished as cancelled at the next step rather than under the lock
}

void Scheduler::step() {
  for (auto& sp : slots_)
    if (sp->busy && sp->cancel) finish(*sp, FinishReason::cancelled, Status::cancelled("request cancelled"));
  b_tokens_.clear();
  b_pos_.clear();
  b_seq_.clear();
  b_logits_.clear();
  b_out_slot_.clear();
  auto add = [&](int32_t tok, size_t pos, int32_t seq, bool logits) {
    b_tokens_.push_back(tok);
    b_pos_.push_back(static_cast<int32_t>(pos));
    b_seq_.push_back(seq);
    b_logits_.push_back(logits ? 1 : 0);
  };
  // One token per generating slot and its drafts (logits on every row) ...
  int64_t n_gen = 0;
  for (auto& sp : slots_)
    if (sp->busy && sp->pending >= 0) ++n_gen;
  n_gen += draft_step(n_batch_ - n_gen);
  for (auto& sp : slots_) {
    Slot& s = *sp;
    if (!s.busy || s.pending < 0) continue;
    add(s.pending, s.cache.size(), s.seq, true);
    b_out_slot_.push_back(&s);
    for (int32_t i = 0; i < s.g; ++i) {
      add(s.drafts[static_cast<size_t>(i)], s.cache.size() + 1 + static_cast<size_t>(i), s.seq, true);
      b_out_slot_.push_back(&s);
    }
  }
  // ... then prompt chunks, oldest request first, within the step's budget.
  std::vector<Slot*>& reading = b_reading_;
  reading.clear();
  for (auto& sp : slots_)
    if (sp->busy && sp->pending < 0 && sp->n_read < sp->req.prompt.size()) reading.push_back(sp.get());
  std::sort(reading.begin(), reading.end(), [](const Slot* a, const Slot* b) { return a->start_order < b->start_order; });
  int64_t budget = n_batch_ - n_gen;
  std::vector<std::pair<Slot*, size_t>>& chunks = b_chunks_;
  chunks.clear();
  int64_t n_prompt = 0;
  for (Slot* s : reading) {
    if (budget <= 0) break;
    const size_t left = s->req.prompt.size() - s->n_read;
    const size_t n = std::min<size_t>({left, static_cast<size_t>(budget), static_cast<size_t>(n_chunk_)});
    for (size_t i = 0; i < n; ++i) {
      const bool last = s->n_read + i + 1 == s->req.prompt.size();
      add(s->req.prompt[s->n_read + i], s->n_read + i, s->seq, last);
      if (last) b_out_slot_.push_back(s);
    }
    chunks.emplace_back(s, n);
    budget -= static_cast<int64_t>(n);
    n_prompt += static_cast<int64_t>(n);
  }
  if (b_tokens_.empty()) return;

  BatchView b;
  b.n_tokens = static_cast<int32_t>(b_tokens_.size());
  b.tokens = b_tokens_.data();
  b.pos = b_pos_.data();
  b.seq_id = b_seq_.data();
  b.logits = b_logits_.data();
  Stopwatch sw;
  const Status st = ctx_.decode(b);
  const int64_t dt = sw.elapsed_ns();
  if (!st.ok()) {
    // decode() leaves the cache as it was: the slots keep their tokens.
    for (auto& sp : slots_)
      if (sp->busy && (sp->pending >= 0 || std::any_of(chunks.begin(), chunks.end(), [&](auto& c) { return c.first == sp.get(); })))
        finish(*sp, FinishReason::error, st);
    return;
  }
  for (auto& sp : slots_)
    if (sp->busy && sp->pending >= 0) {
      sp->cache.push_back(sp->pending);
      sp->pending = -1;
    }
  for (auto& [s, n] : chunks) {
    s->cache.insert(s->cache.end(), s->req.prompt.begin() + static_cast<std::ptrdiff_t>(s->n_read),
                    s->req.prompt.begin() + static_cast<std::ptrdiff_t>(s->n_read + n));
    s->n_read += n;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.n_steps;
    stats_.n_prompt_tokens += n_prompt;
    const int64_t total = n_prompt + n_gen;
    stats_.t_prompt_ns += dt * n_prompt / total;
    stats_.t_generate_ns += dt * n_gen / total;
  }
  for (size_t i = 0; i < b_out_slot_.size(); ++i) {
    Slot& s = *b_out_slot_[i];
    if (s.g > 0) {
      spec_round(s, static_cast<int32_t>(i));
      i += static_cast<size_t>(s.g);
      s.g = 0;
      continue;
    }
    if (spec_ && s.busy && s.usage.n_generated > 0 && spec_->speculating(s.seq)) {
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.n_spec_plain_steps;
    }
    const float* logits = ctx_.logits(static_cast<int32_t>(i));
    if (!logits) {
      finish(s, FinishReason::error, Status::internal("no logits for output %zu", i));
      continue;
    }
    on_logits(s, logits);
  }
  // The draft policies' step curve: the decode and what follows it per row
  // (verifying, sampling, emitting), of steps of generating slots only (prompt
  // rows cost otherwise, and come and go).
  if (spec_ && n_prompt == 0) spec_->step_timed(b.n_tokens, sw.elapsed_ns());
}

int64_t Scheduler::draft_step(int64_t budget) {
  for (auto& sp : slots_) sp->g = 0;
  if (!spec_) return 0;
  b_jobs_.clear();
  b_gen_.clear();
  for (auto& sp : slots_)
    if (sp->busy && sp->pending >= 0) b_gen_.push_back(sp->seq);
  spec_->begin_step(b_gen_);
  for (auto& sp : slots_) {
    Slot& s = *sp;
    if (!s.busy || s.pending < 0 || !spec_->speculating(s.seq)) continue;
    // Room: the step's rows, the slot's cells (drafts at positions after the
    // pending token's) and its token budget (a round also emits its own token).
    int64_t room = std::min<int64_t>(budget, n_ctx_ - static_cast<int64_t>(s.cache.size()) - 1);
    if (s.req.max_tokens > 0) room = std::min<int64_t>(room, s.req.max_tokens - s.usage.n_generated - 1);
    const int32_t g = spec_->choose(s.seq, static_cast<int32_t>(std::max<int64_t>(room, 0)), s.cache.size());
    if (g <= 0) continue;
    SpecSlots::Job j;
    j.seq = s.seq;
    j.cache = s.cache;
    j.pending = s.pending;
    j.g = g;
    j.drafts = s.drafts.data();
    b_jobs_.push_back(j);
    budget -= g;
  }
  // A failed draft leaves those requests to plain decoding (SpecSlots::draft).
  if (b_jobs_.empty() || !spec_->draft(b_jobs_).ok()) return 0;
  int64_t rows = 0;
  for (const SpecSlots::Job& j : b_jobs_) {
    slots_[static_cast<size_t>(j.seq)]->g = j.n;
    rows += j.n;
  }
  return rows;
}

void Scheduler::spec_round(Slot& s, int32_t row) {
  int32_t next = -1;
  auto accepted = spec_->verify(ctx_, s.seq, row, s.drafts.data(), s.g, &next);
  if (!accepted.ok()) {
    ctx_.kv().seq_rm(s.seq, static_cast<int32_t>(s.cache.size()), -1);
    return finish(s, FinishReason::error, std::move(accepted).take_status());
  }
  const int32_t a = *accepted;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.n_spec_rounds;
    stats_.n_spec_drafted += s.g;
    stats_.n_spec_accepted += a;
    ++stats_.spec_rounds_by_g[s.g];
  }
  // The accepted drafts go out one by one as plain decoding would emit them
  // (each may end the request); the cache keeps the tokens before the one that
  // ended it, as a plain step would have decoded only those.
  for (int32_t i = 0; i < a && s.busy; ++i) {
    const int32_t t = s.drafts[static_cast<size_t>(i)];
    on_token(s, t, ctx_.logits(row + i));
    if (!s.busy) break;
    s.cache.push_back(t);
    s.pending = -1;
  }
  if (s.busy) on_token(s, next, ctx_.logits(row + a));
  ctx_.kv().seq_rm(s.seq, static_cast<int32_t>(s.cache.size()), -1);
  spec_->trim(s.seq, s.cache.size());
}

void Scheduler::on_logits(Slot& s, const float* logits) {
  if (s.cancel) return finish(s, FinishReason::cancelled, Status::cancelled("request cancelled"));
  if (s.req.max_tokens == 0) return finish(s, FinishReason::length);
  auto next = s.sampler.sample(logits);
  if (!next.ok()) return finish(s, FinishReason::error, std::move(next).take_status());
  on_token(s, *next, logits);
}

void Scheduler::on_token(Slot& s, int32_t t, const float* logits) {
  if (s.cancel) return finish(s, FinishReason::cancelled, Status::cancelled("request cancelled"));
  if (!logits) return finish(s, FinishReason::error, Status::internal("no logits for a verified token"));
  s.sampler.accept(t);
  const int64_t now = now_ns();
  if (s.usage.n_generated == 0) {
    s.t_first_ns = now;
    s.usage.t_prompt_ns = now - s.t_slot_ns;
  }
  ++s.usage.n_generated;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.n_generated_tokens;
  }
  const Tokenizer& tok = ctx_.model().tokenizer();
  const bool eog = tok.is_eog(t) && !s.req.ignore_eos;
  s.piece.clear();
  if (eog) {
    s.decoder.flush(s.piece);
  } else {
    const Status st = s.decoder.push(t, s.piece);
    if (!st.ok()) return finish(s, FinishReason::error, st);
    if (s.req.n_top_logprobs >= 0) {
      s.lp.emplace_back();
      token_logprob(logits, n_vocab_, t, s.req.n_top_logprobs, &s.lp.back());
      s.lp_begin.push_back(s.scanner.text().size());
    }
  }
  bool at_end = eog || (s.req.max_tokens > 0 && s.usage.n_generated >= s.req.max_tokens) ||
                static_cast<int64_t>(s.cache.size()) >= n_ctx_;
  if (at_end && !eog) s.decoder.flush(s.piece);
  const StopScanner::Result r = s.scanner.push(s.piece);
  if (s.req.n_top_logprobs >= 0 && !eog) s.lp_end.push_back(s.scanner.text().size() + (r.stopped ? s.piece.size() : 0));
  if (r.stopped) {
    release_text(s, r.release_end, true);
    return finish(s, FinishReason::stop);
  }
  if (at_end) {
    release_text(s, s.scanner.text().size(), true);
    return finish(s, eog ? FinishReason::stop : FinishReason::length);
  }
  release_text(s, r.release_end, false);
  if (s.cancel) return finish(s, FinishReason::cancelled, Status::cancelled("request cancelled by its callback"));
  s.pending = t;
}

void Scheduler::release_text(Slot& s, size_t end, bool final) {
  const size_t from = s.scanner.released();
  s.lp_out.clear();
  // A token goes out with the text that completes it; at the end, every token
  // whose text begins before the cut (the rest belonged to a stop string).
  size_t n_lp = 0;
  while (n_lp < s.lp.size() && (s.lp_end[n_lp] <= end || (final && s.lp_begin[n_lp] < end))) ++n_lp;
  if (end <= from && n_lp == 0) return;
  for (size_t i = 0; i < n_lp; ++i) s.lp_out.push_back(std::move(s.lp[i]));
  s.lp.erase(s.lp.begin(), s.lp.begin() + static_cast<std::ptrdiff_t>(n_lp));
  s.lp_begin.erase(s.lp_begin.begin(), s.lp_begin.begin() + static_cast<std::ptrdiff_t>(n_lp));
  s.lp_end.erase(s.lp_end.begin(), s.lp_end.begin() + static_cast<std::ptrdiff_t>(n_lp));
  const std::string_view text = end > from ? std::string_view(s.scanner.text()).substr(from, end - from) : std::string_view();
  s.scanner.mark_released(std::max(end, from));
  if (!emit_text(s, text)) s.cancel = true;
}

bool Scheduler::emit_text(Slot& s, std::string_view text) {
  Event e;
  e.id = s.id;
  e.text = text;
  e.logprobs = std::span<const TokenLogprob>(s.lp_out.data(), s.lp_out.size());
  e.usage = s.usage;
  e.slot = s.seq;
  return s.req.on_event(e, s.req.user);
}

void Scheduler::finish(Slot& s, FinishReason reason, Status status) {
  if (s.usage.n_generated > 0) s.usage.t_generate_ns = now_ns() - s.t_first_ns;
  else s.usage.t_prompt_ns = now_ns() - s.t_slot_ns;
  if (reason == FinishReason::error) {
    // The cached tokens are no longer known to match the cells: start clean.
    ctx_.kv().seq_rm(s.seq, 0, -1);
    s.cache.clear();
    if (spec_) spec_->trim(s.seq, 0);
  }
  Event e;
  e.id = s.id;
  e.done = true;
  e.finish = reason;
  e.status = std::move(status);
  e.usage = s.usage;
  e.slot = s.seq;
  const EventFn fn = s.req.on_event;
  void* user = s.req.user;
  s.busy = false;
  s.pending = -1;
  s.cancel = false;
  s.req = Request{};
  s.lp.clear();
  s.lp_begin.clear();
  s.lp_end.clear();
  s.lp_out.clear();
  {
    // Counted before the last event goes out: a caller that saw it sees the slot free.
    std::lock_guard<std::mutex> lock(mu_);
    s.last_use = ++use_clock_;
    --stats_.n_slots_busy;
    ++stats_.n_requests_done;
    if (reason == FinishReason::cancelled) ++stats_.n_requests_cancelled;
  }
  fn(e, user);
}

void Scheduler::finish_unstarted(Queued& q, FinishReason reason, const Status& status) {
  Event e;
  e.id = q.id;
  e.done = true;
  e.finish = reason;
  e.status = status;
  e.usage.n_prompt = static_cast<int32_t>(q.req.prompt.size());
  e.usage.t_queue_ns = now_ns() - q.t_submit_ns;
  q.req.on_event(e, q.req.user);
}

}  // namespace kestrel::serve
