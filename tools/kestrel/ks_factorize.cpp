// kestrel ks-factorize -m IN.gguf -o OUT.gguf [--layers 0,1] [--proj ffn_up,ffn_down]
//                      [--pattern monarch4 | --pattern "ffn_up=a,b,c,d:a,b,c,d;..."]
//                      [--iters 4] [--type f16] [--ppl-file text.txt [-c 128] [--ppl-chunks 8]]
//
// Replaces dense projections by Kronecker-sparse factor chains fitted by alternating
// least squares (runtime/ks/ks_factorize.h; GGUF convention in docs/ks-gguf.md), printing
// per tensor the chain, parameter counts and the relative Frobenius error of the fit.
// With --ppl-file, the teacher-forced perplexity of IN and OUT on that text (chunks of
// -c tokens from an empty cache, BOS first, every position after the first scored) and
// its change.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cli.h"

namespace kcli {
namespace {

struct KsOptions {
  std::string in, out, layers, projs, pattern = "monarch4", type = "f16", ppl_file;
  int32_t iters = 4, n_ctx = 128, ppl_chunks = 8, threads = 0;
};

void on_layer(const char* tensor, const char* chain, uint64_t dense, uint64_t ks, double err, double s, void*) {
  std::printf("%-28s %-28s params %10llu -> %9llu (%5.1f%%)  rel_frobenius_error %.4f  %.1f s\n", tensor, chain,
              (unsigned long long)dense, (unsigned long long)ks, 100.0 * (double)ks / (double)dense, err, s);
  std::fflush(stdout);
}

// Teacher-forced perplexity of `path` on the text; returns false (message printed) on error.
bool perplexity(const std::string& path, const std::string& text, const KsOptions& o, double* ppl, int64_t* n_scored) {
  kestrel_model* model = nullptr;
  if (load_model(path, kestrel_model_default_params(), &model) != kExitOk) return false;
  std::unique_ptr<kestrel_model, void (*)(kestrel_model*)> mg(model, kestrel_model_free);
  kestrel_context_params cp = kestrel_context_default_params();
  cp.n_ctx = o.n_ctx;
  cp.n_batch = o.n_ctx;
  if (o.threads > 0) cp.n_threads = o.threads;
  kestrel_context* ctx = nullptr;
  if (kestrel_status s = kestrel_context_create(model, &cp, &ctx); s != KESTREL_OK) {
    report(s, "cannot create a context", nullptr);
    return false;
  }
  std::unique_ptr<kestrel_context, void (*)(kestrel_context*)> cg(ctx, kestrel_context_free);
  int32_t n_tok = 0;
  kestrel_status st = kestrel_tokenize(model, text.data(), text.size(), 0, 0, nullptr, 0, &n_tok);
  std::vector<kestrel_token> toks((size_t)std::max(n_tok, 0));
  if (st == KESTREL_OK || st == KESTREL_ERR_TOO_LONG)
    st = kestrel_tokenize(model, text.data(), text.size(), 0, 0, toks.data(), n_tok, &n_tok);
  if (st != KESTREL_OK) {
    report(st, "cannot tokenize the text", model);
    return false;
  }
  const kestrel_token bos = kestrel_token_bos(model);
  const int32_t per = bos >= 0 ? o.n_ctx - 1 : o.n_ctx, n_vocab = kestrel_model_n_vocab(model);
  const int32_t n_chunks = std::min<int32_t>(o.ppl_chunks, per > 0 ? n_tok / per : 0);
  if (n_chunks < 1) {
    usage_error("--ppl-file: fewer tokens than one chunk of -c " + std::to_string(o.n_ctx));
    return false;
  }
  double nll = 0.0;
  int64_t n = 0;
  for (int32_t c = 0; c < n_chunks; ++c) {
    std::vector<kestrel_token> chunk;
    if (bos >= 0) chunk.push_back(bos);
    chunk.insert(chunk.end(), toks.begin() + (ptrdiff_t)c * per, toks.begin() + (ptrdiff_t)(c + 1) * per);
    const int32_t m = (int32_t)chunk.size();
    std::vector<int32_t> pos((size_t)m);
    std::vector<int8_t> want((size_t)m, 1);
    for (int32_t i = 0; i < m; ++i) pos[(size_t)i] = i;
    if ((st = kestrel_kv_seq_rm(ctx, -1, 0, -1)) != KESTREL_OK) break;
    const kestrel_batch b{m, chunk.data(), pos.data(), nullptr, want.data()};
    if ((st = kestrel_decode(ctx, &b)) != KESTREL_OK) break;
    for (int32_t i = 0; i + 1 < m; ++i) {
      const float* l = kestrel_get_logits(ctx, i);
      double mx = l[0], sum = 0.0;
      for (int32_t v = 1; v < n_vocab; ++v) mx = std::max(mx, (double)l[v]);
      for (int32_t v = 0; v < n_vocab; ++v) sum += std::exp((double)l[v] - mx);
      nll += mx + std::log(sum) - (double)l[chunk[(size_t)i + 1]];
      ++n;
    }
  }
  if (st != KESTREL_OK) {
    report(st, "decode failed", ctx);
    return false;
  }
  *ppl = std::exp(nll / (double)n);
  *n_scored = n;
  return true;
}

int ks_factorize(const KsOptions& o) {
  kestrel_ks_factorize_params p = kestrel_ks_factorize_default_params();
  p.layers = o.layers.c_str();
  p.projs = o.projs.c_str();
  p.pattern = o.pattern.c_str();
  p.iters = o.iters;
  p.factor_type = o.type == "f32" ? 0 : o.type == "bf16" ? 30 : 1;
  std::string text;
  if (!o.ppl_file.empty()) {
    std::ifstream f(o.ppl_file, std::ios::binary);
    if (!f) return usage_error("--ppl-file: cannot open '" + o.ppl_file + "'");
    std::stringstream ss;
    ss << f.rdbuf();
    text = ss.str();
  }
  if (kestrel_status s = kestrel_ks_factorize(o.in.c_str(), o.out.c_str(), &p, on_layer, nullptr); s != KESTREL_OK)
    return report(s, "ks-factorize failed", nullptr);
  std::printf("wrote %s\n", o.out.c_str());
  if (text.empty()) return kExitOk;
  double ppl_in = 0, ppl_out = 0;
  int64_t n_in = 0, n_out = 0;
  if (!perplexity(o.in, text, o, &ppl_in, &n_in) || !perplexity(o.out, text, o, &ppl_out, &n_out))
    return kExitRuntime;
  std::printf("perplexity (%lld tokens, -c %d): dense %.4f -> ks %.4f (%+.2f%%)\n", (long long)n_in, o.n_ctx, ppl_in,
              ppl_out, 100.0 * (ppl_out / ppl_in - 1.0));
  return kExitOk;
}

}  // namespace

Command add_ks_factorize(CLI::App& app) {
  auto o = std::make_shared<KsOptions>();
  CLI::App* sub = app.add_subcommand("ks-factorize", "replace dense projections by Kronecker-sparse factor chains");
  sub->add_option("-m,--model", o->in, "input GGUF model")->required();
  sub->add_option("-o,--output", o->out, "GGUF file to write")->required();
  sub->add_option("--layers", o->layers, "layers to factorize, e.g. 0,1,5 (default: all)");
  sub->add_option("--proj", o->projs,
                  "projections: attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down (default: all)");
  sub->add_option("--pattern", o->pattern,
                  "monarchN (2 factors of N blocks) and/or 'proj=a,b,c,d:a,b,c,d' items separated by ';'")
      ->capture_default_str();
  sub->add_option("--iters", o->iters, "alternating least-squares sweeps")->check(CLI::Range(0, 1000))->capture_default_str();
  sub->add_option("--type", o->type, "factor storage")->check(CLI::IsMember({"f32", "f16", "bf16"}))->capture_default_str();
  sub->add_option("--ppl-file", o->ppl_file, "text for the perplexity of the input and output models");
  sub->add_option("-c,--ctx-size", o->n_ctx, "tokens per perplexity chunk")->check(CLI::Range(2, 1 << 20))->capture_default_str();
  sub->add_option("--ppl-chunks", o->ppl_chunks, "chunks scored")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  sub->add_option("-t,--threads", o->threads, "threads for the perplexity runs")->check(CLI::Range(1, 1024));
  return {sub, [o] { return ks_factorize(*o); }};
}

}  // namespace kcli
