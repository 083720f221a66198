// kestrel serve: the OpenAI-compatible HTTP server over the request scheduler
// of <kestrel/server.h>. cmd_serve.cpp owns the HTTP side (routes, streaming,
// authentication, metrics); cmd_serve_api.cpp turns OpenAI request bodies into
// scheduler requests and finished requests into OpenAI response bodies.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include <kestrel/kestrel.h>
#include <kestrel/server.h>
#include <nlohmann/json.hpp>

namespace kcli::serve {

using json = nlohmann::json;

// An error answered in OpenAI's shape {"error": {"code", "message", "type"}}.
struct ApiError {
  int http_status = 400;
  std::string type = "invalid_request_error";
  std::string message;
  std::string param;  // the offending field, "" when none
};

json error_body(const ApiError& e);

// One generated token's log-probability with its alternatives (copied out of the event).
struct TokenLp {
  kestrel_token token;
  float logprob;
  std::vector<std::pair<kestrel_token, float>> top;
};

// What the inference thread hands to the HTTP thread serving a request.
struct Delta {
  std::string text;
  std::vector<TokenLp> logprobs;
};

// A request in flight: filled by the scheduler's callback, drained by the
// HTTP thread. Shared by both (the callback holds a reference until its last event).
struct Flight {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Delta> deltas;
  bool done = false;
  int32_t finish_reason = KESTREL_FINISH_NONE;
  kestrel_status status = KESTREL_OK;
  std::string message;
  kestrel_request_usage usage{};
  bool client_gone = false;  // the callback answers 0: the scheduler cancels
};

enum class Endpoint { completions, chat };

// A validated OpenAI request.
struct ParsedRequest {
  Endpoint endpoint = Endpoint::completions;
  std::vector<kestrel_token> prompt;
  int32_t max_tokens = -1;
  kestrel_sampler_params sampling{};
  std::vector<std::string> stop;
  int32_t n_top_logprobs = -1;  // -1: no logprobs
  bool stream = false;
  bool include_usage = false;
  bool ignore_eos = false;  // extension: end-of-generation tokens do not end the reply
};

struct ParseContext {
  const kestrel_model* model;
  std::string chat_template;  // --chat-template ("" = the model's)
  int32_t n_ctx;              // KV cells per slot
};

// Parses and validates a /v1/completions or /v1/chat/completions body. False
// with *err filled (400s) on any problem.
bool parse_request(const ParseContext& pc, Endpoint endpoint, const std::string& body, ParsedRequest* out, ApiError* err);

// messages -> roles and text contents (string or text parts); false with a 400.
bool parse_messages(const json& messages, std::vector<std::string>* roles, std::vector<std::string>* contents,
                    ApiError* err);
// messages rendered by the chat template with the generation prompt.
bool render_chat(const ParseContext& pc, const json& messages, std::string* out, ApiError* err);

// The text of a token (lossy for bytes that are not whole UTF-8 characters).
std::string token_text(const kestrel_model* model, kestrel_token token);

// Response bodies.
struct ResponseMeta {
  std::string id;       // "chatcmpl-..." / "cmpl-..."
  int64_t created = 0;  // unix seconds
  std::string model;    // the alias
};
json usage_json(const kestrel_request_usage& u);
const char* finish_reason_text(int32_t finish_reason);  // "stop" or "length"
// Non-streaming: the whole response.
json full_response(const kestrel_model* model, const ParsedRequest& req, const ResponseMeta& meta,
                   const std::string& text, const std::vector<TokenLp>& logprobs, const Flight& f);
// Streaming chunks: the opening chunk (chat: the role), a content chunk, the
// finish chunk, the usage chunk.
json chunk_open(const ParsedRequest& req, const ResponseMeta& meta);
// text_offset: bytes of text sent before this delta (completions' logprobs.text_offset); advanced.
json chunk_delta(const kestrel_model* model, const ParsedRequest& req, const ResponseMeta& meta, const Delta& d,
                 size_t* text_offset);
json chunk_finish(const ParsedRequest& req, const ResponseMeta& meta, int32_t finish_reason);
json chunk_usage(const ParsedRequest& req, const ResponseMeta& meta, const kestrel_request_usage& u);

// JSON text of v (invalid UTF-8 replaced, never thrown).
std::string dump(const json& v);

}  // namespace kcli::serve
