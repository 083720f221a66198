// libFuzzer target: the whole model load (GGUF parse, vocabulary, tokenizer,
// hyperparameters, tensor binding) from memory (BAD-INPUTS rows 1-11, 13).
// On success the bound weights are touched, a short text is tokenized, and
// small models (the generated seeds' size) run a 2-token batch and one more
// token through the forward pass: any hyperparameters that validate must be
// safe to compute with, whatever the weights hold (NaN included).
#include <cstddef>
#include <cstdint>

#include "runtime/engine/context.h"
#include "runtime/model/model.h"
#include "tests/fuzz/fuzz_util.h"

using namespace kestrel;

namespace {
void touch(const Tensor& t, volatile uint8_t& sink) {
  if (!t.data) return;
  const size_t n = t.nbytes();
  if (n) sink = static_cast<uint8_t>(sink + static_cast<const uint8_t*>(t.data)[0] +
                                     static_cast<const uint8_t*>(t.data)[n - 1]);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  ModelParams mp;
  mp.vocab_only = (data[0] & 1) != 0;
  auto model = Model::load_from_memory(data + 1, size - 1, mp);
  if (!model.ok()) {
    FUZZ_CHECK(!model.status().message().empty());
    return 0;
  }
  const Model& m = **model;
  fuzz::exercise_tokenizer(m.tokenizer(), "Once upon a time \xe2\x96\x81<0x41>", false);
  if (m.vocab_only()) return 0;
  const HParams& hp = m.hparams();
  FUZZ_CHECK(hp.n_vocab == m.tokenizer().n_vocab());
  FUZZ_CHECK(static_cast<int64_t>(m.layers.size()) == hp.n_layer);
  volatile uint8_t sink = 0;
  touch(m.tok_embd, sink);
  touch(m.output, sink);
  touch(m.output_norm, sink);
  for (const LayerWeights& L : m.layers) {
    for (const Tensor* t : {&L.attn_norm, &L.wq, &L.wk, &L.wv, &L.bq, &L.bk, &L.bv, &L.q_norm, &L.k_norm, &L.wo,
                            &L.post_attn_norm, &L.ffn_norm, &L.w_gate, &L.w_up, &L.w_down, &L.post_ffn_norm})
      touch(*t, sink);
  }
  if (m.weight_bytes() > (uint64_t{1} << 20)) return 0;  // keep each input fast
  ContextParams cp;
  cp.n_ctx = 8;
  auto ctx = Context::create(m, cp);
  if (!ctx.ok()) return 0;
  const int32_t n_vocab = static_cast<int32_t>(hp.n_vocab);
  int32_t toks[2] = {data[0] % n_vocab, (size > 1 ? data[1] : 0) % n_vocab}, pos[2] = {0, 1};
  Status st = (*ctx)->decode(BatchView{2, toks, pos, nullptr, nullptr});
  if (st.ok()) {
    FUZZ_CHECK((*ctx)->logits(0) != nullptr);
    int32_t next = 1 % n_vocab, p2 = 2;
    st = (*ctx)->decode(BatchView{1, &next, &p2, nullptr, nullptr});
    if (st.ok()) FUZZ_CHECK((*ctx)->logits(0) != nullptr);
  }
  return 0;
}
