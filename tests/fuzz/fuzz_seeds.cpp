// Writes the fuzz seed corpora, one folder per target, from the files in
// ../shared/models and small generated models (run by make_seeds.sh; nothing
// of ../shared is committed). Each seed starts with the selector bytes its
// target reads first (see each fuzz_*.cpp). Small seeds keep the fuzzer's
// time per input low, so the big model files contribute prefixes only.
//   fuzz_seeds <shared_dir> <out_dir>
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/model/gguf.h"
#include "runtime/model/synth.h"

using namespace kestrel;

namespace {
bool write(const std::string& path, const std::vector<uint8_t>& prefix, const void* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return false;
  bool ok = std::fwrite(prefix.data(), 1, prefix.size(), f) == prefix.size();
  ok = ok && std::fwrite(data, 1, size, f) == size;
  return std::fclose(f) == 0 && ok;
}
}  // namespace

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool write_str(const std::string& path, const std::vector<uint8_t>& prefix, const std::string& s) {
  return write(path, prefix, s.data(), s.size());
}

// A llama.cpp vocab test input: cases separated by "\n__ggml_vocab_test__\n".
std::vector<std::string> vocab_cases(const std::string& path) {
  const std::string all = slurp(path), sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> out;
  size_t pos = 0;
  for (size_t next; (next = all.find(sep, pos)) != std::string::npos; pos = next + sep.size())
    out.push_back(all.substr(pos, next - pos));
  return out;
}

int fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_seeds: %s\n", what.c_str());
  return 1;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: fuzz_seeds <shared_dir> <out_dir>\n");
    return 2;
  }
  const std::string models = std::string(argv[1]) + "/models/", root = argv[2];
  for (const char* d : {"", "/gguf", "/model_load", "/llama2c", "/tokenizer_bin", "/tokenize_spm", "/tokenize_bpe"})
    mkdir((root + d).c_str(), 0755);

  // stories260K.gguf up to its tensor data (the whole metadata and tensor
  // table), as a vocab-only file (options byte 1).
  {
    const std::string path = models + "stories260K/stories260K.gguf";
    auto f = gguf::File::open(path);
    if (!f.ok()) return fail(path + ": " + f.status().to_string());
    const std::string bytes = slurp(path).substr(0, (*f)->data_offset());
    for (const char* d : {"/gguf/", "/model_load/"})
      if (!write_str(root + d + "stories260K-metadata.bin", {1}, bytes)) return fail("write " + root);
  }
  // llama2.c: the real headers (a 28-byte file fails the size check, with
  // real values), and the tokenizer.bin files with their token counts.
  int n_hdr = 0;
  for (const char* ckpt : {"stories260K/stories260K.bin", "aidreams260K/aidreams260K.bin"}) {
    const std::string bytes = slurp(models + ckpt).substr(0, 28);
    if (bytes.size() != 28) return fail(models + ckpt + " is missing or short");
    if (!write_str(root + "/llama2c/header-" + std::to_string(n_hdr++) + ".bin", {}, bytes)) return fail("write");
  }
  int n_tok = 0;
  for (const char* tb : {"stories260K/tok512.bin", "aidreams260K/tok512.bin"}) {
    const std::string bytes = slurp(models + tb);
    if (bytes.empty()) return fail(models + tb + " is missing");
    if (!write_str(root + "/tokenizer_bin/tok512-" + std::to_string(n_tok++) + ".bin", {0x00, 0x02}, bytes))
      return fail("write");
  }
  // Tokenizer texts: llama.cpp's test inputs, selector byte = vocab index * 2
  // (+1: parse special tokens), vocab order as in CMakeLists.txt.
  {
    int n = 0;
    for (const std::string& c : vocab_cases(models + "llama.cpp-vocab/ggml-vocab-llama-spm.gguf.inp"))
      for (uint8_t sel : {0, 1})
        if (!write_str(root + "/tokenize_spm/case-" + std::to_string(n++) + ".txt", {sel}, c)) return fail("write");
    if (n == 0) return fail("no llama-spm test inputs");
    const char* bpe[] = {"gpt-2", "deepseek-llm", "deepseek-coder", "falcon", "starcoder", "mpt"};
    n = 0;
    for (uint8_t v = 0; v < 6; ++v)
      for (const std::string& c : vocab_cases(models + "llama.cpp-vocab/ggml-vocab-" + bpe[v] + ".gguf.inp"))
      {
        const uint8_t sel = static_cast<uint8_t>(v * 2 + (n & 1));  // alternate special parsing
        if (!write_str(root + "/tokenize_bpe/case-" + std::to_string(n++) + ".txt", {sel}, c)) return fail("write");
      }
    if (n == 0) return fail("no BPE test inputs");
  }
  struct Case {
    const char* name;
    ArchId arch;
    const char* weights;
    int64_t n_embd;
    bool tied;
  };
  const Case cases[] = {
      {"llama-f32", ArchId::llama, "f32", 8, false},   {"llama-f16-tied", ArchId::llama, "f16", 8, true},
      {"llama-q8_0", ArchId::llama, "q8_0", 32, false}, {"qwen2-f32", ArchId::qwen2, "f32", 8, false},
      {"gemma3-f32", ArchId::gemma3, "f32", 8, true},
  };
  for (const Case& c : cases) {
    SynthSpec s;
    s.arch = c.arch;
    s.weights = c.weights;
    s.n_vocab = 259;
    s.n_embd = c.n_embd;
    s.n_layer = 1;
    s.n_head = 2;
    s.n_head_kv = 1;
    s.n_ff = c.n_embd * 2;
    s.n_ctx = 16;
    s.tied_output = c.tied;
    s.n_threads = 1;
    auto bytes = synth_model_gguf(s);
    if (!bytes.ok()) {
      std::fprintf(stderr, "fuzz_seeds: %s: %s\n", c.name, bytes.status().to_string().c_str());
      return 1;
    }
    for (const char* d : {"/gguf/", "/model_load/"})
      for (uint8_t opt : {0, 1}) {
        const std::string path = root + d + "synth-" + c.name + (opt ? "-vocab" : "") + ".bin";
        if (!write(path, {opt}, bytes->data(), bytes->size())) return fail("cannot write " + path);
      }
  }
  // llama2.c: dim 8, hidden 16, 1 layer, 2 heads, 1 kv head, vocab 4, seq_len 4,
  // shared classifier: the header, then the floats run.c reads.
  const int32_t hdr[7] = {8, 16, 1, 2, 1, 4, 4};
  const int dim = 8, hidden = 16, kv_dim = 4, vocab = 4, seq = 4, head = 4;
  const size_t n_floats = size_t(vocab) * dim + dim + dim * dim + 2 * size_t(kv_dim) * dim + dim * dim + dim +
                          3 * size_t(hidden) * dim + dim + 2 * size_t(seq) * (head / 2);
  std::vector<float> w(n_floats);
  for (size_t i = 0; i < n_floats; ++i) w[i] = static_cast<float>(static_cast<int>(i % 17) - 8) / 16.0f;
  std::vector<uint8_t> h(sizeof hdr);
  std::memcpy(h.data(), hdr, sizeof hdr);
  if (!write(root + "/llama2c/tiny.bin", h, w.data(), w.size() * 4)) return fail("write llama2c");
  return 0;
}
