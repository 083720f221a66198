// libFuzzer target: llama2.c tokenizer.bin on arbitrary bytes (BAD-INPUTS
// rows 1, 3, 11, 13). Input bytes 0-1 (little-endian) are the token count the
// checkpoint would give; the rest is the file. A vocabulary that loads is
// turned into a tokenizer, which must then tokenize and detokenize.
#include <cstddef>
#include <cstdint>

#include "runtime/model/llama2c.h"
#include "tests/fuzz/fuzz_util.h"

using namespace kestrel;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const int32_t n_vocab = static_cast<int32_t>(data[0] | (data[1] << 8));
  auto vocab = llama2c_vocab_from_memory(data + 2, size - 2, n_vocab);
  if (!vocab.ok()) {
    FUZZ_CHECK(!vocab.status().message().empty());
    return 0;
  }
  FUZZ_CHECK(vocab->tokens.size() == static_cast<size_t>(n_vocab));
  auto tok = Tokenizer::create(std::move(*vocab));
  if (!tok.ok()) return 0;
  fuzz::exercise_tokenizer(**tok, "Once upon a time, \xf0\x9f\xa6\x99 <s> \xff", true);
  return 0;
}
