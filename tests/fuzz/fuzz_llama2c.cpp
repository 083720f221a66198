// libFuzzer target: the llama2.c checkpoint reader on arbitrary bytes
// (BAD-INPUTS rows 1-4, 10, 13). On success every array's first and last
// float is touched, and the checkpoint is turned into GGUF metadata and
// tensors with a small generated vocabulary, as the loader does.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "runtime/model/gguf_writer.h"
#include "runtime/model/llama2c.h"
#include "tests/fuzz/fuzz_util.h"

using namespace kestrel;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto ckpt = Llama2cCheckpoint::from_memory(data, size);
  if (!ckpt.ok()) {
    FUZZ_CHECK(!ckpt.status().message().empty());
    return 0;
  }
  const Llama2cCheckpoint& c = **ckpt;
  const uint8_t* end = data + size;
  volatile uint8_t sink = 0;
  for (const auto* a : {&c.token_embedding, &c.rms_att, &c.wq, &c.wk, &c.wv, &c.wo, &c.rms_ffn, &c.w1, &c.w2, &c.w3,
                        &c.rms_final, &c.freq_cis_real, &c.freq_cis_imag, &c.wcls}) {
    if (a->n_floats == 0) continue;
    FUZZ_CHECK(a->data >= data && a->data < end);
    FUZZ_CHECK(a->n_floats <= static_cast<uint64_t>(end - a->data) / 4);
    sink = static_cast<uint8_t>(sink + a->data[0] + a->data[a->n_floats * 4 - 1]);
  }
  // Small vocabularies only: the generated tokenizer.bin would otherwise
  // dominate the time per input.
  if (c.config.vocab_size > 4096) return 0;
  std::string tok_bin(4, '\0');
  const int32_t max_len = 8;
  std::memcpy(tok_bin.data(), &max_len, 4);
  for (int32_t i = 0; i < c.config.vocab_size; ++i) {
    const std::string text = "t" + std::to_string(i);
    const float score = static_cast<float>(-i);
    const int32_t len = static_cast<int32_t>(text.size());
    tok_bin.append(reinterpret_cast<const char*>(&score), 4);
    tok_bin.append(reinterpret_cast<const char*>(&len), 4);
    tok_bin += text;
  }
  auto vocab = llama2c_vocab_from_memory(tok_bin.data(), tok_bin.size(), c.config.vocab_size);
  FUZZ_CHECK(vocab.ok());
  gguf::Writer w;
  Status st = llama2c_fill_gguf(c, *vocab, w);
  if (st.ok()) {
    auto bytes = w.to_bytes();
    if (bytes.ok()) {
      auto f = gguf::File::from_memory(bytes->data(), bytes->size());
      FUZZ_CHECK(f.ok());
    }
  }
  return 0;
}
