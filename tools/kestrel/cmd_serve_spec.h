// kestrel serve --spec draft: the speculative decoding flags of the server,
// loading the draft model beside the target, and what the server reports about
// speculation (/metrics and the summary on stderr at shutdown).
//
//   kestrel serve -m target.gguf -md draft.gguf --spec draft --draft-max 8 -np 4
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include <kestrel/kestrel.h>
#include <kestrel/server.h>

namespace CLI {
class App;
}

namespace kcli::serve {

struct ServeSpecOptions {
  std::string mode;         // "" or "draft"
  std::string draft_model;  // -md
  int32_t draft_max = 8;    // --draft-max
  float p_min = 0.0f;       // --draft-p-min
  int32_t draft_vocab = 0;  // --draft-vocab
};

void add_serve_spec_flags(CLI::App* sub, ServeSpecOptions& o);

// Loads the draft model as the target was (mp: --no-mmap) and a context like
// the target's (cp: same slots, cells, batch and threads) and sets the scheduler's draft parameters; nothing
// to do without --spec. False with *err on a bad flag combination or a failed load.
struct DraftHandles {
  kestrel_model* model = nullptr;
  kestrel_context* ctx = nullptr;
};
bool load_draft(const ServeSpecOptions& o, const kestrel_model_params& mp, const kestrel_context_params& cp,
                DraftHandles* out, kestrel_scheduler_params* sp, std::string* err);
void free_draft(DraftHandles* d);

// The speculative counters in /metrics' format: metric(name, type, help, value).
using MetricFn = std::function<void(const char*, const char*, const char*, double)>;
void spec_metrics(const kestrel_scheduler_stats& st, const MetricFn& metric);
// One stderr paragraph: requests, rounds, drafted and accepted tokens, rounds by g.
std::string spec_summary(const kestrel_scheduler_stats& st);

}  // namespace kcli::serve
