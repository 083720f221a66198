#include "runtime/model/quantize.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <memory>
#include <thread>

#include "ops/ref/quant.h"
#include "runtime/model/gguf.h"
#include "runtime/model/gguf_writer.h"

namespace kestrel {

namespace {

struct FtypeEntry {
  QuantFtype ftype;
  const char* name;
  DType type;
};

constexpr FtypeEntry kFtypes[] = {
    {QuantFtype::f16, "F16", DType::F16},        {QuantFtype::bf16, "BF16", DType::BF16},
    {QuantFtype::q8_0, "Q8_0", DType::Q8_0},     {QuantFtype::q4_0, "Q4_0", DType::Q4_0},
    {QuantFtype::q5_0, "Q5_0", DType::Q5_0},     {QuantFtype::q4_1, "Q4_1", DType::Q4_1},
    {QuantFtype::q5_1, "Q5_1", DType::Q5_1},     {QuantFtype::q4_k_m, "Q4_K_M", DType::Q4_K},
    {QuantFtype::q5_k_m, "Q5_K_M", DType::Q5_K}, {QuantFtype::q6_k, "Q6_K", DType::Q6_K},
};

// GGML_QNT_VERSION, written as general.quantization_version.
constexpr uint32_t kQuantizationVersion = 2;

enum class Category { token_embd, attn_v, attn_k, attn_q, attn_output, ffn_up, ffn_gate, ffn_down, output, other };

bool has(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

// llama.cpp's tensor categories (by name; attn_qkv and attn_kv_b count as attn_v).
Category category_of(const std::string& n) {
  if (n == "output.weight") return Category::output;
  if (n == "token_embd.weight" || n == "per_layer_token_embd.weight") return Category::token_embd;
  if (has(n, "attn_qkv.weight") || has(n, "attn_kv_b.weight") || has(n, "attn_v.weight")) return Category::attn_v;
  if (has(n, "attn_k.weight")) return Category::attn_k;
  if (has(n, "attn_q.weight")) return Category::attn_q;
  if (has(n, "attn_output.weight")) return Category::attn_output;
  if (has(n, "ffn_up")) return Category::ffn_up;
  if (has(n, "ffn_gate")) return Category::ffn_gate;
  if (has(n, "ffn_down")) return Category::ffn_down;
  return Category::other;
}

// Whether llama-quantize changes the tensor's type at all.
bool allows_quantization(const MixTensor& t) {
  if (t.n_dims < 2) return false;
  const std::string& n = t.name;
  if (n.size() < 6 || n.compare(n.size() - 6, 6, "weight") != 0) return false;
  static const char* const kKeep[] = {
      "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel", "per_layer_model_proj",
      "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight", "indexer.q_proj.weight",
      "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
      "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight", "time_mix_a1.weight",
      "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight", "time_mix_decay_w1.weight",
      "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd",
      "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook",
      "mm.a.code_embd"};
  for (const char* k : kKeep)
    if (has(n, k)) return false;
  return n != "position_embd.weight" && n != "token_types.weight";
}

bool is_quantized(DType t) { return dtype_traits(t)->is_quantized; }

int layer_of(const std::string& name) {
  int layer = -1;
  if (std::sscanf(name.c_str(), "blk.%d.", &layer) != 1) return -1;
  return layer;
}

}  // namespace

Expected<QuantFtype> parse_quant_ftype(std::string_view name) {
  std::string up(name);
  for (char& c : up) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (const FtypeEntry& e : kFtypes)
    if (up == e.name) return e.ftype;
  return Status::invalid_argument("unknown quantization type '%.*s' (F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K_M, Q5_K_M, Q6_K)",
                                  static_cast<int>(name.size()), name.data());
}

const char* quant_ftype_name(QuantFtype f) {
  for (const FtypeEntry& e : kFtypes)
    if (e.ftype == f) return e.name;
  return "?";
}

DType quant_ftype_default_type(QuantFtype f) {
  for (const FtypeEntry& e : kFtypes)
    if (e.ftype == f) return e.type;
  return DType::F32;
}

bool quant_use_more_bits(int64_t i_layer, int64_t n_layers) {
  return i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2;
}

bool quant_order_less(const std::string& a, const std::string& b) {
  const int la = layer_of(a), lb = layer_of(b);
  return la != lb ? la < lb : a < b;
}

Expected<std::vector<MixChoice>> choose_quant_types(QuantFtype ftype, int64_t n_layer,
                                                    const std::vector<MixTensor>& tensors) {
  const DType base = quant_ftype_default_type(ftype);
  const bool mix_m = ftype == QuantFtype::q4_k_m || ftype == QuantFtype::q5_k_m;
  bool tied = true;  // until an output.weight is seen
  int64_t n_attn_v = 0;
  for (const MixTensor& t : tensors) {
    const Category c = category_of(t.name);
    n_attn_v += c == Category::attn_v ? 1 : 0;
    tied = tied && c != Category::output;
  }
  int64_t i_attn_v = 0, i_ffn_down = 0;
  std::vector<MixChoice> out;
  out.reserve(tensors.size());
  for (const MixTensor& t : tensors) {
    MixChoice ch;
    ch.type = t.type;
    if (!allows_quantization(t)) {
      out.push_back(ch);
      continue;
    }
    ch.type = base;
    if (!is_quantized(base)) {  // F16 / BF16: every tensor alike
      out.push_back(ch);
      continue;
    }
    const Category c = category_of(t.name);
    if (c == Category::output || (tied && c == Category::token_embd)) {
      if (t.ne0 % dtype_block_size(ch.type) != 0) ch.type = DType::Q8_0;
      else if (ch.type != DType::Q8_0) ch.type = DType::Q6_K;
    } else if (c == Category::attn_v) {
      if (mix_m && quant_use_more_bits(i_attn_v, n_attn_v)) ch.type = DType::Q6_K;
      ++i_attn_v;
    } else if (c == Category::ffn_down) {
      if (mix_m && quant_use_more_bits(i_ffn_down, n_layer)) ch.type = DType::Q6_K;
      ++i_ffn_down;
    }
    // Rows the block does not divide: llama.cpp's fallbacks.
    if (t.ne0 % dtype_block_size(ch.type) != 0) {
      const DType want = ch.type;
      switch (want) {
        case DType::Q4_K: ch.type = DType::Q5_0; break;
        case DType::Q5_K: ch.type = DType::Q5_1; break;
        case DType::Q6_K: ch.type = DType::Q8_0; break;
        default:
          return Status::invalid_argument("tensor '%s': rows of %lld are not a multiple of %s's block of %d",
                                          t.name.c_str(), static_cast<long long>(t.ne0), dtype_name(want),
                                          dtype_block_size(want));
      }
      if (t.ne0 % dtype_block_size(ch.type) != 0) ch.type = DType::F16;
      char note[160];
      std::snprintf(note, sizeof note, "rows of %lld are not a multiple of %d (%s): %s",
                    static_cast<long long>(t.ne0), dtype_block_size(want), dtype_name(want), dtype_name(ch.type));
      ch.note = note;
    }
    out.push_back(ch);
  }
  return out;
}

namespace {

// Converts rows [r0, r1) of t to `to` into dst; false on a non-finite weight.
bool convert_rows(const gguf::TensorInfo& t, DType to, int64_t r0, int64_t r1, uint8_t* dst) {
  const int64_t ne0 = t.ne[0];
  const size_t in_row = dtype_row_size(t.type, ne0), out_row = dtype_row_size(to, ne0);
  std::vector<float> buf(static_cast<size_t>(ne0));
  for (int64_t r = r0; r < r1; ++r) {
    ref::dequantize_row(t.type, static_cast<const uint8_t*>(t.data) + static_cast<size_t>(r) * in_row, buf.data(), ne0);
    for (float x : buf)
      if (!std::isfinite(x)) return false;
    ref::quantize_row(to, buf.data(), dst + static_cast<size_t>(r) * out_row, ne0);
  }
  return true;
}

}  // namespace

Status quantize_model(const std::string& in_path, const std::string& out_path, const QuantizeParams& params,
                      const std::function<void(const QuantizeReport&)>& on_tensor) {
  KESTREL_TRY_ASSIGN(std::unique_ptr<gguf::File> in, gguf::File::open(in_path));
  KESTREL_TRY_ASSIGN(std::string_view arch, in->get_string("general.architecture"));
  const std::string block_key = std::string(arch) + ".block_count";
  KESTREL_TRY_ASSIGN(uint32_t n_layer, in->get_u32(block_key));

  std::vector<const gguf::TensorInfo*> order;
  for (const gguf::TensorInfo& t : in->tensors()) order.push_back(&t);
  std::stable_sort(order.begin(), order.end(),
                   [](const gguf::TensorInfo* a, const gguf::TensorInfo* b) { return quant_order_less(a->name, b->name); });
  std::vector<MixTensor> mix;
  for (const gguf::TensorInfo* t : order) {
    MixTensor m;
    m.name = t->name;
    m.type = t->type;
    m.n_dims = 1;
    for (int d = 1; d < 4; ++d)
      if (t->ne[d] > 1) m.n_dims = d + 1;
    m.ne0 = t->ne[0];
    mix.push_back(std::move(m));
  }
  KESTREL_TRY_ASSIGN(std::vector<MixChoice> choice, choose_quant_types(params.ftype, n_layer, mix));

  gguf::Writer w(in->version() >= 3 ? 3 : in->version());
  for (size_t i = 0; i < in->n_keys(); ++i) {
    const gguf::KeyInfo ki = in->key_info(i);
    if (ki.key == "split.no" || ki.key == "split.count" || ki.key == "split.tensors.count") continue;
    // Set below, after every copied key, where llama-quantize puts them (its set moves a key
    // to the end), so that the two tools' files are the same bytes.
    if (ki.key == "general.quantization_version" || ki.key == "general.file_type") continue;
    w.set_raw(ki.key, static_cast<uint32_t>(ki.type), in->raw_value(i));
  }
  if (in->has("general.alignment")) w.set_alignment(in->alignment());
  w.set_u32("general.quantization_version", kQuantizationVersion);
  w.set_u32("general.file_type", static_cast<uint32_t>(params.ftype));

  int n_threads = params.n_threads > 0 ? params.n_threads : static_cast<int>(std::thread::hardware_concurrency());
  n_threads = std::max(1, n_threads);
  std::vector<std::vector<uint8_t>> converted(order.size());
  for (size_t i = 0; i < order.size(); ++i) {
    const gguf::TensorInfo& t = *order[i];
    const DType to = choice[i].type;
    QuantizeReport rep{t.name, t.type, to, t.nbytes, t.nbytes, choice[i].note};
    const std::span<const int64_t> ne(t.ne, static_cast<size_t>(t.n_dims));
    if (to == t.type) {
      KESTREL_TRY(w.add_tensor(t.name, t.type, ne, t.data, t.nbytes));
      if (on_tensor) on_tensor(rep);
      continue;
    }
    if (is_quantized(t.type) && !params.allow_requantize)
      return Status::invalid_argument(
          "tensor '%s' is already %s: requantizing loses quality and is refused without allow-requantize",
          t.name.c_str(), dtype_name(t.type));
    const int64_t rows = t.ne[1] * t.ne[2] * t.ne[3];
    const size_t out_bytes = dtype_row_size(to, t.ne[0]) * static_cast<size_t>(rows);
    try {
      converted[i].resize(out_bytes);
    } catch (const std::bad_alloc&) {
      return Status::out_of_memory("quantizing '%s' (%zu bytes)", t.name.c_str(), out_bytes);
    }
    // Rows in fixed contiguous ranges per thread: the bytes do not depend on
    // the thread count (each row is quantized on its own).
    const int nth = static_cast<int>(std::min<int64_t>(n_threads, std::max<int64_t>(1, rows / 16)));
    std::vector<char> ok(static_cast<size_t>(nth), 1);
    auto work = [&](int ith) {
      const int64_t r0 = rows * ith / nth, r1 = rows * (ith + 1) / nth;
      ok[static_cast<size_t>(ith)] = convert_rows(t, to, r0, r1, converted[i].data()) ? 1 : 0;
    };
    std::vector<std::thread> threads;
    for (int k = 1; k < nth; ++k) threads.emplace_back(work, k);
    work(0);
    for (auto& th : threads) th.join();
    if (std::find(ok.begin(), ok.end(), 0) != ok.end())
      return Status::invalid_argument("tensor '%s' holds NaN or Inf weights", t.name.c_str());
    KESTREL_TRY(w.add_tensor(t.name, to, ne, converted[i].data(), converted[i].size()));
    rep.to_bytes = converted[i].size();
    if (on_tensor) on_tensor(rep);
  }
  return w.write_file(out_path);
}

}  // namespace kestrel
