// Helpers shared by the speculative decoding tests: small models, contexts,
// plain greedy decoding as the reference, and a speculative run collected into ids.
#pragma once

#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

#include "runtime/model/synth.h"
#include "runtime/spec/speculative.h"
#include "runtime/tokenizer/tokenizer.h"
#include "tests/model_test_util.h"

namespace kestrel::spectest {

using namespace kestrel::testutil;

inline std::unique_ptr<Model> synth(ArchId arch, uint64_t seed, int64_t n_layer, const std::string& weights = "f32",
                             int64_t n_embd = 64) {
  SynthSpec s;
  s.arch = arch;
  s.seed = seed;
  s.n_layer = n_layer;
  s.n_embd = n_embd;
  s.n_ff = 2 * n_embd;
  s.weights = weights;
  s.tied_output = arch == ArchId::gemma3;
  auto bytes = synth_model_gguf(s);
  REQUIRE(bytes.ok());
  auto m = Model::load_from_memory(bytes->data(), bytes->size(), ModelParams{});
  REQUIRE(m.ok());
  return std::move(*m);
}

inline std::unique_ptr<Model> load_stories() {
  const std::string path = shared_path("models/stories260K/stories260K.gguf");
  if (!file_exists(path)) return nullptr;
  auto m = Model::load(path, ModelParams{});
  REQUIRE(m.ok());
  return std::move(*m);
}

inline std::unique_ptr<Context> make_ctx(const Model& m, int n_threads = 2, DType kv = DType::F16) {
  ContextParams cp;
  cp.n_ctx = 256;
  cp.n_threads = n_threads;
  cp.kv_type = kv;
  auto c = Context::create(m, cp);
  REQUIRE(c.ok());
  return std::move(*c);
}

inline std::vector<int32_t> encode(const Model& m, const std::string& text) {
  std::vector<int32_t> ids;
  REQUIRE(m.tokenizer().encode(text, true, false, ids).ok());
  if (ids.empty()) ids.push_back(m.tokenizer().bos() >= 0 ? m.tokenizer().bos() : 1);
  return ids;
}

// Clears the cache and decodes `tokens` in one batch from position 0; the
// last token's logits are then ctx.logits(0).
inline void decode_fresh(Context& ctx, const std::vector<int32_t>& tokens) {
  ctx.kv().clear();
  std::vector<int32_t> pos(tokens.size());
  for (size_t i = 0; i < pos.size(); ++i) pos[i] = int32_t(i);
  BatchView b{int32_t(tokens.size()), tokens.data(), pos.data(), nullptr, nullptr};
  REQUIRE(ctx.decode(b).ok());
}

// Plain greedy decoding: prompt in one batch, then one token per step; stops
// at an end-of-generation token (not emitted) or after n tokens.
inline std::vector<int32_t> plain_greedy(Context& ctx, const std::vector<int32_t>& prompt, int n) {
  decode_fresh(ctx, prompt);
  const int64_t V = ctx.model().hparams().n_vocab;
  std::vector<int32_t> out;
  int32_t n_past = int32_t(prompt.size());
  while (int(out.size()) < n) {
    const int32_t t = argmax(ctx.logits(0), V);
    if (ctx.model().tokenizer().is_eog(t)) break;
    out.push_back(t);
    if (int(out.size()) == n) break;
    BatchView one{1, &t, &n_past, nullptr, nullptr};
    REQUIRE(ctx.decode(one).ok());
    ++n_past;
  }
  return out;
}

inline std::vector<int32_t> spec_run(SpecDecoder& d, const std::vector<int32_t>& prompt, int n) {
  std::vector<int32_t> out;
  const Status s = d.generate(prompt, n, [&](int32_t t) {
    out.push_back(t);
    return true;
  });
  INFO(s.to_string());
  REQUIRE(s.ok());
  return out;
}

}  // namespace kestrel::spectest
