#include "runtime/model/hparams.h"

#include <cmath>
#include <string>

#include "runtime/model/gguf.h"

namespace kestrel {

namespace {

std::string key(const ArchDesc& a, const char* suffix) { return std::string(a.name) + "." + suffix; }

Status get_i64(const gguf::File& f, const std::string& k, int64_t* out, bool required) {
  if (!f.has(k)) {
    if (required) return Status::bad_file("missing required key '%s'", k.c_str());
    return {};
  }
  KESTREL_TRY_ASSIGN(uint64_t v, f.get_u64(k));
  if (v > static_cast<uint64_t>(INT64_MAX)) return Status::bad_file("key '%s' is too large", k.c_str());
  *out = static_cast<int64_t>(v);
  return {};
}

Status get_f32(const gguf::File& f, const std::string& k, float* out) {
  if (!f.has(k)) return {};
  KESTREL_TRY_ASSIGN(float v, f.get_f32(k));
  if (!std::isfinite(v)) return Status::bad_file("key '%s' is not finite", k.c_str());
  *out = v;
  return {};
}

}  // namespace

Expected<HParams> read_hparams(const gguf::File& f, const ArchDesc& a) {
  HParams hp;
  hp.arch = &a;
  hp.rms_eps = a.default_rms_eps;
  hp.rope_theta = a.default_rope_theta;
  hp.rope_theta_swa = a.default_rope_theta_swa;
  hp.attn_softcap = a.default_attn_softcap;
  hp.final_softcap = a.default_final_softcap;
  KESTREL_TRY(get_i64(f, key(a, "embedding_length"), &hp.n_embd, true));
  KESTREL_TRY(get_i64(f, key(a, "block_count"), &hp.n_layer, true));
  KESTREL_TRY(get_i64(f, key(a, "feed_forward_length"), &hp.n_ff, true));
  KESTREL_TRY(get_i64(f, key(a, "attention.head_count"), &hp.n_head, true));
  hp.n_head_kv = hp.n_head;
  KESTREL_TRY(get_i64(f, key(a, "attention.head_count_kv"), &hp.n_head_kv, false));
  KESTREL_TRY(get_i64(f, key(a, "context_length"), &hp.n_ctx_train, true));
  hp.head_dim = hp.n_head > 0 ? hp.n_embd / hp.n_head : 0;
  KESTREL_TRY(get_i64(f, key(a, "attention.key_length"), &hp.head_dim, false));
  int64_t v_len = hp.head_dim;
  KESTREL_TRY(get_i64(f, key(a, "attention.value_length"), &v_len, false));
  if (v_len != hp.head_dim)
    return Status::unsupported("value_length %lld differs from key_length %lld", (long long)v_len,
                               (long long)hp.head_dim);
  hp.n_rot = hp.head_dim;
  KESTREL_TRY(get_i64(f, key(a, "rope.dimension_count"), &hp.n_rot, false));
  KESTREL_TRY(get_f32(f, key(a, "attention.layer_norm_rms_epsilon"), &hp.rms_eps));
  KESTREL_TRY(get_f32(f, key(a, "rope.freq_base"), &hp.rope_theta));
  if (a.default_rope_theta_swa == 0.0f) hp.rope_theta_swa = hp.rope_theta;
  KESTREL_TRY(get_f32(f, key(a, "rope.freq_base_swa"), &hp.rope_theta_swa));
  // As llama.cpp: rope.scaling.factor scales every scaling type but "none".
  float factor = 1.0f;
  KESTREL_TRY(get_f32(f, key(a, "rope.scaling.factor"), &factor));
  if (f.has(key(a, "rope.scaling.type"))) {
    KESTREL_TRY_ASSIGN(std::string_view type, f.get_string(key(a, "rope.scaling.type")));
    if (type == "none") {
      hp.rope_scaling = RopeScaling::none;
      factor = 1.0f;
    } else if (type == "longrope") {
      hp.rope_scaling = RopeScaling::longrope;
    } else if (type != "linear") {
      return Status::unsupported("rope scaling type '%.*s' (none, linear and longrope are)", (int)type.size(),
                                 type.data());
    }
  }
  if (!(factor > 0.0f)) return Status::bad_file("rope scaling factor must be > 0");
  hp.rope_freq_scale = 1.0f / factor;
  hp.rope_freq_scale_swa = a.swa_rope_scaled ? hp.rope_freq_scale : 1.0f;
  KESTREL_TRY(get_f32(f, key(a, "rope.scaling.attn_factor"), &hp.rope_attn_factor));
  hp.n_ctx_orig = hp.n_ctx_train;
  KESTREL_TRY(get_i64(f, key(a, "rope.scaling.original_context_length"), &hp.n_ctx_orig, false));
  KESTREL_TRY(get_f32(f, key(a, "attn_logit_softcapping"), &hp.attn_softcap));
  KESTREL_TRY(get_f32(f, key(a, "final_logit_softcapping"), &hp.final_softcap));

  hp.layer_is_swa.assign(hp.n_layer > 0 && hp.n_layer <= kMaxLayers ? static_cast<size_t>(hp.n_layer) : 0,
                         false);
  if (a.sliding_window) {
    hp.n_swa = a.default_n_swa;
    KESTREL_TRY(get_i64(f, key(a, "attention.sliding_window"), &hp.n_swa, false));
    int64_t pattern = a.default_swa_pattern;
    const std::string pk = key(a, "attention.sliding_window_pattern");
    if (f.has(pk)) {
      auto n = f.get_u64(pk);
      if (n.ok()) {
        pattern = static_cast<int64_t>(*n);
      } else {  // a per-layer array of flags
        KESTREL_TRY_ASSIGN(std::vector<int32_t> flags, f.get_i32_array(pk));
        if (static_cast<int64_t>(flags.size()) != hp.n_layer)
          return Status::bad_file("'%s' has %zu entries for %lld layers", pk.c_str(), flags.size(),
                                  (long long)hp.n_layer);
        for (size_t i = 0; i < flags.size(); ++i) hp.layer_is_swa[i] = flags[i] != 0;
        pattern = -1;
      }
    }
    if (hp.n_swa > 0 && pattern >= 0) {
      // Every pattern-th layer (1-based) is global; pattern 0 = all slide.
      for (size_t il = 0; il < hp.layer_is_swa.size(); ++il)
        hp.layer_is_swa[il] = pattern == 0 || static_cast<int64_t>(il % pattern) < pattern - 1;
    }
    if (hp.n_swa <= 0) hp.layer_is_swa.assign(hp.layer_is_swa.size(), false);
  }
  hp.attn_scale = hp.head_dim > 0 ? 1.0f / std::sqrt(static_cast<float>(hp.head_dim)) : 0.0f;
  // llama.cpp's gemma2 rule (after gemma_pytorch's config): the 46-layer 27B
  // scales queries by 1/sqrt(n_embd / n_head) (its query_pre_attn_scalar),
  // the other sizes by 1/sqrt(head_dim).
  if (a.id == ArchId::gemma2 && hp.n_layer == 46 && hp.n_head > 0 && hp.n_embd / hp.n_head > 0)
    hp.attn_scale = 1.0f / std::sqrt(static_cast<float>(hp.n_embd / hp.n_head));
  return hp;
}

Status validate_hparams(const HParams& hp) {
  auto in = [](int64_t v, int64_t lo, int64_t hi) { return v >= lo && v <= hi; };
  if (!in(hp.n_layer, 1, kMaxLayers)) return Status::bad_file("block_count %lld out of range", (long long)hp.n_layer);
  if (!in(hp.n_embd, 1, kMaxEmbd)) return Status::bad_file("embedding_length %lld out of range", (long long)hp.n_embd);
  if (!in(hp.n_ff, 1, kMaxFfn)) return Status::bad_file("feed_forward_length %lld out of range", (long long)hp.n_ff);
  if (!in(hp.n_head, 1, kMaxHeads)) return Status::bad_file("head_count %lld out of range (zero heads?)", (long long)hp.n_head);
  if (!in(hp.n_head_kv, 1, hp.n_head))
    return Status::bad_file("head_count_kv %lld out of range", (long long)hp.n_head_kv);
  if (hp.n_head % hp.n_head_kv != 0)
    return Status::bad_file("kv heads %lld do not divide heads %lld", (long long)hp.n_head_kv, (long long)hp.n_head);
  if (!in(hp.head_dim, 2, 1024) || hp.head_dim % 2 != 0)
    return Status::bad_file("head dim %lld is not an even number in [2, 1024] (does head_count divide embedding_length?)",
                            (long long)hp.head_dim);
  if (!in(hp.n_rot, 2, hp.head_dim) || hp.n_rot % 2 != 0)
    return Status::bad_file("rope dimension count %lld is invalid for head dim %lld", (long long)hp.n_rot,
                            (long long)hp.head_dim);
  if (!in(hp.n_ctx_train, 1, kMaxContext))
    return Status::bad_file("context_length %lld out of range (cap %lld)", (long long)hp.n_ctx_train,
                            (long long)kMaxContext);
  if (!in(hp.n_vocab, 1, kMaxVocab)) return Status::bad_file("vocabulary size %lld out of range", (long long)hp.n_vocab);
  if (!(hp.rms_eps >= 0.0f && hp.rms_eps < 1.0f)) return Status::bad_file("rms epsilon %g out of range", hp.rms_eps);
  if (!(hp.rope_theta > 0.0f) || !(hp.rope_theta_swa > 0.0f)) return Status::bad_file("rope theta must be > 0");
  if (hp.n_swa < 0 || hp.n_swa > kMaxContext) return Status::bad_file("sliding window out of range");
  if (hp.attn_softcap < 0.0f || hp.final_softcap < 0.0f) return Status::bad_file("negative soft-cap");
  // The ops take caps below 1e30 (ops/validate.cpp); a larger one is no cap a model was trained with.
  if (hp.attn_softcap > 1e30f || hp.final_softcap > 1e30f) return Status::bad_file("soft-cap above 1e30");
  const ArchDesc& a = *hp.arch;
  if (a.default_attn_softcap > 0.0f && !(hp.attn_softcap > 0.0f))
    return Status::bad_file("%s.attn_logit_softcapping must be > 0 (is %g)", a.name, hp.attn_softcap);
  if (a.default_final_softcap > 0.0f && !(hp.final_softcap > 0.0f))
    return Status::bad_file("%s.final_logit_softcapping must be > 0 (is %g)", a.name, hp.final_softcap);
  if (a.full_rotary && hp.n_rot != hp.head_dim)
    return Status::bad_file("rope dimension count %lld must equal head dim %lld for %s", (long long)hp.n_rot,
                            (long long)hp.head_dim, a.name);
  if (!(hp.rope_attn_factor > 0.0f)) return Status::bad_file("rope scaling attn_factor %g must be > 0", hp.rope_attn_factor);
  if (!in(hp.n_ctx_orig, 1, kMaxContext))
    return Status::bad_file("rope scaling original_context_length %lld out of range", (long long)hp.n_ctx_orig);
  return {};
}

}  // namespace kestrel
