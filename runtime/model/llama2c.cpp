#include "runtime/model/llama2c.h"

#include <cctype>
#include <cmath>
#include <cstring>

#include "platform/checked_math.h"
#include "platform/mapped_file.h"
#include "runtime/model/gguf_writer.h"

namespace kestrel {

namespace {

using ull = unsigned long long;

int32_t load_i32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

float load_f32(const uint8_t* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}

Status check_range(const char* name, int64_t v, int64_t cap) {
  if (v <= 0) return Status::bad_file("llama2.c header: %s = %lld must be positive", name, static_cast<long long>(v));
  if (v > cap)
    return Status::bad_file("llama2.c header: %s = %lld is above the cap of %lld", name, static_cast<long long>(v),
                            static_cast<long long>(cap));
  return {};
}

constexpr uint32_t kExportMagic = 0x616b3432;  // "ak42": llama2.c export versions 1 and later

}  // namespace

Llama2cCheckpoint::~Llama2cCheckpoint() = default;

Status Llama2cCheckpoint::parse(const uint8_t* data, uint64_t size) {
  constexpr uint64_t kHeaderBytes = 28;
  if (size < kHeaderBytes)
    return Status::bad_file("truncated: llama2.c header needs 28 bytes, the file has %llu", static_cast<ull>(size));
  uint32_t magic;
  std::memcpy(&magic, data, 4);
  if (magic == kExportMagic)
    return Status::unsupported("llama2.c export version %d (\"ak42\" header) is not supported; only the legacy v0 "
                               "checkpoint is",
                               size >= 8 ? load_i32(data + 4) : -1);
  Llama2cConfig c;
  c.dim = load_i32(data + 0);
  c.hidden_dim = load_i32(data + 4);
  c.n_layers = load_i32(data + 8);
  c.n_heads = load_i32(data + 12);
  c.n_kv_heads = load_i32(data + 16);
  const int32_t raw_vocab = load_i32(data + 20);
  c.seq_len = load_i32(data + 24);
  KESTREL_TRY(check_range("dim", c.dim, kLlama2cMaxDim));
  KESTREL_TRY(check_range("hidden_dim", c.hidden_dim, kLlama2cMaxDim * 16));
  KESTREL_TRY(check_range("n_layers", c.n_layers, kLlama2cMaxLayers));
  KESTREL_TRY(check_range("n_heads", c.n_heads, c.dim));
  KESTREL_TRY(check_range("n_kv_heads", c.n_kv_heads, c.n_heads));
  if (raw_vocab == INT32_MIN) return Status::bad_file("llama2.c header: vocab_size = %d", raw_vocab);
  c.shared_classifier = raw_vocab > 0;
  c.vocab_size = raw_vocab < 0 ? -raw_vocab : raw_vocab;
  KESTREL_TRY(check_range("vocab_size", c.vocab_size, kLlama2cMaxVocab));
  KESTREL_TRY(check_range("seq_len", c.seq_len, kLlama2cMaxSeqLen));
  if (c.dim % c.n_heads != 0)
    return Status::bad_file("llama2.c header: dim %d is not a multiple of n_heads %d", c.dim, c.n_heads);
  if (c.n_heads % c.n_kv_heads != 0)
    return Status::bad_file("llama2.c header: n_heads %d is not a multiple of n_kv_heads %d", c.n_heads,
                            c.n_kv_heads);
  if (c.head_size() % 2 != 0)
    return Status::bad_file("llama2.c header: head size %d is odd (rope rotates pairs)", c.head_size());
  if (c.vocab_size < 3) return Status::bad_file("llama2.c header: vocab_size %d < 3 (unk, bos, eos)", c.vocab_size);

  // Float counts; the caps above keep each product far below 2^56, the checks
  // are kept so the arithmetic stays obviously safe if the caps change.
  const uint64_t L = static_cast<uint64_t>(c.n_layers), D = static_cast<uint64_t>(c.dim);
  const uint64_t H = static_cast<uint64_t>(c.hidden_dim), V = static_cast<uint64_t>(c.vocab_size);
  const uint64_t KV = static_cast<uint64_t>(c.kv_dim()), S = static_cast<uint64_t>(c.seq_len);
  const uint64_t half_head = static_cast<uint64_t>(c.head_size() / 2);
  uint64_t offset = kHeaderBytes;
  auto take = [&](Array& a, std::initializer_list<uint64_t> dims, const char* what) -> Status {
    uint64_t n = 1;
    for (uint64_t d : dims) {
      KESTREL_TRY_ASSIGN(n, mul_or_error(n, d, what));
    }
    KESTREL_TRY_ASSIGN(uint64_t bytes, mul_or_error(n, 4, what));
    KESTREL_TRY_ASSIGN(uint64_t end, add_or_error(offset, bytes, what));
    if (end > size)
      return Status::bad_file("truncated: llama2.c %s needs bytes [%llu, %llu), the file has %llu", what,
                              static_cast<ull>(offset), static_cast<ull>(end), static_cast<ull>(size));
    a.data = data + offset;
    a.n_floats = n;
    offset = end;
    return {};
  };
  KESTREL_TRY(take(token_embedding, {V, D}, "token_embedding"));
  KESTREL_TRY(take(rms_att, {L, D}, "rms_att"));
  KESTREL_TRY(take(wq, {L, D, D}, "wq"));
  KESTREL_TRY(take(wk, {L, KV, D}, "wk"));
  KESTREL_TRY(take(wv, {L, KV, D}, "wv"));
  KESTREL_TRY(take(wo, {L, D, D}, "wo"));
  KESTREL_TRY(take(rms_ffn, {L, D}, "rms_ffn"));
  KESTREL_TRY(take(w1, {L, H, D}, "w1"));
  KESTREL_TRY(take(w2, {L, D, H}, "w2"));
  KESTREL_TRY(take(w3, {L, H, D}, "w3"));
  KESTREL_TRY(take(rms_final, {D}, "rms_final"));
  KESTREL_TRY(take(freq_cis_real, {S, half_head}, "freq_cis_real"));
  KESTREL_TRY(take(freq_cis_imag, {S, half_head}, "freq_cis_imag"));
  if (c.shared_classifier)
    wcls = token_embedding;
  else
    KESTREL_TRY(take(wcls, {V, D}, "wcls"));
  if (offset != size)
    return Status::bad_file("llama2.c checkpoint has %llu bytes after the last array (the header implies %llu bytes, "
                            "the file has %llu)",
                            static_cast<ull>(size - offset), static_cast<ull>(offset), static_cast<ull>(size));
  config = c;
  return {};
}

Expected<std::unique_ptr<Llama2cCheckpoint>> Llama2cCheckpoint::open(const std::string& path, bool use_mmap) {
  MapOptions mo;
  mo.use_mmap = use_mmap;
  KESTREL_TRY_ASSIGN(auto file, MappedFile::open(path, mo));
  std::unique_ptr<Llama2cCheckpoint> ck(new (std::nothrow) Llama2cCheckpoint());
  if (!ck) return Status::out_of_memory("Llama2cCheckpoint");
  Status s = ck->parse(file->data(), file->size());
  if (!s.ok()) return s.with_context("'" + path + "': ");
  ck->file_ = std::move(file);
  return ck;
}

Expected<std::unique_ptr<Llama2cCheckpoint>> Llama2cCheckpoint::from_memory(const void* data, size_t size) {
  if (data == nullptr || size == 0) return Status::bad_file("empty buffer (0 bytes)");
  std::unique_ptr<Llama2cCheckpoint> ck(new (std::nothrow) Llama2cCheckpoint());
  if (!ck) return Status::out_of_memory("Llama2cCheckpoint");
  KESTREL_TRY(ck->parse(static_cast<const uint8_t*>(data), size));
  return ck;
}

// ---- tokenizer.bin ----

Expected<VocabData> llama2c_vocab_from_memory(const void* data, size_t size, int32_t n_vocab) {
  if (n_vocab < 3 || n_vocab > kLlama2cMaxVocab)
    return Status::invalid_argument("llama2.c vocab size %d out of range [3, %d]", n_vocab, kLlama2cMaxVocab);
  const auto* p = static_cast<const uint8_t*>(data);
  if (p == nullptr || size == 0) return Status::bad_file("tokenizer.bin: empty (0 bytes)");
  if (size < 4) return Status::bad_file("tokenizer.bin: truncated at offset 0: max_token_length needs 4 bytes");
  const int32_t max_len = load_i32(p);
  if (max_len <= 0 || max_len > kLlama2cMaxTokenLength)
    return Status::bad_file("tokenizer.bin: max_token_length %d outside [1, %d]", max_len, kLlama2cMaxTokenLength);
  // Each token takes at least 8 bytes: reject an impossible count before allocating.
  if (static_cast<uint64_t>(n_vocab) * 8 > size - 4)
    return Status::bad_file("tokenizer.bin: truncated: %d tokens need at least %llu bytes, the file has %zu", n_vocab,
                            static_cast<ull>(n_vocab) * 8 + 4, size);
  VocabData v;
  v.model = "llama";
  v.tokens.resize(static_cast<size_t>(n_vocab));
  v.scores.resize(static_cast<size_t>(n_vocab));
  v.types.resize(static_cast<size_t>(n_vocab));
  uint64_t pos = 4;
  for (int32_t i = 0; i < n_vocab; ++i) {
    if (size - pos < 8)
      return Status::bad_file("tokenizer.bin: truncated at offset %llu: token %d needs its score and length",
                              static_cast<ull>(pos), i);
    const float score = load_f32(p + pos);
    const int32_t len = load_i32(p + pos + 4);
    if (!std::isfinite(score))
      return Status::bad_file("tokenizer.bin: token %d at offset %llu has a non-finite score", i,
                              static_cast<ull>(pos));
    if (len < 0 || len > max_len)
      return Status::bad_file("tokenizer.bin: token %d at offset %llu has length %d outside [0, %d]", i,
                              static_cast<ull>(pos + 4), len, max_len);
    pos += 8;
    if (size - pos < static_cast<uint64_t>(len))
      return Status::bad_file("tokenizer.bin: truncated at offset %llu: token %d needs %d bytes, %llu left",
                              static_cast<ull>(pos), i, len, static_cast<ull>(size - pos));
    std::string text(reinterpret_cast<const char*>(p + pos), static_cast<size_t>(len));
    pos += static_cast<uint64_t>(len);

    TokenType type = TokenType::normal;
    if (i == 0) {
      text = "<unk>", type = TokenType::unknown;
    } else if (i == 1) {
      text = "<s>", type = TokenType::control;  // tokenizer.bin spells it "\n<s>\n"
    } else if (i == 2) {
      text = "</s>", type = TokenType::control;
    } else if (text.empty()) {
      type = TokenType::control;
    } else if (text.size() == 6 && text.compare(0, 3, "<0x") == 0 && text[5] == '>' &&
               std::isxdigit(static_cast<unsigned char>(text[3])) &&
               std::isxdigit(static_cast<unsigned char>(text[4]))) {
      type = TokenType::byte;
    } else {
      std::string spelled;  // SentencePiece spells a space U+2581
      spelled.reserve(text.size());
      for (char ch : text) {
        if (ch == ' ')
          spelled += "\xE2\x96\x81";
        else
          spelled += ch;
      }
      text = std::move(spelled);
    }
    v.tokens[static_cast<size_t>(i)] = std::move(text);
    v.scores[static_cast<size_t>(i)] = score;
    v.types[static_cast<size_t>(i)] = type;
  }
  if (pos != size)
    return Status::bad_file("tokenizer.bin: %llu trailing bytes after token %d (offset %llu): the file holds more "
                            "tokens than the model's %d",
                            static_cast<ull>(size - pos), n_vocab - 1, static_cast<ull>(pos), n_vocab);
  v.unk_id = 0, v.bos_id = 1, v.eos_id = 2;
  v.add_bos = true, v.add_eos = false, v.add_space_prefix = true;
  return v;
}

Expected<VocabData> llama2c_vocab(const std::string& tokenizer_path, int32_t n_vocab) {
  KESTREL_TRY_ASSIGN(auto file, MappedFile::open(tokenizer_path));
  auto v = llama2c_vocab_from_memory(file->data(), file->size(), n_vocab);
  if (!v.ok()) return std::move(v).take_status().with_context("'" + tokenizer_path + "': ");
  return v;
}

// ---- GGUF ----

Status llama2c_fill_gguf(const Llama2cCheckpoint& ck, const VocabData& vocab, gguf::Writer& w) {
  const Llama2cConfig& c = ck.config;
  if (vocab.tokens.size() != static_cast<size_t>(c.vocab_size) || vocab.scores.size() != vocab.tokens.size() ||
      vocab.types.size() != vocab.tokens.size())
    return Status::invalid_argument("vocabulary of %zu tokens for a model of %d", vocab.tokens.size(), c.vocab_size);
  std::vector<int32_t> types(vocab.types.size());
  for (size_t i = 0; i < types.size(); ++i) types[i] = static_cast<int32_t>(vocab.types[i]);
  w.set_string_array("tokenizer.ggml.tokens", std::span<const std::string>(vocab.tokens));
  w.set_f32_array("tokenizer.ggml.scores", vocab.scores);
  w.set_i32_array("tokenizer.ggml.token_type", types);
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_string("general.architecture", "llama");
  w.set_string("general.name", "llama");
  auto id = [](int32_t v) { return static_cast<uint32_t>(v); };  // -1 is stored as 0xFFFFFFFF
  w.set_u32("tokenizer.ggml.unknown_token_id", id(vocab.unk_id));
  w.set_u32("tokenizer.ggml.bos_token_id", id(vocab.bos_id));
  w.set_u32("tokenizer.ggml.eos_token_id", id(vocab.eos_id));
  w.set_u32("tokenizer.ggml.seperator_token_id", id(vocab.sep_id));  // sic: the key's spelling
  w.set_u32("tokenizer.ggml.padding_token_id", id(vocab.pad_id));
  w.set_u32("llama.context_length", static_cast<uint32_t>(c.seq_len));
  w.set_u32("llama.embedding_length", static_cast<uint32_t>(c.dim));
  w.set_u32("llama.feed_forward_length", static_cast<uint32_t>(c.hidden_dim));
  w.set_u32("llama.attention.head_count", static_cast<uint32_t>(c.n_heads));
  w.set_u32("llama.attention.head_count_kv", static_cast<uint32_t>(c.n_kv_heads));
  w.set_u32("llama.block_count", static_cast<uint32_t>(c.n_layers));
  w.set_u32("llama.rope.dimension_count", static_cast<uint32_t>(c.head_size()));
  w.set_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);

  const int64_t D = c.dim, H = c.hidden_dim, V = c.vocab_size, KV = c.kv_dim();
  // Layer l of a per-layer array of n floats per layer.
  auto slice = [](const Llama2cCheckpoint::Array& a, int64_t l, int64_t n) {
    return a.data + static_cast<uint64_t>(l) * static_cast<uint64_t>(n) * 4;
  };
  auto add = [&](const std::string& name, std::initializer_list<int64_t> ne, const uint8_t* data) {
    uint64_t n = 1;
    for (int64_t d : ne) n *= static_cast<uint64_t>(d);  // bounded by the checkpoint's checked sizes
    return w.add_tensor(name, DType::F32, ne, data, n * 4);
  };
  KESTREL_TRY(add("token_embd.weight", {D, V}, ck.token_embedding.data));
  KESTREL_TRY(add("output_norm.weight", {D}, ck.rms_final.data));
  KESTREL_TRY(add("output.weight", {D, V}, ck.wcls.data));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    KESTREL_TRY(add(p + "attn_q.weight", {D, D}, slice(ck.wq, l, D * D)));
    KESTREL_TRY(add(p + "attn_k.weight", {D, KV}, slice(ck.wk, l, KV * D)));
    KESTREL_TRY(add(p + "attn_v.weight", {D, KV}, slice(ck.wv, l, KV * D)));
    KESTREL_TRY(add(p + "attn_output.weight", {D, D}, slice(ck.wo, l, D * D)));
    KESTREL_TRY(add(p + "attn_norm.weight", {D}, slice(ck.rms_att, l, D)));
    KESTREL_TRY(add(p + "ffn_gate.weight", {D, H}, slice(ck.w1, l, H * D)));
    KESTREL_TRY(add(p + "ffn_down.weight", {H, D}, slice(ck.w2, l, D * H)));
    KESTREL_TRY(add(p + "ffn_up.weight", {D, H}, slice(ck.w3, l, H * D)));
    KESTREL_TRY(add(p + "ffn_norm.weight", {D}, slice(ck.rms_ffn, l, D)));
  }
  return {};
}

Status convert_llama2c_to_gguf(const std::string& model_path, const std::string& tokenizer_path,
                               const std::string& out_path) {
  KESTREL_TRY_ASSIGN(auto ck, Llama2cCheckpoint::open(model_path));
  KESTREL_TRY_ASSIGN(VocabData vocab, llama2c_vocab(tokenizer_path, ck->config.vocab_size));
  gguf::Writer w;
  KESTREL_TRY(llama2c_fill_gguf(*ck, vocab, w));
  return w.write_file(out_path);
}

}  // namespace kestrel
