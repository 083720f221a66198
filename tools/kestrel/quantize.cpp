// kestrel quantize IN.gguf OUT.gguf TYPE [-t N] [--allow-requantize]: the model
// with its weights in TYPE, per tensor as llama-quantize chooses (kestrel/eval.h).
// stderr: one line per tensor (name, type before -> after, sizes, fallback
// notes), then the total sizes.
#include <cstdio>
#include <memory>
#include <string>

#include <kestrel/eval.h>

#include "cli.h"

namespace kcli {
namespace {

struct QuantizeOptions {
  std::string in, out, type;
  int32_t threads = 0;
  bool allow_requantize = false;
};

struct Totals {
  int n = 0;
  uint64_t from = 0, to = 0;
};

void on_tensor(const char* name, const char* from, const char* to, uint64_t from_bytes, uint64_t to_bytes,
               const char* note, void* user) {
  auto* t = static_cast<Totals*>(user);
  ++t->n;
  t->from += from_bytes;
  t->to += to_bytes;
  std::fprintf(stderr, "[%4d] %-36s %6s -> %-6s %9.3f MiB -> %9.3f MiB%s%s\n", t->n, name, from, to,
               static_cast<double>(from_bytes) / 1048576.0, static_cast<double>(to_bytes) / 1048576.0,
               *note ? "  " : "", note);
}

int quantize(const QuantizeOptions& o) {
  kestrel_quantize_params qp = kestrel_quantize_default_params();
  qp.type = o.type.c_str();
  qp.n_threads = o.threads;
  qp.allow_requantize = o.allow_requantize ? 1 : 0;
  Totals totals;
  const kestrel_status s = kestrel_quantize(o.in.c_str(), o.out.c_str(), &qp, on_tensor, &totals);
  if (s != KESTREL_OK) return report(s, "quantization failed", nullptr);
  std::fprintf(stderr, "kestrel: wrote %s: %d tensors, %.2f MiB -> %.2f MiB\n", o.out.c_str(), totals.n,
               static_cast<double>(totals.from) / 1048576.0, static_cast<double>(totals.to) / 1048576.0);
  return kExitOk;
}

}  // namespace

Command add_quantize(CLI::App& app) {
  auto o = std::make_shared<QuantizeOptions>();
  CLI::App* sub = app.add_subcommand("quantize", "rewrite a GGUF model in another weight type (llama-quantize's mixes)");
  sub->add_option("in", o->in, "input GGUF (F32, F16, BF16 or quantized weights)")->required();
  sub->add_option("out", o->out, "GGUF file to write")->required();
  sub->add_option("type", o->type, "F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K_M, Q5_K_M or Q6_K")->required();
  sub->add_option("-t,--threads", o->threads, "threads (default: all)")->check(CLI::Range(1, 1024));
  sub->add_flag("--allow-requantize", o->allow_requantize,
                "dequantize quantized input tensors and quantize them again (quality suffers)");
  return {sub, [o] { return quantize(*o); }};
}

}  // namespace kcli
