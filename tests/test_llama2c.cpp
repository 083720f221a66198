// llama2.c checkpoint and tokenizer.bin readers, and the conversion to GGUF:
// stories260K.bin + tok512.bin convert to the same bytes as llama.cpp's
// stories260K.gguf (but for context_length), and bad headers, truncated files
// and bad tokenizer.bin files are bad_file statuses with messages.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <unistd.h>
#include <vector>

#include "runtime/model/gguf.h"
#include "runtime/model/gguf_writer.h"
#include "runtime/model/llama2c.h"

using namespace kestrel;

namespace {

const std::string kDir = std::string(KESTREL_SHARED_DIR) + "/models/";
const std::string kBin = kDir + "stories260K/stories260K.bin";
const std::string kTok = kDir + "stories260K/tok512.bin";
const std::string kGguf = kDir + "stories260K/stories260K.gguf";

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("kestrel_test_llama2c_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

void expect_error(const Status& s, StatusCode code, const std::string& substr) {
  INFO("status: " << s.to_string());
  REQUIRE_FALSE(s.ok());
  CHECK(s.code() == code);
  CHECK(s.message().find(substr) != std::string::npos);
}

Status ckpt_status(const std::vector<uint8_t>& b, size_t n) {
  std::vector<uint8_t> copy(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(n));
  auto r = Llama2cCheckpoint::from_memory(copy.data(), copy.size());
  return r.ok() ? Status() : r.status();
}

Status vocab_status(const std::vector<uint8_t>& b, size_t n, int32_t n_vocab = 512) {
  std::vector<uint8_t> copy(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(n));
  auto r = llama2c_vocab_from_memory(copy.data(), copy.size(), n_vocab);
  return r.ok() ? Status() : r.status();
}

template <typename T>
void poke(std::vector<uint8_t>& b, size_t at, T v) {
  REQUIRE(at + sizeof v <= b.size());
  std::memcpy(b.data() + at, &v, sizeof v);
}

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

}  // namespace

TEST_CASE("stories260K.bin header and arrays", "[llama2c]") {
  for (bool use_mmap : {true, false}) {
    auto r = Llama2cCheckpoint::open(kBin, use_mmap);
    INFO(r.status().to_string());
    REQUIRE(r.ok());
    const Llama2cConfig& c = (*r)->config;
    CHECK(c.dim == 64);
    CHECK(c.hidden_dim == 172);
    CHECK(c.n_layers == 5);
    CHECK(c.n_heads == 8);
    CHECK(c.n_kv_heads == 4);
    CHECK(c.vocab_size == 512);
    CHECK(c.seq_len == 512);
    CHECK(c.shared_classifier);
    CHECK(c.head_size() == 8);
    CHECK(c.kv_dim() == 32);
    CHECK((*r)->wcls.data == (*r)->token_embedding.data);
    CHECK((*r)->wk.n_floats == 5 * 32 * 64);
    CHECK((*r)->freq_cis_imag.n_floats == 512 * 4);
    CHECK((*r)->freq_cis_imag.data + 512 * 4 * 4 == (*r)->token_embedding.data + 1056540 - 28);
  }
}

TEST_CASE("tok512.bin gives the vocabulary stories260K.gguf holds", "[llama2c]") {
  auto v = llama2c_vocab(kTok, 512);
  INFO(v.status().to_string());
  REQUIRE(v.ok());
  auto g = gguf::File::open(kGguf);
  REQUIRE(g.ok());
  const auto tokens = (*g)->get_string_array("tokenizer.ggml.tokens").value();
  const auto scores = (*g)->get_f32_array("tokenizer.ggml.scores").value();
  const auto types = (*g)->get_i32_array("tokenizer.ggml.token_type").value();
  REQUIRE(v->tokens.size() == 512);
  REQUIRE(v->scores.size() == 512);
  REQUIRE(v->types.size() == 512);
  int mismatches = 0;
  for (size_t i = 0; i < 512; ++i) {
    if (v->tokens[i] != tokens[i] || bits(v->scores[i]) != bits(scores[i]) ||
        static_cast<int32_t>(v->types[i]) != types[i]) {
      ++mismatches;
      UNSCOPED_INFO("token " << i << ": '" << v->tokens[i] << "' vs '" << tokens[i] << "'");
    }
  }
  CHECK(mismatches == 0);
  CHECK(v->model == (*g)->get_string("tokenizer.ggml.model").value());
  CHECK(v->bos_id == (*g)->get_i32("tokenizer.ggml.bos_token_id").value());
  CHECK(v->eos_id == (*g)->get_i32("tokenizer.ggml.eos_token_id").value());
  CHECK(v->unk_id == (*g)->get_i32("tokenizer.ggml.unknown_token_id").value());
  CHECK(v->pad_id == (*g)->get_i32("tokenizer.ggml.padding_token_id").value());
  CHECK(v->sep_id == (*g)->get_i32("tokenizer.ggml.seperator_token_id").value());
  CHECK(v->tokens[1] == "<s>");
  CHECK(v->types[3] == TokenType::byte);
  CHECK(v->tokens[259] == "\xE2\x96\x81t");  // " t"
}

TEST_CASE("the Llama 2 tokenizer.bin matches ggml-vocab-llama-spm.gguf", "[llama2c]") {
  auto v = llama2c_vocab(kDir + "llama2-tokenizer/tokenizer.bin", 32000);
  INFO(v.status().to_string());
  REQUIRE(v.ok());
  auto g = gguf::File::open(kDir + "llama.cpp-vocab/ggml-vocab-llama-spm.gguf", {.vocab_only = true});
  REQUIRE(g.ok());
  const auto tokens = (*g)->get_string_array("tokenizer.ggml.tokens").value();
  const auto scores = (*g)->get_f32_array("tokenizer.ggml.scores").value();
  const auto types = (*g)->get_i32_array("tokenizer.ggml.token_type").value();
  REQUIRE(tokens.size() == 32000);
  int token_diff = 0, score_diff = 0, type_diff = 0;
  for (size_t i = 0; i < 32000; ++i) {
    token_diff += v->tokens[i] != tokens[i];
    score_diff += v->scores[i] != scores[i];
    type_diff += static_cast<int32_t>(v->types[i]) != types[i];
  }
  CHECK(token_diff == 0);
  CHECK(score_diff == 0);
  CHECK(type_diff == 0);
}

TEST_CASE("stories260K.bin + tok512.bin convert to llama.cpp's stories260K.gguf", "[llama2c][gguf]") {
  auto ck = Llama2cCheckpoint::open(kBin);
  REQUIRE(ck.ok());
  auto v = llama2c_vocab(kTok, (*ck)->config.vocab_size);
  REQUIRE(v.ok());
  const auto reference = read_bytes(kGguf);

  SECTION("byte-identical once context_length is the converter's default 2048") {
    gguf::Writer w;
    REQUIRE(llama2c_fill_gguf(**ck, *v, w).ok());
    w.set_u32("llama.context_length", 2048);
    auto out = w.to_bytes();
    REQUIRE(out.ok());
    CHECK(out->size() == reference.size());
    CHECK(*out == reference);
  }

  SECTION("convert_llama2c_to_gguf: same tensors bit for bit, same keys, context_length = seq_len") {
    const std::string out_path = temp_path("stories260K.gguf");
    const Status s = convert_llama2c_to_gguf(kBin, kTok, out_path);
    INFO(s.to_string());
    REQUIRE(s.ok());
    auto a = gguf::File::open(out_path);
    auto b = gguf::File::open(kGguf);
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    REQUIRE((*a)->tensors().size() == 48);
    REQUIRE((*a)->n_keys() == (*b)->n_keys());
    for (size_t i = 0; i < (*b)->n_keys(); ++i) {
      const auto ka = (*a)->key_info(i), kb = (*b)->key_info(i);
      CHECK(ka.key == kb.key);
      CHECK(ka.type == kb.type);
      if (kb.key != "llama.context_length") CHECK((*a)->raw_value(i) == (*b)->raw_value(i));
    }
    CHECK((*a)->get_u32("llama.context_length").value() == 512);
    for (const auto& tb : (*b)->tensors()) {
      const gguf::TensorInfo* ta = (*a)->find_tensor(tb.name);
      REQUIRE(ta != nullptr);
      CHECK(ta->type == tb.type);
      CHECK(ta->n_dims == tb.n_dims);
      CHECK(std::equal(ta->ne, ta->ne + 4, tb.ne));
      REQUIRE(ta->nbytes == tb.nbytes);
      CHECK(std::memcmp(ta->data, tb.data, tb.nbytes) == 0);
    }
    std::filesystem::remove(out_path);
  }
}

TEST_CASE("aidreams260K (plain MHA, its own vocabulary) converts", "[llama2c]") {
  const std::string out_path = temp_path("aidreams.gguf");
  const Status s = convert_llama2c_to_gguf(kDir + "aidreams260K/aidreams260K.bin", kDir + "aidreams260K/tok512.bin",
                                           out_path);
  INFO(s.to_string());
  REQUIRE(s.ok());
  auto f = gguf::File::open(out_path);
  REQUIRE(f.ok());
  CHECK((*f)->tensors().size() == 3 + 9 * 4);
  CHECK((*f)->get_u32("llama.block_count").value() == 4);
  CHECK((*f)->get_u32("llama.attention.head_count_kv").value() == 4);
  CHECK((*f)->get_u32("llama.context_length").value() == 128);
  CHECK((*f)->find_tensor("blk.3.attn_k.weight")->ne[1] == 64);
  std::filesystem::remove(out_path);
}

// ---------------------------------------------------------------------------
// Bad inputs.

TEST_CASE("llama2.c checkpoint: bad headers", "[llama2c][bad]") {
  const auto good = read_bytes(kBin);
  REQUIRE(ckpt_status(good, good.size()).ok());
  struct Case {
    size_t field;
    int32_t value;
    const char* message;
  };
  const Case cases[] = {
      {0, 0, "dim = 0 must be positive"},
      {0, -64, "dim = -64 must be positive"},
      {0, 1 << 30, "dim = 1073741824 is above the cap"},
      {4, -1, "hidden_dim = -1"},
      {8, 0, "n_layers = 0"},
      {8, 1 << 20, "n_layers = 1048576 is above the cap"},
      {12, 0, "n_heads = 0"},
      {12, 7, "dim 64 is not a multiple of n_heads 7"},
      {12, 128, "n_heads = 128 is above the cap of 64"},
      {16, 0, "n_kv_heads = 0"},
      {16, 3, "n_heads 8 is not a multiple of n_kv_heads 3"},
      {16, 16, "n_kv_heads = 16 is above the cap of 8"},
      {20, 0, "vocab_size = 0"},
      {20, std::numeric_limits<int32_t>::min(), "vocab_size = -2147483648"},
      {20, 2, "vocab_size 2 < 3"},
      {24, 0, "seq_len = 0"},
      {24, 511, "bytes after the last array"},
      {24, 513, "truncated"},
  };
  for (const Case& c : cases) {
    auto b = good;
    poke<int32_t>(b, c.field, c.value);
    INFO("field " << c.field << " = " << c.value);
    expect_error(ckpt_status(b, b.size()), StatusCode::bad_file, c.message);
  }
  {
    auto b = good;  // head size 64 / 64 = 1: odd
    poke<int32_t>(b, 12, 64);
    poke<int32_t>(b, 16, 64);
    expect_error(ckpt_status(b, b.size()), StatusCode::bad_file, "head size 1 is odd");
  }
  {
    auto b = good;  // an "ak42" export (version 1)
    poke<uint32_t>(b, 0, 0x616b3432u);
    poke<int32_t>(b, 4, 1);
    expect_error(ckpt_status(b, b.size()), StatusCode::unsupported, "export version 1");
  }
  {
    // Untied classifier: the negative vocab_size needs a wcls array after the tables.
    auto b = good;
    poke<int32_t>(b, 20, -512);
    expect_error(ckpt_status(b, b.size()), StatusCode::bad_file, "wcls");
    b.resize(b.size() + 512 * 64 * 4, 0);
    auto r = Llama2cCheckpoint::from_memory(b.data(), b.size());
    INFO(r.status().to_string());
    REQUIRE(r.ok());
    CHECK_FALSE((*r)->config.shared_classifier);
    CHECK((*r)->config.vocab_size == 512);
    CHECK((*r)->wcls.data == b.data() + good.size());
  }
  {
    auto b = good;  // trailing bytes
    b.push_back(0);
    expect_error(ckpt_status(b, b.size()), StatusCode::bad_file, "1 bytes after the last array");
  }
}

TEST_CASE("llama2.c checkpoint: truncated anywhere", "[llama2c][bad]") {
  const auto good = read_bytes(kBin);
  expect_error(ckpt_status(good, 0), StatusCode::bad_file, "empty");
  for (size_t cut = 1; cut < 28; ++cut) expect_error(ckpt_status(good, cut), StatusCode::bad_file, "truncated");
  int n = 0;
  for (size_t cut = 28; cut < good.size(); cut += 1021, ++n) {
    const Status s = ckpt_status(good, cut);
    if (s.ok() || s.code() != StatusCode::bad_file || s.message().find("truncated") == std::string::npos) {
      INFO("cut at " << cut << ": " << s.to_string());
      FAIL("expected a bad_file 'truncated' status");
    }
  }
  CHECK(n > 1000);
  expect_error(ckpt_status(good, good.size() - 1), StatusCode::bad_file, "freq_cis_imag");
  // Files on disk: empty, a directory, missing, cut short.
  const std::string empty = temp_path("empty.bin"), cut = temp_path("cut.bin");
  write_bytes(empty, {});
  write_bytes(cut, std::vector<uint8_t>(good.begin(), good.begin() + 5000));
  expect_error(Llama2cCheckpoint::open(empty).status(), StatusCode::bad_file, "is empty");
  expect_error(Llama2cCheckpoint::open(cut).status(), StatusCode::bad_file, "truncated");
  expect_error(Llama2cCheckpoint::open(cut, false).status(), StatusCode::bad_file, "truncated");
  expect_error(Llama2cCheckpoint::open(std::filesystem::temp_directory_path().string()).status(),
               StatusCode::io_error, "is a directory");
  expect_error(Llama2cCheckpoint::open(temp_path("missing.bin")).status(), StatusCode::io_error, "No such file");
  std::filesystem::remove(empty);
  std::filesystem::remove(cut);
}

TEST_CASE("tokenizer.bin: truncated and malformed", "[llama2c][bad]") {
  const auto good = read_bytes(kTok);
  REQUIRE(vocab_status(good, good.size()).ok());
  expect_error(vocab_status(good, 0), StatusCode::bad_file, "empty");
  for (size_t cut = 1; cut < good.size(); ++cut) {
    const Status s = vocab_status(good, cut);
    if (s.ok() || s.code() != StatusCode::bad_file || s.message().find("truncated") == std::string::npos) {
      INFO("cut at " << cut << ": " << s.to_string());
      FAIL("expected a bad_file 'truncated' status");
    }
  }
  expect_error(vocab_status(good, good.size(), 513), StatusCode::bad_file, "truncated");
  expect_error(vocab_status(good, good.size(), 511), StatusCode::bad_file, "trailing bytes");
  expect_error(vocab_status(good, good.size(), 1 << 30), StatusCode::invalid_argument, "out of range");

  // Token 0 starts at offset 4: score at 4, length at 8.
  auto b = good;
  poke<int32_t>(b, 0, 0);
  expect_error(vocab_status(b, b.size()), StatusCode::bad_file, "max_token_length 0");
  b = good;
  poke<int32_t>(b, 0, -7);
  expect_error(vocab_status(b, b.size()), StatusCode::bad_file, "max_token_length -7");
  b = good;
  poke<int32_t>(b, 8, -5);
  expect_error(vocab_status(b, b.size()), StatusCode::bad_file, "length -5 outside [0, 7]");
  b = good;
  poke<int32_t>(b, 8, 8);
  expect_error(vocab_status(b, b.size()), StatusCode::bad_file, "length 8 outside [0, 7]");
  b = good;
  poke<int32_t>(b, 8, std::numeric_limits<int32_t>::max());
  expect_error(vocab_status(b, b.size()), StatusCode::bad_file, "outside");
  b = good;
  poke<float>(b, 4, std::numeric_limits<float>::quiet_NaN());
  expect_error(vocab_status(b, b.size()), StatusCode::bad_file, "non-finite score");
  b = good;
  poke<float>(b, 4, std::numeric_limits<float>::infinity());
  expect_error(vocab_status(b, b.size()), StatusCode::bad_file, "non-finite score");

  // Through the converter: the tokenizer error carries its path.
  const std::string bad_tok = temp_path("tok.bin");
  b = good;
  b.resize(b.size() - 3);
  write_bytes(bad_tok, b);
  const Status s = convert_llama2c_to_gguf(kBin, bad_tok, temp_path("never.gguf"));
  expect_error(s, StatusCode::bad_file, "truncated");
  CHECK(s.message().find(bad_tok) != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(temp_path("never.gguf")));
  expect_error(convert_llama2c_to_gguf(temp_path("missing.bin"), kTok, temp_path("never.gguf")),
               StatusCode::io_error, "No such file");
  std::filesystem::remove(bad_tok);
}
