// libFuzzer target: the GGUF reader on arbitrary bytes (BAD-INPUTS rows 1-9, 13).
// Input byte 0 picks the open options; the rest is the file. On success every
// key is read through each typed accessor and every tensor's first and last
// data byte is touched, so a bounds mistake anywhere shows as an ASan report.
#include <cstddef>
#include <cstdint>

#include "runtime/model/gguf.h"
#include "tests/fuzz/fuzz_util.h"

using namespace kestrel;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  gguf::OpenOptions oo;
  oo.use_mmap = false;
  oo.vocab_only = (data[0] & 1) != 0;
  auto file = gguf::File::from_memory(data + 1, size - 1, oo);
  if (!file.ok()) {
    FUZZ_CHECK(!file.status().message().empty());
    return 0;
  }
  const gguf::File& f = **file;
  FUZZ_CHECK(f.file_size() == size - 1);
  // The data section may start past the end only when no tensor data is there.
  FUZZ_CHECK(f.data_offset() <= f.file_size() || oo.vocab_only || f.tensors().empty());
  for (size_t i = 0; i < f.n_keys(); ++i) {
    const gguf::KeyInfo k = f.key_info(i);
    FUZZ_CHECK(!k.key.empty());
    FUZZ_CHECK(f.has(k.key));
    (void)f.raw_value(i);
    (void)f.get_string(k.key);
    (void)f.get_u32(k.key);
    (void)f.get_u64(k.key);
    (void)f.get_i32(k.key);
    (void)f.get_f32(k.key);
    (void)f.get_bool(k.key);
    (void)f.get_string_array(k.key);
    (void)f.get_f32_array(k.key);
    (void)f.get_i32_array(k.key);
    (void)f.get_array_size(k.key);
  }
  volatile uint8_t sink = 0;
  for (const gguf::TensorInfo& t : f.tensors()) {
    FUZZ_CHECK(f.find_tensor(t.name) == &t);
    if (!t.data) {
      FUZZ_CHECK(oo.vocab_only);
      continue;
    }
    FUZZ_CHECK(t.offset <= f.file_size() && t.nbytes <= f.file_size() - t.offset);
    if (t.nbytes) {
      const uint8_t* p = static_cast<const uint8_t*>(t.data);
      sink = static_cast<uint8_t>(sink + p[0] + p[t.nbytes - 1]);
    }
  }
  // Vocabulary metadata through the tokenizer, as the model loader does.
  auto vocab = vocab_from_gguf(f);
  if (vocab.ok()) {
    auto tok = Tokenizer::create(std::move(*vocab));
    if (tok.ok()) fuzz::exercise_tokenizer(**tok, "Hello world <s>\xff\x00 12345", true);
  }
  return 0;
}
