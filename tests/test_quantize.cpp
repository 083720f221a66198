// kestrel quantize (runtime/model/quantize): llama-quantize's per-tensor
// choices for a known layer count, weights that dequantize within each type's
// error bound, a quantized synthetic model whose logits stay near the F32
// one's, metadata copied, the same bytes at any thread count, and the inputs
// that are refused.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "model_test_util.h"
#include "ops/ref/quant.h"
#include "runtime/model/gguf.h"
#include "runtime/model/gguf_writer.h"
#include "runtime/model/quantize.h"
#include "runtime/model/synth.h"

using namespace kestrel;

namespace {

// A llama-shaped tensor list of n_layer layers with rows of n_embd / n_ff.
std::vector<MixTensor> llama_tensors(int64_t n_layer, int64_t n_embd, int64_t n_ff, bool tied) {
  std::vector<MixTensor> t;
  auto add = [&](const std::string& name, int n_dims, int64_t ne0) { t.push_back({name, DType::F32, n_dims, ne0}); };
  if (!tied) add("output.weight", 2, n_embd);
  add("output_norm.weight", 1, n_embd);
  add("token_embd.weight", 2, n_embd);
  for (int64_t il = 0; il < n_layer; ++il) {
    const std::string p = "blk." + std::to_string(il) + ".";
    add(p + "attn_k.weight", 2, n_embd);
    add(p + "attn_norm.weight", 1, n_embd);
    add(p + "attn_output.weight", 2, n_embd);
    add(p + "attn_q.weight", 2, n_embd);
    add(p + "attn_v.weight", 2, n_embd);
    add(p + "ffn_down.weight", 2, n_ff);
    add(p + "ffn_gate.weight", 2, n_embd);
    add(p + "ffn_norm.weight", 1, n_embd);
    add(p + "ffn_up.weight", 2, n_embd);
  }
  std::sort(t.begin(), t.end(), [](const MixTensor& a, const MixTensor& b) { return quant_order_less(a.name, b.name); });
  return t;
}

DType type_of(const std::vector<MixTensor>& t, const std::vector<MixChoice>& c, const std::string& name) {
  for (size_t i = 0; i < t.size(); ++i)
    if (t[i].name == name) return c[i].type;
  FAIL("no tensor " << name);
  return DType::F32;
}

std::string tmp_path(const std::string& name) { return "test_quantize_" + name; }

std::string write_synth(const SynthSpec& s, const std::string& name) {
  const std::string path = tmp_path(name);
  REQUIRE(write_synth_model(s, path).ok());
  return path;
}

// Relative RMS error of b against a.
double rel_rms(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(a[i]) * a[i];
  }
  return std::sqrt(num / den);
}

std::vector<float> dequantize(const gguf::TensorInfo& t) {
  const int64_t rows = t.ne[1] * t.ne[2] * t.ne[3];
  std::vector<float> out(static_cast<size_t>(t.ne[0] * rows));
  const size_t row_bytes = dtype_row_size(t.type, t.ne[0]);
  for (int64_t r = 0; r < rows; ++r)
    ref::dequantize_row(t.type, static_cast<const uint8_t*>(t.data) + static_cast<size_t>(r) * row_bytes,
                        out.data() + static_cast<size_t>(r * t.ne[0]), t.ne[0]);
  return out;
}

}  // namespace

TEST_CASE("quantize: type names", "[quantize]") {
  CHECK(parse_quant_ftype("Q4_K_M").value() == QuantFtype::q4_k_m);
  CHECK(parse_quant_ftype("q5_k_m").value() == QuantFtype::q5_k_m);
  CHECK(parse_quant_ftype("bf16").value() == QuantFtype::bf16);
  CHECK(static_cast<uint32_t>(parse_quant_ftype("Q6_K").value()) == 18);  // llama.cpp's ftype ids
  CHECK(static_cast<uint32_t>(parse_quant_ftype("Q4_K_M").value()) == 15);
  CHECK(static_cast<uint32_t>(parse_quant_ftype("Q8_0").value()) == 7);
  auto bad = parse_quant_ftype("Q3_K_S");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().message().find("Q4_K_M") != std::string::npos);
  CHECK(quant_order_less("token_embd.weight", "blk.0.attn_q.weight"));
  CHECK(quant_order_less("blk.2.ffn_up.weight", "blk.10.attn_k.weight"));  // by layer number, not text
}

TEST_CASE("quantize: the _M mixes pick llama-quantize's types for 16 layers", "[quantize][mix]") {
  // use_more_bits for 16 layers (worked by hand): layers 0, 1 (first eighth),
  // 14, 15 (last eighth) and 4, 7, 10, 13 (every third from layer 2).
  const std::vector<int> more = {0, 1, 4, 7, 10, 13, 14, 15};
  for (QuantFtype f : {QuantFtype::q4_k_m, QuantFtype::q5_k_m}) {
    const DType base = f == QuantFtype::q4_k_m ? DType::Q4_K : DType::Q5_K;
    const auto t = llama_tensors(16, 4096, 11008 + 256, false);
    auto c = choose_quant_types(f, 16, t);
    REQUIRE(c.ok());
    CHECK(type_of(t, *c, "output.weight") == DType::Q6_K);
    CHECK(type_of(t, *c, "token_embd.weight") == base);
    CHECK(type_of(t, *c, "output_norm.weight") == DType::F32);
    for (int il = 0; il < 16; ++il) {
      INFO("layer " << il);
      const std::string p = "blk." + std::to_string(il) + ".";
      const bool hi = std::find(more.begin(), more.end(), il) != more.end();
      CHECK(type_of(t, *c, p + "attn_v.weight") == (hi ? DType::Q6_K : base));
      CHECK(type_of(t, *c, p + "ffn_down.weight") == (hi ? DType::Q6_K : base));
      CHECK(type_of(t, *c, p + "attn_q.weight") == base);
      CHECK(type_of(t, *c, p + "attn_k.weight") == base);
      CHECK(type_of(t, *c, p + "attn_output.weight") == base);
      CHECK(type_of(t, *c, p + "ffn_up.weight") == base);
      CHECK(type_of(t, *c, p + "ffn_gate.weight") == base);
      CHECK(type_of(t, *c, p + "attn_norm.weight") == DType::F32);
    }
  }
  SECTION("tied output: token_embd takes the output's Q6_K") {
    const auto t = llama_tensors(2, 256, 512, true);
    auto c = choose_quant_types(QuantFtype::q4_k_m, 2, t);
    REQUIRE(c.ok());
    CHECK(type_of(t, *c, "token_embd.weight") == DType::Q6_K);
    // 2 layers: layer 1 is in the last eighth (7 * 2 / 8 = 1), layer 0 is not.
    CHECK(type_of(t, *c, "blk.0.attn_v.weight") == DType::Q4_K);
    CHECK(type_of(t, *c, "blk.1.attn_v.weight") == DType::Q6_K);
  }
  SECTION("rows of 896 (Qwen2.5-0.5B): the K-quant fallbacks") {
    const auto t = llama_tensors(24, 896, 4864, false);
    auto c = choose_quant_types(QuantFtype::q4_k_m, 24, t);
    REQUIRE(c.ok());
    CHECK(type_of(t, *c, "output.weight") == DType::Q8_0);  // 896 % 256 != 0
    CHECK(type_of(t, *c, "blk.0.attn_q.weight") == DType::Q5_0);
    CHECK(type_of(t, *c, "blk.0.attn_v.weight") == DType::Q8_0);  // Q6_K -> Q8_0
    CHECK(type_of(t, *c, "blk.3.attn_v.weight") == DType::Q5_0);  // not a more-bits layer
    // ffn_down's rows are n_ff = 4864 = 19 * 256: no fallback.
    CHECK(type_of(t, *c, "blk.0.ffn_down.weight") == DType::Q6_K);
    CHECK(type_of(t, *c, "blk.3.ffn_down.weight") == DType::Q4_K);
    // Q5_K_M falls back as llama-quantize does: Q5_K -> Q5_1, Q6_K -> Q8_0.
    auto c5 = choose_quant_types(QuantFtype::q5_k_m, 24, t);
    REQUIRE(c5.ok());
    CHECK(type_of(t, *c5, "blk.0.attn_q.weight") == DType::Q5_1);
    CHECK(type_of(t, *c5, "blk.3.attn_v.weight") == DType::Q5_1);
    CHECK(type_of(t, *c5, "blk.0.attn_v.weight") == DType::Q8_0);
    CHECK(type_of(t, *c5, "blk.3.ffn_down.weight") == DType::Q5_K);
  }
  SECTION("phi3's fused attn_qkv counts as attn_v") {
    std::vector<MixTensor> t;
    for (int il = 0; il < 8; ++il) {
      const std::string p = "blk." + std::to_string(il) + ".";
      t.push_back({p + "attn_qkv.weight", DType::F32, 2, 3072});
      t.push_back({p + "ffn_up.weight", DType::F32, 2, 3072});
    }
    std::sort(t.begin(), t.end(), [](const MixTensor& a, const MixTensor& b) { return quant_order_less(a.name, b.name); });
    auto c = choose_quant_types(QuantFtype::q5_k_m, 8, t);
    REQUIRE(c.ok());
    // 8 layers: 0 (first eighth), 7 (last eighth), 3 and 6 (every third from 1).
    for (int il = 0; il < 8; ++il) {
      const bool hi = il == 0 || il == 3 || il == 6 || il == 7;
      CHECK(type_of(t, *c, "blk." + std::to_string(il) + ".attn_qkv.weight") == (hi ? DType::Q6_K : DType::Q5_K));
      CHECK(type_of(t, *c, "blk." + std::to_string(il) + ".ffn_up.weight") == DType::Q5_K);
    }
  }
  SECTION("Q4_0 / Q8_0 / F16") {
    const auto t = llama_tensors(2, 256, 512, false);
    auto q4 = choose_quant_types(QuantFtype::q4_0, 2, t);
    REQUIRE(q4.ok());
    CHECK(type_of(t, *q4, "output.weight") == DType::Q6_K);  // llama-quantize's output rule
    CHECK(type_of(t, *q4, "blk.1.attn_v.weight") == DType::Q4_0);
    CHECK(type_of(t, *q4, "blk.1.ffn_down.weight") == DType::Q4_0);
    auto q8 = choose_quant_types(QuantFtype::q8_0, 2, t);
    REQUIRE(q8.ok());
    CHECK(type_of(t, *q8, "output.weight") == DType::Q8_0);
    for (const auto& [f, d] : {std::pair{QuantFtype::q4_1, DType::Q4_1}, std::pair{QuantFtype::q5_1, DType::Q5_1}}) {
      auto q1 = choose_quant_types(f, 2, t);
      REQUIRE(q1.ok());
      CHECK(type_of(t, *q1, "output.weight") == DType::Q6_K);
      CHECK(type_of(t, *q1, "token_embd.weight") == d);
      CHECK(type_of(t, *q1, "blk.1.attn_v.weight") == d);
      CHECK(type_of(t, *q1, "blk.0.ffn_down.weight") == d);
      CHECK(type_of(t, *q1, "blk.0.ffn_norm.weight") == DType::F32);
    }
    CHECK(parse_quant_ftype("q4_1").value() == QuantFtype::q4_1);
    CHECK(parse_quant_ftype("Q5_1").value() == QuantFtype::q5_1);
    CHECK(std::string(quant_ftype_name(QuantFtype::q5_1)) == "Q5_1");
    auto f16 = choose_quant_types(QuantFtype::f16, 2, t);
    REQUIRE(f16.ok());
    CHECK(type_of(t, *f16, "output.weight") == DType::F16);
    CHECK(type_of(t, *f16, "blk.0.attn_v.weight") == DType::F16);
    CHECK(type_of(t, *f16, "blk.0.ffn_norm.weight") == DType::F32);
    // Rows of 40 fit no 32-element block: llama-quantize has no fallback either.
    auto odd = choose_quant_types(QuantFtype::q8_0, 2, llama_tensors(2, 40, 64, false));
    CHECK(odd.status().code() == StatusCode::invalid_argument);
  }
}

TEST_CASE("quantize: weights dequantize within each type's bound; metadata copied", "[quantize][model]") {
  SynthSpec s;
  s.n_embd = 256;
  s.n_ff = 512;
  s.n_head = 4;
  s.n_head_kv = 2;
  s.n_layer = 2;
  const std::string in = write_synth(s, "in_f32.gguf");
  auto src = gguf::File::open(in);
  REQUIRE(src.ok());
  struct Case {
    const char* type;
    double bound;  // relative RMS error of the changed 2-D weights
  };
  // Uniform weights: the step is about amax / 2^(bits-1), the RMS error step / sqrt(12).
  // Bounds about 1.5x the worst tensor measured with seed 1.
  const Case cases[] = {{"F16", 3.5e-4}, {"BF16", 2.6e-3}, {"Q8_0", 5.5e-3}, {"Q6_K", 0.02},
                        {"Q5_0", 0.045}, {"Q5_1", 0.045}, {"Q5_K_M", 0.04}, {"Q4_0", 0.09},
                        {"Q4_1", 0.09}, {"Q4_K_M", 0.08}};
  for (const Case& c : cases) {
    INFO(c.type);
    const std::string out = tmp_path(std::string("out_") + c.type + ".gguf");
    QuantizeParams p;
    p.ftype = parse_quant_ftype(c.type).value();
    p.n_threads = 2;
    std::vector<QuantizeReport> reports;
    REQUIRE(quantize_model(in, out, p, [&](const QuantizeReport& r) { reports.push_back(r); }).ok());
    auto q = gguf::File::open(out);
    REQUIRE(q.ok());
    CHECK((*q)->get_u32("general.file_type").value() == static_cast<uint32_t>(p.ftype));
    CHECK((*q)->get_u32("general.quantization_version").value() == 2);
    CHECK((*q)->get_string("general.name").value() == (*src)->get_string("general.name").value());
    CHECK((*q)->get_array_size("tokenizer.ggml.tokens").value() == 320);
    CHECK((*q)->tensors().size() == (*src)->tensors().size());
    CHECK(reports.size() == (*src)->tensors().size());
    int changed = 0;
    for (const gguf::TensorInfo& t : (*q)->tensors()) {
      const gguf::TensorInfo* o = (*src)->find_tensor(t.name);
      REQUIRE(o);
      if (o->n_dims < 2) {
        CHECK(t.type == DType::F32);
        continue;
      }
      CHECK(t.type != DType::F32);
      ++changed;
      INFO(t.name << " " << dtype_name(t.type));
      CHECK(rel_rms(dequantize(*o), dequantize(t)) < c.bound);
    }
    CHECK(changed > 0);
    std::remove(out.c_str());
  }
  std::remove(in.c_str());
}

TEST_CASE("quantize: a quantized synthetic model's logits stay near the F32 model's", "[quantize][model]") {
  SynthSpec s;
  s.n_embd = 256;
  s.n_ff = 512;
  s.n_layer = 2;
  const std::string in = write_synth(s, "logits_f32.gguf");
  auto base = Model::load(in, ModelParams{});
  REQUIRE(base.ok());
  ContextParams cp;
  cp.n_ctx = 32;
  cp.n_threads = 1;
  cp.kv_type = DType::F32;
  const std::vector<int32_t> ids = {1, 300, 260, 301, 270, 290, 310, 265};
  auto logits_of = [&](const Model& m) {
    auto ctx = Context::create(m, cp);
    REQUIRE(ctx.ok());
    std::vector<float> l;
    REQUIRE(testutil::decode_all(**ctx, ids, 0, 0, &l).ok());
    return l;
  };
  const std::vector<float> ref = logits_of(**base);
  struct Case {
    const char* type;
    double max_nmse;
  };
  // Bounds about 1.5-2x the NMSE measured with seed 1.
  const Case cases[] = {{"F16", 1e-6}, {"Q8_0", 5e-4}, {"Q6_K", 3e-3}, {"Q5_K_M", 1e-2}, {"Q4_K_M", 2.5e-2}, {"Q4_0", 4e-2},
                        {"Q5_1", 1e-2}, {"Q4_1", 4e-2}};
  for (const Case& c : cases) {
    INFO(c.type);
    const std::string out = tmp_path(std::string("logits_") + c.type + ".gguf");
    QuantizeParams p;
    p.ftype = parse_quant_ftype(c.type).value();
    REQUIRE(quantize_model(in, out, p, nullptr).ok());
    auto m = Model::load(out, ModelParams{});
    REQUIRE(m.ok());
    const std::vector<float> l = logits_of(**m);
    const double e = testutil::nmse(ref.data(), l.data(), ref.size());
    CHECK(e < c.max_nmse);
    CHECK(e > 0.0);
    std::remove(out.c_str());
  }
  std::remove(in.c_str());
}

TEST_CASE("quantize: the same bytes at any thread count", "[quantize]") {
  SynthSpec s;
  s.n_embd = 256;
  s.n_ff = 512;
  s.n_layer = 1;
  const std::string in = write_synth(s, "threads_f32.gguf");
  auto bytes_with = [&](int n_threads) {
    const std::string out = tmp_path("threads_" + std::to_string(n_threads) + ".gguf");
    QuantizeParams p;
    p.ftype = QuantFtype::q4_k_m;
    p.n_threads = n_threads;
    REQUIRE(quantize_model(in, out, p, nullptr).ok());
    std::ifstream f(out, std::ios::binary);
    std::vector<char> b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    std::remove(out.c_str());
    return b;
  };
  const auto one = bytes_with(1);
  CHECK(one.size() > 1000);
  CHECK(one == bytes_with(3));
  std::remove(in.c_str());
}

TEST_CASE("quantize: quantization_version and file_type are the last keys, as llama-quantize writes them",
          "[quantize]") {
  // An input whose general.file_type comes first (as in a file another tool wrote): llama-quantize
  // moves both keys it sets to the end, and so must kestrel for the files to be the same bytes.
  SynthSpec s;
  s.n_embd = 256;
  s.n_ff = 512;
  s.n_layer = 1;
  const std::string synth = write_synth(s, "keys_synth.gguf");
  auto src = gguf::File::open(synth);
  REQUIRE(src.ok());
  gguf::Writer w;
  w.set_u32("general.file_type", 0);
  for (size_t i = 0; i < (*src)->n_keys(); ++i) {
    const gguf::KeyInfo ki = (*src)->key_info(i);
    if (ki.key != "general.file_type") w.set_raw(ki.key, static_cast<uint32_t>(ki.type), (*src)->raw_value(i));
  }
  for (const gguf::TensorInfo& t : (*src)->tensors())
    REQUIRE(w.add_tensor(t.name, t.type, std::span<const int64_t>(t.ne, static_cast<size_t>(t.n_dims)), t.data, t.nbytes)
                .ok());
  const std::string in = tmp_path("keys_in.gguf"), out = tmp_path("keys_out.gguf");
  REQUIRE(w.write_file(in).ok());
  {
    auto written = gguf::File::open(in);
    REQUIRE(written.ok());
    REQUIRE((*written)->key_info(0).key == "general.file_type");
  }
  QuantizeParams p;
  p.ftype = QuantFtype::q8_0;
  REQUIRE(quantize_model(in, out, p, nullptr).ok());
  auto q = gguf::File::open(out);
  REQUIRE(q.ok());
  const size_t n = (*q)->n_keys();
  REQUIRE(n == (*src)->n_keys() + ((*src)->has("general.file_type") ? 0 : 1) +
                   ((*src)->has("general.quantization_version") ? 0 : 1));
  CHECK((*q)->key_info(n - 2).key == "general.quantization_version");
  CHECK((*q)->key_info(n - 1).key == "general.file_type");
  CHECK((*q)->get_u32("general.file_type").value() == static_cast<uint32_t>(QuantFtype::q8_0));
  for (const std::string& f : {synth, in, out}) std::remove(f.c_str());
}

TEST_CASE("quantize: refused inputs", "[quantize][bad_inputs]") {
  SynthSpec s;
  s.n_embd = 256;
  s.n_ff = 512;
  s.n_layer = 1;
  s.weights = "q8_0";
  const std::string q8 = write_synth(s, "bad_q8.gguf");
  const std::string out = tmp_path("bad_out.gguf");
  QuantizeParams p;
  p.ftype = QuantFtype::q4_0;
  SECTION("quantized input without allow_requantize") {
    const Status st = quantize_model(q8, out, p, nullptr);
    CHECK(st.code() == StatusCode::invalid_argument);
    CHECK(st.message().find("requantiz") != std::string::npos);
    p.allow_requantize = true;
    CHECK(quantize_model(q8, out, p, nullptr).ok());
    // Q8_0 to Q8_0 keeps every tensor as it is, no permission needed.
    p.allow_requantize = false;
    p.ftype = QuantFtype::q8_0;
    CHECK(quantize_model(q8, out, p, nullptr).ok());
  }
  SECTION("missing, truncated and non-finite inputs") {
    CHECK(quantize_model("/nonexistent/in.gguf", out, p, nullptr).code() == StatusCode::io_error);
    std::ifstream f(q8, std::ios::binary);
    std::vector<char> b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const std::string cut = tmp_path("bad_cut.gguf");
    std::ofstream(cut, std::ios::binary).write(b.data(), static_cast<std::streamsize>(b.size() / 2));
    CHECK(quantize_model(cut, out, p, nullptr).code() == StatusCode::bad_file);
    std::remove(cut.c_str());
    // An F32 model with a NaN weight.
    gguf::Writer w;
    w.set_string("general.architecture", "llama");
    w.set_u32("llama.block_count", 1);
    std::vector<float> data(256 * 4, 0.5f);
    data[300] = std::nanf("");
    REQUIRE(w.add_tensor("blk.0.attn_q.weight", DType::F32, {256, 4}, data.data(), data.size() * 4).ok());
    const std::string nan_path = tmp_path("bad_nan.gguf");
    REQUIRE(w.write_file(nan_path).ok());
    const Status st = quantize_model(nan_path, out, p, nullptr);
    CHECK(st.code() == StatusCode::invalid_argument);
    CHECK(st.message().find("NaN") != std::string::npos);
    std::remove(nan_path.c_str());
  }
  std::remove(q8.c_str());
  std::remove(out.c_str());
}
