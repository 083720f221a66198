// kestrel serve -m MODEL: an OpenAI-compatible HTTP server (cpp-httplib) over
// the library's request scheduler. The port is bound first and the model loads
// in the background (/health answers 503 until it is ready). Each generation
// request is one scheduler request; the HTTP thread serving it waits on a
// Flight that the inference thread fills; a client that goes away cancels its
// request (streaming: at the next write; otherwise noticed on the connection's
// socket while the handler waits, cmd_serve_conn.h).
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <thread>

#include <httplib.h>
#include <sys/socket.h>

#include "cli.h"
#include "cmd_serve.h"
#include "cmd_serve_conn.h"
#include "cmd_serve_spec.h"
#include "device_flags.h"
#include "step_trace.h"

namespace kcli {

namespace {

using namespace kcli::serve;
using Clock = std::chrono::steady_clock;

struct ServeOptions {
  std::string model, host = "127.0.0.1", api_key, alias, chat_template;
  int port = 8080;
  int32_t n_parallel = 1, n_ctx = 0, n_batch = 512, max_queue = 64;
  int threads = 0, threads_batch = 0;
  bool metrics = false, no_mmap = false;
  DeviceFlags device;
  serve::ServeSpecOptions spec;
  std::string trace_steps;
};

std::atomic<int> g_sigterm{0};
void on_sigterm(int) { g_sigterm.store(1); }

struct Server {
  const ServeOptions* opt = nullptr;
  std::string chat_template;  // the resolved --chat-template
  std::atomic<bool> ready{false}, stopping{false};
  StepTraceFile trace;  // --trace-steps; closed after the context is freed
  kestrel_model* model = nullptr;
  kestrel_context* ctx = nullptr;
  kestrel_scheduler* sched = nullptr;
  serve::DraftHandles draft;  // --spec draft
  int32_t n_ctx = 0;
  std::string load_error;
  std::string template_origin;  // which chat template chat requests use
  std::atomic<uint64_t> next_response{1};
  // HTTP counters for /metrics.
  std::atomic<int64_t> n_http = 0, n_http_4xx = 0, n_http_5xx = 0, n_stream_disconnects = 0,
                        n_response_disconnects = 0;
};

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.http_status;
  res.set_content(dump(error_body(e)), "application/json");
}

ApiError api_error(int status, const std::string& type, const std::string& message) {
  ApiError e;
  e.http_status = status;
  e.type = type;
  e.message = message;
  return e;
}

bool check_ready(Server& s, httplib::Response& res) {
  if (s.ready.load() && !s.stopping.load()) return true;
  send_error(res, api_error(503, "unavailable_error", s.stopping ? "the server is shutting down" : "loading the model"));
  return false;
}

bool parse_body(const httplib::Request& req, httplib::Response& res, json* out) {
  try {
    *out = json::parse(req.body);
  } catch (const json::exception& e) {
    send_error(res, api_error(400, "invalid_request_error", std::string("malformed JSON body: ") + e.what()));
    return false;
  }
  if (!out->is_object()) {
    send_error(res, api_error(400, "invalid_request_error", "the body must be a JSON object"));
    return false;
  }
  return true;
}

// The scheduler's callback (inference thread): copy the event into the flight.
int on_event(const kestrel_request_event* e, void* user) {
  auto* holder = static_cast<std::shared_ptr<Flight>*>(user);
  Flight& f = **holder;
  int keep = 1;
  try {
    std::lock_guard<std::mutex> lock(f.mu);
    if (e->text_len > 0 || e->n_logprobs > 0) {
      Delta d;
      d.text.assign(e->text, e->text_len);
      for (int32_t i = 0; i < e->n_logprobs; ++i) {
        const kestrel_token_logprob& l = e->logprobs[i];
        TokenLp t{l.token, l.logprob, {}};
        for (int32_t k = 0; k < l.n_top; ++k) t.top.emplace_back(l.top_tokens[k], l.top_logprobs[k]);
        d.logprobs.push_back(std::move(t));
      }
      f.deltas.push_back(std::move(d));
    }
    if (e->done) {
      f.done = true;
      f.finish_reason = e->finish_reason;
      f.status = e->status;
      f.message = e->message ? e->message : "";
      f.usage = e->usage;
    }
    keep = f.client_gone ? 0 : 1;
  } catch (...) {
    keep = 0;  // out of memory: the request stops
  }
  f.cv.notify_all();
  if (e->done) delete holder;
  return keep;
}

// Submits a parsed request; false with the error answered.
bool submit(Server& s, const ParsedRequest& pr, const std::shared_ptr<Flight>& flight, uint64_t* id,
            httplib::Response& res) {
  kestrel_request_params rp = kestrel_request_default_params();
  rp.prompt = pr.prompt.data();
  rp.n_prompt = static_cast<int32_t>(pr.prompt.size());
  rp.max_tokens = pr.max_tokens;
  rp.sampling = pr.sampling;
  std::vector<const char*> stops;
  for (const std::string& st : pr.stop) stops.push_back(st.c_str());
  rp.stop = stops.data();
  rp.n_stop = static_cast<int32_t>(stops.size());
  rp.n_top_logprobs = pr.n_top_logprobs;
  rp.ignore_eos = pr.ignore_eos ? 1 : 0;
  rp.on_event = on_event;
  auto* holder = new std::shared_ptr<Flight>(flight);
  rp.user_data = holder;
  const kestrel_status st = kestrel_scheduler_submit(s.sched, &rp, id);
  if (st == KESTREL_OK) return true;
  delete holder;  // never called back on error
  const std::string msg = kestrel_last_error(nullptr);
  if (st == KESTREL_ERR_TOO_LONG)  // the prompt length was checked: this is the queue
    send_error(res, api_error(503, "unavailable_error", "the server is busy: " + msg));
  else if (st == KESTREL_ERR_INVALID_ARGUMENT)
    send_error(res, api_error(400, "invalid_request_error", msg));
  else
    send_error(res, api_error(st == KESTREL_ERR_CANCELLED ? 503 : 500, "server_error", msg));
  return false;
}

ApiError flight_error(const Flight& f) {
  if (f.finish_reason == KESTREL_FINISH_CANCELLED)
    return api_error(503, "unavailable_error", "the request was cancelled: " + f.message);
  return api_error(500, "server_error", "generation failed: " + f.message);
}

// State of one streaming response across calls of the content provider.
struct Stream {
  std::shared_ptr<Flight> flight;
  ParsedRequest req;
  ResponseMeta meta;
  uint64_t id = 0;
  bool opened = false;
  size_t text_offset = 0;
  Clock::time_point last_write = Clock::now();
};

bool stream_step(Server& s, Stream& st, httplib::DataSink& sink) {
  auto write = [&](const std::string& text) {
    st.last_write = Clock::now();
    return sink.write(text.data(), text.size());
  };
  auto event = [&](const json& j) { return write("data: " + dump(j) + "\n\n"); };
  auto gone = [&] {
    {
      std::lock_guard<std::mutex> lock(st.flight->mu);
      st.flight->client_gone = true;
    }
    kestrel_scheduler_cancel(s.sched, st.id);
    ++s.n_stream_disconnects;
    return false;
  };
  if (!st.opened) {
    st.opened = true;
    return event(chunk_open(st.req, st.meta)) ? true : gone();
  }
  std::deque<Delta> got;
  bool done = false;
  {
    std::unique_lock<std::mutex> lock(st.flight->mu);
    st.flight->cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return !st.flight->deltas.empty() || st.flight->done; });
    got.swap(st.flight->deltas);
    done = st.flight->done;
  }
  if (s.stopping && !done) kestrel_scheduler_cancel(s.sched, st.id);
  for (const Delta& d : got)
    if (!event(chunk_delta(s.model, st.req, st.meta, d, &st.text_offset))) return gone();
  if (!done) {
    // A comment line now and then: a client that left is noticed even while
    // its request waits in the queue or reads its prompt.
    if (got.empty() && Clock::now() - st.last_write > std::chrono::seconds(1) && !write(": keep-alive\n\n")) return gone();
    return true;
  }
  const Flight& f = *st.flight;
  if (f.finish_reason == KESTREL_FINISH_STOP || f.finish_reason == KESTREL_FINISH_LENGTH) {
    if (!event(chunk_finish(st.req, st.meta, f.finish_reason))) return gone();
    if (st.req.include_usage && !event(chunk_usage(st.req, st.meta, f.usage))) return gone();
  } else if (!event(error_body(flight_error(f)))) {
    return false;
  }
  if (!write("data: [DONE]\n\n")) return false;
  sink.done();
  return true;
}

void handle_generation(Server& s, const httplib::Request& hreq, httplib::Response& res, Endpoint ep) {
  if (!check_ready(s, res)) return;
  ParsedRequest pr;
  ApiError err;
  const ParseContext pc{s.model, s.chat_template, s.n_ctx};
  if (!parse_request(pc, ep, hreq.body, &pr, &err)) return send_error(res, err);
  auto flight = std::make_shared<Flight>();
  uint64_t id = 0;
  if (!submit(s, pr, flight, &id, res)) return;
  ResponseMeta meta;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s%llx%llx", ep == Endpoint::chat ? "chatcmpl-" : "cmpl-",
                static_cast<unsigned long long>(std::time(nullptr)), static_cast<unsigned long long>(s.next_response++));
  meta.id = buf;
  meta.created = static_cast<int64_t>(std::time(nullptr));
  meta.model = s.opt->alias;

  if (!pr.stream) {
    const int fd = connection_socket(hreq);
    bool gone = false;
    std::unique_lock<std::mutex> lock(flight->mu);
    while (!flight->cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return flight->done; })) {
      if (s.stopping) kestrel_scheduler_cancel(s.sched, id);
      if (!gone && fd >= 0 && peer_closed(fd)) {
        gone = true;
        flight->client_gone = true;
        kestrel_scheduler_cancel(s.sched, id);
        ++s.n_response_disconnects;
      }
    }
    if (flight->finish_reason != KESTREL_FINISH_STOP && flight->finish_reason != KESTREL_FINISH_LENGTH)
      return send_error(res, flight_error(*flight));
    std::string text;
    std::vector<TokenLp> lps;
    for (Delta& d : flight->deltas) {
      text += d.text;
      for (TokenLp& t : d.logprobs) lps.push_back(std::move(t));
    }
    res.set_content(dump(full_response(s.model, pr, meta, text, lps, *flight)), "application/json");
    return;
  }
  auto st = std::make_shared<Stream>();
  st->flight = flight;
  st->req = std::move(pr);
  st->meta = meta;
  st->id = id;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream", [&s, st](size_t, httplib::DataSink& sink) { return stream_step(s, *st, sink); },
      [&s, st](bool success) {
        // The connection ended before the last event (a write failed, the server stopped).
        if (!success && !st->flight->done) kestrel_scheduler_cancel(s.sched, st->id);
      });
}

std::string metrics_text(Server& s) {
  kestrel_scheduler_stats st;
  kestrel_scheduler_get_stats(s.sched, &st);
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help, double value) {
    char buf[512];
    std::snprintf(buf, sizeof buf, "# HELP kestrel_%s %s\n# TYPE kestrel_%s %s\nkestrel_%s %.17g\n", name, help, name,
                  type, name, value);
    out += buf;
  };
  metric("requests_total", "counter", "Generation requests accepted by the scheduler.", static_cast<double>(st.n_requests));
  metric("requests_done_total", "counter", "Generation requests finished (any reason).", static_cast<double>(st.n_requests_done));
  metric("requests_cancelled_total", "counter", "Generation requests cancelled (client gone, shutdown).",
         static_cast<double>(st.n_requests_cancelled));
  metric("prompt_tokens_total", "counter", "Prompt tokens decoded.", static_cast<double>(st.n_prompt_tokens));
  metric("prompt_tokens_cached_total", "counter", "Prompt tokens reused from slot caches (not decoded).",
         static_cast<double>(st.n_cached_tokens));
  metric("tokens_generated_total", "counter", "Tokens sampled.", static_cast<double>(st.n_generated_tokens));
  metric("decode_steps_total", "counter", "Batches decoded.", static_cast<double>(st.n_steps));
  metric("prompt_seconds_total", "counter", "Decode time attributed to prompt tokens.", st.t_prompt_ms * 1e-3);
  metric("generation_seconds_total", "counter", "Decode time attributed to generated tokens.", st.t_generate_ms * 1e-3);
  metric("prompt_tokens_per_second", "gauge", "Prompt tokens per second of prompt decode time, since start.",
         st.t_prompt_ms > 0 ? static_cast<double>(st.n_prompt_tokens) / (st.t_prompt_ms * 1e-3) : 0.0);
  metric("generation_tokens_per_second", "gauge", "Generated tokens per second of generation decode time, since start.",
         st.t_generate_ms > 0 ? static_cast<double>(st.n_generated_tokens) / (st.t_generate_ms * 1e-3) : 0.0);
  metric("queue_depth", "gauge", "Requests waiting for a slot.", st.n_queued);
  metric("slots_busy", "gauge", "Slots running a request.", st.n_slots_busy);
  metric("slots", "gauge", "Slots (-np).", st.n_slots);
  metric("http_requests_total", "counter", "HTTP requests answered.", static_cast<double>(s.n_http.load()));
  metric("http_client_errors_total", "counter", "HTTP 4xx answers.", static_cast<double>(s.n_http_4xx.load()));
  metric("http_server_errors_total", "counter", "HTTP 5xx answers.", static_cast<double>(s.n_http_5xx.load()));
  metric("stream_disconnects_total", "counter", "Streams whose client went away before the end.",
         static_cast<double>(s.n_stream_disconnects.load()));
  metric("response_disconnects_total", "counter",
         "Non-streaming requests whose client went away before the response.",
         static_cast<double>(s.n_response_disconnects.load()));
  if (s.draft.ctx) serve::spec_metrics(st, metric);
  return out;
}

void routes(httplib::Server& http, Server& s) {
  const ServeOptions& o = *s.opt;
  http.set_pre_routing_handler([&s, &o](const httplib::Request& req, httplib::Response& res) {
    if (o.api_key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    if (auth == "Bearer " + o.api_key) return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, api_error(401, "authentication_error", auth.empty() ? "missing API key (Authorization: Bearer ...)"
                                                                        : "invalid API key"));
    return httplib::Server::HandlerResponse::Handled;
  });
  http.set_logger([&s](const httplib::Request&, const httplib::Response& res) {
    ++s.n_http;
    if (res.status >= 500) ++s.n_http_5xx;
    else if (res.status >= 400) ++s.n_http_4xx;
  });
  http.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    const int code = res.status;
    send_error(res, api_error(code, code == 404 ? "not_found_error" : code >= 500 ? "server_error" : "invalid_request_error",
                              code == 404 ? "no route " + req.method + " " + req.path : "HTTP error " + std::to_string(code)));
  });
  http.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unexpected error";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, api_error(500, "server_error", what));
  });

  http.Get("/health", [&s](const httplib::Request&, httplib::Response& res) {
    if (!check_ready(s, res)) return;
    res.set_content(R"({"status":"ok"})", "application/json");
  });
  for (const char* path : {"/v1/models", "/models"})
    http.Get(path, [&s](const httplib::Request&, httplib::Response& res) {
      if (!check_ready(s, res)) return;
      json m = {{"id", s.opt->alias}, {"object", "model"}, {"created", 0}, {"owned_by", "kestrel"},
                {"meta", {{"n_ctx_slot", s.n_ctx}, {"n_vocab", kestrel_model_n_vocab(s.model)},
                          {"n_params", kestrel_model_n_params(s.model)}, {"slots", s.opt->n_parallel}}}};
      res.set_content(dump({{"object", "list"}, {"data", json::array({m})}}), "application/json");
    });
  for (const char* path : {"/v1/completions", "/completions"})
    http.Post(path, [&s](const httplib::Request& req, httplib::Response& res) { handle_generation(s, req, res, Endpoint::completions); });
  for (const char* path : {"/v1/chat/completions", "/chat/completions"})
    http.Post(path, [&s](const httplib::Request& req, httplib::Response& res) { handle_generation(s, req, res, Endpoint::chat); });

  http.Post("/tokenize", [&s](const httplib::Request& req, httplib::Response& res) {
    json j;
    if (!check_ready(s, res) || !parse_body(req, res, &j)) return;
    if (!j.contains("content") || !j["content"].is_string())
      return send_error(res, api_error(400, "invalid_request_error", "'content' must be a string"));
    bool add_special = true, parse_special = true, with_pieces = false;
    for (auto [name, dst] : {std::pair{"add_special", &add_special}, {"parse_special", &parse_special}, {"with_pieces", &with_pieces}}) {
      if (!j.contains(name) || j[name].is_null()) continue;
      if (!j[name].is_boolean()) return send_error(res, api_error(400, "invalid_request_error", std::string("'") + name + "' must be a boolean"));
      *dst = j[name].get<bool>();
    }
    const std::string text = j["content"].get<std::string>();
    std::vector<kestrel_token> ids(text.size() + 8);
    int32_t n = 0;
    kestrel_status st = kestrel_tokenize(s.model, text.data(), text.size(), add_special, parse_special, ids.data(),
                                         static_cast<int32_t>(ids.size()), &n);
    if (st == KESTREL_ERR_TOO_LONG && n > 0) {
      ids.resize(static_cast<size_t>(n));
      st = kestrel_tokenize(s.model, text.data(), text.size(), add_special, parse_special, ids.data(), n, &n);
    }
    if (st != KESTREL_OK) return send_error(res, api_error(400, "invalid_request_error", kestrel_last_error(s.model)));
    ids.resize(static_cast<size_t>(n));
    json tokens = json::array();
    for (kestrel_token t : ids)
      tokens.push_back(with_pieces ? json{{"id", t}, {"piece", token_text(s.model, t)}} : json(t));
    res.set_content(dump({{"tokens", tokens}}), "application/json");
  });
  http.Post("/detokenize", [&s](const httplib::Request& req, httplib::Response& res) {
    json j;
    if (!check_ready(s, res) || !parse_body(req, res, &j)) return;
    const int32_t n_vocab = kestrel_model_n_vocab(s.model);
    std::vector<kestrel_token> ids;
    if (!j.contains("tokens") || !j["tokens"].is_array())
      return send_error(res, api_error(400, "invalid_request_error", "'tokens' must be a list of token ids"));
    for (const json& t : j["tokens"]) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= n_vocab)
        return send_error(res, api_error(400, "invalid_request_error", "token ids must be integers in [0, " + std::to_string(n_vocab) + ")"));
      ids.push_back(static_cast<kestrel_token>(t.get<int64_t>()));
    }
    std::string text(ids.size() * 8 + 16, '\0');
    size_t n = 0;
    kestrel_status st = kestrel_detokenize(s.model, ids.data(), static_cast<int32_t>(ids.size()), 0, text.data(), text.size(), &n);
    if (st == KESTREL_ERR_TOO_LONG) {
      text.resize(n);
      st = kestrel_detokenize(s.model, ids.data(), static_cast<int32_t>(ids.size()), 0, text.data(), text.size(), &n);
    }
    if (st != KESTREL_OK) return send_error(res, api_error(400, "invalid_request_error", kestrel_last_error(s.model)));
    text.resize(n);
    res.set_content(dump({{"content", text}}), "application/json");
  });
  http.Post("/apply-template", [&s](const httplib::Request& req, httplib::Response& res) {
    json j;
    if (!check_ready(s, res) || !parse_body(req, res, &j)) return;
    ApiError err;
    std::string prompt;
    const ParseContext pc{s.model, s.chat_template, s.n_ctx};
    if (!j.contains("messages")) return send_error(res, api_error(400, "invalid_request_error", "'messages' is required"));
    if (!render_chat(pc, j["messages"], &prompt, &err)) return send_error(res, err);
    res.set_content(dump({{"prompt", prompt}}), "application/json");
  });
  http.Get("/metrics", [&s, &o](const httplib::Request&, httplib::Response& res) {
    if (!o.metrics) return send_error(res, api_error(501, "not_supported_error", "metrics are off (start with --metrics)"));
    if (!check_ready(s, res)) return;
    res.set_content(metrics_text(s), "text/plain; version=0.0.4");
  });
}

// Loads the model, the context (one sequence per slot) and the scheduler.
bool load(Server& s) {
  const ServeOptions& o = *s.opt;
  kestrel_model_params mp = kestrel_model_default_params();
  mp.use_mmap = o.no_mmap ? 0 : 1;
  if (kestrel_model_load(o.model.c_str(), &mp, &s.model) != KESTREL_OK) {
    s.load_error = std::string("cannot load model: ") + kestrel_last_error(nullptr);
    return false;
  }
  // The chat template is checked now rather than on the first chat request.
  char origin[256];
  size_t source_len = 0;
  const char* tmpl = s.chat_template.empty() ? nullptr : s.chat_template.c_str();
  if (kestrel_chat_template_info(s.model, tmpl, origin, sizeof origin, nullptr, 0, &source_len) != KESTREL_OK) {
    s.load_error = std::string("chat template: ") + kestrel_last_error(s.model);
    return false;
  }
  s.template_origin = origin;
  kestrel_context_params cp = kestrel_context_default_params();
  cp.n_ctx = o.n_ctx;
  cp.n_seq_max = o.n_parallel;
  cp.n_batch = o.n_batch;
  if (o.threads > 0) cp.n_threads = o.threads;
  cp.n_threads_batch = o.threads_batch;
  apply_device_flags(o.device, &cp);
  if (!s.trace.attach(o.trace_steps, &cp, &s.load_error)) return false;
  if (kestrel_context_create(s.model, &cp, &s.ctx) != KESTREL_OK) {
    s.load_error = std::string("cannot create the context: ") + kestrel_last_error(nullptr);
    return false;
  }
  kestrel_scheduler_params sp = kestrel_scheduler_default_params();
  sp.max_queue = o.max_queue;
  StepTraceFile::detach(&cp);  // the trace is the target's steps
  if (!serve::load_draft(o.spec, mp, cp, &s.draft, &sp, &s.load_error)) return false;
  if (kestrel_scheduler_create(s.ctx, &sp, &s.sched) != KESTREL_OK) {
    s.load_error = std::string("cannot start the scheduler: ") + kestrel_last_error(nullptr);
    return false;
  }
  s.n_ctx = kestrel_scheduler_n_ctx(s.sched);
  return true;
}

int run_serve(const ServeOptions& o) {
  Server s;
  s.opt = &o;
  std::string err;
  if (!chat_template_arg(o.chat_template, s.chat_template, err)) return usage_error(err);
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigterm;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);

  httplib::Server http;
  // Every streaming client holds a thread while its request runs: room for
  // all slots, the queue and the short requests beside them.
  const size_t n_threads = static_cast<size_t>(std::max(64, 2 * (o.n_parallel + o.max_queue) + 16));
  http.new_task_queue = [n_threads] { return new httplib::ThreadPool(n_threads); };
  http.set_payload_max_length(64u << 20);
  // SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, with which a second
  // server started on a busy port would silently share its connections.
  http.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  http.set_read_timeout(30, 0);
  // Clients (the OpenAI ones among them) keep connections open across requests:
  // httplib's default of closing one after 5 requests makes a client that reuses
  // it just then fail and retry. The idle timeout stays at httplib's 5 s, since
  // an idle keep-alive connection holds a worker thread.
  http.set_keep_alive_max_count(100000);
  routes(http, s);
  int port = o.port;
  if (port == 0) {
    port = http.bind_to_any_port(o.host);
    if (port < 0) port = 0;
  } else if (!http.bind_to_port(o.host, port)) {
    port = 0;
  }
  if (port == 0) {
    std::fprintf(stderr, "kestrel: error: cannot listen on %s:%d\n", o.host.c_str(), o.port);
    return kExitRuntime;
  }
  std::fprintf(stderr, "kestrel serve: listening on http://%s:%d (model %s loading)\n", o.host.c_str(), port, o.model.c_str());
  std::fflush(stderr);

  int exit_code = kExitOk;
  std::thread loader([&] {
    if (load(s)) {
      char desc[256];
      kestrel_model_desc(s.model, desc, sizeof desc);
      if (s.draft.ctx)
        std::fprintf(stderr, "kestrel serve: speculative decoding, draft %s, up to %d tokens a round\n",
                     o.spec.draft_model.c_str(), o.spec.draft_max);
      // Ready before the line says so: a client that waits for the line is served.
      s.ready = true;
      std::fprintf(stderr, "kestrel serve: ready: %s as '%s', %d slots of %d tokens; chat template: %s\n", desc,
                   o.alias.c_str(), o.n_parallel, s.n_ctx, s.template_origin.c_str());
      std::fflush(stderr);
    } else {
      std::fprintf(stderr, "kestrel: %s\n", s.load_error.c_str());
      exit_code = kExitUsage;
      s.stopping = true;
    }
  });
  std::thread watcher([&] {
    while (!stop_requested() && !g_sigterm.load() && !s.stopping.load())
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    s.stopping = true;
    // Requests in flight see `stopping` and cancel themselves; give them a moment
    // to send their last event before the connections close.
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    http.stop();
  });
  http.listen_after_bind();
  s.stopping = true;
  watcher.join();
  loader.join();
  if (s.draft.ctx && s.sched) {
    kestrel_scheduler_stats st;
    kestrel_scheduler_get_stats(s.sched, &st);
    std::fputs(serve::spec_summary(st).c_str(), stderr);
  }
  kestrel_scheduler_free(s.sched);
  serve::free_draft(&s.draft);
  kestrel_context_free(s.ctx);
  kestrel_model_free(s.model);
  std::fprintf(stderr, "kestrel serve: stopped\n");
  return exit_code;
}

}  // namespace

Command add_serve(CLI::App& app) {
  auto* sub = app.add_subcommand("serve", "OpenAI-compatible HTTP server with continuous batching");
  auto o = std::make_shared<ServeOptions>();
  sub->add_option("-m,--model", o->model, "model file (GGUF)")->required();
  sub->add_option("--host", o->host, "address to listen on (default 127.0.0.1)");
  sub->add_option("--port", o->port, "port (default 8080; 0: any free port, printed on stderr)")->check(CLI::Range(0, 65535));
  sub->add_option("--parallel", o->n_parallel, "slots: requests decoded together, each with its own context (-np; default 1)")
      ->check(CLI::Range(1, 256));
  sub->add_option("-c,--ctx-size", o->n_ctx, "context per slot in tokens (0: the model's, at most 4096)")
      ->check(CLI::Range(0, INT32_MAX));
  sub->add_option("-b,--batch-size", o->n_batch, "tokens decoded per step, all slots together (default 512)")
      ->check(CLI::Range(1, 1 << 20));
  sub->add_option("-t,--threads", o->threads, "threads for generation")->check(CLI::Range(1, 1024));
  sub->add_option("--threads-batch", o->threads_batch, "threads for prompt batches (-tb; default: --threads)")
      ->check(CLI::Range(1, 1024));
  sub->add_option("--api-key", o->api_key, "require 'Authorization: Bearer KEY' (all but /health)");
  sub->add_option("--alias", o->alias, "model name in responses and /v1/models (default: the file name)");
  sub->add_option("--chat-template", o->chat_template,
                  "chat template: a built-in name (chatml, gemma, llama3, llama2, phi3) or a Jinja file (default: the model's)");
  sub->add_flag("--metrics", o->metrics, "serve Prometheus metrics on GET /metrics");
  sub->add_flag("--no-mmap", o->no_mmap, "read the model (and the draft) into memory instead of mapping it");
  add_device_flags(sub, o->device);
  serve::add_serve_spec_flags(sub, o->spec);
  add_step_trace_flag(sub, o->trace_steps);
  sub->add_option("--max-queue", o->max_queue, "requests that may wait for a slot; beyond: 503 (default 64)")
      ->check(CLI::Range(0, 1 << 20));
  return {sub, [o]() {
            if (o->alias.empty()) {
              const size_t slash = o->model.find_last_of('/');
              o->alias = slash == std::string::npos ? o->model : o->model.substr(slash + 1);
            }
            return run_serve(*o);
          }};
}

}  // namespace kcli
