#include "runtime/model/model.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>

#include "runtime/ks/ks_model.h"
#include "runtime/model/gguf.h"
#include "runtime/model/gguf_writer.h"
#include "runtime/model/llama2c.h"
#include "runtime/tokenizer/tokenizer.h"

namespace kestrel {

namespace {

// What a weight must look like: shape, and whether only F32 will do (norms,
// biases are consumed by F32 elementwise ops).
struct Want {
  int64_t ne0, ne1;  // ne1 = 1 for vectors
  bool f32_only;
  bool required;
};

Status bind(const gguf::File& f, const std::string& name, const Want& w, Tensor* out, uint64_t* bytes) {
  const gguf::TensorInfo* t = f.find_tensor(name);
  if (!t) {
    if (w.required) return Status::bad_file("missing tensor '%s'", name.c_str());
    *out = Tensor{};
    return {};
  }
  const int64_t ne1 = t->n_dims >= 2 ? t->ne[1] : 1;
  if (t->ne[0] != w.ne0 || ne1 != w.ne1 || t->ne[2] != 1 || t->ne[3] != 1)
    return Status::bad_file("tensor '%s' has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]", name.c_str(),
                            (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3],
                            (long long)w.ne0, (long long)w.ne1);
  const DTypeTraits* tr = dtype_traits(t->type);
  if (!tr || !tr->is_weight) return Status::unsupported("tensor '%s' has unsupported type", name.c_str());
  if (w.f32_only && t->type != DType::F32)
    return Status::unsupported("tensor '%s' must be f32, is %s", name.c_str(), tr->name);
  *out = make_tensor(t->type, const_cast<void*>(t->data), w.ne0, w.ne1);
  *bytes += t->nbytes;
  return {};
}

// A llama2.c checkpoint + tokenizer.bin, as the bytes of the equivalent GGUF,
// so that one loader and one set of checks serve both formats.
Expected<std::vector<uint8_t>> llama2c_as_gguf(const std::string& model_path, const std::string& tok_path,
                                               bool use_mmap) {
  KESTREL_TRY_ASSIGN(auto ckpt, Llama2cCheckpoint::open(model_path, use_mmap));
  KESTREL_TRY_ASSIGN(VocabData vocab, llama2c_vocab(tok_path, ckpt->config.vocab_size));
  gguf::Writer w;
  KESTREL_TRY(llama2c_fill_gguf(*ckpt, vocab, w));
  return w.to_bytes();
}

std::string blk(int il, const char* what) { return "blk." + std::to_string(il) + "." + what; }

// Rows [r0, r0 + n) of a bound matrix, as a matrix of its own (rows of any
// weight type are whole blocks, so a row range is a plain pointer offset).
Tensor row_view(const Tensor& w, int64_t r0, int64_t n) {
  return make_tensor(w.type, static_cast<char*>(w.data) + static_cast<size_t>(r0) * w.nb[1], w.ne[0], n);
}

// Rope frequency factors divide an angle: each must be finite and > 0.
Status check_factors(const Tensor& t, const char* name) {
  if (!t.data) return {};
  for (int64_t i = 0; i < t.ne[0]; ++i) {
    float v;
    std::memcpy(&v, static_cast<const char*>(t.data) + static_cast<size_t>(i) * sizeof(float), sizeof v);
    if (!(v > 0.0f) || !std::isfinite(v))
      return Status::bad_file("tensor '%s' element %lld is %g; rope frequency factors must be finite and > 0", name,
                              (long long)i, v);
  }
  return {};
}

}  // namespace

Model::~Model() = default;

Expected<std::unique_ptr<Model>> Model::load(const std::string& path, const ModelParams& params) {
  std::unique_ptr<Model> m(new (std::nothrow) Model());
  if (!m) return Status::out_of_memory("model");
  m->vocab_only_ = params.vocab_only;

  gguf::OpenOptions oo;
  oo.use_mmap = params.use_mmap;
  oo.vocab_only = params.vocab_only;
  if (!params.llama2c_tokenizer_path.empty()) {
    KESTREL_TRY_ASSIGN(m->owned_file_, llama2c_as_gguf(path, params.llama2c_tokenizer_path, params.use_mmap));
    KESTREL_TRY_ASSIGN(m->file_, gguf::File::from_memory(m->owned_file_.data(), m->owned_file_.size(), oo));
  } else {
    KESTREL_TRY_ASSIGN(m->file_, gguf::File::open(path, oo));
  }
  KESTREL_TRY(m->finish_load(params));
  return m;
}

Expected<std::unique_ptr<Model>> Model::load_from_memory(const void* data, size_t size, const ModelParams& params) {
  if (!data && size) return Status::invalid_argument("model bytes are NULL");
  std::unique_ptr<Model> m(new (std::nothrow) Model());
  if (!m) return Status::out_of_memory("model");
  m->vocab_only_ = params.vocab_only;
  const uint8_t* bytes = static_cast<const uint8_t*>(data);
  m->owned_file_.assign(bytes, bytes + size);
  gguf::OpenOptions oo;
  oo.use_mmap = false;
  oo.vocab_only = params.vocab_only;
  KESTREL_TRY_ASSIGN(m->file_, gguf::File::from_memory(m->owned_file_.data(), m->owned_file_.size(), oo));
  KESTREL_TRY(m->finish_load(params));
  return m;
}

Status Model::finish_load(const ModelParams& params) {
  const gguf::File& f = *file_;

  KESTREL_TRY_ASSIGN(VocabData vocab, vocab_from_gguf(f));
  KESTREL_TRY_ASSIGN(tokenizer_, Tokenizer::create(std::move(vocab)));
  if (params.vocab_only) return {};

  KESTREL_TRY_ASSIGN(std::string_view arch_name, f.get_string("general.architecture"));
  const ArchDesc* arch = find_arch(arch_name);
  if (!arch)
    return Status::unsupported(
        "architecture '%.*s' is not supported (llama, qwen2, qwen3, phi3, gemma2, gemma3 are)",
                               (int)arch_name.size(), arch_name.data());
  KESTREL_TRY_ASSIGN(hp_, read_hparams(f, *arch));
  const gguf::TensorInfo* emb = f.find_tensor("token_embd.weight");
  if (!emb) return Status::bad_file("missing tensor 'token_embd.weight'");
  hp_.n_vocab = emb->n_dims >= 2 ? emb->ne[1] : 0;
  KESTREL_TRY(validate_hparams(hp_));
  if (tokenizer_->n_vocab() != hp_.n_vocab)
    return Status::bad_file("tokenizer has %d tokens but token_embd has %lld rows", tokenizer_->n_vocab(),
                            (long long)hp_.n_vocab);
  KESTREL_TRY(bind_tensors());
  KESTREL_TRY(page_in(params));
  return {};
}

Status Model::bind_tensors() {
  const gguf::File& f = *file_;
  const HParams& hp = hp_;
  const ArchDesc& a = *hp.arch;
  const int64_t E = hp.n_embd, Q = hp.n_embd_q(), KV = hp.n_embd_kv(), F = hp.n_ff, V = hp.n_vocab;
  uint64_t bytes = 0;
  KESTREL_TRY(bind(f, "token_embd.weight", {E, V, false, true}, &tok_embd, &bytes));
  KESTREL_TRY(bind(f, "output_norm.weight", {E, 1, true, true}, &output_norm, &bytes));
  if (!a.tied_only) KESTREL_TRY(bind(f, "output.weight", {E, V, false, false}, &output, &bytes));
  tied_output = output.data == nullptr;
  if (tied_output) output = tok_embd;

  const int64_t n_pairs = hp.n_rot / 2;
  const bool long_short = a.rope_factors == RopeFactors::long_short ||
                          (a.rope_factors == RopeFactors::freqs && hp.rope_scaling == RopeScaling::longrope);
  if (a.rope_factors != RopeFactors::none && !long_short)
    KESTREL_TRY(bind(f, "rope_freqs.weight", {n_pairs, 1, true, false}, &rope_freqs, &bytes));
  if (long_short) {
    KESTREL_TRY(bind(f, "rope_factors_long.weight", {n_pairs, 1, true, false}, &rope_long, &bytes));
    KESTREL_TRY(bind(f, "rope_factors_short.weight", {n_pairs, 1, true, false}, &rope_short, &bytes));
    if ((rope_long.data == nullptr) != (rope_short.data == nullptr))
      return Status::bad_file("rope_factors_long.weight and rope_factors_short.weight must come together");
  }
  KESTREL_TRY(check_factors(rope_freqs, "rope_freqs.weight"));
  KESTREL_TRY(check_factors(rope_long, "rope_factors_long.weight"));
  KESTREL_TRY(check_factors(rope_short, "rope_factors_short.weight"));

  layers.assign(static_cast<size_t>(hp.n_layer), LayerWeights{});
  // A projection: its KS factors (docs/ks-gguf.md) when the file has them, else dense.
  auto linear = [&](int il, const std::string& proj, int64_t n_in, int64_t n_out, Tensor* w, KsLinear* ks) -> Status {
    KESTREL_TRY(ks_bind_linear(f, il, proj, n_in, n_out, ks, &bytes));
    if (ks->n_factors) return {};
    return bind(f, blk(il, (proj + ".weight").c_str()), {n_in, n_out, false, true}, w, &bytes);
  };
  for (int il = 0; il < hp.n_layer; ++il) {
    LayerWeights& L = layers[static_cast<size_t>(il)];
    KESTREL_TRY(bind(f, blk(il, "attn_norm.weight"), {E, 1, true, true}, &L.attn_norm, &bytes));
    const std::string qkv_name = blk(il, "attn_qkv.weight");
    if (a.fused_qkv && f.find_tensor(qkv_name)) {
      // llama.cpp would add a fused bias; no phi3 checkpoint has one, so refuse
      // it rather than run without it.
      if (f.find_tensor(blk(il, "attn_qkv.bias")))
        return Status::unsupported("tensor '%s' (a fused q/k/v bias) is not supported", blk(il, "attn_qkv.bias").c_str());
      Tensor qkv;
      KESTREL_TRY(bind(f, qkv_name, {E, Q + 2 * KV, false, true}, &qkv, &bytes));
      L.wq = row_view(qkv, 0, Q);
      L.wk = row_view(qkv, Q, KV);
      L.wv = row_view(qkv, Q + KV, KV);
    } else {
      KESTREL_TRY(linear(il, "attn_q", E, Q, &L.wq, &L.ks_q));
      KESTREL_TRY(linear(il, "attn_k", E, KV, &L.wk, &L.ks_k));
      KESTREL_TRY(linear(il, "attn_v", E, KV, &L.wv, &L.ks_v));
    }
    KESTREL_TRY(linear(il, "attn_output", Q, E, &L.wo, &L.ks_o));
    if (a.qkv_bias) {
      KESTREL_TRY(bind(f, blk(il, "attn_q.bias"), {Q, 1, true, false}, &L.bq, &bytes));
      KESTREL_TRY(bind(f, blk(il, "attn_k.bias"), {KV, 1, true, false}, &L.bk, &bytes));
      KESTREL_TRY(bind(f, blk(il, "attn_v.bias"), {KV, 1, true, false}, &L.bv, &bytes));
    }
    if (a.qk_norm) {
      KESTREL_TRY(bind(f, blk(il, "attn_q_norm.weight"), {hp.head_dim, 1, true, true}, &L.q_norm, &bytes));
      KESTREL_TRY(bind(f, blk(il, "attn_k_norm.weight"), {hp.head_dim, 1, true, true}, &L.k_norm, &bytes));
    }
    if (a.post_attn_norm)
      KESTREL_TRY(bind(f, blk(il, "post_attention_norm.weight"), {E, 1, true, true}, &L.post_attn_norm, &bytes));
    KESTREL_TRY(bind(f, blk(il, "ffn_norm.weight"), {E, 1, true, true}, &L.ffn_norm, &bytes));
    if (a.fused_gate_up) {
      Tensor gate_up;
      KESTREL_TRY(bind(f, blk(il, "ffn_up.weight"), {E, 2 * F, false, true}, &gate_up, &bytes));
      L.w_gate = row_view(gate_up, 0, F);
      L.w_up = row_view(gate_up, F, F);
    } else {
      KESTREL_TRY(linear(il, "ffn_gate", E, F, &L.w_gate, &L.ks_gate));
      KESTREL_TRY(linear(il, "ffn_up", E, F, &L.w_up, &L.ks_up));
    }
    KESTREL_TRY(linear(il, "ffn_down", F, E, &L.w_down, &L.ks_down));
    if (a.post_ffn_norm)
      KESTREL_TRY(bind(f, blk(il, "post_ffw_norm.weight"), {E, 1, true, true}, &L.post_ffn_norm, &bytes));
  }
  weight_bytes_ = bytes;
  return {};
}

const Tensor* Model::rope_factors(int64_t n_ctx_seq) const {
  if (rope_freqs.data) return &rope_freqs;
  if (!rope_long.data) return nullptr;
  // llama.cpp pads its per-sequence context to a multiple of 256 before this
  // choice; the same padding here makes both choose alike at any -c.
  const int64_t padded = (n_ctx_seq + 255) / 256 * 256;
  return padded > hp_.n_ctx_orig ? &rope_long : &rope_short;
}

Status Model::page_in(const ModelParams& params) {
  if (!params.progress) return {};
  // Touch every page of every tensor so that the first tokens do not stall on
  // page faults, reporting progress per tensor.
  const auto& ts = file_->tensors();
  uint64_t total = 0, done = 0;
  for (const auto& t : ts) total += t.nbytes;
  volatile uint8_t sink = 0;
  for (const auto& t : ts) {
    const uint8_t* p = static_cast<const uint8_t*>(t.data);
    for (uint64_t off = 0; off < t.nbytes; off += 4096) sink = static_cast<uint8_t>(sink + p[off]);
    done += t.nbytes;
    if (!params.progress(total ? static_cast<float>(done) / static_cast<float>(total) : 1.0f, params.progress_user))
      return Status::cancelled("model load cancelled by the progress callback");
  }
  (void)sink;
  return {};
}

}  // namespace kestrel
