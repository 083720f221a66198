// GGUF reader and writer: the real stories260K file and the llama.cpp vocab
// files parse; the writer round-trips them byte for byte; every bad-input class
// of ../shared/BAD-INPUTS.md rows 1-9 and 13 gives its specific status and a
// message naming the problem.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "runtime/model/gguf.h"
#include "runtime/model/gguf_writer.h"
#include "platform/checked_math.h"

using namespace kestrel;
using namespace kestrel::gguf;

namespace {

const std::string kShared = KESTREL_SHARED_DIR;
const std::string kStories = kShared + "/models/stories260K/stories260K.gguf";

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("kestrel_test_gguf_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

// Parses an exact-size heap copy, so any read past the end is a real overrun
// (visible to AddressSanitizer builds).
Status parse_status(const std::vector<uint8_t>& b, size_t n, OpenOptions opt = {}) {
  std::vector<uint8_t> copy(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(n));
  auto r = File::from_memory(copy.data(), copy.size(), opt);
  return r.ok() ? Status() : r.status();
}

void expect_error(const Status& s, StatusCode code, const std::string& substr) {
  INFO("status: " << s.to_string());
  REQUIRE_FALSE(s.ok());
  CHECK(s.code() == code);
  CHECK(s.message().find(substr) != std::string::npos);
}

void expect_error(const std::vector<uint8_t>& b, StatusCode code, const std::string& substr) {
  expect_error(parse_status(b, b.size()), code, substr);
}

template <typename T>
void poke(std::vector<uint8_t>& b, size_t at, T v) {
  REQUIRE(at + sizeof v <= b.size());
  std::memcpy(b.data() + at, &v, sizeof v);
}

// Byte offset of the first occurrence of `s` in b at or after `from`.
size_t find_bytes(const std::vector<uint8_t>& b, std::string_view s, size_t from = 0) {
  auto it = std::search(b.begin() + static_cast<std::ptrdiff_t>(from), b.end(), s.begin(), s.end());
  REQUIRE(it != b.end());
  return static_cast<size_t>(it - b.begin());
}

// A small valid model: two keys and two f32 tensors (8x2 and 8).
const float kA[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
const float kB[8] = {-1, -2, -3, -4, -5, -6, -7, -8};

Writer small_writer() {
  Writer w;
  w.set_string("general.architecture", "llama");
  w.set_u32("llama.block_count", 1);
  REQUIRE(w.add_tensor("a", DType::F32, {8, 2}, kA, sizeof kA).ok());
  REQUIRE(w.add_tensor("b", DType::F32, {8}, kB, sizeof kB).ok());
  return w;
}

std::vector<uint8_t> bytes_of(const Writer& w) {
  auto r = w.to_bytes();
  REQUIRE(r.ok());
  return std::move(r).value();
}

Writer::RawTensor raw_f32(const std::string& name, std::vector<uint64_t> dims, const void* data, uint64_t nbytes) {
  Writer::RawTensor t;
  t.name = name;
  t.type_id = 0;
  t.dims = std::move(dims);
  t.data = data;
  t.nbytes = nbytes;
  return t;
}

}  // namespace

TEST_CASE("stories260K.gguf parses with its documented metadata", "[gguf]") {
  for (bool use_mmap : {true, false}) {
    DYNAMIC_SECTION("use_mmap=" << use_mmap) {
      OpenOptions opt;
      opt.use_mmap = use_mmap;
      auto r = File::open(kStories, opt);
      INFO(r.status().to_string());
      REQUIRE(r.ok());
      const File& f = **r;
      CHECK(f.version() == 3);
      CHECK(f.alignment() == 32);
      CHECK(f.file_size() == 1185376);
      CHECK(f.n_keys() == 19);
      CHECK(f.tensors().size() == 48);
      CHECK(f.get_string("general.architecture").value() == "llama");
      CHECK(f.get_string("tokenizer.ggml.model").value() == "llama");
      CHECK(f.get_u32("llama.context_length").value() == 2048);
      CHECK(f.get_u32("llama.embedding_length").value() == 64);
      CHECK(f.get_u32("llama.feed_forward_length").value() == 172);
      CHECK(f.get_u32("llama.attention.head_count").value() == 8);
      CHECK(f.get_u32("llama.attention.head_count_kv").value() == 4);
      CHECK(f.get_u32("llama.block_count").value() == 5);
      CHECK(f.get_u32("llama.rope.dimension_count").value() == 8);
      CHECK(f.get_f32("llama.attention.layer_norm_rms_epsilon").value() == Approx(1e-5f));
      CHECK(f.get_i32("tokenizer.ggml.bos_token_id").value() == 1);
      CHECK(f.get_i32("tokenizer.ggml.eos_token_id").value() == 2);
      CHECK(f.get_i32("tokenizer.ggml.unknown_token_id").value() == 0);
      // The converter stored "absent" as u32 0xFFFFFFFF: get_i32 reads it as -1.
      CHECK(f.get_u32("tokenizer.ggml.padding_token_id").value() == 0xFFFFFFFFu);
      CHECK(f.get_i32("tokenizer.ggml.padding_token_id").value() == -1);
      CHECK(f.get_i32("tokenizer.ggml.seperator_token_id").value() == -1);

      auto tokens = f.get_string_array("tokenizer.ggml.tokens");
      REQUIRE(tokens.ok());
      REQUIRE(tokens->size() == 512);
      CHECK((*tokens)[0] == "<unk>");
      CHECK((*tokens)[1] == "<s>");
      CHECK((*tokens)[3] == "<0x00>");
      CHECK(f.get_array_size("tokenizer.ggml.scores").value() == 512);
      CHECK(f.get_f32_array("tokenizer.ggml.scores")->size() == 512);
      auto types = f.get_i32_array("tokenizer.ggml.token_type");
      REQUIRE(types.ok());
      CHECK((*types)[0] == 2);
      CHECK((*types)[1] == 3);
      CHECK((*types)[3] == 6);

      const TensorInfo* emb = f.find_tensor("token_embd.weight");
      REQUIRE(emb != nullptr);
      CHECK(emb->type == DType::F32);
      CHECK(emb->n_dims == 2);
      CHECK(emb->ne[0] == 64);
      CHECK(emb->ne[1] == 512);
      CHECK(emb->nbytes == 64 * 512 * 4);
      CHECK(emb->offset == f.data_offset());
      CHECK(emb->data != nullptr);
      const TensorInfo* down = f.find_tensor("blk.4.ffn_down.weight");
      REQUIRE(down != nullptr);
      CHECK(down->ne[0] == 172);
      CHECK(down->ne[1] == 64);
      CHECK(f.find_tensor("blk.5.ffn_down.weight") == nullptr);
      const TensorInfo& last = f.tensors().back();
      CHECK(last.offset + last.nbytes == f.file_size());

      // Tensor bytes are the file's bytes at the stated offsets.
      const auto bytes = read_bytes(kStories);
      for (const TensorInfo& t : f.tensors())
        CHECK(std::memcmp(t.data, bytes.data() + t.offset, t.nbytes) == 0);
    }
  }
}

TEST_CASE("every llama.cpp vocab gguf parses (vocab_only and full)", "[gguf]") {
  const std::string dir = kShared + "/models/llama.cpp-vocab";
  int n_files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".gguf") continue;
    ++n_files;
    INFO(entry.path().string());
    for (bool vocab_only : {true, false}) {
      OpenOptions opt;
      opt.vocab_only = vocab_only;
      auto r = File::open(entry.path().string(), opt);
      INFO(r.status().to_string());
      REQUIRE(r.ok());
      const File& f = **r;
      CHECK(f.version() == 3);
      CHECK(f.tensors().empty());
      auto model = f.get_string("tokenizer.ggml.model");
      REQUIRE(model.ok());
      CHECK((*model == "llama" || *model == "gpt2" || *model == "bert"));
      auto tokens = f.get_string_array("tokenizer.ggml.tokens");
      REQUIRE(tokens.ok());
      CHECK(tokens->size() >= 30000);
      CHECK(tokens->size() == f.get_array_size("tokenizer.ggml.tokens").value());
      if (*model == "gpt2") {
        auto merges = f.get_string_array("tokenizer.ggml.merges");
        REQUIRE(merges.ok());
        CHECK(!merges->empty());
      }
    }
  }
  CHECK(n_files == 10);
  auto spm = File::open(dir + "/ggml-vocab-llama-spm.gguf", {});
  REQUIRE(spm.ok());
  CHECK((*spm)->get_array_size("tokenizer.ggml.tokens").value() == 32000);
}

TEST_CASE("writer round-trips stories260K.gguf byte for byte", "[gguf][writer]") {
  const auto orig = read_bytes(kStories);
  auto r = File::from_memory(orig.data(), orig.size());
  REQUIRE(r.ok());
  const File& f = **r;
  Writer w;
  w.set_alignment(f.alignment());
  w.remove("general.alignment");  // the original has no such key
  for (size_t i = 0; i < f.n_keys(); ++i) {
    const KeyInfo k = f.key_info(i);
    w.set_raw(k.key, static_cast<uint32_t>(k.type), f.raw_value(i));
  }
  for (const TensorInfo& t : f.tensors()) {
    std::vector<int64_t> ne(t.ne, t.ne + t.n_dims);
    REQUIRE(w.add_tensor(t.name, t.type, std::span<const int64_t>(ne), t.data, t.nbytes).ok());
  }
  auto out = w.to_bytes();
  REQUIRE(out.ok());
  CHECK(out->size() == orig.size());
  CHECK(*out == orig);

  // And through a file on disk, read back: same metadata and tensor bytes.
  const std::string path = temp_path("roundtrip.gguf");
  REQUIRE(w.write_file(path).ok());
  auto g = File::open(path);
  REQUIRE(g.ok());
  REQUIRE((*g)->n_keys() == f.n_keys());
  for (size_t i = 0; i < f.n_keys(); ++i) {
    CHECK((*g)->key_info(i).key == f.key_info(i).key);
    CHECK((*g)->raw_value(i) == f.raw_value(i));
  }
  REQUIRE((*g)->tensors().size() == f.tensors().size());
  for (size_t i = 0; i < f.tensors().size(); ++i) {
    const TensorInfo& a = f.tensors()[i];
    const TensorInfo& b = (*g)->tensors()[i];
    CHECK(a.name == b.name);
    CHECK(a.offset == b.offset);
    CHECK(a.nbytes == b.nbytes);
    CHECK(std::memcmp(a.data, b.data, a.nbytes) == 0);
  }
  std::filesystem::remove(path);
}

TEST_CASE("writer: every value type reads back through the typed accessors", "[gguf][writer]") {
  Writer w;
  w.set_u8("u8", 200);
  w.set_i8("i8", -100);
  w.set_u16("u16", 60000);
  w.set_i16("i16", -30000);
  w.set_u32("u32", 4000000000u);
  w.set_i32("i32", -2000000000);
  w.set_u64("u64", uint64_t{1} << 40);
  w.set_i64("i64", -5);
  w.set_f32("f32", 1.5f);
  w.set_f64("f64", 0.25);
  w.set_bool("bool", true);
  w.set_string("str", "hello \xe2\x96\x81 world");
  const float fa[3] = {0.5f, -1.0f, 2.0f};
  const int32_t ia[3] = {7, -8, 9};
  const std::vector<std::string> sa = {"a", "", "ccc"};
  const uint8_t ua[4] = {1, 2, 3, 255};
  const double da[2] = {1.25, -2.5};
  w.set_f32_array("fa", fa);
  w.set_i32_array("ia", ia);
  w.set_string_array("sa", sa);
  w.set_array("ua", ValueType::u8, ua, 4);
  w.set_array("da", ValueType::f64, da, 2);
  w.set_array("empty", ValueType::i32, nullptr, 0);
  w.set_alignment(64);
  REQUIRE(w.add_tensor("t", DType::F32, {8}, kB, sizeof kB).ok());
  const auto b = bytes_of(w);
  auto r = File::from_memory(b.data(), b.size());
  INFO(r.status().to_string());
  REQUIRE(r.ok());
  const File& f = **r;
  CHECK(f.alignment() == 64);
  CHECK(f.data_offset() % 64 == 0);
  CHECK(f.get_u32("u8").value() == 200);
  CHECK(f.get_i32("i8").value() == -100);
  CHECK(f.get_u32("u16").value() == 60000);
  CHECK(f.get_i32("i16").value() == -30000);
  CHECK(f.get_u32("u32").value() == 4000000000u);
  CHECK(f.get_i32("i32").value() == -2000000000);
  CHECK(f.get_u64("u64").value() == uint64_t{1} << 40);
  CHECK(f.get_i32("i64").value() == -5);  // any integer type whose value fits
  CHECK(f.get_f32("f32").value() == 1.5f);
  CHECK(f.get_f32("f64").value() == 0.25f);
  CHECK(f.get_bool("bool").value() == true);
  CHECK(f.get_string("str").value() == "hello \xe2\x96\x81 world");
  CHECK(f.get_f32_array("fa").value() == std::vector<float>{0.5f, -1.0f, 2.0f});
  CHECK(f.get_i32_array("ia").value() == std::vector<int32_t>{7, -8, 9});
  CHECK(f.get_i32_array("ua").value() == std::vector<int32_t>{1, 2, 3, 255});
  CHECK(f.get_f32_array("da").value() == std::vector<float>{1.25f, -2.5f});
  auto s = f.get_string_array("sa").value();
  REQUIRE(s.size() == 3);
  CHECK((s[0] == "a" && s[1].empty() && s[2] == "ccc"));
  CHECK(f.get_array_size("empty").value() == 0);
  CHECK(f.get_i32_array("empty").value().empty());
  CHECK(f.key_info(0).type == ValueType::u8);
  CHECK(f.key_info(f.n_keys() - 1).key == "general.alignment");
  const KeyInfo sa_info = f.key_info(14);
  CHECK(sa_info.key == "sa");
  CHECK(sa_info.array_type == ValueType::string);
  CHECK(sa_info.count == 3);
  CHECK(std::memcmp(f.find_tensor("t")->data, kB, sizeof kB) == 0);

  // Row 7: a known key with the wrong type or width; typed accessors check.
  expect_error(f.get_u32("missing").status(), StatusCode::bad_file, "'missing' not found");
  expect_error(f.get_string("u32").status(), StatusCode::bad_file, "has type u32, expected string");
  expect_error(f.get_u32("str").status(), StatusCode::bad_file, "expected an integer");
  expect_error(f.get_u32("i8").status(), StatusCode::bad_file, "does not fit u32");
  expect_error(f.get_i32("u32").status(), StatusCode::bad_file, "does not fit i32");  // 4e9, not 0xFFFFFFFF
  expect_error(f.get_i32("u64").status(), StatusCode::bad_file, "does not fit i32");
  expect_error(f.get_f32("i32").status(), StatusCode::bad_file, "expected f32");
  expect_error(f.get_bool("u8").status(), StatusCode::bad_file, "expected bool");
  expect_error(f.get_f32_array("ua").status(), StatusCode::bad_file, "array of u8, expected an array of f32");
  expect_error(f.get_i32_array("fa").status(), StatusCode::bad_file, "expected an array of integers");
  expect_error(f.get_string_array("ia").status(), StatusCode::bad_file, "expected an array of strings");
  expect_error(f.get_array_size("u8").status(), StatusCode::bad_file, "expected an array");
}

TEST_CASE("writer rejects inconsistent tensors", "[gguf][writer]") {
  Writer w;
  CHECK(w.add_tensor("x", DType::F32, {8}, kB, 16).code() == StatusCode::invalid_argument);
  CHECK(w.add_tensor("", DType::F32, {8}, kB, 32).code() == StatusCode::invalid_argument);
  CHECK(w.add_tensor("x", DType::Q4_0, {8}, kB, 18).code() == StatusCode::invalid_argument);
  CHECK(w.add_tensor("x", DType::F32, {8, 0}, kB, 0).code() == StatusCode::invalid_argument);
  CHECK(w.add_tensor("x", DType::F32, {1, 1, 1, 1, 8}, kB, 32).code() == StatusCode::invalid_argument);
  REQUIRE(w.add_tensor_copy("x", DType::F32, std::vector<int64_t>{8}, kB, 32).ok());
  CHECK(w.add_tensor("x", DType::F32, {8}, kB, 32).code() == StatusCode::invalid_argument);
  const auto b = bytes_of(w);
  auto r = File::from_memory(b.data(), b.size());
  REQUIRE(r.ok());
  CHECK(std::memcmp((*r)->find_tensor("x")->data, kB, 32) == 0);
}

// ---------------------------------------------------------------------------
// Bad inputs (../shared/BAD-INPUTS.md). Each case expects a specific status
// code and a message substring.

TEST_CASE("bad input row 1: truncated anywhere, no crash, always an error", "[gguf][bad]") {
  const auto b = read_bytes(kStories);
  auto full = File::from_memory(b.data(), b.size());
  REQUIRE(full.ok());
  const size_t data_offset = static_cast<size_t>((*full)->data_offset());
  expect_error(parse_status(b, 0), StatusCode::bad_file, "empty");
  // Every cut point through the header, metadata and tensor infos.
  size_t n_cuts = 0;
  for (size_t cut = 1; cut < data_offset + 64; ++cut, ++n_cuts) {
    const Status s = parse_status(b, cut);
    if (s.ok() || s.code() != StatusCode::bad_file || s.message().find("truncated") == std::string::npos) {
      INFO("cut at " << cut << ": " << s.to_string());
      FAIL("expected a bad_file 'truncated' status");
    }
  }
  // A stride through the data section (and the very last byte).
  for (size_t cut = data_offset + 64; cut < b.size(); cut += 4093, ++n_cuts)
    expect_error(parse_status(b, cut), StatusCode::bad_file, "past the end of the file");
  expect_error(parse_status(b, b.size() - 1), StatusCode::bad_file, "past the end of the file");
  CHECK(n_cuts > 14000);

  // The message names the offset.
  expect_error(parse_status(b, 30), StatusCode::bad_file, "truncated at offset 24");

  // vocab_only tolerates missing tensor data (tensor data pointers stay null)
  // but not a truncated tensor table.
  OpenOptions vocab;
  vocab.vocab_only = true;
  std::vector<uint8_t> head(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(data_offset));
  auto v = File::from_memory(head.data(), head.size(), vocab);
  REQUIRE(v.ok());
  CHECK((*v)->tensors().size() == 48);
  CHECK((*v)->tensors()[0].data == nullptr);
  CHECK((*v)->get_string_array("tokenizer.ggml.tokens")->size() == 512);
  expect_error(parse_status(b, data_offset - 40, vocab), StatusCode::bad_file, "truncated");

  // Same on the mmap and read() paths of File::open.
  const std::string path = temp_path("truncated.gguf");
  write_bytes(path, std::vector<uint8_t>(b.begin(), b.end() - 100));
  for (bool use_mmap : {true, false}) {
    OpenOptions opt;
    opt.use_mmap = use_mmap;
    auto r = File::open(path, opt);
    expect_error(r.status(), StatusCode::bad_file, "past the end of the file");
    CHECK(r.status().message().find(path) != std::string::npos);
  }
  std::filesystem::remove(path);
}

TEST_CASE("bad input row 2: magic, version, byte order", "[gguf][bad]") {
  const auto good = bytes_of(small_writer());
  REQUIRE(parse_status(good, good.size()).ok());
  auto b = good;
  b[3] = 'X';
  expect_error(b, StatusCode::bad_file, "not a GGUF file");
  b = good;
  poke<uint32_t>(b, 4, 0);
  expect_error(b, StatusCode::bad_file, "version 0");
  poke<uint32_t>(b, 4, 1);
  expect_error(b, StatusCode::unsupported, "version 1 is not supported");
  poke<uint32_t>(b, 4, 4);
  expect_error(b, StatusCode::unsupported, "unknown GGUF version 4");
  poke<uint32_t>(b, 4, 0x03000000u);  // what a big-endian v3 file's version reads as
  expect_error(b, StatusCode::unsupported, "byte-swapped (big-endian) file");
  // v2 has the same layout as v3 and is accepted.
  Writer v2(2);
  v2.set_string("general.architecture", "llama");
  const auto b2 = bytes_of(v2);
  auto r2 = File::from_memory(b2.data(), b2.size());
  REQUIRE(r2.ok());
  CHECK((*r2)->version() == 2);
}

TEST_CASE("bad input row 3: huge or impossible counts", "[gguf][bad]") {
  const auto good = bytes_of(small_writer());
  auto b = good;
  poke<uint64_t>(b, 8, uint64_t{1} << 63);  // tensor count, negative as int64
  expect_error(b, StatusCode::bad_file, "tensor count 9223372036854775808 is above the cap");
  b = good;
  poke<uint64_t>(b, 16, ~uint64_t{0});  // key count
  expect_error(b, StatusCode::bad_file, "key count 18446744073709551615 is above the cap");
  b = good;
  poke<uint64_t>(b, 16, 60000);  // below the cap but more than the file can hold
  expect_error(b, StatusCode::bad_file, "truncated at offset 24");
  b = good;
  poke<uint64_t>(b, 24, ~uint64_t{0});  // first key's length
  expect_error(b, StatusCode::bad_file, "above the cap");
  b = good;
  poke<uint64_t>(b, 24, 4000);  // first key's length: past the end
  expect_error(b, StatusCode::bad_file, "truncated at offset 32");

  // Array and string lengths.
  Writer w;
  const std::vector<std::string> sa = {"x", "y"};
  w.set_string_array("arr", sa);
  w.set_string("s", "abc");
  const auto ga = bytes_of(w);
  const size_t arr_len_at = find_bytes(ga, "arr") + 3 + 4 + 4;  // key, type, element type
  const size_t str_len_at = find_bytes(ga, "s\x08\x00\x00\x00", arr_len_at) + 5;
  b = ga;
  poke<uint64_t>(b, arr_len_at, uint64_t{1} << 40);
  expect_error(b, StatusCode::bad_file, "array length 1099511627776 is above the cap");
  b = ga;
  poke<uint64_t>(b, arr_len_at, 1000000);  // each string needs >= 8 bytes
  expect_error(b, StatusCode::bad_file, "1000000 strings cannot fit");
  b = ga;
  poke<uint64_t>(b, str_len_at, ~uint64_t{0});
  expect_error(b, StatusCode::bad_file, "above the cap");
  b = ga;
  poke<uint64_t>(b, str_len_at, 1000);
  expect_error(b, StatusCode::bad_file, "truncated");
  Writer wf;
  const float f4[4] = {};
  wf.set_array("fa", ValueType::f32, f4, 4);
  auto bf = bytes_of(wf);
  poke<uint64_t>(bf, find_bytes(bf, "fa") + 2 + 8, uint64_t{1} << 25);  // 128 MiB of f32 in a tiny file
  expect_error(bf, StatusCode::bad_file, "truncated");
}

TEST_CASE("bad input row 4: size arithmetic that overflows", "[gguf][bad]") {
  {
    Writer w;
    w.add_raw_tensor(raw_f32("big", {uint64_t{1} << 32, uint64_t{1} << 32, uint64_t{1} << 32}, nullptr, 0));
    expect_error(bytes_of(w), StatusCode::bad_file, "element count overflows");
  }
  {
    Writer w;  // elements fit, bytes do not: 2^55 f32 = 2^57 bytes is above the cap
    w.add_raw_tensor(raw_f32("big", {uint64_t{1} << 28, uint64_t{1} << 27}, nullptr, 0));
    expect_error(bytes_of(w), StatusCode::bad_file, "byte size overflows");
  }
  {
    Writer w;  // a valid size at an offset near 2^64
    Writer::RawTensor t = raw_f32("far", {8}, kB, sizeof kB);
    t.offset = ~uint64_t{0} - 31;
    w.add_raw_tensor(t);
    expect_error(bytes_of(w), StatusCode::bad_file, "overflows");
  }
  CHECK_FALSE(mul_or_error(uint64_t{1} << 40, uint64_t{1} << 30, "x").ok());
  CHECK_FALSE(add_or_error(~uint64_t{0}, 1, "x").ok());
  CHECK_FALSE(align_up_or_error(~uint64_t{0} - 3, 32, "x").ok());
  CHECK(align_up_or_error(33, 32, "x").value() == 64);
  uint64_t out = 0;
  CHECK_FALSE(checked_align_up(10, 24, out));  // not a power of two
  CHECK(checked_mul(1 << 20, 1 << 20, out));
  CHECK(out == uint64_t{1} << 40);
}

TEST_CASE("bad input row 5: overlapping, holed, unordered, out-of-file tensors", "[gguf][bad]") {
  auto with_offsets = [](uint64_t off_a, uint64_t off_b) {
    Writer w;
    Writer::RawTensor a = raw_f32("a", {8, 2}, kA, sizeof kA);
    Writer::RawTensor b = raw_f32("b", {8}, kB, sizeof kB);
    a.offset = off_a;
    b.offset = off_b;
    w.add_raw_tensor(a);
    w.add_raw_tensor(b);
    return bytes_of(w);
  };
  REQUIRE(parse_status(with_offsets(0, 64), with_offsets(0, 64).size()).ok());
  expect_error(with_offsets(0, 32), StatusCode::bad_file, "overlaps tensor 'a'");
  expect_error(with_offsets(0, 0), StatusCode::bad_file, "overlaps");
  expect_error(with_offsets(0, 96), StatusCode::bad_file, "leaves a hole of 32 bytes");
  expect_error(with_offsets(32, 96), StatusCode::bad_file, "hole");
  expect_error(with_offsets(64, 0), StatusCode::bad_file, "out of order");
  expect_error(with_offsets(0, 72), StatusCode::bad_file, "not a multiple of the alignment 32");
  Writer w;  // the info says 8x1000 floats, the file holds 16
  w.add_raw_tensor(raw_f32("a", {8, 1000}, kA, sizeof kA));
  expect_error(bytes_of(w), StatusCode::bad_file, "runs past the end of the file");
}

TEST_CASE("bad input row 6: unknown types, nested arrays, empty or duplicate keys and names", "[gguf][bad]") {
  const std::string u32_one("\x01\x00\x00\x00", 4);
  {
    Writer w;
    w.set_raw("k", 13, u32_one);
    expect_error(bytes_of(w), StatusCode::bad_file, "unknown value type 13");
  }
  {
    Writer w;
    w.set_raw("k", 0xFFFFFFFFu, u32_one);
    expect_error(bytes_of(w), StatusCode::bad_file, "unknown value type 4294967295");
  }
  {
    Writer w;  // array of unknown element type
    w.set_raw("k", 9, std::string("\x63\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 12));
    expect_error(bytes_of(w), StatusCode::bad_file, "unknown value type 99");
  }
  {
    Writer w;  // array of arrays: element type 9, one element
    std::string enc("\x09\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00", 12);
    enc += std::string("\x04\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00", 12) + u32_one;
    w.set_raw("k", 9, enc);
    expect_error(bytes_of(w), StatusCode::bad_file, "nested arrays");
  }
  {
    Writer w;
    w.set_u32("", 1);
    expect_error(bytes_of(w), StatusCode::bad_file, "empty key");
  }
  {
    Writer w;
    w.set_u32("general.x", 1);
    w.append_raw("general.x", 4, u32_one);
    expect_error(bytes_of(w), StatusCode::bad_file, "duplicate metadata key 'general.x'");
  }
  {
    Writer w;
    w.set_raw("flag", 7, std::string("\x02", 1));
    expect_error(bytes_of(w), StatusCode::bad_file, "not 0 or 1");
  }
  {
    Writer w;
    w.add_raw_tensor(raw_f32("t", {8}, kB, sizeof kB));
    w.add_raw_tensor(raw_f32("t", {8}, kB, sizeof kB));
    expect_error(bytes_of(w), StatusCode::bad_file, "duplicate tensor name 't'");
  }
  {
    Writer w;
    w.add_raw_tensor(raw_f32("", {8}, kB, sizeof kB));
    expect_error(bytes_of(w), StatusCode::bad_file, "empty name");
  }
  {
    // Many distinct tensors parse quickly (names go through a hash set).
    Writer w;
    std::vector<float> zero(8, 0.0f);
    for (int i = 0; i < 20000; ++i) w.add_raw_tensor(raw_f32("t" + std::to_string(i), {8}, zero.data(), 32));
    const auto b = bytes_of(w);
    auto r = File::from_memory(b.data(), b.size());
    REQUIRE(r.ok());
    CHECK((*r)->find_tensor("t19999") != nullptr);
  }
}

TEST_CASE("bad input row 7: known keys with the wrong type", "[gguf][bad]") {
  {
    Writer w = small_writer();
    w.set_string("general.alignment", "32");
    expect_error(bytes_of(w), StatusCode::bad_file, "'general.alignment' has type string, expected an integer");
  }
  {
    Writer w = small_writer();
    w.set_i32("general.alignment", -32);
    expect_error(bytes_of(w), StatusCode::bad_file, "general.alignment is -32");
  }
  {
    Writer w = small_writer();
    w.set_alignment(64);
    w.set_u64("general.alignment", 64);  // another integer width holding a valid value is accepted
    const auto b = bytes_of(w);
    auto r = File::from_memory(b.data(), b.size());
    INFO(r.status().to_string());
    REQUIRE(r.ok());
    CHECK((*r)->alignment() == 64);
  }
  {
    Writer w;  // scores as bytes, ids as an out-of-range i64
    const uint8_t bytes[3] = {1, 2, 3};
    w.set_array("tokenizer.ggml.scores", ValueType::u8, bytes, 3);
    w.set_i64("tokenizer.ggml.bos_token_id", int64_t{1} << 40);
    const auto b = bytes_of(w);
    auto r = File::from_memory(b.data(), b.size());
    REQUIRE(r.ok());
    expect_error((*r)->get_f32_array("tokenizer.ggml.scores").status(), StatusCode::bad_file, "expected an array of f32");
    expect_error((*r)->get_i32("tokenizer.ggml.bos_token_id").status(), StatusCode::bad_file, "does not fit i32");
    const int64_t big[2] = {1, int64_t{1} << 33};
    Writer w2;
    w2.set_array("ids", ValueType::i64, big, 2);
    const auto b2 = bytes_of(w2);
    auto r2 = File::from_memory(b2.data(), b2.size());
    REQUIRE(r2.ok());
    expect_error((*r2)->get_i32_array("ids").status(), StatusCode::bad_file, "element 1 = 8589934592 does not fit");
  }
}

TEST_CASE("bad input row 8: alignment 0, not a power of two, absurd", "[gguf][bad]") {
  for (uint32_t a : {0u, 48u, 131072u, 0x80000000u}) {
    Writer w = small_writer();
    w.set_alignment(a);
    INFO("alignment " << a);
    expect_error(bytes_of(w), StatusCode::bad_file, "general.alignment");
  }
  Writer ok = small_writer();
  ok.set_alignment(65536);
  const auto b = bytes_of(ok);
  auto r = File::from_memory(b.data(), b.size());
  REQUIRE(r.ok());
  CHECK((*r)->alignment() == 65536);
  CHECK((*r)->data_offset() == 65536);
}

TEST_CASE("bad input row 9: tensor types, block multiples, dims", "[gguf][bad]") {
  auto one = [](uint32_t type_id, std::vector<uint64_t> dims, uint64_t nbytes = 0) {
    Writer w;
    static const uint8_t zeros[4096] = {};
    Writer::RawTensor t = raw_f32("w", std::move(dims), zeros, nbytes);
    t.type_id = type_id;
    w.add_raw_tensor(t);
    return bytes_of(w);
  };
  expect_error(one(200, {32}), StatusCode::bad_file, "unknown type id 200");
  expect_error(one(0xFFFFFFFFu, {32}), StatusCode::bad_file, "unknown type id");
  expect_error(one(10, {256}), StatusCode::unsupported, "q2_K");
  expect_error(one(9, {32}), StatusCode::unsupported, "q8_1");
  expect_error(one(3, {48, 2}), StatusCode::bad_file, "dim 0 (48) is not a multiple of the q4_1 block size 32");
  expect_error(one(7, {16}), StatusCode::bad_file, "dim 0 (16) is not a multiple of the q5_1 block size 32");
  // Row sizes of the 20- and 24-byte blocks: 2 rows of 2 blocks need 80 / 96 bytes (the
  // writer pads the data to 64).
  expect_error(one(3, {64, 2}, 40), StatusCode::bad_file, "runs past the end");
  expect_error(one(7, {64, 2}, 48), StatusCode::bad_file, "runs past the end");
  expect_error(one(15, {256}), StatusCode::unsupported, "q8_K");
  expect_error(one(2, {33, 2}), StatusCode::bad_file, "dim 0 (33) is not a multiple of the q4_0 block size 32");
  expect_error(one(12, {128}), StatusCode::bad_file, "block size 256");
  expect_error(one(0, {1, 1, 1, 1, 8}), StatusCode::bad_file, "5 dims");
  expect_error(one(0, {}), StatusCode::bad_file, "0 dims");
  expect_error(one(0, {8, 0}), StatusCode::bad_file, "dim 1 equal to 0");
  expect_error(one(0, {~uint64_t{0}}), StatusCode::bad_file, "negative as int64");
  // Each supported type with a valid shape parses, with the right byte size.
  for (DType t : kWeightTypes) {
    const DTypeTraits* tr = dtype_traits(t);
    const uint64_t ne0 = static_cast<uint64_t>(tr->block_size) * 2;
    const uint64_t nbytes = tr->type_size * 2 * 3;
    const auto b = one(static_cast<uint32_t>(t), {ne0, 3}, nbytes);
    auto r = File::from_memory(b.data(), b.size());
    INFO(tr->name << ": " << r.status().to_string());
    REQUIRE(r.ok());
    CHECK((*r)->tensors()[0].nbytes == nbytes);
    CHECK((*r)->tensors()[0].type == t);
  }
}

TEST_CASE("bad input row 13: not a model at all", "[gguf][bad]") {
  const std::string html = "<!DOCTYPE html><html><head><title>404</title></head><body>Not Found</body></html>\n";
  const std::vector<uint8_t> hb(html.begin(), html.end());
  expect_error(hb, StatusCode::bad_file, "not a GGUF file: magic is \"<!DO\"");
  const std::string html_path = temp_path("page.gguf");
  const std::string empty_path = temp_path("empty.gguf");
  write_bytes(html_path, hb);
  write_bytes(empty_path, {});
  for (bool use_mmap : {true, false}) {
    OpenOptions opt;
    opt.use_mmap = use_mmap;
    expect_error(File::open(html_path, opt).status(), StatusCode::bad_file, "not a GGUF file");
    expect_error(File::open(empty_path, opt).status(), StatusCode::bad_file, "is empty");
    expect_error(File::open(std::filesystem::temp_directory_path().string(), opt).status(), StatusCode::io_error,
                 "is a directory");
    expect_error(File::open(temp_path("does-not-exist.gguf"), opt).status(), StatusCode::io_error,
                 "No such file");
    OpenOptions capped = opt;
    capped.max_file_bytes = 1000;
    expect_error(File::open(kStories, capped).status(), StatusCode::too_long, "above the cap of 1000");
  }
  std::filesystem::remove(html_path);
  std::filesystem::remove(empty_path);
  expect_error(File::from_memory(nullptr, 0).status(), StatusCode::bad_file, "empty");
  std::vector<uint8_t> tiny = {'G', 'G'};
  expect_error(tiny, StatusCode::bad_file, "truncated at offset 0");
}

TEST_CASE("random byte mutations never crash and leave a usable file or an error", "[gguf][bad]") {
  // A deterministic mutation fuzz: flips, random bytes and small integers
  // written over the header, metadata and tensor-info region. On success every
  // accessor is exercised on every key (an AddressSanitizer build checks the
  // reads); on failure the status must be bad_file or unsupported.
  const auto stories = read_bytes(kStories);
  auto parsed = File::from_memory(stories.data(), stories.size());
  REQUIRE(parsed.ok());
  const size_t region = static_cast<size_t>((*parsed)->data_offset());
  const auto small = bytes_of(small_writer());
  uint64_t state = 0x9E3779B97F4A7C15ull;
  auto next = [&state] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  int n_ok = 0, n_err = 0;
  for (int iter = 0; iter < 6000; ++iter) {
    const bool use_small = iter % 2 == 0;
    std::vector<uint8_t> b = use_small ? small : stories;
    const size_t span = use_small ? b.size() : region;
    const int n_mut = 1 + static_cast<int>(next() % 4);
    for (int m = 0; m < n_mut; ++m) {
      const size_t at = static_cast<size_t>(next() % span);
      switch (next() % 4) {
        case 0: b[at] ^= static_cast<uint8_t>(1u << (next() % 8)); break;
        case 1: b[at] = static_cast<uint8_t>(next()); break;
        case 2: b[at] = static_cast<uint8_t>(next() % 16); break;
        default:
          if (at + 8 <= b.size()) poke<uint64_t>(b, at, next() % 3 == 0 ? ~uint64_t{0} >> (next() % 64) : next() % 600);
      }
    }
    if (next() % 8 == 0) b.resize(static_cast<size_t>(next() % b.size()) + 1);
    auto r = File::from_memory(b.data(), b.size());
    if (!r.ok()) {
      ++n_err;
      const StatusCode c = r.status().code();
      if (c != StatusCode::bad_file && c != StatusCode::unsupported) {
        INFO("iteration " << iter << ": " << r.status().to_string());
        FAIL("unexpected status code");
      }
      continue;
    }
    ++n_ok;
    const File& f = **r;
    size_t sink = 0;
    for (size_t i = 0; i < f.n_keys(); ++i) {
      const std::string key(f.key_info(i).key);
      sink += f.raw_value(i).size();
      if (auto s = f.get_string(key); s.ok()) sink += s->size();
      if (auto v = f.get_i32(key); v.ok()) sink += static_cast<size_t>(*v);
      if (auto v = f.get_u64(key); v.ok()) sink += static_cast<size_t>(*v);
      if (auto v = f.get_f32(key); v.ok()) sink += *v > 0;
      if (auto v = f.get_bool(key); v.ok()) sink += *v;
      if (auto v = f.get_string_array(key); v.ok())
        for (auto s : *v) sink += s.size();
      if (auto v = f.get_f32_array(key); v.ok()) sink += v->size();
      if (auto v = f.get_i32_array(key); v.ok()) sink += v->size();
    }
    for (const TensorInfo& t : f.tensors()) {
      REQUIRE(t.data != nullptr);
      REQUIRE(t.offset + t.nbytes <= b.size());
      sink += static_cast<const uint8_t*>(t.data)[t.nbytes - 1];
    }
    volatile size_t keep = sink;  // keeps the reads from being optimized away
    (void)keep;
  }
  INFO(n_ok << " parsed, " << n_err << " rejected");
  CHECK(n_err > 1000);
  CHECK(n_ok > 100);
}
