// Shared helpers of the libFuzzer targets (tests/fuzz/fuzz_*.cpp).
//
// A target's input is untrusted bytes; the only acceptable outcomes are a
// usable result or a non-ok Status. A crash, a sanitizer report, a leak or a
// check below failing is a finding (FUZZ_CHECK aborts so that libFuzzer
// records the input).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "runtime/model/gguf.h"
#include "runtime/tokenizer/tokenizer.h"

#define FUZZ_CHECK(cond)                                                     \
  do {                                                                       \
    if (!(cond)) {                                                           \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                          \
    }                                                                        \
  } while (0)

namespace kestrel::fuzz {

// ../shared/models, or $KESTREL_SHARED_DIR when set (installed elsewhere).
inline std::string shared_dir() {
  const char* env = std::getenv("KESTREL_SHARED_DIR");
  return env && *env ? std::string(env) : std::string(KESTREL_SHARED_DIR);
}

// A tokenizer from one of llama.cpp's vocab files; exits (at start-up, not on
// an input) when the file is missing, since the target cannot run without it.
inline std::unique_ptr<Tokenizer> load_vocab_tokenizer(const std::string& name) {
  const std::string path = shared_dir() + "/models/llama.cpp-vocab/ggml-vocab-" + name + ".gguf";
  auto file = gguf::File::open(path, {.vocab_only = true});
  if (!file.ok()) {
    std::fprintf(stderr, "fuzz: cannot open %s: %s\n", path.c_str(), file.status().to_string().c_str());
    std::exit(2);
  }
  auto vocab = vocab_from_gguf(**file);
  if (!vocab.ok()) {
    std::fprintf(stderr, "fuzz: %s: %s\n", path.c_str(), vocab.status().to_string().c_str());
    std::exit(2);
  }
  auto tok = Tokenizer::create(std::move(*vocab));
  if (!tok.ok()) {
    std::fprintf(stderr, "fuzz: %s: %s\n", path.c_str(), tok.status().to_string().c_str());
    std::exit(2);
  }
  return std::move(tok).value();
}

// Encodes text, checks every id is in the vocabulary and that decoding and
// streaming back succeed. check_round_trip: the vocabulary is an SPM one with
// all 256 byte tokens, so without special-token parsing every byte survives,
// except that U+2581 (SPM's space) comes back as a space.
inline void exercise_tokenizer(const Tokenizer& tok, std::string_view text, bool parse_special,
                               bool check_round_trip = false) {
  std::vector<int32_t> ids;
  Status st = tok.encode(text, /*add_special=*/false, parse_special, ids);
  if (!st.ok()) {
    FUZZ_CHECK(st.code() == StatusCode::too_long);
    return;
  }
  for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < tok.n_vocab());
  std::string back;
  FUZZ_CHECK(tok.decode(ids, /*render_special=*/false, back).ok());
  StreamDecoder dec(tok);
  std::string streamed;
  for (int32_t id : ids) FUZZ_CHECK(dec.push(id, streamed).ok());
  dec.flush(streamed);
  if (check_round_trip && !parse_special && text.find("\xe2\x96\x81") == std::string_view::npos)
    FUZZ_CHECK(back == text);
}

}  // namespace kestrel::fuzz
